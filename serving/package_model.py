"""Package a fine-tuned Korean NER BERT into a TorchServe archive: model_store/<name>.mar.

Accepts what a ratsnlp user has:
  * a checkpoint directory of Lightning checkpoints (``epoch=2-val_loss=0.12.ckpt``; the one
    with the lowest val_loss is taken, as ratsnlp's NERDeployArguments does) or one .ckpt file,
    with ``label_map.txt`` beside it, and the pretrained model's ``config.json`` + ``vocab.txt``
    (``--pretrained``: a directory, or a Hugging Face model id found in the local cache);
  * or a Hugging Face ``save_pretrained`` directory (config.json + model.safetensors).
Checkpoints are opened with ``torch.load(weights_only=True)``: no arbitrary unpickling. The
archive holds ``model.safetensors`` (so TorchServe never unpickles anything either) and, with
the shipped ``runtime: auto``, the ONNX export a CPU worker runs (``model.onnx``, or
``model.int8.onnx`` with ``quantize: int8``); ``runtime: onnxruntime`` holds the ONNX file
alone, ``runtime: torch`` the safetensors alone. Before archiving, the staged model is loaded by
the very code TorchServe will run, with the archive's settings, and compared with torch fp32
(serving/agreement.py): ONNX Runtime fp32 must give the same tags on the sample sentences or the
archive is refused; int8 and bf16 have their tag agreement and entity F1 printed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForTokenClassification

import ner_cpu
import ner_model
import ner_onnx
from ner_settings import HandlerSettings
from serving import agreement, corpus, paths

HANDLER_ENTRY = "ner_handler.py"  # the module TorchServe loads; the other handler/*.py go beside it
VAL_LOSS = re.compile(r"val_loss=([0-9]+(?:\.[0-9]+)?)")
ARCHIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")  # a buffer older transformers saved


class PackagingError(Exception):
    """One clear line for the user; the CLI prints it and exits 1."""


@dataclass(frozen=True)
class PackageSpec:
    """What to package, and where the archive goes (the CLI's flags, one field each)."""

    checkpoint: Path  # checkpoint directory, .ckpt file, or save_pretrained directory
    pretrained: str | None = None  # directory or cached HF model id; None: the checkpoint's directory
    label_map: Path | None = None  # None: label_map.txt in the checkpoint's directory
    name: str = paths.MODEL_NAME
    version: str = "1.0"
    model_config: Path = paths.MODEL_CONFIG
    export_path: Path = paths.MODEL_STORE
    force: bool = False
    archive_name: str | None = None  # the .mar's file name (default: the model name), e.g. kor_ner-2.0
    # int8 / bf16 are measured against torch fp32 on this tagged corpus when it exists (else on
    # the built-in sample sentences); 0: all its sentences.
    accuracy_corpus: Path | None = paths.SHARED_DATA / "val.txt"
    accuracy_limit: int = 0


def handler_files() -> list[Path]:
    """The handler's modules as they go into an archive: every handler/*.py, the entry first."""
    modules = sorted(p for p in paths.HANDLER_DIR.glob("*.py") if not p.name.startswith(("test_", "_")))
    return sorted(modules, key=lambda p: p.name != HANDLER_ENTRY)


def pick_checkpoint(path: Path) -> Path:
    """A .ckpt file as given, or the lowest-val_loss .ckpt of a directory."""
    if path.is_file():
        return path
    candidates = []
    for ckpt in sorted(path.glob("*.ckpt")):
        match = VAL_LOSS.search(ckpt.name)
        if match:
            candidates.append((float(match.group(1)), ckpt.name, ckpt))
    if not candidates:
        raise PackagingError(f"no checkpoint named like 'epoch=2-val_loss=0.12.ckpt' in {path}")
    return min(candidates)[2]


def resolve_pretrained(value: str | None, default: Path) -> Path:
    """A directory with config.json and vocab.txt, or a model id in the local HF cache."""
    if value is None:
        candidate = default
    elif Path(value).is_dir():
        candidate = Path(value)
    else:
        from huggingface_hub import snapshot_download

        try:
            candidate = Path(
                snapshot_download(value, local_files_only=True, allow_patterns=["config.json", "vocab.txt"])
            )
        except Exception:  # noqa: BLE001 - huggingface_hub raises a validation, not-found or cache error, all one answer
            raise PackagingError(
                f"--pretrained {value!r} is neither a directory nor a model in the local Hugging Face cache "
                "(nothing is downloaded: copy config.json and vocab.txt into a directory and pass that)"
            ) from None
    missing = [name for name in ("config.json", "vocab.txt") if not (candidate / name).is_file()]
    if missing:
        raise PackagingError(f"{candidate} lacks {missing}; pass --pretrained with the base model's files")
    return candidate


def load_state_dict(source: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Model weights (no ``model.`` prefix, no optimizer state) and a description of where from."""
    if source.is_dir() and (source / "model.safetensors").is_file():
        return load_file(str(source / "model.safetensors")), str(source / "model.safetensors")
    ckpt_path = pick_checkpoint(source)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises UnpicklingError, RuntimeError, EOFError, ... per file
        # torch's first line advises weights_only=False; the line naming the refused GLOBAL says why
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0])
        raise PackagingError(f"refusing to load {ckpt_path} with weights_only=True: {reason}") from None
    if not isinstance(ckpt, dict):
        raise PackagingError(f"{ckpt_path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    state = ckpt.get("state_dict", ckpt)
    weights = {
        (k[len("model.") :] if k.startswith("model.") else k): v
        for k, v in state.items()
        if isinstance(v, torch.Tensor)
    }
    return weights, str(ckpt_path)


def build_config(pretrained: Path, labels: list[str]) -> BertConfig:
    config = BertConfig.from_json_file(str(pretrained / "config.json"))
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    return config


def check_weights(weights: dict[str, torch.Tensor], config: BertConfig, source: str) -> dict[str, torch.Tensor]:
    """Every key and shape must match BertForTokenClassification(config); built on 'meta', so free."""
    with torch.device("meta"):
        expected = {k: v.shape for k, v in BertForTokenClassification(config).state_dict().items()}
    weights = {k: v for k, v in weights.items() if not IGNORED_KEYS.search(k)}
    expected = {k: v for k, v in expected.items() if not IGNORED_KEYS.search(k)}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise PackagingError(
            f"{source} does not fit config.json: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    for key, shape in expected.items():
        if weights[key].shape != shape:
            raise PackagingError(
                f"{source}: {key} has shape {tuple(weights[key].shape)}, config.json implies {tuple(shape)}"
            )
    return {k: v.contiguous() for k, v in weights.items()}


def stage(spec: PackageSpec, out: Path) -> None:
    """Write model.safetensors, config.json, vocab.txt, label_map.txt into ``out``."""
    source = Path(spec.checkpoint)
    if not source.exists():
        raise PackagingError(f"--checkpoint {source} does not exist")
    ckpt_dir = source if source.is_dir() else source.parent
    pretrained = resolve_pretrained(spec.pretrained, ckpt_dir)
    label_map = spec.label_map or ckpt_dir / "label_map.txt"
    if not label_map.is_file():
        raise PackagingError(f"label map {label_map} not found; pass --label-map")
    labels = ner_model.read_label_map(label_map)
    weights, where = load_state_dict(source)
    config = build_config(pretrained, labels)
    weights = check_weights(weights, config, where)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(out / "config.json"))
    shutil.copyfile(pretrained / "vocab.txt", out / "vocab.txt")
    shutil.copyfile(label_map, out / "label_map.txt")
    print(f"staged {len(weights)} tensors from {where} ({len(labels)} labels)", file=sys.stderr)


def export_onnx(staged: Path, settings: HandlerSettings) -> None:
    """The staged weights as the ONNX file ``runtime: onnxruntime`` (or ``auto`` on a CPU) runs."""
    torch_model = ner_model.load_model(staged, dataclasses.replace(settings, runtime="torch", quantize="none")).model
    started = time.perf_counter()
    print(f"exporting to ONNX{' and quantizing to int8' if settings.quantize == 'int8' else ''} ...", file=sys.stderr)
    path = ner_onnx.export(torch_model, staged, settings.quantize)
    print(
        f"wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )


def describe_path(settings: HandlerSettings) -> str:
    """``ONNX Runtime int8``, ``torch bf16``, ... for a resolved runtime."""
    runtime = {"onnxruntime": "ONNX Runtime", "torch": "torch"}[settings.runtime]
    precision = "int8" if settings.quantize == "int8" else ("bf16" if settings.dtype == "bfloat16" else "fp32")
    return f"{runtime} {precision}"


def verify(staged: Path, settings: HandlerSettings, spec: PackageSpec) -> list[agreement.Agreement]:
    """Load the staged model with the serve-time loader, on the CPU, for every runtime the
    archive can serve (torch fp32 first: the safetensors a GPU worker loads under ``runtime:
    auto``, and the reference), and compare each with torch fp32: a CPU path meant to be exact (ONNX
    Runtime fp32) must give the same tag on every wordpiece of the sample sentences, or the
    archive is refused; int8 and bf16 are measured (tag agreement, entity F1) and printed."""
    cpu = torch.device("cpu")
    fp32 = ner_model.load_model(
        staged, dataclasses.replace(settings, runtime="torch", quantize="none", dtype="float32")
    )
    if settings.dtype == "bfloat16" and not ner_cpu.has_bf16():
        print(
            "bf16 not measured: this CPU has neither AVX512-BF16 nor AMX (the archive loads where one of "
            "them or a GPU is)",
            file=sys.stderr,
        )
        return []
    runtime = ner_model.serving_runtime(settings, cpu, has_onnx=(staged / ner_onnx.onnx_file("none")).is_file())
    served = dataclasses.replace(settings, runtime=runtime)
    candidate = ner_model.load_model(staged, served, cpu)
    name = describe_path(served)
    if settings.quantize == "none" and settings.dtype == "float32":
        if runtime == "torch":
            return []
        result = agreement.compare(fp32, candidate, corpus.SAMPLE_SENTENCES)
        if not result.exact:
            raise PackagingError(
                f"{name} does not give torch fp32's tags: {result.tokens - result.agreeing} of {result.tokens} "
                f"wordpieces of the sample sentences differ (first: {result.first_difference}); not archiving. "
                "Set runtime: torch to serve the safetensors on the CPU too"
            )
        print(
            f"{name} gives torch fp32's tag on all {result.tokens} wordpieces of the {result.texts} sample sentences",
            file=sys.stderr,
        )
        return [result]
    texts, gold, where = agreement.texts_to_compare(spec.accuracy_corpus, spec.accuracy_limit)
    started = time.perf_counter()
    result = agreement.compare(fp32, candidate, texts, gold)
    print(f"{result.summary(name, where)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return [result]


def run_archiver(
    name: str,
    version: str,
    handler: Path,
    weights: Path,
    extra_files: list[Path],
    model_config: Path,
    export_path: Path,
    force: bool = True,
) -> Path:
    """torch-model-archiver, in this Python: ``export_path/<name>.mar``. Every archive of the
    project (ours, and the benchmark's tutorial baseline) is written by this one command."""
    cmd = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        name,
        "--version",
        version,
        "--handler",
        str(handler),
        "--serialized-file",
        str(weights),
        "--extra-files",
        ",".join(map(str, extra_files)),
        "--config-file",
        str(model_config),
        "--export-path",
        str(export_path),
    ] + (["--force"] if force else [])
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise PackagingError(f"torch-model-archiver failed: {message[-1] if message else done.returncode}")
    return export_path / f"{name}.mar"


def archive(spec: PackageSpec, staged: Path, settings: HandlerSettings) -> Path:
    entry, *modules = handler_files()
    weights, *more_weights = ner_model.archive_files(settings)
    extra = [staged / n for n in ("config.json", "vocab.txt", "label_map.txt", *more_weights)] + modules
    return run_archiver(
        spec.name, spec.version, entry, staged / weights, extra, spec.model_config, spec.export_path, spec.force
    )


def archive_target(spec: PackageSpec) -> Path:
    """Where the archive goes: ``<export path>/<archive name or model name>.mar``."""
    name = spec.archive_name or spec.name
    name = name[: -len(".mar")] if name.endswith(".mar") else name
    if not ARCHIVE_NAME.fullmatch(name):
        raise PackagingError(f"archive name {name!r}: use letters, digits, '.', '_' and '-' (e.g. kor_ner-2.0)")
    return spec.export_path / f"{name}.mar"


def package(spec: PackageSpec) -> Path:
    """Check, stage, (export,) load as TorchServe will, archive: the path of the .mar."""
    if not spec.model_config.is_file():
        raise PackagingError(f"model config {spec.model_config} not found")
    target = archive_target(spec)
    if target.exists() and not spec.force:
        raise PackagingError(f"{target} exists; pass --force to overwrite")
    spec.export_path.mkdir(parents=True, exist_ok=True)
    try:
        settings = HandlerSettings.from_mapping(read_handler_settings(spec.model_config))
    except ValueError as err:
        raise PackagingError(f"{spec.model_config}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="ner-package-") as tmp:
        staged = Path(tmp)
        stage(spec, staged)
        try:
            if any(name.endswith(".onnx") for name in ner_model.archive_files(settings)):
                export_onnx(staged, settings)
            verify(staged, settings, spec)  # the serve-time loader on the CPU, with the archive's settings
        except ner_model.ModelLoadError as err:
            raise PackagingError(f"the staged model would not load: {err}") from None
        if target == spec.export_path / f"{spec.name}.mar":
            return archive(spec, staged, settings)
        # torch-model-archiver always writes <model name>.mar: build it beside the staged files,
        # then move it to its own name, so the archive of the version being served stays as it is
        built = archive(dataclasses.replace(spec, export_path=staged, force=True), staged, settings)
        return Path(shutil.move(built, target))


def read_handler_settings(model_config: Path) -> dict:
    return (yaml.safe_load(model_config.read_text(encoding="utf-8")) or {}).get("handler") or {}


def write_model_config(config: dict, path: Path) -> Path:
    """A model config (workers, batching, ``handler:`` settings) as the YAML an archive holds."""
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path
