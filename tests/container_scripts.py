"""The image's scripts (container/*.py) as the image imports them, for the tests: by file name,
with container/ and handler/ on the import path (in the image they lie side by side in
/opt/kor-ner). Only tests do this; code imports ``container.front_door``."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from serving import paths


def module(name: str) -> ModuleType:
    """container/<name>.py (entrypoint, kor_ner_runtime, v2_status, healthcheck, front_door) by
    its file name, as the image's scripts import each other."""
    for folder in (str(paths.ROOT / "container"), str(paths.ROOT / "handler")):
        if folder not in sys.path:
            sys.path.append(folder)
    return importlib.import_module(name)
