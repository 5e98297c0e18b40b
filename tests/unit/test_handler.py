"""The TorchServe handler in-process: a real ts Context, a tiny random BERT, no server.

Most tests here are about the bulkhead: whatever one request does in any stage, it alone gets
an error answer and every other request of the batch its normal answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
import ts
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

import ner_core
import ner_model
from ner_answer import ANSWER_FIELDS
from ner_handler import KoreanNerHandler, request_body
from ner_wire import InputError

METRICS_YAML = Path(ts.__file__).parent / "configs" / "metrics.yaml"
HANDLER = {
    "max_seq_length": 16,
    "window_stride": 4,
    "max_text_chars": 100,
    "max_texts_per_request": 4,
    "max_request_tokens": 48,
}
GOOD = "이순신은 조선 중기의 무신이다."
LETTERS = " ".join("abcdefghij" * 4)  # 40 wordpieces of the tiny vocab, 79 characters


def make_handler(model_dir: Path, **handler_settings) -> tuple[KoreanNerHandler, Context]:
    config = {"handler": {**HANDLER, **handler_settings}}
    context = Context(
        "tiny",
        str(model_dir),
        {},
        8,
        None,
        "0.12.0",
        metrics=MetricsCacheYamlImpl(str(METRICS_YAML)),
        model_yaml_config=config,
    )
    h = KoreanNerHandler()
    h.initialize(context)
    return h, context


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    return make_handler(tiny_model_dir)


def run_batch(handler_and_context, requests):
    """requests: (body, content type[, HTTP headers]) tuples, as TorchServe hands them to the
    worker. Returns the decoded answers, statuses and content types, one per request."""
    handler, context = handler_and_context
    context.request_ids = {i: f"req-{i}" for i in range(len(requests))}
    context.request_processor = [
        RequestProcessor({"body": {"content-type": r[1]}, **(r[2] if len(r) > 2 else {})}) for r in requests
    ]
    context.metrics.request_ids = context.request_ids
    context._response_status = {}
    rows = [{"body": r[0]} for r in requests]
    answers = handler.handle(rows, context)
    assert len(answers) == len(requests)
    statuses = [context.get_response_status(i)[0] for i in range(len(requests))]
    types = [context.get_response_content_type(i) for i in range(len(requests))]
    return [json.loads(a.decode("utf-8")) for a in answers], statuses, types


def test_a_batch_with_bad_requests_answers_each_alone(handler):
    answers, statuses, types = run_batch(
        handler,
        [
            (GOOD, "text/plain"),
            (b"\xff", "text/plain"),
            (["가나", "다라"], "application/json"),
            ({"sentence": 3}, "application/json"),
            ("가" * 101, "text/plain"),
        ],
    )
    assert statuses == [200, 400, 200, 400, 400]
    assert types == ["application/json; charset=utf-8"] * 5
    assert answers[0]["sentence"] == GOOD
    assert [a["sentence"] for a in answers[2]] == ["가나", "다라"]
    assert "UTF-8" in answers[1]["error"]
    assert "JSON number" in answers[3]["error"]
    assert "101 characters; the limit is 100" in answers[4]["error"]


def test_settings_come_from_the_model_yaml(handler):
    h, _ = handler
    assert h.settings.max_seq_length == 16 and h.settings.max_texts_per_request == 4


def test_a_batch_of_only_bad_requests_still_answers_all(handler):
    answers, statuses, _ = run_batch(handler, [("", "text/plain"), ([], "application/json")])
    assert statuses == [400, 400] and all("error" in a for a in answers)


def test_a_form_encoded_request_has_no_body_and_is_refused():
    with pytest.raises(InputError, match="no request body found"):
        request_body({"이순신": b""})


# --------------------------------------------------------------------------- the bulkhead


def test_a_json_number_over_the_integer_limit_fails_only_its_own_request(handler):
    """json.loads raises a plain ValueError (not JSONDecodeError) for it: once it failed the batch."""
    answers, statuses, _ = run_batch(
        handler,
        [
            (GOOD, "text/plain"),
            (b'{"sentence": ' + b"7" * 5000 + b"}", "application/json"),
            ("서울에서", "text/plain"),
        ],
    )
    assert statuses == [200, 400, 200]
    assert answers[0]["sentence"] == GOOD and answers[2]["sentence"] == "서울에서"
    assert "body is not valid JSON" in answers[1]["error"]


@pytest.mark.parametrize(
    "error", [ValueError("odd"), RecursionError(), MemoryError(), KeyError("x"), ZeroDivisionError()]
)
def test_any_exception_while_preparing_one_request_answers_it_alone_with_a_500(handler, monkeypatch, error):
    real = ner_core.encode

    def encode(ner, texts):
        if any("독" in t for t in texts):
            raise error
        return real(ner, texts)

    monkeypatch.setattr(ner_core, "encode", encode)
    answers, statuses, _ = run_batch(
        handler, [(GOOD, "text/plain"), ("독도에서", "text/plain"), (["가나"], "application/json")]
    )
    assert statuses == [200, 500, 200]
    assert answers[1] == {
        "error": "internal error answering request req-1; the server log has the details under this id",
        "status": 500,
    }
    assert answers[0]["sentence"] == GOOD and answers[2][0]["sentence"] == "가나"


class PoisonedModel:
    """The tiny model, but any forward pass that holds ``poison`` raises, as a model might on
    one odd input: the batched pass fails, and so does the guilty request's pass alone."""

    def __init__(self, model, poison: int):
        self.model, self.poison, self.calls = model, poison, 0

    @property
    def device(self):
        return self.model.device

    def __call__(self, input_ids, **kwargs):
        self.calls += 1
        if bool((input_ids == self.poison).any()):
            raise RuntimeError("kernel failed")
        return self.model(input_ids=input_ids, **kwargs)


def test_a_failing_forward_pass_is_retried_per_request_so_only_the_guilty_one_fails(handler, monkeypatch):
    h, _ = handler
    poison = h.ner.tokenizer.token_to_id("~")
    assert poison is not None
    poisoned = PoisonedModel(h.ner.model, poison)
    monkeypatch.setattr(h, "ner", dataclasses.replace(h.ner, model=poisoned))
    answers, statuses, _ = run_batch(
        handler, [(GOOD, "text/plain"), ("독도 ~ 울릉도", "text/plain"), (["가나", "다라"], "application/json")]
    )
    assert statuses == [200, 500, 200]
    assert answers[0]["sentence"] == GOOD and [a["sentence"] for a in answers[2]] == ["가나", "다라"]
    assert "req-1" in answers[1]["error"]
    assert poisoned.calls >= 4  # the batched pass, then each of the three requests alone


def test_the_answers_after_a_retry_equal_the_batched_ones(handler, monkeypatch):
    h, _ = handler
    clean, _, _ = run_batch(handler, [(GOOD, "text/plain"), (["가나", "다라"], "application/json")])
    poisoned = PoisonedModel(h.ner.model, h.ner.tokenizer.token_to_id("~"))
    monkeypatch.setattr(h, "ner", dataclasses.replace(h.ner, model=poisoned))
    retried, _, _ = run_batch(
        handler, [(GOOD, "text/plain"), ("~", "text/plain"), (["가나", "다라"], "application/json")]
    )
    assert [retried[0], retried[2]] == clean


def test_an_exception_while_answering_one_request_answers_it_alone(handler, monkeypatch):
    h, _ = handler
    real = h.find_entities

    def find_entities(pred):
        if pred.text.startswith("독"):
            raise RecursionError("deep")
        return real(pred)

    monkeypatch.setattr(h, "find_entities", find_entities)
    answers, statuses, _ = run_batch(handler, [(GOOD, "text/plain"), ("독도", "text/plain")])
    assert statuses == [200, 500] and answers[0]["sentence"] == GOOD and "req-1" in answers[1]["error"]


def test_if_anything_escapes_the_stages_every_request_still_gets_a_json_500(handler, monkeypatch):
    h, _ = handler
    monkeypatch.setattr(h, "preprocess", lambda data: 1 / 0)
    answers, statuses, types = run_batch(handler, [(GOOD, "text/plain"), ("서울", "text/plain")])
    assert statuses == [500, 500] and types == ["application/json; charset=utf-8"] * 2
    assert ["req-0" in answers[0]["error"], "req-1" in answers[1]["error"]] == [True, True]


@pytest.mark.parametrize("header", ["explain", "describe"])
def test_torchserve_mode_headers_on_the_first_request_change_no_answer(handler, header):
    """TorchServe's BaseHandler reads ``explain``/``describe`` from the batch's first request and
    then answers the whole batch another way; any client can send them."""
    plain, _, _ = run_batch(handler, [(GOOD, "text/plain"), ("서울에서 만났다", "text/plain")])
    answers, statuses, _ = run_batch(
        handler, [(GOOD, "text/plain", {header: "True"}), ("서울에서 만났다", "text/plain")]
    )
    assert statuses == [200, 200] and answers == plain


def test_a_wrong_number_of_answers_becomes_a_json_500_for_each_request(handler, monkeypatch):
    h, _ = handler
    monkeypatch.setattr(h, "postprocess", lambda outcomes: [b"{}"])
    answers, statuses, _ = run_batch(handler, [(GOOD, "text/plain"), ("서울", "text/plain")])
    assert statuses == [500, 500] and ["req-0" in answers[0]["error"], "req-1" in answers[1]["error"]] == [True, True]


def test_a_failure_is_logged_with_request_id_and_exception_never_the_text(handler, monkeypatch, caplog):
    secret = "비밀 홍길동"

    def encode(ner, texts):
        raise ValueError(f"cannot handle {texts[0]}")  # a message that quotes the input

    monkeypatch.setattr(ner_core, "encode", encode)
    with caplog.at_level(logging.INFO, logger="ner_handler"):
        run_batch(handler, [(secret, "text/plain")])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "request req-0 failed in preprocess: ValueError" in logged and "홍길동" not in logged


# --------------------------------------------------------------------------- budgets and options


def test_a_request_over_the_token_budget_is_refused_before_inference_naming_both_numbers(handler, monkeypatch):
    h, _ = handler
    cost = sum(e.cost for e in ner_core.encode(h.ner, [LETTERS]))
    assert cost > 48
    calls = []
    monkeypatch.setattr(ner_core, "predict_encoded", lambda ner, enc: calls.append(len(enc)) or [])
    answers, statuses, _ = run_batch(handler, [(LETTERS, "text/plain")])
    assert statuses == [413] and calls == []
    assert (
        f"need {cost} model-input tokens" in answers[0]["error"]
        and "the limit is 48 per request" in answers[0]["error"]
    )


def test_the_token_budget_counts_every_text_of_a_list(handler):
    h, _ = handler
    texts = [LETTERS[:39]] * 4  # 20 wordpieces each
    cost = sum(e.cost for e in ner_core.encode(h.ner, texts))
    _answers, statuses, _ = run_batch(handler, [(texts[:1], "application/json"), (texts, "application/json")])
    assert statuses == ([200, 413] if cost > 48 else [200, 200])
    assert cost > 48  # the list is over the budget although each text alone is not


def test_an_answer_over_max_response_bytes_is_refused_and_the_batch_mates_answered(tiny_model_dir):
    small = make_handler(tiny_model_dir, max_response_bytes=2048, max_request_tokens=512)
    answers, statuses, _ = run_batch(small, [("서울", "text/plain"), (LETTERS, "text/plain")])
    assert statuses == [200, 413] and answers[0]["sentence"] == "서울"
    assert "the limit is 2048" in answers[1]["error"] and "X-NER-Result: false" in answers[1]["error"]


def test_result_false_leaves_out_the_token_rows_and_keeps_the_entities(handler):
    answers, statuses, _ = run_batch(handler, [(GOOD, "text/plain"), (GOOD, "text/plain", {"X-NER-Result": "false"})])
    full, lean = answers
    assert statuses == [200, 200] and "result" in full and set(lean) == set(ANSWER_FIELDS) - {"result"}
    assert lean["entities"] == full["entities"]


def test_a_bad_option_is_a_400_for_that_request_alone(handler):
    _, statuses, _ = run_batch(handler, [(GOOD, "text/plain", {"x-ner-result": "maybe"}), (GOOD, "text/plain")])
    assert statuses == [400, 200]


# --------------------------------------------------------------------------- device


@pytest.mark.parametrize(
    "gpu_id, cuda, expected",
    [
        (None, False, "cpu"),
        (None, True, "cpu"),
        (0, False, "cpu"),
        (0, True, "cuda:0"),
        (3, True, "cuda:3"),
        ("1", True, "cuda:1"),
    ],
)
def test_the_worker_runs_on_the_gpu_its_context_names(gpu_id, cuda, expected):
    assert ner_model.choose_device(gpu_id, cuda) == torch.device(expected)


def test_initialize_takes_the_device_from_the_context(tiny_model_dir, monkeypatch):
    """A fake GPU host: TorchServe gave this worker gpu_id 1, so the model must go to cuda:1."""
    seen = []
    real = ner_model.load_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ner_model, "load_model", lambda d, s, device: seen.append(device) or real(d, s))
    context = Context(
        "tiny",
        str(tiny_model_dir),
        {},
        8,
        1,
        "0.12.0",
        metrics=MetricsCacheYamlImpl(str(METRICS_YAML)),
        model_yaml_config={"handler": HANDLER},
    )
    KoreanNerHandler().initialize(context)
    assert seen == [torch.device("cuda:1")]


@pytest.mark.parametrize(
    "headers, grpc",
    [
        ({}, True),  # gRPC Predictions / StreamPredictions: only the body parameter's content type
        ({"ts_request_sequence_id": "ts-seq-1", "ts_request_sequence_start": "true"}, True),  # StreamPredictions2
        ({"Host": "127.0.0.1:8080", "Content-Length": "12"}, False),  # any HTTP request
    ],
    ids=["grpc", "grpc-stream2", "http"],
)
def test_only_grpc_answers_say_the_stream_ends_here(handler, headers, grpc):
    """gRPC StreamPredictions needs ts_stream_next on every answer, good or refused (without it
    TorchServe's frontend throws and the worker dies); on HTTP it would make the answer chunked
    and show the header to the client, so HTTP answers never carry it."""
    _, context = handler
    _answers, statuses, _ = run_batch(handler, [(GOOD.encode(), "", headers), (b"", "", headers)])
    assert statuses == [200, 400]
    for idx in range(2):
        assert context.get_response_headers(idx).get("ts_stream_next") == ("false" if grpc else None)
