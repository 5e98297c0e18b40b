"""A real Prometheus (Debian's package) scrapes a real TorchServe serving the demo model for a
minute under light load, and evaluates the service's rules (config/k8s/prometheus-rules.yaml)
every second: every rule evaluates without error, the recording rules find the series they
name, and no alert goes even pending, since nothing is wrong. Scrape and evaluation intervals are
1 s here (15-60 s in production) so that a minute holds enough samples. The TorchServe is this
module's own: other tests' models (random weights, deliberate 5xx) would rightly set alerts
off. How each alert fires is in tests/unit/test_alert_rules.py (promtool's unit tests)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import yaml

from serving import paths, tsctl
from serving.paths import demo_model_available
from tests.unit.test_alert_rules import alerts, rule_groups, write_rule_file

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None, reason="prometheus not installed (Debian: apt-get install prometheus)"
    ),
    pytest.mark.skipif(not demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}"),
]

LOAD_S = 60
SENTENCES = [
    "이순신은 조선 중기의 무신이다.",
    "삼성전자는 2024년 3월 서울에서 신제품을 발표했다.",
    "세종대왕은 1443년 훈민정음을 만들었다.",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, build_archive, test_model_config) -> Iterator[tuple[tsctl.Server, str]]:
    """A TorchServe of this module's own, serving the demo model with one worker."""
    store = tmp_path_factory.mktemp("prometheus-store")
    mar = build_archive(paths.DEMO_MODEL_DIR, "kor_ner", test_model_config, store=store)
    with tsctl.running(tmp_path_factory.mktemp("prometheus-ts"), store) as server:
        yield server, tsctl.register(server, mar, workers=1)


@pytest.fixture(scope="module")
def prometheus(served, tmp_path_factory) -> Iterator[str]:
    """Prometheus scraping the TorchServe's metrics every second, with the service's rules; its URL."""
    server, _ = served
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(write_rule_file(folder))],
        "scrape_configs": [
            {
                "job_name": "kor-ner",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [server.metrics_url.removeprefix("http://")]}],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    [port] = tsctl.free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = (folder / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log_text = (folder / "prometheus.log").read_text()[-2000:]
                raise RuntimeError(f"prometheus exited {proc.returncode}: {log_text}")
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus not ready after 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(url: str, expr: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def load(server: tsctl.Server, model: str, stop: threading.Event, outcome: Counter) -> None:
    """Light load: one request at a time, now and then a bad one (an empty text: 400)."""
    n = 0
    while not stop.is_set():
        n += 1
        payload = {"sentence": " "} if n % 25 == 0 else SENTENCES[n % len(SENTENCES)]
        outcome[tsctl.predict(server, model, payload).status_code] += 1
        time.sleep(0.05)


def test_a_real_prometheus_evaluates_the_rules_and_nothing_fires_under_healthy_load(served, prometheus):
    server, model = served
    stop, outcome = threading.Event(), Counter()
    clients = [threading.Thread(target=load, args=(server, model, stop, outcome)) for _ in range(2)]
    for c in clients:
        c.start()
    alerted: list[dict] = []
    try:
        deadline = time.monotonic() + LOAD_S
        while time.monotonic() < deadline:
            alerted += query(prometheus, "ALERTS")  # pending (expression true once) or firing
            time.sleep(2)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
    targets = requests.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {
        r["record"]: query(prometheus, r["record"])
        for g in rule_groups()["groups"]
        for r in g["rules"]
        if "record" in r
    }
    values = {
        name: {s["metric"].get("Reason", ""): float(s["value"][1]) for s in series} for name, series in recorded.items()
    }
    print(
        f"\nPrometheus over {LOAD_S} s of light load: answers {dict(outcome)}; recorded {values}; alerts seen {alerted}"
    )

    assert outcome[200] > 100 and outcome[400] > 0 and set(outcome) == {200, 400}
    assert [t["health"] for t in targets] == ["up"]
    assert len(rules) == len(recorded) + len(alerts())
    assert all(r["health"] == "ok" and not r.get("lastError") for r in rules), rules
    assert alerted == []
    # the rules read real series: each recording rule has a value, except the 5xx one (none happened)
    assert all(v == 0 for v in values["kor_ner:requests_5xx:rate5m"].values())
    assert all(recorded[name] for name in recorded if name != "kor_ner:requests_5xx:rate5m"), recorded
    assert 0 < values["kor_ner:ner_inference_seconds:p95_rate5m"][""] < 1
    assert values["kor_ner:ner_entities_per_text:mean30m"][""] > 0.5  # each sentence names someone or somewhere
    assert 0 < values["kor_ner:ner_rejected_inputs:rate10m"]["empty"] < 0.5
    assert values["kor_ner:ts_inference_requests:rate5m"][""] > 0
    for series in recorded.values():
        assert all(s["metric"].get("ModelName", model) == model for s in series)
