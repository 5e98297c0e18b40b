"""Time the largest legal request on a served model: the request the shipped limits allow that
costs the most (model-input tokens up to max_request_tokens), alone and as a full batch of
batchSize such requests at once, against the batch's response timeout.

    .venv/bin/python scripts/worst_case.py --model bert-base    # kcbert-base's shape, random weights

It packages the model with the given model config (default: config/model-config.yaml, the
shipped one), starts its own TorchServe on free loopback ports, and reports seconds, answer
bytes and whether any worker restarted. Nothing is retried.
"""

from __future__ import annotations

import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests

import ner_core
import ner_model
from bench import benchmark
from drills.load import send_all
from ner_settings import HandlerSettings
from serving import tsctl

SENTENCES = [
    "이순신은 1592년 임진왜란 때 한산도 앞바다에서 일본 수군을 크게 무찔렀다.",
    "서울시는 내년 3월부터 시내버스 요금을 150원 올린다고 밝혔다.",
    "삼성전자는 2024년 1분기 영업이익이 6조 6천억 원으로 잠정 집계됐다고 5일 공시했다.",
    "국립중앙박물관은 다음 달 15일부터 두 달 동안 고려 청자 특별전을 연다.",
]


def largest_request(staged: Path, settings: HandlerSettings) -> tuple[list[str], int]:
    """The most work one legal request can hold: texts of ordinary Korean, each the longest
    prefix (at most max_text_chars) that still fits the room left in max_request_tokens, up to
    max_texts_per_request texts: (texts, their model-input tokens)."""
    tokenizer = ner_model.build_tokenizer(staged / "vocab.txt")
    paragraph = " ".join(SENTENCES)
    source = paragraph * (settings.max_text_chars // len(paragraph) + 1)
    cost_of = lambda text: ner_core.encode_windows(tokenizer, settings, [text])[0].cost  # noqa: E731
    texts: list[str] = []
    cost = 0
    while len(texts) < settings.max_texts_per_request:
        room = settings.max_request_tokens - cost
        lo, hi = 0, settings.max_text_chars  # binary search: the cost grows with the prefix
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost_of(source[:mid]) <= room else (lo, mid - 1)
        if not source[:lo].strip():
            break
        texts.append(source[:lo])
        cost += cost_of(source[:lo])
    return texts, cost


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def sender(
    server: tsctl.Server, model: str, texts: list[str], timeout: float, sizes: list[int]
) -> Callable[[Any], str]:
    """POST ``texts`` as one JSON request: the outcome is the HTTP status (or the error's name);
    answer sizes go to ``sizes``."""

    def send(_: Any) -> str:
        try:
            resp = server.call("POST", "inference", tsctl.predictions_path(model), json=texts, timeout=(5, timeout))
        except requests.RequestException as err:
            return type(err).__name__
        sizes.append(len(resp.content))
        return str(resp.status_code)

    return send


def measure(spec: str, config: dict, out: Path, rounds: int) -> dict:
    settings = HandlerSettings.from_mapping(config.get("handler"))
    name, staged = benchmark.prepare_model(spec, out)
    store = out / "store"
    print(f"worst_case: packaging {name} with the model config's limits", file=sys.stderr, flush=True)
    mar = benchmark.build_archive(store, f"worst_{name}".replace("-", "_"), staged, config)
    texts, cost = largest_request(staged, settings)
    timeout = config.get("responseTimeout", 120)
    batch = config.get("batchSize", 1)
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh TorchServe: no models restored from a last run
    server = tsctl.start(run_dir, store, overrides=tsctl.port_overrides())
    try:
        model = tsctl.register(server, mar)
        before = tsctl.workers(server, model)
        pids = set(before)
        print(
            f"worst_case: {len(texts)} texts, {cost} model-input tokens; {rounds} rounds alone",
            file=sys.stderr,
            flush=True,
        )
        send_all(sender(server, model, SENTENCES[:1], timeout, []), range(1), 1)  # warm-up
        sizes: list[int] = []
        alone = send_all(sender(server, model, texts, timeout * 2, sizes), range(rounds), 1)
        print(f"worst_case: {batch} per worker at once (a full batch each)", file=sys.stderr, flush=True)
        workers = len(pids)
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        together = send_all(sender(server, model, texts, timeout * 2, []), range(batch * workers), batch * workers)
        cpu_used = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
        after = tsctl.workers(server, model)
    finally:
        tsctl.stop(run_dir)
    return {
        "model": name,
        "texts": len(texts),
        "chars": sum(map(len, texts)),
        "model_input_tokens": cost,
        "limits": {
            k: getattr(settings, k)
            for k in (
                "max_text_chars",
                "max_texts_per_request",
                "max_request_tokens",
                "max_response_bytes",
                "torch_threads",
                "runtime",
            )
        },
        "batch_size": batch,
        "workers": workers,
        "response_timeout_s": timeout,
        "alone_s": {"median": round(statistics.median(alone.latencies), 2), "max": round(max(alone.latencies), 2)},
        "alone_statuses": sorted(alone.outcomes),
        "answer_bytes": max(sizes, default=0),
        "full_batches_s": {
            "median": round(statistics.median(together.latencies), 2),
            "max": round(max(together.latencies), 2),
        },
        "full_batches_statuses": sorted(together.outcomes),
        # CPU seconds each worker spent on its full batch: the wall time on an idle core, whatever
        # else the machine was running during the measurement
        "worker_cpu_s_per_full_batch": {str(pid): round(s, 1) for pid, s in cpu_used.items()},
        "worker_restarted": tsctl.any_restarted(before, after),
        "seconds_per_token": round(statistics.median(alone.latencies) / cost, 5),
    }
