"""The demo model's training: argparse and one call of study.train_demo.run."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from serving import paths
from study import train_demo
from study.train_demo import TrainSpec


def parse_args(argv: list[str] | None) -> TrainSpec:
    parser = argparse.ArgumentParser(
        description=train_demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=paths.SHARED_DATA,
        help="folder with train.txt and val.txt (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=paths.RUN_DIR / "demo-train",
        help="ratsnlp-style output folder (default: %(default)s)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        nargs="?",
        const=paths.DEMO_MODEL_DIR,
        help=f"also write the committed form here (flag alone: {paths.DEMO_MODEL_DIR})",
    )
    parser.add_argument(
        "--vocab", type=Path, help="use this vocab.txt instead of training one (the vocab trainer is not deterministic)"
    )
    parser.add_argument("--vocab-size", type=int, default=8000, help="WordPiece vocab size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8, help="(default: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps; 0: no limit (default)")
    parser.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="peak learning rate, linear warmup then decay (default: %(default)s)"
    )
    parser.add_argument(
        "--max-seq-length",
        type=int,
        default=128,
        help="training truncation, [CLS]/[SEP] included (default: %(default)s)",
    )
    parser.add_argument("--train-limit", type=int, help="use the first N sentences of train.txt")
    parser.add_argument("--val-limit", type=int, help="use the first N sentences of val.txt")
    parser.add_argument("--seed", type=int, default=42, help="(default: %(default)s)")
    parser.add_argument(
        "--time-budget-min",
        type=float,
        default=60.0,
        help="stop training after this many minutes; a cut run scores differently (default: %(default)s)",
    )
    parser.add_argument(
        "--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing (default: %(default)s)"
    )
    parser.add_argument(
        "--swap-copies",
        type=int,
        default=1,
        help=(
            "add this many copies of the train split with entities swapped within their "
            "type; 0: none (default: %(default)s, the committed model's recipe)"
        ),
    )
    parser.add_argument(
        "--mlm-epochs",
        type=int,
        default=0,
        help=(
            "masked-language-model pre-training epochs on the train sentences before fine-tuning (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--mlm-probability",
        type=float,
        default=0.15,
        help="share of wordpieces masked in pre-training (default: %(default)s)",
    )
    parser.add_argument(
        "--name-rate",
        type=float,
        default=0.0,
        help=(
            "share of Korean full names (PER) replaced by made-up full names in each swapped "
            "copy (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--init",
        type=Path,
        help=(
            "start from this served model dir's weights (e.g. demo_model; same labels and vocab) instead of random init"
        ),
    )
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help=(
            "ship an exponential moving average of the weights with this decay per step, "
            "e.g. 0.999; 0: the last weights (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--min-entity-score",
        type=float,
        default=0.0,
        help=(
            "the entity score threshold the exported model names for itself in config.json, "
            "served unless the model config says otherwise; 0: none (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--swap-rate", type=float, default=0.5, help="share of entities swapped in each copy (default: %(default)s)"
    )
    return TrainSpec(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    spec = parse_args(argv)
    train_demo.run(spec, "python scripts/train_demo.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
