"""Hostile requests interleaved with valid ones against a real TorchServe: a short run of
scripts/fuzz.py (the full one, 10,000 requests, is in docs/reliability.md).

The model is served with the shipped request limits (text length, texts per request, token
budget, answer size) and a 50 ms batch delay, so hostile requests share batches with good ones.
"""

from __future__ import annotations

import json

import pytest
import yaml

from drills import fuzz, soak
from scripts import fuzz as fuzz_cli
from serving import paths, tsctl
from tests.integration.conftest import TEST_MODEL_CONFIG

REQUESTS, CONCURRENCY = 800, 16
SHIPPED = yaml.safe_load(paths.MODEL_CONFIG.read_text(encoding="utf-8"))["handler"]
LIMITS = ("max_text_chars", "max_texts_per_request", "max_request_tokens", "max_response_bytes")
CONFIG = {
    **TEST_MODEL_CONFIG,
    "minWorkers": 2,
    "maxWorkers": 2,
    "handler": {**TEST_MODEL_CONFIG["handler"], **{key: SHIPPED[key] for key in LIMITS}},
}


@pytest.fixture(scope="module")
def fuzz_model(server, tiny_checkpoint_dir, build_archive):
    name = tsctl.register(server, build_archive(tiny_checkpoint_dir, "fuzz_ner", CONFIG))
    yield name
    tsctl.unregister(server, name)


@pytest.fixture(scope="module")
def report(server, fuzz_model, tmp_path_factory) -> dict:
    """One short fuzz run through the CLI (its exit code included), read back from --report."""
    path = tmp_path_factory.mktemp("fuzz") / "report.json"
    max_request_size = tsctl.read_properties(paths.CONFIG_DIR / "config.properties")["max_request_size"]
    code = fuzz_cli.main(
        [
            "--run-dir",
            str(server.run_dir),
            "--model",
            fuzz_model,
            "--requests",
            str(REQUESTS),
            "--concurrency",
            str(CONCURRENCY),
            "--max-chars",
            str(SHIPPED["max_text_chars"]),
            "--max-texts",
            str(SHIPPED["max_texts_per_request"]),
            "--max-request-size",
            max_request_size,
            "--report",
            str(path),
        ]
    )
    report = json.loads(path.read_text(encoding="utf-8"))
    report["exit_code"] = code
    return report


def test_every_valid_request_gets_its_own_answer_whatever_its_batch_mates_send(report):
    assert report["valid_failed"] == 0, report["examples"]
    assert report["outcomes"].get("ok") == report["valid"] > REQUESTS // 2


def test_every_hostile_request_is_refused_with_a_4xx(report):
    assert report["hostile_not_refused"] == 0, report["examples"]
    assert set(report["hostile_classes"]) == {h.name for h in fuzz.HOSTILE}
    assert report["statuses"] == {"2xx": report["valid"], "4xx": report["hostile"]}


def test_no_worker_restarted(report):
    assert not report["worker_restarted"] and len(report["workers_after"]) == 2
    assert report["exit_code"] == 0 and report["verdict"] == "held"


def test_the_checker_counts_a_5xx_for_a_valid_request_as_a_failure():
    """valid_failed == 0 means something only if a failed valid request would be counted."""
    case = fuzz.make_cases(1, 0.0, fuzz.HOSTILE, {"max_chars": 10, "max_texts": 2, "max_request_size": 100}, 0)[0]
    assert soak.judge(case, 503, b"") == "5xx" and soak.judge(case, 200, b'{"sentence": "other"}') == "mismatch"
