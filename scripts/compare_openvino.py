"""The OpenVINO comparison from the command line: argparse and one call of bench.compare_openvino.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import compare_openvino
from bench.compare_openvino import ENGINES, CompareError, CompareSpec
from serving import paths
from serving.cli import comma_list


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=compare_openvino.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        type=comma_list(),
        default=CompareSpec.models,
        help="demo, bert-base, tiny or checkpoint paths, comma-separated (default: demo,bert-base)",
    )
    parser.add_argument(
        "--engines", type=comma_list(ENGINES), default=ENGINES, help=f"from {', '.join(ENGINES)} (default: all)"
    )
    parser.add_argument(
        "--sentences", type=Path, help="plain or ratsnlp-format sentence file (default: KMOU val.txt when present)"
    )
    parser.add_argument("--limit", type=int, default=CompareSpec.limit, help="first N sentences (default: %(default)s)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=CompareSpec.batch_size,
        help="the batched cell's size, beside batch 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=CompareSpec.threads,
        help="intra-op threads of every engine (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=CompareSpec.repeats,
        help="rounds per cell, median reported (default: %(default)s)",
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=CompareSpec.min_seconds,
        help="each round runs whole passes for at least this long (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration",
        type=int,
        default=CompareSpec.calibration,
        help="train sentences to calibrate ov-int8 on (default: %(default)s)",
    )
    parser.add_argument(
        "--accuracy",
        action="store_true",
        help="also token-tag agreement and entity F1 against torch fp32 on KMOU val (trained models)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=CompareSpec.out,
        help="results.json, results.md and the staged models (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    val = paths.SHARED_DATA / "val.txt"
    if args.accuracy and not val.is_file():
        parser.error(f"--accuracy needs the tagged corpus at {val}")
    spec = CompareSpec(
        models=tuple(args.models),
        engines=tuple(args.engines),
        sentences=args.sentences,
        limit=args.limit,
        batch_size=args.batch_size,
        threads=args.threads,
        repeats=args.repeats,
        min_seconds=args.min_seconds,
        calibration=args.calibration,
        corpus=val if args.accuracy else None,
        out=args.out,
    )
    try:
        report = compare_openvino.run(spec)
    except CompareError as err:
        print(f"compare_openvino: error: {err}", file=sys.stderr)
        return 1
    print(compare_openvino.markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
