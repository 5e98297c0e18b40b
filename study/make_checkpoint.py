"""Write a randomly initialised BERT token classifier laid out like a ratsnlp user's model.

The output directory holds what packaging expects from a user: ``epoch=0-val_loss=9.99.ckpt``
(a Lightning-style dict with ``state_dict`` keys prefixed ``model.``), ``label_map.txt`` and
the "pretrained" side, ``config.json`` and ``vocab.txt``. Random weights cost the same compute
as trained ones, so ``--shape bert-base`` is the benchmark's stand-in for beomi/kcbert-base.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForTokenClassification

from ner_labels import ratsnlp_labels
from serving.corpus import SPECIAL_TOKENS

SHAPES = {
    # beomi/kcbert-base's published config
    "bert-base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=300,
        vocab_size=30000,
    ),
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=300,
        vocab_size=0,
    ),
}
RATSNLP_LABELS = ratsnlp_labels()  # KMOU's types in ratsnlp's label order
LIGHTNING_VERSION = "1.9.0"  # what the checkpoints name as their writer


def synthetic_vocab(size: int, seed: int = 0) -> list[str]:
    """Special tokens, ASCII, common punctuation, then Hangul syllables and ## pieces, then
    two-syllable pieces: 11,172 syllables alone stop at 22,450 entries, short of kcbert's 30,000."""
    base = SPECIAL_TOKENS + [chr(c) for c in range(33, 127)] + list("·‘’“”…~∼")
    hangul = [chr(c) for c in range(0xAC00, 0xD7A4)]
    random.Random(seed).shuffle(hangul)
    words = list(dict.fromkeys(base))
    pool = iter(hangul + [a + b for a, b in itertools.pairwise(hangul)])
    while len(words) < size:
        syllable = next(pool, None)
        if syllable is None:
            break
        words.append(syllable)
        if len(words) < size:
            words.append("##" + syllable)
    return words[:size]


def write_checkpoint(
    out: Path, shape: str = "tiny", vocab_size: int = 0, seed: int = 0, labels: Sequence[str] = RATSNLP_LABELS
) -> Path:
    """``labels``: the label map (default KMOU's types in ratsnlp's order)."""
    torch.manual_seed(seed)
    params: dict[str, Any] = dict(SHAPES[shape])
    vocab = synthetic_vocab(vocab_size or params["vocab_size"] or 2000, seed)
    params["vocab_size"] = len(vocab)
    config = BertConfig(**params)
    config.num_labels = len(labels)  # the setter names the labels too (id2label), as the keyword would
    model = BertForTokenClassification(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "label_map.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    BertConfig(**params).to_json_file(str(out / "config.json"))  # the pretrained side: no num_labels
    return save_lightning(out / "epoch=0-val_loss=9.99.ckpt", model)


def save_lightning(path: Path, model: torch.nn.Module, epoch: int = 0, global_step: int = 0) -> Path:
    """The one checkpoint writer: Lightning's layout as ratsnlp saves it (a dict whose
    ``state_dict`` keys are prefixed ``model.``)."""
    ckpt = {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    torch.save(ckpt, path)
    return path
