"""tsctl.scale's handling of TorchServe's answers, in-process: the one 500 it resends (a
frontend race, docs/torchserve-notes.md) and the errors it must not hide. Scaling on a
real TorchServe is tested in tests/integration/test_operations.py."""

from __future__ import annotations

import pytest
import requests

from serving import tsctl


def answer(status: int, body: str) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body.encode()
    return resp


RACE = answer(500, '{"code": 500, "type": "ConcurrentModificationException"}')
OK = answer(200, '{"status": "Workers scaled to 1 for model: tiny_ner"}')


class FakeServer:
    """Answers the scale PUTs in order and records them."""

    def __init__(self, *answers: requests.Response):
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict]] = []

    def call(self, method, api, path, **kwargs):
        self.calls.append((method, path, kwargs["params"]))
        return self.answers.pop(0)


@pytest.fixture
def one_ready_worker(monkeypatch):
    monkeypatch.setattr(tsctl, "save_state", lambda server: None)
    monkeypatch.setattr(
        tsctl, "describe", lambda server, model, version=None: [{"workers": [{"pid": 7, "status": "READY"}]}]
    )
    monkeypatch.setattr(tsctl, "ready_workers", lambda server, model, version=None: 1)


def test_scale_resends_after_the_concurrent_modification_race(one_ready_worker, capsys):
    server = FakeServer(RACE, OK)
    tsctl.scale(server, "tiny_ner", 1, timeout=5)
    assert [c[2] for c in server.calls] == [{"min_worker": 1, "max_worker": 1, "synchronous": "true"}] * 2
    assert "ConcurrentModificationException" in capsys.readouterr().err


def test_scale_gives_up_after_three_races(one_ready_worker):
    server = FakeServer(RACE, RACE, RACE, OK)
    with pytest.raises(tsctl.TsError, match=r"HTTP 500.*ConcurrentModificationException"):
        tsctl.scale(server, "tiny_ner", 1, timeout=5)
    assert len(server.calls) == tsctl.SCALE_ATTEMPTS == 3


def test_scale_does_not_resend_other_errors(one_ready_worker):
    server = FakeServer(answer(500, '{"code": 500, "type": "InternalServerException"}'), OK)
    with pytest.raises(tsctl.TsError, match="InternalServerException"):
        tsctl.scale(server, "tiny_ner", 1, timeout=5)
    assert len(server.calls) == 1
