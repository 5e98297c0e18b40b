"""Korean NER on a BERT token classifier: the chain, plain functions, no TorchServe import.

Each step small and testable on its own:
  tokenise with character offsets -> cut long texts into overlapping windows -> one padded
  forward pass -> stitch window predictions back per token -> BIO tags -> entity spans.
Loading a model directory and choosing its runtime are ner_model's; the answer's JSON shape
(the tutorial's fields and more) is ner_wire's.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from ner_labels import entity_type, is_inside
from ner_model import ModelLoadError, NerModel, load_model
from ner_settings import HandlerSettings

# The chain's callers load a model, then tag with it: the loading names they use stay
# importable from here (ner_model is their home).
__all__ = [
    "EncodedText",
    "Entity",
    "ModelLoadError",
    "NerModel",
    "TokenPredictions",
    "allowed_transitions",
    "constrained_label_ids",
    "encode",
    "encode_texts",
    "encode_windows",
    "entity_labels",
    "find_entities",
    "forward_distributions",
    "group_entities",
    "is_consistent",
    "keep_ranges",
    "load_model",
    "nfc_spans",
    "plan_batches",
    "plan_windows",
    "predict",
    "predict_encoded",
    "scored_at_least",
    "window_rows",
]


# --------------------------------------------------------------------------- encoding


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


def encode_texts(
    tokenizer: Tokenizer, texts: Sequence[str]
) -> list[tuple[list[int], list[str], list[tuple[int, int]]]]:
    """Wordpiece ids, tokens and character offsets into each original text (no special tokens)."""
    normalised = [nfc_spans(text) for text in texts]
    encodings = tokenizer.encode_batch(
        [n[0] if n else t for n, t in zip(normalised, texts, strict=True)], add_special_tokens=False
    )
    out = []
    for enc, norm in zip(encodings, normalised, strict=True):
        offsets = list(enc.offsets)
        if norm is not None:
            spans = norm[1]
            offsets = [(spans[a][0], spans[b - 1][1]) if b > a else (spans[a][0], spans[a][0]) for a, b in offsets]
        out.append((list(enc.ids), list(enc.tokens), offsets))
    return out


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
    return list(zip(starts, ends, strict=True))


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
        for text, (ids, tokens, offsets) in zip(texts, encode_texts(tokenizer, texts), strict=True)
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
        logits = ner.model(
            input_ids=input_ids, attention_mask=attention, token_type_ids=torch.zeros_like(input_ids)
        ).logits
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
        for (start, end), (keep_start, keep_end) in zip(enc.windows, keep_ranges(enc.windows), strict=True):
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
    for enc, parts in zip(encoded, row_of, strict=True):
        ids = torch.cat([row_ids[r][a:b] for r, a, b in parts])
        probs = torch.cat([row_probs[r][a:b] for r, a, b in parts])
        dists = torch.cat([row_dists[r][a:b] for r, a, b in parts])
        out.append(TokenPredictions(enc.text, enc.tokens, enc.offsets, ids.tolist(), probs.tolist(), len(parts), dists))
    return out


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
    return bool(starts[label_ids[0]]) and all(follows[a, b] for a, b in itertools.pairwise(label_ids))


def constrained_label_ids(
    distributions: torch.Tensor | np.ndarray, labels: Sequence[str], greedy: Sequence[int] | None = None
) -> list[int]:
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
    pred: TokenPredictions,
    labels: Sequence[str],
    trim: Callable[..., int] | None = None,
    decoding: str = "greedy",
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
            end = trim(
                pred.text,
                start,
                end,
                pred.offsets[last][0],
                kind=kind,
                next_piece=following,
                next_outside=outside,
                piece_after=after,
            )
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
