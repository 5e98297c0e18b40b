"""The names probe from the command line: argparse and one call of study.eval_names.run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ner_settings import HandlerSettings
from serving import paths
from study import eval_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=eval_names.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, default=paths.DEMO_MODEL_DIR, help="served model dir (default: %(default)s)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=paths.MODEL_CONFIG,
        help="model config whose handler: section says how entities are read (default: %(default)s)",
    )
    parser.add_argument("--show", type=int, default=0, help="print up to N names not kept whole as served")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    eval_names.run(args.model, HandlerSettings.from_mapping(raw.get("handler")), args.json, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
