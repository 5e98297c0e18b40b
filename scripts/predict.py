"""Tag Korean sentences with the served model and print the entities readably.

    python scripts/predict.py "이순신은 조선 중기의 무신이다."
    echo "서울에서 만났다." | python scripts/predict.py -          # one sentence a line
    python scripts/predict.py --json "문장"                        # the raw JSON answer

Every call has a timeout and is retried (with back-off) when TorchServe is briefly
unavailable (connection refused, 503 while a worker restarts, 500/507 "Worker died."), so no
request is lost silently: a request that still fails after the retries is reported and the exit
code is non-zero. The read timeout matters most: TorchServe 0.12 never answers the requests a
worker was gathering into its batch when it died (docs/reliability.md); only the timeout and
the resend recover them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import paths, tsctl
from serving.predict import tag


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sentences", nargs="+", help="sentences to tag; '-' reads one a line from stdin")
    parser.add_argument("--model", default=paths.MODEL_NAME, help="model name (default: %(default)s)")
    parser.add_argument(
        "--run-dir", type=Path, default=paths.RUN_DIR, help="TorchServe's run dir, for its address and keys"
    )
    parser.add_argument("--json", action="store_true", help="print TorchServe's JSON answer")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per attempt (default: %(default)s)")
    parser.add_argument(
        "--retries", type=int, default=3, help="resends on 503/connection errors (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    sentences = [line.strip() for line in sys.stdin if line.strip()] if args.sentences == ["-"] else args.sentences
    failed = tag(
        tsctl.Server.load(args.run_dir),
        args.model,
        sentences,
        args.retries,
        args.timeout,
        args.json,
        err=lambda line: print(line, file=sys.stderr),
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
