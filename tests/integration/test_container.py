"""The container image (container/Containerfile), built here from an offline Debian base and run
with podman: lean, non-root, token auth on, only inference and metrics reachable, healthy only
with a READY worker, the same answers as TorchServe outside a container, logs on stdout, a
SIGTERM under load that drains, refuses new connections and loses at most the request each
client had in flight, and the Kubernetes pod configs running in it.

Skips, saying why, where podman is missing or cannot run a container (.ci/run installs it)."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import yaml

from drills import flood
from serving import paths
from serving import tsctl
from serving.paths import demo_model_available
from tests.integration import containers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}"),
]

SENTENCES = [
    "이순신은 조선 중기의 무신이다.",
    "삼성전자는 2024년 3월 서울에서 신제품을 발표했다.",
    "김대중 전 대통령은 2000년 노벨평화상을 받았다. " * 12,  # longer than one 128-token window
    ["첫 문장은 부산에서 썼다.", "둘째 문장은 오후 3시에 끝났다."],
    {"sentence": "세종대왕은 1443년 훈민정음을 만들었다."},
]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("container-build")
    try:
        containers.ensure_base(workdir)
    except containers.Unavailable as why:
        pytest.skip(f"no container runtime: {why}")
    seconds = containers.build_image(workdir)
    print(f"\nimage {containers.TEST_IMAGE} built in {seconds:.0f} s")
    return containers.TEST_IMAGE


@pytest.fixture(scope="module")
def container(image):
    # 8081 (management) is published too, to show it cannot be reached even then
    ctr = containers.run(image, f"kor-ner-test-{os.getpid()}", publish=(8080, 8081, 8082))
    try:
        ready = ctr.wait_healthy()
        print(f"\ncontainer healthy {ready:.1f} s after podman run")
        yield ctr
    finally:
        ctr.remove()


def post(ctr: containers.Container, payload, key: str | None, session=requests) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(payload, str):
        return session.post(f"{ctr.url(8080)}/predictions/kor_ner", data=payload.encode(), timeout=(5, 30),
                            headers={**headers, "Content-Type": "text/plain; charset=utf-8"})
    return session.post(f"{ctr.url(8080)}/predictions/kor_ner", json=payload, headers=headers, timeout=(5, 30))


def test_image_is_lean_and_runs_unprivileged(image):
    info = containers.podman("image", "inspect", image, "--format",
                             "{{.Size}}|{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Healthcheck.Test}}").stdout
    size, user, ports, health = info.strip().split("|")
    print(f"\nimage size {int(size) / 1e9:.2f} GB")
    assert user == "model-server"
    assert set(yaml.safe_load(ports)) == {"8080/tcp", "8082/tcp"}
    assert "healthcheck.py" in health and "/ping" not in health
    probe = containers.podman(
        "run", "--rm", *containers.RUN_OPTIONS, "--entrypoint", "sh", image, "-c",
        "id -u; for t in gcc cc c++ make ld; do command -v $t; done; "
        "ls -A /root/.cache /home/model-server/.cache /var/lib/apt/lists "
         "/var/cache/apt/archives 2>/dev/null | grep -v -e '^/' -e '^$' -e '^partial$' -e "
         "'^lock$'; true").stdout
    uid, *found = probe.split()
    assert int(uid) != 0 and found == [], found  # no compiler, no pip or apt cache left


def test_healthy_only_with_a_ready_worker_and_the_key_checked_at_the_door(container):
    check = containers.podman("exec", container.name, "python3", "/opt/kor-ner/healthcheck.py").stdout
    assert check.startswith("ready"), check
    # /ping (no key needed: liveness probes) would have said Healthy before: not what the health check asks
    assert requests.get(f"{container.url(8080)}/ping", timeout=5).json()["status"] == "Healthy"
    mode = containers.podman("exec", container.name, "stat", "-c", "%a %U", containers.KEY_IN_CONTAINER).stdout.split()
    assert mode == ["600", "model-server"]
    for key in (None, "wrong-key-0123456789abcdef"):
        refused = post(container, SENTENCES[0], key)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json()["status"] == 401
    assert post(container, SENTENCES[0], container.keys()["inference"]).status_code == 200


def listening(ctr: containers.Container) -> set[tuple[str, int]]:
    """(address, port) of every TCP listener in the container, from /proc/net/tcp and tcp6
    (IPv4-mapped IPv6 addresses as IPv4)."""
    out = containers.podman("exec", ctr.name, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and ":" in fields[1]:  # LISTEN
            address, port = fields[1].rsplit(":", 1)
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words)
            found.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)))
    return found


def test_only_the_front_door_listens_beyond_loopback(container):
    """HAProxy's inference and metrics ports are the only ones off the container's loopback:
    TorchServe's five listeners (inference and metrics behind HAProxy, management, both gRPC)
    and the v2 status helper are all on 127.0.0.1."""
    ports = listening(container)
    outside = {(a, p) for a, p in ports if not ipaddress.ip_address(a).is_loopback}
    assert outside == {("0.0.0.0", 8080), ("0.0.0.0", 8082)}, ports
    assert {("127.0.0.1", p) for p in (8081, 8085, 8086, 8087, 7070, 7071)} <= ports, ports  # 8087: v2_status.py
    key = container.keys()["inference"]
    assert post(container, SENTENCES[0], key).status_code == 200
    metrics = requests.get(f"{container.url(8082)}/metrics", timeout=5)
    assert metrics.status_code == 200 and "ts_inference_requests_total" in metrics.text
    assert requests.get(f"{container.url(8082)}/models", timeout=5).status_code == 404  # GET /metrics only
    # the management API listens on the container's loopback: published or not, nothing answers
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{container.url(8081)}/models", timeout=5)


def test_answers_are_identical_to_torchserve_outside_a_container(container, server, build_archive):
    config = yaml.safe_load((paths.CONFIG_DIR / "model-config.yaml").read_text(encoding="utf-8"))
    name = tsctl.register(server, build_archive(paths.DEMO_MODEL_DIR, "demo_shipped", config), workers=1)
    try:
        key = container.keys()["inference"]
        for payload in SENTENCES:
            inside, outside = post(container, payload, key), tsctl.predict(server, name, payload)
            assert inside.status_code == outside.status_code == 200
            assert inside.headers["Content-Type"] == outside.headers["Content-Type"]
            assert inside.json() == outside.json()
    finally:
        tsctl.unregister(server, name)


def test_logs_go_to_stdout_without_request_text_or_the_key(container):
    logs = container.logs()
    assert "Model server started" in logs and "MODEL_LOG" in logs and "ACCESS_LOG" in logs
    assert not any(s in logs for s in SENTENCES if isinstance(s, str))
    assert container.keys()["inference"] not in logs
    files = containers.podman("exec", container.name, "find", "/home/model-server/run", "-name", "*.log").stdout
    assert files.strip() == ""


def test_a_flood_of_slow_connections_leaves_every_honest_request_answered(container, tmp_path):
    """The image's own front door (not a copy of its config): 600 slow-header and 60 stalled-body
    connections for 15 s through podman's published port, where every client arrives from one
    address (so no per-source limit applies), while 4 honest clients send: every honest request
    answered, p99 under 1 s. The full-size flood (2,000 + 200 for 30 s) is in docs/security.md."""
    key_file = tmp_path / "key"
    key_file.write_text(container.keys()["inference"])
    request = flood.http_request("/predictions/kor_ner", SENTENCES[0].encode(), key_file.read_text())
    plan = flood.Plan("127.0.0.1", container.ports[8080], request, slow_headers=600, stalled_bodies=60, seconds=15,
                      honest_clients=4, flood_source="127.0.0.1")
    report = flood.run(plan).summary()
    print(f"\nflood through the image's front door: {report}")
    assert report["honest_failed"] == {} and report["honest_answered"] == report["honest_sent"] > 20
    assert report["p99_ms"] < 1000
    assert report["flood_answered"].get("408", 0) > 0  # slow connections were cut at the door


def test_a_triton_client_gets_health_readiness_metadata_and_answers(container):
    """Triton's own HTTP client against the image's front door: server live and ready without
    the key, the model's readiness and metadata with it (without it: 401, read as not ready or
    an error), and a binary-tensor inference equal to the plain route's answers."""
    import numpy as np  # noqa: PLC0415
    import tritonclient.http as triton  # noqa: PLC0415
    from v2_status import v2_model_metadata  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    key = container.keys()["inference"]

    def auth() -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}  # a new dict each call: the client writes into it

    texts = [SENTENCES[0], SENTENCES[1]]
    with triton.InferenceServerClient(container.url(8080).removeprefix("http://"), network_timeout=60.0) as client:
        calls = {
            "is_server_live()": client.is_server_live(),
            "is_server_ready()": client.is_server_ready(),
            "is_model_ready('kor_ner', key)": client.is_model_ready("kor_ner", headers=auth()),
            "is_model_ready('kor_ner', '1.0', key)": client.is_model_ready("kor_ner", "1.0", headers=auth()),
            "is_model_ready('kor_ner') without key": client.is_model_ready("kor_ner"),
            "is_model_ready('other', key)": client.is_model_ready("other", headers=auth()),
            "get_model_metadata('kor_ner', key)": client.get_model_metadata("kor_ner", headers=auth()),
        }
        for call, kwargs in (("without key", {}), ("'other', key", {"headers": auth()})):
            with pytest.raises(InferenceServerException) as err:
                client.get_model_metadata("other" if "other" in call else "kor_ner", **kwargs)
            calls[f"get_model_metadata({call})"] = f"{type(err.value).__name__}: {err.value}"
        tensor = triton.InferInput("texts", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))  # binary by default
        result = client.infer("kor_ner", [tensor], headers=auth())
        answers = [json.loads(item) for item in result.as_numpy("ner")]
        version = result.get_response()["model_version"]
        calls["infer('kor_ner', 2 binary texts)"] = f"{version}: {[a['entities'] for a in answers]}"
    print("\ntritonclient.http against the image:\n" + "\n".join(f"  {c} -> {a}" for c, a in calls.items()))
    assert calls["is_server_live()"] is True and calls["is_server_ready()"] is True
    assert calls["is_model_ready('kor_ner', key)"] is True and calls["is_model_ready('kor_ner', '1.0', key)"] is True
    assert calls["is_model_ready('kor_ner') without key"] is False and calls["is_model_ready('other', key)"] is False
    assert calls["get_model_metadata('kor_ner', key)"] == v2_model_metadata("kor_ner", ["1.0"])
    assert "[401]" in calls["get_model_metadata(without key)"]
    assert "not registered" in calls["get_model_metadata('other', key)"]
    assert answers == [post(container, text, key).json() for text in texts]


@dataclass
class Outcome:
    answered: int = 0
    refused: int = 0  # connection refused: a new request not taken, the client knows it is not done
    lost: Counter = field(default_factory=Counter)  # taken (or on a taken connection), then no answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, why: str = "") -> None:
        with self.lock:
            if kind == "lost":
                self.lost[why] += 1
            else:
                setattr(self, kind, getattr(self, kind) + 1)


def load_client(ctr, key, i: int, keep_alive: bool, out: Outcome, stop: threading.Event) -> None:
    session = requests.Session() if keep_alive else requests
    refused_in_a_row, n = 0, 0
    while not stop.is_set() and refused_in_a_row < 3:
        text = f"종료 시험 {i}-{n}: 이순신은 한산도에서 싸웠다."
        n += 1
        try:
            resp = post(ctr, text, key, session)
        except requests.ConnectionError as err:
            if "NewConnectionError" in repr(err) or "Connection refused" in str(err):
                refused_in_a_row += 1
                out.add("refused")
                time.sleep(0.1)
            else:
                out.add("lost", type(err.args[0]).__name__ if err.args else "ConnectionError")
            continue
        except requests.Timeout as err:
            out.add("lost", type(err).__name__)
            continue
        refused_in_a_row = 0
        if resp.status_code == 200 and resp.json()["sentence"] == text:
            out.add("answered")
        else:
            out.add("lost", f"HTTP {resp.status_code}")


def test_sigterm_under_load_drains_then_stops(container):
    """Eight clients (four open a connection per request, four reuse keep-alive connections)
    keep sending through the SIGTERM, with no load balancer in front. The container fails its
    health check at once, keeps answering while requests still arrive (the drain a load
    balancer needs, 5 s at most), then its front door (HAProxy) stops listening, so new
    connections are refused, and answers every request it took, each keep-alive connection
    closed after its answer; only then does TorchServe stop. No request is lost."""
    key = container.keys()["inference"]
    fresh, reused, stop = Outcome(), Outcome(), threading.Event()
    threads = [threading.Thread(target=load_client, args=(container, key, i, i % 2 == 0, reused if i % 2 == 0 else fresh, stop))
               for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while fresh.answered + reused.answered < 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # load runs until 200 answers; the SIGTERM then lands in the middle of it
    signalled, answered_at_signal = time.monotonic(), fresh.answered + reused.answered
    containers.podman("kill", "--signal", "TERM", container.name)
    while container.healthy() and time.monotonic() < signalled + 5:
        pass  # the health check fails as soon as the entrypoint has the signal
    unhealthy_after = time.monotonic() - signalled
    try:  # the v2 readiness route says the same while the door still listens
        ready_while_draining = requests.get(f"{container.url(8080)}/v2/health/ready", timeout=5).status_code
    except requests.ConnectionError:
        ready_while_draining = "refused"
    while container.state()["Running"] and time.monotonic() < signalled + 60:
        time.sleep(0.2)
    stopped_after = time.monotonic() - signalled
    stop.set()
    for t in threads:
        t.join(timeout=60)
    state = container.state()
    lost = fresh.lost + reused.lost
    print(f"\nSIGTERM under load (8 clients): unhealthy {unhealthy_after:.1f} s and stopped {stopped_after:.1f} s "
          f"after it; {fresh.answered + reused.answered} answered "
          f"({fresh.answered + reused.answered - answered_at_signal} "
          f"after the signal), {fresh.refused + reused.refused} refused, {sum(lost.values())} lost {dict(lost)} "
          f"(connection per request: {sum(fresh.lost.values())}, keep-alive: {sum(reused.lost.values())})")
    assert not state["Running"] and state["ExitCode"] == 0, state
    assert unhealthy_after < 5 and stopped_after < 30
    assert ready_while_draining in (503, "refused"), ready_while_draining
    assert fresh.answered + reused.answered > answered_at_signal  # still answering while draining
    assert fresh.refused > 0  # then new connections are refused
    assert sum(lost.values()) == 0, lost
    logs = container.logs()
    assert "SIGTERM: draining" in logs and "HAProxy done (status 0)" in logs and "TorchServe exited with status 0" in logs


@pytest.mark.parametrize("layout", ["deployment", "kserve"])
def test_the_kubernetes_configs_run_in_the_image(image, layout, tmp_path):
    """The image as config/k8s/ runs it: read-only root, non-root, no capabilities, only /tmp
    writable; deployment.yaml's ConfigMap over /home/model-server/config, or KServe's storageUri
    copy at /mnt/models (kserve-config.properties, metrics.yaml, model-store/kor_ner.mar) with the
    ServingRuntime's environment, and the key as the Secret gives it (KOR_NER_KEY_FILE). Both
    refuse a request without the key (401), answer with it, the v2 route as KServe sends it
    too, never print the key; management stays unreachable."""
    k8s = paths.CONFIG_DIR / "k8s"
    locked_down = ["--read-only", "--tmpfs", "/tmp", "--user", "1000:1000", "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges"]
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k8s-secret-key-0123456789abcdef\n")
    secret.chmod(0o755)
    (secret / "key").chmod(0o444)
    key = "k8s-secret-key-0123456789abcdef"
    key_env = next(e["value"] for e in next(d for d in yaml.safe_load_all((k8s / "deployment.yaml").read_text(encoding="utf-8"))
                                             if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "KOR_NER_KEY_FILE")
    secret_mount = ["-v", f"{secret}:{key_env.rsplit('/', 1)[0]}:ro"]
    if layout == "deployment":
        mounts = [*secret_mount, "-e", f"KOR_NER_KEY_FILE={key_env}","-v", f"{k8s / 'pod-config.properties'}:/home/model-server/config/config.properties:ro",
                  "-v", f"{paths.CONFIG_DIR / 'metrics.yaml'}:/home/model-server/config/metrics.yaml:ro"]
    else:
        runtime = next(d for d in yaml.safe_load_all((k8s / "kserve.yaml").read_text(encoding="utf-8"))
                       if d and d["kind"] == "ServingRuntime")
        env = {e["name"]: e["value"] for e in runtime["spec"]["containers"][0]["env"]}
        storage = tmp_path / "storage"
        (storage / "config").mkdir(parents=True)
        (storage / "model-store").mkdir()
        (storage / "config" / "config.properties").write_text((k8s / "kserve-config.properties").read_text())
        (storage / "config" / "metrics.yaml").write_text((paths.CONFIG_DIR / "metrics.yaml").read_text())
        cid = containers.podman("create", image).stdout.strip()  # the image's archive, as the storage's
        containers.podman("cp", f"{cid}:/home/model-server/model-store/kor_ner.mar", str(storage / "model-store"))
        containers.podman("rm", cid)
        mounts = [*secret_mount, "-v", f"{storage}:/mnt/models:ro", *(a for k, v in env.items() for a in ("-e", f"{k}={v}"))]
    ctr = containers.run(image, f"kor-ner-test-{layout}-{os.getpid()}", publish=(8080, 8081),
                         extra=(*locked_down, *mounts))
    try:
        print(f"\n{layout} layout healthy {ctr.wait_healthy():.1f} s after podman run")
        assert post(ctr, SENTENCES[0], None).status_code == 401
        assert post(ctr, SENTENCES[0], key).json()["entities"][0]["text"] == "이순신"
        v2 = {"id": "7", "inputs": [{"name": "texts", "shape": [1], "datatype": "BYTES", "data": [SENTENCES[1]]}]}
        url = f"{ctr.url(8080)}/v2/models/kor_ner/infer"
        assert requests.post(url, json=v2, timeout=30).status_code == 401
        answer = requests.post(url, json=v2, timeout=30, headers={"Authorization": f"Bearer {key}"}).json()
        assert (answer["model_name"], answer["model_version"], answer["id"]) == ("kor_ner", "1.0", "7")
        assert requests.get(f"{ctr.url(8080)}/v2/health/ready", timeout=10).json() == {"ready": True}
        assert requests.get(f"{ctr.url(8080)}/v2/models/kor_ner/ready", timeout=10,
                            headers={"Authorization": f"Bearer {key}"}).json() == {"ready": True}
        assert key not in ctr.logs()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{ctr.url(8081)}/models", timeout=5)
    finally:
        ctr.remove()
