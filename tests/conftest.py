"""Fixtures shared by unit and integration tests: tiny models built in tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest

import make_checkpoint
import package_model


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> Path:
    """A ratsnlp-layout checkpoint directory with a tiny random BERT."""
    out = tmp_path_factory.mktemp("tiny-ckpt")
    make_checkpoint.write_checkpoint(out, shape="tiny", vocab_size=3000)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint staged as the handler sees it inside a .mar."""
    out = tmp_path_factory.mktemp("tiny-model")
    args = package_model.parse_args(["--checkpoint", str(tiny_checkpoint_dir)])
    package_model.stage(args, out)
    return out
