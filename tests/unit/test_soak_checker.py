"""The soak's checker, without a server (the soak itself: tests/integration/test_soak.py)."""

from __future__ import annotations

import json
import random

from drills import soak


def test_the_checker_catches_a_swapped_answer():
    """Zero mismatches means something only if judge() would see one: answers of other texts."""
    rng = random.Random(1)
    case = next(c for c in (soak.make_case(i, rng, 200, 20000) for i in range(50)) if c.kind == "list")
    answer = [{"sentence": t} for t in case.texts]
    assert soak.judge(case, 200, json.dumps(answer).encode()) == "ok"
    assert soak.judge(case, 200, json.dumps(answer[::-1]).encode()) == "mismatch"
    assert soak.judge(case, 200, json.dumps(answer[:-1]).encode()) == "mismatch"
    assert soak.judge(case, 503, b"") == "5xx"
    invalid = soak.Case("invalid blank", b" ", "text/plain")
    assert soak.judge(invalid, 400, b'{"error": "blank"}') == "invalid_4xx"
    assert soak.judge(invalid, 200, b'{"sentence": " "}') == "invalid_not_4xx"
    assert soak.judge(invalid, 413, b"") == "invalid_not_4xx"  # a 4xx without the handler's JSON
