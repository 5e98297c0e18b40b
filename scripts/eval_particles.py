"""The particle evaluation from the command line: argparse and one call of study.eval_particles.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import paths
from serving.cli import comma_list
from study import eval_particles


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=eval_particles.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", type=Path, default=paths.SHARED_DATA, help="folder with the KMOU split files (default: %(default)s)"
    )
    parser.add_argument("--split", default="val", help="which split file, without .txt (default: %(default)s)")
    parser.add_argument(
        "--model",
        type=Path,
        default=paths.DEMO_MODEL_DIR,
        help="served model dir; its vocab.txt also tokenises the oracle (default: %(default)s)",
    )
    parser.add_argument("--vocab", type=Path, help="score only the oracle, with this vocab.txt (no model needed)")
    parser.add_argument(
        "--approaches",
        type=comma_list(eval_particles.APPROACHES),
        default=list(eval_particles.APPROACHES),
        help=f"comma-separated, from {eval_particles.APPROACHES} (default: all)",
    )
    parser.add_argument("--limit", type=int, help="use the first N sentences")
    parser.add_argument(
        "--runs", type=int, default=5, help="timing runs and memory probes; medians are reported (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    eval_particles.run(
        args.corpus, args.split, args.model, args.vocab, args.approaches, args.limit, args.runs, args.json
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
