"""Kill a served model's workers with SIGKILL under load and measure how the service recovers.

    python scripts/fault_drill.py --kills 5 --clients 8 --model kor_ner

While --clients threads send unique sentences through the project's client
(serving/predict.py:predict_with_retry: read timeout, resends), the drill kills one READY
worker at a time with SIGKILL (as the OOM killer does), waits until TorchServe has started a
replacement and it is READY, lets the load run --settle seconds, and kills the next. Measured:
recovery time (SIGKILL -> every worker READY again), requests answered, resends and why, the
slowest answer, and requests lost: failed after every resend, or answered with another text.
The exit code is non-zero when a request was lost or a worker did not come back. It needs
TorchServe on this machine (it signals the worker pids TorchServe's describe gives).
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from drills.load import Tally, send_all
from serving import tsctl
from serving.predict import predict_with_retry


def sender(server: tsctl.Server, model: str, tally: Tally, timeout: float, retries: int) -> Callable[[int], str]:
    """Send sentence ``n`` (each one unique) through the project's client; an answer must echo
    the very text sent. Resends are counted in ``tally.counts`` by reason."""

    def send(n: int) -> str:
        text = f"훈련 {n}: 이순신은 한산도에서 왜군을 무찔렀다."
        try:
            resp = predict_with_retry(server, model, text, retries=retries, timeout=timeout, on_retry=tally.count)
        except requests.RequestException as err:
            return f"{type(err).__name__} after {retries} resends"
        if resp.status_code != 200:
            return f"HTTP {resp.status_code} after {retries} resends"
        return "ok" if resp.json().get("sentence") == text else "answered with another text"

    return send


def ready_pids(server: tsctl.Server, model: str) -> set[int]:
    return {pid for pid, status in tsctl.workers(server, model).items() if status == "READY"}


def kill_one(server: tsctl.Server, model: str, workers: int, deadline_s: float) -> tuple[int, float]:
    """SIGKILL one READY worker; seconds until ``workers`` workers are READY again, none of them it."""
    victim = min(ready_pids(server, model))
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    while True:
        pids = ready_pids(server, model)
        if len(pids) >= workers and victim not in pids:
            return victim, time.monotonic() - killed
        if time.monotonic() - killed > deadline_s:
            raise tsctl.TsError(
                f"{model}: {len(pids)} of {workers} workers READY {deadline_s:.0f} s after killing {victim}"
            )
        time.sleep(0.1)


def drill(
    server: tsctl.Server,
    model: str,
    kills: int,
    clients: int,
    settle: float = 5.0,
    timeout: float = 15,
    retries: int = 6,
    deadline_s: float = 180,
    progress=print,
) -> dict[str, Any]:
    """Load, ``kills`` SIGKILLs one after another, load again: the report."""
    workers = len(ready_pids(server, model))
    if workers == 0:
        raise tsctl.TsError(f"{model} has no READY worker")
    tally, stop = Tally(), threading.Event()
    send = sender(server, model, tally, timeout, retries)
    loader = threading.Thread(target=send_all, args=(send, itertools.count(), clients, tally, stop), daemon=True)
    recoveries: list[float] = []
    started = time.monotonic()
    loader.start()
    try:
        time.sleep(settle)
        for k in range(kills):
            pid, seconds = kill_one(server, model, workers, deadline_s)
            recoveries.append(seconds)
            progress(
                f"kill {k + 1}/{kills}: worker {pid} SIGKILLed; {workers} READY again after {seconds:.1f} s "
                f"({tally.ok} answered, {sum(tally.counts.values())} resends so far)"
            )
            time.sleep(settle)
    finally:
        stop.set()
        loader.join()
    lost = {why: n for why, n in tally.outcomes.items() if why != "ok"}
    return {
        "model": model,
        "workers": workers,
        "clients": clients,
        "kills": kills,
        "recovery_s": [round(s, 2) for s in recoveries],
        "recovery_s_median": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_s_max": round(max(recoveries), 2) if recoveries else None,
        "seconds": round(time.monotonic() - started, 1),
        "answered": tally.ok,
        "lost": sum(lost.values()),
        "lost_why": lost,
        "resends": dict(tally.counts),
        "slowest_answer_s": round(max(tally.latencies, default=0.0), 2),
    }


def failures(report: dict[str, Any]) -> list[str]:
    """What makes the drill fail: a request the retrying clients lost; empty when it held."""
    return [f"{report['lost']} requests lost"] if report["lost"] else []
