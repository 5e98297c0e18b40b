"""Korean NER on a BERT token classifier: plain functions, no TorchServe import.

The chain, each step small and testable on its own:
  tokenise with character offsets -> cut long texts into overlapping windows -> one padded
  forward pass -> stitch window predictions back per token -> BIO tags -> entity spans.
The answer's JSON shape (the tutorial's fields and more) is ner_wire's.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import BertConfig, BertForTokenClassification

import ner_cpu
import ner_onnx
from ner_labels import entity_type, is_inside
from ner_settings import HandlerSettings, is_threshold

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model directory cannot be served; the message says which files disagree."""


# --------------------------------------------------------------------------- loading


def read_vocab(path: Path) -> list[str]:
    return Path(path).read_text(encoding="utf-8").splitlines()


def build_tokenizer(vocab_path: Path) -> Tokenizer:
    """A BERT WordPiece tokenizer from ``vocab.txt``, cased, no accent stripping.

    Built from the ``tokenizers`` parts rather than ``BertTokenizerFast(vocab_file=...)``,
    which in transformers 5 silently ignores the file and yields a 5-token vocab.
    Matches the pure-Python ``BertTokenizer(do_lower_case=False)`` the tutorial used.
    """
    words = read_vocab(vocab_path)
    vocab = {word: i for i, word in enumerate(words)}
    if len(vocab) != len(words):
        raise ModelLoadError(
            f"{vocab_path} has {len(words)} lines but only {len(vocab)} distinct tokens"
        )
    if "[UNK]" not in vocab:
        raise ModelLoadError(f"{vocab_path} has no [UNK] token")
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    if tokenizer.get_vocab_size() != len(words):
        raise ModelLoadError(
            f"tokenizer has {tokenizer.get_vocab_size()} tokens but {vocab_path} has {len(words)}"
        )
    return tokenizer


def nfc_spans(text: str) -> tuple[str, list[tuple[int, int]]] | None:
    """NFC-normalise ``text`` as the pure-Python BERT tokenizer does, keeping for every NFC
    character the [start, end) of the original characters it came from (decomposed Hangul
    jamo compose 2-3 into 1). None when the text is already NFC, which is nearly always.

    Done here because the ``tokenizers`` NFC normaliser reports wrong offsets for composed jamo.
    """
    if unicodedata.is_normalized("NFC", text):
        return None
    segments: list[tuple[int, int]] = []  # original spans of characters that compose together
    for i, char in enumerate(text):
        if segments:
            start = segments[-1][0]
            joined = unicodedata.normalize("NFC", text[start : i + 1])
            if joined != unicodedata.normalize("NFC", text[start:i]) + unicodedata.normalize("NFC", char):
                segments[-1] = (start, i + 1)
                continue
        segments.append((i, i + 1))
    parts, spans = [], []
    for start, end in segments:
        piece = unicodedata.normalize("NFC", text[start:end])
        parts.append(piece)
        spans += [(start, end)] * len(piece)
    return "".join(parts), spans


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[str], list[tuple[int, int]]]]:
    """Wordpiece ids, tokens and character offsets into each original text (no special tokens)."""
    normalised = [nfc_spans(text) for text in texts]
    encodings = tokenizer.encode_batch([n[0] if n else t for n, t in zip(normalised, texts)], add_special_tokens=False)
    out = []
    for enc, norm in zip(encodings, normalised):
        offsets = list(enc.offsets)
        if norm is not None:
            spans = norm[1]
            offsets = [(spans[a][0], spans[b - 1][1]) if b > a else (spans[a][0], spans[a][0]) for a, b in offsets]
        out.append((list(enc.ids), list(enc.tokens), offsets))
    return out


def read_label_map(path: Path) -> list[str]:
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels or any(not label for label in labels):
        raise ModelLoadError(f"{path} must hold one non-empty label per line")
    return labels


def check_consistency(labels: Sequence[str], config: BertConfig, vocab_size: int,
                      classifier_rows: int | None, embedding_rows: int | None) -> None:
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
        return self.tokenizer.token_to_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.tokenizer.token_to_id("[SEP]")

    @property
    def pad_id(self) -> int:
        return self.tokenizer.token_to_id("[PAD]")

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
    missing = [name for name in (weights, "config.json", "vocab.txt", "label_map.txt") if not (model_dir / name).is_file()]
    if missing:
        hint = f" with runtime: {settings.runtime}, quantize: {settings.quantize} in its model config" if weights != "model.safetensors" else ""
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
    if settings.runtime == "onnxruntime":
        check_unused_safetensors(model_dir / "model.safetensors")
        try:
            model = ner_onnx.OnnxTokenClassifier(model_dir / weights, settings.torch_threads)
        except Exception as err:  # onnxruntime raises its own types for a corrupt or foreign file
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
        raise ModelLoadError(f"config.json task_specific_params.{TASK}.min_entity_score must be at least 0 and below 1, got {value!r}")
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
    except Exception as err:  # safetensors raises its own error type for a broken file
        raise ModelLoadError(f"cannot read {path}: {err}") from None


def _load_torch(path: Path, config: BertConfig, labels: list[str], tokenizer: Tokenizer,
                settings: HandlerSettings, device: torch.device) -> BertForTokenClassification:
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises several types for a corrupt file
        raise ModelLoadError(f"cannot read {path}: {err}") from None
    rows = {key: state[key].shape[0] if key in state else None
            for key in ("classifier.weight", "bert.embeddings.word_embeddings.weight")}
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
    if device.type == "cuda":
        model.to(device=device, dtype=torch.bfloat16 if settings.dtype == "bfloat16" else torch.float32)
    elif settings.dtype == "bfloat16":
        cpuinfo = ner_cpu.cpuinfo_text()
        check_bf16_cpu(ner_cpu.cpu_flags(cpuinfo), ner_cpu.cpu_model(cpuinfo))
        model.to(dtype=torch.bfloat16)  # oneDNN's bf16 GEMMs on AVX512-BF16 / AMX
    return model


# --------------------------------------------------------------------------- windows


def plan_windows(n_tokens: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges [start, end) of at most ``size`` tokens, consecutive ones sharing ``stride``.

    A text of ``size`` tokens or fewer is one window; an empty text is one empty window.
    """
    if n_tokens <= size:
        return [(0, n_tokens)]
    step = size - stride
    starts = list(range(0, n_tokens - size + 1, step))
    if starts[-1] + size < n_tokens:
        starts.append(n_tokens - size)
    return [(start, start + size) for start in starts]


def keep_ranges(windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Which tokens each window answers for: overlaps are split at their middle, so every
    token is predicted by the window that sees the most context on both sides of it."""
    cuts = [(windows[i + 1][0] + windows[i][1]) // 2 for i in range(len(windows) - 1)]
    starts = [windows[0][0], *cuts]
    ends = [*cuts, windows[-1][1]]
    return list(zip(starts, ends))


# --------------------------------------------------------------------------- inference


@dataclass
class TokenPredictions:
    """Per text: one entry per wordpiece (no special tokens)."""

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    label_ids: list[int]  # the argmax label per wordpiece (the ``result`` rows)
    probs: list[float]  # its probability
    windows: int = 1  # model inputs the text took (long texts are cut into overlapping windows)
    distributions: torch.Tensor | None = None  # (wordpieces, labels): every label's probability


@dataclass(frozen=True)
class EncodedText:
    """One text ready for the model: its wordpieces with character offsets, and the windows
    (token ranges, one model input each) that cover them."""

    text: str
    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    windows: list[tuple[int, int]]

    @property
    def cost(self) -> int:
        """Model-input tokens the text takes: every window's wordpieces plus [CLS] and [SEP].
        Compute grows with this number, so the per-request work budget counts it."""
        return sum(end - start + 2 for start, end in self.windows)


def encode_windows(tokenizer: Tokenizer, settings: HandlerSettings, texts: Sequence[str]) -> list[EncodedText]:
    """Tokenise texts and cut each into the windows the model will see: no model needed."""
    size, stride = settings.max_seq_length - 2, settings.window_stride
    return [
        EncodedText(text, ids, tokens, offsets, plan_windows(len(ids), size, stride))
        for text, (ids, tokens, offsets) in zip(texts, encode_texts(tokenizer, texts))
    ]


def encode(ner: NerModel, texts: Sequence[str]) -> list[EncodedText]:
    """``encode_windows`` with the loaded model's tokenizer and settings."""
    return encode_windows(ner.tokenizer, ner.settings, texts)


def forward_distributions(ner: NerModel, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass over rows of wordpiece ids, padded to the longest row: the top label
    id and its probability per wordpiece ([CLS] dropped; [SEP] and pads are sliced per row),
    and the whole probability distribution over the labels per wordpiece."""
    width = max(len(r) for r in rows) + 2
    input_ids = torch.full((len(rows), width), ner.pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row) + 2] = torch.tensor([ner.cls_id, *row, ner.sep_id])
        attention[i, : len(row) + 2] = 1
    input_ids, attention = input_ids.to(ner.device), attention.to(ner.device)
    with torch.inference_mode():
        logits = ner.model(input_ids=input_ids, attention_mask=attention, token_type_ids=torch.zeros_like(input_ids)).logits
    distributions = logits.float().softmax(dim=-1)
    top_probs, top_ids = distributions.max(dim=-1)
    return top_ids[:, 1:-1].cpu(), top_probs[:, 1:-1].cpu(), distributions[:, 1:-1].cpu()


def plan_batches(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group row indices into forward passes: sorted by length so padding stays small,
    and each pass holds at most ``max_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i] + 2  # the longest so far, since rows are sorted
        if current and width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def window_rows(encoded: Sequence[EncodedText]) -> tuple[list[list[int]], list[list[tuple[int, int, int]]]]:
    """The model inputs of encoded texts: each window's wordpiece ids (rows), and per text the
    (row index, keep start, keep end) parts that answer for its tokens."""
    rows: list[list[int]] = []
    row_of: list[list[tuple[int, int, int]]] = []
    for enc in encoded:
        parts = []
        for (start, end), (keep_start, keep_end) in zip(enc.windows, keep_ranges(enc.windows)):
            parts.append((len(rows), keep_start - start, keep_end - start))
            rows.append(enc.ids[start:end])
        row_of.append(parts)
    return rows, row_of


def predict_encoded(ner: NerModel, encoded: Sequence[EncodedText]) -> list[TokenPredictions]:
    """Tag encoded texts: their windows sorted by length and batched, stitched back per text."""
    rows, row_of = window_rows(encoded)
    row_ids: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(rows)
    row_probs: list[torch.Tensor] = [torch.empty(0)] * len(rows)
    row_dists: list[torch.Tensor] = [torch.empty(0, len(ner.labels))] * len(rows)
    for batch in plan_batches([len(r) for r in rows], ner.settings.max_batch_tokens):
        ids, probs, dists = forward_distributions(ner, [rows[i] for i in batch])
        for j, i in enumerate(batch):
            n = len(rows[i])
            row_ids[i], row_probs[i], row_dists[i] = ids[j, :n], probs[j, :n], dists[j, :n]

    out = []
    for enc, parts in zip(encoded, row_of):
        ids = torch.cat([row_ids[r][a:b] for r, a, b in parts])
        probs = torch.cat([row_probs[r][a:b] for r, a, b in parts])
        dists = torch.cat([row_dists[r][a:b] for r, a, b in parts])
        out.append(TokenPredictions(enc.text, enc.tokens, enc.offsets, ids.tolist(), probs.tolist(), len(parts), dists))
    return out


@dataclass(frozen=True)
class Job:
    """One request's texts on their way through the chain: encoded, then tagged. ``request``
    is the caller's own record of the request (the handler's parsed request)."""

    request: Any
    encoded: list[EncodedText]
    predictions: list[TokenPredictions] | None = None


def predict(ner: NerModel, texts: Sequence[str]) -> list[TokenPredictions]:
    """Tag many texts: every text tokenised once, long ones windowed, windows batched."""
    return predict_encoded(ner, encode(ner, texts))


# --------------------------------------------------------------------------- decoding


def group_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """BIO tags -> (type, first token, last token). An I- tag that does not continue an
    entity of its type starts a new one, so no predicted entity token is dropped."""
    spans: list[tuple[str, int, int]] = []
    current: tuple[str, int] | None = None
    for i, tag in enumerate(tags):
        kind = entity_type(tag)
        continues = current is not None and is_inside(tag) and kind == current[0]
        if current is not None and not continues:
            spans.append((current[0], current[1], i - 1))
            current = None
        if kind is not None and not continues:
            current = (kind, i)
    if current is not None:
        spans.append((current[0], current[1], len(tags) - 1))
    return spans


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The BIO rules as masks: ``follows[i, j]`` whether label j may come right after label i
    (``I-X`` only after ``B-X`` or ``I-X``; anything else after anything), and ``starts[j]``
    whether a text may begin with label j (not with an ``I-`` tag)."""
    return _transitions(tuple(labels))


@functools.lru_cache(maxsize=8)
def _transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    kinds = [entity_type(label) for label in labels]
    inside = [is_inside(label) for label in labels]
    follows = np.ones((len(labels), len(labels)), dtype=bool)
    for j, kind in enumerate(kinds):
        if inside[j]:
            follows[:, j] = [kinds[i] == kind for i in range(len(labels))]
    return follows, ~np.array(inside, dtype=bool)


def is_consistent(label_ids: Sequence[int], follows: np.ndarray, starts: np.ndarray) -> bool:
    """Whether a label sequence keeps the BIO rules."""
    if not label_ids:
        return True
    return bool(starts[label_ids[0]]) and all(follows[a, b] for a, b in zip(label_ids, label_ids[1:]))


def constrained_label_ids(distributions: torch.Tensor | np.ndarray, labels: Sequence[str],
                          greedy: Sequence[int] | None = None) -> list[int]:
    """The most probable label sequence that keeps the BIO rules (Viterbi over the log
    probabilities of each wordpiece's distribution, rows of ``distributions``). When the
    argmax sequence (``greedy``, computed if not given) already keeps them, it is the answer."""
    probs = np.asarray(distributions, dtype=np.float64)
    if greedy is None:
        greedy = probs.argmax(axis=1).tolist() if len(probs) else []
    follows, starts = allowed_transitions(labels)
    if is_consistent(greedy, follows, starts):
        return list(greedy)
    logp = np.log(np.maximum(probs, 1e-30))
    barred = np.where(follows, 0.0, -np.inf)
    score = logp[0] + np.where(starts, 0.0, -np.inf)
    back = np.empty((len(logp), len(labels)), dtype=np.int64)
    for t in range(1, len(logp)):
        candidates = score[:, None] + barred  # previous label x next label
        back[t] = candidates.argmax(axis=0)
        score = candidates[back[t], np.arange(len(labels))] + logp[t]
    path = [int(score.argmax())]
    for t in range(len(logp) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


@dataclass(frozen=True)
class Entity:
    """One entity of a text: its type, characters ``text[start:end]`` and mean label probability."""

    label: str
    start: int
    end: int
    score: float

    @property
    def span(self) -> tuple[str, int, int]:
        return self.label, self.start, self.end


def find_entities(
    pred: TokenPredictions, labels: Sequence[str], trim: Callable[..., int] | None = None, decoding: str = "greedy",
    min_score: float = 0.0,
) -> list[Entity]:
    """The entities of one text, read from its wordpieces' labels.

    ``decoding``: ``greedy`` groups the argmax tags (the tutorial's ``result`` rows; an ``I-X``
    without its ``B-X`` starts an entity); ``constrained`` takes the most probable label
    sequence that keeps the BIO rules (``constrained_label_ids``; needs ``pred.distributions``),
    and an entity's score is then the mean probability of the labels that sequence gives it.
    ``trim(text, start, end, last wordpiece start, kind=type, next_piece=(start, end) | None,
    next_outside=whether that wordpiece is labelled O, piece_after=(start, end) | None of the one
    after it) -> end`` may move each entity's end: shorten it (Korean particles) or complete a
    name the model cut before its last syllable (see ner_particles). Entities whose score is
    below ``min_score`` are left out.
    """
    entity_ids, entity_probs = entity_labels(pred, labels, decoding)
    entities = []
    for kind, first, last in group_entities([labels[i] for i in entity_ids]):
        start, end = pred.offsets[first][0], pred.offsets[last][1]
        if trim is not None:
            following = pred.offsets[last + 1] if last + 1 < len(pred.offsets) else None
            after = pred.offsets[last + 2] if last + 2 < len(pred.offsets) else None
            outside = following is not None and labels[entity_ids[last + 1]] == "O"
            end = trim(pred.text, start, end, pred.offsets[last][0], kind=kind, next_piece=following,
                       next_outside=outside, piece_after=after)
        score = sum(entity_probs[first : last + 1]) / (last - first + 1)
        entities.append(Entity(kind, start, end, round(score, 4)))
    return scored_at_least(entities, min_score)


def scored_at_least(entities: Sequence[Entity], min_score: float) -> list[Entity]:
    """The entities whose (shown, rounded) score is at least ``min_score``: what the
    ``min_entity_score`` setting keeps."""
    return [e for e in entities if e.score >= min_score]


def entity_labels(pred: TokenPredictions, labels: Sequence[str], decoding: str) -> tuple[list[int], list[float]]:
    """The label per wordpiece that the entities are read from, and its probability."""
    if decoding == "greedy":
        return pred.label_ids, pred.probs
    if decoding != "constrained":
        raise ValueError(f"unknown decoding {decoding!r}")
    if pred.distributions is None:
        raise ValueError("constrained decoding needs the predictions' label distributions")
    ids = constrained_label_ids(pred.distributions, labels, pred.label_ids)
    if ids == pred.label_ids:
        return pred.label_ids, pred.probs
    chosen = pred.distributions[torch.arange(len(ids)), torch.tensor(ids, dtype=torch.long)]
    return ids, chosen.tolist()
