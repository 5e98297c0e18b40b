"""A real TorchServe for the integration tests: archive -> server -> registered model.

The server runs from a tmp run dir on free loopback ports, with its own TEMP (pid file,
worker sockets), so it never meets a TorchServe the developer started by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tsctl
from serving import build_archive, own_torchserve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_store")


@pytest.fixture(scope="session")
def tiny_mar(tiny_checkpoint_dir, model_store) -> str:
    return build_archive(tiny_checkpoint_dir, model_store, "tiny_ner")


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    """One TorchServe for the session; stopped (TERM, then KILL) whatever happens."""
    with own_torchserve(tmp_path_factory.mktemp("ts-run"), model_store) as srv:
        yield srv


@pytest.fixture(scope="module")
def tiny_model(server, tiny_mar):
    """The tiny model registered with one worker, unregistered after the module."""
    name = tsctl.register(server, tiny_mar, workers=1)
    yield name
    if any(m["modelName"] == name for m in tsctl.list_models(server)):
        tsctl.unregister(server, name)
