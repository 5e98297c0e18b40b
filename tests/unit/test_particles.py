"""Cutting Korean particles (조사) off entity ends: hand-made cases, the find_entities hook,
the setting, and the oracle F1 on the validation split."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import ner_core
import ner_model
import ner_particles
from ner_particles import trim_end
from ner_settings import HandlerSettings
from serving import corpus, paths
from study import eval_particles
from tests.unit.answers import answer_for, piece_offsets


def trimmed(text: str, entity: str, piece: str | None = None) -> str:
    """The entity left after trimming, where ``entity`` occurs first in ``text`` and its last
    wordpiece is ``piece`` (default: the entity is one wordpiece)."""
    start = text.index(entity)
    end = start + len(entity)
    piece_start = end - len(piece) if piece else start
    return text[start : trim_end(text, start, end, piece_start)]


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("서울에서 비가 왔다.", "서울에서", "서울"),
        ("삼성전자가 발표했다.", "삼성전자가", "삼성전자"),
        ("이순신은 조선의 무신이다.", "이순신은", "이순신"),
        ("일본의 수도", "일본의", "일본"),
        ("한국과 일본", "한국과", "한국"),
        ("부산으로 간다", "부산으로", "부산"),
        ("서울로 간다", "서울로", "서울"),  # 로 after ㄹ
        ("KBS는 보도했다", "KBS는", "KBS"),  # after Latin letters any particle fits
        ("상위 20%가 하위", "20%가", "20%"),
    ],
)
def test_a_single_particle_is_cut(text, entity, expected):
    assert trimmed(text, entity) == expected


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("서울에서는 비가 왔다.", "서울에서는", "서울"),
        ("정부에서의 역할", "정부에서의", "정부"),
        ("서울에도 눈이 왔다", "서울에도", "서울"),
        ("정부에서만 안다", "정부에서만", "정부"),
        ("경기도에서는 비가 왔다", "경기도에서는", "경기도"),
    ],
)
def test_a_chain_of_particles_is_cut(text, entity, expected):
    assert trimmed(text, entity) == expected


@pytest.mark.parametrize(
    ("text", "entity", "piece", "expected"),
    [
        ("3월에 만나자", "3월에", None, "3월"),
        ("1,000원을 냈다", "1,000원을", "000원을", "1,000원"),
        ("1,000원 냈다", "1,000원", "000원", "1,000원"),
        ("3명이 왔다", "3명이", None, "3명"),
    ],
)
def test_numbers_with_counters_keep_the_counter(text, entity, piece, expected):
    assert trimmed(text, entity, piece) == expected


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("미나 씨가 왔다", "미나", "미나"),  # 나 ("or") is never cut on its own
        ("미나는 갔다", "미나는", "미나"),
        ("미나가 왔다", "미나가", "미나"),
        ("이가 말했다", "이가", "이"),  # the surname 이 + subject 가
        ("이 씨가 말했다", "이", "이"),  # at least one character stays
        ("상하이에 간다", "상하이", "상하이"),  # 이 after a vowel is not the subject particle
        ("김고은 주연", "김고은", "김고은"),  # 은 after a vowel is not the topic particle
        ("봉하마을 방문", "봉하마을", "봉하마을"),  # 을 after a vowel is not the object particle
        ("종로 거리", "종로", "종로"),  # 로 after ㅇ is not the direction particle
        ("경기도 주민", "경기도", "경기도"),  # 도 only after another particle
        ("대만 정부", "대만", "대만"),
        ("우크라이나 사태", "우크라이나", "우크라이나"),
        ("한국시간 오전", "한국시간", "한국시간"),  # not a particle: nothing to cut
    ],
)
def test_names_that_end_like_a_particle_stay_whole(text, entity, expected):
    assert trimmed(text, entity) == expected


def test_the_list_alone_cannot_tell_a_name_from_a_name_plus_particle():
    """Without the entity type and the next wordpiece, 김정은 reads as 김정 + 은."""
    assert trimmed("김정은 위원장", "김정은") == "김정"


def served(text: str, pieces: list[str], tags: list[str]) -> list[str]:
    """The entity texts the served code answers for ``text`` cut into ``pieces`` (wordpieces
    in order, ``##`` marking one glued to the one before) tagged ``tags``, trimming on."""
    offsets = piece_offsets(text, pieces)
    labels = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "B-ORG", "I-PER", "I-LOC", "I-ORG"]
    pred = ner_core.TokenPredictions(text, pieces, offsets, [labels.index(t) for t in tags], [0.9] * len(tags))
    trim = ner_particles.trimmer(HandlerSettings(trim_particles=True))
    return [e["text"] for e in answer_for(pred, labels, trim=trim)["entities"]]


@pytest.mark.parametrize(
    ("text", "pieces", "tags", "expected"),
    [
        # three syllables, a common surname first, ending in 은 / 이: surname + given name
        (
            "회담에 박상은 대표가 나왔다",
            ["회담", "##에", "박상은", "대표", "##가", "나왔다"],
            ["O", "O", "B-PER", "O", "O", "O"],
            ["박상은"],
        ),
        ("송민이 감독이 말했다", ["송민이", "감독", "##이", "말했다"], ["B-PER", "O", "O", "O"], ["송민이"]),
        # the particle is its own wordpiece after the name: the name's end is not a particle
        ("한성은은 집에 갔다", ["한성은", "##은", "집", "##에", "갔다"], ["B-PER", "O", "O", "O", "O"], ["한성은"]),
        ("남궁은이 왔다", ["남궁은", "##이", "왔다"], ["B-PER", "O", "O"], ["남궁은"]),
        # two syllables: cutting would leave a bare surname
        ("임은 씨가 왔다", ["임은", "씨", "##가", "왔다"], ["B-PER", "O", "O", "O"], ["임은"]),
        ("권이 선수", ["권이", "선수"], ["B-PER", "O"], ["권이"]),
        # the guards do not stop real particles after a name
        ("박상은이 웃었다", ["박상은이", "웃었다"], ["B-PER", "O"], ["박상은"]),
        ("모두 한성은은 안다", ["모두", "한성은", "##은", "안다"], ["O", "B-PER", "I-PER", "O"], ["한성은"]),
        ("최하진이 골을 넣었다", ["최하진이", "골", "##을", "넣었다"], ["B-PER", "O", "O", "O"], ["최하진"]),
        ("하늘은 웃었다", ["하늘은", "웃었다"], ["B-LOC", "O"], ["하늘"]),  # not a person: the list decides
        ("윤아는 웃었다", ["윤아는", "웃었다"], ["B-PER", "O"], ["윤아"]),  # 는 ends no given name
        ("다온이 웃었다", ["다온이", "웃었다"], ["B-PER", "O"], ["다온"]),  # no surname first
        # a particle glued after a particle: a chain is still cut, anything else is not
        ("부산에서는 비가 왔다", ["부산에서", "##는", "비", "##가", "왔다"], ["B-LOC", "O", "O", "O", "O"], ["부산"]),
        ("대전으로부터 왔다", ["대전으로", "##부터", "왔다"], ["B-LOC", "O", "O"], ["대전"]),
        ("체육과를 나왔다", ["체육과", "##를", "나왔다"], ["B-ORG", "O", "O"], ["체육과"]),
    ],
)
def test_names_that_end_in_particle_looking_syllables_stay_whole(text, pieces, tags, expected):
    assert served(text, pieces, tags) == expected


@pytest.mark.parametrize(
    ("text", "pieces", "tags", "expected"),
    [
        # the model ends the person one syllable short; that syllable cannot be the particle
        # here (은 / 이 after a vowel): the name gets it back, whatever comes after the word
        (
            "송하은 씨가 왔다",
            ["송", "##하", "##은", "씨", "##가", "왔다"],
            ["B-PER", "I-PER", "O", "O", "O", "O"],
            ["송하은"],
        ),
        (
            "만난 사람은 송하은.",
            ["만난", "사람은", "송", "##하", "##은", "."],
            ["O", "O", "B-PER", "I-PER", "O", "O"],
            ["송하은"],
        ),
        ("송하은", ["송", "##하", "##은"], ["B-PER", "I-PER", "O"], ["송하은"]),
        (
            "최가은 선수",
            ["최", "##가", "##은", "선수"],
            ["B-PER", "I-PER", "O", "O"],
            ["최가은"],
        ),  # 가 kept by the guards first
        ("박소이 선수", ["박", "##소", "##이", "선수"], ["B-PER", "I-PER", "O", "O"], ["박소이"]),
        ("김지아 선수", ["김", "##지", "##아", "선수"], ["B-PER", "I-PER", "O", "O"], ["김지아"]),
        # a particle glued after the syllable: the syllable is the name's, whatever its sound
        (
            "경찰은 송하은에게 물었다",
            ["경찰은", "송", "##하", "##은", "##에게", "물었다"],
            ["O", "B-PER", "I-PER", "O", "O", "O"],
            ["송하은"],
        ),
        ("송민은이 왔다", ["송", "##민", "##은", "##이", "왔다"], ["B-PER", "I-PER", "O", "O", "O"], ["송민은"]),
        (
            "정민도에게 물었다",
            ["정", "##민", "##도", "##에게", "물었다"],
            ["B-PER", "I-PER", "O", "O", "O"],
            ["정민도"],
        ),
        # the syllable could be the particle here: the model's end stays
        (
            "장혁은 웃었다",
            ["장", "##혁", "##은", "웃었다"],
            ["B-PER", "I-PER", "O", "O"],
            ["장혁"],
        ),  # topic 은 after ㄱ
        ("헬렌이 웃었다", ["헬", "##렌", "##이", "웃었다"], ["B-PER", "I-PER", "O", "O"], ["헬렌"]),
        (
            "정민도 왔다",
            ["정", "##민", "##도", "왔다"],
            ["B-PER", "I-PER", "O", "O"],
            ["정민"],
        ),  # 도 "also" fits anything
        (
            "범인은 송하이다",
            ["범인은", "송", "##하", "##이", "##다"],
            ["O", "B-PER", "I-PER", "O", "O"],
            ["송하"],
        ),  # 이다: the copula
        # not the case: a longer word, another type, a next wordpiece that is not O or not one syllable
        ("김민수은 왔다", ["김", "##민", "##수", "##은", "왔다"], ["B-PER", "I-PER", "I-PER", "O", "O"], ["김민수"]),
        ("부산은 덥다", ["부", "##산", "##은", "덥다"], ["B-LOC", "I-LOC", "O", "O"], ["부산"]),
        ("송하은", ["송", "##하", "##은"], ["B-PER", "I-PER", "B-ORG"], ["송하", "은"]),
        ("송하은이 왔다", ["송", "##하", "##은이", "왔다"], ["B-PER", "I-PER", "O", "O"], ["송하"]),
        ("송하 은행", ["송", "##하", "은행"], ["B-PER", "I-PER", "O"], ["송하"]),  # not glued
    ],
)
def test_a_person_cut_before_a_name_syllable_gets_it_back(text, pieces, tags, expected):
    assert served(text, pieces, tags) == expected


def test_only_the_last_wordpiece_is_cut():
    # wordpieces 서울에서 | ##는: the chain's head lies in the earlier wordpiece, so it stays
    assert trimmed("서울에서는 비가", "서울에서는", piece="는") == "서울에서"
    # wordpieces 중국 | ##의: a last wordpiece that is all particle goes
    assert trimmed("중국의 경제", "중국의", piece="의") == "중국"


LABELS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "I-PER", "I-LOC"]
TEXT = "이순신은 서울에서 태어났다"


def hand_made_prediction() -> ner_core.TokenPredictions:
    return ner_core.TokenPredictions(
        text=TEXT,
        tokens=["이순", "##신은", "서울에서", "태어", "##났다"],
        offsets=[(0, 2), (2, 4), (5, 9), (10, 12), (12, 14)],
        label_ids=[LABELS.index(t) for t in ("B-PER", "I-PER", "B-LOC", "O", "O")],
        probs=[0.9, 0.8, 0.7, 0.99, 0.98],
    )


def test_trimming_shortens_entities_and_leaves_tokens_alone():
    pred = hand_made_prediction()
    plain = answer_for(pred, LABELS)
    clean = answer_for(pred, LABELS, trim=ner_particles.trimmer(HandlerSettings(trim_particles=True)))
    assert clean["result"] == plain["result"]
    assert [r["token"] for r in clean["result"]] == pred.tokens
    assert [(e["text"], e["label"], e["start"], e["end"], e["score"]) for e in clean["entities"]] == [
        ("이순신", "PER", 0, 3, 0.85),
        ("서울", "LOC", 5, 7, 0.7),
    ]
    assert all(TEXT[e["start"] : e["end"]] == e["text"] for e in clean["entities"])


def test_setting_off_leaves_the_spans_as_the_wordpieces_give_them():
    trim = ner_particles.trimmer(HandlerSettings(trim_particles=False))
    assert trim is None
    entities = answer_for(hand_made_prediction(), LABELS, trim=trim)["entities"]
    assert [(e["text"], e["start"], e["end"]) for e in entities] == [("이순신은", 0, 4), ("서울에서", 5, 9)]


def test_shipped_config_turns_trimming_on():
    raw = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))
    settings = HandlerSettings.from_mapping(raw["handler"])
    assert ner_particles.trimmer(settings) is ner_particles.trim_end


def test_oracle_f1_on_validation_rises_with_trimming(kmou_split):
    """Perfect token labels on the demo model's vocab: particles cost ~11 F1 points, the list
    wins nearly all of them back, and the name guards win more than they lose (docs/particles.md
    has the full table)."""
    path = kmou_split("val")
    vocab = paths.DEMO_MODEL_DIR / "vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"demo model vocab not found at {vocab} (train it with scripts/train_demo.py --export)")
    examples, _ = corpus.read_corpus(path)
    labels = corpus.build_label_map(examples)
    oracle = eval_particles.oracle_predictions(examples, ner_model.build_tokenizer(vocab), labels)
    before = eval_particles.entity_f1(examples, oracle, labels, None)["f1"]
    list_alone = eval_particles.make_trims(["list"])["list"]
    after = eval_particles.entity_f1(examples, oracle, labels, list_alone)["f1"]
    guarded = eval_particles.entity_f1(examples, oracle, labels, ner_particles.trim_end)["f1"]
    assert before < 0.90
    assert after > 0.98
    assert guarded > after + 0.001


def test_name_completion_serves_klue_persons_too():
    """KLUE-NER's person type is PS: the same completion, and nothing for its other types."""
    text = "송하은 씨가 왔다"
    context: dict[str, Any] = dict(next_piece=(2, 3), next_outside=True, piece_after=(4, 5))
    assert trim_end(text, 0, 2, 1, kind="PS", **context) == 3
    assert trim_end(text, 0, 2, 1, kind="OG", **context) == 2
    assert trim_end(text, 0, 2, 1, kind="PS", **{**context, "next_outside": False}) == 2
