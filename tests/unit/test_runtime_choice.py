"""runtime: auto (the shipped default): ONNX Runtime fp32 on a CPU, torch on a GPU; the archive
holds both files; packaging refuses an ONNX export whose tags differ from torch fp32's and
measures the lossy paths; bf16 on a CPU only where the instructions are."""

from __future__ import annotations

import dataclasses
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import ts
import yaml
from ts.context import Context
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

import ner_cpu
import ner_model
import ner_onnx
from ner_handler import KoreanNerHandler
from ner_settings import HandlerSettings
from serving import agreement, corpus, package_model
from serving.package_model import PackageSpec, PackagingError

METRICS_YAML = Path(ts.__file__).parent / "configs" / "metrics.yaml"
SMALL: dict[str, Any] = {"max_seq_length": 32, "window_stride": 8, "torch_threads": 1}
CPU, GPU = torch.device("cpu"), torch.device("cuda:0")
NO_BF16 = frozenset({"avx2", "avx512f", "avx512_vnni"})
BF16 = NO_BF16 | {"avx512_bf16"}


def test_the_shipped_default_is_auto():
    assert HandlerSettings().runtime == "auto"
    config = yaml.safe_load(package_model.paths.MODEL_CONFIG.read_text(encoding="utf-8"))
    assert config["handler"]["runtime"] == "auto" and config["handler"].get("quantize", "none") == "none"


@pytest.mark.parametrize(
    "settings, device, has_onnx, expected",
    [
        ({}, CPU, True, "onnxruntime"),  # the default on a CPU
        ({}, GPU, True, "torch"),  # the default on a GPU
        ({}, CPU, False, "torch"),  # an archive packaged with runtime: torch
        ({"quantize": "int8"}, CPU, False, "onnxruntime"),  # int8 is ONNX Runtime's: a missing file is an error later
        ({"dtype": "bfloat16"}, CPU, True, "torch"),
        ({"dtype": "bfloat16"}, GPU, True, "torch"),
        ({"runtime": "torch"}, CPU, True, "torch"),
        ({"runtime": "onnxruntime"}, GPU, True, "onnxruntime"),
    ],
)
def test_auto_picks_onnx_runtime_on_a_cpu_and_torch_on_a_gpu(settings, device, has_onnx, expected):
    assert ner_model.serving_runtime(HandlerSettings(**settings), device, has_onnx) == expected


@pytest.mark.parametrize(
    "settings, files",
    [
        ({}, ["model.safetensors", "model.onnx"]),
        ({"quantize": "int8"}, ["model.safetensors", "model.int8.onnx"]),
        ({"dtype": "bfloat16"}, ["model.safetensors"]),
        ({"runtime": "torch"}, ["model.safetensors"]),
        ({"runtime": "onnxruntime"}, ["model.onnx"]),
    ],
)
def test_the_archive_holds_what_each_device_needs(settings, files):
    assert ner_model.archive_files(HandlerSettings(**settings)) == files


@pytest.fixture(scope="module")
def auto_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as an auto archive unpacks: safetensors and model.onnx."""
    out = tmp_path_factory.mktemp("tiny-auto")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    ner_onnx.export(ner_model.load_model(out, HandlerSettings(runtime="torch")).model, out, "none")
    return out


def context(model_dir: Path, gpu_id=None) -> Context:
    return Context(
        "tiny",
        str(model_dir),
        {},
        8,
        gpu_id,
        "0.12.0",
        metrics=MetricsCacheYamlImpl(str(METRICS_YAML)),
        model_yaml_config={"handler": SMALL},
    )


def test_a_cpu_worker_serves_the_onnx_file(auto_model_dir):
    handler = KoreanNerHandler()
    handler.initialize(context(auto_model_dir))
    assert handler.settings.runtime == "auto"
    assert isinstance(handler.ner.model, ner_onnx.OnnxTokenClassifier) and handler.ner.settings.runtime == "onnxruntime"


def test_a_gpu_worker_serves_torch(auto_model_dir, monkeypatch):
    """A fake GPU host: the context names gpu_id 0, so the same archive is served by torch on cuda:0."""
    chosen = []
    real = ner_model.load_model
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def load(model_dir, settings, device):
        chosen.append((device, ner_model.serving_runtime(settings, device, (Path(model_dir) / "model.onnx").is_file())))
        return real(model_dir, dataclasses.replace(settings, runtime="torch"))  # on the CPU: there is no GPU here

    monkeypatch.setattr(ner_model, "load_model", load)
    handler = KoreanNerHandler()
    handler.initialize(context(auto_model_dir, gpu_id=0))
    assert chosen == [(GPU, "torch")]
    assert isinstance(handler.ner.model, torch.nn.Module)


def test_auto_without_an_onnx_file_serves_torch_and_says_so(tiny_model_dir, caplog):
    ner = ner_model.load_model(tiny_model_dir, HandlerSettings(**SMALL))
    assert isinstance(ner.model, torch.nn.Module) and ner.settings.runtime == "torch"
    assert "has no model.onnx" in caplog.text


# --------------------------------------------------------------------------- packaging


def write_config(tmp_path: Path, **handler) -> Path:
    path = tmp_path / "model-config.yaml"
    path.write_text(yaml.safe_dump({"minWorkers": 1, "handler": {**SMALL, **handler}}))
    return path


def test_packaging_auto_archives_both_files_after_checking_the_tags(tiny_checkpoint_dir, tmp_path, capsys):
    mar = package_model.package(
        PackageSpec(tiny_checkpoint_dir, name="t", model_config=write_config(tmp_path), export_path=tmp_path / "store")
    )
    names = set(zipfile.ZipFile(mar).namelist())
    assert {"model.safetensors", "model.onnx"} <= names and "model.int8.onnx" not in names
    err = capsys.readouterr().err
    assert "ONNX Runtime fp32 gives torch fp32's tag on all" in err
    assert f"of the {len(corpus.SAMPLE_SENTENCES)} sample sentences" in err


def test_packaging_refuses_an_onnx_export_whose_tags_differ(tiny_checkpoint_dir, tmp_path, monkeypatch):
    """An exporter that gets one label's bias wrong: the archive must not be written."""
    real = ner_onnx.export

    def skewed(model, out_dir, quantize):
        model = type(model)(model.config)
        model.load_state_dict(torch_model_state)
        with torch.no_grad():
            model.classifier.bias[5] += 50.0
        return real(model.eval(), out_dir, quantize)

    torch_model_state = ner_model.load_model(
        packaging_staged(tiny_checkpoint_dir, tmp_path), HandlerSettings(runtime="torch")
    ).model.state_dict()
    monkeypatch.setattr(ner_onnx, "export", skewed)
    store = tmp_path / "store"
    with pytest.raises(
        PackagingError,
        match=r"ONNX Runtime fp32 does not give torch fp32's tags: \d+ of \d+ wordpieces "
        r"of the sample sentences differ \(first: text #0, .*not archiving",
    ):
        package_model.package(
            PackageSpec(tiny_checkpoint_dir, name="t", model_config=write_config(tmp_path), export_path=store)
        )
    assert not (store / "t.mar").exists()


def packaging_staged(checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "staged"
    out.mkdir()
    package_model.stage(PackageSpec(checkpoint), out)
    return out


def test_packaging_int8_prints_agreement_and_f1_on_the_sample_sentences(tiny_checkpoint_dir, tmp_path, capsys):
    spec = PackageSpec(
        tiny_checkpoint_dir,
        name="t",
        model_config=write_config(tmp_path, quantize="int8"),
        export_path=tmp_path / "store",
        accuracy_corpus=None,
    )
    names = set(zipfile.ZipFile(package_model.package(spec)).namelist())
    assert {"model.safetensors", "model.int8.onnx"} <= names
    err = capsys.readouterr().err
    assert (
        f"ONNX Runtime int8 against torch fp32 on {len(corpus.SAMPLE_SENTENCES)} built-in sample sentences: "
        "token-tag agreement "
    ) in err
    assert "entity F1 against fp32's entities" in err and "against the corpus" not in err


def test_packaging_int8_scores_both_against_a_tagged_corpus(tiny_checkpoint_dir, tmp_path, capsys):
    tagged = tmp_path / "val.txt"
    lines = [
        "이순신은 조선 중기의 무신이다.\u241e<이순신:PER>은 <조선:LOC> 중기의 무신이다.",
        "서울에서 만났다.\u241e<서울:LOC>에서 만났다.",
        "오늘 왔다.\u241e<오늘:DAT> 왔다.",
    ]
    tagged.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = PackageSpec(
        tiny_checkpoint_dir,
        name="t",
        model_config=write_config(tmp_path, quantize="int8"),
        export_path=tmp_path / "store",
        accuracy_corpus=tagged,
        accuracy_limit=2,
    )
    package_model.package(spec)
    err = capsys.readouterr().err
    assert "ONNX Runtime int8 against torch fp32 on 2 sentences of val.txt" in err
    assert "entity F1 against the corpus" in err and "points)" in err


def test_agreement_of_a_model_with_itself_is_exact(tiny_model_dir):
    ner = ner_model.load_model(tiny_model_dir, HandlerSettings(runtime="torch", **SMALL))
    result = agreement.compare(ner, ner, corpus.SAMPLE_SENTENCES)
    assert result.exact and result.rate == 1.0 and result.entity_f1 == 1.0 and result.first_difference is None
    assert result.tokens > 100


# --------------------------------------------------------------------------- bf16 on a CPU


def test_bf16_on_a_cpu_without_the_instructions_is_refused_naming_them():
    with pytest.raises(
        ner_model.ModelLoadError,
        match=r"dtype: bfloat16 needs a CPU with AVX512-BF16 or AMX, "
        r"and this one \(Test CPU\) has neither.*set dtype: float32",
    ):
        ner_model.check_bf16_cpu(NO_BF16, "Test CPU")
    ner_model.check_bf16_cpu(BF16, "Test CPU")
    ner_model.check_bf16_cpu(NO_BF16 | {"amx_bf16"}, "Test CPU")


def test_loading_bf16_on_such_a_cpu_fails_at_load(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(ner_cpu, "cpuinfo_text", lambda: "model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    with pytest.raises(ner_model.ModelLoadError, match=r"this one \(Old CPU\) has neither"):
        ner_model.load_model(tiny_model_dir, HandlerSettings(dtype="bfloat16", **SMALL))


def test_bf16_on_a_cpu_with_the_instructions_runs_in_bf16(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(
        ner_cpu, "cpuinfo_text", lambda: "model name\t: New CPU\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    )
    ner = ner_model.load_model(tiny_model_dir, HandlerSettings(dtype="bfloat16", **SMALL))
    assert ner.settings.runtime == "torch"
    assert next(ner.model.parameters()).dtype == torch.bfloat16
    ref = ner_model.load_model(tiny_model_dir, HandlerSettings(runtime="torch", **SMALL))
    result = agreement.compare(ref, ner, corpus.SAMPLE_SENTENCES)
    assert result.rate > 0.9  # bf16 keeps 8 bits of mantissa: a few near-ties may flip


# --------------------------------------------------------------------------- int8 is ONNX Runtime's


def test_int8_on_torch_is_refused_with_the_runtime_that_runs_it():
    """int8 is ONNX Runtime's dynamic quantization; torch's maintained int8 path (torchao) ran
    slower than torch fp32 on the CPUs measured (docs/performance.md), so it is not offered."""
    with pytest.raises(
        ValueError, match=r"quantize int8 runs on ONNX Runtime \(runtime auto on a CPU, or onnxruntime\)"
    ):
        HandlerSettings(runtime="torch", quantize="int8")
    assert HandlerSettings(runtime="auto", quantize="int8").quantize == "int8"


def test_int8_with_runtime_auto_on_a_gpu_is_refused_at_load(tiny_model_dir):
    """auto serves torch on a GPU, and torch has no int8 here: the worker refuses, naming bf16."""
    with pytest.raises(ner_model.ModelLoadError, match=r"on a GPU use dtype: bfloat16"):
        ner_model.load_model(tiny_model_dir, HandlerSettings(quantize="int8", **SMALL), device=GPU)


def test_a_cpu_worker_refuses_an_archive_whose_unused_safetensors_are_cut(auto_model_dir, tmp_path):
    """ONNX Runtime serves on a CPU, but the archive's safetensors would serve on a GPU: a cut
    file is refused at load here, not on the first GPU host (its header is read, not its data)."""
    model_dir = tmp_path / "cut"
    shutil.copytree(auto_model_dir, model_dir)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert ner_model.serving_runtime(HandlerSettings(), torch.device("cpu")) == "onnxruntime"
    with pytest.raises(ner_model.ModelLoadError, match=r"model.safetensors: Error while deserializing header"):
        ner_model.load_model(model_dir, HandlerSettings())
