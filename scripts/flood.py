#!/usr/bin/env python3
"""Runs ops/cli/flood.py (its --help says what it does). The ops package is installed editable by scripts/setup.sh."""

import sys

from ops.cli.flood import main

if __name__ == "__main__":
    sys.exit(main())
