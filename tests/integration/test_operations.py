"""Operations against a real TorchServe: a new model version and a worker-count change while
clients keep sending requests (none may fail), and the KServe v2 request shape answered by the
handler itself (on /predictions and on TorchServe's /v2/models/<name>/infer route)."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from serving import tsctl
from serving.predict import RETRY_STATUSES


def v2_request(texts: list[str], request_id: str | None = None) -> dict:
    body = {"inputs": [{"name": "texts", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    return {**body, "id": request_id} if request_id else body


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def unregister_all(server: tsctl.Server, model: str) -> None:
    """Remove every version of ``model``, the default last: TorchServe refuses to remove the
    default version while another remains ("Can't remove default version")."""
    try:
        rows = tsctl.versions(server, model)
    except tsctl.TsError:
        return
    for row in sorted(rows, key=lambda r: r["default"]):
        tsctl.unregister(server, model, row["version"])


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic() when the request was first sent
    status: int  # HTTP status of the last attempt; 0 when its connection failed or timed out
    version: str | None  # "model_version" of a v2 answer
    attempts: int = 1
    error: str = ""  # what went wrong: the answer's body or the client's exception


class LoadGenerator:
    """Client threads, each with a keep-alive session, sending requests (v2 and plain text in
    turn) until stopped or until the request or time budget is spent; keeps every outcome.

    Like the project's client (serving/predict.py), a client sends a request once more when it got no
    answer in time, or one of the statuses that client resends ("Worker died." 500/507, 503):
    TorchServe 0.12 never answers a request that a worker was gathering when it was scaled down,
    fails the batch it was running then, and now and then drops one that arrives as a new
    worker starts (docs/torchserve-notes.md).
    """

    timeout = (5, 20)  # (connect, read) seconds; the tiny model answers in well under 3 s
    attempts = 2

    def __init__(
        self, server: tsctl.Server, model: str, threads: int = 4, max_requests: int = 5000, max_seconds: float = 240
    ) -> None:
        self.server, self.model, self.clients = server, model, threads
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.outcomes: list[Outcome] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)]

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _running(self) -> bool:
        return not self._stop.is_set() and len(self.outcomes) < self.max_requests and time.monotonic() < self.deadline

    def _run(self, client: int) -> None:
        session = requests.Session()
        session.headers.update(self.server.headers("inference"))
        sent = 0
        while self._running():
            text = f"{client}번 손님의 {sent}번째 요청: 이순신은 서울에서 태어났다."
            started = time.monotonic()
            for attempt in range(1, self.attempts + 1):
                outcome = self._send(session, text, v2=sent % 2 == 0, started=started, attempt=attempt)
                if outcome.status != 0 and outcome.status not in RETRY_STATUSES:
                    break
            with self._lock:
                self.outcomes.append(outcome)
            sent += 1

    def _send(self, session: requests.Session, text: str, v2: bool, started: float, attempt: int) -> Outcome:
        base = self.server.inference_url
        try:
            if v2:
                resp = session.post(
                    f"{base}/v2/models/{self.model}/infer", json=v2_request([text]), timeout=self.timeout
                )
            else:
                resp = session.post(
                    f"{base}/predictions/{self.model}",
                    data=text.encode("utf-8"),
                    headers={"Content-Type": "text/plain; charset=utf-8"},
                    timeout=self.timeout,
                )
        except requests.RequestException as err:
            return Outcome(started, 0, None, attempt, f"{type(err).__name__}: {err}")
        ok = resp.status_code == 200
        version = resp.json().get("model_version") if ok and v2 else None
        return Outcome(started, resp.status_code, version, attempt, "" if ok else resp.text[:300])

    def answered_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.started > moment)

    def wait_for(self, n: int, since: float, timeout: float = 120) -> None:
        """Poll until ``n`` requests sent after ``since`` have been answered."""
        wait_until(lambda: self.answered_since(since) >= n, timeout, f"{n} answers since t={since:.1f}")

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def check(self, max_resent: int) -> None:
        """No request failed, and at most ``max_resent`` went unanswered once (then resent)."""
        failed, resent = self.failures(), [o for o in self.outcomes if o.attempts > 1]
        assert failed == [], f"{len(failed)} of {len(self.outcomes)} requests failed: {failed[:3]}"
        assert len(resent) <= max_resent, f"{len(resent)} of {len(self.outcomes)} requests were resent: {resent[:3]}"


# --------------------------------------------------------------------------- versions and scaling


def test_new_version_replaces_the_old_under_load(server, tiny_checkpoint_dir, build_archive):
    """Register 2.0 beside 1.0, make it the default, unregister 1.0: no request fails (a
    client resends one left unanswered), and every request sent after the switch gets 2.0."""
    model = "ops_versions"
    v1 = build_archive(tiny_checkpoint_dir, model)
    v2 = build_archive(tiny_checkpoint_dir, model, version="2.0")
    assert (v1, v2) == (f"{model}.mar", f"{model}-2.0.mar")
    tsctl.register(server, v1)
    try:
        with LoadGenerator(server, model) as load:
            load.wait_for(10, since=0)
            tsctl.register(server, v2)
            switching = time.monotonic()
            tsctl.set_default(server, model, "2.0")
            switched = time.monotonic()
            load.wait_for(10, since=switched)
            tsctl.unregister(server, model, "1.0")
            removed = time.monotonic()
            load.wait_for(10, since=removed)
        load.check(max_resent=load.clients)  # a few left unanswered as 2.0's worker started
        answered = [o for o in load.outcomes if o.version and o.attempts == 1]  # a resend may cross the switch
        before = {o.version for o in answered if o.started < switching}
        after = {o.version for o in answered if o.started > switched}
        assert (before, after) == ({"1.0"}, {"2.0"})
        assert tsctl.versions(server, model) == [{"version": "2.0", "default": True, "ready_workers": 1, "workers": 1}]
    finally:
        unregister_all(server, model)


def serving_workers(server: tsctl.Server, model: str, since_line: int) -> set[str]:
    """Names of the workers of ``model`` that logged a batch after line ``since_line`` (the log,
    not the ner_texts_per_batch metric: its samples do not say which worker observed them)."""
    lines = (server.run_dir / "logs" / "model_log.log").read_text(encoding="utf-8", errors="replace").splitlines()
    return {
        m.group(1)
        for line in lines[since_line:]
        if "batch of" in line
        for m in [re.search(rf"(W-\d+-{model}_[\d.]+)", line)]
        if m
    }


def test_scale_up_and_down_under_load(server, tiny_model):
    """1 -> 2 -> 1 workers: no request fails (a client resends one left unanswered), and
    with two workers both serve batches."""
    log = server.run_dir / "logs" / "model_log.log"
    try:
        with LoadGenerator(server, tiny_model) as load:
            load.wait_for(10, since=0)
            tsctl.scale(server, tiny_model, 2)
            scaled_up, first_line = (
                time.monotonic(),
                len(log.read_text(encoding="utf-8", errors="replace").splitlines()),
            )
            load.wait_for(40, since=scaled_up)
            two_workers = serving_workers(server, tiny_model, first_line)
            tsctl.scale(server, tiny_model, 1)
            load.wait_for(10, since=time.monotonic())
    finally:
        tsctl.scale(server, tiny_model, 1)  # the module's other tests expect one worker
    load.check(max_resent=load.clients + 1)  # the batch of the worker scaled down, one at scale-up
    assert len(two_workers) == 2, f"after scaling to 2, batches came from {sorted(two_workers)}"
    assert [w["status"] for w in tsctl.describe(server, tiny_model)[0]["workers"]] == ["READY"]


# --------------------------------------------------------------------------- KServe v2 shape


@pytest.mark.parametrize("route", ["/predictions/{}", "/v2/models/{}/infer"])
def test_v2_request_gets_a_v2_response(server, tiny_model, route):
    texts = ["이순신은 조선 중기의 무신이다.", "서울에서 만났다"]
    resp = server.call("POST", "inference", route.format(tiny_model), json=v2_request(texts, "req-7"))
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert {k: body[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": tiny_model,
        "model_version": "1.0",
        "id": "req-7",
    }
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("ner", "BYTES", [2])
    answers = [json.loads(item) for item in output["data"]]
    plain = tsctl.predict(server, tiny_model, texts).json()
    assert answers == plain  # the same answers as a plain list request, in order


def test_v2_request_without_id_gets_torchserve_request_id(server, tiny_model):
    body = server.call("POST", "inference", f"/v2/models/{tiny_model}/infer", json=v2_request(["서울"])).json()
    assert re.fullmatch(r"[0-9a-f-]{36}", body["id"]), body["id"]


def test_v2_requests_batched_together_keep_their_answers(server, tiny_model, batches_and_texts):
    """Several v2 requests (of 1 to 3 texts) arrive within the batch delay: each answer holds
    its own texts and id, and batches of more than one request formed (the handler's
    ner_texts_per_batch metric counts fewer batches than requests)."""
    before = batches_and_texts(server, tiny_model)
    requests_ = [([f"{i}번 요청의 {j}번째 문장 서울" for j in range(1 + i % 3)], f"id-{i}") for i in range(8)]
    url = f"/v2/models/{tiny_model}/infer"
    with ThreadPoolExecutor(len(requests_)) as pool:
        answers = list(pool.map(lambda r: server.call("POST", "inference", url, json=v2_request(*r)), requests_))
    for (texts, request_id), resp in zip(requests_, answers, strict=True):
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["id"] == request_id and body["outputs"][0]["shape"] == [len(texts)]
        assert [json.loads(item)["sentence"] for item in body["outputs"][0]["data"]] == texts
    sent = sum(len(texts) for texts, _ in requests_)
    batches, texts = batches_and_texts(server, tiny_model, since=before, texts=sent)
    assert texts == sent and 0 < batches < len(requests_), (
        f"no batch larger than 1 formed: {batches:.0f} batches for {len(requests_)} requests"
    )


@pytest.mark.parametrize(
    ("tensor", "expected"),
    [
        ({"datatype": "FP32", "shape": [1], "data": [1.5]}, 'datatype must be "BYTES" (UTF-8 texts), received FP32'),
        ({"datatype": "BYTES", "shape": [3], "data": ["가", "나"]}, 'v2 input "shape" must be [2] for 2 texts'),
        (
            {"datatype": "BYTES", "shape": [2], "data": ["가", 7]},
            "v2 input data[1] must be a string, received a JSON number",
        ),
        ({"datatype": "BYTES", "shape": [0], "data": []}, 'v2 input "data" is empty'),
        ({"datatype": "BYTES", "shape": [1], "data": ["   "]}, "v2 input data[0] is empty or blank"),
    ],
)
def test_bad_v2_request_gets_json_400_naming_the_problem(server, tiny_model, tensor, expected):
    resp = server.call(
        "POST", "inference", f"/v2/models/{tiny_model}/infer", json={"inputs": [{"name": "t", **tensor}]}
    )
    assert resp.status_code == 400
    assert expected in resp.json()["error"]


def test_v2_request_with_two_inputs_is_refused(server, tiny_model):
    two = v2_request(["가"])["inputs"] * 2
    resp = tsctl.predict(server, tiny_model, {"inputs": two})
    assert resp.status_code == 400
    assert 'v2 "inputs" must be a list of one input, received a JSON list of 2 items' in resp.json()["error"]


def test_start_on_a_fresh_clone_creates_the_model_store(tmp_path):
    """``tsctl.py --run-dir var/x start --ports free`` as the README shows it, before anything was
    packaged: the model store does not exist yet, and TorchServe starts with it empty."""
    store = tmp_path / "clone" / "model_store"
    with tsctl.running(tmp_path / "run", store) as server:
        assert store.is_dir() and tsctl.list_models(server) == []
