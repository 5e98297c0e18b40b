"""The benchmark from the command line: argparse and one call of bench.benchmark.run (or rejudge)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import ner_model
from bench import benchmark
from bench.benchmark import BenchSpec
from serving import paths, tsctl
from serving.cli import comma_list, positive_int
from serving.package_model import PackagingError

int_list = comma_list(item=positive_int)


def parse_args(argv: list[str] | None) -> BenchSpec:
    parser = argparse.ArgumentParser(
        description=benchmark.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        type=comma_list(),
        default=["demo", "bert-base"],
        help="demo, bert-base, tiny or checkpoint paths, comma-separated (default: demo,bert-base; "
        "demo is skipped with a warning while demo_model/ is absent)",
    )
    parser.add_argument(
        "--sentences",
        type=Path,
        default=benchmark.default_sentences(),
        help="plain or ratsnlp-format sentence file (default: the KMOU val.txt when present, else a built-in set)",
    )
    parser.add_argument("--limit", type=int, default=96, help="first N sentences; 0: all (default: %(default)s)")
    parser.add_argument(
        "--precisions",
        type=comma_list(list(benchmark.PRECISIONS)),
        default=["ort-fp32", "ort-int8"],
        help=f"from {list(benchmark.PRECISIONS)} (default: ort-fp32,ort-int8; ort-* run on ONNX Runtime: ort-fp32 is "
        "what the shipped runtime: auto serves on a CPU, ort-int8 is quantize: int8; fp32 and bf16 run on torch, "
        "bf16 needs a GPU or AVX512-BF16/AMX)",
    )
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 8], help="served batch sizes (default: 1,8)")
    parser.add_argument("--delays", type=int_list, default=[5], help="max batch delays in ms (default: 5)")
    parser.add_argument(
        "--workers", type=int_list, default=[1], help="worker counts; torch threads = cores // workers (default: 1)"
    )
    parser.add_argument(
        "--threads",
        type=int_list,
        default=[],
        help="intra-op threads per worker to serve with, each a separate layout (default: cores // workers); "
        "more threads than cores is allowed (ONNX Runtime's threads do not spin)",
    )
    parser.add_argument(
        "--concurrency", type=int_list, default=[1, 8, 32], help="client concurrency levels (default: 1,8,32)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds per cell; the median is reported (default: %(default)s)"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=2.0,
        help="each round runs whole passes for at least this long (default: %(default)s)",
    )
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count(), help="cores to plan threads for (default: all, %(default)s)"
    )
    parser.add_argument(
        "--model-config",
        type=Path,
        default=paths.MODEL_CONFIG,
        help=(
            "per-model YAML whose handler settings every archive and the ceilings use "
            "(default: config/model-config.yaml)"
        ),
    )
    parser.add_argument("--no-seed", dest="seed", action="store_false", help="skip the tutorial's path")
    parser.add_argument(
        "--no-serve", dest="serve", action="store_false", help="in-process only: no TorchServe (no Java needed)"
    )
    parser.add_argument(
        "--accuracy", action="store_true", help="also each precision vs fp32: accuracy of trained models on the corpus"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=paths.SHARED_DATA / "val.txt",
        help="tagged corpus for --accuracy (default: %(default)s)",
    )
    parser.add_argument("--rebuild", action="store_true", help="re-create checkpoints, staged models and archives")
    parser.add_argument(
        "--out",
        type=Path,
        default=paths.RUN_DIR / "bench",
        help="results, models, archives, run dir (default: var/bench)",
    )
    parser.add_argument(
        "--rejudge",
        type=Path,
        metavar="RESULTS_JSON",
        help=(
            "measure nothing: judge a saved results.json against the current targets and rewrite it and its results.md"
        ),
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.limit < 0 or args.cores < 1:
        parser.error("--repeats and --cores must be at least 1, --limit at least 0")
    return BenchSpec(**vars(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.rejudge is not None:
            out, report = args.rejudge.parent, benchmark.rejudge(args.rejudge)
        else:
            out, report = args.out, benchmark.run(args)
    except (benchmark.BenchError, tsctl.TsError, PackagingError, ner_model.ModelLoadError) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 1
    json_path, md_path = benchmark.write_report(out, report)
    print(benchmark.markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
