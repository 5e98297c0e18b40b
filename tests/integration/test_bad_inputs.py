"""The bad-input matrix against a real TorchServe: every case gets a correct answer or a JSON 4xx
naming the problem, and the worker that answered it is the same process afterwards.

A correct answer echoes the text exactly, has one ``result`` row per wordpiece the model's own
tokenizer makes of it (so a 20,000-character text really went through every window), and every
entity satisfies ``sentence[start:end] == text`` on a token boundary.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import pytest

import ner_core
import ner_model
from serving import paths, tsctl

LIMIT_CHARS = 20_000  # TEST_MODEL_CONFIG keeps the real max_text_chars
LIMIT_TEXTS = 8  # TEST_MODEL_CONFIG's max_texts_per_request
MAX_REQUEST_SIZE = int(tsctl.read_properties(paths.CONFIG_DIR / "config.properties")["max_request_size"])
SENTENCE = "이순신은 1592년 조선 한산도에서 왜군을 크게 무찔렀다. "
LONG = (SENTENCE * (LIMIT_CHARS // len(SENTENCE) + 1))[:LIMIT_CHARS]
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    """One request and what must come back: ``texts`` for a 200, else ``status`` + ``error``."""

    id: str
    body: bytes
    content_type: str | None = TEXT
    texts: tuple[str, ...] = ()  # the texts a 200 answers, in order
    is_list: bool = False
    status: int = 200
    error: str = ""  # a fragment the JSON error must contain
    files: dict[str, Any] = field(default_factory=dict)


def ok(id: str, text: str) -> Case:
    return Case(id, text.encode("utf-8"), texts=(text,))


def bad(id: str, body: bytes, error: str, content_type: str | None = TEXT, status: int = 400) -> Case:
    return Case(id, body, content_type, status=status, error=error)


def as_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def nested(depth: int, open_: str, close: str) -> bytes:
    return (open_ * depth + '"가"' + close * depth).encode()


CASES = [
    # empty and blank
    bad("empty text/plain", b"", "text is empty or blank (0 characters)"),
    bad("empty application/json", b"", "body is not valid JSON", JSON),
    bad("empty, no content type", b"", "text is empty or blank (0 characters)", None),
    bad("spaces", b"     ", "text is empty or blank (5 characters)"),
    bad("ascii whitespace", b" \t\n\r\x0b\x0c", "text is empty or blank (6 characters)"),
    bad("unicode whitespace", "\u3000\u00a0\u2003".encode(), "text is empty or blank (3 characters)"),
    bad("json blank string", as_json("  \n "), "text is empty or blank (4 characters)", JSON),
    bad('{"sentence": ""}', as_json({"sentence": ""}), '"sentence" is empty or blank (0 characters)', JSON),
    bad('{"text": blank}', as_json({"text": " \t"}), '"text" is empty or blank (2 characters)', JSON),
    # emoji, control characters, NUL
    ok("emoji only", "😀🎉👍"),
    ok("emoji zwj sequence", "👨\u200d👩\u200d👧\u200d👦 가족과 서울에서"),
    ok("nul only", "\x00"),
    ok("control characters inside", "서울\x00에서\x01만났다\x7f 부산\x1b[31m빨강\x1b[0m"),
    Case("json \\u0000 escape", b'{"sentence": "a\\u0000b \\u0007"}', JSON, texts=("a\x00b \x07",)),
    # invalid UTF-8 and invalid Unicode
    bad("invalid utf-8 0xff", b"\xff\xfe", "body is not valid UTF-8: byte 0xff at position 0"),
    bad("truncated multibyte", "서울".encode()[:-1], "body is not valid UTF-8: byte 0xec at position 3"),
    bad("overlong encoding", b"a\xc0\xaf", "body is not valid UTF-8: byte 0xc0 at position 1"),
    bad("utf-8 encoded surrogate", b"\xed\xa0\x80", "body is not valid UTF-8: byte 0xed at position 0"),
    bad("utf-16 body", "서울".encode("utf-16"), "body is not valid UTF-8: byte 0xff at position 0"),
    bad("latin-1 despite charset", "café".encode("latin-1"), "byte 0xe9 at position 3", "text/plain; charset=latin-1"),
    bad("invalid utf-8 in json", b'{"sentence": "\xff"}', "body is not valid UTF-8: byte 0xff at position 14", JSON),
    bad(
        "lone surrogate escape",
        b'{"sentence": "\\ud800"}',
        '"sentence" has a lone UTF-16 surrogate U+D800 at position 0',
        JSON,
    ),
    # size
    Case("20,000 characters", LONG.encode(), texts=(LONG,)),
    bad("20,001 characters", (LONG + "가").encode(), "text has 20001 characters; the limit is 20000"),
    # deep or huge JSON
    bad("100,000 nested lists", nested(100_000, "[", "]"), "body is JSON nested too deeply", JSON),
    bad(
        "100,000 nested objects",
        ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(),
        "body is JSON nested too deeply",
        JSON,
    ),
    bad("3 nested lists", nested(3, "[", "]"), "list item 0 must be a string, received a JSON list of 1 items", JSON),
    bad(
        "object as sentence",
        as_json({"sentence": {"text": "가"}}),
        '"sentence" must be a string, received a JSON object',
        JSON,
    ),
    bad(
        "100,000-item list", as_json(["가"] * 100_000), f"JSON list has 100000 texts; the limit is {LIMIT_TEXTS}", JSON
    ),
    bad("50,000-key object", as_json({f"k{i}": i for i in range(50_000)}), 'exactly one of "sentence" or "text"', JSON),
    # JSON scalars and objects without the field
    bad("json null", b"null", "received JSON null", JSON),
    bad("json number", b"42", "received a JSON number", JSON),
    bad("json NaN", b"NaN", "received a JSON number", JSON),
    bad("json bool", b"true", "received a JSON boolean", JSON),
    bad("empty object", b"{}", "received an empty JSON object", JSON),
    bad("misspelt key", as_json({"sentense": "오타"}), "received a JSON object with keys ['sentense']", JSON),
    bad("both keys", as_json({"sentence": "가", "text": "나"}), 'exactly one of "sentence" or "text"', JSON),
    bad("sentence null", as_json({"sentence": None}), '"sentence" must be a string, received JSON null', JSON),
    bad(
        "sentence list",
        as_json({"sentence": ["가"]}),
        '"sentence" must be a string, received a JSON list of 1 items',
        JSON,
    ),
    # lists
    bad("empty list", b"[]", "JSON list is empty", JSON),
    bad(
        "list too long",
        as_json(["가"] * (LIMIT_TEXTS + 1)),
        f"JSON list has {LIMIT_TEXTS + 1} texts; the limit is {LIMIT_TEXTS}",
        JSON,
    ),
    bad("mixed list", as_json(["가", 1, None]), "list item 1 must be a string, received a JSON number", JSON),
    bad("list with a blank", as_json(["가", " "]), "list item 1 is empty or blank (1 characters)", JSON),
    Case(
        "list at the limit",
        as_json([f"{i}번 문장" for i in range(LIMIT_TEXTS)]),
        JSON,
        texts=tuple(f"{i}번 문장" for i in range(LIMIT_TEXTS)),
        is_list=True,
    ),
    # scripts and Unicode forms
    ok("hanja", "李舜臣은 朝鮮 中期의 武臣이다."),
    ok("latin", "Samsung Electronics는 Suwon에 본사를 둔 KOSPI 상장사다."),
    ok("digits", "2024년 3월 15일 오후 3시 30분, 1,234,567원과 3.5%"),
    ok("zero-width joiners inside words", "서\u200d울\u200c에서\u200b만났다 이\u2060순신"),
    ok("zero-width only", "\u200b\u200b"),
    ok("right-to-left", "مرحبا 서울 שלום \u202e이순신\u202c 부산"),
    ok("decomposed hangul (NFD jamo)", unicodedata.normalize("NFD", "이순신은 서울에서 태어났다. 한강")),
    ok("combining marks and NFD mix", "Pokémon e\u0301 " + unicodedata.normalize("NFD", "한글") + " 한글"),
    ok("byte order mark", "\ufeff서울에서 만났다"),
    ok("special token strings", "[CLS] [SEP] [PAD] [MASK] [UNK] 서울"),
    # content types
    bad("form-encoded", "sentence=서울".encode(), "no request body found", "application/x-www-form-urlencoded"),
    Case("json sent as text/plain", b'{"sentence": 1}', texts=('{"sentence": 1}',)),
    Case(
        "multipart field",
        b"",
        None,
        texts=("서울에서 만났다",),
        files={"data": ("a.txt", "서울에서 만났다".encode(), "text/plain")},
    ),
    Case("json with charset", as_json({"text": "부산에서"}), "application/json; charset=utf-8", texts=("부산에서",)),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The tokenizer the served tiny model uses, to know how many rows each answer must have."""
    return ner_model.build_tokenizer(tiny_model_dir / "vocab.txt")


@pytest.fixture(scope="module")
def worker_pid(server, tiny_model) -> int:
    return worker(server, tiny_model)["pid"]


def worker(server, model) -> dict:
    workers = tsctl.describe(server, model)[0]["workers"]
    assert len(workers) == 1
    return workers[0]


def send(server, model, case: Case):
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    kwargs = {"files": case.files} if case.files else {"data": case.body, "headers": headers}
    return server.call("POST", "inference", f"/predictions/{model}", timeout=(5, 60), **kwargs)


def check_answer(answer: dict, text: str, tokenizer) -> None:
    """The answer is the one for ``text``: same text, a row per wordpiece, entities on its spans."""
    assert answer["sentence"] == text
    _, tokens, offsets = ner_core.encode_texts(tokenizer, [text])[0]
    assert [row["token"] for row in answer["result"]] == tokens
    starts = {start for start, _ in offsets}
    for ent in answer["entities"]:
        assert 0 <= ent["start"] < ent["end"] <= len(text), ent
        assert text[ent["start"] : ent["end"]] == ent["text"] and ent["start"] in starts, ent


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(server, tiny_model, worker_pid, tokenizer, case):
    resp = send(server, tiny_model, case)
    assert resp.status_code == case.status, resp.text[:300]
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    if case.status == 200:
        answers = body if case.is_list else [body]
        assert isinstance(body, list) is case.is_list and len(answers) == len(case.texts)
        for answer, text in zip(answers, case.texts, strict=True):
            check_answer(answer, text, tokenizer)
    else:
        assert case.error in body["error"] and body["status"] == case.status, body
    after = worker(server, tiny_model)
    assert after["pid"] == worker_pid and after["status"] == "READY"


def test_long_text_really_took_many_windows(tokenizer):
    """Guards the 20,000-character case: far more wordpieces than one 32-token window holds."""
    assert len(ner_core.encode_texts(tokenizer, [LONG])[0][0]) > 100 * 32


def test_body_over_max_request_size_is_refused_by_the_frontend(server, tiny_model, worker_pid):
    """TorchServe's Netty frontend answers 413 with an EMPTY body (not JSON) and never wakes the
    worker: the one refusal the handler cannot word. Clients must treat a bare 413 as 'too big'."""
    resp = server.call(
        "POST",
        "inference",
        f"/predictions/{tiny_model}",
        data=b"a" * (MAX_REQUEST_SIZE + 1),
        headers={"Content-Type": TEXT},
        timeout=(5, 60),
    )
    assert resp.status_code == 413 and resp.content == b""
    assert worker(server, tiny_model)["pid"] == worker_pid
