#!/usr/bin/env bash
# Scan the deployment for misconfigurations with checkov: the Kubernetes manifests (config/k8s/)
# and the image's build file (container/Containerfile). Fails on any failed check. A check that
# does not apply is skipped where it would fail, with its reason (a checkov.io/skip annotation in
# a manifest, a checkov:skip comment in the Containerfile), never in a list here. checkov runs in
# its own venv (.venv-scan, from the hashed lock requirements-scan.txt, made here once), offline (--skip-download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv-scan/.requirements-scan.sha256
want=$(sha256sum requirements-scan.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "scan: installing checkov into .venv-scan (requirements-scan.txt)"
    [ -x .venv-scan/bin/python ] || "$PYTHON" -m venv .venv-scan
    .venv-scan/bin/python -m pip install --quiet --require-hashes --only-binary :all: -r requirements-scan.txt
    echo "$want" > "$stamp"
fi
# checkov finds Dockerfiles by name (Dockerfile, *.dockerfile): the Containerfile is scanned as a copy.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp container/Containerfile "$work/Dockerfile"
checkov=(.venv-scan/bin/checkov --skip-download --compact --quiet)
"${checkov[@]}" --framework kubernetes -d config/k8s
"${checkov[@]}" --framework dockerfile -f "$work/Dockerfile"
echo "scan: checkov $(.venv-scan/bin/checkov --version): no failed check in config/k8s/ or container/Containerfile"
