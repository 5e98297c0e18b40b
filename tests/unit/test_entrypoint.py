"""The container's entrypoint, in-process: the configs it derives for TorchServe and for HAProxy,
its front door, and the inference key. HAProxy itself in front of a real TorchServe is in
tests/integration/test_front_door.py; the image is built, run and stopped under load in
tests/integration/test_container.py."""

from __future__ import annotations

import functools
import http.server
import json
import resource
import shutil
import subprocess
import threading
import time

import pytest
import requests

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
        check = subprocess.run(["haproxy", "-c", "-f", "/dev/stdin"], input=text, check=False, capture_output=True, text=True)
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



def test_the_open_inference_protocol_status_routes_go_to_the_helper_and_only_health_skips_the_key(tmp_path):
    config = door(tmp_path)
    assert "acl v2_health path /v2/health/live /v2/health/ready" in config
    assert "acl v2_model path_reg ^/v2/models/[^/]+(/versions/[^/]+)?(/ready)?$" in config
    assert "unless authorized || read liveness || read v2_health\n" in config  # metadata and model ready need the key
    assert "use_backend v2_status if read v2_health || read v2_model" in config
    assert f"server v2 127.0.0.1:{entrypoint.V2_PORT}" in config
    assert config.index("del-header authorization") < config.index("use_backend v2_status")


v2_status = flood.container_module("v2_status")
runtime = flood.container_module("kor_ner_runtime")
MODELS = {"kor_ner": v2_status.ModelState(("1.0", "2.0"), True)}


def test_the_model_listing_is_asked_at_most_once_a_ttl_and_unknown_while_the_api_is_down():
    calls = []

    def fetch(url):
        calls.append(url)
        if len(calls) > 1:
            raise ConnectionRefusedError
        return MODELS

    models = v2_status.Models("http://mgmt", ttl=0.2, fetch=fetch)
    assert all(models.get() == MODELS for _ in range(100)) and calls == ["http://mgmt"]  # a probe storm: one call
    time.sleep(0.25)
    assert models.get() is None and len(calls) == 2
    answer = functools.partial(v2_status.answer, models=models, draining=lambda: False)
    assert answer("/v2/health/live") == (200, {"live": True})
    assert answer("/v2/health/ready") == (503, {"ready": False})
    assert answer("/v2/models/kor_ner/ready")[0] == 503  # not "not registered" while the API is down
    assert answer("/v2/models/kor_ner")[0] == 503


def test_the_helper_answers_get_and_head_from_the_management_api_and_the_marker(tmp_path):
    """v2_status.serve against a stand-in management API answering as TorchServe's does."""
    answers = {"/models?limit=1000": {"models": [{"modelName": "kor_ner", "modelUrl": "kor_ner.mar"}]},
               "/models/kor_ner/all": [{"modelVersion": "1.0", "workers": []}, {"modelVersion": "2.0", "workers": []}],
               "/models/kor_ner": [{"modelVersion": "1.0", "workers": [{"pid": 7, "status": "READY"}, {"pid": 8, "status": "UNLOADING"}]}]}

    class Management(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = json.dumps(answers[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    mgmt = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Management)
    threading.Thread(target=mgmt.serve_forever, daemon=True).start()
    marker = tmp_path / "draining"
    port = tsctl.free_ports(1)[0]
    helper = v2_status.serve(port, f"http://127.0.0.1:{mgmt.server_port}", marker)
    base = f"http://127.0.0.1:{port}"
    try:
        assert v2_status.model_states(f"http://127.0.0.1:{mgmt.server_port}") == MODELS
        metadata = requests.get(f"{base}/v2/models/kor_ner", timeout=5).json()
        assert metadata == v2_status.v2_model_metadata("kor_ner", ["1.0", "2.0"])
        assert requests.get(f"{base}/v2/models/kor_ner/versions/2.0/ready", timeout=5).json() == {"ready": True}
        assert requests.get(f"{base}/v2/models/kor_ner/versions/3.0", timeout=5).status_code == 404
        assert requests.get(f"{base}/v2/models/other/ready", timeout=5).status_code == 404
        head = requests.head(f"{base}/v2/health/ready", timeout=5)
        assert head.status_code == 200 and head.content == b"" and head.headers["Content-Type"] == "application/json"
        marker.touch()
        assert requests.get(f"{base}/v2/health/ready", timeout=5).status_code == 503  # draining
        assert requests.get(f"{base}/v2/health/live", timeout=5).json() == {"live": True}
    finally:
        for server in (helper, mgmt):
            server.shutdown()
            server.server_close()


def test_the_container_scripts_share_one_reading_of_the_config_and_one_marker(tmp_path, monkeypatch):
    assert entrypoint.properties is runtime.properties and entrypoint.draining_marker is runtime.draining_marker
    text = "# management_address=http://0.0.0.0:1\n management_address = http://0.0.0.0:8081/ \nx=a=b\nno pair\n"
    assert runtime.properties(text) == {"management_address": "http://0.0.0.0:8081/", "x": "a=b"}
    assert runtime.management_url(runtime.properties(text)) == "http://127.0.0.1:8081"
    assert runtime.management_url({}) == "http://127.0.0.1:8081"
    monkeypatch.setenv("TEMP", str(tmp_path))
    assert runtime.draining_marker() == tmp_path / "kor-ner.draining"
    healthcheck = flood.container_module("healthcheck")
    assert healthcheck.runtime is runtime
    (tmp_path / "kor-ner.draining").touch()
    assert healthcheck.check() == "draining: shutting down after SIGTERM"
