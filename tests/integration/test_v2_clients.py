"""The KServe v2 / Open Inference Protocol against a real TorchServe with a client no one here
wrote: Triton's ``tritonclient.http``, with binary and JSON tensors in and out, answering what
the plain REST route answers; malformed binary requests answered with a JSON 400 beside good
ones; what TorchServe 0.12 answers on the v2 metadata and readiness routes; and a KLUE-labelled
model served beside a KMOU-labelled one, each with its own label set."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from ner_labels import KLUE_LABEL_NAMES, SEED_LABEL_NAMES
from ner_wire import INFERENCE_HEADER, encode_bytes_tensor
from serving import tsctl
from tests.conftest import KLUE_LABELS

TEXTS = ["이순신은 조선 중기의 무신이다.", "삼성전자는 2024년 3월 서울에서 신제품을 발표했다.", "서울에서 만났다"]


@pytest.fixture(scope="module")
def client(server):
    """Triton's HTTP client on the server's inference address; every call passes the key."""
    url = server.inference_url.removeprefix("http://")
    with triton.InferenceServerClient(url, network_timeout=60.0) as c:
        yield c


def infer(client, server, model, texts, binary_in, output):
    """One inference as a v2 user writes it: ``binary_in`` the input's encoding, ``output``
    None (no requested output: the client asks for all in binary) or a requested output's
    ``binary_data``."""
    tensor = triton.InferInput("texts", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_), binary_data=binary_in)
    outputs = None if output is None else [triton.InferRequestedOutput("ner", binary_data=output)]
    return client.infer(model, [tensor], outputs=outputs, request_id="rq-1", headers=server.headers("inference"))


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("output", [None, True, False], ids=["default-out", "binary-out", "json-out"])
def test_triton_client_gets_the_rest_answers(server, tiny_model, client, binary_in, output):
    result = infer(client, server, tiny_model, TEXTS, binary_in, output)
    answers = [json.loads(item) for item in result.as_numpy("ner")]
    assert answers == tsctl.predict(server, tiny_model, TEXTS).json()
    meta = result.get_response()
    assert (meta["model_name"], meta["model_version"], meta["id"]) == (tiny_model, "1.0", "rq-1")
    [out] = meta["outputs"]
    assert out["shape"] == [len(TEXTS)]
    assert ("binary_data_size" in out.get("parameters", {})) is (output is not False)  # binary exactly when asked


def raw_binary(texts, json_extra=None):
    """A binary v2 body built as the client builds it, and its header."""
    data = encode_bytes_tensor([t.encode("utf-8") for t in texts])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "texts",
                    "shape": [len(texts)],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            **(json_extra or {}),
        }
    ).encode()
    return header + data, {INFERENCE_HEADER: str(len(header)), "Content-Type": "application/octet-stream"}


def test_a_binary_answer_has_the_extensions_headers(server, tiny_model):
    body, headers = raw_binary(TEXTS[:1], {"parameters": {"binary_data_output": True}})
    resp = server.call("POST", "inference", f"/v2/models/{tiny_model}/infer", data=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == "application/octet-stream"
    length = int(resp.headers[INFERENCE_HEADER])
    meta = json.loads(resp.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == len(resp.content) - length
    result = triton.InferResult.from_response_body(resp.content, header_length=length)
    assert [json.loads(a) for a in result.as_numpy("ner")] == tsctl.predict(server, tiny_model, TEXTS[:1]).json()


def broken(name):
    """Malformed binary requests: (body, headers) with one thing wrong."""
    good, headers = raw_binary(["서울"])
    length = int(headers[INFERENCE_HEADER])
    return {
        "header past the body": (good, {**headers, INFERENCE_HEADER: str(len(good) + 1)}),
        "header not JSON": (good, {**headers, INFERENCE_HEADER: str(length - 3)}),
        "element length past the end": (good[:length] + b"\xff\x00\x00\x00" + good[length + 4 :], headers),
        "trailing bytes": (good + b"\x00\x00", headers),
        "non-BYTES datatype": (good.replace(b'"BYTES"', b'"INT32"'), headers),
        "shape disagreeing": (good.replace(b'"shape": [1]', b'"shape": [2]'), headers),
        "no header": (good, {"Content-Type": "application/octet-stream"}),
    }[name]


MALFORMED = {
    "header past the body": "but the body has only",
    "header not JSON": "is not valid JSON",
    "element length past the end": "element 0 declares 255 bytes",
    "trailing bytes": "2 bytes belong to no input",
    "non-BYTES datatype": 'datatype must be "BYTES" (UTF-8 texts), received INT32',
    "shape disagreeing": 'v2 input "shape" must be [1] for 1 texts, received [2]',
    "no header": f"binary tensor data needs the header {INFERENCE_HEADER}",
}


def test_malformed_binary_requests_get_a_json_400_and_harm_no_batch_mate(server, tiny_model, batches_and_texts):
    """Each malformed request is sent at once with good ones (binary and plain), within the
    batch delay: each malformed one a JSON 400 naming its fault, every good one its answer."""
    url = f"/v2/models/{tiny_model}/infer"
    good_body, good_headers = raw_binary(TEXTS[:2])
    jobs = [("bad", name, *broken(name)) for name in MALFORMED] + [
        ("good", i, good_body, good_headers) for i in range(7)
    ]
    before = batches_and_texts(server, tiny_model)
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: server.call("POST", "inference", url, data=job[2], headers=job[3]), jobs))
    for (kind, name, _, _), resp in zip(jobs, answers, strict=True):
        if kind == "bad":
            assert resp.status_code == 400, (name, resp.status_code, resp.text)
            assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
            assert MALFORMED[name] in resp.json()["error"], (name, resp.json()["error"])
        else:
            assert resp.status_code == 200, resp.text
            assert [json.loads(a)["sentence"] for a in resp.json()["outputs"][0]["data"]] == TEXTS[:2]
    batches, texts = batches_and_texts(server, tiny_model, since=before, texts=14)
    assert texts == 14 and batches < 7, f"the good requests did not share batches: {batches:.0f} batches"


def test_triton_client_sees_a_refusal_as_its_error(server, tiny_model, client):
    with pytest.raises(InferenceServerException, match="v2 input data\\[0\\] is empty or blank") as err:
        infer(client, server, tiny_model, [" "], True, None)
    assert err.value.status() == "400"


# --------------------------------------------------------------------------- metadata and readiness


def test_torchserve_does_not_serve_the_v2_metadata_and_readiness_routes(server, tiny_model, client):
    """What a v2 client gets from TorchServe 0.12 itself (docs/protocols.md): 404 on the model
    metadata and model readiness routes, and on the server's health routes unless
    ts_open_inference_protocol is set (then they answer true whatever the models' state)."""
    key = server.headers("inference")
    for path in (f"/v2/models/{tiny_model}", f"/v2/models/{tiny_model}/ready", "/v2/health/ready", "/v2/health/live"):
        assert server.call("GET", "inference", path).status_code == 404, path
    assert client.is_model_ready(tiny_model, headers=key) is False
    assert client.is_server_ready(headers=key) is False
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(tiny_model, headers=key)


# --------------------------------------------------------------------------- label sets


@pytest.fixture(scope="module")
def klue_model(server, klue_checkpoint_dir, build_archive):
    name = tsctl.register(server, build_archive(klue_checkpoint_dir, "klue_ner"), workers=1)
    yield name
    tsctl.unregister(server, name)


def test_a_klue_model_beside_a_kmou_model_answers_with_its_own_labels(server, tiny_model, klue_model):
    kmou, klue = (tsctl.predict(server, model, TEXTS).json() for model in (tiny_model, klue_model))
    for answers, names, tags in [(kmou, SEED_LABEL_NAMES, None), (klue, KLUE_LABEL_NAMES, set(KLUE_LABELS))]:
        entities = [e for a in answers for e in a["entities"]]
        assert entities and all(e["label_name"] == names[e["label"]] for e in entities)
        rows = [row for a in answers for row in a["result"]]
        assert {row["predicted_tag"] for row in rows if row["tag"][:2] in ("B-", "I-")} <= set(names.values())
        if tags:
            assert {row["tag"] for row in rows} <= tags
    # the same texts through v2: the KLUE model's answers are the same as its plain ones
    resp = server.call(
        "POST", "inference", f"/v2/models/{klue_model}/infer", data=raw_binary(TEXTS)[0], headers=raw_binary(TEXTS)[1]
    )
    assert [json.loads(a) for a in resp.json()["outputs"][0]["data"]] == klue
