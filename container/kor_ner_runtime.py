"""What the container's scripts (entrypoint.py, healthcheck.py, v2_status.py) share, each fact
once: where the config is, how config.properties is read, where the management API listens,
and the draining marker. Standard library only; the image copies container/*.py side by side
into /opt/kor-ner, so the scripts import it by name."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG = os.environ.get("KOR_NER_CONFIG", "/home/model-server/config/config.properties")
MANAGEMENT_DEFAULT = "http://127.0.0.1:8081"  # TorchServe's default management_address


def properties(text: str) -> dict[str, str]:
    """config.properties' key=value lines (comments and lines without '=' skipped), stripped."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def read_config(path: str | Path = CONFIG) -> dict[str, str]:
    return properties(Path(path).read_text(encoding="utf-8"))


def management_url(props: dict[str, str]) -> str:
    """The management API's base URL as a local client reaches it (0.0.0.0 asked on loopback)."""
    value = props.get("management_address", MANAGEMENT_DEFAULT)
    return value.rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:")


def draining_marker() -> Path:
    """The file the entrypoint creates on SIGTERM: while it exists, the health check fails and
    the readiness routes answer not ready."""
    return Path(os.environ.get("TEMP", "/tmp")) / "kor-ner.draining"
