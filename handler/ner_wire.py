"""The wire format: request bodies in, answer and error bytes out. Plain Python, no TorchServe
import and no model: the handler hands over one request's body, gets back the texts to tag (or
the ``RequestError`` that answers the request), and turns answers and errors into JSON bytes here.

Every accepted input shape is handled in one function (``parse_body``), so the handler and the
tests agree on what a request may be. Messages name what was received (type, length) but never
echo the text itself: request text is personal data. A KServe v2 (Open Inference Protocol)
request is answered in kind (``shape_answer``). One text's answer, the tutorial's fields and
the entities, is shaped by ``text_answer``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ner_settings import SEED_LABEL_NAMES, entity_type

if TYPE_CHECKING:  # the model's side; this module needs no torch
    from ner_core import Entity, TokenPredictions

ACCEPTED = (
    'a UTF-8 text body (Content-Type: text/plain), a JSON string, {"sentence": "..."}, '
    '{"text": "..."}, a JSON list of strings, or a KServe v2 request '
    '{"inputs": [{"name": "...", "shape": [n], "datatype": "BYTES", "data": ["...", ...]}]}'
)
TEXT_KEYS = ("sentence", "text")
# Open Inference Protocol tensor types, named back to a client that sent the wrong one.
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES")
V2_OUTPUT = "ner"  # name of the v2 output tensor: one JSON answer (as for a plain request) per text
# Request options travel as HTTP headers: TorchServe 0.12 drops the query string of
# /predictions/<model> before the handler sees it.
RESULT_HEADER = "x-ner-result"  # "false": answer without the per-wordpiece "result" rows
OPTION_VALUES = {"true": True, "1": True, "false": False, "0": False}
JSON_UTF8 = "application/json; charset=utf-8"


# --------------------------------------------------------------------------- errors


class RequestError(Exception):
    """Answers one request with an error. ``status`` is the HTTP code to send back and ``reason``
    a short fixed word for the rejected-inputs metric (never the message: that would give
    Prometheus one series per distinct message)."""

    status = 500
    reason = "internal"

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "status": self.status}


class InputError(RequestError):
    """The request itself is at fault (4xx): the message says what was received and what not."""

    def __init__(self, message: str, status: int = 400, reason: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {**super().body(), "accepted": ACCEPTED} if self.status == 400 else super().body()


class ServerError(RequestError):
    """Answering failed for a reason that is not the request's (500). The message names the
    request id, which is also the key to the server log line with the exception."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"internal error answering request {request_id}; the server log has the details under this id")
        self.request_id = request_id


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Options:
    result: bool = True  # the per-wordpiece "result" rows; false: only "sentence" and "entities"


@dataclass(frozen=True)
class ParsedRequest:
    texts: list[str]
    is_list: bool  # answer with a JSON list (the request was a list) or a single object
    protocol: str = "plain"  # "v2": a KServe v2 request, answered with a v2 response
    request_id: str | None = None  # the v2 request's "id", echoed in its answer
    options: Options = field(default_factory=Options)


def _describe(value: Any) -> str:
    if value is None:
        return "JSON null"
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return f"a JSON list of {len(value)} items"
    if isinstance(value, dict):
        keys = sorted(str(key) for key in value)[:5]
        return f"a JSON object with keys {keys}" if keys else "an empty JSON object"
    return f"a value of type {type(value).__name__}"


def _decode_utf8(body: bytes, what: str = "body") -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{what} is not valid UTF-8: byte 0x{body[err.start]:02x} at position {err.start}",
            reason="not_utf8",
        ) from None


def _from_bytes(body: bytes, content_type: str) -> Any:
    """Bytes arrive when TorchServe did not (or could not) decode the body itself."""
    text = _decode_utf8(body)
    is_json_type = content_type.startswith("application/json")
    if is_json_type or (not content_type.startswith("text/") and text.lstrip()[:1] in ('"', "[", "{")):
        try:
            return json.loads(text)
        except RecursionError:
            raise InputError("body is JSON nested too deeply", reason="bad_json") from None
        except ValueError as err:
            # JSONDecodeError, and every other refusal of the parser (a number longer than
            # Python's integer-string limit raises a plain ValueError): all are the body's fault.
            if is_json_type:
                where = f"{err.msg} at position {err.pos}" if isinstance(err, json.JSONDecodeError) else str(err)
                raise InputError(f"body is not valid JSON: {where}", reason="bad_json") from None
    return text


def _check_text(text: Any, max_chars: int, where: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a string, received {_describe(text)}", reason="not_text")
    if not text.strip():
        raise InputError(f"{where} is empty or blank ({len(text)} characters)", reason="empty")
    if len(text) > max_chars:
        raise InputError(f"{where} has {len(text)} characters; the limit is {max_chars}", reason="too_long")
    try:  # JSON's "\ud800" escape gives a lone surrogate: the tokenizer would fail on it
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"{where} has a lone UTF-16 surrogate U+{ord(text[err.start]):04X} at position {err.start}",
            reason="not_utf8",
        ) from None
    return text


def _check_count(n: int, max_texts: int, what: str) -> None:
    if n == 0:
        raise InputError(f"{what} is empty", reason="empty")
    if n > max_texts:
        raise InputError(f"{what} has {n} texts; the limit is {max_texts}", reason="too_many_texts")


def _parse_v2(body: dict[str, Any], max_chars: int, max_texts: int) -> ParsedRequest:
    """A KServe v2 / Open Inference Protocol request: one BYTES input whose data are the texts."""
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f'v2 "inputs" must be a list of one input, received {_describe(inputs)}', reason="bad_shape")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        named = datatype if datatype in V2_DATATYPES else _describe(datatype)
        raise InputError(f'v2 input datatype must be "BYTES" (UTF-8 texts), received {named}', reason="bad_shape")
    data, shape = tensor.get("data"), tensor.get("shape")
    if not isinstance(data, list):
        raise InputError(f'v2 input "data" must be a list of texts, received {_describe(data)}', reason="bad_shape")
    _check_count(len(data), max_texts, 'v2 input "data"')
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            and math.prod(shape) == len(data)):
        raise InputError(f'v2 input "shape" must be [{len(data)}] for {len(data)} texts, received {_describe(shape)}',
                         reason="bad_shape")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f'v2 "id" must be a string, received {_describe(request_id)}', reason="bad_shape")
    texts = [_check_text(item, max_chars, f"v2 input data[{i}]") for i, item in enumerate(data)]
    return ParsedRequest(texts, is_list=True, protocol="v2", request_id=request_id)


def parse_body(value: Any, content_type: str, *, max_chars: int, max_texts: int) -> ParsedRequest:
    """Normalise one request body: ``str`` (TorchServe decoded text/*), a decoded JSON value
    (application/json), or ``bytes`` (any other content type, or when decoding failed)."""
    if isinstance(value, (bytes, bytearray)):
        value = _from_bytes(bytes(value), content_type.lower())

    if isinstance(value, str):
        return ParsedRequest([_check_text(value, max_chars)], is_list=False)
    if isinstance(value, dict):
        if "inputs" in value:
            return _parse_v2(value, max_chars, max_texts)
        present = [key for key in TEXT_KEYS if key in value]
        if len(present) != 1:
            raise InputError(
                f'JSON object must have exactly one of "sentence" or "text", received {_describe(value)}',
                reason="bad_shape",
            )
        key = present[0]
        return ParsedRequest([_check_text(value[key], max_chars, f'"{key}"')], is_list=False)
    if isinstance(value, list):
        _check_count(len(value), max_texts, "JSON list")
        texts = [_check_text(item, max_chars, f"list item {i}") for i, item in enumerate(value)]
        return ParsedRequest(texts, is_list=True)
    raise InputError(f"received {_describe(value)}", reason="bad_shape")


def parse_options(headers: Mapping[str, Any]) -> Options:
    """Request options from the request's HTTP headers (names in any case; ``str`` or ``bytes``
    values; other headers are ignored)."""
    found = [value for name, value in headers.items() if isinstance(name, str) and name.lower() == RESULT_HEADER]
    if not found:
        return Options()
    raw = found[0]
    value = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    if value.strip().lower() not in OPTION_VALUES:
        raise InputError(f"header X-NER-Result must be true or false, received {len(value)} characters",
                         reason="bad_option")
    return Options(result=OPTION_VALUES[value.strip().lower()])


STREAM_NEXT = "ts_stream_next"


def from_grpc(headers: Mapping[str, Any]) -> bool:
    """True when TorchServe's gRPC API, not its HTTP one, handed over this request. The worker
    is not told which; but an HTTP request arrives with its client's headers (``str`` values:
    Host, Content-Length, ...), while a gRPC one has only its body parameters' content types
    (``dict`` values) and, from ``StreamPredictions2``, TorchServe's own ``ts_request_sequence_*``
    keys. (An HTTP/1.0 request sent without a single header, bodiless, is answered as HTTP all
    the same: tests/integration/test_front_door.py.)"""
    return not any(isinstance(value, str) and not str(name).startswith("ts_request_sequence_")
                   for name, value in headers.items())


# --------------------------------------------------------------------------- answers


def display_tag(tag: str, names: Mapping[str, str]) -> str:
    """The tutorial's ``predicted_tag``: the entity type's display name (``B-PER`` -> 인명), or
    the tag itself for ``O`` and special labels."""
    kind = entity_type(tag)
    return names.get(kind, kind) if kind is not None else tag


def text_answer(pred: TokenPredictions, entities: Sequence[Entity], labels: Sequence[str],
                names: Mapping[str, str] = SEED_LABEL_NAMES, result: bool = True) -> dict[str, Any]:
    """The answer for one text: the tutorial's fields (``sentence``; ``result``, a row per
    wordpiece with its argmax tag as ``predicted_tag`` and ``top_prob`` as a string), plus the
    raw tag per row and the ``entities`` with character offsets. ``result=False`` leaves the
    rows out (the answer then grows with the entities, not the wordpieces)."""
    answer: dict[str, Any] = {"sentence": pred.text}
    if result:
        answer["result"] = [
            {"token": token, "predicted_tag": display_tag(labels[i], names), "top_prob": str(round(prob, 4)),
             "tag": labels[i]}
            for token, i, prob in zip(pred.tokens, pred.label_ids, pred.probs)
        ]
    answer["entities"] = [
        {"text": pred.text[e.start:e.end], "label": e.label, "label_name": names.get(e.label, e.label),
         "start": e.start, "end": e.end, "score": e.score}
        for e in entities
    ]
    return answer


def shape_answer(request: ParsedRequest, answers: list[dict[str, Any]], *, model_name: str,
                 model_version: str, request_id: str) -> Any:
    """The JSON value answering ``request``: one answer or a list, or a KServe v2 response whose
    output holds one JSON string per text (``request_id`` when the v2 request had no "id")."""
    if request.protocol != "v2":
        return answers if request.is_list else answers[0]
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request.request_id or request_id,
        "outputs": [{
            "name": V2_OUTPUT, "datatype": "BYTES", "shape": [len(answers)],
            "data": [json.dumps(answer, ensure_ascii=False) for answer in answers],
        }],
    }


def dumps(value: Any) -> bytes:
    """UTF-8 JSON with Korean kept readable (TorchServe's default escapes it)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def checked_size(answer: bytes, max_bytes: int) -> bytes:
    """``answer`` if it fits ``max_bytes``; TorchServe drops the worker's connection (and every
    request in flight on it) for an answer over its ``max_response_size``, so a larger one is
    refused here instead."""
    if len(answer) > max_bytes:
        raise InputError(
            f"the answer would be {len(answer)} bytes; the limit is {max_bytes}: send fewer or shorter "
            "texts, or ask without the per-token rows (header X-NER-Result: false)",
            status=413, reason="answer_too_large",
        )
    return answer
