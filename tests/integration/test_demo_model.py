"""The committed demo model, packaged by the user's own command and served, finds people and
places, with Korean particles cut off the entity spans as the shipped config does, and the entities
it is unsure of left out."""

from __future__ import annotations

import pytest

from serving import paths, tsctl

pytestmark = pytest.mark.skipif(not paths.demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}")


@pytest.fixture(scope="module")
def demo_model(server, build_archive, test_model_config):
    handler = {**test_model_config["handler"], "max_seq_length": 128, "window_stride": 32, "trim_particles": True}
    config = {**test_model_config, "handler": handler}  # trim_particles as config/model-config.yaml ships it
    name = tsctl.register(server, build_archive(paths.DEMO_MODEL_DIR, "demo_ner", config), workers=1)
    yield name
    tsctl.unregister(server, name)


@pytest.mark.parametrize(
    "sentence, person",
    [
        ("이순신은 조선 중기의 무신이다.", "이순신"),
        ("김대중 전 대통령은 2000년 노벨평화상을 받았다.", "김대중"),
    ],
)
def test_finds_the_person(server, demo_model, sentence, person):
    answer = tsctl.predict(server, demo_model, sentence).json()
    people = [e for e in answer["entities"] if e["label"] == "PER"]
    assert [e["text"] for e in people] == [person], answer["entities"]
    assert people[0]["label_name"] == "인명" and sentence[people[0]["start"] : people[0]["end"]] == person
    assert answer["result"][0]["tag"] == "B-PER"


def test_particles_are_cut_off_the_served_entity(server, demo_model):
    sentence = "삼성전자는 2024년 3월 서울에서 신제품을 발표했다."
    answer = tsctl.predict(server, demo_model, sentence).json()
    places = [e for e in answer["entities"] if e["label"] == "LOC"]
    assert [(e["text"], sentence[e["start"] : e["end"]]) for e in places] == [("서울", "서울")], answer["entities"]
    # the model tags the whole wordpiece, particle included; the per-token rows keep that
    assert {"token": "서울에서", "tag": "B-LOC"}.items() <= next(
        row for row in answer["result"] if row["token"] == "서울에서"
    ).items()


UNSURE = "블루문 카페의 주인은 친절했다."  # the demo model reads 블루 as a person, at a score of 0.40


def test_entities_under_the_models_own_threshold_are_left_out(server, demo_model, build_archive, test_model_config):
    """The demo model names min_entity_score 0.75 in its config.json; the shipped model config
    (null) serves it, and a model config's 0 brings every entity back. The per-token rows
    keep the argmax tag either way."""
    answer = tsctl.predict(server, demo_model, UNSURE).json()
    assert answer["entities"] == []
    assert (answer["result"][0]["token"], answer["result"][0]["tag"]) == ("블루", "B-PER")
    config = {
        **test_model_config,
        "handler": {**test_model_config["handler"], "max_seq_length": 128, "min_entity_score": 0},
    }
    name = tsctl.register(server, build_archive(paths.DEMO_MODEL_DIR, "demo_ner_every_score", config), workers=1)
    try:
        every = tsctl.predict(server, name, UNSURE).json()
    finally:
        tsctl.unregister(server, name)
    assert [(e["text"], e["label"]) for e in every["entities"]] == [("블루", "PER")] and every["entities"][0][
        "score"
    ] < 0.75
    assert every["result"] == answer["result"]
