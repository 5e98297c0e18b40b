#!/usr/bin/env python3
"""Tag Korean sentences with the served model and print the entities readably.

    python scripts/predict.py "이순신은 조선 중기의 무신이다."
    echo "서울에서 만났다." | python scripts/predict.py -          # one sentence a line
    python scripts/predict.py --json "문장"                        # the raw JSON answer

Every call has a timeout and is retried (with back-off) when TorchServe is briefly
unavailable (connection refused, 503 while a worker restarts, 500/507 "Worker died."), so no
request is lost silently: a request that still fails after the retries is reported and the exit
code is non-zero. The read timeout matters most: TorchServe 0.12 never answers the requests a
worker was gathering into its batch when it died (docs/reliability.md); only the timeout and
the resend recover them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import repo

import requests

import tsctl

# 503: no worker free or worker restarting; 500 and 507: "Worker died." for the requests of the
# batch a dead worker held (507 when it was SIGKILLed, e.g. by the OOM killer); 502/504: a proxy.
RETRY_STATUSES = {500, 502, 503, 504, 507}


def predict_with_retry(server: tsctl.Server, model: str, payload, retries: int = 3, timeout: float = 30,
                       backoff: float = 0.5, on_retry: Callable[[str], None] | None = None) -> requests.Response:
    """POST with a timeout; resend on connection errors, timeouts and the statuses above.

    NER is a pure function of its input, so resending a request is always safe. ``on_retry``
    is told why before each resend ("HTTP 507", "ReadTimeout", ...).
    """
    for attempt in range(retries + 1):
        try:
            resp = tsctl.predict(server, model, payload, timeout=timeout)
            if resp.status_code not in RETRY_STATUSES or attempt == retries:
                return resp
            reason = f"HTTP {resp.status_code}"
        except (requests.ConnectionError, requests.Timeout) as err:
            if attempt == retries:
                raise
            reason = type(err).__name__
        if on_retry:
            on_retry(reason)
        time.sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


def format_answer(answer: dict) -> str:
    lines = [answer["sentence"]]
    if not answer["entities"]:
        lines.append("  (no entities)")
    for ent in answer["entities"]:
        lines.append(f"  {ent['text']}\t{ent['label_name']} ({ent['label']})\t[{ent['start']}:{ent['end']}]\t{ent['score']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sentences", nargs="+", help="sentences to tag; '-' reads one a line from stdin")
    parser.add_argument("--model", default="kor_ner", help="model name (default: %(default)s)")
    parser.add_argument("--run-dir", type=Path, default=repo.RUN_DIR, help="TorchServe's run dir, for its address and keys")
    parser.add_argument("--json", action="store_true", help="print TorchServe's JSON answer")
    parser.add_argument("--timeout", type=float, default=30, help="seconds per attempt (default: %(default)s)")
    parser.add_argument("--retries", type=int, default=3, help="resends on 503/connection errors (default: %(default)s)")
    args = parser.parse_args(argv)

    sentences = [line.strip() for line in sys.stdin if line.strip()] if args.sentences == ["-"] else args.sentences
    server = tsctl.Server.load(args.run_dir)
    failed = 0
    for sentence in sentences:
        try:
            resp = predict_with_retry(server, args.model, sentence, args.retries, args.timeout)
        except requests.RequestException as err:
            print(f"predict: error: {err}", file=sys.stderr)
            failed += 1
            continue
        if resp.status_code != 200:
            # TorchServe's own 413 has an empty body: say what it means
            detail = resp.text.strip() or ("the text is larger than TorchServe's max_request_size"
                                           if resp.status_code == 413 else "(empty answer)")
            print(f"predict: HTTP {resp.status_code}: {detail}", file=sys.stderr)
            failed += 1
        elif args.json:
            print(json.dumps(resp.json(), ensure_ascii=False, indent=2))
        else:
            print(format_answer(resp.json()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
