"""The slow-connection flood from the command line: argparse and one call of drills.flood.run
against a front door already running (the container: podman run -p 127.0.0.1:8080:8080 ...),
then its verdict: every honest request answered, p99 under --max-p99-ms."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

from drills import flood
from drills.report import add_report_arg, emit_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=flood.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8080/predictions/kor_ner",
        help="the honest requests' URL; the flood goes to the same host and port (default: %(default)s)",
    )
    parser.add_argument("--key-file", type=Path, help="a file holding the inference key the honest requests send")
    parser.add_argument("--text", default="이순신은 조선 중기의 무신이다.", help="the honest requests' text")
    parser.add_argument("--slow-headers", type=int, default=2000, help="slow-header connections (default: %(default)s)")
    parser.add_argument(
        "--stalled-bodies", type=int, default=200, help="stalled-body connections (default: %(default)s)"
    )
    parser.add_argument("--idle", type=int, default=0, help="connections that send nothing (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=30, help="how long the flood lasts (default: %(default)s)")
    parser.add_argument(
        "--honest-clients",
        type=int,
        default=8,
        help="honest clients, one request at a time each (default: %(default)s)",
    )
    parser.add_argument("--flood-source", default="127.0.0.2", help="the flood's source address (default: %(default)s)")
    parser.add_argument(
        "--honest-source", default="127.0.0.1", help="the honest clients' source address (default: %(default)s)"
    )
    parser.add_argument(
        "--max-p99-ms", type=float, default=1000, help="the honest p99 the verdict allows (default: %(default)s)"
    )
    add_report_arg(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    key = args.key_file.read_text(encoding="utf-8").split()[0] if args.key_file else None  # a key file's first key
    plan = flood.Plan(
        url.hostname,
        url.port or 80,
        flood.http_request(url.path, args.text.encode("utf-8"), key),
        slow_headers=args.slow_headers,
        stalled_bodies=args.stalled_bodies,
        idle=args.idle,
        seconds=args.seconds,
        honest_clients=args.honest_clients,
        flood_source=args.flood_source,
        honest_source=args.honest_source,
        path=url.path,
    )
    report = flood.run(plan).summary()
    problems = [
        f"{n} honest requests failed: {report['honest_failed']}" for n in [sum(report["honest_failed"].values())] if n
    ]
    if report["p99_ms"] is None or report["p99_ms"] > args.max_p99_ms:
        problems.append(f"honest p99 {report['p99_ms']} ms is over {args.max_p99_ms:g} ms")
    return emit_report(report, args.report, problems)


if __name__ == "__main__":
    sys.exit(main())
