"""What several command-line tools share: the served model they talk to, and their JSON report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from serving import paths


def add_target_args(parser: argparse.ArgumentParser, requests: int, concurrency: int = 32) -> None:
    """--model, --run-dir, --requests, --concurrency, --timeout, --seed and --report for a tool that
    sends requests to a running TorchServe."""
    parser.add_argument("--requests", type=int, default=requests, help="requests in all (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=concurrency, help="requests in flight (default: %(default)s)")
    parser.add_argument("--model", default="kor_ner", help="registered model name (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for an answer before counting it lost")
    parser.add_argument("--seed", type=int, default=0)
    add_report_arg(parser)


def add_report_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", type=Path, help="also write the report here as JSON")


def emit_report(report: dict[str, Any], path: Path | None, problems: list[str] | None = None) -> int:
    """Set the verdict from ``problems`` (when given), print the report as JSON and write it to
    ``path``; the exit code: 1 when there are problems."""
    if problems is not None:
        report["verdict"] = "held" if not problems else "FAILED: " + "; ".join(problems)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if path:
        path.write_text(text + "\n", encoding="utf-8")
    return 1 if problems else 0
