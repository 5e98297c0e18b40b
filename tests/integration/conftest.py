"""A real TorchServe for the integration tests: archive -> server -> registered model.

The server runs from a tmp run dir on free loopback ports, with its own TEMP (pid file,
worker sockets), so it never meets a TorchServe the developer started by hand.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from serving import package_model, tsctl
from serving.package_model import PackageSpec

# Test archives: a long batch delay so concurrent requests surely form batches.
TEST_MODEL_CONFIG: dict[str, Any] = {
    "minWorkers": 1,
    "maxWorkers": 2,
    "batchSize": 8,
    "maxBatchDelay": 50,
    "responseTimeout": 60,
    "startupTimeout": 120,
    "handler": {
        "max_seq_length": 32,
        "window_stride": 8,
        "max_text_chars": 20000,
        "max_request_tokens": 200_000,
        "max_texts_per_request": 8,
        "torch_threads": 1,
    },
}


@pytest.fixture(scope="session")
def test_model_config() -> dict:
    """The test archives' model config (derive others with ``{**config, ...}``)."""
    return copy.deepcopy(TEST_MODEL_CONFIG)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_store")


@pytest.fixture(scope="session")
def build_archive(model_store):
    """``build_archive(checkpoint, name, config=None, version="1.0", store=None)``: package
    ``checkpoint`` into the model store (or ``store``) with a test model config; returns the file
    name: ``<name>.mar`` for 1.0, ``<name>-<version>.mar`` otherwise, so versions sit side by side
    (the archiver always writes ``<name>.mar``: built in a tmp dir, it overwrites no other)."""

    def build(
        checkpoint: Path, name: str, config: dict | None = None, version: str = "1.0", store: Path | None = None
    ) -> str:
        store = store or model_store
        config_path = package_model.write_model_config(
            config or TEST_MODEL_CONFIG, store / f"{name}-{version}-config.yaml"
        )
        with tempfile.TemporaryDirectory(dir=store) as tmp:
            mar = package_model.package(
                PackageSpec(
                    checkpoint, name=name, version=version, model_config=config_path, export_path=Path(tmp), force=True
                )
            )
            target = store / (f"{name}.mar" if version == "1.0" else f"{name}-{version}.mar")
            shutil.move(mar, target)
        return target.name

    return build


@pytest.fixture(scope="session")
def tiny_mar(tiny_checkpoint_dir, build_archive) -> str:
    return build_archive(tiny_checkpoint_dir, "tiny_ner")


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    """One TorchServe for the session; stopped (TERM, then KILL) whatever happens."""
    with tsctl.running(tmp_path_factory.mktemp("ts-run"), model_store) as srv:
        yield srv


@pytest.fixture(scope="module")
def tiny_model(server, tiny_mar):
    """The tiny model registered with one worker, unregistered after the module."""
    name = tsctl.register(server, tiny_mar, workers=1)
    yield name
    if any(m["modelName"] == name for m in tsctl.list_models(server)):
        tsctl.unregister(server, name)


@pytest.fixture(scope="session")
def batches_and_texts():
    """``batches_and_texts(server, model)``: the handler's ner_texts_per_batch histogram as
    (batches, texts) so far. With ``since`` (an earlier reading) and ``texts``: the difference,
    once ``texts`` more texts are counted (the frontend reads the worker's metric lines on its
    own thread) or after 30 s."""

    def read(
        server: tsctl.Server, model: str, since: tuple[float, float] = (0, 0), texts: int = 0
    ) -> tuple[float, float]:
        deadline = time.monotonic() + 30
        while True:
            samples = tsctl.metrics(server)
            now = tuple(
                metric_value(samples, f"ner_texts_per_batch_{s}", ModelName=model) or 0 for s in ("count", "sum")
            )
            delta = (now[0] - since[0], now[1] - since[1])
            if delta[1] >= texts or time.monotonic() > deadline:
                return delta
            time.sleep(0.2)

    return read


def metric_value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    """The one sample called ``name`` whose labels include ``labels`` (None if absent)."""
    found = [v for (n, have), v in samples.items() if n == name and set(labels.items()) <= have]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} samples of {name} match {labels}")
    return found[0] if found else None
