#!/usr/bin/env bash
# Run the tests: unit tests in-process, integration tests against a real TorchServe that the
# fixtures start on free loopback ports. --fast runs only what needs no TorchServe (no Java;
# under a minute). Other arguments go to pytest (e.g. -k spine, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
select=()
setup=(--test)
if [ "${1:-}" = "--fast" ]; then
    shift
    select=(-m "not integration")
    setup+=(--no-java)
fi
scripts/setup.sh "${setup[@]}"
exec .venv/bin/python -m pytest ${select[@]+"${select[@]}"} "$@"
