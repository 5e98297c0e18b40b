"""Benchmark Korean NER serving against the model's own ceiling and the tutorial's path.

One run, one machine, for each model of --models:
  ceiling  in-process, at batch 1 and at each served batch size, on the same sentences:
           "forward" is the model's forward pass alone (texts tokenised beforehand),
           "predict" is ner_core.predict (tokenise, window, sort and split, forward);
  seed     the tutorial's inference_fn (bench/seed_handler.py: pure-Python tokenizer,
           padding to 64, one sentence per call), in-process and behind TorchServe, batch 1;
  served   this project's handler behind TorchServe over batch size x max batch delay x
           workers, at each client concurrency, keep-alive clients (a requests.Session each).
Every cell runs --repeats rounds of whole passes over the sentences (at least --min-seconds
each): sentences/s is the median round, latency percentiles pool every call of every round.
Ratios: served / ceiling "forward" of the same precision and batch size, and served / seed
path served at the same concurrency. Precisions: fp32 and bf16 (a GPU, or a CPU with
AVX512-BF16/AMX) on torch, ort-fp32 and ort-int8 on ONNX Runtime (handler setting runtime: onnxruntime; the
ONNX files are exported next to the staged weights once). --accuracy adds every precision
against torch fp32 on the validation corpus (token-tag agreement, entity F1) for trained models.
Writes results.json and results.md to --out, which also holds the staged models, archives and
TorchServe's run dir. --rejudge RESULTS_JSON measures nothing: it recomputes a saved run's ratios
and target verdicts with this version of the script and rewrites that run's two files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

import ner_core
import ner_cpu
import ner_model
from drills.load import Round, http_load, summarise, timed_calls
from ner_settings import HandlerSettings
from serving import corpus, package_model, paths, tsctl
from serving.package_model import PackageSpec
from serving.retry import retry
from study import make_checkpoint

SEED_HANDLER = Path(__file__).with_name(
    "seed_handler.py"
)  # the tutorial's handler, archived with the label names alone
SEED_CODE = [SEED_HANDLER, paths.HANDLER_DIR / "ner_labels.py"]
PRECISIONS = {  # handler settings of each precision; bf16 needs a GPU or AVX512-BF16/AMX
    "fp32": {"runtime": "torch", "quantize": "none", "dtype": "float32"},
    "bf16": {"runtime": "torch", "quantize": "none", "dtype": "bfloat16"},
    "ort-fp32": {"runtime": "onnxruntime", "quantize": "none", "dtype": "float32"},
    "ort-int8": {"runtime": "onnxruntime", "quantize": "int8", "dtype": "float32"},
}
SEED_CONFIG = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 1,
    "maxBatchDelay": 100,
    "responseTimeout": 120,
    "startupTimeout": 300,
}
BUILTIN_SENTENCES = list(corpus.SAMPLE_SENTENCES)  # used when the KMOU corpus is absent


class BenchError(RuntimeError):
    """A benchmark input is missing or cannot work; the CLI prints it and exits 1."""


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark run (the CLI's flags, one field each; see scripts/benchmark.py)."""

    models: list[str] = field(default_factory=lambda: ["demo", "bert-base"])
    sentences: Path | None = None  # None: the built-in set
    limit: int = 96
    precisions: list[str] = field(default_factory=lambda: ["ort-fp32", "ort-int8"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8])
    delays: list[int] = field(default_factory=lambda: [5])
    workers: list[int] = field(default_factory=lambda: [1])
    threads: list[int] = field(default_factory=list)  # intra-op threads per worker; empty: cores // workers
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    repeats: int = 3
    min_seconds: float = 2.0
    cores: int = os.cpu_count() or 1
    model_config: Path = paths.MODEL_CONFIG
    seed: bool = True  # also the tutorial's path
    serve: bool = True  # False: in-process only, no TorchServe
    accuracy: bool = False
    corpus: Path = paths.SHARED_DATA / "val.txt"
    rebuild: bool = False
    out: Path = paths.RUN_DIR / "bench"
    rejudge: Path | None = None


# --------------------------------------------------------------------------- inputs


def default_sentences() -> Path | None:
    val = paths.SHARED_DATA / "val.txt"
    return val if val.is_file() else None


def read_sentences(path: Path | None, limit: int = 0) -> list[str]:
    """Plain sentences, in file order: a ratsnlp line keeps its part before U+241E."""
    texts = list(BUILTIN_SENTENCES) if path is None else corpus.plain_sentences(path)
    if not texts:
        raise BenchError(f"no sentences in {path}")
    return texts[:limit] if limit else texts


def _up_to_date(target: Path, source: Path) -> bool:
    """``target`` exists and is newer than ``source`` (a file, or every file of a directory)."""
    files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
    return target.is_file() and all(target.stat().st_mtime >= f.stat().st_mtime for f in files)


def prepare_model(spec: str, out: Path, rebuild: bool = False) -> tuple[str, Path]:
    """'demo', a make_checkpoint shape ('bert-base', 'tiny') or a checkpoint path ->
    (name, model directory staged by the normal packaging, as the handler sees it)."""
    if spec == "demo":
        name, source = "demo", paths.DEMO_MODEL_DIR
        if not paths.demo_model_available():
            raise BenchError(
                f"{source}/model.safetensors not found: train the demo model or leave 'demo' out of --models"
            )
    elif spec in make_checkpoint.SHAPES:  # random weights cost the same compute as trained ones
        name, source = spec, out / "models" / f"{spec}-ckpt"
        if rebuild or not any(source.glob("*.ckpt")):
            make_checkpoint.write_checkpoint(source, shape=spec)
    else:
        source = Path(spec)
        if not source.exists():
            raise BenchError(
                f"--models: {spec} is neither demo, {sorted(make_checkpoint.SHAPES)} nor a checkpoint path"
            )
        name = (source if source.is_dir() else source.parent).name
    staged = out / "models" / name
    if rebuild or not _up_to_date(staged / "model.safetensors", source):
        staged.mkdir(parents=True, exist_ok=True)
        package_model.stage(PackageSpec(source), staged)
    return name, staged


def archive_name(model: str, variant: str) -> str:
    return f"{model}_{variant}".replace("-", "_")


def build_archive(store: Path, name: str, staged: Path, config: dict, seed: bool = False) -> str:
    """``<name>.mar`` in ``store`` (file name returned), rebuilt only when the weights, the
    model config or the handler code changed: a BERT-base archive takes a minute to write."""
    code = SEED_CODE if seed else package_model.handler_files()
    weights = (staged / "model.safetensors").stat()
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for path in code:
        digest.update(path.read_bytes())
    digest.update(f"{weights.st_size}:{weights.st_mtime_ns}".encode())
    mar, stamp = store / f"{name}.mar", store / f"{name}.fingerprint"
    if mar.is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return mar.name
    store.mkdir(parents=True, exist_ok=True)
    config_path = package_model.write_model_config(config, store / f"{name}.yaml")
    if seed:
        archive_seed(store, name, staged, config_path)
    else:
        package_model.package(
            PackageSpec(
                staged, name=name, model_config=config_path, export_path=store, force=True, accuracy_corpus=None
            )
        )
    stamp.write_text(digest.hexdigest())
    return mar.name


def archive_seed(store: Path, name: str, staged: Path, config_path: Path) -> None:
    """The tutorial's handler around the same staged weights (package_model packs ours)."""
    extra = [staged / n for n in ("config.json", "vocab.txt", "label_map.txt")] + SEED_CODE[1:]
    package_model.run_archiver(name, "1.0", SEED_HANDLER, staged / "model.safetensors", extra, config_path, store)


def with_handler(base: dict, **handler: Any) -> dict:
    """The model config ``base`` with some ``handler:`` settings replaced."""
    return {**base, "handler": {**(base.get("handler") or {}), **handler}}


# --------------------------------------------------------------------------- measuring


def row(model: str, path: str, precision: str, stats: dict, **config: Any) -> dict[str, Any]:
    keys = ("batch", "delay_ms", "workers", "threads", "concurrency")
    return {
        "model": model,
        "path": path,
        "precision": precision,
        **{k: config.get(k) for k in keys},
        **stats,
        "load1": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- the three paths


@dataclass
class Plan:
    sentences: list[str]
    precisions: list[str]
    batch_sizes: list[int]
    delays: list[int]
    workers: list[int]
    concurrency: list[int]
    repeats: int
    min_seconds: float
    cores: int
    base_config: dict
    thread_counts: list[int] = field(default_factory=list)  # empty: cores // workers

    def settings(self, precision: str, threads: int) -> HandlerSettings:
        handler = with_handler(self.base_config, **PRECISIONS[precision], torch_threads=threads)["handler"]
        return HandlerSettings.from_mapping(handler)

    def load(self, staged: Path, precision: str, threads: int) -> ner_model.NerModel:
        """The staged model in-process, exporting its ONNX file first where the precision needs one."""
        settings = self.settings(precision, threads)
        onnx = staged / ner_model.weights_file(settings)
        if settings.runtime == "onnxruntime" and not _up_to_date(onnx, staged / "model.safetensors"):
            package_model.export_onnx(staged, settings)
        return ner_model.load_model(staged, settings)

    def threads(self, workers: int) -> int:
        """torch threads per worker so that workers x threads <= cores."""
        return max(1, self.cores // workers)

    def thread_options(self, workers: int) -> list[int]:
        """The intra-op thread counts to serve ``workers`` workers with: --threads, else cores // workers."""
        return list(self.thread_counts) or [self.threads(workers)]


def ceiling_rows(model: str, staged: Path, plan: Plan, bar: tqdm) -> list[dict]:
    """In-process: the forward pass alone, and ner_core.predict, at batch 1 and each served size."""
    rows = []
    for precision in plan.precisions:
        ner = plan.load(staged, precision, plan.cores)
        for batch in sorted({1, *plan.batch_sizes}):
            chunks = [plan.sentences[i : i + batch] for i in range(0, len(plan.sentences), batch)]
            windows = [ner_core.window_rows(ner_core.encode(ner, c))[0] for c in chunks]
            cells: dict[str, tuple[Callable[[Any], Any], Sequence[tuple[int, Any]]]] = {
                "forward": (
                    functools.partial(ner_core.forward_distributions, ner),
                    [(len(c), w) for c, w in zip(chunks, windows, strict=True)],
                ),
                "predict": (functools.partial(ner_core.predict, ner), [(len(c), c) for c in chunks]),
            }
            for path, (call, items) in cells.items():
                bar.set_description(f"{model} ceiling {path} {precision} b{batch}")
                timed_calls(call, items[:2], 0)  # warm-up: first calls of a shape are slow
                stats = summarise([timed_calls(call, items, plan.min_seconds) for _ in range(plan.repeats)])
                rows.append(row(model, f"ceiling-{path}", precision, stats, batch=batch, threads=plan.cores))
                bar.update()
        del ner
    return rows


def seed_inprocess_row(model: str, staged: Path, plan: Plan, bar: tqdm) -> dict:
    from bench import seed_handler  # imports TorchServe's BaseHandler: only where the seed path runs

    torch.set_num_threads(plan.cores)
    inference_fn = seed_handler.load_seed(staged)
    items = [(1, s) for s in plan.sentences]
    bar.set_description(f"{model} seed in-process")
    timed_calls(inference_fn, items[:2], 0)
    stats = summarise([timed_calls(inference_fn, items, plan.min_seconds) for _ in range(plan.repeats)])
    bar.update()
    return row(model, "seed-inprocess", "fp32", stats, batch=1, threads=plan.cores)


def register_with_retry(server: tsctl.Server, mar: str, workers: int, batch: int, delay: int, attempts: int = 3) -> str:
    """TorchServe gives a worker process a fixed 2 minutes to start (WorkerLifeCycle.java,
    not startupTimeout): on a CPU shared with other load that can fail, so try again."""
    return retry(
        lambda: tsctl.register(server, mar, workers=workers, batch_size=batch, max_batch_delay=delay, timeout=600),
        attempts,
        errors=(tsctl.TsError,),
        error_reason=str,
        on_retry=lambda err, attempt: print(
            f"benchmark: warning: {err}; trying again ({attempt}/{attempts - 1})", file=sys.stderr
        ),
    )


def served_rows(
    server: tsctl.Server,
    model: str,
    mar: str,
    plan: Plan,
    bar: tqdm,
    path: str,
    precision: str,
    batch: int,
    delay: int,
    workers: int,
    threads: int | None = None,
) -> list[dict]:
    """Register ``mar`` with one batching config, measure every concurrency, unregister."""
    name = register_with_retry(server, mar, workers, batch, delay)
    try:
        warm = http_load(server, name, plan.sentences[: 2 * workers], workers, 0)  # each worker's first batches
        if warm.errors:
            raise BenchError(
                f"{name}: {warm.errors} of {len(warm.latencies)} warm-up requests failed; see {server.run_dir / 'logs'}"
            )
        rounds: dict[int, list[Round]] = {c: [] for c in plan.concurrency}
        for _ in range(plan.repeats):  # rounds interleaved, so a burst of outside load hits all alike
            for conc in plan.concurrency:
                bar.set_description(f"{model} {path} {precision} b{batch} d{delay} w{workers}x{threads or ''} c{conc}")
                rounds[conc].append(http_load(server, name, plan.sentences, conc, plan.min_seconds))
        bar.update(len(plan.concurrency))
    finally:
        tsctl.unregister(server, name)
    return [
        row(
            model,
            path,
            precision,
            summarise(rounds[conc]),
            batch=batch,
            delay_ms=delay,
            workers=workers,
            threads=(threads or plan.threads(workers)) if path == "served" else plan.cores,
            concurrency=conc,
        )
        for conc in plan.concurrency
    ]


def count_cells(plan: Plan, seed: bool, serve: bool) -> int:
    ceilings = 2 * len(plan.precisions) * len({1, *plan.batch_sizes})
    seeds = (1 + (len(plan.concurrency) if serve else 0)) if seed else 0
    layouts = sum(len(plan.thread_options(w)) for w in plan.workers)
    served = len(plan.precisions) * len(plan.batch_sizes) * len(plan.delays) * layouts * len(plan.concurrency)
    return ceilings + seeds + (served if serve else 0)


def benchmark_model(
    spec: str, plan: Plan, out: Path, server: tsctl.Server | None, seed: bool, bar: tqdm, rebuild: bool = False
) -> tuple[str, list[dict]]:
    name, staged = prepare_model(spec, out, rebuild)
    rows = ceiling_rows(name, staged, plan, bar)
    if seed:
        rows.append(seed_inprocess_row(name, staged, plan, bar))
    if server is None:
        return name, rows
    store = out / "store"
    if seed:
        mar = build_archive(store, archive_name(name, "seed"), staged, SEED_CONFIG, seed=True)
        rows += served_rows(server, name, mar, plan, bar, "seed-served", "fp32", 1, SEED_CONFIG["maxBatchDelay"], 1)
    for precision in plan.precisions:
        for workers in plan.workers:
            for threads in plan.thread_options(workers):
                config = with_handler(
                    {**plan.base_config, "minWorkers": workers, "maxWorkers": workers},
                    **PRECISIONS[precision],
                    torch_threads=threads,
                )
                mar = build_archive(store, archive_name(name, f"{precision}_w{workers}t{threads}"), staged, config)
                for batch in plan.batch_sizes:
                    for delay in plan.delays:
                        rows += served_rows(
                            server, name, mar, plan, bar, "served", precision, batch, delay, workers, threads
                        )
    return name, rows


# --------------------------------------------------------------------------- accuracy


def accuracy_rows(model: str, staged: Path, corpus_path: Path, plan: Plan, limit: int = 0) -> list[dict[str, Any]]:
    """Each precision of the plan but fp32 against torch fp32 on a tagged corpus: token-tag
    agreement over every wordpiece, and entity F1 (exact character spans, as served) against
    the gold markup."""
    examples, _ = corpus.read_corpus(corpus_path)
    examples = examples[:limit] if limit else examples
    texts = [ex.text for ex in examples]
    encoded = None
    labels, f1 = {}, {}
    cpu_bf16 = ner_cpu.has_bf16()
    variants = [p for p in plan.precisions if p != "fp32" and (p != "bf16" or cpu_bf16)] or ["ort-int8"]
    for precision in ("fp32", *variants):
        ner = plan.load(staged, precision, plan.cores)
        encoded = encoded or corpus.encode(examples, ner.tokenizer)
        labels[precision] = [p.label_ids for p in ner_core.predict(ner, texts)]
        f1[precision] = corpus.evaluate(ner, examples, encoded)["char"]["overall"]["f1"]
    rows = []
    for precision in variants:
        pairs = [
            (a, b)
            for ref, got in zip(labels["fp32"], labels[precision], strict=True)
            for a, b in zip(ref, got, strict=True)
        ]
        rows.append(
            {
                "model": model,
                "precision": precision,
                "sentences": len(texts),
                "tokens": len(pairs),
                "token_tag_agreement": round(sum(a == b for a, b in pairs) / len(pairs), 5),
                "entity_f1_fp32": round(f1["fp32"], 4),
                "entity_f1": round(f1[precision], 4),
                "f1_loss_points": round(100 * (f1["fp32"] - f1[precision]), 2),
            }
        )
    return rows


# --------------------------------------------------------------------------- report


def find(rows: Sequence[dict], **where: Any) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def add_ratios(rows: list[dict]) -> None:
    """served / ceiling forward (same model, precision, batch) and / seed served (same concurrency);
    ceilings / seed in-process."""
    for r in rows:
        if r["path"] == "served":
            ceiling = find(rows, model=r["model"], path="ceiling-forward", precision=r["precision"], batch=r["batch"])
            seed = find(rows, model=r["model"], path="seed-served", concurrency=r["concurrency"])
        elif r["path"].startswith("ceiling"):
            ceiling, seed = None, find(rows, model=r["model"], path="seed-inprocess")
        else:
            ceiling = seed = None
        r["vs_ceiling"] = round(r["sentences_per_s"] / ceiling["sentences_per_s"], 3) if ceiling else None
        r["vs_seed"] = round(r["sentences_per_s"] / seed["sentences_per_s"], 2) if seed else None


def default_cell(base_config: dict, cores: int, device: str = "cpu") -> dict[str, Any]:
    """The served cell the shipped model config makes on ``device``: its precision (what
    ``runtime: auto`` resolves to there), batch size, delay, workers and threads."""
    settings = HandlerSettings.from_mapping(base_config.get("handler"))
    runtime = ner_model.serving_runtime(settings, torch.device(device))
    wanted = {"runtime": runtime, "quantize": settings.quantize, "dtype": settings.dtype}
    workers = int(base_config.get("minWorkers", 1))
    return {
        "precision": next((p for p, v in PRECISIONS.items() if v == wanted), None),
        "batch": int(base_config.get("batchSize", 1)),
        "delay_ms": int(base_config.get("maxBatchDelay", 100)),
        "workers": workers,
        "threads": settings.torch_threads or max(1, cores // workers),
    }


OPT_IN = ("ort-int8", "bf16")  # the lossy precisions a user chooses explicitly


def default_and_opt_in_targets(rows: Sequence[dict], accuracy: Sequence[dict], default: dict | None) -> list[dict]:
    """The bars of the fast-by-default goals: the shipped default served >= 2.5 x the tutorial's
    path, its p50 at c1 <= in-process batch-1 p50 + delay + 5 ms, and the best opt-in precision
    whose entity F1 stays within 0.5 points of fp32 (where measured) >= 10 x the tutorial's path."""
    out = []
    lossy_ok = {a["precision"]: a["f1_loss_points"] <= 0.5 for a in accuracy}
    for model in dict.fromkeys(r["model"] for r in rows):
        served = [r for r in rows if r["model"] == model and r["path"] == "served"]
        if not served:
            continue
        top = max(r["concurrency"] for r in served)

        def add(
            target: str, value: float | None, bar: float, higher: bool = True, config: str = "", model: str = model
        ) -> None:
            met = None if value is None else (value >= bar if higher else value <= bar)
            out.append({"model": model, "target": target, "value": value, "bar": bar, "met": met, "config": config})

        if default and default.get("precision"):
            cell = {k: default[k] for k in ("precision", "batch", "delay_ms", "workers", "threads")}
            name = f"{cell['precision']} b{cell['batch']} d{cell['delay_ms']} {cell['workers']} × {cell['threads']}"
            at_top = find(served, **cell, concurrency=top)
            if at_top:
                add(f"default served / seed served (c{top})", at_top["vs_seed"], 2.5, config=name)
            at_c1 = find(served, **cell, concurrency=1)
            single = find(rows, model=model, path="ceiling-predict", precision=cell["precision"], batch=1)
            if at_c1 and single:
                budget = round(single["p50_ms"] + cell["delay_ms"] + 5, 1)
                add(
                    "default p50 ms at c1 <= in-process batch-1 p50 + delay + 5",
                    at_c1["p50_ms"],
                    budget,
                    higher=False,
                    config=name,
                )
        opt_in = [
            r
            for r in served
            if r["precision"] in OPT_IN
            and r["concurrency"] == top
            and lossy_ok.get(r["precision"], True)
            and r["vs_seed"] is not None
        ]
        if opt_in:
            best = max(opt_in, key=lambda r: r["vs_seed"])
            checked = "" if best["precision"] in lossy_ok else ", accuracy not measured"
            add(
                f"best opt-in served / seed served (c{top})",
                best["vs_seed"],
                10.0,
                config=(
                    f"{best['precision']} b{best['batch']} d{best['delay_ms']} {best['workers']} × "
                    f"{best['threads']}{checked}"
                ),
            )
    return out


def target_rows(rows: Sequence[dict], accuracy: Sequence[dict], default: dict | None = None) -> list[dict]:
    """The performance targets, each against the best served config at the highest concurrency."""
    out = default_and_opt_in_targets(rows, accuracy, default)
    for model in dict.fromkeys(r["model"] for r in rows):
        served = [r for r in rows if r["model"] == model and r["path"] == "served"]
        if not served:
            continue
        top = max(r["concurrency"] for r in served)
        best = {
            p: max(
                (r for r in served if r["precision"] == p and r["concurrency"] == top),
                key=lambda r: r["sentences_per_s"],
                default=None,
            )
            for p in PRECISIONS
        }

        def add(
            target: str,
            value: float | None,
            bar: float,
            higher: bool = True,
            where: dict | None = None,
            model: str = model,
        ) -> None:
            met = None if value is None else (value >= bar if higher else value <= bar)
            cfg = f"b{where['batch']} d{where['delay_ms']} w{where['workers']}" if where else ""
            out.append({"model": model, "target": target, "value": value, "bar": bar, "met": met, "config": cfg})

        for p in ("fp32", "ort-fp32"):  # each runtime against its own ceiling
            row = best[p]
            if row is None:
                continue
            add(f"served {p} / ceiling forward {p} (c{top})", row["vs_ceiling"], 0.85, where=row)
            add(f"served {p} / seed served (c{top})", row["vs_seed"], 1.5, where=row)
            # Latency: the in-process single-sentence time runs on all threads, so compare the
            # served layout that gives a lone request as many (1 worker x all threads), at the
            # best config's batch and delay; a run without that layout falls back to the best.
            single = find(rows, model=model, path="ceiling-predict", precision=p, batch=1)
            at_c1 = {"precision": p, "batch": row["batch"], "delay_ms": row["delay_ms"], "concurrency": 1}
            c1 = single and (
                find(served, **at_c1, workers=1, threads=single["threads"])
                or find(served, **at_c1, workers=row["workers"])
            )
            if c1 and single:
                budget = round(single["p50_ms"] + row["delay_ms"] + 5, 1)
                add(
                    f"served {p} p50 ms at c1 <= single-sentence predict + delay + 5",
                    c1["p50_ms"],
                    budget,
                    higher=False,
                    where=c1,
                )
        if best["ort-int8"] is not None:
            add(f"served ort-int8 / seed served (c{top})", best["ort-int8"]["vs_seed"], 5.0, where=best["ort-int8"])
    for acc in accuracy:
        if not acc["precision"].endswith("int8"):
            continue  # ort-fp32 agreement is reported in the accuracy table, not a target
        out.append(
            {
                "model": acc["model"],
                "target": f"{acc['precision']} token-tag agreement with fp32",
                "value": acc["token_tag_agreement"],
                "bar": 0.99,
                "met": acc["token_tag_agreement"] >= 0.99,
                "config": "",
            }
        )
        out.append(
            {
                "model": acc["model"],
                "target": f"{acc['precision']} entity F1 loss (points)",
                "value": acc["f1_loss_points"],
                "bar": 0.5,
                "met": acc["f1_loss_points"] <= 0.5,
                "config": "",
            }
        )
    return out


LIBRARIES = ("torch", "onnxruntime", "transformers", "openvino")  # versions recorded when installed


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that decide the speed (absent ones left out)."""
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine(cpuinfo: str | None = None) -> dict[str, Any]:
    """The machine a run measured: CPU model and the features that pick the fast path, cores,
    memory, library versions."""
    cpuinfo = ner_cpu.cpuinfo_text() if cpuinfo is None else cpuinfo
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").is_file() else ""
    mem_kb = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    return {
        "cpu": ner_cpu.cpu_model(cpuinfo),
        "features": ner_cpu.cpu_features(ner_cpu.cpu_flags(cpuinfo)),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "libraries": library_versions(),
    }


def describe_machine(m: dict[str, Any]) -> str:
    """One line naming the machine (also for reports written before features were recorded)."""
    features = f" ({ner_cpu.describe(m['features'])})" if m.get("features") else ""
    libraries = m.get("libraries") or {k: m[k] for k in ("torch", "transformers") if k in m}
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return f"{m['cpu']}{features}, {m['cores']} cores, {m['memory_gib']} GiB{gpu}; " + ", ".join(
        f"{k} {v}" for k, v in libraries.items()
    )


def fmt(value: Any) -> str:
    return "" if value is None else str(value)


def markdown(report: dict) -> str:
    lines = [
        (
            f"Machine: {describe_machine(report['machine'])}. "
            f"Load average (1 min) {report['load_before']} before, {report['load_after']} after; "
            f"{report['sentence_count']} sentences from {report['sentences']}; {report['repeats']} rounds per cell, "
            f"each at least {report['min_seconds']} s of whole passes."
        ),
        "",
        (
            "| model | path | precision | batch | delay ms | workers × threads | concurrency "
            "| sentences/s | p50 ms | p95 ms | p99 ms | errors | ÷ ceiling | ÷ seed |"
        ),
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        wt = f"{r['workers']} × {r['threads']}" if r["workers"] else f"in-process × {r['threads']}"
        lines.append(
            f"| {r['model']} | {r['path']} | {r['precision']} | {fmt(r['batch'])} | {fmt(r['delay_ms'])} | {wt} | "
            f"{fmt(r['concurrency'])} | {r['sentences_per_s']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | "
            f"{r['errors']} | {fmt(r['vs_ceiling'])} | {fmt(r['vs_seed'])} |"
        )
    if report["targets"]:
        lines += ["", "| model | target | measured | bar | met | config |", "|---|---|---:|---:|---|---|"]
        for t in report["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['model']} | {t['target']} | {fmt(t['value'])} | {t['bar']} | {met} | {t['config']} |")
    if report["accuracy"]:
        lines += [
            "",
            (
                "| model | precision | sentences | wordpieces | token-tag agreement with fp32 | "
                "entity F1 fp32 | entity F1 | F1 loss (points) |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for a in report["accuracy"]:
            lines.append(
                f"| {a['model']} | {a['precision']} | {a['sentences']} | {a['tokens']} | {a['token_tag_agreement']} | "
                f"{a['entity_f1_fp32']} | {a['entity_f1']} | {a['f1_loss_points']} |"
            )
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "results.json", out / "results.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown(report), encoding="utf-8")
    return json_path, md_path


def run(args: BenchSpec) -> dict[str, Any]:
    """Measure every cell of the plan (and the accuracy): the report, ratios and targets included."""
    specs = list(args.models)
    if "demo" in specs and not paths.demo_model_available():
        print(
            f"benchmark: warning: {paths.DEMO_MODEL_DIR} has no model.safetensors yet; skipping 'demo'", file=sys.stderr
        )
        specs.remove("demo")
    if not specs:
        raise BenchError("no model to benchmark")
    if "bf16" in args.precisions and not (torch.cuda.is_available() or ner_cpu.has_bf16()):
        raise BenchError("--precisions bf16 needs a CUDA device or a CPU with AVX512-BF16 or AMX")
    base_config = yaml.safe_load(args.model_config.read_text(encoding="utf-8")) or {}
    plan = Plan(
        read_sentences(args.sentences, args.limit),
        args.precisions,
        args.batch_sizes,
        args.delays,
        args.workers,
        args.concurrency,
        args.repeats,
        args.min_seconds,
        args.cores,
        base_config,
        list(args.threads),
    )
    report: dict[str, Any] = {
        "machine": machine(),
        "load_before": round(os.getloadavg()[0], 2),
        "sentences": str(args.sentences or "built-in set"),
        "sentence_count": len(plan.sentences),
        "repeats": args.repeats,
        "min_seconds": args.min_seconds,
        "default": default_cell(base_config, args.cores),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(args).items()},
        "rows": [],
        "accuracy": [],
    }
    print(f"benchmark: machine: {describe_machine(report['machine'])}; load average {os.getloadavg()}", file=sys.stderr)
    run_dir, store = args.out / "run", args.out / "store"
    store.mkdir(parents=True, exist_ok=True)
    serving = tsctl.running(run_dir, store, timeout=600) if args.serve else contextlib.nullcontext()
    with (
        serving as server,
        tqdm(total=len(specs) * count_cells(plan, args.seed, args.serve), unit="cell", mininterval=1) as bar,
    ):
        for spec in specs:
            name, rows = benchmark_model(spec, plan, args.out, server, args.seed, bar, args.rebuild)
            report["rows"] += rows
            if args.accuracy and spec not in make_checkpoint.SHAPES:
                if not args.corpus.is_file():
                    raise BenchError(f"--accuracy needs the tagged corpus {args.corpus}")
                bar.set_description(f"{name} accuracy vs fp32")
                report["accuracy"] += accuracy_rows(name, args.out / "models" / name, args.corpus, plan)
    add_ratios(report["rows"])
    report["targets"] = target_rows(report["rows"], report["accuracy"], report["default"])
    report["load_after"] = round(os.getloadavg()[0], 2)
    return report


def rejudge(path: Path) -> dict[str, Any]:
    """A saved report with its ratios and targets recomputed by this version of the script."""
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        add_ratios(report["rows"])
        report["targets"] = target_rows(report["rows"], report["accuracy"], report.get("default"))
        markdown(report)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BenchError(f"{path} is not a benchmark results.json: {err}") from err
    return report
