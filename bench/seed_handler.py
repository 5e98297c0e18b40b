"""The tutorial's inference path as a TorchServe handler: the benchmark's honest "before".

A faithful port of the seed tutorial (seed/ner-inference-tutorial.md under NER_SHARED_DIR,
code 4-11): the pure-Python ``BertTokenizer`` (``BertTokenizerLegacy`` in transformers 5) with ``do_lower_case=False``,
every sentence padded to ``max_length=64``, one sentence per forward pass, the tutorial's
label names. Only the loading differs: the same ``model.safetensors`` the project's archive
holds instead of a pickled Lightning checkpoint, so both paths run identical weights.
Serve it with batch size 1, as the tutorial's Flask app answered one request at a time.
Not for production: it truncates at 64 tokens and answers only the tutorial's fields.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForTokenClassification, BertTokenizerLegacy
from ts.torch_handler.base_handler import BaseHandler

from ner_labels import SEED_LABEL_NAMES, entity_type

MAX_SEQ_LENGTH = 64  # NERDeployArguments(max_seq_length=64) in the tutorial


def tutorial_label_names(labels: list[str]) -> dict[int, str]:
    """Code 10: label index -> the tutorial's Korean name (B- and I- share one name; ``O`` and
    the special labels keep their own)."""
    return {idx: SEED_LABEL_NAMES.get(entity_type(label) or "", label) for idx, label in enumerate(labels)}


def load_seed(model_dir: Path, max_seq_length: int = MAX_SEQ_LENGTH):
    """Codes 4-11 with a packaged model directory: returns the tutorial's ``inference_fn``."""
    model_dir = Path(model_dir)
    tokenizer = BertTokenizerLegacy(str(model_dir / "vocab.txt"), do_lower_case=False)
    state = load_file(str(model_dir / "model.safetensors"))
    config = BertConfig.from_json_file(str(model_dir / "config.json"))
    config.num_labels = state["classifier.bias"].shape.numel()
    model = BertForTokenClassification(config)
    model.load_state_dict(state)
    model.eval()
    with open(model_dir / "label_map.txt", encoding="utf-8") as f:  # the tutorial left it open
        labels = [label.strip() for label in f.readlines()]
    id_to_label = tutorial_label_names(labels)

    def inference_fn(sentence):  # code 11, unchanged but for max_seq_length
        inputs = tokenizer(
            [sentence],
            max_length=max_seq_length,
            padding="max_length",
            truncation=True,
        )
        with torch.no_grad():
            outputs = model(**{k: torch.tensor(v) for k, v in inputs.items()})
            probs = outputs.logits[0].softmax(dim=1)
            top_probs, preds = torch.topk(probs, dim=1, k=1)
            tokens = tokenizer.convert_ids_to_tokens(inputs["input_ids"][0])
            predicted_tags = [id_to_label[pred.item()] for pred in preds]
            result = []
            for token, predicted_tag, top_prob in zip(tokens, predicted_tags, top_probs, strict=True):
                if token not in [tokenizer.pad_token, tokenizer.cls_token, tokenizer.sep_token]:
                    token_result = {
                        "token": token,
                        "predicted_tag": predicted_tag,
                        "top_prob": str(round(top_prob[0].item(), 4)),
                    }
                    result.append(token_result)
        return {
            "sentence": sentence,
            "result": result,
        }

    return inference_fn


class SeedNerHandler(BaseHandler):
    """One sentence per request (plain-text body), answered as the tutorial's JSON."""

    def initialize(self, context):
        self.inference_fn = load_seed(Path(context.system_properties["model_dir"]))
        self.initialized = True

    def handle(self, data, context):
        answers = []
        for row in data:
            body = row.get("data") or row.get("body") or b""
            sentence = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else str(body)
            answers.append(json.dumps(self.inference_fn(sentence), ensure_ascii=False))
        return answers
