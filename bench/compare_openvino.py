"""OpenVINO beside ONNX Runtime, in-process, on the handler's own compute path.

OpenVINO is not one of the handler's runtimes, and not in requirements.txt: TorchServe 0.12's
``base_handler`` imports ``openvino.torch`` whenever OpenVINO is installed, so installing it into
the serving environment changes every worker. This measures whether adopting it would pay:
``ner_core.predict`` (tokenise, window, batch, forward, as served) with the model swapped for

- ``ort-fp32`` / ``ort-int8``: ONNX Runtime on ``model.onnx`` / ``model.int8.onnx`` (what the
  handler serves: ``runtime: auto`` on a CPU, ``quantize: int8``);
- ``ov-fp32``: OpenVINO on the same ``model.onnx``, inference precision forced to f32 (OpenVINO
  runs f32 models in bf16 on CPUs with AVX512-BF16 or AMX unless told not to);
- ``ov-bf16``: the same with OpenVINO's default precision on such a CPU (bf16);
- ``ov-int8``: NNCF's post-training int8 quantization (``nncf.quantize``, transformer preset,
  calibrated on train sentences) of the OpenVINO model: the path behind OpenVINO's published
  BERT int8 figures.

Each cell: batch 1 and ``--batch-size``, every engine on ``--threads`` threads, ``--repeats``
rounds over the same sentences, median sentences/s and the p50 of one call. With a tagged corpus
(``--corpus``) and a trained model: token-tag agreement with torch fp32 and entity F1 on it.
Install OpenVINO beside the project, not into its venv, and put it on the path for this run only:

    pip install --target var/openvino openvino==2026.4.1 nncf==3.4.0
    PYTHONPATH=var/openvino python scripts/compare_openvino.py --models demo,bert-base
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers.modeling_outputs import TokenClassifierOutput

import ner_core
import ner_model
from bench import benchmark
from drills.load import summarise, timed_calls
from ner_settings import HandlerSettings
from serving import agreement, corpus, package_model, paths
from study import make_checkpoint

ENGINES = ("ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
OPENVINO_INSTALL = "pip install --target var/openvino openvino==2026.4.1 nncf==3.4.0, then PYTHONPATH=var/openvino"


class CompareError(RuntimeError):
    """A run that cannot measure what it was asked (OpenVINO missing, bf16 on a CPU without it)."""


@dataclass(frozen=True)
class CompareSpec:
    """One comparison run (the CLI's flags, one field each)."""

    models: tuple[str, ...] = ("demo", "bert-base")
    engines: tuple[str, ...] = ENGINES
    sentences: Path | None = None  # default: KMOU val.txt when present, else built-in sentences
    limit: int = 96
    batch_size: int = 8
    threads: int = 2
    repeats: int = 3
    min_seconds: float = 5.0
    calibration: int = 100  # train sentences for ov-int8's calibration
    corpus: Path | None = None  # tagged val.txt for accuracy (trained models only); None: skip
    out: Path = paths.RUN_DIR / "openvino"


class OpenVinoTokenClassifier:
    """An OpenVINO compiled model called like the transformers model (``.logits``)."""

    device = torch.device("cpu")

    def __init__(self, compiled: Any):
        self.request = compiled.create_infer_request()

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> TokenClassifierOutput:
        feed = {
            "input_ids": input_ids.numpy(),
            "attention_mask": attention_mask.numpy(),
            "token_type_ids": token_type_ids.numpy(),
        }
        logits = self.request.infer(feed)[0]
        return TokenClassifierOutput(logits=torch.from_numpy(logits.copy()))


def import_openvino() -> tuple[Any, Any]:
    try:
        import nncf
        import openvino
    except ImportError as err:
        raise CompareError(
            f"OpenVINO is not importable ({err}); install it beside the project: {OPENVINO_INSTALL}"
        ) from err
    return openvino, nncf


def calibration_feeds(ner: ner_model.NerModel, texts: Sequence[str]) -> list[dict[str, Any]]:
    """One input dict per sentence window, as the handler would feed the model."""
    feeds = []
    for rows in (ner_core.window_rows(ner_core.encode(ner, [t]))[0] for t in texts):
        for row in rows:
            ids = torch.tensor([[ner.cls_id, *row, ner.sep_id]])
            feeds.append(
                {
                    "input_ids": ids.numpy(),
                    "attention_mask": torch.ones_like(ids).numpy(),
                    "token_type_ids": torch.zeros_like(ids).numpy(),
                }
            )
    return feeds


def load_engines(
    staged: Path, spec: CompareSpec, calibration: Sequence[str], bar: tqdm
) -> dict[str, ner_model.NerModel]:
    """Each engine of ``spec`` as a NerModel over the staged model (ONNX files exported once)."""
    settings = {"ort-fp32": HandlerSettings(runtime="onnxruntime", torch_threads=spec.threads)}
    settings["ort-int8"] = dataclasses.replace(settings["ort-fp32"], quantize="int8")
    engines: dict[str, ner_model.NerModel] = {}
    for name, ort in settings.items():
        if not (staged / ner_model.weights_file(ort)).is_file():
            bar.set_description(f"exporting {ner_model.weights_file(ort)}")
            package_model.export_onnx(staged, ort)
        if name in spec.engines:
            engines[name] = ner_model.load_model(staged, ort)
    fp32 = engines.get("ort-fp32") or ner_model.load_model(staged, settings["ort-fp32"])
    wanted = [e for e in spec.engines if e.startswith("ov-")]
    if not wanted:
        return engines
    ov, nncf = import_openvino()
    core = ov.Core()
    if "ov-bf16" in wanted and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise CompareError("ov-bf16: this CPU has no bf16 instructions (OpenVINO lists no BF16 capability)")
    model = core.read_model(str(staged / "model.onnx"))
    base_config = {"INFERENCE_NUM_THREADS": spec.threads, "PERFORMANCE_HINT": "LATENCY"}
    compile_config = {
        "ov-fp32": (model, {**base_config, "INFERENCE_PRECISION_HINT": "f32"}),
        "ov-bf16": (model, {**base_config, "INFERENCE_PRECISION_HINT": "bf16"}),
    }
    if "ov-int8" in wanted:
        bar.set_description(f"ov-int8: calibrating on {len(calibration)} train sentences")
        quantized = nncf.quantize(
            model,
            nncf.Dataset(calibration_feeds(fp32, calibration)),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
        compile_config["ov-int8"] = (quantized, base_config)
    for name in wanted:
        source, config = compile_config[name]
        engines[name] = dataclasses.replace(
            fp32, model=OpenVinoTokenClassifier(core.compile_model(source, "CPU", config))
        )
    return {e: engines[e] for e in spec.engines}


def speed_rows(
    model: str, engines: dict[str, ner_model.NerModel], spec: CompareSpec, texts: Sequence[str], bar: tqdm
) -> list[dict]:
    rows = []
    for name, ner in engines.items():
        for batch in sorted({1, spec.batch_size}):
            chunks = [(len(c), c) for c in (texts[i : i + batch] for i in range(0, len(texts), batch))]
            call = functools.partial(ner_core.predict, ner)
            bar.set_description(f"{model} {name} batch {batch}")
            timed_calls(call, chunks, 0)  # warm-up pass: OpenVINO compiles kernels for each new input shape
            stats = summarise([timed_calls(call, chunks, spec.min_seconds) for _ in range(spec.repeats)])
            rows.append({"model": model, "engine": name, "batch": batch, "threads": spec.threads, **stats})
            bar.update()
    return rows


def accuracy_rows(model: str, staged: Path, engines: dict[str, ner_model.NerModel], corpus_path: Path) -> list[dict]:
    """Against torch fp32 on the tagged corpus (``agreement.compare``, as packaging measures):
    token-tag agreement and entity F1 (exact characters)."""
    examples, _ = corpus.read_corpus(corpus_path)
    reference = ner_model.load_model(staged, HandlerSettings(runtime="torch"))
    rows = []
    for name, ner in engines.items():
        found = agreement.compare(reference, ner, [ex.text for ex in examples], gold=examples)
        loss = found.f1_loss_points
        assert found.gold_f1 is not None and found.gold_f1_fp32 is not None and loss is not None  # gold was given
        rows.append(
            {
                "model": model,
                "engine": name,
                "sentences": found.texts,
                "token_tag_agreement": round(found.rate, 5),
                "entity_f1_torch_fp32": round(found.gold_f1_fp32, 4),
                "entity_f1": round(found.gold_f1, 4),
                "f1_loss_points": round(loss, 2),
            }
        )
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each cell's sentences/s over ONNX Runtime's of the same precision class and batch (fp32 and
    bf16 over ort-fp32, int8 over ort-int8): the margin OpenVINO would have to win by."""
    for r in rows:
        base = "ort-int8" if r["engine"].endswith("int8") else "ort-fp32"
        ref = next(
            (x for x in rows if x["model"] == r["model"] and x["engine"] == base and x["batch"] == r["batch"]), None
        )
        r["vs_onnxruntime"] = round(r["sentences_per_s"] / ref["sentences_per_s"], 2) if ref else None
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"Machine: {benchmark.describe_machine(report['machine'])}",
        f"Load average before / after: {report['load_before']} / {report['load_after']}",
        "",
        "| model | engine | batch | sentences/s | rounds | p50 per call | ÷ ONNX Runtime, same precision |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    lines += [
        (
            f"| {r['model']} | {r['engine']} | {r['batch']} | {r['sentences_per_s']} | "
            f"{r['rounds']} | {r['p50_ms']} ms | {r['vs_onnxruntime']} |"
        )
        for r in report["speed"]
    ]
    if report["accuracy"]:
        lines += [
            "",
            "| model | engine | token-tag agreement with torch fp32 | entity F1 | torch fp32 | loss (points) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['model']} | {r['engine']} | {r['token_tag_agreement']} | {r['entity_f1']} "
            f"| {r['entity_f1_torch_fp32']} | {r['f1_loss_points']} |"
            for r in report["accuracy"]
        ]
    return "\n".join(lines) + "\n"


def run(spec: CompareSpec) -> dict[str, Any]:
    torch.set_num_threads(spec.threads)
    texts = benchmark.read_sentences(spec.sentences or benchmark.default_sentences(), spec.limit)
    train = paths.SHARED_DATA / "train.txt"
    calibration = (
        corpus.plain_sentences(train)[: spec.calibration] if train.is_file() else list(benchmark.BUILTIN_SENTENCES)
    )
    report: dict[str, Any] = {
        "machine": benchmark.machine(),
        "load_before": round(os.getloadavg()[0], 2),
        "spec": {k: str(v) for k, v in dataclasses.asdict(spec).items()},
        "speed": [],
        "accuracy": [],
    }
    with tqdm(
        total=len(spec.models) * len(spec.engines) * len({1, spec.batch_size}), unit="cell", file=sys.stderr
    ) as bar:
        for model_spec in spec.models:
            model, staged = benchmark.prepare_model(model_spec, spec.out)
            engines = load_engines(staged, spec, calibration, bar)
            report["speed"] += speed_rows(model, engines, spec, texts, bar)
            if spec.corpus and model_spec not in make_checkpoint.SHAPES:  # random weights: no accuracy to measure
                report["accuracy"] += accuracy_rows(model, staged, engines, spec.corpus)
    with_ratios(report["speed"])
    report["load_after"] = round(os.getloadavg()[0], 2)
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (spec.out / "results.md").write_text(markdown(report), encoding="utf-8")
    return report
