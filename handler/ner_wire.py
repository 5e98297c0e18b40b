"""The wire format: request bodies in, answer and error bytes out. Plain Python, no TorchServe
import and no model: the handler hands over one request's body, gets back the texts to tag (or
the ``RequestError`` that answers the request), and turns answers and errors into JSON bytes here.

Every accepted input shape is handled in one function (``parse_body``), so the handler and the
tests agree on what a request may be. Messages name what was received (type, length) but never
echo the text itself: request text is personal data. A KServe v2 (Open Inference Protocol)
request (ner_v2) is answered in kind, in JSON or with the protocol's binary tensor data
extension (ner_answer). Hugging Face's shape (``{"inputs": ..., "parameters": ...}``) is
recognised in ``parse_body`` and parsed and answered by its own module, ner_hf. What a parsed
request is, and the errors, are ner_request's; the names other code reads from here stay
importable from here. The answers themselves (their fields, and the reply a request gets) are
ner_answer's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import ner_hf
from ner_request import (
    ACCEPTED,
    JSON_UTF8,
    InputError,
    Job,
    Options,
    ParsedRequest,
    RequestError,
    ServerError,
    check_count,
    check_text,
    decode_utf8,
    describe,
)
from ner_v2 import (
    INFERENCE_HEADER,
    OCTET_STREAM,
    V2_INPUT,
    V2_OUTPUT,
    decode_bytes_tensor,
    encode_bytes_tensor,
    inference_header_length,
    parse_v2,
    parse_v2_binary,
)

__all__ = [  # the request and v2 names the handler, the image and the tests import from the wire format
    "ACCEPTED",
    "INFERENCE_HEADER",
    "JSON_UTF8",
    "OCTET_STREAM",
    "STREAM_NEXT",
    "V2_INPUT",
    "V2_OUTPUT",
    "InputError",
    "Job",
    "Options",
    "ParsedRequest",
    "RequestError",
    "ServerError",
    "decode_bytes_tensor",
    "dumps",
    "encode_bytes_tensor",
    "from_grpc",
    "inference_header_length",
    "parse_body",
    "parse_options",
]

TEXT_KEYS = ("sentence", "text")
# Request options travel as HTTP headers: TorchServe 0.12 drops the query string of
# /predictions/<model> before the handler sees it.
RESULT_HEADER = "x-ner-result"  # "false": answer without the per-wordpiece "result" rows
OPTION_VALUES = {"true": True, "1": True, "false": False, "0": False}


def _from_bytes(body: bytes, content_type: str) -> Any:
    """Bytes arrive when TorchServe did not (or could not) decode the body itself."""
    try:
        text = decode_utf8(body)
    except InputError:
        _refuse_binary_without_header(body)
        raise
    is_json_type = content_type.startswith("application/json")
    if is_json_type or (not content_type.startswith("text/") and text.lstrip()[:1] in ('"', "[", "{")):
        try:
            return json.loads(text)
        except RecursionError:
            raise InputError("body is JSON nested too deeply", reason="bad_json") from None
        except ValueError as err:
            # JSONDecodeError, and every other refusal of the parser (a number longer than
            # Python's integer-string limit raises a plain ValueError): all are the body's fault.
            _refuse_binary_without_header(body)
            if is_json_type:
                where = f"{err.msg} at position {err.pos}" if isinstance(err, json.JSONDecodeError) else str(err)
                raise InputError(f"body is not valid JSON: {where}", reason="bad_json") from None
    return text


def _refuse_binary_without_header(body: bytes) -> None:
    """A body that is a v2 request object followed by more bytes is binary tensor data sent
    without its header: say so, rather than "not UTF-8" or tagging the bytes as one text."""
    stripped = body.lstrip()
    if stripped[:1] != b"{":
        return
    text = stripped.decode("utf-8", "surrogateescape")
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except (ValueError, RecursionError):
        return
    if isinstance(value, dict) and "inputs" in value and text[end:].strip():
        raise InputError(
            f"the body goes on after its v2 JSON object: binary tensor data needs the header {INFERENCE_HEADER} "
            "with the JSON object's length in bytes",
            reason="bad_binary",
        )


def parse_body(
    value: Any, content_type: str, *, max_chars: int, max_texts: int, headers: Mapping[str, Any] | None = None
) -> ParsedRequest:
    """Normalise one request body: ``str`` (TorchServe decoded text/*), a decoded JSON value
    (application/json), or ``bytes`` (any other content type, or when decoding failed).
    ``headers`` (the request's HTTP headers) tell a v2 request with binary tensor data."""
    header = inference_header_length(headers or {})
    if header is not None:
        return parse_v2_binary(value, content_type, header, max_chars, max_texts)
    if isinstance(value, (bytes, bytearray)):
        value = _from_bytes(bytes(value), content_type.lower())

    if isinstance(value, str):
        return ParsedRequest([check_text(value, max_chars)], is_list=False)
    if isinstance(value, dict):
        if ner_hf.is_hf_request(value):  # {"inputs": "text" or ["text", ...], "parameters": {...}}
            return ner_hf.parse_request(value, max_chars=max_chars, max_texts=max_texts)
        if "inputs" in value:
            return parse_v2(value, max_chars, max_texts)
        present = [key for key in TEXT_KEYS if key in value]
        if len(present) != 1:
            raise InputError(
                f'JSON object must have exactly one of "sentence" or "text", received {describe(value)}',
                reason="bad_shape",
            )
        key = present[0]
        return ParsedRequest([check_text(value[key], max_chars, f'"{key}"')], is_list=False)
    if isinstance(value, list):
        check_count(len(value), max_texts, "JSON list")
        texts = [check_text(item, max_chars, f"list item {i}") for i, item in enumerate(value)]
        return ParsedRequest(texts, is_list=True)
    raise InputError(f"received {describe(value)}", reason="bad_shape")


def parse_options(headers: Mapping[str, Any]) -> Options:
    """Request options from the request's HTTP headers (names in any case; ``str`` or ``bytes``
    values; other headers are ignored)."""
    found = [value for name, value in headers.items() if isinstance(name, str) and name.lower() == RESULT_HEADER]
    if not found:
        return Options()
    raw = found[0]
    value = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    if value.strip().lower() not in OPTION_VALUES:
        raise InputError(
            f"header X-NER-Result must be true or false, received {len(value)} characters", reason="bad_option"
        )
    return Options(result=OPTION_VALUES[value.strip().lower()])


STREAM_NEXT = "ts_stream_next"


def from_grpc(headers: Mapping[str, Any]) -> bool:
    """True when TorchServe's gRPC API, not its HTTP one, handed over this request. The worker
    is not told which; but an HTTP request arrives with its client's headers (``str`` values:
    Host, Content-Length, ...), while a gRPC one has only its body parameters' content types
    (``dict`` values) and, from ``StreamPredictions2``, TorchServe's own ``ts_request_sequence_*``
    keys. (An HTTP/1.0 request sent without a single header, bodiless, is answered as HTTP all
    the same: tests/integration/test_front_door.py.)"""
    return not any(
        isinstance(value, str) and not str(name).startswith("ts_request_sequence_") for name, value in headers.items()
    )


def dumps(value: Any) -> bytes:
    """UTF-8 JSON with Korean kept readable (TorchServe's default escapes it). A lone surrogate
    (an error message naming a received key or name may hold one) is written as its JSON escape
    rather than failing the encoding, which would fail the whole batch."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace")
