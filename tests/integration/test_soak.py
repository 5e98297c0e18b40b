"""Integrity under load: a short run of scripts/soak.py against the tiny model on a real TorchServe.

The full run (20,000 requests at concurrency 32, docs/reliability.md) uses the same script.
The checker itself, without a server: tests/unit/test_soak_checker.py.
"""

from __future__ import annotations

import json

import pytest

from scripts import soak as soak_cli
from tests.integration.conftest import TEST_MODEL_CONFIG

REQUESTS, CONCURRENCY, WARMUP = 600, 32, 300


@pytest.fixture(scope="module")
def report(server, tiny_model, tmp_path_factory) -> dict:
    """One short soak through the CLI (its exit code included), read back from --report."""
    path = tmp_path_factory.mktemp("soak") / "report.json"
    code = soak_cli.main(
        [
            "--run-dir",
            str(server.run_dir),
            "--model",
            tiny_model,
            "--requests",
            str(REQUESTS),
            "--concurrency",
            str(CONCURRENCY),
            "--warmup",
            str(WARMUP),
            "--report",
            str(path),
            "--max-chars",
            str(TEST_MODEL_CONFIG["handler"]["max_text_chars"]),
        ]
    )
    report = json.loads(path.read_text(encoding="utf-8"))
    report["exit_code"] = code
    return report


def test_no_5xx_no_mismatch_nothing_lost(report):
    assert (report["server_errors"], report["mismatches"], report["lost"]) == (0, 0, 0), report["examples"]
    assert report["exit_code"] == 0 and report["verdict"] == "held"


def test_every_valid_request_answered_with_its_own_text_and_every_invalid_one_a_4xx(report):
    kinds = report["kinds"]
    assert sum(kinds.values()) == REQUESTS and all(kinds.get(k, 0) > 0 for k in ("short", "list", "long", "invalid"))
    assert report["outcomes"] == {"ok": REQUESTS - kinds["invalid"], "invalid_4xx": kinds["invalid"]}
    assert report["statuses"] == {"2xx": REQUESTS - kinds["invalid"], "4xx": kinds["invalid"]}


def test_worker_memory_settles_after_warmup(report):
    assert not report["worker_restarted"]
    assert abs(report["rss_growth"]) <= 0.10, (report["worker_rss_mb_after_warmup"], report["worker_rss_mb_after_soak"])
