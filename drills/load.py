"""The one load generator, and its statistics.

``send_all(send, items, concurrency)``: ``concurrency`` threads take the next item and call
``send(item)``, which returns the outcome (``"ok"``, or why not: never the request text); the
outcome and the seconds it took go into a ``Tally``. Every tool that sends load drives it: the
benchmark (``http_load``), the soak and the fuzz, the fault drill, the replicas drill and the
worst case. ``passes`` hands items out in whole passes for a minimum time; ``timed_calls``
times calls in-process; ``percentile`` and ``summarise`` are the statistics.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from serving import tsctl

T = TypeVar("T")
_END = object()


@dataclass
class Tally:
    """What a load saw. ``note`` and ``count`` may be called from any thread."""

    outcomes: Counter = field(default_factory=Counter)  # outcome -> sends
    counts: Counter = field(default_factory=Counter)  # anything else a send counts (resends, statuses, ...)
    latencies: list[float] = field(default_factory=list)  # seconds, one per send
    examples: list[str] = field(default_factory=list)  # the first few outcomes that were not "ok"
    seconds: float = 0.0  # wall time of the loads tallied here
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note(self, outcome: str, seconds: float, example: str | None = None) -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.latencies.append(seconds)
            if outcome != "ok" and example and len(self.examples) < 10:
                self.examples.append(example)

    def count(self, key: Any, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    @property
    def sent(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]


def send_all(
    send: Callable[[T], str],
    items: Iterable[T],
    concurrency: int,
    tally: Tally | None = None,
    stop: threading.Event | None = None,
    on_sent: Callable[[], object] | None = None,
) -> Tally:
    """``concurrency`` threads call ``send(item)`` for the next item, until the items run out or
    ``stop`` is set; each outcome goes into ``tally`` (a new one when None), which is returned.
    ``send`` answers a failed request with its outcome instead of raising."""
    tally = tally if tally is not None else Tally()
    feed, lock = iter(items), threading.Lock()

    def take() -> Any:
        with lock:
            return _END if stop is not None and stop.is_set() else next(feed, _END)

    def sender() -> None:
        while (item := take()) is not _END:
            started = time.perf_counter()
            outcome = send(item)
            tally.note(outcome, time.perf_counter() - started, example=outcome)
            if on_sent is not None:
                on_sent()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tally.seconds += time.perf_counter() - started
    return tally


class Sessions:
    """A keep-alive ``requests.Session`` per thread, each closed with ``close()``."""

    def __init__(self) -> None:
        self._local, self._lock = threading.local(), threading.Lock()
        self._all: list[requests.Session] = []

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._all:
                session.close()
            self._all.clear()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def passes(items: Sequence[T], min_seconds: float) -> Iterator[T]:
    """The items in whole passes, until a pass ends after at least ``min_seconds``: every round
    sees every item equally often."""
    started = time.perf_counter()
    while items:
        yield from items
        if time.perf_counter() - started >= min_seconds:
            return


@dataclass
class Round:
    sentences: int  # answered correctly
    seconds: float
    latencies: list[float] = field(default_factory=list)  # seconds, one per call
    errors: int = 0


def timed_calls(call: Callable[[Any], Any], items: Sequence[tuple[int, Any]], min_seconds: float) -> Round:
    """In-process: ``call(payload)`` for each (sentences, payload) item, one after another."""
    latencies, sentences = [], 0
    started = time.perf_counter()
    for item in passes(items, min_seconds):
        t = time.perf_counter()
        call(item[1])
        latencies.append(time.perf_counter() - t)
        sentences += item[0]
    return Round(sentences, time.perf_counter() - started, latencies)


def http_load(
    server: tsctl.Server, model: str, sentences: Sequence[str], concurrency: int, min_seconds: float
) -> Round:
    """``concurrency`` keep-alive clients, each POSTing one sentence (text/plain) at a time."""
    url = server.inference_url + tsctl.predictions_path(model)
    headers = {**server.headers("inference"), "Content-Type": "text/plain; charset=utf-8"}

    with Sessions() as sessions:

        def send(text: str) -> str:
            try:
                # a slow path at high concurrency queues for minutes: measure it, do not fail it
                resp = sessions.get().post(url, data=text.encode("utf-8"), headers=headers, timeout=(5, 900))
            except requests.RequestException as err:
                return type(err).__name__
            return "ok" if resp.status_code == 200 else f"HTTP {resp.status_code}"

        tally = send_all(send, passes(sentences, min_seconds), concurrency)
    return Round(tally.ok, tally.seconds, tally.latencies, tally.sent - tally.ok)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values) / 100))
    return sorted_values[rank - 1]


def summarise(rounds: Sequence[Round]) -> dict[str, Any]:
    rates = [r.sentences / r.seconds for r in rounds]
    latencies = sorted(x for r in rounds for x in r.latencies)
    ms = lambda q: round(1000 * percentile(latencies, q), 1)  # noqa: E731
    return {
        "sentences_per_s": round(statistics.median(rates), 2),
        "rounds": [round(x, 2) for x in rates],
        "p50_ms": ms(50),
        "p95_ms": ms(95),
        "p99_ms": ms(99),
        "calls": len(latencies),
        "errors": sum(r.errors for r in rounds),
    }
