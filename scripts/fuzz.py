"""The fuzz run from the command line: argparse and one call of drills.fuzz.fuzz, then its verdict."""

from __future__ import annotations

import argparse
import sys

from drills import fuzz
from drills.report import add_target_args, emit_report
from serving import tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=fuzz.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(parser, requests=10_000)
    parser.add_argument(
        "--bad-fraction", type=float, default=0.3, help="share of hostile requests (default: %(default)s)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated hostile classes to send (default: all): " + ", ".join(h.name for h in fuzz.HOSTILE),
    )
    parser.add_argument("--max-chars", type=int, default=2000, help="the model's max_text_chars (default: %(default)s)")
    parser.add_argument(
        "--max-texts", type=int, default=32, help="the model's max_texts_per_request (default: %(default)s)"
    )
    parser.add_argument(
        "--max-request-size", type=int, default=1_048_576, help="the server's max_request_size (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    classes = fuzz.HOSTILE
    if args.only:
        wanted = args.only.split(",")
        classes = [h for h in fuzz.HOSTILE if h.name in wanted]
        if len(classes) != len(wanted):
            sys.exit(f"fuzz: error: unknown hostile class in {wanted}; known: {[h.name for h in fuzz.HOSTILE]}")
    limits = {"max_chars": args.max_chars, "max_texts": args.max_texts, "max_request_size": args.max_request_size}
    report = fuzz.fuzz(
        tsctl.Server.load(args.run_dir),
        args.model,
        args.requests,
        args.concurrency,
        args.bad_fraction,
        limits,
        classes,
        args.seed,
        args.timeout,
    )
    return emit_report(report, args.report, fuzz.failures(report))


if __name__ == "__main__":
    sys.exit(main())
