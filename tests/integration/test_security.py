"""Security against a real TorchServe: keys on every API, key rotation and expiry handled by the
scripts, loopback-only listeners, no registration from outside the model store, no request text
in any log.

TorchServe 0.12 answers a missing or wrong key with 400 InvalidKeyException (not 401), and its
metrics API takes no key at all: it is protected by listening on 127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

from scripts import tsctl as tsctl_cli
from serving import tsctl

REFUSED = "InvalidKeyException"


def raw(server: tsctl.Server, method: str, url: str, key: str | None, **kwargs) -> requests.Response:
    """A request with exactly this key (or none), bypassing tsctl's key handling."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def endpoints(server: tsctl.Server, model: str) -> list[tuple[str, str, str, dict]]:
    """(key the endpoint takes, method, URL, request kwargs) for each API that needs a key."""
    return [
        ("inference", "POST", f"{server.inference_url}/predictions/{model}", {"data": "서울에서 만났다".encode()}),
        ("inference", "GET", f"{server.inference_url}/ping", {}),
        ("management", "GET", f"{server.management_url}/models", {}),
        ("management", "GET", f"{server.management_url}/models/{model}", {}),
        ("API", "GET", f"{server.management_url}/token?type=nothing", {}),  # the token API, wrong type on purpose
    ]


def test_token_authorization_is_on_with_private_long_lived_keys(server):
    path = server.run_dir / "key_file.json"
    keys = json.loads(path.read_text(encoding="utf-8"))
    assert set(keys) == {"management", "inference", "API"} and all(v["key"] for v in keys.values())
    assert path.stat().st_mode & 0o777 == 0o600
    assert "disable_token_authorization" not in (server.run_dir / "config.properties").read_text()
    assert tsctl.read_properties(server.run_dir / "config.properties")["token_expiration_min"] == "1440"
    assert not server.key_expired("inference") and not server.key_expired("management")


@pytest.mark.parametrize("which", range(5), ids=["predict", "ping", "list models", "describe", "token API"])
def test_requests_without_or_with_a_wrong_key_are_refused(server, tiny_model, which):
    api, method, url, kwargs = endpoints(server, tiny_model)[which]
    keys = server.keys()
    wrong = [None, "", "not-the-key", *(key for name, key in keys.items() if name != api)]
    for key in wrong:
        resp = raw(server, method, url, key, **kwargs)
        assert resp.status_code == 400 and resp.json()["type"] == REFUSED, (api, key, resp.text)
    if api != "API":  # the right key works (the token API is exercised by the rotation test)
        assert raw(server, method, url, keys[api], **kwargs).status_code == 200


def test_rotate_keys_replaces_both_keys_and_the_old_ones_stop_working(server, tiny_model):
    old = server.keys()
    assert tsctl_cli.main(["--run-dir", str(server.run_dir), "rotate-keys"]) == 0
    new = server.keys()
    assert new["inference"] != old["inference"] and new["management"] != old["management"]
    assert new["API"] == old["API"]  # TorchServe cannot rotate its API key short of a restart
    predict_url = f"{server.inference_url}/predictions/{tiny_model}"
    assert raw(server, "POST", predict_url, old["inference"], data=b"abc").status_code == 400
    assert raw(server, "GET", f"{server.management_url}/models", old["management"]).status_code == 400
    assert tsctl.predict(server, tiny_model, "서울에서 만났다").status_code == 200  # scripts read the new key
    assert (server.run_dir / "key_file.json").stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def short_key_server(model_store, tmp_path_factory):
    """A TorchServe (no model needed) whose keys live 3 seconds."""
    with tsctl.running(
        tmp_path_factory.mktemp("ts-short-keys"), model_store, {"token_expiration_min": "0.05"}
    ) as server:
        yield server


def test_an_expired_key_is_renewed_by_the_scripts(short_key_server):
    server = short_key_server
    old = server.keys()
    deadline = time.monotonic() + 60
    while raw(server, "GET", f"{server.management_url}/models", old["management"]).status_code == 200:
        assert time.monotonic() < deadline, "the 3 s key never expired"
        time.sleep(0.5)
    assert server.key_expired("management")
    assert server.call("GET", "management", "/models").status_code == 200  # renewed, then resent
    assert server.call("GET", "inference", "/ping").status_code == 200
    assert server.keys()["management"] != old["management"]


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or (
        address.version == 6 and address.ipv4_mapped is not None and address.ipv4_mapped.is_loopback
    )


def test_every_listener_is_on_loopback_and_workers_listen_on_unix_sockets_only(server, tiny_model):
    root = psutil.Process(tsctl.pid_of(server.run_dir))
    processes = [root, *root.children(recursive=True)]
    listening = [
        (p.pid, c.laddr) for p in processes for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(loopback(addr.ip) for _, addr in listening), listening
    props = tsctl.read_properties(server.run_dir / "config.properties")
    expected = {int(props[k].rsplit(":", 1)[1]) for k in tsctl.ADDRESS_KEYS} | {
        int(props[k]) for k in tsctl.GRPC_PORT_KEYS
    }
    assert {addr.port for _, addr in listening} == expected  # all five listeners were looked at, nothing else
    workers = [w["pid"] for w in tsctl.describe(server, tiny_model)[0]["workers"]]
    assert workers and set(workers) <= {p.pid for p in processes}
    for pid in workers:
        worker = psutil.Process(pid)
        assert worker.net_connections(kind="inet") == []
        assert any(str(c.laddr).startswith(str(server.run_dir / "tmp")) for c in worker.net_connections(kind="unix"))


@pytest.fixture(scope="module")
def outside_archive(tiny_checkpoint_dir, model_store, build_archive, tmp_path_factory) -> Path:
    """A valid archive one level above the model store, with a name nothing else uses."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    built = elsewhere / build_archive(tiny_checkpoint_dir, "outside_ner", store=elsewhere)
    return built.replace(model_store.parent / built.name)


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://127.0.0.1:9/outside_ner.mar", "does not match any allowed URL"),
        ("https://example.com/outside_ner.mar", "does not match any allowed URL"),
        ("file://{outside}", "does not match any allowed URL"),
        ("../outside_ner.mar", "Relative path is not allowed"),
        ("{outside}", "Model not found at"),
    ],
    ids=["http", "https", "file", "dot-dot", "absolute path"],
)
def test_registering_from_outside_the_model_store_is_refused(server, model_store, outside_archive, url, message):
    assert outside_archive.parent == model_store.parent and outside_archive.is_file()
    with pytest.raises(tsctl.TsError, match=r"HTTP 404") as err:
        tsctl.register(server, url.format(outside=outside_archive), workers=0, timeout=60)
    assert message in str(err.value)
    assert "outside_ner" not in [m["modelName"] for m in tsctl.list_models(server)]


def log_text(logs: Path) -> bytes:
    """Every byte under logs/, rolled-over .gz files unpacked."""
    return b"".join(
        gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        for p in sorted(logs.rglob("*"))
        if p.is_file()
    )


def test_request_text_is_never_written_to_any_log(server, tiny_model):
    marker = f"zq{uuid.uuid4().hex}"
    text = f"{marker} 이순신은 서울에서 태어났다"
    bodies = [  # answered and refused, every path a text takes through TorchServe and the handler
        (text.encode(), "text/plain; charset=utf-8", 200),
        (json.dumps({"sentence": text}).encode(), "application/json", 200),
        (json.dumps([text, text + " 둘"]).encode(), "application/json", 200),
        (json.dumps([text, ""]).encode(), "application/json", 400),
        ((text * 700)[:20_001].encode(), "text/plain", 400),
        (f'{{"sentence": "{text}'.encode(), "application/json", 400),  # broken JSON: TorchServe logs a traceback
        (text.encode() + b"\xff", "text/plain", 400),  # broken UTF-8: TorchServe logs a traceback
        (json.dumps({"sentence": text + "\ud800"}).encode(), "application/json", 400),
    ]
    logs = server.run_dir / "logs"
    evidence = (b"POST /predictions/", b"rejected (400)", b"Failed json decoding", b"Failed utf-8 decoding")
    before = [log_text(logs).count(e) for e in evidence]
    for body, content_type, status in bodies:
        resp = server.call(
            "POST", "inference", f"/predictions/{tiny_model}", data=body, headers={"Content-Type": content_type}
        )
        assert resp.status_code == status, resp.text[:200]
    expected = [n + k for n, k in zip(before, (len(bodies), 5, 1, 1), strict=True)]
    deadline = time.monotonic() + 30  # logs are written asynchronously: wait until every request is in
    while any(n < want for n, want in zip((log_text(logs).count(e) for e in evidence), expected, strict=True)):
        assert time.monotonic() < deadline, ([log_text(logs).count(e) for e in evidence], expected)
        time.sleep(0.2)
    assert marker.encode() not in log_text(logs)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/evil.war",
        "https://example.com/evil.war",
        "file:///etc/passwd",
        "../evil.war",
        "evil.war",
    ],
    ids=["http", "https", "file", "dot-dot", "bare name"],
)
def test_workflow_registration_is_refused(server, url):
    """The workflow API (POST /workflows?url=..., the second route by which a URL makes TorchServe
    fetch and run code; enable_model_api does not gate it) refuses every URL: allowed_urls
    matches nothing and no workflow archive is in the store. Only the management key reaches it
    at all, and only on loopback."""
    resp = server.call("POST", "management", "/workflows", params={"url": url, "workflow_name": "evil"})
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    assert resp.json()["code"] == resp.status_code and "evil" not in server.call("GET", "management", "/workflows").text
    refused = raw(server, "POST", f"{server.management_url}/workflows?url={url}", None)
    assert refused.status_code == 400 and refused.json()["type"] == REFUSED  # no key: refused before anything
