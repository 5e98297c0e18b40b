"""The worst-case timing from the command line: argparse and one call of bench.worst_case.measure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from bench import worst_case
from drills.report import add_report_arg, emit_report
from serving import paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=worst_case.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="bert-base", help="demo, bert-base, tiny or a checkpoint path (default: %(default)s)"
    )
    parser.add_argument(
        "--model-config",
        type=Path,
        default=paths.MODEL_CONFIG,
        help="the model config whose limits to test (default: the shipped one)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed requests alone (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=paths.RUN_DIR / "worst-case", help="work directory (default: var/worst-case)"
    )
    add_report_arg(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = yaml.safe_load(args.model_config.read_text(encoding="utf-8")) or {}
    report = worst_case.measure(args.model, config, args.out, args.rounds)
    timeout = report["response_timeout_s"]
    cpu = max(report["worker_cpu_s_per_full_batch"].values())
    ok = (
        report["full_batches_statuses"] == ["200"]
        and report["alone_statuses"] == ["200"]
        and not report["worker_restarted"]
        and report["full_batches_s"]["max"] < timeout
        and cpu <= timeout / 2
    )
    report["verdict"] = (
        f"held: a full batch of the largest request takes {cpu} s of one core, at most half "
        f"the {timeout} s response timeout"
        if ok
        else "FAILED"
    )
    emit_report(report, args.report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
