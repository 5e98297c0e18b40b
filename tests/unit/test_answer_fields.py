"""The answer's fields, named once in ner_answer: text_answer builds exactly them, and the
README's example answer shows exactly them (the size bound is held to them in test_limits)."""

from __future__ import annotations

import json
import re

from ner_answer import ANSWER_FIELDS, ENTITY_FIELDS, ROW_FIELDS
from ner_core import TokenPredictions
from serving import paths
from tests.unit.answers import answer_for

LABELS = ["O", "B-PER", "I-PER"]
PRED = TokenPredictions("김구", ["김", "##구"], [(0, 1), (1, 2)], [1, 2], [0.99, 0.98])


def test_text_answer_builds_exactly_the_fields():
    answer = answer_for(PRED, LABELS)
    assert tuple(answer) == ANSWER_FIELDS
    assert [tuple(row) for row in answer["result"]] == [ROW_FIELDS, ROW_FIELDS]
    assert [tuple(entity) for entity in answer["entities"]] == [ENTITY_FIELDS]


def test_without_result_rows_the_answer_leaves_out_that_field_alone():
    answer = answer_for(PRED, LABELS, result=False)
    assert tuple(answer) == tuple(name for name in ANSWER_FIELDS if name != "result")


def readme_answer() -> dict:
    """The README's example answer (its ``...`` row left out)."""
    readme = (paths.ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r'```json\n(\{\n  "sentence".*?)```', readme, re.S)
    assert block, "the README's example answer (a json block starting with sentence) is missing"
    text = "\n".join(line for line in block.group(1).splitlines() if line.strip() != "...")
    return json.loads(re.sub(r",(\s*[\]}])", r"\1", text))


def test_the_readme_example_shows_exactly_the_fields():
    example = readme_answer()
    assert tuple(example) == ANSWER_FIELDS
    assert {tuple(row) for row in example["result"]} == {ROW_FIELDS}
    assert {tuple(entity) for entity in example["entities"]} == {ENTITY_FIELDS}
    assert all(example["sentence"][e["start"] : e["end"]] == e["text"] for e in example["entities"])
