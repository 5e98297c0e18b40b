"""The wire format: request bodies in, answer and error bytes out. Plain Python, no TorchServe
import and no model: the handler hands over one request's body, gets back the texts to tag (or
the ``RequestError`` that answers the request), and turns answers and errors into JSON bytes here.

Every accepted input shape is handled in one function (``parse_body``), so the handler and the
tests agree on what a request may be. Messages name what was received (type, length) but never
echo the text itself: request text is personal data. A KServe v2 (Open Inference Protocol)
request is answered in kind (``shape_answer``), in JSON or, when the client asks, with the
protocol's binary tensor data extension (``render_answer``); a binary request (a JSON header of
``Inference-Header-Content-Length`` bytes, then the tensor bytes) goes through one bounded
parser that checks every length against what is there (``parse_body`` with the request's
headers). The answers themselves (their fields, and the reply a request gets) are ner_answer's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence


if TYPE_CHECKING:  # the model's side; this module needs no torch
    from ner_core import EncodedText, TokenPredictions

ACCEPTED = (
    'a UTF-8 text body (Content-Type: text/plain), a JSON string, {"sentence": "..."}, '
    '{"text": "..."}, a JSON list of strings, or a KServe v2 request '
    '{"inputs": [{"name": "...", "shape": [n], "datatype": "BYTES", "data": ["...", ...]}]}, '
    'its texts also as binary tensor data (header Inference-Header-Content-Length)'
)
TEXT_KEYS = ("sentence", "text")
# Open Inference Protocol tensor types, named back to a client that sent the wrong one.
V2_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                "FP16", "FP32", "FP64", "BYTES")
V2_OUTPUT = "ner"  # name of the v2 output tensor: one JSON answer (as for a plain request) per text
V2_INPUT = "texts"  # the input's name in the model metadata (a request may name its one input anything)
# The binary tensor data extension: the request or answer header that gives the length in bytes
# of the JSON object the body starts with; the tensors' bytes follow it.
INFERENCE_HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"  # the content type of an answer with binary tensor data
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
    binary_output: bool = False  # a v2 request that asked for its output as binary tensor data


@dataclass(frozen=True)
class Job:
    """One request on its way through the chain: its parsed body, its texts encoded, then tagged."""

    request: ParsedRequest
    encoded: list[EncodedText]
    predictions: list[TokenPredictions] | None = None



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
    try:
        text = _decode_utf8(body)
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
            "with the JSON object's length in bytes", reason="bad_binary")


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


def _parse_v2(body: dict[str, Any], max_chars: int, max_texts: int, binary: bytes | None = None) -> ParsedRequest:
    """A KServe v2 / Open Inference Protocol request: one BYTES input whose data are the texts,
    in its JSON ``data`` or, with the binary tensor data extension, in ``binary`` (the bytes
    after the JSON header; None when the request had no such header)."""
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f'v2 "inputs" must be a list of one input, received {_describe(inputs)}', reason="bad_shape")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        named = datatype if datatype in V2_DATATYPES else _describe(datatype)
        raise InputError(f'v2 input datatype must be "BYTES" (UTF-8 texts), received {named}', reason="bad_shape")
    size = _parameter(tensor, "binary_data_size", int, "v2 input")
    if size is not None:
        data: Any = _binary_elements(tensor, size, binary)
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InputError(f'v2 input "data" must be a list of texts, received {_describe(data)}', reason="bad_shape")
    if binary is not None and len(binary) != (size or 0):
        raise InputError(
            f"the body has {len(binary)} bytes after its JSON header and the input's binary_data_size is "
            f"{size or 0}: {len(binary) - (size or 0)} bytes belong to no input", reason="bad_binary")
    _check_count(len(data), max_texts, 'v2 input "data"')
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
            and math.prod(shape) == len(data)):
        small = isinstance(shape, list) and len(shape) <= 4 and all(type(d) is int and abs(d) < 10**9 for d in shape)
        got = shape if small else _describe(shape)
        raise InputError(f'v2 input "shape" must be [{len(data)}] for {len(data)} texts, received {got}',
                         reason="bad_shape")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f'v2 "id" must be a string, received {_describe(request_id)}', reason="bad_shape")
    binary_output = _binary_output(body)
    texts = [_check_text(_element_text(item, i), max_chars, f"v2 input data[{i}]") for i, item in enumerate(data)]
    return ParsedRequest(texts, is_list=True, protocol="v2", request_id=request_id, binary_output=binary_output)


def _parameter(owner: dict[str, Any], name: str, kind: type, where: str) -> Any:
    """``owner["parameters"][name]`` if given (None otherwise), checked to be a ``kind``."""
    parameters = owner.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InputError(f'{where} "parameters" must be a JSON object, received {_describe(parameters)}',
                         reason="bad_shape")
    value = parameters.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or (isinstance(value, int) and value < 0))):
        expected = "a byte count" if kind is int else "true or false"
        raise InputError(f'{where} parameter "{name}" must be {expected}, received {_describe(value)}',
                         reason="bad_shape")
    return value


def _binary_elements(tensor: dict[str, Any], size: int, binary: bytes | None) -> list[bytes]:
    """The input's elements from the binary tensor data: ``size`` bytes of 4-byte
    little-endian lengths, each followed by that many bytes."""
    if binary is None:
        raise InputError(f'v2 input has "binary_data_size" but the request has no {INFERENCE_HEADER} header '
                         "(the length of the JSON object the binary data follows)", reason="bad_binary")
    if "data" in tensor:
        raise InputError('v2 input has both "data" and "binary_data_size": send its texts one way',
                         reason="bad_binary")
    if size > len(binary):
        raise InputError(f"v2 input binary_data_size is {size} bytes but {len(binary)} bytes follow the JSON header",
                         reason="bad_binary")
    return decode_bytes_tensor(binary[:size])


def decode_bytes_tensor(data: bytes) -> list[bytes]:
    """The elements of a BYTES tensor in the binary extension's layout (each a 4-byte
    little-endian length, then that many bytes), every length checked against what is left."""
    view, pos = memoryview(data), 0
    items: list[bytes] = []
    while pos < len(view):
        if len(view) - pos < 4:
            raise InputError(f"v2 binary data: element {len(items)} at byte {pos} has only {len(view) - pos} of "
                             "the 4 bytes of its length", reason="bad_binary")
        length = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if length > len(view) - pos:
            raise InputError(f"v2 binary data: element {len(items)} declares {length} bytes but {len(view) - pos} "
                             "bytes are left", reason="bad_binary")
        items.append(bytes(view[pos:pos + length]))
        pos += length
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """A BYTES tensor in the binary extension's layout (the inverse of ``decode_bytes_tensor``)."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def _element_text(item: Any, index: int) -> Any:
    """A binary element is UTF-8 text; a JSON element is checked as it is."""
    if isinstance(item, bytes):
        return _decode_utf8(item, f"v2 input data[{index}]")
    return item


def _binary_output(body: dict[str, Any]) -> bool:
    """Whether the client asked for the output as binary tensor data: ``binary_data`` on the
    requested output, else ``binary_data_output`` of the request, else JSON."""
    default = _parameter(body, "binary_data_output", bool, "v2 request")
    outputs = body.get("outputs")
    if outputs is None:
        return bool(default)
    if not isinstance(outputs, list) or len(outputs) > 1 or not all(isinstance(o, dict) for o in outputs):
        raise InputError(f'v2 "outputs" must be a list of at most one output, received {_describe(outputs)}',
                         reason="bad_shape")
    if not outputs:
        return bool(default)
    name = outputs[0].get("name")
    if name != V2_OUTPUT:
        named = f'"{name}"' if isinstance(name, str) and len(name) <= 64 else _describe(name)
        raise InputError(f'v2 requested output {named} does not exist: the model has one output, "{V2_OUTPUT}"',
                         reason="bad_shape")
    asked = _parameter(outputs[0], "binary_data", bool, f'v2 output "{V2_OUTPUT}"')
    return bool(default) if asked is None else asked


def _parse_v2_binary(value: Any, content_type: str, header: int, max_chars: int, max_texts: int) -> ParsedRequest:
    """A v2 request with the binary tensor data extension: ``header`` bytes of JSON, then the
    tensors' bytes. A body TorchServe decoded itself is taken back to what was sent: text/* is
    decoded losslessly; a value decoded from application/json was JSON alone, with no binary data."""
    if isinstance(value, (bytes, bytearray)):
        raw: bytes | None = bytes(value)
    elif isinstance(value, str) and content_type.lower().startswith("text/"):
        raw = value.encode("utf-8", "surrogatepass")
    else:
        raw = None
    if raw is None:
        body, binary = value, b""
    else:
        if header > len(raw):
            raise InputError(f"header {INFERENCE_HEADER} is {header} but the body has only {len(raw)} bytes",
                             reason="bad_binary")
        text = _decode_utf8(raw[:header], f"the v2 JSON header (the first {header} bytes)")
        try:
            body = json.loads(text)
        except RecursionError:
            raise InputError("the v2 JSON header is nested too deeply", reason="bad_json") from None
        except ValueError as err:
            where = f"{err.msg} at position {err.pos}" if isinstance(err, json.JSONDecodeError) else str(err)
            raise InputError(f"the v2 JSON header (the first {header} bytes, from {INFERENCE_HEADER}) is not valid "
                             f"JSON: {where}", reason="bad_json") from None
        binary = raw[header:]
    if not isinstance(body, dict) or "inputs" not in body:
        raise InputError(f'a request with the header {INFERENCE_HEADER} must be a v2 request: its JSON header must be '
                         f'a JSON object with "inputs", received {_describe(body)}', reason="bad_binary")
    return _parse_v2(body, max_chars, max_texts, binary=binary)


def inference_header_length(headers: Mapping[str, Any]) -> int | None:
    """The binary extension's ``Inference-Header-Content-Length`` request header (any case;
    ``str`` or ``bytes``), None when absent."""
    found = [value for name, value in headers.items()
             if isinstance(name, str) and name.lower() == INFERENCE_HEADER.lower()]
    if not found:
        return None
    raw = found[0]
    value = (raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)).strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise InputError(f"header {INFERENCE_HEADER} must be a length in bytes, received {len(value)} characters",
                         reason="bad_binary")
    return int(value)


def parse_body(value: Any, content_type: str, *, max_chars: int, max_texts: int,
               headers: Mapping[str, Any] | None = None) -> ParsedRequest:
    """Normalise one request body: ``str`` (TorchServe decoded text/*), a decoded JSON value
    (application/json), or ``bytes`` (any other content type, or when decoding failed).
    ``headers`` (the request's HTTP headers) tell a v2 request with binary tensor data."""
    header = inference_header_length(headers or {})
    if header is not None:
        return _parse_v2_binary(value, content_type, header, max_chars, max_texts)
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


def dumps(value: Any) -> bytes:
    """UTF-8 JSON with Korean kept readable (TorchServe's default escapes it)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8")
