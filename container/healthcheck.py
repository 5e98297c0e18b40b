#!/usr/bin/env python3
"""Exit 0 when this TorchServe can answer: every registered model has a READY worker.

The image's HEALTHCHECK and the Kubernetes readiness and startup probes (config/k8s/) run it.
TorchServe's /ping says "Healthy" while no worker is up yet, so this asks the management API
(on the container's own loopback) instead, with the management key from key_file.json in the
working directory when TorchServe's token authorization is on (in the image it is off: the
front door holds the key, entrypoint.py). It fails while the container drains after
SIGTERM (entrypoint.py). One line on stdout says why. Standard library only.
"""

from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import kor_ner_runtime as runtime


def check() -> str | None:
    """None when healthy, else the reason."""
    if runtime.draining_marker().exists():
        return "draining: shutting down after SIGTERM"
    key_file = Path("key_file.json")
    key = json.loads(key_file.read_text(encoding="utf-8"))["management"]["key"] if key_file.is_file() else None
    base = runtime.management_url(runtime.read_config())
    models = runtime.get_json(f"{base}/models", key)["models"]
    if not models:
        return "no model registered"
    for model in models:
        ready, workers = runtime.ready_workers(base, model["modelName"], key)
        if not ready:
            return f"{model['modelName']}: 0 of {workers} workers READY"
    return None


def main() -> int:
    try:
        reason = check()
    except (OSError, ValueError, KeyError, urllib.error.URLError) as err:
        reason = f"management API not answering: {err}"
    print(reason or "ready: every model has a READY worker")
    return 1 if reason else 0


if __name__ == "__main__":
    sys.exit(main())
