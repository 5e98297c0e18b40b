"""Measure how ``entities`` are read from the wordpieces' labels: greedy (the argmax tags grouped
as they come) against constrained (the most probable label sequence that keeps the BIO rules),
on a KMOU split, for a served model directory or a ratsnlp checkpoint.

One prediction pass through the serving code (``ner_core.predict``), then for each decoding:
- entity F1 on wordpiece spans (the model's BIO spans against the gold tags aligned to its
  wordpieces, seqeval-style);
- character-exact entity F1 of the served ``entities``, without and with particle trimming
  (``ner_particles.trim_end``, as shipped);
- how many texts' entities change, and the time decoding takes per text.
The ``result`` rows are the argmax either way; this checks it too.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

import ner_core
import ner_particles
from ner_settings import BIO_DECODING_CHOICES, HandlerSettings

from serving import corpus, package_model
from serving.corpus import Example


def load(model: Path | None, checkpoint: Path | None, pretrained: str | None, staging: Path) -> ner_core.NerModel:
    """The served model: a packaged model directory, or a ratsnlp checkpoint staged as
    ``package_model.py`` stages it (into ``staging``)."""
    if checkpoint is not None:
        package_model.stage(package_model.PackageSpec(checkpoint=checkpoint, pretrained=pretrained), staging)
        model = staging
    return ner_core.load_model(model, HandlerSettings(torch_threads=0))  # in-process: all of torch's threads


def predictions(ner: ner_core.NerModel, texts: list[str], chunk: int = 64) -> list[ner_core.TokenPredictions]:
    out = []
    for i in tqdm(range(0, len(texts), chunk), desc="predict", unit="chunk"):
        out += ner_core.predict(ner, texts[i : i + chunk])
    return out


def gold_entities(examples: list[Example], ner: ner_core.NerModel) -> tuple[list[set], list[set]]:
    """The corpus entities as wordpiece spans (gold tags aligned to the model's wordpieces) and
    as character spans."""
    gold_pieces = [set(ner_core.group_entities(row.tags)) for row in corpus.encode(examples, ner.tokenizer)]
    gold_chars = [set(ex.spans) for ex in examples]
    return gold_pieces, gold_chars


def score_decoding(gold: tuple[list[set], list[set]], preds: list[ner_core.TokenPredictions], ner: ner_core.NerModel,
                   decoding: str, runs: int) -> dict:
    labels = ner.labels
    gold_pieces, gold_chars = gold
    pieces, plain, trimmed = [], [], []
    for pred in preds:
        ids, _ = ner_core.entity_labels(pred, labels, decoding)
        pieces.append(set(ner_core.group_entities([labels[i] for i in ids])))
        plain.append({e.span for e in ner_core.find_entities(pred, labels, decoding=decoding)})
        trimmed.append({e.span for e in ner_core.find_entities(pred, labels, trim=ner_particles.trim_end, decoding=decoding)})

    def seconds() -> float:
        started = time.perf_counter()
        for pred in preds:
            ner_core.entity_labels(pred, labels, decoding)
        return time.perf_counter() - started

    ms = statistics.median(seconds() for _ in range(runs)) / len(preds) * 1000
    return {
        "decoding": decoding,
        "wordpiece": corpus.score(gold_pieces, pieces)["overall"],
        "char": corpus.score(gold_chars, plain)["overall"],
        "char_trimmed": corpus.score(gold_chars, trimmed)["overall"],
        "ms_per_text": ms,
        "entities": trimmed,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| decoding | F1 wordpiece spans | F1 exact characters | F1 exact characters, trimmed | P / R (trimmed) | texts changed | ms / text |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row["char_trimmed"]
        lines.append(
            f"| {row['decoding']} | {row['wordpiece']['f1']:.4f} | {row['char']['f1']:.4f} | {t['f1']:.4f} "
            f"| {t['precision']:.4f} / {t['recall']:.4f} | {row['changed']} | {row['ms_per_text']:.3f} |"
        )
    return "\n".join(lines)


def run(corpus_dir: Path, split: str, model: Path | None, checkpoint: Path | None, pretrained: str | None,
        limit: int | None, runs: int, json_path: Path | None) -> list[dict]:
    """Score both decodings on the split, print the table (and write the JSON): the rows."""
    examples = corpus.read_corpus(corpus_dir / f"{split}.txt")[0][:limit]
    with tempfile.TemporaryDirectory(prefix="ner-decoding-") as tmp:
        ner = load(model, checkpoint, pretrained, Path(tmp))
    started = time.perf_counter()
    preds = predictions(ner, [ex.text for ex in examples])
    predict_ms = (time.perf_counter() - started) / len(examples) * 1000
    gold = gold_entities(examples, ner)
    rows = [score_decoding(gold, preds, ner, decoding, runs) for decoding in BIO_DECODING_CHOICES]
    greedy_entities = rows[0]["entities"]
    for row in rows:
        row["changed"] = sum(a != b for a, b in zip(greedy_entities, row.pop("entities")))
    print(f"\n{split}: {len(examples)} sentences, {len(ner.labels)} labels; predict {predict_ms:.2f} ms / sentence (chunks of 64)")
    print(markdown(rows))
    if json_path:
        json_path.write_text(json.dumps({"sentences": len(examples), "predict_ms": predict_ms, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return rows
