"""The handler's own metrics reach TorchServe's Prometheus endpoint with the values its
requests imply: tokens and windows counted from the answers, rejections by reason."""

from __future__ import annotations

import json
import time

import pytest
import requests

import ner_core
from serving import tsctl
from serving.tsctl import metrics as scrape
from tests.integration.conftest import metric_value as value

MODEL = "metrics_ner"
LONG_TEXT = "이순신은 조선 중기의 무신이다. 한산도에서 왜군을 크게 무찔렀다. " * 6


@pytest.fixture(scope="module")
def metrics_model(server, tiny_checkpoint_dir, build_archive):
    name = tsctl.register(server, build_archive(tiny_checkpoint_dir, MODEL))
    yield name
    tsctl.unregister(server, name)


def test_handler_metrics_reach_prometheus(server, metrics_model, test_model_config):
    """Five requests sent one after another, so five batches: two answered (five texts, one
    long enough for several windows) and three rejected, each for another reason."""
    good = [
        tsctl.predict(server, metrics_model, ["서울에서 만났다", LONG_TEXT, "셋"]),
        tsctl.predict(
            server,
            metrics_model,
            {"inputs": [{"name": "t", "shape": [2], "datatype": "BYTES", "data": ["이순신", "한산도 대첩"]}]},
        ),
    ]
    bad = [
        tsctl.predict(server, metrics_model, {"sentence": "  "}),
        tsctl.predict(server, metrics_model, "가" * (test_model_config["handler"]["max_text_chars"] + 1)),
        tsctl.predict(server, metrics_model, [1, 2]),
    ]
    assert [r.status_code for r in good + bad] == [200, 200, 400, 400, 400]
    answers = good[0].json() + [json.loads(item) for item in good[1].json()["outputs"][0]["data"]]
    tokens = [len(a["result"]) for a in answers]
    size = test_model_config["handler"]["max_seq_length"] - 2
    windows = [len(ner_core.plan_windows(n, size, test_model_config["handler"]["window_stride"])) for n in tokens]
    assert max(windows) > 1, f"the long text should need several windows: {tokens} tokens"

    model = {"ModelName": metrics_model}
    deadline = time.monotonic() + 30  # the frontend reads the worker's metric lines on its own thread
    while (
        value(samples := scrape(server), "ner_postprocess_seconds_count", **model) != 5 and time.monotonic() < deadline
    ):
        time.sleep(0.2)

    assert value(samples, "ner_texts_per_batch_count", **model) == 5
    assert value(samples, "ner_texts_per_batch_sum", **model) == 5
    assert value(samples, "ner_tokens_total", **model) == sum(tokens)
    assert value(samples, "ner_windows_total", **model) == sum(windows)
    assert value(samples, "ner_entities_per_text_count", **model) == 5
    assert value(samples, "ner_entities_per_text_sum", **model) == sum(len(a["entities"]) for a in answers)
    for reason in ("empty", "too_long", "not_text"):
        assert value(samples, "ner_rejected_inputs_total", Reason=reason, **model) == 1, reason
    for stage in ("preprocess", "inference", "postprocess"):
        count, total = (value(samples, f"ner_{stage}_seconds_{s}", **model) for s in ("count", "sum"))
        assert count == 5 and 0 < total < 60, (stage, count, total)
    assert value(samples, "ts_inference_requests_total", model_name=metrics_model) == 5


def test_metrics_endpoint_needs_no_key(server):
    """TorchServe 0.12's token authorization covers the inference and management APIs only:
    anyone who reaches the metrics port may scrape it (hence loopback / a NetworkPolicy)."""
    assert requests.get(server.metrics_url + "/metrics", timeout=10).status_code == 200
