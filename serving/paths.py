"""Where things are: the repository's folders, and the workplace's shared data beside it.

The project is installed editable (scripts/setup.sh: ``pip install -e .``), so this file
stays inside the checkout and ROOT is the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDLER_DIR = ROOT / "handler"
CONFIG_DIR = ROOT / "config"
MODEL_STORE = ROOT / "model_store"
DEMO_MODEL_DIR = ROOT / "demo_model"
RUN_DIR = ROOT / "var"  # TorchServe's working directory: key file, logs, pid (git-ignored)
MODEL_CONFIG = CONFIG_DIR / "model-config.yaml"
MODEL_NAME = "kor_ner"  # the model every command packages, registers and asks by default (/predictions/kor_ner)

# Data that is not in the repository (licences, size): the folder shared/ beside the checkout,
# or wherever NER_SHARED_DIR points.
SHARED_DIR = Path(os.environ.get("NER_SHARED_DIR") or ROOT.parent / "shared")
SHARED_DATA = SHARED_DIR / "data" / "kmou-ner"  # the KMOU corpus: train.txt, val.txt
RATSNLP_CHECKPOINT = SHARED_DIR / "data" / "ratsnlp-checkpoint"  # a genuine ratsnlp checkpoint + golden answers


def demo_model_available() -> bool:
    """True when demo_model/ holds its weights (they are committed; a partial clone may lack them)."""
    return (DEMO_MODEL_DIR / "model.safetensors").is_file()
