"""Every accepted request shape, and every refusal with its message."""

from __future__ import annotations

import json

import pytest

from ner_inputs import InputError, parse_request

LIMITS = dict(max_chars=50, max_texts=3)
TEXT = "이순신은 조선 중기의 무신이다."


@pytest.mark.parametrize(
    "row, content_type, texts, is_list",
    [
        ({"body": TEXT.encode()}, "application/octet-stream", [TEXT], False),  # raw bytes
        ({"body": TEXT}, "text/plain", [TEXT], False),  # TorchServe decoded text/*
        ({"data": TEXT.encode()}, "", [TEXT], False),
        ({"body": json.dumps(TEXT).encode()}, "", [TEXT], False),  # a JSON string the seed page posts
        ({"body": TEXT}, "application/json", [TEXT], False),  # decoded JSON string
        ({"body": {"sentence": TEXT}}, "application/json", [TEXT], False),
        ({"body": {"text": TEXT}}, "application/json", [TEXT], False),
        ({"body": json.dumps({"text": TEXT}).encode()}, "application/x-anything", [TEXT], False),
        ({"body": ["가", "나"]}, "application/json", ["가", "나"], True),
        ({"body": b"[not json] but text"}, "", ["[not json] but text"], False),  # looks like JSON, is text
        ({"body": '{"sentence": 1}'}, "text/plain", ['{"sentence": 1}'], False),  # text/plain is never JSON
    ],
)
def test_accepted_shapes(row, content_type, texts, is_list):
    parsed = parse_request(row, content_type, **LIMITS)
    assert parsed.texts == texts and parsed.is_list is is_list


@pytest.mark.parametrize(
    "row, content_type, message",
    [
        ({"body": b""}, "", r"empty or blank \(0 characters\)"),
        ({"body": " \n\t "}, "text/plain", r"empty or blank \(4 characters\)"),
        ({"body": b"\xff\xfe"}, "text/plain", "not valid UTF-8: byte 0xff at position 0"),
        ({"body": b'{"sentence": '}, "application/json", "not valid JSON"),
        ({"body": None}, "application/json", "received JSON null"),
        ({"body": 3}, "application/json", "received a JSON number"),
        ({"body": True}, "application/json", "received a JSON boolean"),
        ({"body": {"x": "가"}}, "application/json", r"exactly one of \"sentence\" or \"text\", received a JSON object with keys \['x'\]"),
        ({"body": {"sentence": "가", "text": "나"}}, "application/json", "exactly one of"),
        ({"body": {"sentence": 5}}, "application/json", '"sentence" must be a string, received a JSON number'),
        ({"body": []}, "application/json", "JSON list is empty"),
        ({"body": ["가"] * 4}, "application/json", "JSON list has 4 texts; the limit is 3"),
        ({"body": ["가", 1]}, "application/json", "list item 1 must be a string"),
        ({"body": ["가", " "]}, "application/json", "list item 1 is empty or blank"),
        ({"body": "가" * 51}, "text/plain", "text has 51 characters; the limit is 50"),
        ({"body": b"[" * 100000 + b"]" * 100000}, "application/json", "nested too deeply"),
        ({"이순신": b""}, "application/x-www-form-urlencoded", "no request body found"),
    ],
)
def test_refusals_say_what_was_received(row, content_type, message):
    with pytest.raises(InputError, match=message) as info:
        parse_request(row, content_type, **LIMITS)
    assert info.value.status == 400
    body = info.value.body()
    assert body["error"] == str(info.value) and "JSON list of strings" in body["accepted"]


def test_error_messages_never_echo_the_text():
    secret = "비밀스러운 이름 홍길동"
    with pytest.raises(InputError) as info:
        parse_request({"body": {"sentence": secret, "text": secret}}, "application/json", **LIMITS)
    assert "홍길동" not in json.dumps(info.value.body(), ensure_ascii=False)
