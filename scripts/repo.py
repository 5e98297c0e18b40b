"""Paths shared by the scripts, and the import path to the handler's plain NER modules."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDLER_DIR = ROOT / "handler"
CONFIG_DIR = ROOT / "config"
MODEL_STORE = ROOT / "model_store"
DEMO_MODEL_DIR = ROOT / "demo_model"
RUN_DIR = ROOT / "var"  # TorchServe's working directory: key file, logs, pid (git-ignored)
SHARED_DATA = ROOT.parent / "shared" / "data" / "kmou-ner"

if str(HANDLER_DIR) not in sys.path:
    sys.path.insert(0, str(HANDLER_DIR))
