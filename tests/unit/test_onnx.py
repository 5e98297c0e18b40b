"""The optional ONNX Runtime path: export, load, and the same answers as torch."""

from __future__ import annotations

import json
import shutil
import zipfile
from typing import Any

import pytest
import yaml

import ner_core
import ner_model
import ner_onnx
from ner_settings import HandlerSettings
from serving import package_model
from serving.package_model import PackageSpec

# Short, long (several windows at max_seq_length 32) and mixed lengths in one batch, so rows
# are padded and the exported attention mask matters.
TEXTS = [
    "서울에서 만났다.",
    "이순신은 조선 중기의 무신이다.",
    "김민수는 어제 부산에 갔다. " * 12,
    "셋",
    "한국은행은 기준금리를 연 3.5%로 동결했다고 31일 밝혔다.",
]
SETTINGS: dict[str, Any] = dict(max_seq_length=32, window_stride=8, max_batch_tokens=4096, torch_threads=1)


@pytest.fixture(scope="module")
def onnx_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny staged model plus both ONNX files, as packaging writes them."""
    out = tmp_path_factory.mktemp("tiny-onnx")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    torch_model = ner_model.load_model(out, HandlerSettings(**SETTINGS)).model
    for quantize in ("none", "int8"):
        ner_onnx.export(torch_model, out, quantize)
    return out


def predictions(model_dir, **settings):
    ner = ner_model.load_model(model_dir, HandlerSettings(**{**SETTINGS, **settings}))
    return ner, ner_core.predict(ner, TEXTS)


def test_onnx_fp32_gives_torch_answers_on_padded_batches(onnx_model_dir):
    _, ref = predictions(onnx_model_dir)
    ner, got = predictions(onnx_model_dir, runtime="onnxruntime")
    assert isinstance(ner.model, ner_onnx.OnnxTokenClassifier)
    options = ner.model.session.get_session_options()
    assert (options.intra_op_num_threads, options.get_session_config_entry("session.intra_op.allow_spinning")) == (
        1,
        "0",
    )
    assert [p.windows for p in got] == [p.windows for p in ref] and max(p.windows for p in got) > 1
    for r, g in zip(ref, got, strict=True):
        assert g.label_ids == r.label_ids
        assert g.probs == pytest.approx(r.probs, abs=1e-4)


def test_padding_does_not_change_an_onnx_row(onnx_model_dir):
    """A short row alone and padded beside a long one: same tags, same probabilities."""
    ner = ner_model.load_model(onnx_model_dir, HandlerSettings(**SETTINGS, runtime="onnxruntime"))
    short, long = [ner_core.encode_texts(ner.tokenizer, [t])[0][0] for t in (TEXTS[0], TEXTS[4])]
    alone_ids, alone_probs, _ = ner_core.forward_distributions(ner, [short])
    ids, probs, _ = ner_core.forward_distributions(ner, [short, long])
    assert len(long) > len(short)
    assert ids[0, : len(short)].tolist() == alone_ids[0].tolist()
    assert probs[0, : len(short)].tolist() == pytest.approx(alone_probs[0].tolist(), abs=1e-5)


def test_onnx_int8_is_a_quantized_file_that_answers_alike(onnx_model_dir):
    fp32, int8 = onnx_model_dir / "model.onnx", onnx_model_dir / "model.int8.onnx"
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights
    _, ref = predictions(onnx_model_dir, runtime="onnxruntime")
    _, got = predictions(onnx_model_dir, runtime="onnxruntime", quantize="int8")
    assert [p.tokens for p in got] == [p.tokens for p in ref]
    deltas = [abs(a - b) for r, g in zip(ref, got, strict=True) for a, b in zip(r.probs, g.probs, strict=True)]
    assert max(deltas) < 0.05, f"int8 moved a top probability by {max(deltas):.3f}"


def test_missing_onnx_file_says_how_to_package(tiny_model_dir):
    with pytest.raises(ner_model.ModelLoadError, match=r"model\.int8\.onnx.*runtime: onnxruntime, quantize: int8"):
        ner_model.load_model(tiny_model_dir, HandlerSettings(runtime="onnxruntime", quantize="int8"))


def test_onnx_classifier_width_must_match_the_label_map(onnx_model_dir, tmp_path):
    shutil.copytree(onnx_model_dir, tmp_path, dirs_exist_ok=True)
    labels = (tmp_path / "label_map.txt").read_text(encoding="utf-8").splitlines()[:-1]
    (tmp_path / "label_map.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {str(i): label for i, label in enumerate(labels)}
    config["label2id"] = {label: i for i, label in enumerate(labels)}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(
        ner_model.ModelLoadError, match=f"{len(labels)} labels but the classifier has {len(labels) + 1} rows"
    ):
        ner_model.load_model(tmp_path, HandlerSettings(runtime="onnxruntime"))


def test_a_corrupt_onnx_file_is_a_load_error(onnx_model_dir, tmp_path):
    shutil.copytree(onnx_model_dir, tmp_path, dirs_exist_ok=True)
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ner_model.ModelLoadError, match=r"cannot load .*model\.onnx in ONNX Runtime"):
        ner_model.load_model(tmp_path, HandlerSettings(runtime="onnxruntime"))


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"runtime": "tensorrt"}, "runtime must be one of"),
        ({"runtime": "onnxruntime", "dtype": "bfloat16"}, "dtype bfloat16 runs on torch"),
    ],
)
def test_runtime_settings_are_checked(raw, message):
    with pytest.raises(ValueError, match=message):
        HandlerSettings.from_mapping(raw)


@pytest.mark.parametrize("quantize, weights", [("none", "model.onnx"), ("int8", "model.int8.onnx")])
def test_packaging_with_onnxruntime_ships_the_onnx_file_only(tiny_checkpoint_dir, tmp_path, quantize, weights):
    config = tmp_path / "model-config.yaml"
    config.write_text(yaml.safe_dump({"minWorkers": 1, "handler": {"runtime": "onnxruntime", "quantize": quantize}}))
    mar = package_model.package(
        PackageSpec(tiny_checkpoint_dir, name="t", model_config=config, export_path=tmp_path / "store")
    )
    names = set(zipfile.ZipFile(mar).namelist())
    assert weights in names and "ner_onnx.py" in names
    assert not names & {"model.safetensors", "model.onnx", "model.int8.onnx"} - {weights}
