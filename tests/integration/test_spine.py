"""The spine against a real TorchServe: package -> start -> register -> requests -> scale -> unregister."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ner_answer import ANSWER_FIELDS, ROW_FIELDS
from serving import tsctl

SENTENCES = [f"{i}번째 문장: 이순신은 조선 중기의 무신이다. 서울에서 {i}월에 만났다." for i in range(32)]


def test_raw_text_body_answers_utf8_json(server, tiny_model):
    resp = tsctl.predict(server, tiny_model, "이순신은 조선 중기의 무신이다.")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "이순신" in resp.content.decode("utf-8")  # not \\uXXXX-escaped
    body = resp.json()
    assert body["sentence"] == "이순신은 조선 중기의 무신이다."
    assert tuple(body) == ANSWER_FIELDS
    assert body["result"] and all(tuple(r) == ROW_FIELDS for r in body["result"])
    for ent in body["entities"]:
        assert body["sentence"][ent["start"] : ent["end"]] == ent["text"]


@pytest.mark.parametrize(
    "payload", ['"서울에서 만났다"', '{"sentence": "서울에서 만났다"}', '{"text": "서울에서 만났다"}']
)
def test_json_shapes(server, tiny_model, payload):
    resp = server.call(
        "POST",
        "inference",
        f"/predictions/{tiny_model}",
        data=payload.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["sentence"] == "서울에서 만났다"


def test_json_list_is_answered_in_order(server, tiny_model):
    texts = ["첫째 문장", "둘째 문장은 조금 더 길다", "셋"]
    resp = tsctl.predict(server, tiny_model, texts)
    assert resp.status_code == 200
    assert [r["sentence"] for r in resp.json()] == texts


def test_bad_request_gets_json_400(server, tiny_model):
    resp = tsctl.predict(server, tiny_model, {"sentence": 5})
    assert resp.status_code == 400
    assert "must be a string" in resp.json()["error"] and "JSON number" in resp.json()["error"]


def test_concurrent_requests_batch_and_keep_their_answers(server, tiny_model, batches_and_texts):
    """32 distinct sentences at once: each answer is its own, and batches > 1 really formed
    (the handler's ner_texts_per_batch metric counts fewer batches than one-text requests)."""
    before = batches_and_texts(server, tiny_model)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda s: tsctl.predict(server, tiny_model, s), SENTENCES))
    assert [a.status_code for a in answers] == [200] * 32
    assert [a.json()["sentence"] for a in answers] == SENTENCES
    batches, texts = batches_and_texts(server, tiny_model, since=before, texts=32)
    assert texts == 32 and 0 < batches < 32, (
        f"no batch larger than 1 formed: {batches:.0f} batches for {texts:.0f} texts"
    )


def test_bad_request_inside_a_batch_fails_alone(server, tiny_model):
    payloads = ["좋은 문장 하나", {"sentence": ""}, "좋은 문장 둘", [1, 2], "좋은 문장 셋"] * 4
    with ThreadPoolExecutor(len(payloads)) as pool:
        answers = list(pool.map(lambda p: tsctl.predict(server, tiny_model, p), payloads))
    for payload, answer in zip(payloads, answers, strict=True):
        if isinstance(payload, str):
            assert answer.status_code == 200 and answer.json()["sentence"] == payload
        else:
            assert answer.status_code == 400 and "error" in answer.json()
    assert tsctl.ready_workers(server, tiny_model) == 1  # the worker survived


def test_scale_up_and_down(server, tiny_model):
    tsctl.scale(server, tiny_model, 2)
    assert tsctl.ready_workers(server, tiny_model) == 2
    tsctl.scale(server, tiny_model, 1)
    assert len(tsctl.describe(server, tiny_model)[0]["workers"]) == 1


def test_requests_need_the_key(server, tiny_model):
    url = f"{server.inference_url}/predictions/{tiny_model}"
    assert requests.post(url, data="문장".encode(), timeout=10).status_code in (400, 401)
    wrong = {"Authorization": "Bearer not-the-key"}
    assert requests.post(url, data="문장".encode(), headers=wrong, timeout=10).status_code in (400, 401)


def test_register_and_unregister_another_model(server, tiny_checkpoint_dir, build_archive):
    mar = build_archive(tiny_checkpoint_dir, "tiny_ner_extra")
    name = tsctl.register(server, mar, workers=1)
    assert name == "tiny_ner_extra" and tsctl.ready_workers(server, name) == 1
    tsctl.unregister(server, name)
    assert name not in [m["modelName"] for m in tsctl.list_models(server)]
    with pytest.raises(tsctl.TsError, match="404"):
        tsctl.describe(server, name)
