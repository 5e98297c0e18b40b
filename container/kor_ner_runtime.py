"""What the container's scripts (entrypoint.py, healthcheck.py, v2_status.py) share, each fact
once: where the config is, how config.properties is read (as Java does: javaproperties), where
the management API listens, how a model's readiness is read from it, and the draining marker.
Standard library and javaproperties only; the image copies container/*.py side by side into
/opt/kor-ner, so the scripts import it by name."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import javaproperties

CONFIG = os.environ.get("KOR_NER_CONFIG", "/home/model-server/config/config.properties")
MANAGEMENT_DEFAULT = "http://127.0.0.1:8081"  # TorchServe's default management_address
TIMEOUT = 3  # seconds for each management API call


def properties(text: str) -> dict[str, str]:
    """config.properties as TorchServe's Java frontend reads it (Properties.load: ``key=value``,
    ``key:value``, ``key value``, continuations, escapes; the last definition wins)."""
    return dict(javaproperties.loads(text))


def read_config(path: str | Path = CONFIG) -> dict[str, str]:
    return properties(Path(path).read_bytes().decode("latin-1"))  # ISO-8859-1, as Properties.load(InputStream)


def management_url(props: dict[str, str]) -> str:
    """The management API's base URL as a local client reaches it (0.0.0.0 asked on loopback)."""
    value = props.get("management_address", MANAGEMENT_DEFAULT)
    return value.strip().rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:")


def get_json(url: str, key: str | None = None):
    """A management API answer, with the management key when TorchServe asks for one."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as resp:
        return json.load(resp)


def model_path(management: str, name: str) -> str:
    return f"{management}/models/{urllib.parse.quote(name, safe='')}"


def workers_of(description: dict[str, Any]) -> dict[int, str]:
    """One version's entry of the management API's describe answer: its workers as pid -> status
    (``READY``, ...). serving.tsctl reads describe answers with it too."""
    return {w["pid"]: w["status"] for w in description.get("workers", [])}


def ready_count(statuses: dict[int, str]) -> int:
    """How many of ``workers_of``'s workers are READY: a model is ready with one."""
    return sum(1 for status in statuses.values() if status == "READY")


def ready_workers(management: str, name: str, key: str | None = None) -> tuple[int, int]:
    """(READY workers, workers) of a model's default version, for the health check and the
    readiness routes alike."""
    workers = workers_of(get_json(model_path(management, name), key)[0])
    return ready_count(workers), len(workers)


def draining_marker() -> Path:
    """The file the entrypoint creates on SIGTERM: while it exists, the health check fails and
    the readiness routes answer not ready."""
    return Path(os.environ.get("TEMP", "/tmp")) / "kor-ner.draining"
