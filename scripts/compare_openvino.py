#!/usr/bin/env python3
"""Runs ops/cli/compare_openvino.py (its --help says what it does). The ops package is installed editable by scripts/setup.sh."""

import sys

from ops.cli.compare_openvino import main

if __name__ == "__main__":
    sys.exit(main())
