"""The BIO decoding evaluation from the command line: argparse and one call of study.eval_decoding.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import paths
from study import eval_decoding


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=eval_decoding.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", type=Path, default=paths.SHARED_DATA, help="folder with the KMOU split files (default: %(default)s)"
    )
    parser.add_argument("--split", default="val", help="which split file, without .txt (default: %(default)s)")
    parser.add_argument(
        "--model", type=Path, default=paths.DEMO_MODEL_DIR, help="served model dir (default: %(default)s)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="a ratsnlp checkpoint (dir or .ckpt) instead of --model, staged as package_model.py does",
    )
    parser.add_argument("--pretrained", help="with --checkpoint: the pretrained model's dir (config.json + vocab.txt)")
    parser.add_argument("--limit", type=int, help="use the first N sentences")
    parser.add_argument(
        "--runs", type=int, default=3, help="timing runs; the median is reported (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    eval_decoding.run(
        args.corpus, args.split, args.model, args.checkpoint, args.pretrained, args.limit, args.runs, args.json
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
