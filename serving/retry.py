"""The one retry loop: call, and call again while the answer or the error says it may help."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retry(
    call: Callable[[], T],
    attempts: int,
    retry_if: Callable[[T], str | None] = lambda _: None,
    errors: tuple[type[BaseException], ...] = (),
    error_reason: Callable[[BaseException], str] = lambda err: type(err).__name__,
    backoff: float = 0.0,
    on_retry: Callable[[str, int], None] | None = None,
) -> T:
    """``call()`` up to ``attempts`` times; the last answer is returned, the last error raised.

    Another attempt follows when ``retry_if(answer)`` gives a reason (a string), or when the call
    raised one of ``errors`` (reason: ``error_reason(err)``). Before it, ``on_retry(reason, n)``
    is told why (``n``: the attempt that failed, from 1), then ``backoff * 2**(n - 1)`` seconds pass.
    """
    for attempt in range(1, attempts + 1):
        try:
            answer = call()
        except errors as err:
            if attempt == attempts:
                raise
            reason = error_reason(err)
        else:
            asked = retry_if(answer)
            if asked is None or attempt == attempts:
                return answer
            reason = asked
        if on_retry:
            on_retry(reason, attempt)
        if backoff:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise ValueError(f"attempts must be at least 1, got {attempts}")
