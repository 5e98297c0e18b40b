"""The container image (container/Containerfile), built here from an offline Debian base and run
with podman: lean, non-root, token auth on, only inference and metrics reachable, healthy only
with a READY worker, the same answers as TorchServe outside a container, logs on stdout, a
SIGTERM under a late load balancer's traffic that refuses and loses nothing, HAProxy killed
inside it (unready, then the container exits), and the Kubernetes pod configs running in it.

Skips, saying why, where podman is missing or cannot run a container (.ci/run installs it)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import requests
import yaml

import entrypoint
from drills import flood
from serving import paths, tsctl
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
        return session.post(
            f"{ctr.url(8080)}/predictions/kor_ner",
            data=payload.encode(),
            timeout=(5, 30),
            headers={**headers, "Content-Type": "text/plain; charset=utf-8"},
        )
    return session.post(f"{ctr.url(8080)}/predictions/kor_ner", json=payload, headers=headers, timeout=(5, 30))


def test_image_is_lean_and_runs_unprivileged(image):
    info = containers.podman(
        "image",
        "inspect",
        image,
        "--format",
        "{{.Size}}|{{.Config.User}}|{{json .Config.ExposedPorts}}|{{json .Config.Healthcheck.Test}}",
    ).stdout
    size, user, ports, health = info.strip().split("|")
    print(f"\nimage size {int(size) / 1e9:.2f} GB")
    assert user == "10001:10001"  # numeric: a cluster's runAsNonRoot can check it
    assert set(yaml.safe_load(ports)) == {"8080/tcp", "8082/tcp", "8083/tcp"}  # inference, metrics, health
    assert "healthcheck.py" in health and "/ping" not in health
    probe = containers.podman(
        "run",
        "--rm",
        *containers.RUN_OPTIONS,
        "--entrypoint",
        "sh",
        image,
        "-c",
        "id -u; for t in gcc cc c++ make ld; do command -v $t; done; "
        "ls -A /root/.cache /home/model-server/.cache /var/lib/apt/lists "
        "/var/cache/apt/archives 2>/dev/null | grep -v -e '^/' -e '^$' -e '^partial$' -e "
        "'^lock$'; true",
    ).stdout
    uid, *found = probe.split()
    assert int(uid) != 0 and found == [], found  # no compiler, no pip or apt cache left


JAR_IN_IMAGE = "/opt/venv/lib/python3.11/site-packages/ts/frontend/model-server.jar"


def in_image(image: str, code: str) -> str:
    """stdout of ``python3 -c code`` in a fresh container of ``image`` (the image's own interpreter)."""
    return containers.podman(
        "run", "--rm", *containers.RUN_OPTIONS, "--entrypoint", "python3", image, "-c", code
    ).stdout


def test_the_sbom_in_the_image_lists_the_netty_its_jar_holds(image):
    document = containers.sbom(image)
    assert document["bomFormat"] == "CycloneDX"
    # what the jar inside this image really holds, read there without the SBOM's generator
    held = json.loads(
        in_image(
            image,
            (
                "import json, re, zipfile; "
                f"text = zipfile.ZipFile('{JAR_IN_IMAGE}').read('META-INF/io.netty.versions.properties').decode(); "
                "print(json.dumps(dict(re.findall(r'^(netty-[\\w-]+)\\.version=(\\S+)$', text, re.M))))"
            ),
        )
    )
    listed = {c["name"]: c["version"] for c in document["components"] if c.get("group") == "io.netty"}
    assert listed["netty-codec-http"] == held["netty-codec-http"] == "4.1.53.Final"
    assert listed == held
    purls = {c.get("purl", "") for c in document["components"]}
    assert "pkg:maven/io.grpc/grpc-netty-shaded@1.50.0" in purls
    # the Python packages the image serves with, exactly as its venv has them
    installed = json.loads(
        in_image(
            image,
            (
                "import json, importlib.metadata as m; "
                "print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()})))"
            ),
        )
    )
    python = {
        c["name"].lower().replace("_", "-") for c in document["components"] if c.get("purl", "").startswith("pkg:pypi/")
    }
    assert python == set(installed), set(installed) ^ python
    debian = [p for p in purls if p.startswith("pkg:deb/debian/")]
    assert any(p.startswith("pkg:deb/debian/openjdk-17-jre-headless@") for p in debian)
    assert any(p.startswith("pkg:deb/debian/haproxy@") for p in debian)
    assert not any(p.startswith("pkg:deb/debian/python3-venv@") for p in debian)  # the build stage's only
    print(f"\nSBOM: {len(python)} Python, {len(listed)} Netty, {len(debian)} Debian packages")


def test_the_image_says_what_it_is_and_holds_no_packaging_tools(image):
    labels = json.loads(containers.podman("image", "inspect", image, "--format", "{{json .Config.Labels}}").stdout)
    revision = subprocess.run(
        ["git", "-C", str(paths.ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.version"] == "0.12.0-ner1.0"
    assert {"org.opencontainers.image.source", "org.opencontainers.image.licenses"} <= labels.keys()
    found = json.loads(
        in_image(
            image,
            (
                "import importlib.util, json, shutil; "
                "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
                "('pip', 'onnx', 'model_archiver', 'cyclonedx', 'torch', 'onnxruntime', 'ts')} | "
                "{'pip on PATH': bool(shutil.which('pip') or shutil.which('pip3'))}))"
            ),
        )
    )
    assert found == {
        "pip": False,
        "onnx": False,
        "model_archiver": False,
        "cyclonedx": False,
        "pip on PATH": False,
        "torch": True,
        "onnxruntime": True,
        "ts": True,
    }


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
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words)
            found.add((str(getattr(ip, "ipv4_mapped", None) or ip), int(port, 16)))
    return found


def test_only_the_front_door_listens_beyond_loopback(container):
    """HAProxy's inference, metrics and health ports are the only ones off the container's
    loopback: TorchServe's five listeners (inference and metrics behind HAProxy, management,
    both gRPC) and the v2 status helper are all on 127.0.0.1."""
    ports = listening(container)
    outside = {(a, p) for a, p in ports if not ipaddress.ip_address(a).is_loopback}
    assert outside == {("0.0.0.0", 8080), ("0.0.0.0", 8082), ("0.0.0.0", 8083)}, ports
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
    assert "kor-ner-door " in logs and " route=/predictions/kor_ner status=200 " in logs  # the door's access log
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
    plan = flood.Plan(
        "127.0.0.1",
        container.ports[8080],
        request,
        slow_headers=600,
        stalled_bodies=60,
        seconds=15,
        honest_clients=4,
        flood_source="127.0.0.1",
    )
    report = flood.run(plan).summary()
    print(f"\nflood through the image's front door: {report}")
    assert report["honest_failed"] == {} and report["honest_answered"] == report["honest_sent"] > 20
    assert report["p99_ms"] < 1000
    assert report["flood_answered"].get("408", 0) > 0  # slow connections were cut at the door


def test_a_triton_client_gets_health_readiness_metadata_and_answers(container):
    """Triton's own HTTP client against the image's front door: server live and ready without
    the key, the model's readiness and metadata with it (without it: 401, read as not ready or
    an error), and a binary-tensor inference equal to the plain route's answers."""
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from v2_status import v2_model_metadata

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
    """Sends until ``stop``, as a load balancer that has not yet learned of the stop: a refused
    connection is counted and retried (a balancer sends the next request to the same pod)."""
    session = requests.Session() if keep_alive else requests
    n = 0
    while not stop.is_set():
        text = f"종료 시험 {i}-{n}: 이순신은 한산도에서 싸웠다."
        n += 1
        try:
            resp = post(ctr, text, key, session)
        except requests.ConnectionError as err:
            if "NewConnectionError" in repr(err) or "Connection refused" in str(err):
                out.add("refused")
                time.sleep(0.1)
            else:
                out.add("lost", type(err.args[0]).__name__ if err.args else "ConnectionError")
            continue
        except requests.Timeout as err:
            out.add("lost", type(err).__name__)
            continue
        if resp.status_code == 200 and resp.json()["sentence"] == text:
            out.add("answered")
        else:
            out.add("lost", f"HTTP {resp.status_code}")


KILL_HAPROXY = (
    "import os\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    if open(f'/proc/{pid}/comm').read().strip() == 'haproxy':\n"
    "        os.kill(int(pid), 9)\n"
)


@dataclass
class DoorDeath:
    unhealthy_after: float  # s from the kill until the image's health check failed
    refused_after: float  # ... until the inference port refused connections (the httpGet probes fail)
    exited_after: float  # ... until the container had exited
    state: dict


def kill_the_door(ctr: containers.Container) -> DoorDeath:
    """SIGKILL HAProxy inside the running container, as a crash would; time what follows."""
    killed = time.monotonic()
    containers.podman("exec", ctr.name, "python3", "-c", KILL_HAPROXY)
    unhealthy = refused = None
    while time.monotonic() < killed + 60:
        if refused is None:
            try:
                requests.get(f"{ctr.url(8080)}/v2/health/ready", timeout=2)
            except requests.ConnectionError:
                refused = time.monotonic() - killed
        if unhealthy is None and not ctr.healthy():
            unhealthy = time.monotonic() - killed
        if not ctr.state()["Running"]:
            break
        time.sleep(0.2)
    exited = time.monotonic() - killed
    return DoorDeath(
        unhealthy if unhealthy is not None else exited, refused if refused is not None else exited, exited, ctr.state()
    )


def test_haproxy_killed_inside_a_running_container_turns_it_unready_then_it_exits(image):
    """The door (HAProxy) dies: the probes, which go through it, fail at once, the image's health
    check fails too (the entrypoint marks the container draining), TorchServe is stopped and the
    container exits non-zero, so the kubelet or podman restarts it."""

    ctr = containers.run(image, f"kor-ner-test-door-{os.getpid()}", publish=(8080,))
    try:
        ctr.wait_healthy()
        assert requests.get(f"{ctr.url(8080)}/v2/health/ready", timeout=5).status_code == 200
        death = kill_the_door(ctr)
        print(
            f"\nHAProxy killed: readiness route refused {death.refused_after:.1f} s, health check failing "
            f"{death.unhealthy_after:.1f} s, container exited {death.exited_after:.1f} s after the kill "
            f"(exit code {death.state['ExitCode']})"
        )
        assert death.refused_after < 5 and death.unhealthy_after < 5
        assert not death.state["Running"] and death.state["ExitCode"] != 0
        assert death.exited_after < entrypoint.STOP_TIMEOUT + 15
        logs = ctr.logs()
        assert "HAProxy exited on its own" in logs and "TorchServe exited" in logs
    finally:
        ctr.remove()


LATE_BALANCER_S = 10.0  # how long after the signal new connections keep arriving (endpoints and ingress lagging)


@dataclass
class Stop:
    """What a SIGTERM under a late load balancer's traffic did."""

    fresh: Outcome  # clients opening a connection per request
    reused: Outcome  # clients reusing keep-alive connections
    answered_at_signal: int
    unhealthy_after: float  # s from the signal until the image's health check failed
    ready_while_draining: int | str  # the v2 readiness route's status during the window
    stopped_after: float  # s from the signal until the container had exited
    state: dict

    @property
    def answered(self) -> int:
        return self.fresh.answered + self.reused.answered

    @property
    def refused(self) -> int:
        return self.fresh.refused + self.reused.refused

    @property
    def lost(self) -> Counter:
        return self.fresh.lost + self.reused.lost

    def summary(self) -> str:
        return (
            f"unhealthy {self.unhealthy_after:.1f} s and stopped {self.stopped_after:.1f} s after the signal; "
            f"{self.answered} answered ({self.answered - self.answered_at_signal} after the signal), "
            f"{self.refused} refused, {sum(self.lost.values())} lost {dict(self.lost)} (connection per request: "
            f"{self.fresh.refused} refused, {sum(self.fresh.lost.values())} lost; keep-alive: "
            f"{self.reused.refused} refused, {sum(self.reused.lost.values())} lost); readiness while draining: "
            f"{self.ready_while_draining}; exit code {self.state['ExitCode']}"
        )


def sigterm_under_a_late_balancer(ctr: containers.Container, late: float = LATE_BALANCER_S, clients: int = 8) -> Stop:
    """Load from ``clients`` threads (half open a connection per request, half keep connections
    alive) until 200 answers, then SIGTERM; they go on sending for ``late`` s after it, as
    kube-proxy and ingress controllers do before they have dropped the pod, then stop. Waits
    for the container to exit (60 s at most after the clients stopped)."""
    key = ctr.keys()["inference"]
    fresh, reused, stop = Outcome(), Outcome(), threading.Event()
    threads = [
        threading.Thread(target=load_client, args=(ctr, key, i, i % 2 == 0, reused if i % 2 == 0 else fresh, stop))
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while fresh.answered + reused.answered < 200 and time.monotonic() < deadline:
        time.sleep(0.1)  # load runs until 200 answers; the SIGTERM then lands in the middle of it
    signalled, answered_at_signal = time.monotonic(), fresh.answered + reused.answered
    containers.podman("kill", "--signal", "TERM", ctr.name)
    while ctr.healthy() and time.monotonic() < signalled + 5:
        pass  # the health check fails as soon as the entrypoint has the signal
    unhealthy_after = time.monotonic() - signalled
    try:  # the v2 readiness route (the pods' readiness probe) says the same while the door still listens
        ready_while_draining: int | str = requests.get(f"{ctr.url(8080)}/v2/health/ready", timeout=5).status_code
    except requests.ConnectionError:
        ready_while_draining = "refused"
    time.sleep(max(0.0, signalled + late - time.monotonic()))  # the balancer's lag: load goes on meanwhile
    stop.set()
    for t in threads:
        t.join(timeout=60)
    while ctr.state()["Running"] and time.monotonic() < signalled + late + 60:
        time.sleep(0.2)
    return Stop(
        fresh,
        reused,
        answered_at_signal,
        unhealthy_after,
        ready_while_draining,
        time.monotonic() - signalled,
        ctr.state(),
    )


def test_sigterm_under_a_late_load_balancer_loses_and_refuses_nothing(container):
    """Eight clients keep sending through the SIGTERM and for 10 s after it, as a load balancer
    that learns of the stop late. The container fails its health check and its readiness route
    at once, but keeps taking and answering new connections for its minimum drain window
    (KOR_NER_DRAIN_MIN), then, once requests have stopped arriving, its front door (HAProxy)
    stops listening and answers what it took; only then does TorchServe stop. Nothing is refused
    and nothing is lost."""

    window = entrypoint.DRAIN_MIN
    assert window >= LATE_BALANCER_S
    result = sigterm_under_a_late_balancer(container)
    print(f"\nSIGTERM under a late load balancer (8 clients for {LATE_BALANCER_S:g} s after it): {result.summary()}")
    assert not result.state["Running"] and result.state["ExitCode"] == 0, result.state
    assert result.unhealthy_after < 5
    assert result.ready_while_draining == 503
    assert result.answered > result.answered_at_signal + 20  # still answering new connections in the window
    assert result.refused == 0 and sum(result.lost.values()) == 0, result.summary()
    assert result.stopped_after < LATE_BALANCER_S + 30
    logs = container.logs()
    assert (
        "SIGTERM: draining" in logs and "HAProxy done (status 0)" in logs and "TorchServe exited with status 0" in logs
    )


@pytest.mark.parametrize("layout", ["deployment", "kserve"])
def test_the_kubernetes_configs_run_in_the_image(image, layout, tmp_path):
    """The image as config/k8s/ runs it: read-only root, the manifests' uid and gid, no capabilities, only /tmp
    writable; deployment.yaml's ConfigMap over /home/model-server/config, or KServe's storageUri
    copy at /mnt/models (model-store/kor_ner.mar; a config/ beside it that would open the
    management API is ignored: the image's kserve-config.properties is used) with the
    ServingRuntime's environment, and the key as the Secret gives it (KOR_NER_KEY_FILE). Both
    refuse a request without the key (401), answer with it, the v2 route as KServe sends it
    too, never print the key; management stays unreachable."""
    k8s = paths.CONFIG_DIR / "k8s"
    pod = next(
        d
        for d in yaml.safe_load_all((k8s / "deployment.yaml").read_text(encoding="utf-8"))
        if d and d["kind"] == "Deployment"
    )["spec"]["template"]["spec"]["securityContext"]
    locked_down = [
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        f"{pod['runAsUser']}:{pod['runAsGroup']}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("k8s-secret-key-0123456789abcdef\n")
    secret.chmod(0o755)
    (secret / "key").chmod(0o444)
    key = "k8s-secret-key-0123456789abcdef"
    key_env = next(
        e["value"]
        for e in next(
            d
            for d in yaml.safe_load_all((k8s / "deployment.yaml").read_text(encoding="utf-8"))
            if d and d["kind"] == "Deployment"
        )["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "KOR_NER_KEY_FILE"
    )
    secret_mount = ["-v", f"{secret}:{key_env.rsplit('/', 1)[0]}:ro"]
    if layout == "deployment":
        mounts = [
            *secret_mount,
            "-e",
            f"KOR_NER_KEY_FILE={key_env}",
            "-v",
            f"{k8s / 'pod-config.properties'}:/home/model-server/config/config.properties:ro",
            "-v",
            f"{paths.CONFIG_DIR / 'metrics.yaml'}:/home/model-server/config/metrics.yaml:ro",
        ]
    else:
        runtime = next(
            d
            for d in yaml.safe_load_all((k8s / "kserve.yaml").read_text(encoding="utf-8"))
            if d and d["kind"] == "ServingRuntime"
        )
        env = {e["name"]: e["value"] for e in runtime["spec"]["containers"][0]["env"]}
        storage = tmp_path / "storage"
        (storage / "config").mkdir(parents=True)
        (storage / "model-store").mkdir()
        # what a writer of the bucket could put there: never read (the config is the image's)
        (storage / "config" / "config.properties").write_text(
            "management_address=http://0.0.0.0:8081\nvmargs=-Dkor.ner.bucket=read\n"
        )
        cid = containers.podman("create", image).stdout.strip()  # the image's archive, as the storage's
        containers.podman("cp", f"{cid}:/home/model-server/model-store/kor_ner.mar", str(storage / "model-store"))
        containers.podman("rm", cid)
        mounts = [
            *secret_mount,
            "-v",
            f"{storage}:/mnt/models:ro",
            *(a for k, v in env.items() for a in ("-e", f"{k}={v}")),
        ]
    ctr = containers.run(
        image, f"kor-ner-test-{layout}-{os.getpid()}", publish=(8080, 8081), extra=(*locked_down, *mounts)
    )
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
        assert requests.get(
            f"{ctr.url(8080)}/v2/models/kor_ner/ready", timeout=10, headers={"Authorization": f"Bearer {key}"}
        ).json() == {"ready": True}
        assert key not in ctr.logs() and "kor.ner.bucket" not in ctr.logs()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{ctr.url(8081)}/models", timeout=5)
    finally:
        ctr.remove()


def test_tls_at_the_door_with_the_probes_and_the_health_check_still_working(image, tmp_path):
    """KOR_NER_TLS_CERT and KOR_NER_TLS_KEY from a mounted kubernetes.io/tls-shaped Secret (tls.crt,
    tls.key; made here): the inference door serves HTTPS only (a verifying client gets answers,
    plain HTTP nothing), HTTP/2 is not spoken, the routes are the documented ones; the image's
    health check and the plain health door (the probes') keep working."""
    from tests.certificates import make_certificates

    tls = tmp_path / "tls"
    tls.mkdir()
    make_certificates(tls)
    for name in ("tls.crt", "tls.key"):
        (tls / name).chmod(0o444)
    tls.chmod(0o755)
    ctr = containers.run(
        image,
        f"kor-ner-test-tls-{os.getpid()}",
        publish=(8080, 8083),
        extra=(
            "-v",
            f"{tls}:/etc/kor-ner/tls:ro",
            "-e",
            "KOR_NER_TLS_CERT=/etc/kor-ner/tls/tls.crt",
            "-e",
            "KOR_NER_TLS_KEY=/etc/kor-ner/tls/tls.key",
        ),
    )
    try:
        print(f"\nTLS on: healthy {ctr.wait_healthy():.1f} s after podman run (the image's health check)")
        https, ca = ctr.url(8080).replace("http://", "https://"), str(tls / "ca.crt")
        key = ctr.keys()["inference"]
        answer = requests.post(
            f"{https}/predictions/kor_ner",
            data=SENTENCES[0].encode(),
            verify=ca,
            timeout=30,
            headers={"Authorization": f"bearer {key}", "Content-Type": "text/plain; charset=utf-8"},
        )
        assert answer.status_code == 200 and answer.json()["entities"][0]["text"] == "이순신"
        assert requests.get(f"{https}/ping", verify=ca, timeout=10).json()["status"] == "Healthy"  # an HTTPS probe
        assert requests.get(f"{ctr.url(8083)}/ping", timeout=10).json()["status"] == "Healthy"  # the probes' door
        assert requests.get(f"{ctr.url(8083)}/v2/health/ready", timeout=10).json() == {"ready": True}
        for method, path, status in (
            ("GET", "/api-description", 404),
            ("OPTIONS", "/", 404),
            ("TRACE", "/ping", 405),
            ("DELETE", "/predictions/kor_ner", 405),
            ("POST", "/invocations", 404),
            ("POST", "/explanations/kor_ner", 404),
        ):
            refused = requests.request(
                method, https + path, verify=ca, timeout=10, headers={"Authorization": f"Bearer {key}"}
            )
            assert refused.status_code == status and refused.json()["status"] == status, (method, path)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{https}/ping", verify=str(tls / "other-ca.crt"), timeout=10)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{ctr.url(8080)}/ping", timeout=10)  # plain HTTP to the TLS port: no answer
        h2c = subprocess.run(
            [
                "curl",
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version}",
                "--max-time",
                "10",
                f"{ctr.url(8083)}/ping",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert h2c.stdout != "2"
        logs = ctr.logs()
        assert (
            "inference, HTTPS" in logs
            and "frontend=inference~ method=POST route=/predictions/kor_ner status=200" in logs
        )
        assert key not in logs
    finally:
        ctr.remove()
