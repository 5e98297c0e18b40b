"""The drills' contract, what every drill's command shares: the served model it talks to, and its
JSON report with a verdict.

A drill is ``drills/<name>.py`` with a function that takes typed arguments (or one frozen spec)
and returns its report (a JSON-able dict), and ``failures(report) -> list[str]`` that judges it;
``scripts/<name>.py`` is argparse (these flags plus its own) and one call, printed by
``emit_report``, whose exit code is 1 when the report has failures."""

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
    parser.add_argument(
        "--concurrency", type=int, default=concurrency, help="requests in flight (default: %(default)s)"
    )
    add_server_args(parser)
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds to wait for an answer before counting it lost"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_report_arg(parser)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """--model and --run-dir: the served model a drill talks to, and the TorchServe serving it."""
    parser.add_argument("--model", default=paths.MODEL_NAME, help="registered model name (default: %(default)s)")
    parser.add_argument(
        "--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys"
    )


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
