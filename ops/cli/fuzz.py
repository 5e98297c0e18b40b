"""The fuzz run from the command line: argparse and one call of ops.fuzz.fuzz, then its verdict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops import fuzz, paths, tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=fuzz.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000, help="requests in all (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default: %(default)s)")
    parser.add_argument("--bad-fraction", type=float, default=0.3, help="share of hostile requests (default: %(default)s)")
    parser.add_argument("--only", help="comma-separated hostile classes to send (default: all): "
                        + ", ".join(h.name for h in fuzz.HOSTILE))
    parser.add_argument("--model", default="kor_ner", help="registered model name (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys")
    parser.add_argument("--max-chars", type=int, default=2000, help="the model's max_text_chars (default: %(default)s)")
    parser.add_argument("--max-texts", type=int, default=32, help="the model's max_texts_per_request (default: %(default)s)")
    parser.add_argument("--max-request-size", type=int, default=1_048_576, help="the server's max_request_size (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for an answer before counting it lost")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="also write the report here as JSON")
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
    report = fuzz.fuzz(tsctl.Server.load(args.run_dir), args.model, args.requests, args.concurrency, args.bad_fraction,
                  limits, classes, args.seed, args.timeout)
    problems = fuzz.failures(report)
    report["verdict"] = "held" if not problems else "FAILED: " + "; ".join(problems)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
