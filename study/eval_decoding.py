"""Measure how ``entities`` are read from the wordpieces' labels: greedy (the argmax tags grouped
as they come) against constrained (the most probable label sequence that keeps the BIO rules),
on a KMOU split, for a served model directory or a ratsnlp checkpoint.

One prediction pass through the serving code (``ner_core.predict``), then for each decoding:
- entity F1 on wordpiece spans (the model's BIO spans against the gold tags aligned to its
  wordpieces, seqeval-style);
- character-exact entity F1 of the served ``entities``, without and with particle trimming
  (``ner_particles.trim_end``, as shipped);
- how many texts' entities change, and the time decoding takes per text.
The ``result`` rows are the argmax either way; this checks it too. These rows keep every entity,
whatever its score.

Then the entity score threshold (``min_entity_score``): the served entities (constrained,
trimmed) with those scored below each threshold left out, F1 on the whole split and on its
even- and odd-numbered sentences. The threshold a model should name for itself is chosen on
the even-numbered sentences (the lowest threshold within ``TIE`` of the best F1 there, since a
lower one keeps more entities) and checked on the odd-numbered ones, which the choice never saw.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

import ner_core
import ner_model
import ner_particles
from ner_settings import BIO_DECODING_CHOICES, HandlerSettings
from serving import corpus, package_model
from serving.corpus import Example


def load(model: Path | None, checkpoint: Path | None, pretrained: str | None, staging: Path) -> ner_model.NerModel:
    """The served model: a packaged model directory, or a ratsnlp checkpoint staged as
    ``package_model.py`` stages it (into ``staging``)."""
    if checkpoint is not None:
        package_model.stage(package_model.PackageSpec(checkpoint=checkpoint, pretrained=pretrained), staging)
        model = staging
    if model is None:
        raise ValueError("load needs a model directory or a checkpoint")
    return ner_model.load_model(model, HandlerSettings(torch_threads=0))  # in-process: all of torch's threads


def predictions(ner: ner_model.NerModel, texts: list[str], chunk: int = 64) -> list[ner_core.TokenPredictions]:
    out = []
    for i in tqdm(range(0, len(texts), chunk), desc="predict", unit="chunk"):
        out += ner_core.predict(ner, texts[i : i + chunk])
    return out


def gold_entities(examples: list[Example], ner: ner_model.NerModel) -> tuple[list[set], list[set]]:
    """The corpus entities as wordpiece spans (gold tags aligned to the model's wordpieces) and
    as character spans."""
    gold_pieces = [set(ner_core.group_entities(row.tags)) for row in corpus.encode(examples, ner.tokenizer)]
    gold_chars = [set(ex.spans) for ex in examples]
    return gold_pieces, gold_chars


def score_decoding(
    gold: tuple[list[set], list[set]],
    preds: list[ner_core.TokenPredictions],
    ner: ner_model.NerModel,
    decoding: str,
    runs: int,
) -> dict:
    labels = ner.labels
    gold_pieces, gold_chars = gold
    pieces, plain, trimmed = [], [], []
    for pred in preds:
        ids, _ = ner_core.entity_labels(pred, labels, decoding)
        pieces.append(set(ner_core.group_entities([labels[i] for i in ids])))
        plain.append({e.span for e in ner_core.find_entities(pred, labels, decoding=decoding)})
        trimmed.append(
            {e.span for e in ner_core.find_entities(pred, labels, trim=ner_particles.trim_end, decoding=decoding)}
        )

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


THRESHOLDS = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
TIE = 0.001  # F1 closer than this to the best is a tie (a few entities in a half split): the lower threshold wins


def threshold_scan(
    gold_chars: list[set],
    preds: list[ner_core.TokenPredictions],
    ner: ner_model.NerModel,
    thresholds: tuple[float, ...] = THRESHOLDS,
) -> dict:
    """Served F1 (constrained, trimmed) per entity score threshold on all, even- and
    odd-numbered sentences, and the threshold chosen on the even ones."""
    served = [ner_core.find_entities(p, ner.labels, trim=ner_particles.trim_end, decoding="constrained") for p in preds]
    halves = {"all": range(len(preds)), "even": range(0, len(preds), 2), "odd": range(1, len(preds), 2)}
    rows = []
    for threshold in thresholds:
        kept = [{e.span for e in ner_core.scored_at_least(entities, threshold)} for entities in served]
        row: dict[str, Any] = {"threshold": threshold}
        for half, index in halves.items():
            row[half] = corpus.score([gold_chars[i] for i in index], [kept[i] for i in index])["overall"]
        rows.append(row)
    best = max(row["even"]["f1"] for row in rows)
    chosen = min(row["threshold"] for row in rows if row["even"]["f1"] >= best - TIE)
    return {"rows": rows, "chosen": chosen}


def threshold_markdown(scan: dict) -> str:
    lines = [
        "| min_entity_score | F1 | precision | recall | F1 even sentences | F1 odd sentences |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in scan["rows"]:
        mark = " (chosen on even)" if row["threshold"] == scan["chosen"] else ""
        a = row["all"]
        lines.append(
            f"| {row['threshold']:g}{mark} | {a['f1']:.4f} | {a['precision']:.4f} | {a['recall']:.4f} "
            f"| {row['even']['f1']:.4f} | {row['odd']['f1']:.4f} |"
        )
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    lines = [
        (
            "| decoding | F1 wordpiece spans | F1 exact characters | F1 exact characters, "
            "trimmed | P / R (trimmed) | texts changed | ms / text |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = row["char_trimmed"]
        lines.append(
            f"| {row['decoding']} | {row['wordpiece']['f1']:.4f} | {row['char']['f1']:.4f} | {t['f1']:.4f} "
            f"| {t['precision']:.4f} / {t['recall']:.4f} | {row['changed']} | {row['ms_per_text']:.3f} |"
        )
    return "\n".join(lines)


def run(
    corpus_dir: Path,
    split: str,
    model: Path | None,
    checkpoint: Path | None,
    pretrained: str | None,
    limit: int | None,
    runs: int,
    json_path: Path | None,
) -> list[dict]:
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
        row["changed"] = sum(a != b for a, b in zip(greedy_entities, row.pop("entities"), strict=True))
    print(
        f"\n{split}: {len(examples)} sentences, {len(ner.labels)} labels; predict "
        f"{predict_ms:.2f} ms / sentence (chunks of 64)"
    )
    print(markdown(rows))
    scan = threshold_scan(gold[1], preds, ner)
    print(f"\nentity score threshold (constrained, trimmed); the model names {ner.min_entity_score:g} for itself")
    print(threshold_markdown(scan))
    if json_path:
        json_path.write_text(
            json.dumps(
                {"sentences": len(examples), "predict_ms": predict_ms, "rows": rows, "thresholds": scan}, indent=2
            )
            + "\n",
            encoding="utf-8",
        )
    return rows
