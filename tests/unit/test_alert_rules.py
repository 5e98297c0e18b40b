"""The alert and recording rules (config/k8s/prometheus-rules.yaml, a PrometheusRule) checked by
Prometheus' own promtool (Debian's prometheus package; .ci/run installs it): the rule groups
parse (``promtool check rules``), and promtool's unit tests (tests/unit/prometheus_rules_test.yaml)
make each alert fire where it should and stay quiet beside it. The groups are taken out of the
PrometheusRule here, so the rules live in one file. A real Prometheus evaluating them against a
served model is tests/integration/test_prometheus.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from serving import paths

RULES = paths.CONFIG_DIR / "k8s" / "prometheus-rules.yaml"
UNIT_TESTS = Path(__file__).with_name("prometheus_rules_test.yaml")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


def rule_groups() -> dict:
    """The PrometheusRule's spec: ``{"groups": [...]}``, what a Prometheus rule file holds."""
    rule = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def write_rule_file(folder: Path) -> Path:
    """The rule groups as a Prometheus rule file in ``folder``."""
    path = folder / "kor-ner.rules.yaml"
    path.write_text(yaml.safe_dump(rule_groups(), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def alerts() -> list[str]:
    return [r["alert"] for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r]


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL, "promtool not installed"
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)


@needs_promtool
def test_promtool_reads_the_rules(tmp_path):
    done = promtool("check", "rules", str(write_rule_file(tmp_path)))
    assert done.returncode == 0 and "SUCCESS: 9 rules found" in done.stdout, done.stdout + done.stderr


@needs_promtool
def test_each_alert_fires_and_stays_quiet_in_promtools_unit_tests(tmp_path):
    tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))
    tests["rule_files"] = [str(write_rule_file(tmp_path))]
    path = tmp_path / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False, allow_unicode=True), encoding="utf-8")
    done = promtool("test", "rules", str(path))
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    """The unit tests cover each alert both ways (a new alert without tests fails here), and
    where one fires, another series beside it stays quiet."""
    tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in alerts():
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine) and any(not c["exp_alerts"] for c in mine), name
    assert len(alerts()) == 4


def test_every_alert_says_how_bad_and_what():
    for group in rule_groups()["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]
                assert rule["for"], rule["alert"]  # never on a single evaluation
            else:
                assert rule["record"].startswith("kor_ner:")  # level:metric:operations
