"""ner_labels: the one place for what a label means, torch-free, one span order."""

from __future__ import annotations

import subprocess
import sys

import ner_core
import ner_labels
from ner_labels import SEED_LABEL_NAMES, entity_type, is_inside, ratsnlp_labels, spans_to_tags
from serving import corpus


def test_imports_without_torch():
    code = "import sys, ner_labels, ner_settings, ner_wire; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tags_and_types():
    assert [entity_type(t) for t in ("B-PER", "I-LOC", "O", "[CLS]", "B-")] == ["PER", "LOC", None, None, None]
    assert [is_inside(t) for t in ("I-PER", "B-PER", "O", "I-", "[SEP]")] == [True, False, False, False, False]
    labels = ratsnlp_labels(["PER", "LOC"])
    assert labels == ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "I-PER", "I-LOC"]
    assert set(SEED_LABEL_NAMES) == set(ner_labels.KMOU_TYPES)


def test_one_span_order_from_corpus_to_tags_to_entities():
    """A corpus span, its wordpiece tags grouped again, and a found entity: all (type, start, end)."""
    example = corpus.parse_tagged("<이순신:PER>은 <조선:LOC>")
    assert example.spans == [("PER", 0, 3), ("LOC", 5, 7)]
    offsets = [(0, 2), (2, 3), (3, 4), (5, 7)]  # 이순 ##신 ##은 조선
    tags = spans_to_tags(offsets, example.spans)
    assert tags == ["B-PER", "I-PER", "O", "B-LOC"]
    assert ner_core.group_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert ner_core.Entity("PER", 0, 3, 0.9).span == example.spans[0]


def test_the_tutorial_names_come_from_the_same_table():
    from bench.seed_handler import tutorial_label_names

    labels = ratsnlp_labels()
    names = tutorial_label_names(labels)
    assert names[labels.index("B-NOH")] == names[labels.index("I-NOH")] == "기타 수량표현"
    assert names[labels.index("O")] == "O" and names[labels.index("[CLS]")] == "[CLS]"
