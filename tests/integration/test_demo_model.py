"""The committed demo model, packaged by the user's own command and served, finds people."""

from __future__ import annotations

import pytest

import repo
import tsctl
from serving import TEST_MODEL_CONFIG, build_archive, demo_model_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not demo_model_available(), reason=f"no demo model at {repo.DEMO_MODEL_DIR}"),
]


@pytest.fixture(scope="module")
def demo_model(server, model_store):
    config = {**TEST_MODEL_CONFIG, "handler": {**TEST_MODEL_CONFIG["handler"], "max_seq_length": 128, "window_stride": 32}}
    name = tsctl.register(server, build_archive(repo.DEMO_MODEL_DIR, model_store, "demo_ner", config), workers=1)
    yield name
    tsctl.unregister(server, name)


@pytest.mark.parametrize("sentence, person", [
    ("이순신은 조선 중기의 무신이다.", "이순신"),
    ("김대중 전 대통령은 2000년 노벨평화상을 받았다.", "김대중"),
])
def test_finds_the_person(server, demo_model, sentence, person):
    answer = tsctl.predict(server, demo_model, sentence).json()
    people = [e for e in answer["entities"] if e["label"] == "PER"]
    assert [e["text"] for e in people] == [person], answer["entities"]
    assert people[0]["label_name"] == "인명" and sentence[people[0]["start"]:people[0]["end"]] == person
    assert answer["result"][0]["tag"] == "B-PER"
