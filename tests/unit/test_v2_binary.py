"""The KServe v2 binary tensor data extension, both ways, with Triton's own client library
(``tritonclient``) writing the requests and reading the answers, no server: requests parsed as
TorchServe hands them over, every malformed variant refused with a 400 naming the problem,
answers in binary exactly when asked, and a malformed binary request in a batch harming no
batch-mate."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import serialize_byte_tensor
from ts.context import RequestProcessor

from ner_answer import render_answer
from ner_wire import (
    INFERENCE_HEADER,
    OCTET_STREAM,
    InputError,
    ParsedRequest,
    decode_bytes_tensor,
    encode_bytes_tensor,
    parse_body,
)
from tests.unit.test_handler import GOOD, make_handler

LIMITS: dict[str, Any] = dict(max_chars=50, max_texts=3)
TEXTS = ["이순신은 조선 중기의 무신이다.", "서울에서 만났다"]


def client_body(texts=TEXTS, binary_in=True, output=None, **kwargs) -> tuple[bytes, dict[str, str]]:
    """The body and headers ``tritonclient.http`` sends for ``texts`` (its default: binary
    input; no requested output, which asks for every output in binary); ``output``: a
    requested output's ``binary_data`` (True/False)."""
    tensor = triton.InferInput("texts", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_), binary_data=binary_in)
    outputs = None if output is None else [triton.InferRequestedOutput("ner", binary_data=output)]
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs, **kwargs)
    return body, ({INFERENCE_HEADER: str(json_size)} if json_size is not None else {})


def parse(body, headers, content_type="", **limits):
    return parse_body(body, content_type, headers=headers, **(limits or LIMITS))


def test_triton_clients_binary_request_is_read():
    body, headers = client_body(request_id="r-1")
    assert headers and body[int(headers[INFERENCE_HEADER]) :]  # binary data follows the JSON
    request = parse(body, headers)
    assert request.texts == TEXTS and request.protocol == "v2" and request.request_id == "r-1"
    assert request.binary_output  # no requested output: the client asked for binary outputs


@pytest.mark.parametrize("content_type", ["", "application/octet-stream", "text/plain", "application/json"])
def test_a_binary_request_is_read_whatever_its_content_type(content_type):
    """As TorchServe hands it over: bytes, or text/* decoded when it is valid UTF-8 (it is
    here: the lengths are small), or bytes again when application/json fails to decode."""
    body, headers = client_body()
    value = body.decode("utf-8") if content_type.startswith("text/") else body
    assert parse(value, {k.lower(): v for k, v in headers.items()}, content_type).texts == TEXTS


@pytest.mark.parametrize(("output", "binary"), [(None, True), (True, True), (False, False)])
def test_binary_output_is_what_the_client_asked_for(output, binary):
    assert parse(*client_body(binary_in=False, output=output)).binary_output is binary


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary"),
    [
        (None, None, False),
        ({"binary_data_output": True}, None, True),
        ({"binary_data_output": True}, [{"name": "ner", "parameters": {"binary_data": False}}], False),
        ({"binary_data_output": False}, [{"name": "ner", "parameters": {"binary_data": True}}], True),
        (None, [{"name": "ner"}], False),
        ({"binary_data_output": True}, [], True),
    ],
)
def test_binary_data_on_the_output_overrides_binary_data_output(parameters, outputs, binary):
    request = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["서울"]}]}
    request |= ({"parameters": parameters} if parameters is not None else {}) | (
        {"outputs": outputs} if outputs is not None else {}
    )
    assert parse_body(request, "application/json", **LIMITS).binary_output is binary


def v2_answer(request: ParsedRequest, max_bytes: int = 1 << 20):
    answers = [{"sentence": t, "entities": []} for t in request.texts]
    return answers, render_answer(
        request, answers, model_name="kor_ner", model_version="1.0", request_id="ts-1", max_bytes=max_bytes
    )


def test_a_binary_answer_is_read_by_triton_clients_reader():
    answers, reply = v2_answer(parse(*client_body()))
    assert reply.content_type == OCTET_STREAM
    header = int(reply.headers[INFERENCE_HEADER])
    result = triton.InferResult.from_response_body(reply.body, header_length=header)
    assert [json.loads(item) for item in result.as_numpy("ner")] == answers
    meta = result.get_response()
    assert (meta["model_name"], meta["model_version"], meta["id"]) == ("kor_ner", "1.0", "ts-1")
    [output] = meta["outputs"]
    assert output["shape"] == [2] and "data" not in output
    assert output["parameters"]["binary_data_size"] == len(reply.body) - header


def test_a_json_answer_when_binary_was_not_asked_for():
    answers, reply = v2_answer(parse(*client_body(output=False)))
    assert reply.content_type == "application/json; charset=utf-8" and not reply.headers
    result = triton.InferResult.from_response_body(reply.body)
    assert [json.loads(item) for item in result.as_numpy("ner")] == answers


def test_a_binary_answer_over_the_limit_is_refused_with_413():
    request = parse(*client_body())
    _, reply = v2_answer(request)
    v2_answer(request, max_bytes=len(reply.body))
    with pytest.raises(InputError, match=f"the answer would be {len(reply.body)} bytes") as err:
        v2_answer(request, max_bytes=len(reply.body) - 1)
    assert err.value.status == 413


def test_bytes_tensor_round_trip_matches_triton_clients_layout():
    items = [t.encode("utf-8") for t in TEXTS] + [b""]
    assert encode_bytes_tensor(items) == serialize_byte_tensor(np.array(items, dtype=np.object_)).item()
    assert decode_bytes_tensor(encode_bytes_tensor(items)) == items


# --------------------------------------------------------------------------- malformed


def binary_request(
    texts=("서울",),
    header: dict | None = None,
    tensor: bytes | None = None,
    tail: bytes = b"",
    header_length: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A binary request built by hand, to break one part at a time."""
    data = encode_bytes_tensor([t.encode("utf-8") for t in texts]) if tensor is None else tensor
    json_part = json.dumps(
        header
        if header is not None
        else {
            "inputs": [
                {"name": "t", "shape": [len(texts)], "datatype": "BYTES", "parameters": {"binary_data_size": len(data)}}
            ]
        }
    ).encode()
    length = len(json_part) if header_length is None else header_length
    return json_part + data + tail, {INFERENCE_HEADER: str(length)}


def input_header(**tensor) -> dict:
    return {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", **tensor}]}


ONE = encode_bytes_tensor([b"\xec\x84\x9c"])  # "서", 7 bytes
SEOUL = encode_bytes_tensor(["서울".encode()])  # 10 bytes


def asking(**request) -> tuple[bytes, dict[str, str]]:
    """A valid binary request for "서울" with more request fields (outputs, parameters)."""
    return binary_request(header={**input_header(parameters={"binary_data_size": len(SEOUL)}), **request}, tensor=SEOUL)


JSON_LENGTH = len(binary_request()[0]) - len(SEOUL)
MALFORMED = [
    # the header and the JSON it points at
    (
        "header past the body",
        binary_request(header_length=10_000),
        f"header {INFERENCE_HEADER} is 10000 but the body has only {JSON_LENGTH + len(SEOUL)} bytes",
    ),
    ("header not a number", (b"{}", {INFERENCE_HEADER: "12abc"}), "must be a length in bytes, received 5 characters"),
    ("header negative", (b"{}", {INFERENCE_HEADER: "-3"}), "must be a length in bytes"),
    ("header zero", binary_request(header_length=0), "the v2 JSON header (the first 0 bytes"),
    (
        "header cuts the JSON",
        binary_request(header_length=20),
        "(the first 20 bytes, from Inference-Header-Content-Length) is not valid JSON",
    ),
    ("header longer than the JSON", binary_request(header_length=JSON_LENGTH + 4), "is not valid JSON: Extra data"),
    (
        "header not UTF-8",
        (b'\xff{"inputs": []}', {INFERENCE_HEADER: "15"}),
        "v2 JSON header (the first 15 bytes) is not valid UTF-8",
    ),
    (
        "header JSON not an object",
        (b'["a"]', {INFERENCE_HEADER: "5"}),
        'must be a JSON object with "inputs", received a JSON list',
    ),
    ("header JSON without inputs", (b'{"x": 1}', {INFERENCE_HEADER: "8"}), 'must be a JSON object with "inputs"'),
    # the input's binary data
    (
        "binary_data_size past the end",
        binary_request(header=input_header(parameters={"binary_data_size": 50}), tensor=ONE),
        "binary_data_size is 50 bytes but 7 bytes follow the JSON header",
    ),
    (
        "element length past the end",
        binary_request(tensor=b"\xff\x00\x00\x00abc"),
        "element 0 declares 255 bytes but 3 bytes are left",
    ),
    (
        "element length cut off",
        binary_request(tensor=ONE + b"\x01\x00"),
        "element 1 at byte 7 has only 2 of the 4 bytes of its length",
    ),
    ("huge element length", binary_request(tensor=b"\xff\xff\xff\xff"), "element 0 declares 4294967295 bytes but 0"),
    ("trailing bytes", binary_request(tail=b"junk"), "4 bytes belong to no input"),
    (
        "binary after a JSON input",
        binary_request(header=input_header(data=["서"]), tensor=b"", tail=ONE),
        "7 bytes belong to no input",
    ),
    (
        "non-BYTES datatype",
        binary_request(
            header={"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
            tensor=b"\x00\x00\x80?",
        ),
        'datatype must be "BYTES" (UTF-8 texts), received FP32',
    ),
    (
        "shape disagrees with the elements",
        binary_request(
            header={
                "inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": 14}}]
            },
            tensor=ONE + ONE,
        ),
        'v2 input "shape" must be [2] for 2 texts, received [3]',
    ),
    (
        "data and binary_data_size",
        binary_request(header=input_header(data=["서"], parameters={"binary_data_size": 7}), tensor=ONE),
        'both "data" and "binary_data_size"',
    ),
    (
        "binary_data_size not a number",
        binary_request(header=input_header(parameters={"binary_data_size": "7"}), tensor=ONE),
        'parameter "binary_data_size" must be a byte count, received a string of 1 characters',
    ),
    (
        "binary_data_size negative",
        binary_request(header=input_header(parameters={"binary_data_size": -1}), tensor=ONE),
        'parameter "binary_data_size" must be a byte count, received a JSON number',
    ),
    (
        "binary_data_size a boolean",
        binary_request(header=input_header(parameters={"binary_data_size": True}), tensor=ONE),
        "must be a byte count, received a JSON boolean",
    ),
    (
        "parameters not an object",
        binary_request(header=input_header(parameters=[7]), tensor=b""),
        'v2 input "parameters" must be a JSON object, received a JSON list',
    ),
    (
        "element not UTF-8",
        binary_request(tensor=b"\x02\x00\x00\x00\xff\xfe"),
        "v2 input data[0] is not valid UTF-8: byte 0xff",
    ),
    ("empty element", binary_request(texts=("",)), "v2 input data[0] is empty or blank"),
    ("too many elements", binary_request(texts=("가",) * 4), 'v2 input "data" has 4 texts; the limit is 3'),
    ("no elements", binary_request(texts=()), 'v2 input "data" is empty'),
    ("element too long", binary_request(texts=("가" * 51,)), "v2 input data[0] has 51 characters; the limit is 50"),
    # what the client asks back
    (
        "unknown output",
        asking(outputs=[{"name": "labels"}]),
        'v2 requested output "labels" does not exist: the model has one output, "ner"',
    ),
    ("two outputs", asking(outputs=[{"name": "ner"}] * 2), 'v2 "outputs" must be a list of at most one output'),
    (
        "binary_data not a boolean",
        asking(outputs=[{"name": "ner", "parameters": {"binary_data": 1}}]),
        'v2 output "ner" parameter "binary_data" must be true or false, received a JSON number',
    ),
    (
        "binary_data_output not a boolean",
        asking(parameters={"binary_data_output": "yes"}),
        'v2 request parameter "binary_data_output" must be true or false',
    ),
]


@pytest.mark.parametrize(("body", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_binary_request_is_a_400_naming_the_problem(body, message):
    value, headers = body
    with pytest.raises(InputError) as err:
        parse(value, headers)
    assert err.value.status == 400 and message in str(err.value), str(err.value)


def test_binary_data_without_the_header_is_named():
    """The body as a client sends it that forgot the header: once tagged as one text."""
    body, _ = client_body()
    for value, content_type in [(body, ""), (body, "application/octet-stream"), (body + b"\xff", "")]:
        with pytest.raises(InputError, match=f"binary tensor data needs the header {INFERENCE_HEADER}"):
            parse(value, {}, content_type)


def test_binary_data_size_in_a_json_only_request_is_named():
    request = input_header(parameters={"binary_data_size": 7})
    with pytest.raises(InputError, match=f'has "binary_data_size" but the request has no {INFERENCE_HEADER} header'):
        parse_body(request, "application/json", **LIMITS)


def test_a_request_decoded_as_json_with_the_header_has_no_binary_data():
    """TorchServe json-decodes an application/json body when it can: it was JSON alone."""
    request = input_header(data=["서울"])
    assert parse(request, {INFERENCE_HEADER: "40"}, "application/json").texts == ["서울"]
    with pytest.raises(InputError, match="binary_data_size is 7 bytes but 0 bytes follow"):
        parse(input_header(parameters={"binary_data_size": 7}), {INFERENCE_HEADER: "40"}, "application/json")
    with pytest.raises(InputError, match='must be a JSON object with "inputs", received a JSON list'):
        parse(["서울"], {INFERENCE_HEADER: "8"}, "application/json")


def test_refusals_never_echo_the_text():
    value, headers = binary_request(texts=("홍길동", "김철수", "이영희", "박민수"))
    with pytest.raises(InputError) as err:
        parse(value, headers)
    assert not any(name in str(err.value) for name in ("홍길동", "김철수"))


# --------------------------------------------------------------------------- in the handler


def run_raw(handler_and_context, requests):
    """``requests``: (body, content type, headers); the raw answers, statuses, content types
    and response headers, one per request."""
    handler, context = handler_and_context
    context.request_ids = {i: f"req-{i}" for i in range(len(requests))}
    context.request_processor = [RequestProcessor({"body": {"content-type": ct}, **hdrs}) for _, ct, hdrs in requests]
    context.metrics.request_ids = context.request_ids
    context._response_status = {}
    answers = handler.handle([{"body": body} for body, _, _ in requests], context)
    assert len(answers) == len(requests)
    return (
        answers,
        [context.get_response_status(i)[0] for i in range(len(requests))],
        [context.get_response_content_type(i) for i in range(len(requests))],
        [context.get_response_headers(i) for i in range(len(requests))],
    )


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    return make_handler(tiny_model_dir)


def test_a_malformed_binary_request_harms_no_batch_mate(handler):
    good_body, good_headers = client_body(["서울에서 만났다", GOOD])
    bad_body, bad_headers = binary_request(tensor=b"\xff\x00\x00\x00abc")
    json_body, _ = client_body(["부산"], binary_in=False, output=False)
    answers, statuses, types, headers = run_raw(
        handler,
        [
            (good_body, "", good_headers),
            (bad_body, "", bad_headers),
            (GOOD, "text/plain", {}),
            (json_body, "application/json", {}),
        ],
    )
    assert statuses == [200, 400, 200, 200]
    assert types == [OCTET_STREAM] + ["application/json; charset=utf-8"] * 3
    result = triton.InferResult.from_response_body(answers[0], header_length=int(headers[0][INFERENCE_HEADER]))
    assert [json.loads(a)["sentence"] for a in result.as_numpy("ner")] == ["서울에서 만났다", GOOD]
    assert "element 0 declares 255 bytes" in json.loads(answers[1])["error"]
    assert INFERENCE_HEADER not in headers[1]
    assert json.loads(answers[2])["sentence"] == GOOD
    assert [json.loads(a)["sentence"] for a in json.loads(answers[3])["outputs"][0]["data"]] == ["부산"]


def test_binary_and_json_answers_hold_the_same_answers(handler):
    body, headers = client_body(TEXTS)
    binary = run_raw(handler, [(body, "", headers)])
    plain = run_raw(handler, [(json.dumps(TEXTS).encode(), "application/json", {})])
    result = triton.InferResult.from_response_body(binary[0][0], header_length=int(binary[3][0][INFERENCE_HEADER]))
    assert [json.loads(a) for a in result.as_numpy("ner")] == json.loads(plain[0][0])
