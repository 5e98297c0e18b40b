"""The KMOU corpus from the workplace's ../shared/, for tests that read it (import from here,
not from a conftest: two conftest modules share one name)."""

from __future__ import annotations

from pathlib import Path

import pytest

import repo


def shared_corpus(split: str) -> Path:
    """The KMOU corpus from ../shared, or a skip: a user's clone has no ../shared."""
    path = repo.SHARED_DATA / f"{split}.txt"
    if not path.is_file():
        pytest.skip(f"KMOU corpus not found at {path} (it lives in the workplace's ../shared/, not in the repo)")
    return path
