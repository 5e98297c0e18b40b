"""The fault drill from the command line: argparse and one call of drills.fault_drill.drill, then its verdict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drills import fault_drill
from serving import paths, tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=fault_drill.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="kor_ner", help="registered model name (default: %(default)s)")
    parser.add_argument("--kills", type=int, default=5, help="workers to kill, one after another (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load before the first kill and after each recovery")
    parser.add_argument("--timeout", type=float, default=15, help="the clients' read timeout per attempt, seconds (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=6, help="the clients' resends per request (default: %(default)s)")
    parser.add_argument("--deadline", type=float, default=180, help="seconds a worker has to come back (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys")
    parser.add_argument("--report", type=Path, help="also write the report here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = tsctl.Server.load(args.run_dir)
    say = lambda line: print(f"fault_drill: {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        report = fault_drill.drill(server, args.model, args.kills, args.clients, args.settle, args.timeout,
                                   args.retries, args.deadline, progress=say)
    except tsctl.TsError as err:
        say(f"error: {err}")
        return 1
    report["verdict"] = "held" if not report["lost"] else f"FAILED: {report['lost']} requests lost"
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    return 1 if report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
