"""What a request is once read, and the errors that answer one: plain Python, no TorchServe
import and no model. The wire format (ner_wire, ner_v2) builds these; the handler carries a
``Job`` through the chain; an error's ``status`` and ``body()`` are what the client gets back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the model's side; this module needs no torch
    from ner_core import EncodedText, TokenPredictions
    from ner_hf import HfOptions

ACCEPTED = (
    'a UTF-8 text body (Content-Type: text/plain), a JSON string, {"sentence": "..."}, '
    '{"text": "..."}, a JSON list of strings, or a KServe v2 request '
    '{"inputs": [{"name": "...", "shape": [n], "datatype": "BYTES", "data": ["...", ...]}]}, '
    "its texts also as binary tensor data (header Inference-Header-Content-Length), or Hugging Face's "
    '{"inputs": "..." or ["...", ...], "parameters": {"aggregation_strategy": "simple" or "none", '
    '"ignore_labels": [...], "stride": n}}'
)
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
    hf: HfOptions | None = None  # a Hugging Face request's parameters (protocol "hf": ner_hf)


@dataclass(frozen=True)
class Job:
    """One request on its way through the chain: its parsed body, its texts encoded, then tagged."""

    request: ParsedRequest
    encoded: list[EncodedText]
    predictions: list[TokenPredictions] | None = None


def describe(value: Any) -> str:
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


def decode_utf8(body: bytes, what: str = "body") -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{what} is not valid UTF-8: byte 0x{body[err.start]:02x} at position {err.start}",
            reason="not_utf8",
        ) from None


def check_text(text: Any, max_chars: int, where: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a string, received {describe(text)}", reason="not_text")
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


def check_count(n: int, max_texts: int, what: str) -> None:
    if n == 0:
        raise InputError(f"{what} is empty", reason="empty")
    if n > max_texts:
        raise InputError(f"{what} has {n} texts; the limit is {max_texts}", reason="too_many_texts")
