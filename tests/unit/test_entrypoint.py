"""The container's entrypoint, in-process: the configs it derives for TorchServe and for HAProxy,
its front door, and the inference key. HAProxy itself in front of a real TorchServe is in
tests/integration/test_front_door.py; the image is built, run and stopped under load in
tests/integration/test_container.py."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import math
import os
import resource
import shutil
import subprocess
import threading
import time

import pytest
import requests

import entrypoint
import front_door
import healthcheck
import kor_ner_runtime as runtime
import v2_status
from serving import paths, tsctl
from tests.certificates import make_certificates

CONFIGS = ["container/config.properties", "config/k8s/pod-config.properties", "config/k8s/kserve-config.properties"]
KEY = "test-key-0123456789abcdef"
IMAGE_CONFIG = (paths.ROOT / "container" / "config.properties").read_text(encoding="utf-8")
JAVA_DUMP = paths.ROOT / "tests" / "unit" / "java" / "PropertiesDump.java"


def split(text: str) -> tuple[dict[str, str], str]:
    return front_door.split_config(text, entrypoint.BACKEND_PORT, entrypoint.METRICS_BACKEND_PORT)


def java_reads(tmp_path, texts: list[str]) -> list[dict[str, str]]:
    """Each text as Java 17's own Properties.load reads it from a file (ISO-8859-1)."""
    if shutil.which("java") is None:
        pytest.skip("java not installed (Java 17 is TorchServe's)")
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"{i}.properties")
        files[-1].write_bytes(text.encode("latin-1"))
    out = subprocess.run(["java", str(JAVA_DUMP), *map(str, files)], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("config", CONFIGS)
def test_torchserve_moves_behind_haproxy_on_loopback_and_nothing_else_changes(config):
    text = (paths.ROOT / config).read_text(encoding="utf-8")
    binds, derived = split(text)
    before, after = tsctl.read_properties(paths.ROOT / config), front_door.properties(derived)
    # HAProxy takes the published addresses, TorchServe gets loopback ports and no token auth of its own
    assert f"http://{binds['inference']}" == before["inference_address"]
    assert f"http://{binds['metrics']}" == before["metrics_address"]
    assert after["inference_address"] == f"http://127.0.0.1:{entrypoint.BACKEND_PORT}"
    assert after["metrics_address"] == f"http://127.0.0.1:{entrypoint.METRICS_BACKEND_PORT}"
    assert after["disable_token_authorization"] == "true" and after["enable_envvars_config"] == "false"
    moved = {"inference_address", "metrics_address", "disable_token_authorization", "enable_envvars_config"}
    assert {k: v for k, v in after.items() if k not in moved} == {k: v for k, v in before.items() if k not in moved}
    # every TorchServe listener on loopback, none on a port HAProxy takes
    for key in ("management_address", "inference_address", "metrics_address"):
        assert after[key].startswith("http://127.0.0.1:"), key
    assert after["grpc_inference_address"] == after["grpc_management_address"] == "127.0.0.1"
    ports = [after[k].rsplit(":", 1)[-1] for k in ("management_address", "inference_address", "metrics_address")]
    ports += [after[k] for k in ("grpc_inference_port", "grpc_management_port")]
    ports += [b.rsplit(":", 1)[-1] for b in binds.values()] + [str(front_door.HEALTH_PORT), str(entrypoint.V2_PORT)]
    assert len(set(ports)) == len(ports), ports


@pytest.mark.parametrize(
    "line, message",
    [
        ("inference_address=https://0.0.0.0:8443", "inference_address must be http://HOST:PORT"),
        ("metrics_address=0.0.0.0:8082", "metrics_address must be http://HOST:PORT"),
        ("management_address=http://0.0.0.0:8081", "management_address must stay on loopback"),
        ("grpc_inference_address=0.0.0.0", "grpc_inference_address must stay on loopback"),
        ("grpc_management_address=10.0.0.5", "grpc_management_address must stay on loopback"),
    ],
)
def test_a_config_that_would_open_torchserve_beyond_the_front_door_is_refused_at_start(line, message):
    with pytest.raises(SystemExit, match=message):
        split(f"{line}\n")


# Each appended to the image's own config (whose management_address=http://127.0.0.1:8081 comes
# first): every syntax Java's Properties.load accepts, and addresses TorchServe would bind beyond
# loopback. The test first proves that Java really reads each as a listener off loopback.
BYPASSES = {
    "colon": "management_address:http://0.0.0.0:8081",
    "space": "management_address http://0.0.0.0:8081",
    "tabs": "management_address\t\thttp://0.0.0.0:8081",
    "spaced equals": "   management_address  =  http://0.0.0.0:8081",
    "colon and spaces": "management_address :  http://0.0.0.0:8081",
    "key continued": "management_\\\n      address=http://0.0.0.0:8081",
    "value continued": "management_address=http://0.0.0.0:\\\n    8081",
    "escaped key": "management\\u005faddress=http://0.0.0.0:8081",
    "escaped value": "management_address=http://0\\u002e0.0.0:8081",
    "backslashed letters": "man\\agement_address=http://0.0.0.0:8081",
    "carriage return line": "x=1\rmanagement_address=http://0.0.0.0:8081",
    "form feed indent": "\f management_address=http://0.0.0.0:8081",
    "upper-case scheme": "management_address=HTTP://0.0.0.0:8081",
    "https": "management_address=https://0.0.0.0:8443",
    "zero host": "management_address=http://0:8081",
    "empty host": "management_address=http://:8081",
    "ipv6 any": "management_address=http://[::]:8081",
    "loopback look-alike": "management_address=http://127.0.0.1.nip.io:8081",
    "unix socket": "management_address=unix:/tmp/management.sock",
    "grpc colon": "grpc_inference_address:0.0.0.0",
    "grpc space": "grpc_management_address 0.0.0.0",
    "grpc ipv6 any": "grpc_inference_address=::",
    "grpc escaped": "grpc_management\\u005faddress=0.0.0.0",
}


def test_java_reads_every_bypass_attempt_as_a_listener_off_loopback(tmp_path):
    """The attempts are real: Java (TorchServe's reader) sees a listener beyond loopback in each,
    and the guard reads each config exactly as Java does."""
    texts = [IMAGE_CONFIG + line + "\n" for line in BYPASSES.values()]
    for name, text, java in zip(BYPASSES, texts, java_reads(tmp_path, texts), strict=True):
        assert java == front_door.properties(text), name
        off = [
            k for k, default in front_door.LOOPBACK_ONLY.items() if not front_door.on_loopback(k, java.get(k, default))
        ]
        assert off, (name, {k: java.get(k) for k in front_door.LOOPBACK_ONLY})


@pytest.mark.parametrize("line", BYPASSES.values(), ids=BYPASSES.keys())
def test_every_bypass_attempt_is_refused_at_start_with_one_line(line):
    with pytest.raises(SystemExit) as err:
        split(IMAGE_CONFIG + line + "\n")
    message = str(err.value)
    assert "must stay on loopback (127.0.0.1)" in message and "\n" not in message


@pytest.mark.parametrize(
    "line",
    [
        "management_address:http://localhost:8081",
        "management_address http://127.0.0.1:9081/",
        "grpc_inference_address:localhost",
        "management_address=HTTPS://[::1]:8443",
    ],
)
def test_loopback_written_in_any_syntax_is_accepted(line):
    split(IMAGE_CONFIG + line + "\n")


def test_torchserve_runs_exactly_what_the_guard_read(tmp_path):
    """The derived config is written back so that Java reads the guard's reading, and TorchServe's
    Python launcher (a split on the first '=') reads vmargs and plugins_path the same."""
    nasty = (
        IMAGE_CONFIG + "vmargs:-Xmx1g -XX:+UseG1GC -Dx=a#b!c\nplugins_path /opt/p\\\\q\n"
        "allowed_urls=^https://s3\\.example\\.com/.*$\nweird\\ key\\:x=\\  lead\\u00e9\\u20ac\\ud83d\\ude00\\t\n"
    )
    _, derived = split(nasty)
    expected = front_door.properties(nasty)
    expected.update(front_door.properties(derived) | {})  # the four moved settings
    [java_derived] = java_reads(tmp_path, [derived])
    assert java_derived == front_door.properties(derived)
    assert java_derived["vmargs"] == "-Xmx1g -XX:+UseG1GC -Dx=a#b!c" and java_derived["plugins_path"] == "/opt/p\\q"
    assert java_derived["weird key:x"] == "  leadé€😀\t"
    assert java_derived["allowed_urls"] == "^https://s3.example.com/.*$"
    kept = {k: v for k, v in front_door.properties(nasty).items() if k not in java_derived or k.endswith("_address")}
    assert all(k.endswith("_address") for k in kept)
    from ts.model_server import load_properties

    path = tmp_path / "derived.properties"
    path.write_text(derived, encoding="latin-1")
    assert load_properties(str(path))["vmargs"] == java_derived["vmargs"]


def test_no_ts_variable_reaches_torchserve():
    environ = {
        "PATH": "/bin",
        "TS_CONFIG_FILE": "/tmp/evil.properties",
        "TS_OPEN_INFERENCE_PROTOCOL": "oip",
        "ts_management_address": "http://0.0.0.0:8081",
        "KOR_NER_KEY_FILE": "/k",
        "TEMP": "/tmp",
    }
    env, dropped = front_door.torchserve_environment(environ)
    assert env == {"PATH": "/bin", "KOR_NER_KEY_FILE": "/k", "TEMP": "/tmp"}
    assert dropped == ["TS_CONFIG_FILE", "TS_OPEN_INFERENCE_PROTOCOL", "ts_management_address"]


def door(tmp_path, keys: list[str] | None = None, **fields) -> str:
    keys_file = front_door.write_private(tmp_path / "keys.sha256", front_door.key_digests(keys or [KEY]))
    return front_door.front_door_config(
        front_door.FrontDoor("127.0.0.1:18080", "127.0.0.1:18082", str(keys_file), 120, maxconn=4000, **fields)
    )


def haproxy_accepts(text: str) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (Debian: apt-get install haproxy): its own check of the config skipped")
    check = subprocess.run(
        ["haproxy", "-c", "-f", "/dev/stdin"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_haproxy_accepts_the_front_door_and_it_holds_what_it_promises(tmp_path):
    config = door(tmp_path, max_conn_per_source=500, health_bind="127.0.0.1:18083", nbthread=2)
    assert "option idle-close-on-response" in config  # an idle keep-alive connection gets Connection: close, not a cut
    assert "timeout server 130s" in config  # TorchServe, not HAProxy, ends a slow batch
    assert "hard-stop-after 35s" in config and "nbthread 2" in config
    assert "timeout http-request 5s" in config and "option http-buffer-request" in config
    assert "maxconn 4064" in config and "sc0_conn_cur gt 500" in config  # global: inference + the two side doors
    assert config.count("    maxconn 32\n") == 2 and "maxconn 256 maxqueue 256" in config
    assert f"timeout queue {front_door.QUEUE_TIMEOUT:g}s" in config
    assert config.count(" proto h1") == 3 and " ssl " not in config  # HTTP/1.1 only; TLS only when asked
    assert "log stdout format raw" in config and "%HPO" not in config and "%hr" not in config and "%{" not in config
    assert KEY not in config and hashlib.sha256(KEY.encode()).hexdigest() not in config  # the digests are in a file
    assert "hdr WWW-Authenticate 'Bearer realm=\"kor-ner\"'" in config
    assert "unless route_ping || route_v2_health || one_header bearer_form key_known" in config
    assert "0.0.0.0" not in door(tmp_path, max_conn_per_source=0).replace("127.0.0.1", "")
    assert "sc0_conn_cur" not in door(tmp_path, max_conn_per_source=0)
    assert front_door.MAX_CONN_PER_SOURCE == 0 and "sc0_conn_cur" not in door(tmp_path)  # off unless set
    for text in (config, door(tmp_path, max_conn_per_source=0)):
        haproxy_accepts(text)


def test_the_routes_are_the_documented_ones_and_each_names_its_methods():
    table = {r.name: (r.methods, r.key, r.backend) for r in front_door.ROUTES}
    assert table == {
        "ping": (("GET", "HEAD"), False, "torchserve_ping"),
        "v2_health": (("GET", "HEAD"), False, "v2_status"),
        "v2_model": (("GET", "HEAD"), True, "v2_status"),
        "v2_infer": (("POST",), True, "torchserve"),
        "predict": (("POST",), True, "torchserve"),
    }
    doc = (paths.ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    section = doc[doc.index("### The routes that pass") :]
    section = section[: section.index("\n#")]
    for route in front_door.ROUTES:
        assert f"`{route.name}`" in section, route.name


def test_tls_uses_the_certificate_file_and_tls_1_2_or_newer(tmp_path):
    pem = tmp_path / "tls.pem"
    make_certificates(tmp_path)
    pem.write_text(entrypoint.tls_bundle(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")))
    config = door(tmp_path, tls_pem=str(pem))
    bind = next(line for line in config.splitlines() if line.startswith("    bind 127.0.0.1:18080"))
    assert f"ssl crt {pem} alpn http/1.1 ssl-min-ver TLSv1.2" in bind and "ciphers ECDHE-" in bind
    assert "proto h1" in bind and "RSA-AES128-SHA:" not in bind and "CBC" not in bind
    haproxy_accepts(config)
    for cert, key in (("", str(tmp_path / "tls.key")), (str(tmp_path / "tls.crt"), "")):
        with pytest.raises(SystemExit, match="TLS needs both KOR_NER_TLS_CERT and KOR_NER_TLS_KEY"):
            entrypoint.tls_bundle(cert, key)
    with pytest.raises(SystemExit, match="holds no PEM private key"):
        entrypoint.tls_bundle(str(tmp_path / "tls.crt"), str(tmp_path / "tls.crt"))
    with pytest.raises(SystemExit, match="KOR_NER_TLS_CERT /nonexistent: No such file"):
        entrypoint.tls_bundle("/nonexistent", str(tmp_path / "tls.key"))


def test_the_keys_come_from_the_key_file_one_a_line_or_are_generated_private(tmp_path):
    secret = tmp_path / "secret"
    old, new = KEY, "new-key-abcdefghijklmnop"
    secret.write_text(f"{old}\n\n  {new}  \n{old}\n")
    assert front_door.read_keys(str(secret)) == [old, new]  # every key, once, in order
    digests = front_door.key_digests([old, new]).splitlines()
    assert digests == [hashlib.sha256(k.encode()).hexdigest().upper() for k in (old, new)]
    generated = tmp_path / "kor-ner" / "inference.key"
    key = front_door.generated_key(generated)
    assert front_door.KEY.fullmatch(key) and len(key) >= 32
    assert generated.read_text().strip() == key and generated.stat().st_mode & 0o777 == 0o600
    assert front_door.generated_key(generated) != key  # a new one at every start


@pytest.mark.parametrize(
    "content", ["", "\n\n", "short", "has space inside the key", "kéy-with-non-ascii-0123456789", f"{KEY}\nshort"]
)
def test_a_key_file_that_holds_no_usable_key_stops_the_start_without_printing_it(tmp_path, content):
    secret = tmp_path / "secret"
    secret.write_text(content)
    with pytest.raises(SystemExit) as err:
        front_door.read_keys(str(secret))
    assert "must be 16 to 512 characters" in str(err.value)
    assert all(part not in str(err.value) for part in content.split() if len(part) > 4)
    with pytest.raises(SystemExit, match="KOR_NER_KEY_FILE /nonexistent/key: No such file"):
        front_door.read_keys("/nonexistent/key")


def test_maxconn_follows_the_memory_limit_and_the_file_descriptor_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        by_fds = front_door.max_connections(memory=1 << 50)
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert limit == hard or hard == resource.RLIM_INFINITY  # raised to the hard limit
        assert by_fds == max(64, min(20_000, (limit - 200) // 2 - 64))
        assert 2 * (by_fds + 64) + 200 <= limit or by_fds == 64
        # a 1536 MiB pod (KServe's limit), the door's tenth: 153.6 MiB at 40 kB a connection
        assert front_door.max_connections(memory=1536 << 20) == min(by_fds, int((1536 << 20) * 0.1) // 40960) == 3932
        assert front_door.max_connections(memory=64 << 20) == 163
        assert front_door.max_connections(memory=1 << 20) == 64
        assert front_door.max_connections(memory=1536 << 20, share=0.2) == min(by_fds, 7864)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_nbthread_follows_the_cpu_quota():
    cpus = len(os.sched_getaffinity(0))
    assert front_door.threads(quota=0.5) == 1 and front_door.threads(quota=1.0) == 1
    assert front_door.threads(quota=1.2) == min(cpus, 2) and front_door.threads(quota=512) == cpus
    quota = front_door.cgroup_cpus()
    assert front_door.threads() == (min(cpus, math.ceil(quota)) if quota else cpus)


def test_the_open_inference_protocol_status_routes_go_to_the_helper_and_only_health_skips_the_key(tmp_path):
    config = door(tmp_path)
    assert "acl route_v2_health path_reg ^/v2/health/(live|ready)$" in config
    name = front_door.NAME
    assert f"acl route_v2_model path_reg ^/v2/models/{name}(/versions/{name})?(/ready)?$" in config
    assert "unless route_ping || route_v2_health || one_header" in config  # metadata and model ready need the key
    assert "use_backend v2_status if route_v2_health || route_v2_model" in config
    assert f"server v2 127.0.0.1:{entrypoint.V2_PORT}" in config
    assert config.index("del-header authorization") < config.index("use_backend v2_status")


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
    answers = {
        "/models?limit=1000": {"models": [{"modelName": "kor_ner", "modelUrl": "kor_ner.mar"}]},
        "/models/kor_ner/all": [{"modelVersion": "1.0", "workers": []}, {"modelVersion": "2.0", "workers": []}],
        "/models/kor_ner": [
            {"modelVersion": "1.0", "workers": [{"pid": 7, "status": "READY"}, {"pid": 8, "status": "UNLOADING"}]}
        ],
    }

    class Management(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
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
    assert runtime.properties(text) == {"management_address": "http://0.0.0.0:8081/ ", "x": "a=b", "no": "pair"}
    assert front_door.properties(text) == runtime.properties(text)  # Java keeps a value's trailing space
    assert runtime.management_url(runtime.properties(text)) == "http://127.0.0.1:8081"
    assert runtime.management_url({}) == "http://127.0.0.1:8081"
    monkeypatch.setenv("TEMP", str(tmp_path))
    assert runtime.draining_marker() == tmp_path / "kor-ner.draining"
    assert healthcheck.runtime is runtime
    (tmp_path / "kor-ner.draining").touch()
    assert healthcheck.check() == "draining: shutting down after SIGTERM"


def test_the_drain_keeps_the_door_open_for_its_minimum_window_even_when_quiet():
    """A load balancer that learns of the stop late still gets its new connections answered:
    with no request at all, the drain lasts its minimum; the shipped minimum is at least 10 s
    and the longest drain no shorter."""
    assert entrypoint.DRAIN_MIN >= 10 and entrypoint.DRAIN_MAX >= entrypoint.DRAIN_MIN
    took = entrypoint.drain(lambda: 5.0, minimum=0.6, quiet=0.1, longest=0.2)  # longest < minimum: minimum wins
    assert took >= 0.6


def test_the_drain_waits_for_requests_to_stop_after_the_window_and_gives_up_at_its_longest(capsys):
    started = time.monotonic()
    busy_until = started + 0.8  # requests keep arriving until then

    def received() -> float:
        return round(min(time.monotonic(), busy_until), 2)  # a count that grows while requests arrive

    took = entrypoint.drain(received, minimum=0.2, quiet=0.3, longest=30)
    assert took >= 0.8 + 0.3 - 0.05 and "drained: no new request for 0.3 s" in capsys.readouterr().out
    took = entrypoint.drain(time.monotonic, minimum=0.2, quiet=0.3, longest=0.7)  # never quiet
    assert took >= 0.7 and "requests still arriving 0.7 s after the signal" in capsys.readouterr().out


def test_the_drain_ends_at_once_when_a_process_it_serves_with_has_exited(capsys):
    took = entrypoint.drain(lambda: 1.0, minimum=60, quiet=0.1, longest=60, alive=lambda: False)
    assert took < 30 and "exited during the drain" in capsys.readouterr().out
    assert entrypoint.running(os.getpid())
    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while entrypoint.running(zombie.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exited, not yet reaped: a zombie counts as not running
    assert not entrypoint.running(zombie.pid)
    zombie.wait()
