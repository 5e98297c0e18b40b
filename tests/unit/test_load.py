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


def test_percentile_and_feed():
    values = [float(v) for v in range(1, 101)]
    assert [load.percentile(values, q) for q in (50, 95, 99, 100)] == [50.0, 95.0, 99.0, 100.0]
    feed = load.Feed(["a", "b", "c"], min_seconds=0)
    assert [feed.next() for _ in range(4)] == ["a", "b", "c", None]  # one whole pass, then done
