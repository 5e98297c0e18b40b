"""Hugging Face's own clients against the service: ``huggingface_hub``'s ``InferenceClient`` and
``AsyncInferenceClient.token_classification`` (the version pinned in requirements.txt) and
``@huggingface/inference``'s ``tokenClassification`` (tests/js, when node and its pinned package
are installed), with the URL of ``/predictions/<model>`` as the model and the key as the token,
against a real TorchServe serving the demo model and through the image's front door (HAProxy with
the image's config, the key checked there). Their entities equal the service's own ``entities``
on KMOU validation sentences; ``none``, ``ignore_labels`` and ``stride`` do what
docs/protocols.md says; every bad shape is the service's JSON 4xx as the client shows it.

Skips, saying why, without the demo model, the KMOU corpus, haproxy (door tests) or node (JS)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import pytest
import requests
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import BadRequestError, HfHubHTTPError

import ner_core
import ner_model
from drills import flood
from ner_settings import HandlerSettings
from serving import corpus, paths, tsctl

pytestmark = pytest.mark.skipif(not paths.demo_model_available(), reason=f"no demo model at {paths.DEMO_MODEL_DIR}")

SENTENCES = 60  # KMOU validation sentences each client tags (50 or more: a comparison worth its name)
KEY = "hf-door-test-key-0123456789abcdef"
JS_DIR = paths.ROOT / "tests" / "js"
# The shipped limits that matter here (config/model-config.yaml), a test batch size of 8.
HANDLER = {
    "max_seq_length": 128,
    "window_stride": 32,
    "trim_particles": True,
    "max_text_chars": 2000,
    "max_texts_per_request": 8,
    "max_request_tokens": 1664,
    "torch_threads": 1,
}


@pytest.fixture(scope="module")
def demo_mar(build_archive, test_model_config) -> str:
    return build_archive(paths.DEMO_MODEL_DIR, "demo_hf", {**test_model_config, "handler": HANDLER})


@pytest.fixture(scope="module")
def demo(server, demo_mar):
    """The demo model on the session's TorchServe (token authorization on: the client sends the key)."""
    name = tsctl.register(server, demo_mar, workers=1)
    yield name
    tsctl.unregister(server, name)


@pytest.fixture(scope="module")
def sentences(kmou_split) -> list[str]:
    examples, _ = corpus.read_corpus(kmou_split("val"))
    texts = [e.text for e in examples if e.text.strip()][:SENTENCES]
    assert len(texts) == SENTENCES
    return texts


def service_entities(server: tsctl.Server, model: str, texts: list[str]) -> list[list[tuple]]:
    """The service's own entities per text (its plain JSON list requests), as HF rows' fields."""
    out = []
    for at in range(0, len(texts), HANDLER["max_texts_per_request"]):
        resp = tsctl.predict(server, model, texts[at : at + HANDLER["max_texts_per_request"]])
        assert resp.status_code == 200, resp.text
        out += [[(e["label"], e["score"], e["text"], e["start"], e["end"]) for e in a["entities"]] for a in resp.json()]
    return out


def rows(answer) -> list[tuple]:
    """An HF answer (the client's dataclasses, or dicts) as tuples of the grouped fields."""
    get = (lambda r, k: r[k]) if answer and isinstance(answer[0], dict) else getattr
    return [(get(r, "entity_group"), get(r, "score"), get(r, "word"), get(r, "start"), get(r, "end")) for r in answer]


def inference_key(server: tsctl.Server) -> str:
    return server.keys()["inference"]


def url_of(base: str, model: str) -> str:
    return base + tsctl.predictions_path(model)


async def async_tag(url: str, key: str, texts: list[str], **parameters) -> list:
    """AsyncInferenceClient, 8 requests in flight at a time (TorchServe batches them together)."""
    client = AsyncInferenceClient(model=url, token=key, timeout=120)
    gate = asyncio.Semaphore(8)

    async def one(text: str):
        async with gate:
            return await client.token_classification(text, **parameters)

    try:
        return await asyncio.gather(*(one(t) for t in texts))
    finally:
        await client.close()


# --------------------------------------------------------------------------- the Python clients, TorchServe alone


def test_inference_client_gets_the_services_entities(server, demo, sentences):
    client = InferenceClient(model=url_of(server.inference_url, demo), token=inference_key(server), timeout=120)
    answers = [client.token_classification(text) for text in sentences]
    expected = service_entities(server, demo, sentences)
    assert [rows(a) for a in answers] == expected
    assert sum(map(len, expected)) >= 50  # not a vacuous equality: the demo model finds entities
    print(f"\nInferenceClient: {len(sentences)} KMOU sentences, {sum(map(len, expected))} entities, all equal")
    for text, answer in zip(sentences, answers, strict=True):
        for row in answer:
            assert isinstance(row.score, float) and row.entity is None and row.word == text[row.start : row.end]


def test_async_inference_client_gets_the_services_entities(server, demo, sentences):
    answers = asyncio.run(
        async_tag(url_of(server.inference_url, demo), inference_key(server), sentences, aggregation_strategy="simple")
    )
    assert [rows(a) for a in answers] == service_entities(server, demo, sentences)


def test_none_gives_the_per_wordpiece_rows(server, demo, sentences):
    client = InferenceClient(model=url_of(server.inference_url, demo), token=inference_key(server), timeout=120)
    for text in sentences[:10]:
        answer = client.token_classification(text, aggregation_strategy="none")
        plain = tsctl.predict(server, demo, text).json()
        assert [(r.entity, str(r.score), r.index) for r in answer] == [
            (row["tag"], row["top_prob"], i + 1) for i, row in enumerate(plain["result"]) if row["tag"] != "O"
        ]
        assert all(r.word == text[r.start : r.end] and r.entity_group is None for r in answer)
        every = client.token_classification(text, aggregation_strategy="none", ignore_labels=[])
        assert len(every) == len(plain["result"])  # "O" rows too, once the caller names what to ignore


def test_ignore_labels_leaves_out_those_entity_types(server, demo):
    client = InferenceClient(model=url_of(server.inference_url, demo), token=inference_key(server), timeout=120)
    text = "이순신은 1592년 한산도 앞바다에서 일본 수군을 물리쳤다."
    every = client.token_classification(text)
    assert "PER" in {r.entity_group for r in every} and len({r.entity_group for r in every}) >= 2, every
    kept = client.token_classification(text, ignore_labels=["PER"])
    assert rows(kept) == [r for r in rows(every) if r[0] != "PER"]


def test_a_list_of_texts_gets_a_list_per_text(server, demo, sentences):
    """The clients send one text per call; the HF shape also takes a list (a hand-written body)."""
    texts = sentences[:3]
    resp = server.call("POST", "inference", tsctl.predictions_path(demo), json={"inputs": texts})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert [rows(a) for a in resp.json()] == service_entities(server, demo, texts)


def long_text(sentences: list[str]) -> str:
    """KMOU sentences joined to a text within max_text_chars that fits max_request_tokens with the
    model config's window overlap (32) and not with the largest one (63)."""
    tokenizer = ner_model.build_tokenizer(paths.DEMO_MODEL_DIR / "vocab.txt")

    def cost(text: str, stride: int) -> int:
        settings = HandlerSettings(max_seq_length=128, window_stride=stride)
        return ner_core.encode_windows(tokenizer, settings, [text])[0].cost

    text = ""
    for sentence in sentences:
        text = f"{text} {sentence}".strip()
        if len(text) > HANDLER["max_text_chars"] or cost(text, 32) > HANDLER["max_request_tokens"]:
            break
        if cost(text, 63) > HANDLER["max_request_tokens"]:
            return text
    pytest.fail("no text of these sentences tells stride 63 from 32 within the limits")


def test_stride_is_the_window_overlap_of_that_request(server, demo, sentences):
    client = InferenceClient(model=url_of(server.inference_url, demo), token=inference_key(server), timeout=120)
    text = long_text(sentences * 3)
    default = client.token_classification(text)
    assert rows(client.token_classification(text, stride=32)) == rows(default)  # the model config's overlap
    assert all(r.word == text[r.start : r.end] for r in client.token_classification(text, stride=0))
    with pytest.raises(HfHubHTTPError) as err:  # more overlap, more windows: over max_request_tokens
        client.token_classification(text, stride=63)
    assert err.value.response.status_code == 413
    assert "model-input tokens" in str(err.value) and err.value.response.json()["status"] == 413
    print(f"\nstride 63 on {len(text)} characters: {str(err.value).strip()}")


# What each bad shape gets through huggingface_hub: (client arguments, status, the error's words).
BAD_CALLS = {
    "strategy first": ({"aggregation_strategy": "first"}, 400, 'aggregation_strategy "first" is not served'),
    "strategy average": ({"aggregation_strategy": "average"}, 400, 'aggregation_strategy "average" is not served'),
    "strategy max": ({"aggregation_strategy": "max"}, 400, 'aggregation_strategy "max" is not served'),
    "strategy not a string": ({"aggregation_strategy": 1}, 400, 'parameter "aggregation_strategy" must be a string'),
    "ignore_labels a string": ({"ignore_labels": "O"}, 400, 'parameter "ignore_labels" must be a list of labels'),
    "stride a string": ({"stride": "8"}, 400, 'parameter "stride" must be a whole number of tokens'),
    "stride negative": ({"stride": -1}, 400, "at least 0, received -1"),
    "stride over half a window": ({"stride": 64}, 400, "can be 0 to 63"),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_parameters_get_the_services_400_as_the_client_shows_it(server, demo, case):
    parameters, status, words = BAD_CALLS[case]
    client = InferenceClient(model=url_of(server.inference_url, demo), token=inference_key(server), timeout=60)
    with pytest.raises(BadRequestError) as err:
        client.token_classification("이순신은 조선 중기의 무신이다.", **parameters)
    body = err.value.response.json()
    assert err.value.response.status_code == status and body["status"] == status
    assert words in body["error"] and body["error"] in str(err.value) and "Hugging Face" in body["accepted"]
    print(f"\n{case}: {str(err.value).strip()}")


@pytest.mark.parametrize(
    "text, words",
    [
        ("", '"inputs" is empty or blank (0 characters)'),
        ("가" * 2001, '"inputs" has 2001 characters; the limit is 2000'),
    ],
    ids=["empty", "too long"],
)
def test_bad_texts_get_the_services_400_from_both_clients(server, demo, text, words):
    url, key = url_of(server.inference_url, demo), inference_key(server)
    with pytest.raises(BadRequestError, match=words.replace("(", r"\(").replace(")", r"\)")):
        InferenceClient(model=url, token=key).token_classification(text)
    with pytest.raises(BadRequestError, match=r"is empty|the limit is 2000"):
        asyncio.run(async_tag(url, key, [text]))


@pytest.mark.parametrize(
    "body, words",
    [
        ({"inputs": "서울", "parameters": {"top_k": 3}}, "unknown parameter(s) ['top_k']"),
        ({"inputs": "서울", "options": {"wait_for_model": True}}, "unknown key(s) ['options']"),
        ({"inputs": "서울", "parameters": "none"}, '"parameters" must be a JSON object'),
        ({"inputs": ["서울"] * 9}, '"inputs" has 9 texts; the limit is 8'),
        ({"inputs": []}, '"inputs" is empty'),
        ({"inputs": ["서울", 3]}, '"inputs"[1] must be a string'),
    ],
    ids=["unknown parameter", "unknown key", "parameters not an object", "too many texts", "no texts", "not a text"],
)
def test_bad_bodies_no_client_sends_get_a_json_400(server, demo, body, words):
    resp = server.call("POST", "inference", tsctl.predictions_path(demo), json=body)
    assert resp.status_code == 400 and words in resp.json()["error"] and resp.json()["status"] == 400


# --------------------------------------------------------------------------- the JS client


def run_js(url: str, key: str, texts: list[str], cases: dict) -> dict:
    """tests/js/hf_token_classification.mjs with node: its answers and each case's outcome."""
    if shutil.which("node") is None:
        pytest.skip("node not installed (Debian: apt-get install nodejs npm)")
    if not (JS_DIR / "node_modules" / "@huggingface" / "inference").is_dir():
        pytest.skip(f"@huggingface/inference not installed: npm ci --prefix {JS_DIR.relative_to(paths.ROOT)}")
    payload = json.dumps({"url": url, "key": key, "texts": texts, "cases": cases}, ensure_ascii=False)
    done = subprocess.run(
        ["node", "hf_token_classification.mjs"],
        input=payload,
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


JS_CASES = {
    "none": {"inputs": "이순신은 조선 중기의 무신이다.", "parameters": {"aggregation_strategy": "none"}},
    "first": {"inputs": "이순신은 조선 중기의 무신이다.", "parameters": {"aggregation_strategy": "first"}},
    "empty": {"inputs": ""},
}


def check_js(result: dict, expected: list[list[tuple]]) -> None:
    assert [rows(a["answer"]) for a in result["answers"]] == expected
    # none: the service answers its per-wordpiece rows, which the JS client refuses to return: it
    # checks every row for the entity_group that only grouped rows have (against HF's own API too).
    none = result["cases"]["none"]["error"]
    assert none["name"] == "ProviderOutputError" and "expected Array<{end: number, entity_group" in none["message"]
    first = result["cases"]["first"]["error"]
    assert (first["name"], first["status"]) == ("ProviderApiError", 400)
    assert first["message"].startswith('Failed to perform inference: aggregation_strategy "first" is not served')
    assert first["body"]["status"] == 400 and first["body"]["error"] in first["message"]
    assert result["cases"]["empty"]["error"]["status"] == 400


def test_the_js_client_gets_the_services_entities(server, demo, sentences):
    result = run_js(url_of(server.inference_url, demo), inference_key(server), sentences, JS_CASES)
    check_js(result, service_entities(server, demo, sentences))
    print(f"\nJS, aggregation_strategy first: {result['cases']['first']['error']['message']}")
    print(f"JS, none: {result['cases']['none']['error']['message']}")


# --------------------------------------------------------------------------- through the image's front door


@pytest.fixture(scope="module")
def door(model_store, demo_mar, tmp_path_factory):
    """The demo model on a TorchServe without token authorization, behind HAProxy with the
    image's config checking KEY, as in the container (tests/integration/test_front_door.py)."""
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (apt-get install haproxy)")
    with tsctl.running(
        tmp_path_factory.mktemp("ts-behind-hf-door"), model_store, {"disable_token_authorization": "true"}
    ) as backend:
        name = tsctl.register(backend, demo_mar, workers=1)
        inference, metrics = tsctl.free_ports(2)
        workdir = tmp_path_factory.mktemp("hf-front-door")
        config = flood.front_door_config(
            workdir,
            KEY,
            inference,
            metrics,
            int(backend.inference_url.rsplit(":", 1)[1]),
            int(backend.metrics_url.rsplit(":", 1)[1]),
        )
        with flood.haproxy(config, workdir, (inference, metrics)):
            yield {"url": url_of(f"http://127.0.0.1:{inference}", name), "backend": backend, "model": name}


def test_both_python_clients_through_the_door_get_the_services_entities(door, sentences):
    expected = service_entities(door["backend"], door["model"], sentences)
    client = InferenceClient(model=door["url"], token=KEY, timeout=120)
    assert [rows(client.token_classification(text)) for text in sentences] == expected
    assert [rows(a) for a in asyncio.run(async_tag(door["url"], KEY, sentences))] == expected


def test_through_the_door_a_wrong_key_is_a_401_and_a_bad_shape_the_services_400(door):
    with pytest.raises(HfHubHTTPError) as err:
        InferenceClient(model=door["url"], token="wrong-key-0123456789abcdef").token_classification("서울")
    assert err.value.response.status_code == 401 and "Authorization: Bearer" in err.value.response.json()["error"]
    print(f"\nwrong key at the door: {str(err.value).strip()}")
    with pytest.raises(BadRequestError, match='aggregation_strategy "max" is not served'):
        InferenceClient(model=door["url"], token=KEY).token_classification("서울", aggregation_strategy="max")
    resp = requests.post(
        door["url"],
        json={"inputs": "서울", "parameters": {"aggregation_strategy": "none"}},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert resp.status_code == 200 and all("entity" in row for row in resp.json())


def test_the_js_client_through_the_door_gets_the_services_entities(door, sentences):
    result = run_js(door["url"], KEY, sentences, JS_CASES)
    check_js(result, service_entities(door["backend"], door["model"], sentences))
