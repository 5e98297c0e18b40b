"""One text's answer as the handler builds it: ner_core finds the entities, ner_wire shapes the
JSON. Tests of the chain's output call this instead of repeating the two steps."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ner_answer import text_answer
from ner_core import TokenPredictions, find_entities
from ner_labels import SEED_LABEL_NAMES


def answer_for(
    pred: TokenPredictions,
    labels: Sequence[str],
    names: Mapping[str, str] = SEED_LABEL_NAMES,
    trim: Callable[..., int] | None = None,
    result: bool = True,
    decoding: str = "greedy",
) -> dict[str, Any]:
    return text_answer(pred, find_entities(pred, labels, trim, decoding), labels, names, result)


def piece_offsets(text: str, pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets of ``pieces`` (wordpieces in order, ``##`` marking one glued to the one
    before) in ``text``, as the tokenizer gives them."""
    offsets, at = [], 0
    for piece in pieces:
        bare = piece.removeprefix("##")
        at = text.index(bare, at)
        offsets.append((at, at + len(bare)))
        at += len(bare)
    return offsets
