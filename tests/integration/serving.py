"""Helpers the integration tests import (test modules import from here, not from a conftest:
two conftest modules share one module name, and the first one loaded wins)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

import package_model
import repo
import tsctl
from tsctl import port_overrides  # noqa: F401  (re-exported for the tests)

# Test archives: a long batch delay so concurrent requests surely form batches.
TEST_MODEL_CONFIG = {
    "minWorkers": 1, "maxWorkers": 2, "batchSize": 8, "maxBatchDelay": 50,
    "responseTimeout": 60, "startupTimeout": 120,
    "handler": {"max_seq_length": 32, "window_stride": 8, "max_text_chars": 20000, "max_request_tokens": 200_000,
                "max_texts_per_request": 8, "torch_threads": 1},
}


def build_archive(checkpoint: Path, store: Path, name: str, config: dict | None = None, version: str = "1.0") -> str:
    """Package ``checkpoint`` into ``store`` with a test model config; returns the file name:
    ``<name>.mar`` for 1.0, ``<name>-<version>.mar`` otherwise, so versions sit side by side
    (the archiver always writes ``<name>.mar``: built in a tmp dir, it overwrites no other)."""
    config_path = store / f"{name}-{version}-config.yaml"
    config_path.write_text(yaml.safe_dump(config or TEST_MODEL_CONFIG), encoding="utf-8")
    with tempfile.TemporaryDirectory(dir=store) as tmp:
        argv = ["--checkpoint", str(checkpoint), "--name", name, "--version", version,
                "--model-config", str(config_path), "--export-path", tmp, "--force"]
        mar = package_model.package(package_model.parse_args(argv))
        target = store / (f"{name}.mar" if version == "1.0" else f"{name}-{version}.mar")
        shutil.move(mar, target)
    return target.name


def demo_model_available() -> bool:
    return (repo.DEMO_MODEL_DIR / "model.safetensors").is_file()


@contextmanager
def own_torchserve(run_dir: Path, store: Path, **overrides: str) -> Iterator[tsctl.Server]:
    """A TorchServe from ``run_dir`` on free loopback ports (``overrides``: more config keys);
    stopped (TERM, then KILL) whatever happens."""
    server = tsctl.start(run_dir, store, overrides={**port_overrides(), **overrides})
    try:
        yield server
    finally:
        tsctl.stop(run_dir)
