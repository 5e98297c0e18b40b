"""Packaging from the command line: argparse and one call of serving.package_model.package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serving import package_model, paths
from serving.package_model import PackageSpec, PackagingError, package


def parse_args(argv: list[str] | None) -> PackageSpec:
    parser = argparse.ArgumentParser(
        description=package_model.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint directory, .ckpt file, or save_pretrained directory"
    )
    parser.add_argument(
        "--pretrained",
        help=(
            "directory (or cached HF model id) with the base model's config.json and "
            "vocab.txt; default: the checkpoint's directory"
        ),
    )
    parser.add_argument("--label-map", type=Path, help="label_map.txt; default: the checkpoint's directory")
    parser.add_argument("--name", default=paths.MODEL_NAME, help="model name in TorchServe (default: %(default)s)")
    parser.add_argument("--version", default="1.0", help="model version (default: %(default)s)")
    parser.add_argument(
        "--model-config",
        type=Path,
        default=paths.MODEL_CONFIG,
        help="per-model YAML (default: config/model-config.yaml)",
    )
    parser.add_argument(
        "--export-path", type=Path, default=paths.MODEL_STORE, help="where the .mar goes (default: model_store/)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument(
        "--archive-name",
        help="archive file name (default: the model name): e.g. kor_ner-2.0 for "
        "model_store/kor_ner-2.0.mar, a new version beside the one being served",
    )
    return PackageSpec(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    spec = parse_args(argv)
    try:
        path = package(spec)
    except PackagingError as err:
        print(f"package_model: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
