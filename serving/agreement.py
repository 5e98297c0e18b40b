"""How far a serving path (ONNX Runtime, int8, bf16) answers like torch fp32: token-tag
agreement over every wordpiece, and entity F1. Packaging runs it before archiving: a path that
must be exact (ONNX Runtime fp32) is refused when one tag differs; the lossy ones (int8, bf16)
are measured and printed, on the KMOU validation corpus when it is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ner_core
import ner_model
from serving import corpus


@dataclass(frozen=True)
class Agreement:
    """One path against torch fp32 on the same texts."""

    texts: int
    tokens: int  # wordpieces compared
    agreeing: int  # wordpieces with the same tag
    entity_f1: float  # the path's entities scored against fp32's (exact type and characters)
    gold_f1_fp32: float | None = None  # both scored against a tagged corpus, when there was one
    gold_f1: float | None = None
    first_difference: str | None = None  # "text #3, wordpiece 7 '서울': B-LOC vs O"

    @property
    def rate(self) -> float:
        return self.agreeing / self.tokens if self.tokens else 1.0

    @property
    def exact(self) -> bool:
        return self.agreeing == self.tokens

    @property
    def f1_loss_points(self) -> float | None:
        if self.gold_f1 is None or self.gold_f1_fp32 is None:
            return None
        return 100 * (self.gold_f1_fp32 - self.gold_f1)

    def summary(self, name: str, where: str) -> str:
        line = (
            f"{name} against torch fp32 on {self.texts} {where}: token-tag agreement {100 * self.rate:.2f} % "
            f"({self.agreeing} of {self.tokens} wordpieces), entity F1 against fp32's entities {self.entity_f1:.4f}"
        )
        if self.f1_loss_points is not None:
            line += (
                f"; entity F1 against the corpus {self.gold_f1_fp32:.4f} (fp32) -> {self.gold_f1:.4f} "
                f"({-self.f1_loss_points:+.2f} points)"
            )
        return line


def _entities(ner: ner_model.NerModel, predictions: Sequence[ner_core.TokenPredictions]) -> list[set]:
    return [{e.span for e in ner_core.find_entities(p, ner.labels)} for p in predictions]


def compare(
    reference: ner_model.NerModel,
    candidate: ner_model.NerModel,
    texts: Sequence[str],
    gold: Sequence[corpus.Example] | None = None,
) -> Agreement:
    """``candidate``'s tags and entities against ``reference``'s (torch fp32) on ``texts``;
    with ``gold`` (the texts' corpus examples) both are also scored against the markup."""
    texts = list(texts)
    ref = ner_core.predict(reference, texts)
    got = ner_core.predict(candidate, texts)
    tokens = agreeing = 0
    first = None
    for n, (r, g) in enumerate(zip(ref, got, strict=True)):
        for i, (a, b) in enumerate(zip(r.label_ids, g.label_ids, strict=True)):
            tokens += 1
            agreeing += a == b
            if a != b and first is None:
                first = f"text #{n}, wordpiece {i} {r.tokens[i]!r}: {reference.labels[a]} vs {candidate.labels[b]}"
    ref_entities, got_entities = _entities(reference, ref), _entities(candidate, got)
    entity_f1 = (
        corpus.score(ref_entities, got_entities)["overall"]["f1"]
        if any(ref_entities)
        else float(ref_entities == got_entities)
    )
    gold_f1 = gold_f1_fp32 = None
    if gold is not None:
        truth = [set(ex.spans) for ex in gold]
        gold_f1_fp32 = corpus.score(truth, ref_entities)["overall"]["f1"]
        gold_f1 = corpus.score(truth, got_entities)["overall"]["f1"]
    return Agreement(len(texts), tokens, agreeing, entity_f1, gold_f1_fp32, gold_f1, first)


def texts_to_compare(tagged: Path | None, limit: int = 0) -> tuple[list[str], list[corpus.Example] | None, str]:
    """The texts to compare on: a tagged corpus's (with its examples) when the file exists,
    else the built-in sample sentences; and words naming them."""
    if tagged is not None and Path(tagged).is_file():
        examples, _ = corpus.read_corpus(Path(tagged))
        examples = examples[:limit] if limit else examples
        return [ex.text for ex in examples], examples, f"sentences of {Path(tagged).name}"
    return list(corpus.SAMPLE_SENTENCES), None, "built-in sample sentences"
