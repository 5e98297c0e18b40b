#!/usr/bin/env bash
# Set up the project on a fresh machine: checks Python and Java (not with --no-java), creates .venv, installs the
# pinned requirements (requirements.txt; with --test also requirements-test.txt: pytest, the
# browser driver, Kubernetes schemas), then this project editable (pip install -e .: the packages at
# the root and the handler's modules importable from anywhere, so scripts/<command>.py runs
# without any path tricks). Safe to rerun: it installs only when a file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
need_java=1
for arg in "$@"; do
    case "$arg" in
        --test) requirements=requirements-test.txt ;;
        --no-java) need_java=0 ;;  # for what needs no TorchServe (scripts/test.sh --fast)
        *) echo "usage: scripts/setup.sh [--test] [--no-java]" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup: error: Python 3.10+ is needed (found: $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
if [ "$need_java" = 1 ] && { [ -z "$java_major" ] || [ "$java_major" -lt 11 ]; }; then
    echo "setup: error: TorchServe needs Java 11+ (17 recommended); found: ${java_major:-none}." >&2
    echo "       Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
# One stamp per requirements file: the hash of everything it installs (the test file includes
# the runtime one).
stamp=.venv/.${requirements%.txt}.sha256
want=$(cat requirements.txt requirements-ray.txt "$requirements" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing $requirements (torch 2.13.0 CPU build; a few minutes the first time)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -r "$requirements"
    echo "$want" > "$stamp"
fi
# The project itself, editable: re-done when pyproject.toml changes or the checkout moved.
stamp=.venv/.editable.sha256
want=$( (cat pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import serving, ner_core" 2>/dev/null; then
    echo "setup: installing this project editable (the root and handler/ on the import path)"
    .venv/bin/python -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
fi
echo "setup: ready (.venv: $(.venv/bin/python --version), Java ${java_major:-none})"
