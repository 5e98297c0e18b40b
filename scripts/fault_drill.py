"""The fault drill from the command line: argparse and one call of drills.fault_drill.drill, then its verdict."""

from __future__ import annotations

import argparse
import sys

from drills import fault_drill
from drills.report import add_report_arg, add_server_args, emit_report
from serving import tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=fault_drill.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add_server_args(parser)
    add("--kills", type=int, default=5, help="workers to kill, one after another (default: %(default)s)")
    add("--clients", type=int, default=8, help="concurrent load clients (default: %(default)s)")
    add("--settle", type=float, default=5.0, help="seconds of load before the first kill and after each recovery")
    add(
        "--timeout",
        type=float,
        default=15,
        help="the clients' read timeout per attempt, seconds (default: %(default)s)",
    )
    add("--retries", type=int, default=6, help="the clients' resends per request (default: %(default)s)")
    add("--deadline", type=float, default=180, help="seconds a worker has to come back (default: %(default)s)")
    add_report_arg(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(line: str) -> None:
        print(f"fault_drill: {line}", file=sys.stderr, flush=True)

    try:
        report = fault_drill.drill(
            tsctl.Server.load(args.run_dir),
            args.model,
            args.kills,
            args.clients,
            args.settle,
            args.timeout,
            args.retries,
            args.deadline,
            progress=say,
        )
    except tsctl.TsError as err:
        say(f"error: {err}")
        return 1
    return emit_report(report, args.report, fault_drill.failures(report))


if __name__ == "__main__":
    sys.exit(main())
