"""Hugging Face's token-classification shape: the request and answer of the HF Inference API and
Inference Endpoints, SageMaker's Hugging Face containers, ``huggingface_hub``'s
``InferenceClient.token_classification`` and ``@huggingface/inference``'s ``tokenClassification``.

A request is ``{"inputs": "text" or ["text", ...], "parameters": {...}}``; it becomes the
service's own ``ParsedRequest`` (``parse_request``, called by ``ner_wire.parse_body``) with the HF
options beside it, and goes through the same limits, bulkhead and batching as every other shape.
The answer per text is HF's list of dicts (``text_answer``, called by the handler): the service's
entities as ``{entity_group, score, word, start, end}``, or with ``aggregation_strategy: none`` one
row per wordpiece ``{entity, score, index, word, start, end}``. ``word`` is always
``text[start:end]``, offsets are characters of the text as sent. Plain Python, no model, no
TorchServe; what each parameter does or why it is refused: docs/protocols.md.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ner_request import InputError, ParsedRequest, check_count, check_text, describe

if TYPE_CHECKING:  # the model's side; this module needs no torch
    from ner_core import Entity, TokenPredictions
    from ner_settings import HandlerSettings

PROTOCOL = "hf"  # ParsedRequest.protocol of a Hugging Face request
KEYS = ("inputs", "parameters")
PARAMETERS = ("aggregation_strategy", "ignore_labels", "stride")
GROUPED, PER_TOKEN = "simple", "none"
STRATEGIES = (GROUPED, PER_TOKEN)
# transformers' word-level strategies: each word (a wordpiece and its ## pieces) takes one label voted over them.
WORD_STRATEGIES = ("first", "average", "max")
DEFAULT_IGNORED = frozenset({"O"})  # transformers' default ignore_labels
MAX_NAMED = 60  # characters of an unknown key or value quoted back in an error


@dataclass(frozen=True)
class HfOptions:
    """A Hugging Face request's ``parameters``, checked."""

    per_token: bool = False  # aggregation_strategy "none": a row per wordpiece instead of the entities
    ignore_labels: frozenset[str] | None = None  # None: transformers' default, ["O"]
    stride: int | None = None  # tokens shared by consecutive windows; None: the model config's window_stride


def is_hf_request(value: dict[str, Any]) -> bool:
    """Whether a JSON object is Hugging Face's shape rather than KServe v2's: its ``inputs`` is a
    text, or a list that is empty or starts with a text (v2's is a list of tensor objects)."""
    inputs = value.get("inputs")
    return isinstance(inputs, str) or (isinstance(inputs, list) and (not inputs or isinstance(inputs[0], str)))


def _named(items: Sequence[Any]) -> str:
    """Unknown keys or values as a short list, each cut to MAX_NAMED characters."""
    shown = [str(item)[:MAX_NAMED] for item in sorted(items, key=str)[:5]]
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return f"{shown}{more}"


def _quoted(text: str) -> str:
    """A short string as JSON writes it: readable, but a lone surrogate (which no answer could
    encode as UTF-8) escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(text)
    return json.dumps(text, ensure_ascii=False)


def parse_request(value: dict[str, Any], *, max_chars: int, max_texts: int) -> ParsedRequest:
    """A Hugging Face request as the service's own: a text answers with one list, a list of texts
    with one list per text, in order (within ``max_texts``, each text within ``max_chars``)."""
    unknown = [key for key in value if key not in KEYS]
    if unknown:
        raise InputError(
            f'Hugging Face request has unknown key(s) {_named(unknown)}: it takes "inputs" and "parameters"',
            reason="bad_shape",
        )
    options = parse_parameters(value.get("parameters"))
    inputs = value["inputs"]
    if isinstance(inputs, str):
        texts, is_list = [check_text(inputs, max_chars, '"inputs"')], False
    else:
        check_count(len(inputs), max_texts, '"inputs"')
        texts, is_list = [check_text(item, max_chars, f'"inputs"[{i}]') for i, item in enumerate(inputs)], True
    return ParsedRequest(texts, is_list=is_list, protocol=PROTOCOL, hf=options)


def parse_parameters(raw: Any) -> HfOptions:
    """``parameters``: absent, null or ``{}`` is the default (the entities); a parameter given as
    null is as if absent (huggingface_hub leaves out the ones not set; a hand-written body may not)."""
    if raw is None:
        return HfOptions()
    if not isinstance(raw, dict):
        raise InputError(f'"parameters" must be a JSON object, received {describe(raw)}', reason="bad_shape")
    unknown = [key for key in raw if key not in PARAMETERS]
    if unknown:
        raise InputError(
            f"unknown parameter(s) {_named(unknown)}; the parameters are {list(PARAMETERS)}", reason="bad_parameter"
        )
    return HfOptions(
        per_token=_strategy(raw.get("aggregation_strategy")) == PER_TOKEN,
        ignore_labels=_ignore_labels(raw.get("ignore_labels")),
        stride=_stride(raw.get("stride")),
    )


def _strategy(value: Any) -> str:
    if value is None:
        return GROUPED
    if not isinstance(value, str):
        raise InputError(
            f'parameter "aggregation_strategy" must be a string, one of {list(STRATEGIES)}, received {describe(value)}',
            reason="bad_parameter",
        )
    strategy = value.lower()  # transformers reads it case-insensitively (AggregationStrategy[value.upper()])
    if strategy in WORD_STRATEGIES:
        raise InputError(
            f'aggregation_strategy "{strategy}" is not served; the accepted values are {list(STRATEGIES)}: '
            f'"{GROUPED}" gives the service\'s entities (BIO-constrained decoding, Korean particles cut off their '
            f'ends), "{PER_TOKEN}" one row per wordpiece. "first", "average" and "max" vote one label per word '
            "(a wordpiece and the ## pieces after it), and a Korean word carries its particle (서울에서), so they "
            "would put particles inside entities",
            reason="bad_parameter",
        )
    if strategy not in STRATEGIES:
        raise InputError(
            f"aggregation_strategy {_quoted(value[:MAX_NAMED])} is unknown; the accepted values are {list(STRATEGIES)}",
            reason="bad_parameter",
        )
    return strategy


def _ignore_labels(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError(
            f'parameter "ignore_labels" must be a list of labels (strings), received {describe(value)}',
            reason="bad_parameter",
        )
    for i, label in enumerate(value):
        if not isinstance(label, str):
            raise InputError(
                f'parameter "ignore_labels" item {i} must be a string, received {describe(label)}',
                reason="bad_parameter",
            )
    return frozenset(value)


def _stride(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(
            f'parameter "stride" must be a whole number of tokens, at least 0, received {_number(value)}',
            reason="bad_parameter",
        )
    return value


def _number(value: Any) -> str:
    """A number as received when it is short, else what it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 10**9:
        return repr(value)
    return describe(value)


def window_settings(request: ParsedRequest, settings: HandlerSettings) -> HandlerSettings:
    """The settings a request's texts are cut into windows with: the model config's, or with a
    Hugging Face ``stride`` as the overlap of consecutive windows (``window_stride``), which must
    stay within half a window as the model config's must."""
    stride = request.hf.stride if request.hf is not None else None
    if stride is None or stride == settings.window_stride:
        return settings
    window = settings.max_seq_length - 2
    if stride > window // 2:
        raise InputError(
            f'parameter "stride" is {_number(stride)} tokens; the overlap of two windows of this '
            f"model can be 0 to {window // 2} (half a window of {window} wordpieces, max_seq_length "
            f"{settings.max_seq_length} with [CLS] and [SEP])",
            reason="bad_parameter",
        )
    return dataclasses.replace(settings, window_stride=stride)


def text_answer(
    pred: TokenPredictions, entities: Sequence[Entity], labels: Sequence[str], options: HfOptions
) -> list[dict[str, Any]]:
    """One text's Hugging Face answer. Grouped (the default, ``simple``): the service's
    ``entities``, ``entity_group`` their type, less the types in ``ignore_labels``. ``none``: each
    wordpiece whose tag (``B-PER``, ``O``: the argmax tag of the service's ``result`` rows) is not in
    ``ignore_labels`` (default ``["O"]``), ``index`` its position counted from 1 (transformers
    counts [CLS] as 0)."""
    text = pred.text
    if not options.per_token:
        ignored = options.ignore_labels or frozenset()
        return [
            {"entity_group": e.label, "score": e.score, "word": text[e.start : e.end], "start": e.start, "end": e.end}
            for e in entities
            if e.label not in ignored
        ]
    ignored = DEFAULT_IGNORED if options.ignore_labels is None else options.ignore_labels
    return [
        {
            "entity": labels[label],
            "score": round(prob, 4),
            "index": i + 1,
            "word": text[start:end],
            "start": start,
            "end": end,
        }
        for i, ((start, end), label, prob) in enumerate(zip(pred.offsets, pred.label_ids, pred.probs, strict=True))
        if labels[label] not in ignored
    ]
