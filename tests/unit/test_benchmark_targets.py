"""benchmark.target_rows on hand-made rows: which measured cell each of the performance targets is
judged on. (The benchmark end to end, on a real TorchServe: tests/integration/test_benchmark.py.)"""

from __future__ import annotations

import json

from bench import benchmark
from scripts import benchmark as benchmark_cli


def row(
    path: str,
    rate: float,
    p50: float,
    *,
    batch: int = 8,
    workers: int | None = None,
    threads: int = 2,
    concurrency: int | None = None,
    precision: str = "fp32",
) -> dict:
    return {
        "model": "m",
        "path": path,
        "precision": precision,
        "batch": batch,
        "delay_ms": 5 if workers else None,
        "workers": workers,
        "threads": threads,
        "concurrency": concurrency,
        "sentences_per_s": rate,
        "p50_ms": p50,
        "p95_ms": 2 * p50,
        "p99_ms": 3 * p50,
        "errors": 0,
    }


ROWS = [
    row("ceiling-forward", 6.0, 150, batch=8),
    row("ceiling-predict", 7.0, 120, batch=1),
    row("seed-served", 5.0, 5000, batch=1, workers=1, concurrency=32),
    # 2 workers x 1 thread: the best throughput, slow alone (one thread)
    row("served", 10.0, 3000, workers=2, threads=1, concurrency=32),
    row("served", 4.0, 210, workers=2, threads=1, concurrency=1),
    # 1 worker x 2 threads: what a lone request gets in-process
    row("served", 8.0, 3500, workers=1, threads=2, concurrency=32),
    row("served", 6.0, 128, workers=1, threads=2, concurrency=1),
]


def targets(rows: list[dict]) -> dict[str, dict]:
    benchmark.add_ratios(rows)
    return {t["target"]: t for t in benchmark.target_rows(rows, [])}


def test_throughput_bars_use_the_best_config_at_the_top_concurrency():
    t = targets([dict(r) for r in ROWS])
    assert t["served fp32 / ceiling forward fp32 (c32)"]["value"] == round(10 / 6, 3)
    seed = t["served fp32 / seed served (c32)"]
    assert (seed["value"], seed["met"], seed["config"]) == (2.0, True, "b8 d5 w2")


def test_latency_bar_uses_the_layout_with_the_in_process_thread_count():
    latency = targets([dict(r) for r in ROWS])["served fp32 p50 ms at c1 <= single-sentence predict + delay + 5"]
    assert (latency["value"], latency["bar"], latency["met"], latency["config"]) == (128, 130, True, "b8 d5 w1")


def test_latency_bar_falls_back_to_the_best_config_without_that_layout():
    rows = [dict(r) for r in ROWS if r["workers"] != 1 or r["path"] == "seed-served"]
    latency = targets(rows)["served fp32 p50 ms at c1 <= single-sentence predict + delay + 5"]
    assert (latency["value"], latency["met"], latency["config"]) == (210, False, "b8 d5 w2")


def test_rejudge_rewrites_a_saved_run_with_the_current_bars(tmp_path):
    saved = {
        "machine": {"cpu": "test CPU", "cores": 2, "memory_gib": 1.0, "torch": "t", "transformers": "x"},
        "load_before": 0.1,
        "load_after": 0.2,
        "sentences": "s.txt",
        "sentence_count": 3,
        "repeats": 3,
        "min_seconds": 2.0,
        "rows": [dict(r) for r in ROWS],
        "accuracy": [],
        "targets": ["stale"],
    }
    results = tmp_path / "results.json"
    results.write_text(json.dumps(saved), encoding="utf-8")
    assert benchmark_cli.main(["--rejudge", str(results)]) == 0
    report = json.loads(results.read_text(encoding="utf-8"))
    assert report["targets"] == list(targets([dict(r) for r in ROWS]).values())
    assert "| m | served fp32 p50 ms at c1 <= single-sentence predict + delay + 5 | 128 | 130 | yes | b8 d5 w1 |" in (
        tmp_path / "results.md"
    ).read_text(encoding="utf-8")


def test_rejudge_names_a_file_that_is_not_a_run(tmp_path, capsys):
    other = tmp_path / "results.json"
    other.write_text('{"rows": 3}', encoding="utf-8")
    assert benchmark_cli.main(["--rejudge", str(other)]) == 1
    assert f"{other} is not a benchmark results.json" in capsys.readouterr().err


DEFAULT = {"precision": "ort-fp32", "batch": 8, "delay_ms": 5, "workers": 2, "threads": 1}
FAST = [
    row("ceiling-predict", 9.0, 60, batch=1, precision="ort-fp32"),
    row("seed-served", 5.0, 5000, batch=1, workers=1, concurrency=32),
    row("served", 13.0, 2000, workers=2, threads=1, concurrency=32, precision="ort-fp32"),
    row("served", 7.0, 72, workers=2, threads=1, concurrency=1, precision="ort-fp32"),
    row("served", 30.0, 900, workers=2, threads=2, concurrency=32, precision="ort-fp32"),  # not the default layout
    row("served", 55.0, 500, workers=2, threads=1, concurrency=32, precision="ort-int8"),
    row("served", 60.0, 450, workers=2, threads=1, concurrency=32, precision="bf16"),
]


def test_the_default_is_judged_on_its_own_cell_and_the_best_opt_in_needs_its_accuracy():
    rows = [dict(r) for r in FAST]
    benchmark.add_ratios(rows)
    accuracy = [
        {"model": "demo", "precision": "bf16", "token_tag_agreement": 0.99, "f1_loss_points": 0.9},
        {"model": "demo", "precision": "ort-int8", "token_tag_agreement": 0.99, "f1_loss_points": 0.1},
    ]
    t = {x["target"]: x for x in benchmark.target_rows(rows, accuracy, DEFAULT)}
    default = t["default served / seed served (c32)"]
    assert (default["value"], default["bar"], default["met"], default["config"]) == (
        2.6,
        2.5,
        True,
        "ort-fp32 b8 d5 2 × 1",
    )
    latency = t["default p50 ms at c1 <= in-process batch-1 p50 + delay + 5"]
    assert (latency["value"], latency["bar"], latency["met"]) == (72, 70, False)
    opt_in = t["best opt-in served / seed served (c32)"]  # bf16 is faster here but loses 0.9 F1 points
    assert (opt_in["value"], opt_in["met"], opt_in["config"]) == (11.0, True, "ort-int8 b8 d5 2 × 1")


def test_the_default_cell_is_what_runtime_auto_serves_on_a_cpu():
    config = {"minWorkers": 2, "batchSize": 8, "maxBatchDelay": 5, "handler": {"torch_threads": 1}}
    assert benchmark.default_cell(config, cores=2) == DEFAULT
    assert benchmark.default_cell(config, cores=2, device="cuda")["precision"] == "fp32"
    assert benchmark.default_cell({"handler": {"quantize": "int8"}}, cores=4)["precision"] == "ort-int8"
