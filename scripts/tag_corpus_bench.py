"""The corpus job's measurements from the command line: argparse and one call of bench.tag_corpus_bench.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ner_core
from bench import benchmark, tag_corpus_bench
from bench.tag_corpus_bench import TagBenchSpec
from serving import tsctl
from serving.cli import comma_list, positive_int
from serving.package_model import PackagingError


def parse_args(argv: list[str] | None) -> TagBenchSpec:
    parser = argparse.ArgumentParser(
        description=tag_corpus_bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = TagBenchSpec()
    parser.add_argument(
        "--models",
        type=comma_list(),
        default=default.models,
        help="demo, bert-base or checkpoint paths, comma-separated (default: demo,bert-base)",
    )
    parser.add_argument(
        "--sentences",
        type=Path,
        default=None,
        help="plain or ratsnlp-format sentence file (default: the KMOU val.txt when present)",
    )
    parser.add_argument("--limit", type=int, default=default.limit, help="first N sentences (default: %(default)s)")
    parser.add_argument(
        "--concurrency",
        type=comma_list(item=positive_int),
        default=default.concurrency,
        help="REST concurrency levels (default: 4,8,16,32)",
    )
    parser.add_argument(
        "--actors", type=comma_list(item=positive_int), default=default.actors, help="Ray actor counts (default: 1,2)"
    )
    parser.add_argument(
        "--no-benchmark", dest="benchmark", action="store_false", help="skip scripts/benchmark.py's c32 figure"
    )
    parser.add_argument(
        "--memory-lines",
        type=lambda t: [] if t == "0" else comma_list(item=positive_int)(t),
        default=default.memory_lines,
        help="input lengths of the memory runs, comma-separated; 0: none (default: 100000,1000000)",
    )
    parser.add_argument("--cores", type=int, default=default.cores, help="cores (default: all, %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=default.out, help="results and models (default: var/tag-corpus-bench)"
    )
    args = parser.parse_args(argv)
    if args.limit < 1 or args.cores < 1:
        parser.error("--limit and --cores must be at least 1")
    return TagBenchSpec(**vars(args))


def main(argv: list[str] | None = None) -> int:
    spec = parse_args(argv)
    try:
        report = tag_corpus_bench.run(spec)
    except (benchmark.BenchError, tsctl.TsError, PackagingError, ner_core.ModelLoadError) as err:
        print(f"tag_corpus_bench: error: {err}", file=sys.stderr)
        return 1
    json_path, md_path = tag_corpus_bench.write_report(spec.out, report)
    print(tag_corpus_bench.markdown(report))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
