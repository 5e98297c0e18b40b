"""The particle evaluation from the command line: argparse and one call of ops.particles_eval.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ops import particles_eval, paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=particles_eval.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=paths.SHARED_DATA, help="folder with the KMOU split files (default: %(default)s)")
    parser.add_argument("--split", default="val", help="which split file, without .txt (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=paths.DEMO_MODEL_DIR, help="served model dir; its vocab.txt also tokenises the oracle (default: %(default)s)")
    parser.add_argument("--vocab", type=Path, help="score only the oracle, with this vocab.txt (no model needed)")
    parser.add_argument("--approaches", default=",".join(particles_eval.APPROACHES), help=f"comma-separated, from {particles_eval.APPROACHES} (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="use the first N sentences")
    parser.add_argument("--runs", type=int, default=5, help="timing runs and memory probes; medians are reported (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    args.approaches = args.approaches.split(",")
    unknown = sorted(set(args.approaches) - set(particles_eval.APPROACHES))
    if unknown:
        parser.error(f"unknown approaches {unknown}; choose from {particles_eval.APPROACHES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    particles_eval.run(args.corpus, args.split, args.model, args.vocab, args.approaches, args.limit, args.runs, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
