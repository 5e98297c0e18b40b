"""The Open Inference Protocol (KServe v2) on the wire: a request's one BYTES input of texts, in
JSON or with the binary tensor data extension (a JSON header of ``Inference-Header-Content-Length``
bytes, then the tensors' bytes, every length checked against what is there), and the BYTES
tensor layout both ways. Plain Python, no TorchServe import and no model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ner_request import InputError, ParsedRequest, check_count, check_text, decode_utf8, describe

# Open Inference Protocol tensor types, named back to a client that sent the wrong one.
V2_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
V2_OUTPUT = "ner"  # name of the v2 output tensor: one JSON answer (as for a plain request) per text
V2_INPUT = "texts"  # the input's name in the model metadata (a request may name its one input anything)
# The binary tensor data extension: the request or answer header that gives the length in bytes
# of the JSON object the body starts with; the tensors' bytes follow it.
INFERENCE_HEADER = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"  # the content type of an answer with binary tensor data


def parse_v2(body: dict[str, Any], max_chars: int, max_texts: int, binary: bytes | None = None) -> ParsedRequest:
    """A KServe v2 / Open Inference Protocol request: one BYTES input whose data are the texts,
    in its JSON ``data`` or, with the binary tensor data extension, in ``binary`` (the bytes
    after the JSON header; None when the request had no such header)."""
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f'v2 "inputs" must be a list of one input, received {describe(inputs)}', reason="bad_shape")
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype != "BYTES":
        named = datatype if datatype in V2_DATATYPES else describe(datatype)
        raise InputError(f'v2 input datatype must be "BYTES" (UTF-8 texts), received {named}', reason="bad_shape")
    size = _parameter(tensor, "binary_data_size", int, "v2 input")
    if size is not None:
        data: Any = _binary_elements(tensor, size, binary)
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise InputError(f'v2 input "data" must be a list of texts, received {describe(data)}', reason="bad_shape")
    if binary is not None and len(binary) != (size or 0):
        raise InputError(
            f"the body has {len(binary)} bytes after its JSON header and the input's binary_data_size is "
            f"{size or 0}: {len(binary) - (size or 0)} bytes belong to no input",
            reason="bad_binary",
        )
    check_count(len(data), max_texts, 'v2 input "data"')
    shape = tensor.get("shape")
    if not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and math.prod(shape) == len(data)
    ):
        small = isinstance(shape, list) and len(shape) <= 4 and all(type(d) is int and abs(d) < 10**9 for d in shape)
        got = shape if small else describe(shape)
        raise InputError(
            f'v2 input "shape" must be [{len(data)}] for {len(data)} texts, received {got}', reason="bad_shape"
        )
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f'v2 "id" must be a string, received {describe(request_id)}', reason="bad_shape")
    binary_output = _binary_output(body)
    texts = [check_text(_element_text(item, i), max_chars, f"v2 input data[{i}]") for i, item in enumerate(data)]
    return ParsedRequest(texts, is_list=True, protocol="v2", request_id=request_id, binary_output=binary_output)


def _parameter(owner: dict[str, Any], name: str, kind: type, where: str) -> Any:
    """``owner["parameters"][name]`` if given (None otherwise), checked to be a ``kind``."""
    parameters = owner.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InputError(
            f'{where} "parameters" must be a JSON object, received {describe(parameters)}', reason="bad_shape"
        )
    value = parameters.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or (
        kind is int and (isinstance(value, bool) or (isinstance(value, int) and value < 0))
    ):
        expected = "a byte count" if kind is int else "true or false"
        raise InputError(
            f'{where} parameter "{name}" must be {expected}, received {describe(value)}', reason="bad_shape"
        )
    return value


def _binary_elements(tensor: dict[str, Any], size: int, binary: bytes | None) -> list[bytes]:
    """The input's elements from the binary tensor data: ``size`` bytes of 4-byte
    little-endian lengths, each followed by that many bytes."""
    if binary is None:
        raise InputError(
            f'v2 input has "binary_data_size" but the request has no {INFERENCE_HEADER} header '
            "(the length of the JSON object the binary data follows)",
            reason="bad_binary",
        )
    if "data" in tensor:
        raise InputError('v2 input has both "data" and "binary_data_size": send its texts one way', reason="bad_binary")
    if size > len(binary):
        raise InputError(
            f"v2 input binary_data_size is {size} bytes but {len(binary)} bytes follow the JSON header",
            reason="bad_binary",
        )
    return decode_bytes_tensor(binary[:size])


def decode_bytes_tensor(data: bytes) -> list[bytes]:
    """The elements of a BYTES tensor in the binary extension's layout (each a 4-byte
    little-endian length, then that many bytes), every length checked against what is left."""
    view, pos = memoryview(data), 0
    items: list[bytes] = []
    while pos < len(view):
        if len(view) - pos < 4:
            raise InputError(
                f"v2 binary data: element {len(items)} at byte {pos} has only {len(view) - pos} of "
                "the 4 bytes of its length",
                reason="bad_binary",
            )
        length = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if length > len(view) - pos:
            raise InputError(
                f"v2 binary data: element {len(items)} declares {length} bytes but {len(view) - pos} bytes are left",
                reason="bad_binary",
            )
        items.append(bytes(view[pos : pos + length]))
        pos += length
    return items


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """A BYTES tensor in the binary extension's layout (the inverse of ``decode_bytes_tensor``)."""
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def _element_text(item: Any, index: int) -> Any:
    """A binary element is UTF-8 text; a JSON element is checked as it is."""
    if isinstance(item, bytes):
        return decode_utf8(item, f"v2 input data[{index}]")
    return item


def _binary_output(body: dict[str, Any]) -> bool:
    """Whether the client asked for the output as binary tensor data: ``binary_data`` on the
    requested output, else ``binary_data_output`` of the request, else JSON."""
    default = _parameter(body, "binary_data_output", bool, "v2 request")
    outputs = body.get("outputs")
    if outputs is None:
        return bool(default)
    if not isinstance(outputs, list) or len(outputs) > 1 or not all(isinstance(o, dict) for o in outputs):
        raise InputError(
            f'v2 "outputs" must be a list of at most one output, received {describe(outputs)}', reason="bad_shape"
        )
    if not outputs:
        return bool(default)
    name = outputs[0].get("name")
    if name != V2_OUTPUT:
        named = f'"{name}"' if isinstance(name, str) and len(name) <= 64 else describe(name)
        raise InputError(
            f'v2 requested output {named} does not exist: the model has one output, "{V2_OUTPUT}"', reason="bad_shape"
        )
    asked = _parameter(outputs[0], "binary_data", bool, f'v2 output "{V2_OUTPUT}"')
    return bool(default) if asked is None else asked


def parse_v2_binary(value: Any, content_type: str, header: int, max_chars: int, max_texts: int) -> ParsedRequest:
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
            raise InputError(
                f"header {INFERENCE_HEADER} is {header} but the body has only {len(raw)} bytes", reason="bad_binary"
            )
        text = decode_utf8(raw[:header], f"the v2 JSON header (the first {header} bytes)")
        try:
            body = json.loads(text)
        except RecursionError:
            raise InputError("the v2 JSON header is nested too deeply", reason="bad_json") from None
        except ValueError as err:
            where = f"{err.msg} at position {err.pos}" if isinstance(err, json.JSONDecodeError) else str(err)
            raise InputError(
                f"the v2 JSON header (the first {header} bytes, from {INFERENCE_HEADER}) is not valid JSON: {where}",
                reason="bad_json",
            ) from None
        binary = raw[header:]
    if not isinstance(body, dict) or "inputs" not in body:
        raise InputError(
            f"a request with the header {INFERENCE_HEADER} must be a v2 request: its JSON header must be "
            f'a JSON object with "inputs", received {describe(body)}',
            reason="bad_binary",
        )
    return parse_v2(body, max_chars, max_texts, binary=binary)


def inference_header_length(headers: Mapping[str, Any]) -> int | None:
    """The binary extension's ``Inference-Header-Content-Length`` request header (any case;
    ``str`` or ``bytes``), None when absent."""
    found = [
        value for name, value in headers.items() if isinstance(name, str) and name.lower() == INFERENCE_HEADER.lower()
    ]
    if not found:
        return None
    raw = found[0]
    value = (raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw)).strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise InputError(
            f"header {INFERENCE_HEADER} must be a length in bytes, received {len(value)} characters",
            reason="bad_binary",
        )
    return int(value)
