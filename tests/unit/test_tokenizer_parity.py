"""The served tokenizer (tokenizers, with offsets) splits text exactly as the tutorial's
pure-Python BertTokenizer(do_lower_case=False) did: same wordpieces on every KMOU val sentence."""

from __future__ import annotations

import unicodedata

import pytest
from transformers import BertTokenizerLegacy

import ner_core
import ner_model
from serving import corpus, paths

DEMO_VOCAB = paths.DEMO_MODEL_DIR / "vocab.txt"


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dir):
    vocab = DEMO_VOCAB if DEMO_VOCAB.is_file() else tiny_model_dir / "vocab.txt"
    return ner_model.build_tokenizer(vocab), BertTokenizerLegacy(str(vocab), do_lower_case=False)


def test_same_wordpieces_on_every_validation_sentence(tokenizers, kmou_split):
    fast, slow = tokenizers
    lines = kmou_split("val").read_text(encoding="utf-8").splitlines()
    sentences = [line.split(corpus.SEPARATOR)[0] for line in lines if line.strip()]
    encoded = ner_core.encode_texts(fast, sentences)
    differ = [s for s, (_, tokens, _) in zip(sentences, encoded, strict=True) if tokens != slow.tokenize(s)]
    assert len(sentences) > 2000
    assert differ == [], f"{len(differ)} sentences tokenise differently, e.g. {differ[:3]}"


@pytest.mark.parametrize(
    "text",
    [
        unicodedata.normalize("NFD", "이순신은 조선 중기의 무신이다."),  # the slow tokenizer NFC-normalises
        "漢字와 한자, Café, 123,456원",
        "제로\u200d폭 조이너와 \u202e오른쪽에서 왼쪽\u202c",
        "탭\t과 NUL\x00 문자",
    ],
)
def test_same_wordpieces_on_edge_cases(tokenizers, text):
    fast, slow = tokenizers
    _, tokens, offsets = ner_core.encode_texts(fast, [text])[0]
    assert tokens == slow.tokenize(text)
    assert all(0 <= a <= b <= len(text) for a, b in offsets)
