"""Label sets beyond KMOU: KLUE-NER's six types get their Korean names with no setting, picked
by the label map's own type names; ``label_names`` still overrides; a KLUE-labelled model
answers with KLUE's tags and names through the handler."""

from __future__ import annotations

import json

import pytest

import ner_core
import ner_particles
from ner_labels import BUILTIN_LABEL_NAMES, KLUE_LABEL_NAMES, SEED_LABEL_NAMES
from ner_settings import HandlerSettings
from tests.conftest import KLUE_LABELS
from tests.unit.answers import answer_for, piece_offsets
from tests.unit.test_handler import GOOD, make_handler, run_batch


def test_klue_types_have_their_korean_names():
    assert dict(KLUE_LABEL_NAMES) == {
        "PS": "인명",
        "LC": "지명",
        "OG": "기관명",
        "DT": "날짜",
        "TI": "시간",
        "QT": "수량",
    }


def test_the_built_in_sets_share_no_type_name_so_the_label_map_picks_the_set():
    """The names are looked up by the entity type of each tag: a KMOU model's PER and a KLUE
    model's PS each find their own set's name. A set added later with a type name already
    taken must decide which name wins: this fails until it does."""
    assert not set(SEED_LABEL_NAMES) & set(KLUE_LABEL_NAMES)
    assert dict(BUILTIN_LABEL_NAMES) == {**SEED_LABEL_NAMES, **KLUE_LABEL_NAMES}
    assert HandlerSettings().label_names == BUILTIN_LABEL_NAMES


def test_label_names_override_klue_names_and_keep_the_others():
    names = HandlerSettings.from_mapping({"label_names": {"PS": "사람", "QT": "수치"}}).label_names
    assert (names["PS"], names["QT"], names["LC"], names["PER"]) == ("사람", "수치", "지명", "인명")


def klue_prediction() -> ner_core.TokenPredictions:
    text = "홍길동은 2024년 3월 서울에서 사과 3개를 샀다"
    tokens = ["홍길동", "##은", "2024년", "3월", "서울", "##에서", "사과", "3", "##개", "##를", "샀다"]
    offsets = piece_offsets(text, tokens)
    tags = ["B-PS", "O", "B-DT", "I-DT", "B-LC", "O", "O", "B-QT", "I-QT", "O", "O"]
    return ner_core.TokenPredictions(text, tokens, offsets, [KLUE_LABELS.index(t) for t in tags], [0.9] * len(tags))


def test_a_klue_answer_uses_klue_type_names_and_korean_names():
    answer = answer_for(klue_prediction(), KLUE_LABELS, BUILTIN_LABEL_NAMES)
    assert [(e["text"], e["label"], e["label_name"]) for e in answer["entities"]] == [
        ("홍길동", "PS", "인명"),
        ("2024년 3월", "DT", "날짜"),
        ("서울", "LC", "지명"),
        ("3개", "QT", "수량"),
    ]
    assert [r["predicted_tag"] for r in answer["result"]][:4] == ["인명", "O", "날짜", "날짜"]
    assert answer["result"][0]["tag"] == "B-PS"


def test_a_klue_person_keeps_a_name_that_ends_like_a_particle():
    """김정은 is a name as a KLUE PS as it is as a KMOU PER; a place is cut by the list alone."""
    text = "김정은 위원장"
    for kind, expected in [("PER", 3), ("PS", 3), ("LC", 2)]:
        assert ner_particles.trim_end(text, 0, 3, 0, kind=kind, next_piece=(4, 7)) == expected


@pytest.fixture(scope="module")
def klue_handler(klue_model_dir):
    return make_handler(klue_model_dir)


def test_a_klue_model_answers_with_klue_tags_and_names(klue_handler):
    texts = [GOOD, "삼성전자는 2024년 3월 서울에서 신제품을 발표했다.", "오후 3시에 사과 다섯 개를 샀다"]
    answers, statuses, _ = run_batch(klue_handler, [(json.dumps(texts).encode(), "application/json")])
    assert statuses == [200]
    klue_types = {t[2:] for t in KLUE_LABELS if t != "O"}
    rows = [row for answer in answers[0] for row in answer["result"]]
    entities = [e for answer in answers[0] for e in answer["entities"]]
    assert {row["tag"] for row in rows} <= set(KLUE_LABELS)
    assert {row["predicted_tag"] for row in rows} <= set(KLUE_LABEL_NAMES.values()) | {"O"}
    assert entities and {e["label"] for e in entities} <= klue_types
    assert all(e["label_name"] == KLUE_LABEL_NAMES[e["label"]] for e in entities)


def test_label_names_override_a_klue_models_names(klue_model_dir):
    handler = make_handler(
        klue_model_dir,
        label_names={
            **KLUE_LABEL_NAMES,
            "PS": "사람",
            "LC": "장소",
            "OG": "단체",
            "DT": "일자",
            "TI": "시각",
            "QT": "수치",
        },
    )
    answers, _, _ = run_batch(handler, [(GOOD, "text/plain")])
    names = {"PS": "사람", "LC": "장소", "OG": "단체", "DT": "일자", "TI": "시각", "QT": "수치"}
    assert answers[0]["entities"] and all(e["label_name"] == names[e["label"]] for e in answers[0]["entities"])
    assert {r["predicted_tag"] for r in answers[0]["result"]} <= set(names.values()) | {"O"}
