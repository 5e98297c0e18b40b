"""TorchServe handler for Korean NER: glue only, the NER logic lives in ner_core.

One request may be a text or a list of texts; TorchServe hands us a dynamic batch of
requests. Bad requests are answered with a JSON 400 for that request alone, the rest of the
batch is tagged in one pass, and every answer is UTF-8 JSON with its content type set.
A KServe v2 request gets a v2 response. Each batch reports its own metrics (``ner_*``,
declared in config/metrics.yaml) through TorchServe's metrics API.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

import ner_core
import ner_particles
from ner_inputs import InputError, ParsedRequest, parse_request, shape_answer
from ner_settings import HandlerSettings

logger = logging.getLogger(__name__)
JSON_UTF8 = "application/json; charset=utf-8"


# --------------------------------------------------------------------------- metrics
# Every name must be declared in config/metrics.yaml with the same type and dimensions:
# TorchServe drops an undeclared handler metric without a word.


def emit(context, name: str, value: float, kind: MetricTypes = MetricTypes.HISTOGRAM,
         unit: str = "count", **labels: str) -> None:
    """One observation of a handler metric; a no-op where there is no TorchServe context."""
    metrics = getattr(context, "metrics", None)
    if metrics is None:
        return
    # A fresh list on every call: TorchServe appends ModelName and Level to it in place, and
    # its own default for this argument is one shared list.
    dimensions = [Dimension(*label) for label in labels.items()]
    metrics.add_metric(name, value, unit, dimensions=dimensions, metric_type=kind)


def timed(metric: str):
    """Decorator: record how long a handler stage took, in seconds (the histogram buckets'
    unit), however it ends."""

    def decorate(stage):
        @functools.wraps(stage)
        def run(self, data):
            started = time.perf_counter()
            try:
                return stage(self, data)
            finally:
                emit(self.context, metric, time.perf_counter() - started, unit="s")

        return run

    return decorate


def record_batch(context, predictions: list[ner_core.TokenPredictions]) -> None:
    """How many texts one forward batch held, and the wordpieces and windows they took."""
    emit(context, "ner_texts_per_batch", len(predictions))
    emit(context, "ner_tokens_total", sum(len(p.tokens) for p in predictions), MetricTypes.COUNTER)
    emit(context, "ner_windows_total", sum(p.windows for p in predictions), MetricTypes.COUNTER)


def record_answers(context, answers: list[dict]) -> None:
    """How many entities each answered text held."""
    for answer in answers:
        emit(context, "ner_entities_per_text", len(answer["entities"]))


class KoreanNerHandler(BaseHandler):
    def initialize(self, context):
        model_dir = Path(context.system_properties["model_dir"])
        self.settings = HandlerSettings.from_mapping((context.model_yaml_config or {}).get("handler"))
        started = time.perf_counter()
        self.ner = ner_core.load_model(model_dir, self.settings)
        self.model_version = str(((context.manifest or {}).get("model") or {}).get("modelVersion", ""))
        logger.info(
            "loaded %s: %d labels, vocab %d, settings %s, in %.1f s",
            context.model_name, len(self.ner.labels), self.ner.tokenizer.get_vocab_size(),
            self.settings, time.perf_counter() - started,
        )
        self.initialized = True

    @timed("ner_preprocess_seconds")
    def preprocess(self, data):
        """Each request becomes a ParsedRequest or the InputError that answers it."""
        parsed = []
        for idx, row in enumerate(data):
            try:
                parsed.append(parse_request(
                    row, self._content_type(idx, row),
                    max_chars=self.settings.max_text_chars, max_texts=self.settings.max_texts_per_request,
                ))
            except InputError as err:
                parsed.append(err)
        return parsed

    @timed("ner_inference_seconds")
    def inference(self, data):
        """One forward pass (split only by the token budget) over every text of the batch."""
        texts = [text for req in data if isinstance(req, ParsedRequest) for text in req.texts]
        logger.info("batch of %d requests, %d texts", len(data), len(texts))
        batch = ner_core.predict(self.ner, texts)
        record_batch(self.context, batch)
        predictions = iter(batch)
        return [
            req if isinstance(req, InputError) else (req, [next(predictions) for _ in req.texts])
            for req in data
        ]

    @timed("ner_postprocess_seconds")
    def postprocess(self, data):
        responses = []
        for idx, item in enumerate(data):
            self.context.set_response_content_type(idx, JSON_UTF8)
            if isinstance(item, InputError):
                logger.info("request %s rejected (%d): %s", self.context.get_request_id(idx), item.status, item)
                self.context.set_response_status(item.status, str(item), idx)
                emit(self.context, "ner_rejected_inputs_total", 1, MetricTypes.COUNTER, Reason=item.reason)
                responses.append(ner_core.dumps(item.body()))
                continue
            request, predictions = item
            trim = ner_particles.trimmer(self.settings)
            answers = [ner_core.to_response(p, self.ner.labels, self.settings.label_names, trim) for p in predictions]
            record_answers(self.context, answers)
            responses.append(ner_core.dumps(shape_answer(
                request, answers, model_name=self.context.model_name, model_version=self.model_version,
                request_id=self.context.get_request_id(idx),
            )))
        return responses

    def _content_type(self, idx, row) -> str:
        """The content type TorchServe recorded for the body parameter of request ``idx``."""
        headers = self.context.get_all_request_header(idx) if self.context else {}
        for name in ("data", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type") or ""
        return ""
