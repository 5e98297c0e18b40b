"""TorchServe handler for Korean NER: glue only. The wire format lives in ner_wire, the NER chain
in ner_core.

One request may be a text or a list of texts; TorchServe hands us a dynamic batch of requests.
Each request goes through the three stages inside a bulkhead (``_guarded``): whatever it raises
(a refusal of its input, or anything nobody anticipated: ValueError, RecursionError,
MemoryError, an error of the tokenizer or the model on its text) answers that request alone,
with a JSON 4xx when its input is at fault and a JSON 500 naming its request id otherwise.
The texts of the good requests share one batched forward pass; if that pass fails, each
request is run alone so only the guilty one fails. A request whose texts would cost more
model-input tokens than ``max_request_tokens`` is refused before any inference, and an answer
over ``max_response_bytes`` is refused instead of sent (TorchServe would drop the worker's
connection). Each batch reports its metrics (``ner_*``, declared in config/metrics.yaml).
"""

from __future__ import annotations

import functools
import http
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from ts.metrics.dimension import Dimension
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

import ner_core
import ner_hf
import ner_model
import ner_particles
from ner_answer import Reply, render_answer, text_answer
from ner_request import JSON_UTF8, InputError, Job, RequestError, ServerError
from ner_settings import HandlerSettings
from ner_wire import STREAM_NEXT, dumps, from_grpc, parse_body, parse_options

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- metrics
# Every name must be declared in config/metrics.yaml with the same type and dimensions:
# TorchServe drops an undeclared handler metric without a word.


def emit(
    context, name: str, value: float, kind: MetricTypes = MetricTypes.HISTOGRAM, unit: str = "count", **labels: str
) -> None:
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


# --------------------------------------------------------------------------- TorchServe's rows


def request_body(row: dict[str, Any]) -> Any:
    """The body of one TorchServe request row: under ``data`` or ``body``, already ``str`` for
    text/*, a decoded JSON value for application/json, else ``bytes``."""
    for key in ("data", "body"):
        if key in row:
            return row[key]
    raise InputError(
        "no request body found (a form-encoded body is split into fields by TorchServe: "
        "send the text with Content-Type: text/plain or application/json)",
        reason="no_body",
    )


class KoreanNerHandler(BaseHandler):
    def initialize(self, context):
        model_dir = Path(context.system_properties["model_dir"])
        self.settings = HandlerSettings.from_mapping((context.model_yaml_config or {}).get("handler"))
        device = ner_model.choose_device(context.system_properties.get("gpu_id"), torch.cuda.is_available())
        started = time.perf_counter()
        self.ner = ner_model.load_model(model_dir, self.settings, device)
        self.find_entities: Callable[[ner_core.TokenPredictions], list[ner_core.Entity]] = functools.partial(
            ner_core.find_entities,
            labels=self.ner.labels,
            trim=ner_particles.trimmer(self.settings),
            decoding=self.settings.bio_decoding,
            min_score=self.ner.min_entity_score,
        )
        self.model_version = str(((context.manifest or {}).get("model") or {}).get("modelVersion", ""))
        logger.info(
            (
                "loaded %s on %s with %s (runtime: %s): %d labels, vocab %d, entity score "
                "threshold %g, settings %s, in %.1f s"
            ),
            context.model_name,
            device,
            self.ner.settings.runtime,
            self.settings.runtime,
            len(self.ner.labels),
            self.ner.tokenizer.get_vocab_size(),
            self.ner.min_entity_score,
            self.settings,
            time.perf_counter() - started,
        )
        self.initialized = True

    def handle(self, data, context):
        """The three stages, each with a bulkhead per request, and a last guard: should anything
        escape them (a bug), every request still gets a JSON 500 naming its id, and the worker
        lives on. An exception leaving here, or a list of answers of another length, would make
        TorchServe fail the whole batch.

        BaseHandler.handle is not called: it reads the client headers ``explain`` and
        ``describe`` of the batch's first request and then answers every request of the batch
        another way (one describe answer for all, or a Captum explanation this model lacks)."""
        started = time.perf_counter()
        self.context = context
        try:
            answers = self.postprocess(self.inference(self.preprocess(data)))
            if len(answers) != len(data):
                raise RuntimeError(f"{len(answers)} answers for a batch of {len(data)} requests")
        except Exception as err:  # noqa: BLE001
            answers = [self._respond(idx, self._internal_error(idx, "handle", err)) for idx in range(len(data))]
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1000, 2), None, "ms")
        return answers

    @timed("ner_preprocess_seconds")
    def preprocess(self, data):
        """Each request becomes a Job (its texts encoded, within the work budget) or the
        RequestError that answers it."""
        return [self._guarded(idx, "preprocess", self._prepare, idx, row) for idx, row in enumerate(data)]

    @timed("ner_inference_seconds")
    def inference(self, data):
        """One forward pass (split only by max_batch_tokens) over every text of the batch; if it
        fails, each request alone, so a text that breaks the model fails only its own request."""
        jobs = {idx: job for idx, job in enumerate(data) if isinstance(job, Job)}
        texts = [enc for job in jobs.values() for enc in job.encoded]
        logger.info("batch of %d requests, %d texts", len(data), len(texts))
        out = list(data)
        try:
            predictions = iter(ner_core.predict_encoded(self.ner, texts)) if texts else iter(())
            for idx, job in jobs.items():
                out[idx] = replace(job, predictions=[next(predictions) for _ in job.encoded])
        except Exception as err:  # noqa: BLE001
            logger.warning(
                "forward pass over %d requests failed (%s); running each alone", len(jobs), type(err).__name__
            )
            for idx, job in jobs.items():
                out[idx] = self._guarded(idx, "inference", self._predict_alone, job)
        record_batch(self.context, [p for item in out if isinstance(item, Job) for p in item.predictions or ()])
        return out

    @timed("ner_postprocess_seconds")
    def postprocess(self, data):
        return [
            self._respond(
                idx, self._guarded(idx, "postprocess", self._answer, idx, item) if isinstance(item, Job) else item
            )
            for idx, item in enumerate(data)
        ]

    # ----------------------------------------------------------------------- one request

    def _prepare(self, idx: int, row: dict[str, Any]) -> Job:
        limits = dict(max_chars=self.settings.max_text_chars, max_texts=self.settings.max_texts_per_request)
        request = parse_body(request_body(row), self._content_type(idx, row), headers=self._headers(idx), **limits)
        request = replace(request, options=parse_options(self._headers(idx)))
        # Hugging Face's "stride" is this request's window overlap (ner_hf); else the model config's.
        window_settings = ner_hf.window_settings(request, self.ner.settings)
        encoded = (
            ner_core.encode(self.ner, request.texts)
            if window_settings is self.ner.settings
            else ner_core.encode_windows(self.ner.tokenizer, window_settings, request.texts)
        )
        cost = sum(enc.cost for enc in encoded)
        if cost > self.settings.max_request_tokens:
            n_windows = sum(len(enc.windows) for enc in encoded)
            raise InputError(
                f"the request's texts need {cost} model-input tokens ({n_windows} windows of at most "
                f"{self.settings.max_seq_length}); the limit is {self.settings.max_request_tokens} per request: "
                "send fewer or shorter texts",
                status=413,
                reason="too_much_work",
            )
        return Job(request, encoded)

    def _predict_alone(self, job: Job) -> Job:
        return replace(job, predictions=ner_core.predict_encoded(self.ner, job.encoded))

    def _answer(self, idx: int, job: Job) -> Reply:
        if job.predictions is None:
            raise RuntimeError("a request reached postprocess untagged")
        found = [self.find_entities(p) for p in job.predictions]
        for entities in found:
            emit(self.context, "ner_entities_per_text", len(entities))
        answers: list[Any]
        if job.request.hf is not None:  # Hugging Face's shape: a list of dicts per text (ner_hf)
            answers = [
                ner_hf.text_answer(p, e, self.ner.labels, job.request.hf)
                for p, e in zip(job.predictions, found, strict=True)
            ]
        else:
            answers = [
                text_answer(p, e, self.ner.labels, self.settings.label_names, result=job.request.options.result)
                for p, e in zip(job.predictions, found, strict=True)
            ]
        return render_answer(
            job.request,
            answers,
            model_name=self.context.model_name,
            model_version=self.model_version,
            request_id=self._request_id(idx),
            max_bytes=self.settings.max_response_bytes,
        )

    def _guarded(self, idx: int, stage: str, step: Callable[..., Any], *args: Any) -> Any:
        """The bulkhead: one request's step, whatever it raises answering that request alone."""
        try:
            return step(*args)
        except RequestError as err:
            return err
        except Exception as err:  # noqa: BLE001  (MemoryError and RecursionError included)
            return self._internal_error(idx, stage, err)

    def _internal_error(self, idx: int, stage: str, err: BaseException) -> ServerError:
        """Log an unexpected failure with the request id, the exception type and where it was
        raised; never its message, which may quote the request's text."""
        request_id = self._request_id(idx)
        logger.error(
            "request %s failed in %s: %s\n%s",
            request_id,
            stage,
            type(err).__name__,
            "".join(traceback.format_tb(err.__traceback__)).rstrip(),
        )
        return ServerError(request_id)

    def _respond(self, idx: int, outcome: Reply | RequestError) -> bytes:
        """Set request ``idx``'s content type, headers and status; the bytes that answer it.

        A gRPC request is also told that this answer is its last: TorchServe's gRPC
        ``StreamPredictions`` reads the ``ts_stream_next`` answer header and, without it, throws
        a NullPointerException that kills the worker and fails its batch-mates (``Predictions``
        and ``StreamPredictions2`` accept it). An HTTP request never gets it: there it would
        turn the answer into a chunked stream and show the header to the client."""
        if from_grpc(self._headers(idx)):
            self.context.set_response_header(idx, STREAM_NEXT, "false")
        if isinstance(outcome, Reply):
            self.context.set_response_content_type(idx, outcome.content_type)
            for name, value in outcome.headers.items():
                self.context.set_response_header(idx, name, value)
            return outcome.body
        self.context.set_response_content_type(idx, JSON_UTF8)
        # The standard reason phrase: the message may hold characters a status line cannot.
        self.context.set_response_status(outcome.status, http.HTTPStatus(outcome.status).phrase, idx)
        if isinstance(outcome, InputError):
            logger.info("request %s rejected (%d): %s", self._request_id(idx), outcome.status, outcome.reason)
            emit(self.context, "ner_rejected_inputs_total", 1, MetricTypes.COUNTER, Reason=outcome.reason)
        else:  # logged with its exception where it was caught
            emit(self.context, "ner_failed_requests_total", 1, MetricTypes.COUNTER)
        return dumps(outcome.body())

    def _request_id(self, idx: int) -> str:
        ids = getattr(self.context, "request_ids", None) or {}
        return str(ids.get(idx, f"#{idx}"))

    def _headers(self, idx: int) -> dict[str, Any]:
        """Request ``idx``'s HTTP headers, and per body parameter a dict with its content type."""
        return (self.context.get_all_request_header(idx) if self.context else None) or {}

    def _content_type(self, idx: int, row: dict[str, Any]) -> str:
        """The content type TorchServe recorded for the body parameter of request ``idx``."""
        headers = self._headers(idx)
        for name in ("data", "body"):
            if name in row and isinstance(headers.get(name), dict):
                return headers[name].get("content-type") or ""
        return ""
