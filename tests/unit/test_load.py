"""The benchmark's inputs and load statistics, without a server (the benchmark end to end on a
real TorchServe: tests/integration/test_benchmark.py)."""

from __future__ import annotations

from bench import benchmark
from drills import load

TAGGED = [  # ratsnlp line format, written for this test
    "김민수는 어제 부산에 갔다.\u241e<김민수:PER>는 <어제:DAT> <부산:LOC>에 갔다.",
    "한국은행은 금리를 동결했다.\u241e<한국은행:ORG>은 금리를 동결했다.",
]


def test_sentences_from_ratsnlp_lines_and_limit(tmp_path):
    path = tmp_path / "val.txt"
    path.write_text("\n".join(TAGGED) + "\n\n", encoding="utf-8")
    assert benchmark.read_sentences(path) == ["김민수는 어제 부산에 갔다.", "한국은행은 금리를 동결했다."]
    assert benchmark.read_sentences(path, limit=1) == ["김민수는 어제 부산에 갔다."]
    assert benchmark.read_sentences(None, limit=2) == benchmark.BUILTIN_SENTENCES[:2]


def test_percentile_and_passes():
    values = [float(v) for v in range(1, 101)]
    assert [load.percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    assert list(load.passes(["a", "b", "c"], min_seconds=0)) == ["a", "b", "c"]  # one whole pass, then done
    assert list(load.passes([], min_seconds=10)) == []


def test_send_all_tallies_every_outcome_from_many_threads():
    seen = []

    def send(n: int) -> str:
        seen.append(n)
        return "ok" if n % 3 else f"refused {n % 2}"

    tally = load.send_all(send, range(30), concurrency=4)
    assert sorted(seen) == list(range(30))
    assert tally.outcomes == {"ok": 20, "refused 0": 5, "refused 1": 5}
    assert tally.ok == 20 and tally.sent == 30 and len(tally.latencies) == 30
    assert tally.examples and all(e.startswith("refused") for e in tally.examples)


def test_send_all_stops_an_endless_load_when_told():
    import itertools
    import threading

    stop = threading.Event()

    def send(n: int) -> str:
        if n == 50:
            stop.set()
        return "ok"

    tally = load.send_all(send, itertools.count(), concurrency=3, stop=stop)
    assert 50 < tally.sent < 60  # the senders in flight finish their item, then none takes another
