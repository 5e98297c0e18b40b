"""The TorchServe handler in-process: a real ts Context, a tiny random BERT, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

import ts
from ner_handler import KoreanNerHandler

METRICS_YAML = Path(ts.__file__).parent / "configs" / "metrics.yaml"
YAML_CONFIG = {"handler": {"max_seq_length": 16, "window_stride": 4, "max_text_chars": 100, "max_texts_per_request": 4}}


@pytest.fixture(scope="module")
def handler(tiny_model_dir):
    context = Context("tiny", str(tiny_model_dir), {}, 8, None, "0.12.0",
                      metrics=MetricsCacheYamlImpl(str(METRICS_YAML)), model_yaml_config=YAML_CONFIG)
    h = KoreanNerHandler()
    h.initialize(context)
    return h, context


def run_batch(handler_and_context, requests):
    """requests: (body, content type) pairs, as TorchServe hands them to the worker."""
    handler, context = handler_and_context
    context.request_ids = {i: f"req-{i}" for i in range(len(requests))}
    context.request_processor = [RequestProcessor({"body": {"content-type": ct}}) for _, ct in requests]
    context.metrics.request_ids = context.request_ids
    answers = handler.handle([{"body": body} for body, _ in requests], context)
    statuses = [context.get_response_status(i)[0] for i in range(len(requests))]
    types = [context.get_response_content_type(i) for i in range(len(requests))]
    return [json.loads(a.decode("utf-8")) for a in answers], statuses, types


def test_a_batch_with_bad_requests_answers_each_alone(handler):
    answers, statuses, types = run_batch(handler, [
        ("이순신은 조선 중기의 무신이다.", "text/plain"),
        (b"\xff", "text/plain"),
        (["가나", "다라"], "application/json"),
        ({"sentence": 3}, "application/json"),
        ("가" * 101, "text/plain"),
    ])
    assert statuses == [200, 400, 200, 400, 400]
    assert types == ["application/json; charset=utf-8"] * 5
    assert answers[0]["sentence"] == "이순신은 조선 중기의 무신이다."
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
