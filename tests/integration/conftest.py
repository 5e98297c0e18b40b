"""A real TorchServe for the integration tests: archive -> server -> registered model.

The server runs from a tmp run dir on free loopback ports, with its own TEMP (pid file,
worker sockets), so it never meets a TorchServe the developer started by hand.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import yaml

import package_model
import repo
import tsctl

pytestmark = pytest.mark.integration

# Test archives: a long batch delay so concurrent requests surely form batches.
TEST_MODEL_CONFIG = {
    "minWorkers": 1, "maxWorkers": 2, "batchSize": 8, "maxBatchDelay": 50,
    "responseTimeout": 60, "startupTimeout": 120,
    "handler": {"max_seq_length": 32, "window_stride": 8, "max_text_chars": 20000,
                "max_texts_per_request": 8, "torch_threads": 1},
}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def port_overrides() -> dict[str, str]:
    inference, management, metrics, grpc_i, grpc_m = free_ports(5)
    return {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{metrics}",
        "grpc_inference_port": str(grpc_i),
        "grpc_management_port": str(grpc_m),
    }


def build_archive(checkpoint: Path, store: Path, name: str, config: dict | None = None, version: str = "1.0") -> str:
    """Package ``checkpoint`` into ``store`` with a test model config; returns the file name."""
    config_path = store / f"{name}-{version}-config.yaml"
    config_path.write_text(yaml.safe_dump(config or TEST_MODEL_CONFIG), encoding="utf-8")
    argv = ["--checkpoint", str(checkpoint), "--name", name, "--version", version,
            "--model-config", str(config_path), "--export-path", str(store), "--force"]
    args = package_model.parse_args(argv)
    mar = package_model.package(args)
    target = mar.with_name(f"{name}-{version}.mar") if version != "1.0" else mar
    if target != mar:
        shutil.move(mar, target)
    return target.name


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_store")


@pytest.fixture(scope="session")
def tiny_mar(tiny_checkpoint_dir, model_store) -> str:
    return build_archive(tiny_checkpoint_dir, model_store, "tiny_ner")


@pytest.fixture(scope="session")
def server(model_store, tmp_path_factory):
    """One TorchServe for the session; stopped (TERM, then KILL) whatever happens."""
    run_dir = tmp_path_factory.mktemp("ts-run")
    srv = tsctl.start(run_dir, model_store, overrides=port_overrides())
    try:
        yield srv
    finally:
        tsctl.stop(run_dir)


@pytest.fixture(scope="module")
def tiny_model(server, tiny_mar):
    """The tiny model registered with one worker, unregistered after the module."""
    name = tsctl.register(server, tiny_mar, workers=1)
    yield name
    if any(m["modelName"] == name for m in tsctl.list_models(server)):
        tsctl.unregister(server, name)


def demo_model_available() -> bool:
    return (repo.DEMO_MODEL_DIR / "model.safetensors").is_file()
