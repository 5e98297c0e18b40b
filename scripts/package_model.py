#!/usr/bin/env python3
"""Package a fine-tuned Korean NER BERT into a TorchServe archive: model_store/<name>.mar.

Accepts what a ratsnlp user has:
  * a checkpoint directory of Lightning checkpoints (``epoch=2-val_loss=0.12.ckpt``; the one
    with the lowest val_loss is taken, as ratsnlp's NERDeployArguments does) or one .ckpt file,
    with ``label_map.txt`` beside it, and the pretrained model's ``config.json`` + ``vocab.txt``
    (``--pretrained``: a directory, or a Hugging Face model id found in the local cache);
  * or a Hugging Face ``save_pretrained`` directory (config.json + model.safetensors).
Checkpoints are opened with ``torch.load(weights_only=True)``: no arbitrary unpickling. The
archive holds ``model.safetensors``, so TorchServe never unpickles anything either; with
``runtime: onnxruntime`` in the model config's ``handler:`` section it holds the ONNX export
instead (``model.onnx``, or ``model.int8.onnx`` with ``quantize: int8``). Before archiving,
the staged model is loaded by the very code TorchServe will run, with the archive's settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import repo

import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForTokenClassification

import ner_core
import ner_onnx
from ner_settings import HandlerSettings

HANDLER_FILES = ("ner_handler.py", "ner_core.py", "ner_inputs.py", "ner_settings.py", "ner_particles.py", "ner_onnx.py")
VAL_LOSS = re.compile(r"val_loss=([0-9]+(?:\.[0-9]+)?)")
ARCHIVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")  # a buffer older transformers saved


class PackagingError(Exception):
    """One clear line for the user; main() prints it and exits 1."""


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
            candidate = Path(snapshot_download(value, local_files_only=True, allow_patterns=["config.json", "vocab.txt"]))
        except Exception:
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
    except Exception as err:
        # torch's first line advises weights_only=False; the line naming the refused GLOBAL says why
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0])
        raise PackagingError(f"refusing to load {ckpt_path} with weights_only=True: {reason}") from None
    if not isinstance(ckpt, dict):
        raise PackagingError(f"{ckpt_path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    state = ckpt.get("state_dict", ckpt)
    weights = {
        (k[len("model."):] if k.startswith("model.") else k): v
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


def stage(args: argparse.Namespace, out: Path) -> None:
    """Write model.safetensors, config.json, vocab.txt, label_map.txt into ``out``."""
    source = args.checkpoint
    if not source.exists():
        raise PackagingError(f"--checkpoint {source} does not exist")
    ckpt_dir = source if source.is_dir() else source.parent
    pretrained = resolve_pretrained(args.pretrained, ckpt_dir)
    label_map = args.label_map or ckpt_dir / "label_map.txt"
    if not label_map.is_file():
        raise PackagingError(f"label map {label_map} not found; pass --label-map")
    labels = ner_core.read_label_map(label_map)
    weights, where = load_state_dict(source)
    config = build_config(pretrained, labels)
    weights = check_weights(weights, config, where)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(out / "config.json"))
    shutil.copyfile(pretrained / "vocab.txt", out / "vocab.txt")
    shutil.copyfile(label_map, out / "label_map.txt")
    print(f"staged {len(weights)} tensors from {where} ({len(labels)} labels)", file=sys.stderr)


def export_onnx(staged: Path, settings: HandlerSettings) -> None:
    """For ``runtime: onnxruntime``: the staged weights as the ONNX file the handler will run."""
    torch_model = ner_core.load_model(staged, dataclasses.replace(settings, runtime="torch", quantize="none")).model
    started = time.perf_counter()
    print(f"exporting to ONNX{' and quantizing to int8' if settings.quantize == 'int8' else ''} ...", file=sys.stderr)
    path = ner_onnx.export(torch_model, staged, settings.quantize)
    print(f"wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def archive(args: argparse.Namespace, staged: Path, settings: HandlerSettings) -> Path:
    handler = repo.HANDLER_DIR
    extra = [staged / n for n in ("config.json", "vocab.txt", "label_map.txt")]
    extra += [handler / n for n in HANDLER_FILES[1:]]
    cmd = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", args.name, "--version", args.version,
        "--handler", str(handler / HANDLER_FILES[0]),
        "--serialized-file", str(staged / ner_core.weights_file(settings)),
        "--extra-files", ",".join(map(str, extra)),
        "--config-file", str(args.model_config),
        "--export-path", str(args.export_path),
    ] + (["--force"] if args.force else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise PackagingError(f"torch-model-archiver failed: {message[-1] if message else done.returncode}")
    return args.export_path / f"{args.name}.mar"


def archive_target(args: argparse.Namespace) -> Path:
    """Where the archive goes: ``<export path>/<archive name or model name>.mar``."""
    name = getattr(args, "archive_name", None) or args.name
    name = name[:-len(".mar")] if name.endswith(".mar") else name
    if not ARCHIVE_NAME.fullmatch(name):
        raise PackagingError(f"archive name {name!r}: use letters, digits, '.', '_' and '-' (e.g. kor_ner-2.0)")
    return args.export_path / f"{name}.mar"


def package(args: argparse.Namespace) -> Path:
    if not args.model_config.is_file():
        raise PackagingError(f"model config {args.model_config} not found")
    target = archive_target(args)
    if target.exists() and not args.force:
        raise PackagingError(f"{target} exists; pass --force to overwrite")
    args.export_path.mkdir(parents=True, exist_ok=True)
    try:
        settings = HandlerSettings.from_mapping(read_handler_settings(args.model_config))
    except ValueError as err:
        raise PackagingError(f"{args.model_config}: {err}") from None
    with tempfile.TemporaryDirectory(prefix="ner-package-") as tmp:
        staged = Path(tmp)
        stage(args, staged)
        try:
            if settings.runtime == "onnxruntime":
                export_onnx(staged, settings)
            ner_core.load_model(staged, settings)  # the serve-time loader, with the archive's settings
        except ner_core.ModelLoadError as err:
            raise PackagingError(f"the staged model would not load: {err}") from None
        if target == args.export_path / f"{args.name}.mar":
            return archive(args, staged, settings)
        # torch-model-archiver always writes <model name>.mar: build it beside the staged files,
        # then move it to its own name, so the archive of the version being served stays as it is
        built = archive(argparse.Namespace(**{**vars(args), "export_path": staged, "force": True}), staged, settings)
        return Path(shutil.move(built, target))


def read_handler_settings(model_config: Path) -> dict:
    import yaml

    return (yaml.safe_load(model_config.read_text(encoding="utf-8")) or {}).get("handler") or {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory, .ckpt file, or save_pretrained directory")
    parser.add_argument("--pretrained", help="directory (or cached HF model id) with the base model's config.json and vocab.txt; default: the checkpoint's directory")
    parser.add_argument("--label-map", type=Path, help="label_map.txt; default: the checkpoint's directory")
    parser.add_argument("--name", default="kor_ner", help="model name in TorchServe (default: %(default)s)")
    parser.add_argument("--version", default="1.0", help="model version (default: %(default)s)")
    parser.add_argument("--model-config", type=Path, default=repo.CONFIG_DIR / "model-config.yaml", help="per-model YAML (default: config/model-config.yaml)")
    parser.add_argument("--export-path", type=Path, default=repo.MODEL_STORE, help="where the .mar goes (default: model_store/)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument("--archive-name", help="archive file name (default: the model name): e.g. kor_ner-2.0 for "
                        "model_store/kor_ner-2.0.mar, a new version beside the one being served")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        path = package(args)
    except PackagingError as err:
        print(f"package_model: error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
