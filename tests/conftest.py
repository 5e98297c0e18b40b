"""Fixtures for every test: tiny models built in tmp dirs, the workplace's corpus; and the
``integration`` mark on every test under tests/integration/ (``scripts/test.sh --fast`` leaves
them out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving import paths
from serving.package_model import PackageSpec, stage
from study import make_checkpoint

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config, items):
    """Mark what starts a real TorchServe by where it lives (a conftest's pytestmark is ignored)."""
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> Path:
    """A ratsnlp-layout checkpoint directory with a tiny random BERT."""
    out = tmp_path_factory.mktemp("tiny-ckpt")
    make_checkpoint.write_checkpoint(out, shape="tiny", vocab_size=3000)
    return out


def staged(checkpoint_dir: Path, tmp_path_factory, name: str) -> Path:
    """A checkpoint directory staged as the handler sees it inside a .mar."""
    out = tmp_path_factory.mktemp(name)
    stage(PackageSpec(checkpoint_dir), out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_checkpoint_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint staged as the handler sees it inside a .mar."""
    return staged(tiny_checkpoint_dir, tmp_path_factory, "tiny-model")


# KLUE-NER's 13 tags in KLUE's own order: no special labels, unlike a ratsnlp label map.
KLUE_LABELS = ["B-DT", "I-DT", "B-LC", "I-LC", "B-OG", "I-OG", "B-PS", "I-PS", "B-QT", "I-QT", "B-TI", "I-TI", "O"]


@pytest.fixture(scope="session")
def klue_checkpoint_dir(tmp_path_factory) -> Path:
    """A ratsnlp-layout checkpoint directory with a tiny random BERT labelled with KLUE-NER's tags."""
    out = tmp_path_factory.mktemp("klue-ckpt")
    make_checkpoint.write_checkpoint(out, shape="tiny", vocab_size=3000, seed=1, labels=KLUE_LABELS)
    return out


@pytest.fixture(scope="session")
def klue_model_dir(klue_checkpoint_dir, tmp_path_factory) -> Path:
    """The KLUE-labelled checkpoint staged as the handler sees it inside a .mar."""
    return staged(klue_checkpoint_dir, tmp_path_factory, "klue-model")


@pytest.fixture(scope="session")
def kmou_split():
    """``kmou_split("val")``: the KMOU corpus file from the workplace's shared/, or a skip (a
    user's clone has no shared/; NER_SHARED_DIR points elsewhere)."""

    def find(split: str) -> Path:
        path = paths.SHARED_DATA / f"{split}.txt"
        if not path.is_file():
            pytest.skip(f"KMOU corpus not found at {path} (it lives in the workplace's shared/, not in the repo)")
        return path

    return find
