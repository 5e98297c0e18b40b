"""A synthetic ratsnlp-layout checkpoint: argparse and one call of study.make_checkpoint.write_checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study import make_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=make_checkpoint.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path, help="directory to write")
    parser.add_argument("--shape", choices=sorted(make_checkpoint.SHAPES), default="tiny")
    parser.add_argument("--vocab-size", type=int, default=0, help="override the shape's vocab size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_checkpoint.write_checkpoint(args.out, args.shape, args.vocab_size, args.seed)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
