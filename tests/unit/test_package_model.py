"""Packaging a ratsnlp checkpoint directory into a .mar, and every refusal as one clear line."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from scripts import package_model as package_cli
from serving import package_model, paths
from study import make_checkpoint


def package(tmp_path, checkpoint, *extra):
    return package_cli.main(["--checkpoint", str(checkpoint), "--export-path", str(tmp_path / "store"), *extra])


def test_picks_the_lowest_val_loss_and_archives_safetensors(tiny_checkpoint_dir, tmp_path, capsys):
    ckpt_dir = shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt")
    best = torch.load(ckpt_dir / "epoch=0-val_loss=9.99.ckpt", weights_only=True)
    best["state_dict"]["model.classifier.bias"] = torch.full((25,), 7.0)
    torch.save(best, ckpt_dir / "epoch=3-val_loss=0.12.ckpt")
    (ckpt_dir / "epoch=0-val_loss=9.99.ckpt").rename(ckpt_dir / "epoch=1-val_loss=0.50.ckpt")

    assert package(tmp_path, ckpt_dir, "--name", "ner") == 0
    mar = tmp_path / "store" / "ner.mar"
    assert capsys.readouterr().out.strip() == str(mar)
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        assert {
            "model.safetensors",
            "config.json",
            "vocab.txt",
            "label_map.txt",
            "ner_handler.py",
            "ner_core.py",
            "ner_wire.py",
            "ner_settings.py",
            "model-config.yaml",
        } <= names
        assert not any(n.endswith((".ckpt", ".bin", ".pt")) for n in names)
        archive.extract("model.safetensors", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert torch.equal(weights["classifier.bias"], torch.full((25,), 7.0))  # from epoch=3 (val_loss 0.12)
    assert not any(k.startswith("model.") for k in weights)


def test_accepts_a_save_pretrained_directory(tiny_model_dir, tmp_path):
    assert package(tmp_path, tiny_model_dir) == 0
    assert (tmp_path / "store" / "kor_ner.mar").is_file()


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_label_map", "label map .* not found"),
        ("wrong_labels", "classifier.weight has shape \\(25, 32\\), config.json implies \\(24, 32\\)"),
        ("no_ckpt", "no checkpoint named like"),
        ("not_a_dict", "holds a list, not a checkpoint dict"),
    ],
)
def test_failures_are_one_line_and_exit_1(tiny_checkpoint_dir, tmp_path, capsys, breakage, message):
    ckpt_dir = shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt")
    if breakage == "no_label_map":
        (ckpt_dir / "label_map.txt").unlink()
    elif breakage == "wrong_labels":
        labels = (ckpt_dir / "label_map.txt").read_text().splitlines()[:-1]
        (ckpt_dir / "label_map.txt").write_text("\n".join(labels) + "\n")
    elif breakage == "no_ckpt":
        for ckpt in ckpt_dir.glob("*.ckpt"):
            ckpt.unlink()
    elif breakage == "not_a_dict":
        torch.save([torch.zeros(1)], next(ckpt_dir.glob("*.ckpt")))
    assert package(tmp_path, ckpt_dir) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("package_model: error: ") and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err


def test_refuses_to_overwrite_without_force(tiny_model_dir, tmp_path, capsys):
    assert package(tmp_path, tiny_model_dir) == 0
    assert package(tmp_path, tiny_model_dir) == 1
    assert "pass --force" in capsys.readouterr().err
    assert package(tmp_path, tiny_model_dir, "--force") == 0


def test_make_checkpoint_writes_the_ratsnlp_layout(tmp_path):
    path = make_checkpoint.write_checkpoint(tmp_path, shape="tiny", vocab_size=500)
    ckpt = torch.load(path, weights_only=True)
    assert path.name == "epoch=0-val_loss=9.99.ckpt"
    assert all(k.startswith("model.") for k in ckpt["state_dict"])
    assert (tmp_path / "label_map.txt").read_text().splitlines()[:5] == ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O"]
    assert len((tmp_path / "vocab.txt").read_text().splitlines()) == 500


def test_the_archive_holds_every_handler_module(tiny_model_dir, tmp_path):
    """The handler file list is derived from handler/*.py (entry module first), not kept by hand."""
    files = package_model.handler_files()
    assert [p.name for p in files] == ["ner_handler.py"] + sorted(
        p.name for p in paths.HANDLER_DIR.glob("*.py") if p.name != "ner_handler.py"
    )
    assert package(tmp_path, tiny_model_dir, "--name", "all") == 0
    with zipfile.ZipFile(tmp_path / "store" / "all.mar") as archive:
        assert {p.name for p in files} <= set(archive.namelist())


def test_a_new_version_gets_its_own_archive_name(tiny_model_dir, tmp_path, capsys):
    assert package(tmp_path, tiny_model_dir) == 0
    served = (tmp_path / "store" / "kor_ner.mar").read_bytes()
    assert package(tmp_path, tiny_model_dir, "--version", "2.0", "--archive-name", "kor_ner-2.0") == 0
    new = tmp_path / "store" / "kor_ner-2.0.mar"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(new)
    assert (tmp_path / "store" / "kor_ner.mar").read_bytes() == served  # the served archive is untouched
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["kor_ner-2.0.mar", "kor_ner.mar"]
    with zipfile.ZipFile(new) as archive:
        manifest = __import__("json").loads(archive.read("MAR-INF/MANIFEST.json"))
    assert (manifest["model"]["modelName"], manifest["model"]["modelVersion"]) == ("kor_ner", "2.0")
    assert package(tmp_path, tiny_model_dir, "--version", "2.0", "--archive-name", "kor_ner-2.0") == 1  # no --force
    assert package(tmp_path, tiny_model_dir, "--archive-name", "../kor_ner") == 1
    assert "archive name '../kor_ner'" in capsys.readouterr().err
