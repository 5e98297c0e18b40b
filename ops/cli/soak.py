"""The soak from the command line: argparse and one call of ops.soak.soak, then its verdict."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ops import paths, soak, tsctl


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=soak.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="requests in the soak (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default: %(default)s)")
    parser.add_argument("--warmup", type=int, help="requests of the same mix before memory is first read (default: requests/10, at least 300)")
    parser.add_argument("--model", default="kor_ner", help="registered model name (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys")
    parser.add_argument("--long-chars", type=int, default=2000, help="characters of a long input (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=2000, help="the model's max_text_chars (default: %(default)s, the shipped one); one invalid input is 1 longer")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for an answer before counting it lost")
    parser.add_argument("--max-rss-growth", type=float, default=0.10, help="allowed worker memory growth after warm-up (default: 0.10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="also write the report here as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = tsctl.Server.load(args.run_dir)
    warmup = args.warmup if args.warmup is not None else max(300, args.requests // 10)
    report = soak.soak(server, args.model, args.requests, args.concurrency, warmup, args.seed,
                       args.long_chars, args.max_chars, args.timeout)
    problems = soak.failures(report, args.max_rss_growth)
    report["verdict"] = "held" if not problems else "FAILED: " + "; ".join(problems)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.report:
        args.report.write_text(text + "\n", encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
