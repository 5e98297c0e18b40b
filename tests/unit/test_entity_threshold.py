"""The entity score threshold (``min_entity_score``): entities scored below it are left out of
``entities``, the per-token rows stay; the setting is checked; a model names its own threshold
in config.json (task_specific_params), which the setting overrides."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from transformers import BertConfig

import ner_core
import ner_model
from ner_core import TokenPredictions
from ner_settings import HandlerSettings
from serving import corpus, paths
from study import eval_decoding
from tests.unit.answers import answer_for

LABELS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "I-PER", "I-LOC"]
TEXT = "가나 다라 마바"


def prediction(*rows: tuple[str, float]) -> TokenPredictions:
    """One wordpiece per word of TEXT, each with its argmax tag and probability."""
    ids = [LABELS.index(tag) for tag, _ in rows]
    return TokenPredictions(TEXT, TEXT.split(), [(0, 2), (3, 5), (6, 8)], ids, [p for _, p in rows])


def test_entities_below_the_threshold_are_left_out_and_the_rows_stay():
    pred = prediction(("B-PER", 0.9), ("O", 0.8), ("B-LOC", 0.6))
    every = ner_core.find_entities(pred, LABELS)
    assert [(e.label, e.score) for e in every] == [("PER", 0.9), ("LOC", 0.6)]
    assert [e.label for e in ner_core.find_entities(pred, LABELS, min_score=0.6)] == [
        "PER",
        "LOC",
    ]  # at the threshold: kept
    assert [e.label for e in ner_core.find_entities(pred, LABELS, min_score=0.61)] == ["PER"]
    assert ner_core.find_entities(pred, LABELS, min_score=0.95) == []
    assert [row["tag"] for row in answer_for(pred, LABELS)["result"]] == ["B-PER", "O", "B-LOC"]


def test_an_entity_is_scored_by_the_mean_of_its_labels():
    pred = prediction(("B-PER", 0.9), ("I-PER", 0.5), ("O", 0.9))  # mean 0.7
    assert [e.score for e in ner_core.find_entities(pred, LABELS, min_score=0.7)] == [0.7]
    assert ner_core.find_entities(pred, LABELS, min_score=0.71) == []


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), (0.75, 0.75), (0.5, 0.5)])
def test_the_setting_takes_null_or_a_number_in_range(value, expected):
    assert HandlerSettings.from_mapping({"min_entity_score": value}).min_entity_score == expected


@pytest.mark.parametrize("value", [True, "0.8", 1, 1.5, -0.1, math.nan, math.inf, [0.5]])
def test_the_setting_refuses_what_is_not_a_threshold(value):
    with pytest.raises(ValueError, match="min_entity_score"):
        HandlerSettings.from_mapping({"min_entity_score": value})


def config(params) -> BertConfig:
    made = BertConfig()
    if params is not None:
        made.task_specific_params = params
    return made


@pytest.mark.parametrize(
    "params, expected",
    [
        (None, 0.0),
        ({}, 0.0),
        ({"summarization": {"num_beams": 4}}, 0.0),
        ({ner_model.TASK: {}}, 0.0),
        ({ner_model.TASK: {"min_entity_score": 0.75}}, 0.75),
    ],
)
def test_a_model_names_its_own_threshold_in_its_config(params, expected):
    assert ner_model.model_threshold(config(params)) == expected


@pytest.mark.parametrize("value", [1.0, -0.5, "0.7", True, None])
def test_a_models_threshold_out_of_range_stops_the_load(value):
    with pytest.raises(ner_model.ModelLoadError, match="min_entity_score"):
        ner_model.model_threshold(config({ner_model.TASK: {"min_entity_score": value}}))


def test_the_setting_overrides_the_models_own(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    assert ner_model.load_model(model_dir, HandlerSettings()).min_entity_score == 0.0  # names none
    raw = json.loads((model_dir / "config.json").read_text())
    raw["task_specific_params"] = {ner_model.TASK: {"min_entity_score": 0.6}}
    (model_dir / "config.json").write_text(json.dumps(raw))
    assert ner_model.load_model(model_dir, HandlerSettings()).min_entity_score == 0.6
    assert ner_model.load_model(model_dir, HandlerSettings(min_entity_score=0.0)).min_entity_score == 0.0
    assert ner_model.load_model(model_dir, HandlerSettings(min_entity_score=0.9)).min_entity_score == 0.9


def test_the_demo_model_names_the_threshold_chosen_on_half_the_validation_split():
    """The rule of study/eval_decoding.py (the best F1 on the even-numbered validation
    sentences, ties to the lower threshold) picks what demo_model/config.json names, and it
    gains on the odd-numbered sentences, which the choice never saw."""
    if not paths.demo_model_available():
        pytest.skip(f"no demo model in {paths.DEMO_MODEL_DIR}")
    if not (paths.SHARED_DATA / "val.txt").is_file():
        pytest.skip(f"KMOU corpus not found at {paths.SHARED_DATA}")
    ner = ner_model.load_model(paths.DEMO_MODEL_DIR, HandlerSettings(runtime="torch", torch_threads=0))
    examples = corpus.read_corpus(paths.SHARED_DATA / "val.txt")[0]
    preds = ner_core.predict(ner, [ex.text for ex in examples])
    scan = eval_decoding.threshold_scan([set(ex.spans) for ex in examples], preds, ner)
    assert ner.min_entity_score == scan["chosen"] == 0.75
    odd = {row["threshold"]: row["odd"]["f1"] for row in scan["rows"]}
    assert odd[0.75] > odd[0.0] + 0.01
