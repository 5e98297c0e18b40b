"""Measure the corpus job (scripts/tag_corpus.py), one run, one machine, for each model of
--models (the demo model, and random weights of the BERT-base shape, as scripts/benchmark.py
makes them), each archived with the shipped model config (config/model-config.yaml):

  in-process  --archive, with the archive's torch_threads, and with one thread per core;
  ray         --archive --ray local, with each count of --actors (one thread each);
  rest        --url against TorchServe serving the archive as shipped, at each --concurrency;
  benchmark   the service's own c32 figure: scripts/benchmark.py on the same sentences, with the
              shipped cell (ONNX Runtime fp32, batch 8, delay 5 ms, 2 workers x 1 thread).

Every job runs as its user runs it (the command in a fresh process, --summary-json); texts/s is
the job's own: texts over the time from the first chunk sent to the last committed (Ray's
includes starting the actors, which load the model). Then the job's memory: peak RSS of an
in-process run over --memory-lines lines made by repeating the KMOU sentences (in a temporary
directory, deleted afterwards), with the tiny model so a million lines take minutes: the job
streams, so its memory is the model's plus a constant. Writes results.json and results.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench import benchmark
from serving import paths, tsctl

SCRIPT = paths.ROOT / "scripts" / "tag_corpus.py"
BENCHMARK = paths.ROOT / "scripts" / "benchmark.py"
CHUNK_LINES = "32"  # the throughput runs' chunks: a few per actor, so the rate after the first one says something


@dataclass(frozen=True)
class TagBenchSpec:
    """One measurement run (the CLI's flags; see scripts/tag_corpus_bench.py)."""

    models: list[str] = field(default_factory=lambda: ["demo", "bert-base"])
    sentences: Path | None = None  # None: benchmark's default (KMOU val.txt, else the built-in set)
    limit: int = 192
    concurrency: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    actors: list[int] = field(default_factory=lambda: [1, 2])
    benchmark: bool = True  # also scripts/benchmark.py's c32 figure
    memory_lines: list[int] = field(default_factory=lambda: [100_000, 1_000_000])
    cores: int = os.cpu_count() or 1
    out: Path = paths.RUN_DIR / "tag-corpus-bench"


def tag(args: Sequence[str], sample_rss: bool = False) -> dict[str, Any]:
    """Run the job's command (``args[1]`` is its OUTPUT); its summary, and with ``sample_rss`` its
    peak RSS (MB, sampled every 0.2 s) and the lowest and highest RSS once its first chunk was
    committed (the model loaded: what a longer input could still grow)."""
    work_dir = Path(args[1] + ".parts")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args, "--summary-json", "-", "--force"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    samples: list[tuple[bool, int]] = []
    if sample_rss:

        def sample() -> None:
            process, tagging = psutil.Process(proc.pid), False
            while proc.poll() is None:
                tagging = tagging or any(p.suffix == ".jsonl" for p in work_dir.glob("0*"))
                try:
                    samples.append((tagging, process.memory_info().rss))
                except psutil.Error:
                    return
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise benchmark.BenchError(f"tag_corpus {' '.join(args)}: {stderr.decode()[-2000:]}")
    summary = json.loads(stdout)
    if samples:
        tagging = [rss for busy, rss in samples if busy] or [0]
        summary["peak_rss_mb"] = round(max(rss for _, rss in samples) / 2**20, 1)
        summary["tagging_rss_mb"] = [round(min(tagging) / 2**20, 1), round(max(tagging) / 2**20, 1)]
    return summary


def row(model: str, way: str, config: str, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": model,
        "way": way,
        "config": config,
        "texts": summary["texts"],
        "texts_per_s": summary["texts_per_s"],
        "warm_texts_per_s": summary["warm_texts_per_s"],
        "seconds": summary["tagging_seconds"],
        "errors": summary["errors"],
        "resent": summary.get("resent", 0),
        "load1": round(os.getloadavg()[0], 2),
    }


def write_sentences(spec: TagBenchSpec, out: Path) -> Path:
    texts = benchmark.read_sentences(spec.sentences or benchmark.default_sentences(), spec.limit)
    path = out / "sentences.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


def archive(spec: str, out: Path, base_config: dict[str, Any]) -> tuple[str, Path]:
    name, staged = benchmark.prepare_model(spec, out)
    store = out / "store"
    mar = benchmark.build_archive(store, benchmark.archive_name(name, "corpus"), staged, base_config)
    return name, store / mar


def local_rows(name: str, mar: Path, sentences: Path, spec: TagBenchSpec, out: Path) -> list[dict[str, Any]]:
    rows = []
    target = str(out / "tagged.jsonl")
    threads = int((yaml.safe_load(paths.MODEL_CONFIG.read_text())["handler"]).get("torch_threads", 1))
    for t in sorted({threads, spec.cores}):
        print(f"tag_corpus_bench: {name} in-process x {t} threads", file=sys.stderr)
        rows.append(
            row(
                name,
                "in-process",
                f"{t} thread(s)",
                tag([str(sentences), target, "--archive", str(mar), "--threads", str(t), "--chunk-lines", CHUNK_LINES]),
            )
        )
    for actors in spec.actors:
        print(f"tag_corpus_bench: {name} ray x {actors} actors", file=sys.stderr)
        rows.append(
            row(
                name,
                "ray",
                f"local, {actors} actor(s) x 1 thread",
                tag(
                    [
                        str(sentences),
                        target,
                        "--archive",
                        str(mar),
                        "--ray",
                        "local",
                        "--ray-cpus",
                        str(spec.cores),
                        "--actors",
                        str(actors),
                        "--threads",
                        "1",
                        "--chunk-lines",
                        CHUNK_LINES,
                    ]
                ),
            )
        )
    return rows


def rest_rows(
    server: tsctl.Server, name: str, mar: Path, sentences: Path, spec: TagBenchSpec, out: Path
) -> list[dict[str, Any]]:
    model = tsctl.register(server, mar.name, timeout=600)
    rows = []
    try:
        for conc in spec.concurrency:
            print(f"tag_corpus_bench: {name} rest c{conc}", file=sys.stderr)
            rows.append(
                row(
                    name,
                    "rest",
                    f"c{conc}",
                    tag(
                        [
                            str(sentences),
                            str(out / "tagged.jsonl"),
                            "--url",
                            server.inference_url,
                            "--model",
                            model,
                            "--key-file",
                            str(server.run_dir / "key_file.json"),
                            "--concurrency",
                            str(conc),
                            "--chunk-lines",
                            CHUNK_LINES,
                        ]
                    ),
                )
            )
    finally:
        tsctl.unregister(server, model)
    return rows


def benchmark_rows(spec: TagBenchSpec, out: Path) -> list[dict[str, Any]]:
    """scripts/benchmark.py with the shipped served cell at c32, on the same sentences."""
    sentences = spec.sentences or benchmark.default_sentences()
    args = [
        "--models",
        ",".join(spec.models),
        "--limit",
        str(spec.limit),
        "--precisions",
        "ort-fp32",
        "--batch-sizes",
        "8",
        "--delays",
        "5",
        "--workers",
        "2",
        "--threads",
        "1",
        "--concurrency",
        "32",
        "--no-seed",
        "--out",
        str(out / "benchmark"),
    ] + (["--sentences", str(sentences)] if sentences else [])
    print(f"tag_corpus_bench: scripts/benchmark.py {' '.join(args)}", file=sys.stderr)
    done = subprocess.run([sys.executable, str(BENCHMARK), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise benchmark.BenchError(f"scripts/benchmark.py: {done.stderr[-2000:]}")
    report = json.loads((out / "benchmark" / "results.json").read_text(encoding="utf-8"))
    return [
        {
            "model": r["model"],
            "way": "benchmark.py served",
            "config": "ort-fp32 b8 d5 2 x 1, c32",
            "texts": r["calls"],
            "texts_per_s": r["sentences_per_s"],
            "warm_texts_per_s": None,
            "seconds": None,
            "errors": r["errors"],
            "resent": None,
            "load1": r["load1"],
        }
        for r in report["rows"]
        if r["path"] == "served" and r["concurrency"] == 32
    ]


def memory_rows(spec: TagBenchSpec, out: Path, base_config: dict[str, Any]) -> list[dict[str, Any]]:
    """Peak RSS of an in-process job over each count of --memory-lines lines (the sentences
    over and over), with the tiny model."""
    name, mar = archive("tiny", out, base_config)
    texts = benchmark.read_sentences(spec.sentences or benchmark.default_sentences(), 0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tag-corpus-memory-") as tmp:
        for lines in spec.memory_lines:
            source = Path(tmp) / f"corpus-{lines}.txt"
            with open(source, "w", encoding="utf-8") as f:
                for i in range(lines):
                    f.write(texts[i % len(texts)] + "\n")
            print(f"tag_corpus_bench: memory, {lines} lines", file=sys.stderr)
            summary = tag(
                [str(source), str(Path(tmp) / "tagged.jsonl"), "--archive", str(mar), "--threads", "1"], sample_rss=True
            )
            rows.append(
                {
                    "model": name,
                    "way": "in-process",
                    "lines": lines,
                    "texts_per_s": summary["texts_per_s"],
                    "seconds": summary["seconds"],
                    "peak_rss_mb": summary["peak_rss_mb"],
                    "tagging_rss_mb": summary["tagging_rss_mb"],
                    "output_mb": round((Path(tmp) / "tagged.jsonl").stat().st_size / 1e6, 1),
                }
            )
            source.unlink()
    return rows


def run(spec: TagBenchSpec) -> dict[str, Any]:
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    base_config = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8")) or {}
    report: dict[str, Any] = {
        "machine": benchmark.machine(),
        "load_before": round(os.getloadavg()[0], 2),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(spec).items()},
        "rows": [],
        "memory": [],
    }
    sentences = write_sentences(spec, out)
    archives = [archive(model, out, base_config) for model in spec.models]
    for name, mar in archives:
        report["rows"] += local_rows(name, mar, sentences, spec, out)
    with tsctl.running(out / "run", out / "store", timeout=600) as server:
        for name, mar in archives:
            report["rows"] += rest_rows(server, name, mar, sentences, spec, out)
    if spec.benchmark:
        report["rows"] += benchmark_rows(spec, out)
    if spec.memory_lines:
        report["memory"] = memory_rows(spec, out, base_config)
    report["load_after"] = round(os.getloadavg()[0], 2)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        (
            f"Machine: {benchmark.describe_machine(report['machine'])}. Load average (1 min) "
            f"{report['load_before']} before, {report['load_after']} after."
        ),
        "",
        "| model | way | config | texts | texts/s | after the first chunk | seconds | errors | resent | load1 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['way']} | {r['config']} | {r['texts']} | {r['texts_per_s']} | "
            f"{benchmark.fmt(r['warm_texts_per_s'])} | "
            f"{benchmark.fmt(r['seconds'])} | {r['errors']} | {benchmark.fmt(r['resent'])} | {r['load1']} |"
        )
    if report["memory"]:
        lines += [
            "",
            "| model | way | lines | texts/s | seconds | peak RSS MB | RSS while tagging, MB (min-max) | output MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in report["memory"]:
            lines.append(
                f"| {m['model']} | {m['way']} | {m['lines']} | {m['texts_per_s']} | {m['seconds']} | "
                f"{m['peak_rss_mb']} | {m['tagging_rss_mb'][0]}-{m['tagging_rss_mb'][1]} | {m['output_mb']} |"
            )
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path
