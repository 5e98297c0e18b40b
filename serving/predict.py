"""The project's client for a served model: a timeout on every call, resends when TorchServe is
briefly unavailable, and the answer printed readably.

NER is a pure function of its input, so resending a request is always safe. The read timeout
matters most: TorchServe 0.12 never answers the requests a worker was gathering into its batch
when it died (docs/reliability.md); only the timeout and the resend recover them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import requests

from serving import tsctl
from serving.retry import retry

# 503: no worker free or worker restarting; 500 and 507: "Worker died." for the requests of the
# batch a dead worker held (507 when it was SIGKILLed, e.g. by the OOM killer); 502/504: a proxy.
RETRY_STATUSES = {500, 502, 503, 504, 507}


def predict_with_retry(
    server: tsctl.Server,
    model: str,
    payload,
    retries: int = 3,
    timeout: float = 30,
    backoff: float = 0.5,
    on_retry: Callable[[str], None] | None = None,
) -> requests.Response:
    """POST with a timeout; resend on connection errors, timeouts and the statuses above.

    ``on_retry`` is told why before each resend ("HTTP 507", "ReadTimeout", ...).
    """
    return retry(
        lambda: tsctl.predict(server, model, payload, timeout=timeout),
        retries + 1,
        retry_if=lambda resp: f"HTTP {resp.status_code}" if resp.status_code in RETRY_STATUSES else None,
        errors=(requests.ConnectionError, requests.Timeout),
        backoff=backoff,
        on_retry=(lambda reason, _: on_retry(reason)) if on_retry else None,
    )


def format_answer(answer: dict) -> str:
    """The sentence, then one line per entity: text, type, [start:end], score."""
    lines = [answer["sentence"]]
    if not answer["entities"]:
        lines.append("  (no entities)")
    for ent in answer["entities"]:
        lines.append(
            f"  {ent['text']}\t{ent['label_name']} ({ent['label']})\t[{ent['start']}:{ent['end']}]\t{ent['score']:.3f}"
        )
    return "\n".join(lines)


def tag(
    server: tsctl.Server,
    model: str,
    sentences: list[str],
    retries: int = 3,
    timeout: float = 30,
    as_json: bool = False,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = print,
) -> int:
    """Tag each sentence, printing its entities (or the raw JSON); the number that failed."""
    failed = 0
    for sentence in sentences:
        try:
            resp = predict_with_retry(server, model, sentence, retries, timeout)
        except requests.RequestException as error:
            err(f"predict: error: {error}")
            failed += 1
            continue
        if resp.status_code != 200:
            # TorchServe's own 413 has an empty body: say what it means
            detail = resp.text.strip() or (
                "the text is larger than TorchServe's max_request_size" if resp.status_code == 413 else "(empty answer)"
            )
            err(f"predict: HTTP {resp.status_code}: {detail}")
            failed += 1
        elif as_json:
            out(json.dumps(resp.json(), ensure_ascii=False, indent=2))
        else:
            out(format_answer(resp.json()))
    return failed
