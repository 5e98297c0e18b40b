"""A pickled checkpoint carrying code is refused by packaging, and its code never runs.

A .ckpt is a pickle: unpickling may call any function the file names. package_model opens
checkpoints with ``torch.load(weights_only=True)``, whose unpickler only builds tensors and
plain containers; the archive then holds safetensors, so TorchServe never unpickles anything.
"""

from __future__ import annotations

import os
import shutil

import torch

from scripts import package_model


class Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code an attacker would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def poisoned_checkpoint(tiny_checkpoint_dir, tmp_path, marker):
    """The tiny checkpoint directory with its .ckpt carrying the payload next to real weights."""
    ckpt_dir = shutil.copytree(tiny_checkpoint_dir, tmp_path / "ckpt")
    ckpt_path = next(ckpt_dir.glob("*.ckpt"))
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["callbacks"] = Payload(str(marker))
    torch.save(ckpt, ckpt_path)
    return ckpt_dir, ckpt_path


def test_the_payload_runs_when_unpickled_without_protection(tiny_checkpoint_dir, tmp_path):
    """The control: the file really is dangerous to a plain unpickler."""
    marker = tmp_path / "pwned-control"
    _, ckpt_path = poisoned_checkpoint(tiny_checkpoint_dir, tmp_path, marker)
    torch.load(ckpt_path, weights_only=False)
    assert marker.exists()


def test_package_model_refuses_the_payload_in_one_line_and_never_runs_it(tiny_checkpoint_dir, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ckpt_dir, ckpt_path = poisoned_checkpoint(tiny_checkpoint_dir, tmp_path, marker)
    store = tmp_path / "store"
    code = package_model.main(["--checkpoint", str(ckpt_dir), "--export-path", str(store)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err == (
        f"package_model: error: refusing to load {ckpt_path} with weights_only=True: "
        "Trying to load unsupported GLOBAL posix.mkdir whose module posix is blocked."
    )
    assert not marker.exists()
    assert not (store / "kor_ner.mar").exists()
