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

import os
import signal
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from serving import tsctl
from serving.predict import predict_with_retry


@dataclass
class Load:
    """What the load clients saw, shared by their threads (``note`` under a lock)."""
    answered: int = 0
    lost: list[str] = field(default_factory=list)  # why, without the request text
    resends: Counter = field(default_factory=Counter)  # reason -> count
    slowest_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, seconds: float, lost: str | None = None, resend: str | None = None) -> None:
        with self.lock:
            if resend:
                self.resends[resend] += 1
                return
            if lost:
                self.lost.append(lost)
            else:
                self.answered += 1
            self.slowest_s = max(self.slowest_s, seconds)


def client(server: tsctl.Server, model: str, i: int, stop: threading.Event, load: Load,
           timeout: float, retries: int) -> None:
    """Send unique sentences until ``stop``; an answer must echo the very text sent."""
    n = 0
    while not stop.is_set():
        text = f"훈련 {i}-{n}: 이순신은 한산도에서 왜군을 무찔렀다."
        started = time.monotonic()
        lost = None
        try:
            resp = predict_with_retry(server, model, text, retries=retries, timeout=timeout,
                                      on_retry=lambda reason: load.note(0, resend=reason))
        except requests.RequestException as err:
            lost = f"{type(err).__name__} after {retries} resends"
        else:
            if resp.status_code != 200:
                lost = f"HTTP {resp.status_code} after {retries} resends"
            elif resp.json().get("sentence") != text:
                lost = "answered with another text"
        load.note(time.monotonic() - started, lost)
        n += 1


def ready_pids(server: tsctl.Server, model: str) -> set[int]:
    return {w["pid"] for w in tsctl.describe(server, model)[0]["workers"] if w["status"] == "READY"}


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
            raise tsctl.TsError(f"{model}: {len(pids)} of {workers} workers READY {deadline_s:.0f} s after killing {victim}")
        time.sleep(0.1)


def drill(server: tsctl.Server, model: str, kills: int, clients: int, settle: float = 5.0, timeout: float = 15,
          retries: int = 6, deadline_s: float = 180, progress=print) -> dict[str, Any]:
    """Load, ``kills`` SIGKILLs one after another, load again: the report."""
    workers = len(ready_pids(server, model))
    if workers == 0:
        raise tsctl.TsError(f"{model} has no READY worker")
    load, stop = Load(), threading.Event()
    recoveries: list[float] = []
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, server, model, i, stop, load, timeout, retries) for i in range(clients)]
        try:
            time.sleep(settle)
            for k in range(kills):
                pid, seconds = kill_one(server, model, workers, deadline_s)
                recoveries.append(seconds)
                progress(f"kill {k + 1}/{kills}: worker {pid} SIGKILLed; {workers} READY again after {seconds:.1f} s "
                         f"({load.answered} answered, {sum(load.resends.values())} resends so far)")
                time.sleep(settle)
        finally:
            stop.set()
            for future in futures:
                future.result()
    return {
        "model": model, "workers": workers, "clients": clients, "kills": kills,
        "recovery_s": [round(s, 2) for s in recoveries],
        "recovery_s_median": round(statistics.median(recoveries), 2) if recoveries else None,
        "recovery_s_max": round(max(recoveries), 2) if recoveries else None,
        "seconds": round(time.monotonic() - started, 1),
        "answered": load.answered, "lost": len(load.lost), "lost_why": dict(Counter(load.lost)),
        "resends": dict(load.resends), "slowest_answer_s": round(load.slowest_s, 2),
    }
