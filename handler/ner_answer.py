"""The answers: one text's answer (the tutorial's fields and the entities, ``text_answer``), the
JSON value a request gets (one answer, a list, or a KServe v2 response: ``shape_answer``) and
the bytes that go back (``render_answer``, refused over ``max_response_bytes``). Plain Python,
no TorchServe import and no model.

The answer's fields are named once, here (``ANSWER_FIELDS``, ``ROW_FIELDS``, ``ENTITY_FIELDS``):
``text_answer`` builds exactly them, tests/unit/test_limits.py bounds the size of each, and the
README example and docs/protocols.md are checked against them (tests/unit/test_answer_fields.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ner_labels import BUILTIN_LABEL_NAMES, entity_type
from ner_request import JSON_UTF8, InputError, ParsedRequest
from ner_v2 import INFERENCE_HEADER, OCTET_STREAM, V2_OUTPUT, encode_bytes_tensor
from ner_wire import dumps

if TYPE_CHECKING:  # the model's side; this module needs no torch
    from ner_core import Entity, TokenPredictions

ANSWER_FIELDS = ("sentence", "result", "entities")  # one text's answer ("result" only when asked for)
ROW_FIELDS = ("token", "predicted_tag", "top_prob", "tag")  # a "result" row: one wordpiece
ENTITY_FIELDS = ("text", "label", "label_name", "start", "end", "score")  # an entity


def display_tag(tag: str, names: Mapping[str, str]) -> str:
    """The tutorial's ``predicted_tag``: the entity type's display name (``B-PER`` -> 인명), or
    the tag itself for ``O`` and special labels."""
    kind = entity_type(tag)
    return names.get(kind, kind) if kind is not None else tag


def text_answer(
    pred: TokenPredictions,
    entities: Sequence[Entity],
    labels: Sequence[str],
    names: Mapping[str, str] = BUILTIN_LABEL_NAMES,
    result: bool = True,
) -> dict[str, Any]:
    """The answer for one text: the tutorial's fields (``sentence``; ``result``, a row per
    wordpiece with its argmax tag as ``predicted_tag`` and ``top_prob`` as a string), plus the
    raw tag per row and the ``entities`` with character offsets. ``result=False`` leaves the
    rows out (the answer then grows with the entities, not the wordpieces)."""
    answer: dict[str, Any] = {"sentence": pred.text}
    if result:
        answer["result"] = [
            {
                "token": token,
                "predicted_tag": display_tag(labels[i], names),
                "top_prob": str(round(prob, 4)),
                "tag": labels[i],
            }
            for token, i, prob in zip(pred.tokens, pred.label_ids, pred.probs, strict=True)
        ]
    answer["entities"] = [
        {
            "text": pred.text[e.start : e.end],
            "label": e.label,
            "label_name": names.get(e.label, e.label),
            "start": e.start,
            "end": e.end,
            "score": e.score,
        }
        for e in entities
    ]
    return answer


def shape_answer(
    request: ParsedRequest, answers: list[Any], *, model_name: str, model_version: str, request_id: str
) -> Any:
    """The JSON value answering ``request``: one answer or a list, or a KServe v2 response whose
    output holds one JSON string per text (``request_id`` when the v2 request had no "id")."""
    if request.protocol != "v2":
        return answers if request.is_list else answers[0]
    return {
        "model_name": model_name,
        "model_version": model_version,
        "id": request.request_id or request_id,
        "outputs": [
            {
                "name": V2_OUTPUT,
                "datatype": "BYTES",
                "shape": [len(answers)],
                "data": [json.dumps(answer, ensure_ascii=False) for answer in answers],
            }
        ],
    }


@dataclass(frozen=True)
class Reply:
    """What answers one request: its bytes, content type and extra response headers."""

    body: bytes
    content_type: str = JSON_UTF8
    headers: Mapping[str, str] = field(default_factory=dict)


def render_answer(
    request: ParsedRequest, answers: list[Any], *, model_name: str, model_version: str, request_id: str, max_bytes: int
) -> Reply:
    """The reply to ``request``: JSON (``shape_answer``), or for a v2 request that asked for
    binary output, the binary tensor data extension's answer: the v2 response's JSON with the
    output's ``binary_data_size`` instead of its ``data``, then the elements (each a 4-byte
    little-endian length and the UTF-8 JSON answer for one text), the JSON's length in the
    ``Inference-Header-Content-Length`` header. Refused over ``max_bytes`` (``checked_size``)."""
    value = shape_answer(request, answers, model_name=model_name, model_version=model_version, request_id=request_id)
    if not (request.protocol == "v2" and request.binary_output):
        return Reply(checked_size(dumps(value), max_bytes))
    [output] = value["outputs"]
    data = encode_bytes_tensor([item.encode("utf-8") for item in output.pop("data")])
    output["parameters"] = {"binary_data_size": len(data)}
    header = dumps(value)
    return Reply(checked_size(header + data, max_bytes), OCTET_STREAM, {INFERENCE_HEADER: str(len(header))})


def checked_size(answer: bytes, max_bytes: int) -> bytes:
    """``answer`` if it fits ``max_bytes``; TorchServe drops the worker's connection (and every
    request in flight on it) for an answer over its ``max_response_size``, so a larger one is
    refused here instead."""
    if len(answer) > max_bytes:
        raise InputError(
            f"the answer would be {len(answer)} bytes; the limit is {max_bytes}: send fewer or shorter "
            "texts, or ask without the per-token rows (header X-NER-Result: false)",
            status=413,
            reason="answer_too_large",
        )
    return answer
