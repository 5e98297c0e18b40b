"""The container's entrypoint, in-process: the configs it derives for TorchServe and for HAProxy,
its front door. The image itself is built, run and stopped under load in
tests/integration/test_container.py."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest

from serving import paths, tsctl

spec = importlib.util.spec_from_file_location("entrypoint", paths.ROOT / "container" / "entrypoint.py")
entrypoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(entrypoint)

CONFIGS = ["container/config.properties", "config/k8s/pod-config.properties", "config/k8s/kserve-config.properties"]


@pytest.mark.parametrize("config", CONFIGS)
def test_torchserve_moves_behind_haproxy_and_nothing_else_changes(config):
    text = (paths.ROOT / config).read_text(encoding="utf-8")
    bind, derived = entrypoint.split_inference(text)
    before, after = tsctl.read_properties(paths.ROOT / config), entrypoint.properties(derived)
    assert f"http://{bind}" == before["inference_address"]  # HAProxy takes the published address
    assert after["inference_address"] == f"http://127.0.0.1:{entrypoint.BACKEND_PORT}"  # TorchServe: loopback only
    assert {k: v for k, v in after.items() if k != "inference_address"} == {k: v for k, v in before.items() if k != "inference_address"}
    taken = {after[k].rsplit(":", 1)[-1] for k in ("management_address", "metrics_address")}
    taken |= {after[k] for k in ("grpc_inference_port", "grpc_management_port")}
    assert str(entrypoint.BACKEND_PORT) not in taken | {bind.rsplit(":", 1)[-1]}


def test_an_address_haproxy_cannot_take_is_refused_at_start():
    with pytest.raises(SystemExit, match="inference_address must be http://HOST:PORT"):
        entrypoint.split_inference("inference_address=https://0.0.0.0:8443\n")


def test_haproxy_accepts_the_config_and_finishes_what_it_took():
    config = entrypoint.haproxy_config("127.0.0.1:18080", 120)
    assert "option idle-close-on-response" in config  # an idle keep-alive connection gets Connection: close, not a cut
    assert "timeout server 130s" in config  # TorchServe, not HAProxy, ends a slow batch
    assert f"hard-stop-after {entrypoint.FINISH_MAX:g}s" in config
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (Debian: apt-get install haproxy): its own check of the config skipped")
    check = subprocess.run(["haproxy", "-c", "-f", "/dev/stdin"], input=config, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
