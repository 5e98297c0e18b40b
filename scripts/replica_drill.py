"""The replicas drill from the command line: argparse and one call of drills.replica_drill.drill, then its verdict."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import requests

from drills import replica_drill
from drills.replica_drill import DrillSpec
from drills.report import add_report_arg, emit_report
from serving import tsctl
from serving.package_model import PackagingError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=replica_drill.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--model-dir",
        type=Path,
        default=DrillSpec.model_dir,
        help="checkpoint or save_pretrained directory (default: demo_model/)",
    )
    add(
        "--workdir",
        type=Path,
        default=DrillSpec.workdir,
        help="archives, run dirs, HAProxy config (default: var/replica-drill/; emptied first)",
    )
    add(
        "--clients",
        type=int,
        default=DrillSpec.clients,
        help="concurrent clients, half plain, half retrying (default: %(default)s)",
    )
    add("--workers", type=int, default=DrillSpec.workers, help="workers per replica (default: %(default)s)")
    add("--settle", type=float, default=DrillSpec.settle, help="seconds of load between steps (default: %(default)s)")
    add(
        "--first-port",
        type=int,
        default=DrillSpec.first_port,
        help="replicas on the loopback ports FIRST.., FIRST+10.. (tsctl --ports), HAProxy on FIRST+20; "
        "0: free ports (default: %(default)s)",
    )
    add(
        "--max-requests",
        type=int,
        default=DrillSpec.max_requests,
        help="stop the clients after this many requests (default: %(default)s)",
    )
    add(
        "--request-timeout",
        type=float,
        default=DrillSpec.request_timeout,
        help="read timeout of each request in seconds (default: %(default)s)",
    )
    add(
        "--deadline",
        type=float,
        default=DrillSpec.deadline,
        help="give up after this many seconds in all (default: %(default)s)",
    )
    add_report_arg(parser)
    args = parser.parse_args(argv)
    if args.clients < 2 or shutil.which("haproxy") is None:
        parser.error("needs --clients >= 2 and Debian's haproxy (apt-get install haproxy)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = DrillSpec(
        args.model_dir,
        args.workdir,
        args.clients,
        args.workers,
        args.settle,
        args.first_port,
        args.max_requests,
        args.request_timeout,
        args.deadline,
    )
    try:
        report = replica_drill.drill(spec)
    except (RuntimeError, tsctl.TsError, PackagingError, requests.RequestException) as err:
        print(f"replica_drill: error: {err}", file=sys.stderr)
        return 1
    return emit_report(report, args.report, replica_drill.failures(report))


if __name__ == "__main__":
    sys.exit(main())
