"""The soak from the command line: argparse and one call of drills.soak.soak, then its verdict."""

from __future__ import annotations

import argparse
import sys

from drills import soak
from drills.report import add_target_args, emit_report
from serving import tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=soak.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(parser, requests=20_000)
    parser.add_argument(
        "--warmup",
        type=int,
        help="requests of the same mix before memory is first read (default: requests/10, at least 300)",
    )
    parser.add_argument(
        "--long-chars", type=int, default=2000, help="characters of a long input (default: %(default)s)"
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=2000,
        help="the model's max_text_chars (default: %(default)s, the shipped one); one invalid input is 1 longer",
    )
    parser.add_argument(
        "--max-rss-growth", type=float, default=0.10, help="allowed worker memory growth after warm-up (default: 0.10)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = tsctl.Server.load(args.run_dir)
    warmup = args.warmup if args.warmup is not None else max(300, args.requests // 10)
    report = soak.soak(
        server,
        args.model,
        args.requests,
        args.concurrency,
        warmup,
        args.seed,
        args.long_chars,
        args.max_chars,
        args.timeout,
    )
    return emit_report(report, args.report, soak.failures(report, args.max_rss_growth))


if __name__ == "__main__":
    sys.exit(main())
