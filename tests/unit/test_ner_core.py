"""Pure NER steps with hand-made inputs, and the tiny random BERT for the model-facing parts."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import unicodedata

import pytest
import torch

import ner_core
import ner_model
from ner_core import TokenPredictions, group_entities, keep_ranges, plan_windows
from ner_settings import HandlerSettings
from tests.unit.answers import answer_for

LABELS = ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O", "B-PER", "B-LOC", "I-PER", "I-LOC"]


@pytest.mark.parametrize(
    "n, size, stride",
    [(0, 6, 2), (5, 6, 2), (6, 6, 2), (7, 6, 2), (25, 6, 2), (100, 126, 32), (300, 126, 32), (31, 8, 0)],
)
def test_windows_cover_every_token_once(n, size, stride):
    windows = plan_windows(n, size, stride)
    assert all(end - start <= size for start, end in windows)
    assert windows[0][0] == 0 and windows[-1][1] == n
    for (_, e1), (s2, _) in itertools.pairwise(windows):
        assert e1 - s2 >= stride  # neighbours share at least `stride` tokens
    kept = [i for a, b in keep_ranges(windows) for i in range(a, b)]
    assert kept == list(range(n))
    for (start, end), (a, b) in zip(windows, keep_ranges(windows), strict=True):
        assert start <= a <= b <= end


def test_group_entities_bio():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-PER", "[CLS]", "I-PER"]
    assert group_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("PER", 6, 6), ("PER", 8, 8)]
    assert group_entities(["O", "O"]) == []
    assert group_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]


def test_the_answer_keeps_the_seed_shape_and_offsets():
    text = "이순신은 서울에 갔다"
    pred = TokenPredictions(
        text=text,
        tokens=["이순", "##신은", "서울", "##에", "갔다"],
        offsets=[(0, 2), (2, 4), (5, 7), (7, 8), (9, 11)],
        label_ids=[5, 7, 6, 4, 0],
        probs=[0.91234, 0.8, 0.7, 0.99999, 0.5],
    )
    answer = answer_for(pred, LABELS)
    assert answer["sentence"] == text
    assert answer["result"][0] == {"token": "이순", "predicted_tag": "인명", "top_prob": "0.9123", "tag": "B-PER"}
    assert [r["predicted_tag"] for r in answer["result"]] == ["인명", "인명", "지명", "O", "[CLS]"]
    assert answer["result"][3]["top_prob"] == "1.0"  # str(round(p, 4)), as the seed formats it
    assert answer["entities"] == [
        {"text": "이순신은", "label": "PER", "label_name": "인명", "start": 0, "end": 4, "score": 0.8562},
        {"text": "서울", "label": "LOC", "label_name": "지명", "start": 5, "end": 7, "score": 0.7},
    ]


def test_nfd_text_gets_offsets_into_the_original():
    text = unicodedata.normalize("NFD", "이순신은 가나")
    composed, spans = ner_core.nfc_spans(text)
    assert composed == "이순신은 가나" and len(spans) == len(composed)
    assert [text[a:b] for a, b in spans][:2] == [unicodedata.normalize("NFD", "이"), unicodedata.normalize("NFD", "순")]
    assert ner_core.nfc_spans("이미 NFC") is None


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return ner_model.load_model(tiny_model_dir, HandlerSettings(max_seq_length=16, window_stride=4))


def test_batched_answers_equal_single_answers(tiny):
    """Padding to the longest must not change any text's predictions (attention mask works)."""
    texts = ["가", "이순신은 조선 중기의 무신이다.", "서울에서 만났다 " * 3]
    together = ner_core.predict(tiny, texts)
    for text, batched in zip(texts, together, strict=True):
        alone = ner_core.predict(tiny, [text])[0]
        assert batched.label_ids == alone.label_ids
        assert batched.probs == pytest.approx(alone.probs, abs=1e-5)


def test_long_text_gets_a_prediction_for_every_token(tiny):
    text = "이순신은 조선 중기의 무신이다. " * 40
    pred = ner_core.predict(tiny, [text])[0]
    ids, tokens, _offsets = ner_core.encode_texts(tiny.tokenizer, [text])[0]
    assert len(ids) > 3 * 14  # several windows of 14 wordpieces
    assert pred.tokens == tokens and len(pred.label_ids) == len(pred.probs) == len(tokens)
    answer = answer_for(pred, tiny.labels)
    assert len(answer["result"]) == len(tokens)
    assert all(answer["sentence"][e["start"] : e["end"]] == e["text"] for e in answer["entities"])


def test_batches_respect_the_token_budget():
    lengths = [3, 100, 5, 98, 4, 50]
    batches = ner_core.plan_batches(lengths, max_tokens=210)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for batch in batches:
        assert (max(lengths[i] for i in batch) + 2) * len(batch) <= 210 or len(batch) == 1


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_label_map_mismatch_refuses_to_load(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path / "m")
    labels = (model_dir / "label_map.txt").read_text().splitlines()
    (model_dir / "label_map.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(ner_model.ModelLoadError, match=r"label_map.txt has 24 labels but config.json num_labels is 25"):
        ner_model.load_model(model_dir, HandlerSettings())


def test_vocab_mismatch_refuses_to_load(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path / "m")
    with open(model_dir / "vocab.txt", "a", encoding="utf-8") as f:
        f.write("새토큰\n")
    with pytest.raises(
        ner_model.ModelLoadError, match=r"vocab.txt has 3001 tokens but the word embeddings have 3000 rows"
    ):
        ner_model.load_model(model_dir, HandlerSettings())


def test_corrupt_weights_refuse_to_load(tiny_model_dir, tmp_path):
    model_dir = _copy(tiny_model_dir, tmp_path / "m")
    (model_dir / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ner_model.ModelLoadError, match="cannot read"):
        ner_model.load_model(model_dir, HandlerSettings())


def test_tokenizer_has_the_whole_vocab(tiny_model_dir):
    tokenizer = ner_model.build_tokenizer(tiny_model_dir / "vocab.txt")
    assert tokenizer.get_vocab_size() == 3000
    assert tokenizer.token_to_id("[CLS]") == 2 and tokenizer.token_to_id("[PAD]") == 0


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_len'\]"):
        HandlerSettings.from_mapping({"max_len": 64})
    with pytest.raises(ValueError, match="max_seq_length must be int"):
        HandlerSettings.from_mapping({"max_seq_length": "64"})
    with pytest.raises(ValueError, match="window_stride"):
        HandlerSettings.from_mapping({"max_seq_length": 16, "window_stride": 8})
    settings = HandlerSettings.from_mapping({"label_names": {"PER": "사람"}})
    assert settings.label_names["PER"] == "사람" and settings.label_names["LOC"] == "지명"


def test_inference_runs_without_autograd(tiny):
    """The model is called inside torch.inference_mode: no autograd graph, no version counters."""
    seen = []

    class Spy:
        device = tiny.model.device

        def __call__(self, **inputs):
            seen.append(torch.is_inference_mode_enabled())
            return tiny.model(**inputs)

    ner_core.predict(dataclasses.replace(tiny, model=Spy()), ["가나다", "라마바사"])
    assert seen == [True]
