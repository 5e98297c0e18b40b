"""What the Open Inference Protocol's health, readiness and model metadata routes answer
(``v2_status.v2_route_answer``, the image's code): TorchServe 0.12 serves none of them, so whatever stands in front
of it answers them from the registered models."""

from __future__ import annotations

import pytest

from ner_wire import parse_body
from v2_status import ModelState, v2_model_metadata, v2_route_answer

MODELS = {"kor_ner": ModelState(["1.0", "2.0"], ready=True), "klue_ner": ModelState(["1.0"], ready=False)}
READY = {"kor_ner": MODELS["kor_ner"]}


def test_metadata_names_the_input_and_output_the_handler_reads_and_writes():
    meta = v2_model_metadata("kor_ner", ["1.0", "2.0"])
    assert meta == {
        "name": "kor_ner",
        "versions": ["1.0", "2.0"],
        "platform": "torchserve",
        "inputs": [{"name": "texts", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": "ner", "datatype": "BYTES", "shape": [-1]}],
    }
    # what the metadata promises is what a request gets: its input by that name, its output by that name
    request = {
        "inputs": [{**meta["inputs"][0], "shape": [1], "data": ["서울"]}],
        "outputs": [{"name": meta["outputs"][0]["name"]}],
    }
    assert parse_body(request, "application/json", max_chars=10, max_texts=2).texts == ["서울"]


@pytest.mark.parametrize(
    ("path", "models", "draining", "expected"),
    [
        ("/v2/health/live", {}, False, (200, {"live": True})),
        ("/v2/health/ready", READY, False, (200, {"ready": True})),
        ("/v2/health/ready", MODELS, False, (503, {"ready": False})),  # one model has no READY worker
        ("/v2/health/ready", {}, False, (503, {"ready": False})),  # nothing registered yet
        ("/v2/health/ready", READY, True, (503, {"ready": False})),  # stopping
        ("/v2/models/kor_ner/ready", MODELS, False, (200, {"ready": True})),
        ("/v2/models/klue_ner/ready", MODELS, False, (503, {"ready": False})),
        ("/v2/models/kor_ner/ready", MODELS, True, (503, {"ready": False})),
        ("/v2/models/kor_ner/versions/2.0/ready", MODELS, False, (200, {"ready": True})),
        ("/v2/models/nope/ready", MODELS, False, (404, {"error": "model 'nope' is not registered"})),
        (
            "/v2/models/kor_ner/versions/3.0",
            MODELS,
            False,
            (404, {"error": "model 'kor_ner' version '3.0' is not registered"}),
        ),
        ("/v2/models/kor_ner", MODELS, False, (200, v2_model_metadata("kor_ner", ["1.0", "2.0"]))),
        ("/v2/models/kor%5Fner/versions/1.0?x=1", MODELS, False, (200, v2_model_metadata("kor_ner", ["1.0", "2.0"]))),
    ],
)
def test_the_routes_answer_from_the_registered_models(path, models, draining, expected):
    assert v2_route_answer("GET", path, models, draining) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/models/kor_ner/infer"),
        ("GET", "/v2/models/kor_ner/infer"),
        ("POST", "/v2/models/kor_ner"),
        ("GET", "/predictions/kor_ner"),
        ("GET", "/v2"),
        ("GET", "/v2/models"),
        ("GET", "/ping"),
        ("GET", "/v2/models/kor_ner/versions/1.0/infer"),
    ],
)
def test_everything_else_is_left_to_torchserve(method, path):
    assert v2_route_answer(method, path, MODELS) is None
