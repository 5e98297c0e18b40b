"""Fuzz a served NER model: hostile requests interleaved with valid ones, many in flight, so
that bad requests land in the same dynamic batches as good ones.

    .venv/bin/python scripts/fuzz.py --requests 10000 --concurrency 32 --model kor_ner

Every valid request carries a unique marker and must be answered 200 with its own sentence(s),
whatever its batch-mates sent; every hostile one must be answered with a 4xx (a JSON error
from the handler, or the frontend's bare 413 for a body over max_request_size); no worker
may restart (same pids, all READY, before and after). The hostile classes are built to break
a handler in ways nobody listed: numbers past Python's integer-string limit, JSON nested
100,000 deep, odd and lone-surrogate escapes, truncated JSON, random bytes under random
content types, malformed KServe v2 and Hugging Face requests, texts over the length or token budget, bad query
options, form and multipart bodies; valid requests also carry headers that TorchServe's
BaseHandler would act on (explain, describe). The exit code is non-zero on any failure.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from drills import soak
from drills.soak import TEMPLATES, Case
from serving import tsctl

CONTENT_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/json",
    "application/json; charset=utf-8",
    "application/octet-stream",
    "text/html",
    "application/xml",
    "image/png",
]


@dataclass(frozen=True)
class Hostile:
    """How to make one class of hostile request: ``make(rng, limits) -> (body, content type, headers)``."""

    name: str
    make: Any


def _huge_number(rng, limits):
    digits = b"7" * rng.randint(4301, 20_000)
    return (
        rng.choice([b"%s", b'{"sentence": %s}', b'["\xea\xb0\x80", %s]', b"-%s", b"[%s.5e1]"]) % digits,
        "application/json",
        (),
    )


def _deep(rng, limits):
    depth = rng.choice([1_000, 10_000, 100_000])
    return (
        rng.choice([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth]),
        "application/json",
        (),
    )


def _escapes(rng, limits):
    parts = [
        rng.choice(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\u12", "\\x41", "\\q", '\\"', "가"])
        for _ in range(rng.randint(0, 11))
    ]
    parts.append(rng.choice(["\\u12", "\\x41", "\\q", "\\ud800"]))  # one that no JSON parser may accept
    return (
        ('{"sentence": "' + "".join(parts) + '"}').encode(),
        rng.choice(["application/json", "application/json; charset=utf-8"]),
        (),
    )


def _truncated(rng, limits):
    body = json.dumps(
        {"sentence": rng.choice(TEMPLATES).format(m="x"), "text": [1, {"a": None}]}, ensure_ascii=False
    ).encode()
    return body[: rng.randint(1, len(body) - 1)], "application/json", ()


def _random_bytes(rng, limits):
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400))), rng.choice(CONTENT_TYPES), ()


def _bad_v2(rng, limits):
    tensor = rng.choice(
        [
            {"name": "t", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "t", "shape": [10**40], "datatype": "BYTES", "data": ["가"]},
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": [["nested"]]},
            {"name": "t", "shape": "1", "datatype": "BYTES", "data": "가"},
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": [None]},
        ]
    )
    body = {"inputs": rng.choice([[tensor], [tensor, tensor], tensor, []]), "id": rng.choice(["a", 5, None, ["x"]])}
    return json.dumps(body).encode(), "application/json", ()


def _bad_hf(rng, limits):
    """Hugging Face's shape with a refused parameter, a wrong type or a bad text."""
    body = rng.choice(
        [
            {
                "inputs": "서울에서 만났다",
                "parameters": {"aggregation_strategy": rng.choice(["first", "average", "max", "x"])},
            },
            {"inputs": "서울에서 만났다", "parameters": {rng.choice(["top_k", "\ud800", ""]): 1}},
            {"inputs": "서울에서 만났다", "parameters": {"stride": rng.choice([-1, 10**6, "8", 1.5, True])}},
            {"inputs": "서울에서 만났다", "parameters": {"ignore_labels": rng.choice(["O", [None], {"O": 1}])}},
            {"inputs": "서울에서 만났다", "options": {"wait_for_model": True}},
            {"inputs": ["서울", rng.choice([None, 3, ["가"], " "])]},
            {"inputs": ["가"] * (limits["max_texts"] + 1)},
        ]
    )
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass"), "application/json", ()


def _wrong_json(rng, limits):
    value = rng.choice(
        [
            None,
            True,
            42,
            1e308,
            [],
            {},
            {"sentence": None},
            {"sentence": "가", "text": "나"},
            ["가", 1, None],
            {"sentense": "오타"},
            [[["가"]]],
            {"sentence": {"text": "가"}},
        ]
    )
    return json.dumps(value).encode(), "application/json", ()


def _too_long(rng, limits):
    return ("가" * (limits["max_chars"] + 1)).encode(), "text/plain; charset=utf-8", ()


def _over_budget(rng, limits):
    """Within the text length and count limits, over the token budget: ordinary Korean, or text
    where nearly every character is a wordpiece of its own (the largest answer per character)."""
    unit = rng.choice(["이순신은 1592년 한산도에서 왜군을 무찔렀다. ", "1.2,3;4:5!6?7(8)9-0/"])
    text = (unit * (limits["max_chars"] // len(unit) + 1))[: limits["max_chars"]]
    return json.dumps([text] * limits["max_texts"], ensure_ascii=False).encode(), "application/json", ()


def _too_many(rng, limits):
    return json.dumps(["가"] * (limits["max_texts"] + rng.randint(1, 1000))).encode(), "application/json", ()


def _bad_option(rng, limits):
    return (
        "서울에서 만났다".encode(),
        "text/plain; charset=utf-8",
        (("X-NER-Result", rng.choice(["maybe", "", "yes please"])),),
    )


def _form(rng, limits):
    return "sentence=서울에서".encode(), "application/x-www-form-urlencoded", ()


def _oversize(rng, limits):
    return b"a" * (limits["max_request_size"] + 1), "text/plain", ()


HOSTILE = [
    Hostile(f.__name__.lstrip("_"), f)
    for f in (
        _huge_number,
        _deep,
        _escapes,
        _truncated,
        _random_bytes,
        _bad_v2,
        _bad_hf,
        _wrong_json,
        _too_long,
        _over_budget,
        _too_many,
        _bad_option,
        _form,
        _oversize,
    )
]


# Headers a valid request may carry that must change nothing: TorchServe's BaseHandler would
# answer a whole batch differently for explain/describe on its first request.
VALID_HEADERS = [
    (("explain", "True"),),
    (("describe", "True"),),
    (("X-NER-Result", "true"),),
    (("Accept", "application/xml"),),
]


def make_cases(n: int, bad_fraction: float, classes: list[Hostile], limits: dict[str, int], seed: int) -> list[Case]:
    """``n`` requests: valid ones with a unique marker each, and hostile ones (``bad_fraction``)."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        if rng.random() < bad_fraction:
            hostile = rng.choice(classes)
            body, content_type, headers = hostile.make(rng, limits)
            cases.append(
                Case(
                    f"hostile {hostile.name}",
                    body,
                    content_type,
                    headers=headers,
                    frontend_refuses=len(body) > limits["max_request_size"],
                )
            )
        elif rng.random() < 0.8:
            text = rng.choice(TEMPLATES).format(m=f"#{i}")
            headers = rng.choice(VALID_HEADERS) if rng.random() < 0.1 else ()
            cases.append(Case("valid", text.encode(), "text/plain; charset=utf-8", (text,), headers=headers))
        else:
            texts = tuple(rng.choice(TEMPLATES).format(m=f"#{i}-{j}") for j in range(rng.randint(2, 4)))
            cases.append(
                Case(
                    "valid list",
                    json.dumps(texts, ensure_ascii=False).encode(),
                    "application/json",
                    texts,
                    is_list=True,
                )
            )
    return cases


def fuzz(
    server: tsctl.Server,
    model: str,
    requests_n: int,
    concurrency: int,
    bad_fraction: float,
    limits: dict[str, int],
    classes: list[Hostile] | None = None,
    seed: int = 0,
    timeout: float = 120,
    progress: bool = True,
) -> dict[str, Any]:
    """Send the mix; the report counts valid requests failed, hostile ones not refused, restarts."""
    cases = make_cases(requests_n, bad_fraction, classes or HOSTILE, limits, seed)
    before = tsctl.workers(server, model)
    tally = soak.run(server, model, cases, concurrency, timeout, "fuzz", progress)
    after = tsctl.workers(server, model)
    kinds = Counter(case.kind.split(" ")[0] for case in cases)
    valid_failed = sum(n for (kind, outcome), n in soak.by_kind(tally).items() if kind == "valid" and outcome != "ok")
    hostile_not_refused = sum(
        n for (kind, outcome), n in soak.by_kind(tally).items() if kind == "hostile" and outcome != "invalid_4xx"
    )
    return {
        "model": model,
        "requests": requests_n,
        "concurrency": concurrency,
        "bad_fraction": bad_fraction,
        "valid": kinds["valid"],
        "hostile": kinds["hostile"],
        "hostile_classes": dict(
            Counter(case.kind.split(" ", 1)[1] for case in cases if case.kind.startswith("hostile"))
        ),
        "statuses": soak.statuses(tally),
        "outcomes": dict(soak.outcomes(tally)),
        "valid_failed": valid_failed,
        "hostile_not_refused": hostile_not_refused,
        "workers_before": before,
        "workers_after": after,
        "worker_restarted": tsctl.any_restarted(before, after),
        "seconds": round(tally.seconds, 1),
        "examples": tally.examples,
    }


def failures(report: dict[str, Any]) -> list[str]:
    problems = []
    if report["valid_failed"]:
        problems.append(f"{report['valid_failed']} valid requests not answered 200 with their own sentence")
    if report["hostile_not_refused"]:
        problems.append(f"{report['hostile_not_refused']} hostile requests not answered with a 4xx")
    if report["worker_restarted"]:
        problems.append("a worker restarted")
    return problems
