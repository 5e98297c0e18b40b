"""The wire format: every accepted request shape, every refusal with its message, options, and
the answer-size guard. Edge inputs were found by the bad-input matrix against a real TorchServe
(tests/integration/test_bad_inputs.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import ner_core
import ner_model
from ner_answer import checked_size
from ner_wire import InputError, Options, ServerError, parse_body, parse_options

LIMITS: dict[str, Any] = dict(max_chars=50, max_texts=3)
TEXT = "이순신은 조선 중기의 무신이다."


@pytest.mark.parametrize(
    "body, content_type, texts, is_list",
    [
        (TEXT.encode(), "application/octet-stream", [TEXT], False),  # raw bytes
        (TEXT, "text/plain", [TEXT], False),  # TorchServe decoded text/*
        (TEXT.encode(), "", [TEXT], False),
        (json.dumps(TEXT).encode(), "", [TEXT], False),  # a JSON string the seed page posts
        (TEXT, "application/json", [TEXT], False),  # decoded JSON string
        ({"sentence": TEXT}, "application/json", [TEXT], False),
        ({"text": TEXT}, "application/json", [TEXT], False),
        (json.dumps({"text": TEXT}).encode(), "application/x-anything", [TEXT], False),
        (["가", "나"], "application/json", ["가", "나"], True),
        (b"[not json] but text", "", ["[not json] but text"], False),  # looks like JSON, is text
        ('{"sentence": 1}', "text/plain", ['{"sentence": 1}'], False),  # text/plain is never JSON
    ],
)
def test_accepted_shapes(body, content_type, texts, is_list):
    parsed = parse_body(body, content_type, **LIMITS)
    assert parsed.texts == texts and parsed.is_list is is_list


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"", "", r"empty or blank \(0 characters\)"),
        (" \n\t ", "text/plain", r"empty or blank \(4 characters\)"),
        (b"\xff\xfe", "text/plain", "not valid UTF-8: byte 0xff at position 0"),
        (b'{"sentence": ', "application/json", "not valid JSON"),
        (None, "application/json", "received JSON null"),
        (3, "application/json", "received a JSON number"),
        (True, "application/json", "received a JSON boolean"),
        (
            {"x": "가"},
            "application/json",
            r"exactly one of \"sentence\" or \"text\", received a JSON object with keys \['x'\]",
        ),
        ({"sentence": "가", "text": "나"}, "application/json", "exactly one of"),
        ({"sentence": 5}, "application/json", '"sentence" must be a string, received a JSON number'),
        ([], "application/json", "JSON list is empty"),
        (["가"] * 4, "application/json", "JSON list has 4 texts; the limit is 3"),
        (["가", 1], "application/json", "list item 1 must be a string"),
        (["가", " "], "application/json", "list item 1 is empty or blank"),
        ("가" * 51, "text/plain", "text has 51 characters; the limit is 50"),
        (b"[" * 100000 + b"]" * 100000, "application/json", "nested too deeply"),
    ],
)
def test_refusals_say_what_was_received(body, content_type, message):
    with pytest.raises(InputError, match=message) as info:
        parse_body(body, content_type, **LIMITS)
    assert info.value.status == 400
    body = info.value.body()
    assert body["error"] == str(info.value) and "JSON list of strings" in body["accepted"]


def test_error_messages_never_echo_the_text():
    secret = "비밀스러운 이름 홍길동"
    with pytest.raises(InputError) as info:
        parse_body({"sentence": secret, "text": secret}, "application/json", **LIMITS)
    assert "홍길동" not in json.dumps(info.value.body(), ensure_ascii=False)


@pytest.mark.parametrize(
    "body, content_type, where",
    [
        (
            {"sentence": "서울\ud800에서"},
            "application/json",
            '"sentence" has a lone UTF-16 surrogate U+D800 at position 2',
        ),
        (
            json.dumps({"text": "가\udfff"}).encode(),
            "application/json; charset=utf-8",
            '"text" has a lone UTF-16 surrogate U+DFFF at position 1',
        ),
        (["좋은 문장", "\ud83d"], "application/json", "list item 1 has a lone UTF-16 surrogate U+D83D at position 0"),
        ("\udc80", "application/json", "text has a lone UTF-16 surrogate U+DC80 at position 0"),
    ],
)
def test_lone_surrogates_are_refused_with_their_position(body, content_type, where):
    """A JSON "\\ud800" escape decodes to a lone surrogate: a Python str that is not valid Unicode."""
    with pytest.raises(InputError) as err:
        parse_body(body, content_type, **LIMITS)
    assert str(err.value) == where and err.value.status == 400 and err.value.reason == "not_utf8"


def test_a_surrogate_pair_escape_is_one_emoji_and_accepted():
    parsed = parse_body(b'{"sentence": "\\ud83d\\ude00 \xec\x84\x9c\xec\x9a\xb8"}', "application/json", **LIMITS)
    assert parsed.texts == ["😀 서울"]


def test_why_the_surrogate_check_exists_the_tokenizer_rejects_a_lone_surrogate(tiny_model_dir):
    tokenizer = ner_model.build_tokenizer(tiny_model_dir / "vocab.txt")
    with pytest.raises(TypeError):
        ner_core.encode_texts(tokenizer, ["서울\ud800에서"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"sentence": ' + b"1" * 5000 + b"}",  # over Python's integer-string limit: ValueError, not JSONDecodeError
        b"[" + b"9" * 10000 + b"]",
        b"-" + b"1" * 4301,
    ],
)
def test_every_refusal_of_the_json_parser_is_a_400(body):
    with pytest.raises(InputError, match="body is not valid JSON") as err:
        parse_body(body, "application/json", **LIMITS)
    assert err.value.status == 400 and err.value.reason == "bad_json"


@pytest.mark.parametrize(
    "headers, result",
    [
        ({}, True),
        ({"X-NER-Result": b"false"}, False),
        ({"x-ner-result": "0"}, False),
        ({"X-Ner-Result": " TRUE"}, True),
        ({"body": {"content-type": "text/plain"}, "X-NER-RESULT": "1"}, True),
        ({"result": "false"}, True),
    ],
)
def test_the_result_option_comes_from_a_header(headers, result):
    assert parse_options(headers) == Options(result=result)


def test_a_bad_option_value_is_refused_without_echoing_it():
    with pytest.raises(InputError, match="X-NER-Result must be true or false, received 6 characters") as err:
        parse_options({"X-NER-Result": "홍길동홍길동"})
    assert err.value.status == 400 and "홍길동" not in str(err.value)


def test_an_answer_over_the_limit_is_refused_with_413():
    assert checked_size(b"x" * 1024, 1024) == b"x" * 1024
    with pytest.raises(InputError, match=r"the answer would be 1025 bytes; the limit is 1024") as err:
        checked_size(b"x" * 1025, 1024)
    assert err.value.status == 413 and "accepted" not in err.value.body()


def test_a_server_error_names_the_request_id_and_nothing_else():
    body = ServerError("7f3a-req").body()
    assert body == {
        "error": "internal error answering request 7f3a-req; the server log has the details under this id",
        "status": 500,
    }


def test_a_grpc_request_is_told_from_an_http_one_by_its_headers():
    from ner_wire import from_grpc

    assert from_grpc({"data": {"content-type": ""}})
    assert from_grpc(
        {"data": {"content-type": ""}, "ts_request_sequence_id": "ts-seq-9", "ts_request_sequence_end": "true"}
    )
    assert not from_grpc({"body": {"content-type": "text/plain"}, "host": "127.0.0.1:8080"})
    assert not from_grpc({"body": {"content-type": "application/json"}, "x-ner-result": "false"})


def test_an_answer_naming_a_lone_surrogate_is_still_json(tiny_model_dir):
    """A v2 output name with a lone surrogate is named back in the 400; it once failed the
    encoding of the answer, and so every request of the batch with a 500."""
    from ner_wire import dumps
    from tests.unit.test_handler import GOOD, make_handler, run_batch

    assert json.loads(dumps({"error": "\ud800 서울"})) == {"error": "\ud800 서울"}
    v2 = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [GOOD]}], "outputs": [{"name": "\ud800"}]}
    answers, statuses, _ = run_batch(make_handler(tiny_model_dir), [(v2, "application/json"), (GOOD, "text/plain")])
    assert statuses == [400, 200] and "does not exist" in answers[0]["error"]
