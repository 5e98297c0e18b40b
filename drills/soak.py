"""Soak a served NER model: many concurrent requests mixing valid, invalid and long inputs.

    python scripts/soak.py --requests 20000 --concurrency 32 --model kor_ner

Every valid text carries a unique marker, so an answer is checked against the very text its
request sent (a swapped answer inside a batch is caught, not just a wrong status). Counted:
2xx / 4xx / 5xx, mismatches (a valid text answered wrong, or an invalid one not with a 4xx),
lost requests (no answer within --timeout, or the connection failed), latency percentiles,
and the worker's resident memory after a warm-up of the same mix and after the soak. The
exit code is non-zero on any 5xx, mismatch, loss, worker restart or memory growth above
--max-rss-growth. No retries: a retry would hide exactly what this is looking for.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil
import requests
from tqdm import tqdm

from drills.load import Tally, percentile, send_all
from serving import tsctl

TEMPLATES = [
    "{m} 이순신은 1592년 한산도에서 왜군을 크게 무찔렀다.",
    "{m} 서울시는 다음 달부터 시내버스 요금을 1,500원으로 올린다.",
    "{m} 김민수 교수는 어제 오후 3시에 부산대학교에서 강연했다.",
    "{m} Samsung과 LG는 2024년 CES에서 새 TV를 선보였다 😀",
    "{m} 세계보건기구는 10일 보고서에서 전 세계 인구의 25%가 운동이 부족하다고 밝혔다.",
]
# (name, body, content type): each must be answered with a 4xx, whatever the model.
INVALID: list[tuple[str, bytes, str]] = [
    ("blank", b"  \n\t ", "text/plain; charset=utf-8"),
    ("empty sentence", b'{"sentence": ""}', "application/json"),
    ("mixed list", b'["\xea\xb0\x80", 1, null]', "application/json"),
    ("not utf-8", b"\xff\xfe broken", "text/plain; charset=utf-8"),
    ("json null", b"null", "application/json"),
    ("lone surrogate", b'{"sentence": "\\ud800"}', "application/json"),
    ("bad json", b'{"sentence": ', "application/json"),
    ("too many texts", json.dumps(["a"] * 1000).encode(), "application/json"),
]
MIX = (("short", 0.70), ("list", 0.10), ("long", 0.10), ("invalid", 0.10))


@dataclass(frozen=True)
class Case:
    kind: str  # short, list, long or invalid
    body: bytes
    content_type: str
    texts: tuple[str, ...] = ()  # what the answer must echo, in order (empty: must be a 4xx)
    is_list: bool = False
    headers: tuple[tuple[str, str], ...] = ()  # more HTTP headers, e.g. (("X-NER-Result", "false"),)
    frontend_refuses: bool = False  # over max_request_size: TorchServe's frontend answers a bare 413


def make_case(i: int, rng: random.Random, long_chars: int, max_chars: int) -> Case:
    """Request ``i`` of the mix; its marker ``#<i>`` makes every valid text unique."""
    kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
    sentence = lambda tag: rng.choice(TEMPLATES).format(m=f"#{i}{tag}")  # noqa: E731
    if kind == "short":
        text = sentence("")
        return Case(kind, text.encode(), "text/plain; charset=utf-8", (text,))
    if kind == "list":
        texts = tuple(sentence(f"-{j}") for j in range(rng.randint(2, 4)))
        return Case(kind, json.dumps(texts, ensure_ascii=False).encode(), "application/json", texts, is_list=True)
    if kind == "long":
        text = f"#{i} " + " ".join(sentence(f"-{j}") for j in range(long_chars // 30 + 1))
        text = text[: long_chars - len(f" #{i}")] + f" #{i}"
        return Case(kind, json.dumps({"sentence": text}, ensure_ascii=False).encode(), "application/json", (text,))
    name, body, content_type = rng.choice(INVALID + [("too long", b"a" * (max_chars + 1), "text/plain")])
    return Case(f"invalid {name}", body, content_type)


def judge(case: Case, status: int, body: bytes) -> str:
    """The outcome of one answered request."""
    if status >= 500:
        return "5xx"
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if case.frontend_refuses and status == 413 and not body:
        return "invalid_4xx"
    if not case.texts:
        return (
            "invalid_4xx"
            if 400 <= status < 500 and isinstance(answer, dict) and "error" in answer
            else "invalid_not_4xx"
        )
    answers = answer if case.is_list and isinstance(answer, list) else [answer]
    if status != 200 or [a.get("sentence") if isinstance(a, dict) else None for a in answers] != list(case.texts):
        return "mismatch"
    return "ok"


def send(server: tsctl.Server, model: str, case: Case, timeout: float) -> tuple[int, bytes]:
    resp = server.call(
        "POST",
        "inference",
        tsctl.predictions_path(model),
        data=case.body,
        headers={"Content-Type": case.content_type, **dict(case.headers)},
        timeout=(5, timeout),
    )
    return resp.status_code, resp.content


def run(
    server: tsctl.Server,
    model: str,
    cases: list[Case],
    concurrency: int,
    timeout: float,
    desc: str = "soak",
    progress: bool = True,
) -> Tally:
    """Send every case, ``concurrency`` at a time, and tally what came back: the outcomes (ok,
    mismatch, 5xx, lost, invalid_4xx, invalid_not_4xx), and in ``counts`` each (first word of the
    case's kind, outcome) and each status class (2xx, 4xx, 5xx, none)."""
    tally = Tally()

    def one(case: Case) -> str:
        try:
            status, body = send(server, model, case, timeout)
        except requests.RequestException as err:
            tally.count((case.kind.split(" ")[0], "lost"))
            tally.count("none")
            return f"lost ({type(err).__name__}): {case.kind}"
        outcome = judge(case, status, body)
        tally.count((case.kind.split(" ")[0], outcome))
        tally.count(f"{status // 100}xx")
        return outcome if outcome in ("ok", "invalid_4xx") else f"{outcome}: {case.kind}, HTTP {status}"

    with tqdm(total=len(cases), desc=desc, unit="req", disable=not progress) as bar:
        send_all(one, cases, concurrency, tally, on_sent=bar.update)
    return tally


def outcomes(tally: Tally) -> Counter:
    """The outcome names alone (``lost``, ``mismatch``, ...), without the detail after them."""
    named: Counter = Counter()
    for outcome, n in tally.outcomes.items():
        named[outcome.split(":")[0].split(" (")[0]] += n
    return named


def statuses(tally: Tally) -> dict[str, int]:
    return {key: n for key, n in tally.counts.items() if isinstance(key, str)}


def by_kind(tally: Tally) -> Counter:
    return Counter({key: n for key, n in tally.counts.items() if isinstance(key, tuple)})


def worker_rss(pids: Iterable[int]) -> dict[int, int]:
    """Resident bytes of each of these worker processes, by pid."""
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids}


def soak(
    server: tsctl.Server,
    model: str,
    requests_n: int,
    concurrency: int,
    warmup: int,
    seed: int = 0,
    long_chars: int = 2000,
    max_chars: int = 2000,
    timeout: float = 120,
    progress: bool = True,
) -> dict[str, Any]:
    """Warm up with the same mix, note the workers' memory, soak, note it again: the report."""
    rng = random.Random(seed)
    cases = [make_case(i, rng, long_chars, max_chars) for i in range(warmup + requests_n)]
    run(server, model, cases[:warmup], concurrency, timeout, "warm-up", progress)
    workers_warm = tsctl.workers(server, model)
    rss_warm = worker_rss(workers_warm)
    tally = run(server, model, cases[warmup:], concurrency, timeout, "soak", progress)
    workers_after = tsctl.workers(server, model)
    rss_after = worker_rss(workers_after)
    latencies = sorted(tally.latencies)
    ms = lambda q: round(1000 * percentile(latencies, q), 1)  # noqa: E731
    growth = max((rss_after[pid] / rss_warm[pid] - 1 for pid in rss_after if pid in rss_warm), default=None)
    return {
        "model": model,
        "requests": requests_n,
        "concurrency": concurrency,
        "warmup": warmup,
        "kinds": dict(Counter(c.kind.split(" ")[0] for c in cases[warmup:])),
        "statuses": statuses(tally),
        "outcomes": dict(named := outcomes(tally)),
        "mismatches": named["mismatch"] + named["invalid_not_4xx"],
        "lost": named["lost"],
        "server_errors": named["5xx"],
        "seconds": round(tally.seconds, 1),
        "requests_per_s": round(requests_n / tally.seconds, 1),
        "latency_ms": {"p50": ms(50), "p90": ms(90), "p99": ms(99), "max": ms(100)},
        "worker_rss_mb_after_warmup": {pid: round(v / 2**20, 1) for pid, v in rss_warm.items()},
        "worker_rss_mb_after_soak": {pid: round(v / 2**20, 1) for pid, v in rss_after.items()},
        "worker_restarted": tsctl.any_restarted(workers_warm, workers_after),
        "rss_growth": None if growth is None else round(growth, 4),
        "examples": tally.examples,
    }


def failures(report: dict[str, Any], max_rss_growth: float) -> list[str]:
    """What makes the soak fail; empty when it held."""
    problems = [
        f"{report[key]} {what}"
        for key, what in (("server_errors", "5xx answers"), ("mismatches", "mismatches"), ("lost", "lost requests"))
        if report[key]
    ]
    if report["worker_restarted"]:
        problems.append("a worker restarted during the soak")
    elif report["rss_growth"] is not None and report["rss_growth"] > max_rss_growth:
        problems.append(f"worker memory grew {100 * report['rss_growth']:.1f}% (limit {100 * max_rss_growth:.0f}%)")
    return problems
