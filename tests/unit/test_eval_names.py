"""The names probe: its sentences, how it scores a name, and the committed demo model on it
(docs/names.md has the table)."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

import ner_model
import ner_particles
from ner_settings import HandlerSettings
from serving import paths
from study import eval_names, train_demo
from study.eval_names import ProbeSentence, outcome


def test_every_name_once_at_its_offsets_with_particles_that_fit():
    probe = eval_names.sentences()
    names = [s.name for s in probe]
    assert len(names) == len(set(names)) == len(eval_names.SURNAMES) * len(eval_names.GIVEN_NAMES)
    assert {s.frame for s in probe} == set(eval_names.FRAMES)
    for s in probe:
        assert s.name[1:] == s.given and s.name[0] in eval_names.SURNAMES
        following = s.text[s.end : s.end + 1]
        if s.frame == "particle" and following not in ("에",):
            vowel = ner_particles.final_consonant(s.name[-1]) == 0
            assert following in ("가", "는", "를", "와") if vowel else following in ("이", "은", "을", "과")
    # most names end in a syllable that also reads as a particle
    assert sum(s.given in eval_names.PARTICLE_LIKE for s in probe) > len(probe) / 2
    assert probe[0].text == "김하은 씨가 어제 서울에 도착했다."


@pytest.mark.parametrize(
    ("entities", "expected"),
    [
        ([("PER", 0, 3)], "whole"),
        ([("PER", 0, 2)], "cut"),
        ([("PER", 0, 4)], "long"),
        ([], "missed"),
        ([("ORG", 0, 3)], "missed"),
        ([("PER", 5, 7)], "missed"),  # another person elsewhere
        ([("PER", 0, 2), ("PER", 5, 7)], "cut"),
    ],
)
def test_outcome_of_a_name(entities, expected):
    sentence = ProbeSentence("송하은이 왔다 박민", 0, 3, "particle", "하은")
    assert outcome(sentence, entities) == expected


def test_the_training_names_are_not_the_probes():
    """Made-up names in entity swapping leave the probe's given names unseen."""
    assert not set(train_demo.SWAP_GIVEN_NAMES) & set(eval_names.GIVEN_NAMES)


def test_committed_demo_model_keeps_names_whole():
    """Served as the shipped config reads entities, the demo model keeps most names whole, and
    the name completion is what keeps the ones it tags a syllable short."""
    if not paths.demo_model_available():
        pytest.skip(f"no demo model in {paths.DEMO_MODEL_DIR}; make it with scripts/train_demo.py --export")
    settings = HandlerSettings.from_mapping(yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))["handler"])
    ner = ner_model.load_model(paths.DEMO_MODEL_DIR, HandlerSettings(torch_threads=0))
    probe = eval_names.sentences()
    counts: dict[str, Counter] = {
        way: eval_names.tally(probe, found)["all"]
        for way, found in eval_names.read_each_way(ner, probe, settings).items()
    }
    served = counts["constrained, trimmed (as served)"]
    before = counts["constrained, trimmed, no name completion"]
    assert served["whole"] >= 0.9 * len(probe), served
    assert served["cut"] <= 0.05 * len(probe), served
    assert before["cut"] > 2 * served["cut"], (before, served)
