"""The OpenVINO comparison harness: its ONNX Runtime cells, its ratios, and a clear message
where OpenVINO is not installed (it is not a dependency of the product)."""

from __future__ import annotations

import json
import sys

import pytest

from scripts import compare_openvino as cli

TINY = ["--models", "tiny", "--limit", "4", "--repeats", "1", "--min-seconds", "0"]


def test_unknown_engines_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--engines", "ort-fp32,ov-fp16"])
    assert (
        exit_.value.code == 2 and "choose from ort-fp32, ort-int8, ov-fp32, ov-bf16, ov-int8" in capsys.readouterr().err
    )


def test_onnx_runtime_cells_and_their_ratios(tmp_path, capsys):
    assert cli.main([*TINY, "--engines", "ort-fp32,ort-int8", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    cells = {(r["engine"], r["batch"]) for r in report["speed"]}
    assert cells == {("ort-fp32", 1), ("ort-fp32", 8), ("ort-int8", 1), ("ort-int8", 8)}
    assert all(r["vs_onnxruntime"] == 1.0 and r["sentences_per_s"] > 0 for r in report["speed"])
    assert report["machine"]["cores"] and "| tiny | ort-int8 | 8 |" in (tmp_path / "results.md").read_text(
        encoding="utf-8"
    )


def test_without_openvino_the_run_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    assert cli.main([*TINY, "--engines", "ort-fp32,ov-fp32", "--out", str(tmp_path)]) == 1
    assert "pip install --target var/openvino openvino==2026.4.1" in capsys.readouterr().err
