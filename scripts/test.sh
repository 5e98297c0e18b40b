#!/usr/bin/env bash
# Run every test: unit tests in-process, integration tests against a real TorchServe that the
# fixtures start on free loopback ports. Extra arguments go to pytest (e.g. -k spine, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
