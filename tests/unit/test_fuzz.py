"""Property-based tests (hypothesis): arbitrary bodies x content types x JSON values x query
options, and v2 requests with binary tensor data broken in every part, through ``parse_body``
and through the whole handler with a real ``ts.context.Context``.

Whatever arrives: no exception leaves ``handle``, every request gets exactly one JSON answer, a
refusal is a 4xx (never a 500: random input is the input's fault), a request that parses is
answered 200 with its own texts, and the known-good request in every batch is answered 200
with its own sentence.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_wire import InputError, decode_bytes_tensor, encode_bytes_tensor, parse_body
from tests.unit.test_handler import GOOD, make_handler, run_batch
from tests.unit.test_v2_binary import run_raw

LIMITS: dict[str, Any] = dict(max_chars=100, max_texts=4)
CONTENT_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/json",
    "application/json; charset=utf-8",
    "",
    "application/octet-stream",
    "TEXT/PLAIN",
    "application/jsonx",
    "text/html",
    "multipart/form-data",
    "application/x-www-form-urlencoded",
]
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
ODD_TEXT = st.text(
    alphabet=st.one_of(st.characters(), SURROGATES, st.sampled_from(list('\x00\x1b\u200b\u202e\ufeff\\"가힣가'))),
    max_size=40,
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), ODD_TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(
            st.sampled_from(["sentence", "text", "inputs", "id", "x", "data", "shape", "datatype", "parameters"])
            | ODD_TEXT,
            inner,
            max_size=4,
        ),
    ),
    max_leaves=20,
)
V2 = st.builds(
    lambda data, shape, datatype, rid: {
        "inputs": [{"name": "t", "shape": shape, "datatype": datatype, "data": data}],
        **rid,
    },
    st.lists(ODD_TEXT, max_size=5) | JSON_VALUES,
    st.lists(st.integers(-2, 10**30), max_size=3) | JSON_VALUES,
    st.sampled_from(["BYTES", "FP32", "bytes", None]),
    st.sampled_from([{}, {"id": "abc"}, {"id": 5}]),
)

# Hugging Face's shape: texts, and parameters right, wrong and unknown.
HF_PARAMETERS = st.dictionaries(
    st.sampled_from(["aggregation_strategy", "ignore_labels", "stride", "top_k"]) | ODD_TEXT,
    st.sampled_from(["simple", "none", "first", "NONE", "O", ["O"], ["PER", 1], 0, 8, 10**40, -1, True, None])
    | JSON_VALUES,
    max_size=3,
)
HF = st.builds(
    lambda inputs, parameters: {"inputs": inputs, **parameters},
    ODD_TEXT | st.lists(ODD_TEXT, max_size=5) | JSON_VALUES,
    st.sampled_from([{}]) | st.builds(lambda p: {"parameters": p}, HF_PARAMETERS | JSON_VALUES),
)


@st.composite
def json_bytes(draw) -> bytes:
    """JSON text as clients send it, and as they should not: huge numbers, deep nesting, escapes."""
    kind = draw(st.sampled_from(["value", "v2", "hf", "huge number", "deep", "escapes", "truncated"]))
    if kind == "huge number":
        digits = draw(st.integers(4000, 9000))
        return draw(st.sampled_from([b"%s", b'{"sentence": %s}', b'["a", %s]', b"-%s", b"%s.5e3"])) % (b"7" * digits)
    if kind == "deep":
        depth = draw(st.integers(500, 50_000))
        return draw(
            st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth])
        )
    if kind == "escapes":
        parts = draw(
            st.lists(
                st.sampled_from(
                    ["\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0000", "\\n", "\\\\", '\\"', "\\x", "\\u12", "가"]
                ),
                max_size=8,
            )
        )
        return ('{"sentence": "' + "".join(parts) + '"}').encode()
    value = draw({"v2": V2, "hf": HF}.get(kind, JSON_VALUES))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    return (
        text.encode("utf-8", "surrogatepass")[: draw(st.integers(0, 10**6))]
        if kind == "truncated"
        else text.encode("utf-8", "surrogatepass")
    )


BODIES = st.one_of(st.binary(max_size=300), json_bytes(), ODD_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
# Request headers: the handler's own option, the ones TorchServe's BaseHandler would act on, any other.
HEADER_NAMES = st.one_of(
    st.sampled_from(["X-NER-Result", "explain", "describe", "Accept", "X-Request-Id"]),
    st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=12).filter(lambda n: n not in ("body", "data")),
)
OPTIONS = st.dictionaries(
    HEADER_NAMES,
    st.one_of(st.binary(max_size=8), ODD_TEXT, st.sampled_from(["true", "false", "0", "1", "True"])),
    max_size=3,
)


def as_torchserve_gives(body: bytes, content_type: str):
    """What the worker hands the handler for this body (ts/protocol/otf_message_handler.py)."""
    if content_type == "application/json":
        try:
            return json.loads(body.decode("utf-8"))
        except Exception:  # noqa: BLE001  (TorchServe forwards the bytes, whatever failed)
            return body
    if content_type.startswith("text"):
        try:
            return body.decode("utf-8")
        except Exception:  # noqa: BLE001
            return body
    return body


@settings(max_examples=400, deadline=None)
@given(body=BODIES, content_type=st.sampled_from(CONTENT_TYPES))
def test_parse_body_accepts_or_refuses_with_a_4xx_and_nothing_else(body, content_type):
    try:
        parsed = parse_body(as_torchserve_gives(body, content_type), content_type, **LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500 and err.body()["error"]
    else:
        assert 1 <= len(parsed.texts) <= LIMITS["max_texts"]
        assert all(isinstance(t, str) and t.strip() and len(t) <= LIMITS["max_chars"] for t in parsed.texts)


@settings(max_examples=400, deadline=None)
@given(value=st.one_of(JSON_VALUES, V2, HF), content_type=st.sampled_from(CONTENT_TYPES))
def test_parse_body_on_decoded_json_values(value, content_type):
    try:
        parse_body(value, content_type, **LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500


_HANDLER: dict[str, Any] = {}


def handler(tiny_model_dir):
    """One handler for every example (hypothesis runs a test body many times per fixture)."""
    if "h" not in _HANDLER:
        _HANDLER["h"] = make_handler(
            tiny_model_dir, max_text_chars=100, max_texts_per_request=4, max_request_tokens=200
        )
    return _HANDLER["h"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    requests=st.lists(st.tuples(BODIES, st.sampled_from(CONTENT_TYPES), OPTIONS), min_size=1, max_size=6),
    good_at=st.integers(0, 6),
)
def test_the_handler_answers_every_request_and_the_good_one_correctly(tiny_model_dir, requests, good_at):
    batch = [(as_torchserve_gives(body, ct), ct, opts) for body, ct, opts in requests]
    good_at = min(good_at, len(batch))
    batch.insert(good_at, (GOOD, "text/plain", {}))
    answers, statuses, types = run_batch(handler(tiny_model_dir), batch)  # asserts one answer per request
    assert types == ["application/json; charset=utf-8"] * len(batch)
    assert statuses[good_at] == 200 and answers[good_at]["sentence"] == GOOD
    h, _ = handler(tiny_model_dir)
    for (value, ct, _), answer, status in zip(batch, answers, statuses, strict=True):
        assert status in (200, 400, 413), (status, answer)
        if status != 200:
            assert answer["status"] == status and answer["error"]
            continue
        parsed = parse_body(value, ct, max_chars=h.settings.max_text_chars, max_texts=h.settings.max_texts_per_request)
        if parsed.protocol == "v2":
            got = [json.loads(text)["sentence"] for text in answer["outputs"][0]["data"]]
        elif parsed.protocol == "hf":  # no "sentence" in HF's rows: each row's word is its text's own characters
            per_text = answer if parsed.is_list else [answer]
            assert len(per_text) == len(parsed.texts)
            got = [
                text
                for text, rows in zip(parsed.texts, per_text, strict=True)
                if all(row["word"] == text[row["start"] : row["end"]] for row in rows)
            ]
        else:
            got = [a["sentence"] for a in (answer if parsed.is_list else [answer])]
        assert got == parsed.texts


# --------------------------------------------------------------------------- v2 binary tensor data


@st.composite
def binary_requests(draw) -> tuple[bytes, dict[str, str], list[str] | None]:
    """A v2 request with binary tensor data as a client builds it (a JSON header of
    Inference-Header-Content-Length bytes, then 4-byte little-endian lengths and UTF-8 texts),
    then often broken in one or more places: the header's value, the JSON's fields, the
    lengths, the bytes. Returns the body, its headers and the texts when left intact."""
    texts = draw(st.lists(ODD_TEXT, max_size=5))
    data = encode_bytes_tensor([t.encode("utf-8", "surrogatepass") for t in texts])
    tensor = {"name": "t", "shape": [len(texts)], "datatype": "BYTES", "parameters": {"binary_data_size": len(data)}}
    request: dict = {"inputs": [tensor]}
    if draw(st.booleans()):
        request["outputs"] = [{"name": "ner", "parameters": {"binary_data": draw(st.booleans())}}]
    if draw(st.booleans()):
        request["parameters"] = {"binary_data_output": draw(st.booleans())}
    intact = True
    for _ in range(draw(st.integers(0, 3))):
        intact = False
        part = draw(st.sampled_from(["shape", "datatype", "binary_data_size", "parameters", "outputs", "data"]))
        target = request if part == "outputs" else tensor
        target[part] = draw(JSON_VALUES | st.integers(-2, 10**6) | st.sampled_from(["BYTES", "FP32", [], {}]))
    json_part = json.dumps(request).encode("utf-8")
    body = json_part + data
    length: str = str(len(json_part))
    mutation = draw(st.sampled_from(["none", "header", "truncate", "append", "flip", "lengths", "header text"]))
    if mutation != "none":
        intact = False
    if mutation == "header":
        length = str(max(0, len(json_part) + draw(st.integers(-len(json_part), 40))))
    elif mutation == "header text":
        length = draw(st.sampled_from(["", " ", "-1", "1e3", "0x10", "９", "99999999999999999"]))
    elif mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == "append":
        body += draw(st.binary(min_size=1, max_size=12))
    elif mutation == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    elif mutation == "lengths":
        body = json_part + draw(st.binary(max_size=40))
    return body, {"Inference-Header-Content-Length": length}, (texts if intact else None)


@settings(max_examples=400, deadline=None)
@given(request=binary_requests(), content_type=st.sampled_from(CONTENT_TYPES))
def test_a_binary_request_is_read_or_refused_with_a_4xx(request, content_type):
    body, headers, texts = request
    try:
        parsed = parse_body(as_torchserve_gives(body, content_type), content_type, headers=headers, **LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500 and err.body()["error"]
        # an intact request of acceptable texts is never refused
        assert texts is None or not 1 <= len(texts) <= LIMITS["max_texts"] or not all(map(acceptable, texts)), (
            err,
            texts,
        )
    else:
        assert parsed.protocol == "v2" and 1 <= len(parsed.texts) <= LIMITS["max_texts"]
        if texts is not None:
            assert parsed.texts == texts


def acceptable(text: str) -> bool:
    return bool(text.strip()) and len(text) <= LIMITS["max_chars"] and not any("\ud800" <= c <= "\udfff" for c in text)


def read_answer(answer: bytes, content_type: str, headers: dict) -> dict:
    """A v2 answer in binary read back into its JSON form (``data`` from the binary elements)."""
    if content_type != "application/octet-stream":
        return json.loads(answer.decode("utf-8"))
    length = int(headers["Inference-Header-Content-Length"])
    value = json.loads(answer[:length].decode("utf-8"))
    [output] = value["outputs"]
    binary = answer[length:]
    assert output["parameters"]["binary_data_size"] == len(binary)
    output["data"] = [item.decode("utf-8") for item in decode_bytes_tensor(binary)]
    return value


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    requests=st.lists(st.tuples(binary_requests(), st.sampled_from(CONTENT_TYPES)), min_size=1, max_size=5),
    good_at=st.integers(0, 5),
)
def test_binary_requests_in_a_batch_harm_no_batch_mate(tiny_model_dir, requests, good_at):
    h, context = handler(tiny_model_dir)
    batch = [(as_torchserve_gives(body, ct), ct, headers) for (body, headers, _), ct in requests]
    good_at = min(good_at, len(batch))
    batch.insert(good_at, (GOOD, "text/plain", {}))
    answers, statuses, content_types, answer_headers = run_raw((h, context), batch)
    for i, ((value, ct, headers), raw) in enumerate(zip(batch, answers, strict=True)):
        status = statuses[i]
        answer = read_answer(raw, content_types[i], answer_headers[i])
        assert status in (200, 400, 413), (status, answer)
        if status != 200:
            assert answer["status"] == status and answer["error"]
            assert content_types[i] == "application/json; charset=utf-8"
            continue
        if i == good_at:
            assert answer["sentence"] == GOOD
            continue
        parsed = parse_body(
            value, ct, headers=headers, max_chars=h.settings.max_text_chars, max_texts=h.settings.max_texts_per_request
        )
        assert (content_types[i] == "application/octet-stream") is parsed.binary_output
        assert [json.loads(text)["sentence"] for text in answer["outputs"][0]["data"]] == parsed.texts
