"""serving.retry.retry, the one retry loop the client, tsctl.scale and the benchmark use."""

from __future__ import annotations

import pytest

from serving.retry import retry


def calls(*outcomes):
    """A call that returns (or raises) each outcome in turn, and the list of attempts made."""
    made = []

    def call():
        made.append(len(made) + 1)
        outcome = outcomes[len(made) - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return call, made


def test_retries_while_the_answer_says_so_then_returns_it():
    call, made = calls(503, 503, 200)
    told = []
    answer = retry(
        call,
        5,
        retry_if=lambda status: f"HTTP {status}" if status == 503 else None,
        on_retry=lambda reason, n: told.append((reason, n)),
    )
    assert answer == 200 and made == [1, 2, 3]
    assert told == [("HTTP 503", 1), ("HTTP 503", 2)]


def test_the_last_answer_is_returned_when_attempts_run_out():
    call, made = calls(503, 503)
    assert retry(call, 2, retry_if=lambda status: "busy" if status == 503 else None) == 503
    assert made == [1, 2]


def test_listed_errors_are_retried_and_the_last_one_raised():
    call, made = calls(ConnectionError("refused"), TimeoutError("slow"), ConnectionError("refused again"))
    told = []
    with pytest.raises(ConnectionError, match="refused again"):
        retry(call, 3, errors=(ConnectionError, TimeoutError), on_retry=lambda reason, n: told.append(reason))
    assert made == [1, 2, 3] and told == ["ConnectionError", "TimeoutError"]


def test_other_errors_are_not_retried():
    call, made = calls(KeyError("bug"), 200)
    with pytest.raises(KeyError):
        retry(call, 3, errors=(ConnectionError,))
    assert made == [1]


def test_backoff_doubles(monkeypatch):
    slept = []
    monkeypatch.setattr("serving.retry.time.sleep", slept.append)
    call, _ = calls(1, 1, 1, 0)
    assert retry(call, 4, retry_if=lambda v: "again" if v else None, backoff=0.5) == 0
    assert slept == [0.5, 1.0, 2.0]
