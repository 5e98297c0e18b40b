"""The KMOU NER corpus in ratsnlp's line format, and entity scoring against it.

A line is ``sentence`` U+241E ``tagged sentence``, entities marked ``<surface:TAG>``. The
separator, the markup and the special tokens are defined here once: demo training, the
benchmark's accuracy, packaging's check, the studies and the synthetic checkpoints read them
from this module. What a label means (ratsnlp's label order, spans, BIO tags) is ner_labels'.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

import ner_core
import ner_model
import ner_particles
from ner_labels import Span, ratsnlp_labels, spans_to_tags

SEPARATOR = "\u241e"  # ratsnlp line format: sentence, U+241E, tagged sentence
ENTITY = re.compile(r"<(.+?):([A-Z]{3})>")  # ratsnlp's pattern
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's, in vocab order
# Sample sentences written for this project, short and long on purpose: the benchmark's set when
# the KMOU corpus is absent, and packaging's check that a runtime gives torch fp32's tags.
SAMPLE_SENTENCES = (
    "서울에서 만났다.",
    "김민수는 어제 부산에 갔다.",
    "한국은행은 기준금리를 연 3.5%로 동결했다.",
    "오늘 오후 3시에 회의가 있습니다.",
    "이순신 장군은 1592년 한산도 앞바다에서 일본 수군을 크게 물리쳤다.",
    "삼성전자는 지난해 매출이 300조 원을 넘었다고 31일 밝혔다.",
    "박지영 교수 연구팀은 3년 동안 제주도 해안의 플라스틱 쓰레기를 조사했다.",
    "대전시는 다음 달부터 시내버스 요금을 1,500원으로 올린다고 발표했다.",
    "올림픽 대표팀은 두 시간 동안 훈련한 뒤 인천국제공항을 통해 출국했다.",
    (
        "국립중앙박물관은 이번 특별전에 조선 후기 회화 120점을 선보인다며, 관람객이 "
        "작품의 제작 배경을 이해할 수 있도록 해설 영상과 체험 공간도 함께 마련했다고 설명했다."
    ),
    (
        "세계보건기구는 10일 발표한 보고서에서 전 세계 인구의 약 25%가 충분한 신체 활동을 하지 "
        "않는다며 각국 정부가 도시 계획 단계부터 걷기와 자전거 이용을 장려해야 한다고 권고했다."
    ),
    (
        "정부는 2030년까지 재생에너지 비중을 30% 이상으로 늘리겠다는 계획을 세웠지만, 전문가들은 "
        "송전망 확충과 지역 주민과의 협의가 늦어지고 있어 목표 달성이 쉽지 않을 것이라고 지적했다. "
        "산업통상자원부는 내년 상반기에 세부 이행 방안을 내놓을 예정이다."
    ),
)
# --------------------------------------------------------------------------- reading


@dataclass
class Example:
    text: str
    spans: list[Span]  # (type, start, end), character offsets into text


def parse_tagged(tagged: str) -> Example:
    """``<이순신:PER>은`` -> text ``이순신은`` with the span ("PER", 0, 3)."""
    parts, spans, length, last = [], [], 0, 0
    for match in ENTITY.finditer(tagged):
        before = tagged[last : match.start()]
        surface, kind = match.group(1), match.group(2)
        start = length + len(before)
        spans.append((kind, start, start + len(surface)))
        parts += [before, surface]
        length, last = start + len(surface), match.end()
    parts.append(tagged[last:])
    return Example("".join(parts), spans)


def read_corpus(path: Path) -> tuple[list[Example], int]:
    """The examples, and how many lines were skipped because the plain sentence is not the
    tagged one with its markup removed."""
    examples, skipped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        sentence, _, tagged = line.partition(SEPARATOR)
        example = parse_tagged(tagged)
        if example.text != sentence:
            skipped += 1
            continue
        examples.append(example)
    return examples, skipped


def plain_sentences(path: Path) -> list[str]:
    """The sentences of a file, in order: a ratsnlp line keeps its part before U+241E; blank
    lines are skipped, so a plain file of one sentence a line works too."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split(SEPARATOR)[0].strip() for line in lines if line.split(SEPARATOR)[0].strip()]


def build_label_map(examples: list[Example]) -> list[str]:
    """ratsnlp's order, types in first-seen order (as ratsnlp's NERCorpus builds it)."""
    return ratsnlp_labels(dict.fromkeys(kind for ex in examples for kind, _, _ in ex.spans))


@dataclass
class Encoded:
    ids: list[int]
    tags: list[str]  # gold BIO per wordpiece, the whole text (no truncation)


def encode(examples: list[Example], tokenizer: Tokenizer) -> list[Encoded]:
    """Tokenised as at serve time (NFC, offsets into the original text), labels aligned."""
    encodings = ner_core.encode_texts(tokenizer, [ex.text for ex in examples])
    return [
        Encoded(ids, spans_to_tags(offsets, ex.spans))
        for (ids, _, offsets), ex in zip(encodings, examples, strict=True)
    ]


# --------------------------------------------------------------------------- scoring


def score(gold: list[set], predicted: list[set]) -> dict[str, dict[str, float]]:
    """Entity precision / recall / F1 per type and overall (micro); entities are tuples
    starting with their type and match exactly."""
    counts: dict[str, Counter[str]] = {key: Counter() for key in ("gold", "predicted", "correct")}
    for g, p in zip(gold, predicted, strict=True):
        for key, entities in (("gold", g), ("predicted", p), ("correct", g & p)):
            counts[key].update(e[0] for e in entities)
            counts[key]["overall"] += len(entities)
    types = sorted({*counts["gold"], *counts["predicted"]} - {"overall"}) + ["overall"]
    table = {}
    for kind in types:
        n_gold, n_pred, n_ok = (counts[key][kind] for key in ("gold", "predicted", "correct"))
        precision = n_ok / n_pred if n_pred else 0.0
        recall = n_ok / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if n_ok else 0.0
        table[kind] = dict(precision=precision, recall=recall, f1=f1, gold=n_gold, predicted=n_pred)
    return table


def evaluate(ner: ner_model.NerModel, examples: list[Example], encoded: list[Encoded]) -> dict[str, dict]:
    """Three views of one prediction pass through the serving code (windows of the handler's
    default max_seq_length): (a) wordpiece BIO spans, (b) exact character spans, both from the
    argmax tags grouped as they come; (c) exact character spans as the shipped config serves
    them (BIO-constrained decoding, particle trimming, the model's entity score threshold), and
    with a threshold (c) again without it ("served_every_score")."""
    predictions = ner_core.predict(ner, [ex.text for ex in examples])
    gold_pieces, pred_pieces, pred_chars, served = [], [], [], []
    for pred, row in zip(predictions, encoded, strict=True):
        gold_pieces.append(set(ner_core.group_entities(row.tags)))
        pred_pieces.append(set(ner_core.group_entities([ner.labels[i] for i in pred.label_ids])))
        pred_chars.append({e.span for e in ner_core.find_entities(pred, ner.labels)})
        served.append(ner_core.find_entities(pred, ner.labels, trim=ner_particles.trim_end, decoding="constrained"))
    gold_chars = [set(ex.spans) for ex in examples]
    views = {
        "wordpiece": score(gold_pieces, pred_pieces),
        "char": score(gold_chars, pred_chars),
        "served": score(
            gold_chars, [{e.span for e in ner_core.scored_at_least(es, ner.min_entity_score)} for es in served]
        ),
    }
    if ner.min_entity_score:
        views["served_every_score"] = score(gold_chars, [{e.span for e in es} for es in served])
    return views


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    lines = ["| type | precision | recall | F1 | gold | predicted |", "|---|---:|---:|---:|---:|---:|"]
    for kind, m in table.items():
        name = "**overall**" if kind == "overall" else kind
        lines.append(
            f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['gold']} | {m['predicted']} |"
        )
    return "\n".join(lines)
