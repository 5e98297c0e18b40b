"""The ONNX Runtime path behind a real TorchServe: an int8 ONNX archive answers as in-process."""

from __future__ import annotations

import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import ner_core
import ner_model
from ner_settings import HandlerSettings
from serving import tsctl

SENTENCES = [f"{i}번째 문장: 이순신은 조선 중기의 무신이다. 서울에서 {i}월에 만났다." for i in range(8)]


@pytest.fixture(scope="module")
def onnx_handler(test_model_config) -> dict:
    return {**test_model_config["handler"], "runtime": "onnxruntime", "quantize": "int8"}


@pytest.fixture(scope="module")
def onnx_model(server, tiny_checkpoint_dir, model_store, build_archive, test_model_config, onnx_handler):
    mar = build_archive(tiny_checkpoint_dir, "tiny_onnx", {**test_model_config, "handler": onnx_handler})
    name = tsctl.register(server, mar, workers=1)
    yield name, model_store / mar
    tsctl.unregister(server, name)


def test_onnx_int8_archive_serves_the_in_process_answers(server, onnx_model, onnx_handler, tmp_path):
    """The archive holds model.int8.onnx and no safetensors, so a worker that answers runs ONNX Runtime."""
    name, mar = onnx_model
    assert "model.safetensors" not in zipfile.ZipFile(mar).namelist()
    zipfile.ZipFile(mar).extractall(tmp_path)
    ner = ner_model.load_model(tmp_path, HandlerSettings.from_mapping(onnx_handler))
    expected = [[ner.labels[i] for i in p.label_ids] for p in ner_core.predict(ner, SENTENCES)]
    with ThreadPoolExecutor(8) as pool:  # concurrent, so the worker batches them
        answers = list(pool.map(lambda s: tsctl.predict(server, name, s), SENTENCES))
    assert [a.status_code for a in answers] == [200] * len(SENTENCES)
    assert [[r["tag"] for r in a.json()["result"]] for a in answers] == expected
