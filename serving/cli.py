"""What the commands' argument parsers share: the argparse types of their flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive integer")
    return value


def comma_list(choices: Sequence[str] | None = None, item: Callable[[str], Any] = str) -> Callable[[str], list[Any]]:
    """The argparse type of a comma-separated flag (``--models demo,tiny``): its non-empty items,
    each converted by ``item`` and, with ``choices``, one of them; an empty list is refused."""

    def parse(text: str) -> list[Any]:
        words = [word.strip() for word in text.split(",") if word.strip()]
        unknown = [word for word in words if choices is not None and word not in choices]
        if not words or unknown:
            known = f"; choose from {', '.join(choices)}" if choices is not None else ""
            raise argparse.ArgumentTypeError(f"expected values separated by commas, got {text!r}{known}")
        try:
            return [item(word) for word in words]
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None

    return parse
