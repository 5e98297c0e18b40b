"""The container's entrypoint, in-process: the configs it derives for TorchServe and for HAProxy,
its front door, and the inference key. HAProxy itself in front of a real TorchServe is in
tests/integration/test_front_door.py; the image is built, run and stopped under load in
tests/integration/test_container.py."""

from __future__ import annotations

import resource
import shutil
import subprocess

import pytest

from drills import flood
from serving import paths, tsctl

entrypoint = flood.entrypoint_module()

CONFIGS = ["container/config.properties", "config/k8s/pod-config.properties", "config/k8s/kserve-config.properties"]
KEY = "test-key-0123456789abcdef"


@pytest.mark.parametrize("config", CONFIGS)
def test_torchserve_moves_behind_haproxy_on_loopback_and_nothing_else_changes(config):
    text = (paths.ROOT / config).read_text(encoding="utf-8")
    binds, derived = entrypoint.split_config(text)
    before, after = tsctl.read_properties(paths.ROOT / config), entrypoint.properties(derived)
    # HAProxy takes the published addresses, TorchServe gets loopback ports and no token auth of its own
    assert f"http://{binds['inference']}" == before["inference_address"]
    assert f"http://{binds['metrics']}" == before["metrics_address"]
    assert after["inference_address"] == f"http://127.0.0.1:{entrypoint.BACKEND_PORT}"
    assert after["metrics_address"] == f"http://127.0.0.1:{entrypoint.METRICS_BACKEND_PORT}"
    assert after["disable_token_authorization"] == "true"
    moved = {"inference_address", "metrics_address", "disable_token_authorization"}
    assert {k: v for k, v in after.items() if k not in moved} == {k: v for k, v in before.items() if k not in moved}
    # every TorchServe listener on loopback, none on a port HAProxy takes
    for key in ("management_address", "inference_address", "metrics_address"):
        assert after[key].startswith("http://127.0.0.1:"), key
    assert after["grpc_inference_address"] == after["grpc_management_address"] == "127.0.0.1"
    ports = [after[k].rsplit(":", 1)[-1] for k in ("management_address", "inference_address", "metrics_address")]
    ports += [after[k] for k in ("grpc_inference_port", "grpc_management_port")]
    ports += [b.rsplit(":", 1)[-1] for b in binds.values()]
    assert len(set(ports)) == len(ports), ports


@pytest.mark.parametrize("line, message", [
    ("inference_address=https://0.0.0.0:8443", "inference_address must be http://HOST:PORT"),
    ("metrics_address=0.0.0.0:8082", "metrics_address must be http://HOST:PORT"),
    ("management_address=http://0.0.0.0:8081", "management_address must stay on loopback"),
    ("grpc_inference_address=0.0.0.0", "grpc_inference_address must stay on loopback"),
    ("grpc_management_address=10.0.0.5", "grpc_management_address must stay on loopback"),
])
def test_a_config_that_would_open_torchserve_beyond_the_front_door_is_refused_at_start(line, message):
    with pytest.raises(SystemExit, match=message):
        entrypoint.split_config(f"{line}\n")


def door(tmp_path, **fields) -> str:
    auth = tmp_path / "authorization.lst"
    auth.write_text(f"Bearer {KEY}\n")
    return entrypoint.front_door_config(entrypoint.FrontDoor("127.0.0.1:18080", "127.0.0.1:18082", str(auth), 120,
                                                             maxconn=4000, **fields))


def test_haproxy_accepts_the_front_door_and_it_holds_what_it_promises(tmp_path):
    config = door(tmp_path, max_conn_per_source=500)
    assert "option idle-close-on-response" in config  # an idle keep-alive connection gets Connection: close, not a cut
    assert "timeout server 130s" in config  # TorchServe, not HAProxy, ends a slow batch
    assert f"hard-stop-after {entrypoint.FINISH_MAX:g}s" in config
    assert "timeout http-request 5s" in config and "option http-buffer-request" in config
    assert "maxconn 4000" in config and "sc0_conn_cur gt 500" in config
    assert "\n    log " not in config and "option httplog" not in config  # HAProxy logs nothing
    assert KEY not in config  # the key is only in the auth file
    assert "unless authorized || read liveness" in config  # GET /ping alone goes without a key
    assert "hdr WWW-Authenticate 'Bearer realm=\"kor-ner\"'" in config
    assert "0.0.0.0" not in door(tmp_path, max_conn_per_source=0).replace("127.0.0.1", "")
    assert "sc0_conn_cur" not in door(tmp_path, max_conn_per_source=0)
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (Debian: apt-get install haproxy): its own check of the config skipped")
    assert entrypoint.MAX_CONN_PER_SOURCE == 0 and "sc0_conn_cur" not in door(tmp_path)  # off unless set
    for text in (config, door(tmp_path, max_conn_per_source=0)):
        check = subprocess.run(["haproxy", "-c", "-f", "/dev/stdin"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_the_key_comes_from_the_key_file_or_is_generated_private(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(f"{KEY}\n")
    assert entrypoint.inference_key(str(secret), tmp_path / "unused") == KEY
    assert not (tmp_path / "unused").exists()
    generated = tmp_path / "kor-ner" / "inference.key"
    key = entrypoint.inference_key("", generated)
    assert entrypoint.KEY.fullmatch(key) and len(key) >= 32
    assert generated.read_text().strip() == key and generated.stat().st_mode & 0o777 == 0o600
    assert entrypoint.inference_key("", generated) != key  # a new one at every start


@pytest.mark.parametrize("content", ["", "short", "has space inside the key", "kéy-with-non-ascii-0123456789"])
def test_a_key_file_that_holds_no_usable_key_stops_the_start_without_printing_it(tmp_path, content):
    secret = tmp_path / "secret"
    secret.write_text(content)
    with pytest.raises(SystemExit) as err:
        entrypoint.inference_key(str(secret), tmp_path / "unused")
    assert "must be 16 to 512 characters" in str(err.value)
    assert not content or content not in str(err.value)
    with pytest.raises(SystemExit, match="KOR_NER_KEY_FILE /nonexistent/key: No such file"):
        entrypoint.inference_key("/nonexistent/key", tmp_path / "unused")


def test_maxconn_follows_the_file_descriptor_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    maxconn = entrypoint.max_connections()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert limit == hard or hard == resource.RLIM_INFINITY  # raised to the hard limit
    assert maxconn == max(64, min(20_000, (limit - 200) // 2))
    assert 2 * maxconn + 200 <= limit or maxconn == 64
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

