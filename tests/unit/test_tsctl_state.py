"""tsctl.save_state when several tsctl processes save at once (three registrations started
together, as tests/integration/test_faults.py runs them): each writes the whole server's state
through a temp file of its own, so none finds its file moved by another. What is saved, and
restored after a restart, is tested against a real TorchServe in test_operations.py."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from serving import tsctl


def test_concurrent_saves_all_succeed_and_leave_one_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tsctl, "list_models", lambda server: [])  # a server with nothing registered
    server = tsctl.Server(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: tsctl.save_state(server), range(400)))  # raises if any save failed
    assert json.loads((tmp_path / tsctl.STATE_FILE).read_text(encoding="utf-8")) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [tsctl.STATE_FILE]  # no temp file left
