"""Hugging Face's token-classification shape (handler/ner_hf.py): every accepted request, every
refusal with its status and message, the answer's rows from the service's own predictions, and,
through the whole handler in-process, answers equal to the service's own for any text (hypothesis),
a per-request ``stride`` that really changes the windows, and a bad HF request that fails alone."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ner_hf
from ner_core import Entity, TokenPredictions
from ner_settings import HandlerSettings
from ner_wire import InputError, parse_body
from serving import paths
from tests.unit.test_handler import GOOD, make_handler, run_batch

LIMITS = dict(max_chars=50, max_texts=3)
TEXT = "이순신은 조선 중기의 무신이다."
LABELS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def parse(value):
    return parse_body(value, "application/json", **LIMITS)


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    "value, texts, is_list, options",
    [
        ({"inputs": TEXT}, [TEXT], False, ner_hf.HfOptions()),
        ({"inputs": TEXT, "parameters": {}}, [TEXT], False, ner_hf.HfOptions()),  # what huggingface_hub sends
        ({"inputs": TEXT, "parameters": None}, [TEXT], False, ner_hf.HfOptions()),
        ({"inputs": ["가", "나"]}, ["가", "나"], True, ner_hf.HfOptions()),
        ({"inputs": TEXT, "parameters": {"aggregation_strategy": "simple"}}, [TEXT], False, ner_hf.HfOptions()),
        ({"inputs": TEXT, "parameters": {"aggregation_strategy": "SIMPLE"}}, [TEXT], False, ner_hf.HfOptions()),
        (
            {"inputs": TEXT, "parameters": {"aggregation_strategy": "none"}},
            [TEXT],
            False,
            ner_hf.HfOptions(per_token=True),
        ),
        (
            {"inputs": TEXT, "parameters": {"aggregation_strategy": None, "ignore_labels": None, "stride": None}},
            [TEXT],
            False,
            ner_hf.HfOptions(),
        ),
        (
            {"inputs": TEXT, "parameters": {"ignore_labels": ["PER", "O"]}},
            [TEXT],
            False,
            ner_hf.HfOptions(ignore_labels=frozenset({"PER", "O"})),
        ),
        (
            {"inputs": TEXT, "parameters": {"ignore_labels": []}},
            [TEXT],
            False,
            ner_hf.HfOptions(ignore_labels=frozenset()),
        ),
        ({"inputs": TEXT, "parameters": {"stride": 0}}, [TEXT], False, ner_hf.HfOptions(stride=0)),
        (
            {"inputs": TEXT, "parameters": {"aggregation_strategy": "none", "ignore_labels": ["O"], "stride": 8}},
            [TEXT],
            False,
            ner_hf.HfOptions(per_token=True, ignore_labels=frozenset({"O"}), stride=8),
        ),
    ],
)
def test_accepted_hf_requests(value, texts, is_list, options):
    parsed = parse(value)
    assert (parsed.texts, parsed.is_list, parsed.protocol, parsed.hf) == (texts, is_list, "hf", options)


def test_raw_json_bytes_are_the_same_request():
    parsed = parse_body('{"inputs": "서울에서", "parameters": {"stride": 3}}'.encode(), "", **LIMITS)
    assert (parsed.texts, parsed.protocol, parsed.hf) == (["서울에서"], "hf", ner_hf.HfOptions(stride=3))


def test_a_v2_request_is_still_v2():
    v2 = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [TEXT]}], "parameters": {"x": 1}}
    parsed = parse(v2)
    assert (parsed.protocol, parsed.hf, parsed.texts) == ("v2", None, [TEXT])
    with pytest.raises(InputError, match='v2 "inputs" must be a list of one input, received a JSON number'):
        parse({"inputs": 3})


BAD = [
    (
        "unknown key",
        {"inputs": TEXT, "options": {"wait_for_model": True}},
        "bad_shape",
        'Hugging Face request has unknown key(s) [\'options\']: it takes "inputs" and "parameters"',
    ),
    (
        "parameters not an object",
        {"inputs": TEXT, "parameters": ["none"]},
        "bad_shape",
        '"parameters" must be a JSON object, received a JSON list of 1 items',
    ),
    (
        "unknown parameter",
        {"inputs": TEXT, "parameters": {"top_k": 3, "stride": 1}},
        "bad_parameter",
        "unknown parameter(s) ['top_k']; the parameters are ['aggregation_strategy', 'ignore_labels', 'stride']",
    ),
    (
        "strategy first",
        {"inputs": TEXT, "parameters": {"aggregation_strategy": "first"}},
        "bad_parameter",
        "aggregation_strategy \"first\" is not served; the accepted values are ['simple', 'none']",
    ),
    (
        "strategy AVERAGE",
        {"inputs": TEXT, "parameters": {"aggregation_strategy": "AVERAGE"}},
        "bad_parameter",
        'aggregation_strategy "average" is not served',
    ),
    (
        "strategy max",
        {"inputs": TEXT, "parameters": {"aggregation_strategy": "max"}},
        "bad_parameter",
        "would put particles inside entities",
    ),
    (
        "strategy unknown",
        {"inputs": TEXT, "parameters": {"aggregation_strategy": "group"}},
        "bad_parameter",
        "aggregation_strategy \"group\" is unknown; the accepted values are ['simple', 'none']",
    ),
    (
        "strategy not a string",
        {"inputs": TEXT, "parameters": {"aggregation_strategy": True}},
        "bad_parameter",
        "parameter \"aggregation_strategy\" must be a string, one of ['simple', 'none'], received a JSON boolean",
    ),
    (
        "ignore_labels a string",
        {"inputs": TEXT, "parameters": {"ignore_labels": "O"}},
        "bad_parameter",
        'parameter "ignore_labels" must be a list of labels (strings), received a string of 1 characters',
    ),
    (
        "ignore_labels item",
        {"inputs": TEXT, "parameters": {"ignore_labels": ["O", None]}},
        "bad_parameter",
        'parameter "ignore_labels" item 1 must be a string, received JSON null',
    ),
    (
        "stride a string",
        {"inputs": TEXT, "parameters": {"stride": "8"}},
        "bad_parameter",
        'parameter "stride" must be a whole number of tokens, at least 0, received a string of 1 characters',
    ),
    (
        "stride a float",
        {"inputs": TEXT, "parameters": {"stride": 8.5}},
        "bad_parameter",
        'parameter "stride" must be a whole number of tokens, at least 0, received 8.5',
    ),
    ("stride negative", {"inputs": TEXT, "parameters": {"stride": -1}}, "bad_parameter", "at least 0, received -1"),
    ("stride boolean", {"inputs": TEXT, "parameters": {"stride": True}}, "bad_parameter", "received a JSON boolean"),
    ("empty text", {"inputs": ""}, "empty", '"inputs" is empty or blank (0 characters)'),
    ("blank text", {"inputs": " \n"}, "empty", '"inputs" is empty or blank (2 characters)'),
    ("empty list", {"inputs": []}, "empty", '"inputs" is empty'),
    ("too many texts", {"inputs": ["가"] * 4}, "too_many_texts", '"inputs" has 4 texts; the limit is 3'),
    ("text too long", {"inputs": "가" * 51}, "too_long", '"inputs" has 51 characters; the limit is 50'),
    ("list item too long", {"inputs": ["가", "가" * 51]}, "too_long", '"inputs"[1] has 51 characters; the limit is 50'),
    ("list item not text", {"inputs": ["가", 7]}, "not_text", '"inputs"[1] must be a string, received a JSON number'),
    (
        "lone surrogate",
        {"inputs": "서울\ud800"},
        "not_utf8",
        '"inputs" has a lone UTF-16 surrogate U+D800 at position 2',
    ),
]


@pytest.mark.parametrize("value, reason, message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_hf_requests_get_a_400_naming_the_problem(value, reason, message):
    with pytest.raises(InputError) as err:
        parse(value)
    assert message in str(err.value)
    assert (err.value.status, err.value.reason) == (400, reason)
    body = err.value.body()
    assert body["error"] == str(err.value) and body["status"] == 400 and "Hugging Face" in body["accepted"]


def test_refusals_never_echo_the_text():
    secret = "비밀스러운 이름 홍길동"
    for value in (
        {"inputs": secret, "parameters": {"stride": "x"}},
        {"inputs": [secret, 1]},
        {"inputs": secret * 9},
        {"inputs": secret, "x": 1},
    ):
        with pytest.raises(InputError) as err:
            parse(value)
        assert "홍길동" not in str(err.value), value


def test_long_unknown_names_are_cut():
    with pytest.raises(InputError) as err:
        parse({"inputs": "가", "parameters": {"k" * 500: 1, **{f"p{i}": 1 for i in range(9)}}})
    assert len(str(err.value)) < 300 and "and 5 more" in str(err.value)


@pytest.mark.parametrize("stride, window_stride", [(None, 4), (4, 4), (0, 0), (7, 7)])
def test_stride_is_the_window_overlap(stride, window_stride):
    settings = HandlerSettings(max_seq_length=16, window_stride=4)
    request = parse({"inputs": "가", "parameters": {"stride": stride}})
    assert ner_hf.window_settings(request, settings).window_stride == window_stride


def test_a_stride_over_half_a_window_is_refused_naming_the_range():
    settings = HandlerSettings(max_seq_length=16, window_stride=4)
    with pytest.raises(InputError) as err:
        ner_hf.window_settings(parse({"inputs": "가", "parameters": {"stride": 8}}), settings)
    assert str(err.value) == (
        'parameter "stride" is 8 tokens; the overlap of two windows of this model can be 0 to 7 '
        "(half a window of 14 wordpieces, max_seq_length 16 with [CLS] and [SEP])"
    )
    assert err.value.status == 400


# --------------------------------------------------------------------------- answers


PRED = TokenPredictions(
    text="이순신은 서울에서",
    tokens=["이", "##순", "##신은", "서울", "##에서"],
    offsets=[(0, 1), (1, 2), (2, 4), (5, 7), (7, 9)],
    label_ids=[5, 6, 6, 7, 4],
    probs=[0.99, 0.98, 0.51234, 0.9, 0.8],
)
ENTITIES = [Entity("PER", 0, 3, 0.8274), Entity("LOC", 5, 7, 0.9)]  # particles cut off, as the service answers


def test_grouped_rows_are_the_services_entities():
    assert ner_hf.text_answer(PRED, ENTITIES, LABELS, ner_hf.HfOptions()) == [
        {"entity_group": "PER", "score": 0.8274, "word": "이순신", "start": 0, "end": 3},
        {"entity_group": "LOC", "score": 0.9, "word": "서울", "start": 5, "end": 7},
    ]


def test_ignore_labels_drops_entity_types_when_grouped_and_tags_per_token():
    assert [
        r["entity_group"]
        for r in ner_hf.text_answer(PRED, ENTITIES, LABELS, ner_hf.HfOptions(ignore_labels=frozenset({"PER", "B-LOC"})))
    ] == ["LOC"]  # grouped: the type is matched, as transformers does
    options = ner_hf.HfOptions(per_token=True, ignore_labels=frozenset({"I-PER"}))
    rows = ner_hf.text_answer(PRED, ENTITIES, LABELS, options)
    assert [r["entity"] for r in rows] == ["B-PER", "B-LOC", "O"]  # given: only those; "O" is no longer left out


def test_per_token_rows_are_the_argmax_tags_with_their_characters():
    rows = ner_hf.text_answer(PRED, ENTITIES, LABELS, ner_hf.HfOptions(per_token=True))
    assert rows == [
        {"entity": "B-PER", "score": 0.99, "index": 1, "word": "이", "start": 0, "end": 1},
        {"entity": "I-PER", "score": 0.98, "index": 2, "word": "순", "start": 1, "end": 2},
        {"entity": "I-PER", "score": 0.5123, "index": 3, "word": "신은", "start": 2, "end": 4},
        {"entity": "B-LOC", "score": 0.9, "index": 4, "word": "서울", "start": 5, "end": 7},
    ]


# --------------------------------------------------------------------------- through the handler


_HANDLER: dict = {}


def handler(tiny_model_dir):
    """One in-process handler for every example, with limits far from the texts drawn here."""
    if "h" not in _HANDLER:
        _HANDLER["h"] = make_handler(
            tiny_model_dir, max_text_chars=400, max_texts_per_request=4, max_request_tokens=100_000
        )
    return _HANDLER["h"]


TEXTS = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from(list("가나다서울에서이순신은 ,.!?\u1100\u1161\u11a8\u3131\u200b\ufeff\u00e9e\u0301😀")),
    ),
    min_size=1,
    max_size=120,
).filter(str.strip)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(text=TEXTS)
def test_for_any_text_the_hf_answer_is_the_services_own(tiny_model_dir, text):
    """Sent together in one batch: the plain request, the HF default and HF ``none``. Every row's
    ``word`` is ``text[start:end]``; the grouped rows are the service's ``entities``, the per-token
    rows its ``result`` rows other than ``O``."""
    answers, statuses, types = run_batch(
        handler(tiny_model_dir),
        [
            ({"text": text}, "application/json"),
            ({"inputs": text, "parameters": {}}, "application/json"),
            ({"inputs": [text], "parameters": {"aggregation_strategy": "none"}}, "application/json"),
        ],
    )
    assert statuses == [200, 200, 200], answers
    assert types == ["application/json; charset=utf-8"] * 3
    plain, grouped, [tokens] = answers
    assert grouped == [
        {"entity_group": e["label"], "score": e["score"], "word": e["text"], "start": e["start"], "end": e["end"]}
        for e in plain["entities"]
    ]
    assert [(r["entity"], str(r["score"]), r["index"]) for r in tokens] == [
        (row["tag"], row["top_prob"], i + 1) for i, row in enumerate(plain["result"]) if row["tag"] != "O"
    ]
    for row in grouped + tokens:
        assert 0 <= row["start"] <= row["end"] <= len(text) and row["word"] == text[row["start"] : row["end"]]
        assert isinstance(row["score"], float)


SHORTER = " ".join("abcdefghij" * 3)  # 30 wordpieces of the tiny vocab


def test_a_stride_changes_the_windows_of_that_request(tiny_model_dir):
    """max_seq_length 16 (windows of 14), window_stride 4, max_request_tokens 48: the 30 wordpieces
    take 3 windows (48 tokens) at the config's overlap of 4 and at 0, 4 windows (64) at 7."""
    h = make_handler(tiny_model_dir)
    answers, statuses, _ = run_batch(
        h,
        [
            ({"inputs": SHORTER}, "application/json"),
            ({"inputs": SHORTER, "parameters": {"stride": 0}}, "application/json"),
            ({"inputs": SHORTER, "parameters": {"stride": 7}}, "application/json"),
            ({"inputs": SHORTER, "parameters": {"stride": 8}}, "application/json"),
        ],
    )
    assert statuses == [200, 200, 413, 400], answers
    assert "need 64 model-input tokens (4 windows of at most 16)" in answers[2]["error"]
    assert answers[2]["status"] == 413 and "stride" in answers[3]["error"]


def test_bad_hf_requests_fail_alone_beside_good_ones(tiny_model_dir):
    h = make_handler(tiny_model_dir)
    answers, statuses, _ = run_batch(
        h,
        [
            ({"inputs": GOOD}, "application/json"),
            ({"inputs": GOOD, "parameters": {"aggregation_strategy": "max"}}, "application/json"),
            (GOOD, "text/plain"),
            ({"inputs": [GOOD] * 5}, "application/json"),
            ({"inputs": ["서울에서", "가나"]}, "application/json"),
        ],
    )
    assert statuses == [200, 400, 200, 400, 200]
    assert isinstance(answers[0], list) and answers[2]["sentence"] == GOOD
    assert '"inputs" has 5 texts; the limit is 4' in answers[3]["error"]
    assert len(answers[4]) == 2 and all(isinstance(rows, list) for rows in answers[4])


def test_a_lone_surrogate_in_a_parameter_is_a_400_not_a_broken_answer(tiny_model_dir):
    """The error names what it received; a lone surrogate there could not be sent as UTF-8."""
    answers, statuses, _ = run_batch(
        make_handler(tiny_model_dir),
        [
            ({"inputs": GOOD, "parameters": {"aggregation_strategy": "\ud800x"}}, "application/json"),
            ({"inputs": GOOD, "parameters": {"\udc00": 1}}, "application/json"),
            ({"inputs": GOOD, "\udfff": 1}, "application/json"),
            ({"inputs": GOOD}, "application/json"),
        ],
    )
    assert statuses == [400, 400, 400, 200], answers
    assert '"\\ud800x" is unknown' in answers[0]["error"]


def test_the_js_client_is_pinned_exactly_with_hashes():
    """tests/js: the version the JS client test installs (npm ci), one exact version, every
    package of the lock file with its sha512."""
    js = paths.ROOT / "tests" / "js"
    version = json.loads((js / "package.json").read_text(encoding="utf-8"))["dependencies"]["@huggingface/inference"]
    lock = json.loads((js / "package-lock.json").read_text(encoding="utf-8"))
    assert version[0].isdigit() and lock["packages"]["node_modules/@huggingface/inference"]["version"] == version
    assert all(entry["integrity"].startswith("sha512-") for path, entry in lock["packages"].items() if path)
