"""The shipped limits agree with each other: config/config.properties (request and response size,
timeout; the Kubernetes copies too) and config/model-config.yaml (text length, texts per request,
token budget, answer size, batch size, response timeout).

- every request the handler's limits allow fits the frontend's max_request_size, so refusals are
  the handler's worded JSON, not the frontend's bare 413;
- the largest legal answer fits max_response_bytes, which sits well under max_response_size;
- a text of ordinary Korean at max_text_chars fits the token budget;
- the worst legal batch finishes well within the response timeout on a kcbert-base-sized model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

import ner_core
import ner_model
from ner_answer import ANSWER_FIELDS, ENTITY_FIELDS, ROW_FIELDS, display_tag, shape_answer
from ner_core import TokenPredictions
from ner_settings import HandlerSettings
from ner_wire import ParsedRequest, dumps
from serving import paths
from tests.unit.answers import answer_for

ROOT = paths.ROOT
KCBERT_VOCAB = paths.RATSNLP_CHECKPOINT / "pretrained" / "vocab.txt"
LABELS = (ROOT / "demo_model" / "label_map.txt").read_text(encoding="utf-8").split()
# Measured: a kcbert-base-shaped model (12 layers, hidden 768) served with the shipped config
# (1 thread a worker, windows of 128 batched by max_batch_tokens 256) on this project's 2-core
# VM (AMD EPYC): a full batch of 8 requests at the token budget took 31.3 s of a worker's CPU
# time, 2.35 ms per model-input token, tokenising and answering included (scripts/worst_case.py,
# docs/reliability.md; in-process forward alone: 2.03 ms). Rounded up.
SECONDS_PER_TOKEN_BERT_BASE = 0.0024
# The worst a character can cost: 12 bytes in a request (an emoji as a JSON surrogate-pair
# escape), 6 in an answer (a control character as \u00XX; UTF-8 takes at most 4).
REQUEST_BYTES_PER_CHAR, ANSWER_BYTES_PER_CHAR = 12, 6
ORDINARY_KOREAN = (
    "이순신은 1592년 임진왜란 때 한산도 앞바다에서 일본 수군을 크게 무찔렀다. 서울시는 내년 3월부터 "
    "시내버스 요금을 150원 올린다고 밝혔다. 삼성전자는 2024년 1분기 영업이익이 6조 6천억 원으로 "
    "잠정 집계됐다고 5일 공시했다. 국립중앙박물관은 다음 달 특별전을 연다. "
)


def properties(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


@pytest.fixture(scope="module")
def server() -> dict[str, str]:
    return properties(ROOT / "config" / "config.properties")


@pytest.fixture(scope="module")
def model_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "model-config.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def settings(model_config) -> HandlerSettings:
    return HandlerSettings.from_mapping(model_config["handler"])


def json_len(value) -> int:
    return len(dumps(value))


# Every field of an answer with its smallest value: the bound adds each variable field's longest
# value (above: texts, wordpieces, tag and type names). A field added to the answer (ner_answer's
# field lists) fails test_the_bound_counts_every_answer_field until it is counted here.
TEXT_TEMPLATE = {"sentence": "", "result": [], "entities": []}
ROW_TEMPLATE = {"token": "", "predicted_tag": "", "top_prob": "0.0000", "tag": ""}
ENTITY_TEMPLATE = {"text": "", "label": "", "label_name": "", "start": 0, "end": 0, "score": 0.0001}


def test_the_bound_counts_every_answer_field():
    assert tuple(TEXT_TEMPLATE) == ANSWER_FIELDS
    assert tuple(ROW_TEMPLATE) == ROW_FIELDS
    assert tuple(ENTITY_TEMPLATE) == ENTITY_FIELDS


def worst_answer_bytes(settings: HandlerSettings, labels: list[str], vocab: list[str], max_request_size: int) -> int:
    """An upper bound on the bytes of any answer the handler can give under ``settings``.

    Per request: at most ``max_texts`` texts of ``max_text_chars`` characters, echoed in
    "sentence" and, at most once more, in the entity texts (entities do not overlap); at most
    ``max_request_tokens`` wordpieces in all (each window costs its wordpieces plus 2), each
    one "result" row and at most one entity; a KServe v2 answer wraps each answer in a JSON
    string (at most doubling it) and echoes the request's id (at most the request's size).
    """
    names = [display_tag(label, settings.label_names) for label in labels]

    def longest(values: Iterable[str]) -> int:
        return max(json_len(v) for v in values)

    row = json_len(ROW_TEMPLATE) + 2 + longest(vocab) + longest(names) + longest(labels)
    digits = len(str(settings.max_text_chars))
    entity = (
        json_len({**ENTITY_TEMPLATE, "start": 10**digits, "end": 10**digits})
        + 2
        + longest(labels)
        + longest(settings.label_names.values())
    )
    per_text = json_len(TEXT_TEMPLATE) + 2
    texts = settings.max_texts_per_request
    plain = texts * (per_text + 2 * ANSWER_BYTES_PER_CHAR * settings.max_text_chars) + settings.max_request_tokens * (
        row + entity
    )
    return 2 * plain + max_request_size + 1024


def vocabularies() -> list[Path]:
    return [ROOT / "demo_model" / "vocab.txt", *([KCBERT_VOCAB] if KCBERT_VOCAB.is_file() else [])]


def test_the_frontend_admits_every_request_the_handler_allows(server, settings):
    largest = settings.max_texts_per_request * (settings.max_text_chars * REQUEST_BYTES_PER_CHAR + 4) + 1024
    assert largest <= int(server["max_request_size"]), (largest, server["max_request_size"])


@pytest.mark.parametrize("vocab", vocabularies(), ids=lambda p: p.parent.name)
def test_the_largest_legal_answer_fits_with_margin(server, settings, vocab):
    words = ner_model.read_vocab(vocab)
    worst = worst_answer_bytes(settings, LABELS, words, int(server["max_request_size"]))
    assert worst <= settings.max_response_bytes, (worst, settings.max_response_bytes)
    assert 2 * settings.max_response_bytes <= int(server["max_response_size"])


def test_the_bound_holds_for_an_adversarial_answer(settings):
    """The formula is an upper bound: an answer built to be as large as the limits allow (a
    sentence of control characters, the longest wordpiece everywhere, an entity per wordpiece)
    stays under it."""
    small = HandlerSettings(max_text_chars=300, max_texts_per_request=3, max_request_tokens=256)
    vocab = ["[UNK]", "##가나다라마바사아자차카타파하"]
    chars, per_text = small.max_text_chars, (small.max_request_tokens - 2) // small.max_texts_per_request
    text = "\x01" * chars
    b_tags = [i for i, label in enumerate(LABELS) if label.startswith("B-")]
    pred = TokenPredictions(
        text,
        [vocab[1]] * per_text,
        [(i, i + 1) for i in range(per_text - 1)] + [(per_text - 1, chars)],
        [b_tags[i % len(b_tags)] for i in range(per_text)],
        [0.0001] * per_text,
    )
    answers = [answer_for(pred, LABELS, small.label_names)] * small.max_texts_per_request
    request = ParsedRequest([text] * 3, is_list=True, protocol="v2", request_id="x" * 1000)
    actual = json_len(shape_answer(request, answers, model_name="m", model_version="1", request_id="r"))
    assert actual <= worst_answer_bytes(small, LABELS, vocab, 1000)


def test_a_text_of_ordinary_korean_at_the_length_limit_fits_the_token_budget(settings):
    text = (ORDINARY_KOREAN * (settings.max_text_chars // len(ORDINARY_KOREAN) + 1))[: settings.max_text_chars]
    for vocab in vocabularies():
        cost = ner_core.encode_windows(ner_model.build_tokenizer(vocab), settings, [text])[0].cost
        assert settings.max_request_tokens * 0.75 <= cost <= settings.max_request_tokens, (vocab, cost)


def test_the_worst_legal_batch_finishes_well_within_the_response_timeout(server, model_config, settings):
    worst_batch = model_config["batchSize"] * settings.max_request_tokens * SECONDS_PER_TOKEN_BERT_BASE
    timeout = model_config["responseTimeout"]
    assert worst_batch <= timeout / 2, (worst_batch, timeout)
    assert timeout <= int(server["default_response_timeout"])


def test_one_request_may_fill_at_least_one_window(settings):
    assert (
        settings.max_request_tokens >= settings.max_seq_length and settings.max_batch_tokens >= settings.max_seq_length
    )


@pytest.mark.parametrize(
    "copy", ["config/k8s/pod-config.properties", "config/k8s/kserve-config.properties", "container/config.properties"]
)
def test_the_container_and_kubernetes_server_configs_keep_the_same_limits(server, copy):
    theirs = properties(ROOT / copy)
    for key in ("max_request_size", "max_response_size", "default_response_timeout", "job_queue_size"):
        assert theirs[key] == server[key], (copy, key)


def test_json_len_counts_utf8_bytes():
    assert json_len("가") == len(json.dumps("가", ensure_ascii=False).encode()) == 5


def test_the_settings_defaults_are_the_shipped_values():
    """One source of truth: config/model-config.yaml states every handler setting, each equal to
    HandlerSettings()'s default, so a tool that builds HandlerSettings() measures what ships."""
    shipped = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))["handler"]
    defaults = {f.name: getattr(HandlerSettings(), f.name) for f in dataclasses.fields(HandlerSettings)}
    defaults.pop("label_names")  # the tutorial's names (ner_labels.SEED_LABEL_NAMES); a config may rename some
    assert shipped == defaults
