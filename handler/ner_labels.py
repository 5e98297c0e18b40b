"""What a label means: the one place for tags, entity types, their names and spans. Plain
Python, no torch: the handler reads it inside the archive, the tools and the tests beside it.

A tag is ``O``, a special label (``[CLS]``, ``[SEP]``, ...) or ``B-TYPE`` / ``I-TYPE``. A span is
``(type, start, end)`` everywhere: a corpus entity (character offsets, ``end`` exclusive), an
entity the model found (``ner_core.Entity.span``) and a group of wordpiece tags
(``ner_core.group_entities``: first and last wordpiece).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

Span = tuple[str, int, int]  # (type, start, end)

SPECIAL_LABELS = ("[CLS]", "[SEP]", "[PAD]", "[MASK]")  # ratsnlp's, ahead of "O" in its label map
KMOU_TYPES = ("PER", "LOC", "ORG", "DAT", "TIM", "DUR", "MNY", "PNT", "NOH", "POH")  # KMOU's entity types

# The tutorial's Korean names for the KMOU / ratsnlp entity types.
SEED_LABEL_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "PER": "인명",
        "LOC": "지명",
        "ORG": "기관명",
        "DAT": "날짜",
        "TIM": "시간",
        "DUR": "기간",
        "MNY": "통화",
        "PNT": "비율",
        "NOH": "기타 수량표현",
        "POH": "기타",
    }
)

# KLUE-NER's six entity types (its 13 tags: B-/I- of these, and O), named as their KMOU counterparts are.
KLUE_LABEL_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "PS": "인명",
        "LC": "지명",
        "OG": "기관명",
        "DT": "날짜",
        "TI": "시간",
        "QT": "수량",
    }
)

# Every built-in name, by entity type: the label sets share no type name, so a model's label map
# (its tags' types) picks its own set's names with no setting; label_names overrides any of them.
BUILTIN_LABEL_NAMES: Mapping[str, str] = MappingProxyType({**SEED_LABEL_NAMES, **KLUE_LABEL_NAMES})


def entity_type(tag: str) -> str | None:
    """``B-PER`` / ``I-PER`` -> ``PER`` (the key of the label names); ``O`` and special labels -> None."""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BI":
        return tag[2:]
    return None


def is_inside(tag: str) -> bool:
    """Whether the tag continues an entity (``I-TYPE``)."""
    return tag[:1] == "I" and entity_type(tag) is not None


def ratsnlp_labels(types: Iterable[str] = KMOU_TYPES) -> list[str]:
    """ratsnlp's label order: specials, O, then the B- tags, then the I- tags."""
    types = list(types)
    return [*SPECIAL_LABELS, "O", *[f"B-{t}" for t in types], *[f"I-{t}" for t in types]]


def spans_to_tags(offsets: Sequence[tuple[int, int]], spans: Sequence[Span]) -> list[str]:
    """BIO tag per wordpiece: a wordpiece whose start lies inside an entity is ``B-`` if it is
    the entity's first wordpiece, else ``I-``; any other wordpiece is ``O``."""
    tags, seen = [], set()
    for start, _ in offsets:
        entity = next((i for i, (_, a, b) in enumerate(spans) if a <= start < b), None)
        if entity is None:
            tags.append("O")
            continue
        tags.append(("I-" if entity in seen else "B-") + spans[entity][0])
        seen.add(entity)
    return tags
