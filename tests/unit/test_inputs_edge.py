"""Edge inputs found by the bad-input matrix against a real TorchServe (tests/integration/test_bad_inputs.py).

A JSON "\\ud800" escape decodes to a lone surrogate: a Python str that is not valid Unicode.
Before the check in ``_check_text`` it reached the tokenizer, whose exception failed every
request of the batch with TorchServe's 503 "Prediction failed".
"""

from __future__ import annotations

import json

import pytest

import ner_core
from ner_inputs import InputError, parse_request

LIMITS = dict(max_chars=100, max_texts=4)


@pytest.mark.parametrize(
    "row, content_type, where",
    [
        ({"body": {"sentence": "서울\ud800에서"}}, "application/json", '"sentence" has a lone UTF-16 surrogate U+D800 at position 2'),
        ({"body": json.dumps({"text": "가\udfff"}).encode()}, "application/json; charset=utf-8", '"text" has a lone UTF-16 surrogate U+DFFF at position 1'),
        ({"body": ["좋은 문장", "\ud83d"]}, "application/json", "list item 1 has a lone UTF-16 surrogate U+D83D at position 0"),
        ({"body": "\udc80"}, "application/json", "text has a lone UTF-16 surrogate U+DC80 at position 0"),
    ],
)
def test_lone_surrogates_are_refused_with_their_position(row, content_type, where):
    with pytest.raises(InputError) as err:
        parse_request(row, content_type, **LIMITS)
    assert str(err.value) == where and err.value.status == 400 and err.value.reason == "not_utf8"


def test_a_surrogate_pair_escape_is_one_emoji_and_accepted():
    parsed = parse_request({"body": b'{"sentence": "\\ud83d\\ude00 \xec\x84\x9c\xec\x9a\xb8"}'}, "application/json", **LIMITS)
    assert parsed.texts == ["😀 서울"]


def test_why_the_check_exists_the_tokenizer_rejects_a_lone_surrogate(tiny_model_dir):
    tokenizer = ner_core.build_tokenizer(tiny_model_dir / "vocab.txt")
    with pytest.raises(TypeError):
        ner_core.encode_texts(tokenizer, ["서울\ud800에서"])
