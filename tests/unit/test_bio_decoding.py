"""Constrained (BIO-consistent) decoding of the entities, with hand-made probability arrays:
the best label sequence under the BIO rules, the per-token ``result`` rows left as the argmax,
the setting, and the model-facing part on the tiny random BERT."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import yaml

import ner_core
import ner_model
from ner_core import TokenPredictions, constrained_label_ids
from ner_settings import HandlerSettings
from serving import paths
from tests.unit.answers import answer_for

LABELS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "I-PER", "I-LOC"]
TEXT = "가나 다라 마바"  # three wordpieces: 가나 | 다라 | 마바
OFFSETS = [(0, 2), (3, 5), (6, 8)]


def dist(**probs: float) -> list[float]:
    """One wordpiece's distribution: the named labels (``B_PER`` for ``B-PER``), the rest spread evenly."""
    named = {k.replace("_", "-"): v for k, v in probs.items()}
    rest = (1.0 - sum(named.values())) / (len(LABELS) - len(named))
    return [named.get(label, rest) for label in LABELS]


def prediction(rows: list[list[float]]) -> TokenPredictions:
    probs = torch.tensor(rows)
    top, ids = probs.max(dim=1)
    tokens = [TEXT[a:b] for a, b in OFFSETS[: len(rows)]]
    return TokenPredictions(TEXT, tokens, OFFSETS[: len(rows)], ids.tolist(), top.tolist(), 1, probs)


def tags(ids: list[int]) -> list[str]:
    return [LABELS[i] for i in ids]


def entities(pred: TokenPredictions, decoding: str) -> list[tuple[str, str, float]]:
    return [(e["text"], e["label"], e["score"]) for e in answer_for(pred, LABELS, decoding=decoding)["entities"]]


def test_a_consistent_argmax_is_kept_as_it_is():
    rows = [dist(B_PER=0.6, I_PER=0.3), dist(I_PER=0.7, B_PER=0.2), dist(O=0.9)]
    pred = prediction(rows)
    assert tags(constrained_label_ids(pred.distributions, LABELS)) == ["B-PER", "I-PER", "O"]
    assert entities(pred, "constrained") == entities(pred, "greedy") == [("가나 다라", "PER", 0.65)]


def test_an_inside_tag_without_its_beginning_is_repaired_from_the_probabilities():
    # argmax O, I-PER, I-PER: greedy makes an entity start with I-PER
    rows = [dist(O=0.5, B_PER=0.4), dist(I_PER=0.6, O=0.3), dist(I_PER=0.8)]
    pred = prediction(rows)
    assert tags(pred.label_ids) == ["O", "I-PER", "I-PER"]
    best = constrained_label_ids(pred.distributions, LABELS)
    # B-PER I-PER I-PER: 0.4 * 0.6 * 0.8 = 0.192 beats O B-PER I-PER (0.5 * rest * 0.8) and O O B-PER
    assert tags(best) == ["B-PER", "I-PER", "I-PER"]
    assert entities(pred, "greedy") == [("다라 마바", "PER", 0.7)]
    assert entities(pred, "constrained") == [("가나 다라 마바", "PER", 0.6)]


def test_an_inside_tag_at_the_start_of_the_text_is_not_allowed():
    rows = [dist(I_LOC=0.55, B_LOC=0.45), dist(O=0.9)]
    pred = prediction(rows)
    assert tags(constrained_label_ids(pred.distributions, LABELS)) == ["B-LOC", "O"]


def test_a_type_change_inside_an_entity_is_settled_by_the_whole_span():
    # argmax B-PER I-LOC I-LOC: greedy answers a one-piece PER and a two-piece LOC
    rows = [dist(B_PER=0.5, B_LOC=0.4), dist(I_LOC=0.6, I_PER=0.3), dist(I_LOC=0.7, I_PER=0.25)]
    pred = prediction(rows)
    assert [e[:2] for e in entities(pred, "greedy")] == [("가나", "PER"), ("다라 마바", "LOC")]
    # B-LOC I-LOC I-LOC: 0.4 * 0.6 * 0.7 = 0.168 > B-PER I-PER I-PER: 0.5 * 0.3 * 0.25 = 0.0375
    assert [e[:2] for e in entities(pred, "constrained")] == [("가나 다라 마바", "LOC")]


def test_the_result_rows_stay_the_argmax_token_for_token():
    rows = [dist(O=0.5, B_PER=0.4), dist(I_PER=0.6, O=0.3), dist(I_LOC=0.5, I_PER=0.4)]
    pred = prediction(rows)
    greedy, constrained = answer_for(pred, LABELS), answer_for(pred, LABELS, decoding="constrained")
    assert constrained["result"] == greedy["result"]
    assert [r["tag"] for r in constrained["result"]] == ["O", "I-PER", "I-LOC"]
    assert constrained["entities"] != greedy["entities"]


def brute_force(probs: np.ndarray) -> tuple[float, list[int]]:
    """The best BIO-consistent sequence by trying every sequence."""
    best: tuple[float, list[int]] = (-math.inf, [])
    for seq in itertools.product(range(len(LABELS)), repeat=len(probs)):
        t = tags(list(seq))
        if t[0].startswith("I-") or any(b.startswith("I-") and a[2:] != b[2:] for a, b in itertools.pairwise(t)):
            continue
        best = max(best, (sum(math.log(probs[i, s]) for i, s in enumerate(seq)), list(seq)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_viterbi_finds_the_best_consistent_sequence(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5))
    logits = rng.normal(size=(n, len(LABELS))) * 2
    logits[:, [LABELS.index("I-PER"), LABELS.index("I-LOC")]] += 1.5  # make inconsistent argmaxes likely
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    score, expected = brute_force(probs)
    got = constrained_label_ids(torch.tensor(probs), LABELS)
    assert sum(math.log(probs[i, s]) for i, s in enumerate(got)) == pytest.approx(score)
    assert got == expected


def test_empty_text():
    assert constrained_label_ids(torch.empty(0, len(LABELS)), LABELS) == []


def test_constrained_needs_the_distributions_and_a_known_mode():
    pred = TokenPredictions(TEXT, ["가나"], OFFSETS[:1], [LABELS.index("B-PER")], [0.9])
    assert entities(pred, "greedy") == [("가나", "PER", 0.9)]
    with pytest.raises(ValueError, match="distributions"):
        answer_for(pred, LABELS, decoding="constrained")
    with pytest.raises(ValueError, match="decoding"):
        answer_for(prediction([dist(O=0.9)]), LABELS, decoding="viterbi")


def test_setting_is_checked_and_the_shipped_config_decodes_constrained():
    assert HandlerSettings().bio_decoding == "constrained"
    assert HandlerSettings.from_mapping({"bio_decoding": "greedy"}).bio_decoding == "greedy"
    with pytest.raises(ValueError, match="bio_decoding"):
        HandlerSettings.from_mapping({"bio_decoding": "viterbi"})
    raw = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))
    assert HandlerSettings.from_mapping(raw["handler"]).bio_decoding == "constrained"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return ner_model.load_model(tiny_model_dir, HandlerSettings(max_seq_length=16, window_stride=4))


def test_predictions_carry_the_distribution_their_argmax_comes_from(tiny):
    texts = ["이순신은 조선 중기의 무신이다. " * 5, "서울"]  # a long text takes several windows
    for pred in ner_core.predict(tiny, texts):
        assert pred.distributions.shape == (len(pred.tokens), len(tiny.labels))
        assert pred.distributions.sum(dim=1) == pytest.approx(torch.ones(len(pred.tokens)), abs=1e-5)
        top, ids = pred.distributions.max(dim=1)
        assert ids.tolist() == pred.label_ids
        assert top.tolist() == pytest.approx(pred.probs, abs=1e-6)
        greedy = answer_for(pred, tiny.labels)
        constrained = answer_for(pred, tiny.labels, decoding="constrained")
        assert constrained["result"] == greedy["result"]
        assert all(constrained["sentence"][e["start"] : e["end"]] == e["text"] for e in constrained["entities"])
