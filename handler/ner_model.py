"""Loading a packaged NER model and choosing its runtime: plain functions, no TorchServe import.

What a model directory must hold (``config.json``, ``vocab.txt``, ``label_map.txt`` and the
weights each runtime serves: ``archive_files``, which packaging shares), the checks that refuse
a directory whose files disagree, the device and runtime a worker serves with, and the loaded
``NerModel`` that the NER chain (ner_core) runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import BertConfig, BertForTokenClassification

import ner_cpu
import ner_onnx
from ner_settings import HandlerSettings, is_threshold

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model directory cannot be served; the message says which files disagree."""


# --------------------------------------------------------------------------- loading


def read_vocab(path: Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]")  # every BERT vocab.txt has them


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of one of SPECIAL_TOKENS (``build_tokenizer`` checked that the vocab has it)."""
    found = tokenizer.token_to_id(token)
    if found is None:
        raise ModelLoadError(f"the vocab has no {token} token")
    return found


def build_tokenizer(vocab_path: Path) -> Tokenizer:
    """A BERT WordPiece tokenizer from ``vocab.txt``, cased, no accent stripping.

    Built from the ``tokenizers`` parts rather than ``BertTokenizerFast(vocab_file=...)``,
    which in transformers 5 silently ignores the file and yields a 5-token vocab.
    Matches the pure-Python ``BertTokenizer(do_lower_case=False)`` the tutorial used.
    """
    words = read_vocab(vocab_path)
    vocab = {word: i for i, word in enumerate(words)}
    if len(vocab) != len(words):
        raise ModelLoadError(f"{vocab_path} has {len(words)} lines but only {len(vocab)} distinct tokens")
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ModelLoadError(f"{vocab_path} has no {' '.join(missing)} token")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    if tokenizer.get_vocab_size() != len(words):
        raise ModelLoadError(f"tokenizer has {tokenizer.get_vocab_size()} tokens but {vocab_path} has {len(words)}")
    return tokenizer


def read_label_map(path: Path) -> list[str]:
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels or any(not label for label in labels):
        raise ModelLoadError(f"{path} must hold one non-empty label per line")
    return labels


def check_consistency(
    labels: Sequence[str], config: BertConfig, vocab_size: int, classifier_rows: int | None, embedding_rows: int | None
) -> None:
    """Refuse a model whose label map, config, classifier and vocab do not agree
    (``None``: that size is not known for the weights at hand)."""
    problems = []
    if len(labels) != config.num_labels:
        problems.append(f"label_map.txt has {len(labels)} labels but config.json num_labels is {config.num_labels}")
    if classifier_rows is not None and classifier_rows != len(labels):
        problems.append(f"label_map.txt has {len(labels)} labels but the classifier has {classifier_rows} rows")
    if embedding_rows is not None and embedding_rows != vocab_size:
        problems.append(f"vocab.txt has {vocab_size} tokens but the word embeddings have {embedding_rows} rows")
    if config.vocab_size != vocab_size:
        problems.append(f"vocab.txt has {vocab_size} tokens but config.json vocab_size is {config.vocab_size}")
    if problems:
        raise ModelLoadError("; ".join(problems))


@dataclass
class NerModel:
    model: Any  # BertForTokenClassification, or ner_onnx.OnnxTokenClassifier (called the same way)
    tokenizer: Tokenizer
    labels: list[str]
    settings: HandlerSettings
    min_entity_score: float = 0.0  # the threshold in force (settings', else the model's own)

    @property
    def cls_id(self) -> int:
        return special_id(self.tokenizer, "[CLS]")

    @property
    def sep_id(self) -> int:
        return special_id(self.tokenizer, "[SEP]")

    @property
    def pad_id(self) -> int:
        return special_id(self.tokenizer, "[PAD]")

    @property
    def device(self) -> torch.device:
        return self.model.device


def serving_runtime(settings: HandlerSettings, device: torch.device, has_onnx: bool = True) -> str:
    """The runtime that serves these settings on ``device``. ``runtime: auto`` is ONNX Runtime on
    a CPU (the same tags as torch fp32, faster: docs/performance.md) and torch on a GPU or for
    ``dtype: bfloat16``; an archive without ``model.onnx`` (packaged with ``runtime: torch``)
    is served by torch. ``torch`` and ``onnxruntime`` are taken as set."""
    if settings.runtime != "auto":
        return settings.runtime
    if device.type != "cpu" or settings.dtype == "bfloat16":
        return "torch"
    if settings.quantize == "none" and not has_onnx:
        return "torch"
    return "onnxruntime"


def weights_file(settings: HandlerSettings) -> str:
    """The file in the model directory that holds the weights a resolved runtime serves."""
    if settings.runtime == "onnxruntime":
        return ner_onnx.onnx_file(settings.quantize)
    return "model.safetensors"


def archive_files(settings: HandlerSettings) -> list[str]:
    """The weight files an archive needs for these settings, the one TorchServe calls the
    serialized file first. ``auto`` keeps both: the safetensors (torch, on a GPU) and the ONNX
    file (a CPU), so one archive serves on either."""
    if settings.runtime == "onnxruntime":
        return [ner_onnx.onnx_file(settings.quantize)]
    if settings.runtime == "auto" and settings.dtype != "bfloat16":
        return ["model.safetensors", ner_onnx.onnx_file(settings.quantize)]
    return ["model.safetensors"]


def check_bf16_cpu(flags: frozenset[str] | set[str], cpu: str) -> None:
    """``dtype: bfloat16`` on a CPU needs bfloat16 in hardware (AVX512-BF16 or AMX); without it
    torch emulates bf16, slower than float32, so the setting is refused."""
    if not ner_cpu.bf16_supported(flags):
        raise ModelLoadError(
            f"dtype: bfloat16 needs a CPU with AVX512-BF16 or AMX, and this one ({cpu}) has neither: "
            "bf16 would be emulated, slower than float32; set dtype: float32"
        )


def choose_device(gpu_id: int | str | None, cuda_available: bool) -> torch.device:
    """Where a worker runs the model: the GPU TorchServe assigned it (``gpu_id`` in the
    context's system properties, one per worker, round-robin over the visible GPUs), else
    the CPU."""
    if gpu_id is None or gpu_id == "" or not cuda_available:
        return torch.device("cpu")
    return torch.device(f"cuda:{int(gpu_id)}")


def load_model(model_dir: Path, settings: HandlerSettings, device: torch.device | None = None) -> NerModel:
    """Load a packaged model directory onto ``device`` (default: the CPU): safetensors or
    ONNX weights (ONNX Runtime always runs on the CPU), never a pickle."""
    device = device or torch.device("cpu")
    model_dir = Path(model_dir)
    runtime = serving_runtime(settings, device, has_onnx=(model_dir / ner_onnx.onnx_file("none")).is_file())
    if settings.runtime == "auto" and runtime == "torch" and device.type == "cpu" and settings.dtype != "bfloat16":
        logger.warning("runtime auto: %s has no model.onnx (packaged with runtime: torch?); serving torch", model_dir)
    if settings.quantize == "int8" and runtime == "torch":  # runtime auto on a GPU
        raise ModelLoadError("quantize: int8 is ONNX Runtime's, a CPU optimisation; on a GPU use dtype: bfloat16")
    settings = dataclasses.replace(settings, runtime=runtime)
    weights = weights_file(settings)
    missing = [
        name for name in (weights, "config.json", "vocab.txt", "label_map.txt") if not (model_dir / name).is_file()
    ]
    if missing:
        hint = (
            f" with runtime: {settings.runtime}, quantize: {settings.quantize} in its model config"
            if weights != "model.safetensors"
            else ""
        )
        raise ModelLoadError(f"{model_dir} lacks {missing}; package it with scripts/package_model.py{hint}")
    config = BertConfig.from_json_file(str(model_dir / "config.json"))
    labels = read_label_map(model_dir / "label_map.txt")
    tokenizer = build_tokenizer(model_dir / "vocab.txt")
    if settings.max_seq_length > config.max_position_embeddings:
        raise ModelLoadError(
            f"max_seq_length {settings.max_seq_length} exceeds the model's "
            f"max_position_embeddings {config.max_position_embeddings}"
        )
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    model: BertForTokenClassification | ner_onnx.OnnxTokenClassifier
    if settings.runtime == "onnxruntime":
        check_unused_safetensors(model_dir / "model.safetensors")
        try:
            model = ner_onnx.OnnxTokenClassifier(model_dir / weights, settings.torch_threads)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt or foreign file
            raise ModelLoadError(f"cannot load {model_dir / weights} in ONNX Runtime: {err}") from None
        check_consistency(labels, config, tokenizer.get_vocab_size(), model.num_labels, None)
    else:
        model = _load_torch(model_dir / weights, config, labels, tokenizer, settings, device)
    threshold = settings.min_entity_score if settings.min_entity_score is not None else model_threshold(config)
    return NerModel(model=model, tokenizer=tokenizer, labels=labels, settings=settings, min_entity_score=threshold)


TASK = "token-classification"  # the key of this task's defaults in config.json task_specific_params


def model_threshold(config: BertConfig) -> float:
    """The entity score threshold a model names for itself, in Hugging Face's place for a
    model's task defaults: ``"task_specific_params": {"token-classification":
    {"min_entity_score": 0.75}}`` in config.json (the demo model's; docs/decoding.md); else 0."""
    params = (getattr(config, "task_specific_params", None) or {}).get(TASK) or {}
    value = params.get("min_entity_score", 0.0)
    if not is_threshold(value):
        raise ModelLoadError(
            f"config.json task_specific_params.{TASK}.min_entity_score must be at least 0 and below 1, got {value!r}"
        )
    return float(value)


def check_unused_safetensors(path: Path) -> None:
    """An archive served by ONNX Runtime may also hold the safetensors a GPU worker would load:
    refuse it now if its header or length is broken (reading the header only), rather than on
    the first GPU host."""
    if not path.is_file():
        return
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for a broken file
        raise ModelLoadError(f"cannot read {path}: {err}") from None


def _load_torch(
    path: Path,
    config: BertConfig,
    labels: list[str],
    tokenizer: Tokenizer,
    settings: HandlerSettings,
    device: torch.device,
) -> BertForTokenClassification:
    try:
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for a corrupt file
        raise ModelLoadError(f"cannot read {path}: {err}") from None
    rows = {
        key: state[key].shape[0] if key in state else None
        for key in ("classifier.weight", "bert.embeddings.word_embeddings.weight")
    }
    check_consistency(labels, config, tokenizer.get_vocab_size(), *rows.values())
    config._attn_implementation = "sdpa"
    model = BertForTokenClassification(config)
    result = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    # Some exports leave out buffers (position ids); a missing parameter is an error.
    missing_params = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing_params or result.unexpected_keys:
        raise ModelLoadError(
            f"model.safetensors does not match config.json: missing {missing_params[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    module = cast(torch.nn.Module, model)  # transformers' decorated .to() hides Module.to's signature
    if device.type == "cuda":
        module.to(device=device, dtype=torch.bfloat16 if settings.dtype == "bfloat16" else torch.float32)
    elif settings.dtype == "bfloat16":
        cpuinfo = ner_cpu.cpuinfo_text()
        check_bf16_cpu(ner_cpu.cpu_flags(cpuinfo), ner_cpu.cpu_model(cpuinfo))
        module.to(dtype=torch.bfloat16)  # oneDNN's bf16 GEMMs on AVX512-BF16 / AMX
    return model


# --------------------------------------------------------------------------- windows
