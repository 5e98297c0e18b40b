"""Turn one TorchServe request into the texts to tag, or an ``InputError`` saying why not.

Every accepted input shape is handled here, in one function, so the handler and the tests
agree on what a request may be. Messages name what was received (type, length) but never
echo the text itself: request text is personal data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ACCEPTED = (
    'a UTF-8 text body (Content-Type: text/plain), a JSON string, {"sentence": "..."}, '
    '{"text": "..."}, or a JSON list of strings'
)
TEXT_KEYS = ("sentence", "text")


class InputError(ValueError):
    """A request that cannot be answered; ``status`` is the HTTP code to send back."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "accepted": ACCEPTED, "status": self.status}


@dataclass(frozen=True)
class ParsedRequest:
    texts: list[str]
    is_list: bool  # answer with a JSON list (the request was a list) or a single object


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
        keys = sorted(value)[:5]
        return f"a JSON object with keys {keys}" if keys else "an empty JSON object"
    return f"a value of type {type(value).__name__}"


def _decode_utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"body is not valid UTF-8: byte 0x{body[err.start]:02x} at position {err.start}"
        ) from None


def _from_bytes(body: bytes, content_type: str) -> Any:
    """Bytes arrive when TorchServe did not (or could not) decode the body itself."""
    text = _decode_utf8(body)
    is_json_type = content_type.startswith("application/json")
    if is_json_type or (not content_type.startswith("text/") and text.lstrip()[:1] in ('"', "[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            if is_json_type:
                raise InputError(f"body is not valid JSON: {err.msg} at position {err.pos}") from None
        except RecursionError:
            raise InputError("body is JSON nested too deeply") from None
    return text


def _check_text(text: Any, max_chars: int, where: str = "text") -> str:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a string, received {_describe(text)}")
    if not text.strip():
        raise InputError(f"{where} is empty or blank ({len(text)} characters)")
    if len(text) > max_chars:
        raise InputError(f"{where} has {len(text)} characters; the limit is {max_chars}")
    return text


def parse_request(
    row: dict[str, Any], content_type: str, *, max_chars: int, max_texts: int
) -> ParsedRequest:
    """Normalise one request of a TorchServe batch.

    ``row`` is TorchServe's per-request dict: the body is under ``data`` or ``body`` and is
    already ``str`` for text/* and a decoded JSON value for application/json (bytes when
    decoding failed, or for any other content type).
    """
    if "data" in row:
        value = row["data"]
    elif "body" in row:
        value = row["body"]
    else:
        raise InputError(
            "no request body found (a form-encoded body is split into fields by TorchServe: "
            "send the text with Content-Type: text/plain or application/json)"
        )
    if isinstance(value, (bytes, bytearray)):
        value = _from_bytes(bytes(value), content_type.lower())

    if isinstance(value, str):
        return ParsedRequest([_check_text(value, max_chars)], is_list=False)
    if isinstance(value, dict):
        present = [key for key in TEXT_KEYS if key in value]
        if len(present) != 1:
            raise InputError(
                f'JSON object must have exactly one of "sentence" or "text", received {_describe(value)}'
            )
        key = present[0]
        return ParsedRequest([_check_text(value[key], max_chars, f'"{key}"')], is_list=False)
    if isinstance(value, list):
        if not value:
            raise InputError("JSON list is empty")
        if len(value) > max_texts:
            raise InputError(f"JSON list has {len(value)} texts; the limit is {max_texts}")
        texts = [_check_text(item, max_chars, f"list item {i}") for i, item in enumerate(value)]
        return ParsedRequest(texts, is_list=True)
    raise InputError(f"received {_describe(value)}")
