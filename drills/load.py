"""Load generation and its statistics: whole passes over a list of items, timed calls
in-process, keep-alive HTTP clients, nearest-rank percentiles. The benchmark measures with
these; the soak uses the percentile.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import requests


@dataclass
class Round:
    sentences: int  # answered correctly
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per call
    errors: int = 0


class Feed:
    """Hands items to any number of threads in whole passes, until a pass ends after at
    least ``min_seconds``: every round sees every item equally often."""

    def __init__(self, items: Sequence[Any], min_seconds: float):
        self._items, self._min_seconds = items, min_seconds
        self._lock = threading.Lock()
        self._given = 0
        self._started = time.perf_counter()

    def next(self) -> Any | None:
        with self._lock:
            at_pass_end = self._given % len(self._items) == 0
            if self._given and at_pass_end and time.perf_counter() - self._started >= self._min_seconds:
                return None
            item = self._items[self._given % len(self._items)]
            self._given += 1
            return item


def timed_calls(call: Callable[[Any], Any], items: Sequence[tuple[int, Any]], min_seconds: float) -> Round:
    """In-process: ``call(payload)`` for each (sentences, payload) item, one after another."""
    feed = Feed(items, min_seconds)
    latencies, sentences = [], 0
    started = time.perf_counter()
    while (item := feed.next()) is not None:
        t = time.perf_counter()
        call(item[1])
        latencies.append(time.perf_counter() - t)
        sentences += item[0]
    return Round(sentences, time.perf_counter() - started, latencies)


def http_load(url: str, headers: dict[str, str], sentences: Sequence[str], concurrency: int, min_seconds: float) -> Round:
    """``concurrency`` keep-alive clients, each POSTing one sentence (text/plain) at a time."""
    feed = Feed(sentences, min_seconds)
    results: list[tuple[float, bool]] = []  # list.append is atomic: no lock needed

    def client() -> None:
        with requests.Session() as session:
            session.headers.update({**headers, "Content-Type": "text/plain; charset=utf-8"})
            while (text := feed.next()) is not None:
                t = time.perf_counter()
                try:
                    # a slow path at high concurrency queues for minutes: measure it, do not fail it
                    ok = session.post(url, data=text.encode("utf-8"), timeout=(5, 900)).status_code == 200
                except requests.RequestException:
                    ok = False
                results.append((time.perf_counter() - t, ok))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    good = sum(ok for _, ok in results)
    return Round(good, time.perf_counter() - started, [lat for lat, _ in results], len(results) - good)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values) / 100))
    return sorted_values[rank - 1]


def summarise(rounds: Sequence[Round]) -> dict[str, Any]:
    rates = [r.sentences / r.seconds for r in rounds]
    latencies = sorted(x for r in rounds for x in r.latencies)
    ms = lambda q: round(1000 * percentile(latencies, q), 1)  # noqa: E731
    return {"sentences_per_s": round(statistics.median(rates), 2), "rounds": [round(x, 2) for x in rates],
            "p50_ms": ms(50), "p95_ms": ms(95), "p99_ms": ms(99),
            "calls": len(latencies), "errors": sum(r.errors for r in rounds)}
