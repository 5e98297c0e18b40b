"""Measure cutting Korean particles (조사) off entity spans, per approach, on a KMOU split.

For each approach (``none``: spans as the wordpieces give them; ``list``: the ner_particles
list alone; ``list+names``: the list with its name guards (entity type, the next wordpiece,
surnames); ``list+names+completion``: the shipped trimming, which also gives a person the model
ended one syllable short of a name that syllable back (``송하`` + ``은``); ``kiwi``: particle
morphemes found by the Kiwi analyser, needs ``pip install kiwipiepy==0.24.1
kiwipiepy-model==0.24.0``; ``kiwi+list``: cut only as far as both of them cut), prints a markdown table of:
- oracle F1: perfect token labels (gold spans aligned to the model's wordpieces as in training,
  decoded by the served code), i.e. the best any tagger on this vocab could score;
- model F1 of the served model (``ner_model.load_model`` / ``predict`` / ``find_entities``);
- the time the trimming adds per sentence, and the memory it adds to a process;
then, for oracle and model, how many entity spans each approach changes against the one
before it in the table, and how many of those it fixes and breaks.
F1 is character-exact entity F1 (type, start, end), micro over all types.
"""

from __future__ import annotations

import functools
import itertools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

import ner_core
import ner_model
import ner_particles
from ner_labels import spans_to_tags
from ner_settings import HandlerSettings
from serving import corpus
from serving.corpus import Example
from study import eval_decoding

APPROACHES = ("none", "list", "list+names", "list+names+completion", "kiwi", "kiwi+list")
PROBE = "서울에서는 삼성전자가 3월에 1,000원을 냈다."  # one warm-up sentence for the memory probe


# --------------------------------------------------------------------------- approaches


def kiwi_trim(kiwi) -> ner_particles.Trim:
    """Cut where the particle morphemes (Kiwi tags J*) that end the entity begin. The
    analysis is of the whole sentence (context decides 이 the surname vs 이 the particle),
    cached so several entities of one sentence cost one analysis."""
    analyse = functools.lru_cache(maxsize=8)(kiwi.tokenize)

    def trim(text: str, start: int, end: int, piece_start: int, **_context) -> int:
        floor, cut = max(start + 1, piece_start), end
        for token in reversed(analyse(text)):
            if token.start >= end:
                continue
            if token.start < floor or not token.tag.startswith("J"):
                break
            cut = token.start
        return cut

    return trim


def make_trims(names: list[str]) -> dict[str, ner_particles.Trim | None]:
    """A fresh trim per approach (fresh caches, so timings include the analysis)."""
    trims: dict[str, ner_particles.Trim | None] = {
        "none": None,
        "list": lambda text, start, end, piece, **_context: ner_particles.trim_end(text, start, end, piece),
        "list+names": lambda text, start, end, piece, **context: ner_particles.trim_end(
            text, start, end, piece, **{**context, "next_outside": False}
        ),
        "list+names+completion": ner_particles.trim_end,
    }
    if any(name.startswith("kiwi") for name in names):
        kiwi = kiwi_trim(load_kiwi())
        trims["kiwi"] = kiwi
        trims["kiwi+list"] = lambda text, start, end, piece, **_context: max(
            kiwi(text, start, end, piece), ner_particles.trim_end(text, start, end, piece)
        )
    return {name: trims[name] for name in names}


@functools.cache
def load_kiwi():
    try:
        from kiwipiepy import Kiwi
    except ImportError:
        sys.exit("the kiwi approaches need: pip install kiwipiepy==0.24.1 kiwipiepy-model==0.24.0")
    return Kiwi()


# --------------------------------------------------------------------------- predictions


def oracle_predictions(examples: list[Example], tokenizer, labels: list[str]) -> list[ner_core.TokenPredictions]:
    """Perfect token labels: each wordpiece gets the gold tag of the entity its start lies in."""
    label_id = {label: i for i, label in enumerate(labels)}
    encodings = tokenizer.encode_batch([ex.text for ex in examples], add_special_tokens=False)
    out = []
    for ex, enc in zip(examples, encodings, strict=True):
        tags = spans_to_tags(enc.offsets, ex.spans)
        out.append(
            ner_core.TokenPredictions(
                ex.text, list(enc.tokens), list(enc.offsets), [label_id[t] for t in tags], [1.0] * len(tags)
            )
        )
    return out


def model_predictions(ner: ner_model.NerModel, texts: list[str]) -> tuple[list[ner_core.TokenPredictions], float]:
    """The served model's token predictions, and the seconds they took."""
    started = time.perf_counter()
    return eval_decoding.predictions(ner, texts), time.perf_counter() - started


# --------------------------------------------------------------------------- scoring


def entity_f1(
    examples: list[Example], preds: list[ner_core.TokenPredictions], labels: list[str], trim
) -> dict[str, float]:
    """Character-exact entity precision / recall / F1 of the served entities (micro)."""
    gold = [set(ex.spans) for ex in examples]
    found = []
    for pred in preds:
        found.append({e.span for e in ner_core.find_entities(pred, labels, trim=trim)})
    overall = corpus.score(gold, found)["overall"]
    return {key: overall[key] for key in ("precision", "recall", "f1")}


def served_entities(preds: list[ner_core.TokenPredictions], labels: list[str], trim) -> list[set]:
    return [{e.span for e in ner_core.find_entities(p, labels, trim=trim)} for p in preds]


def changes(
    examples: list[Example], preds: list[ner_core.TokenPredictions], labels: list[str], before, after
) -> dict[str, int]:
    """Entity spans that ``after`` decodes differently from ``before``: how many, how many of
    them it fixes (now the gold span) and breaks (the gold span before, not now)."""
    counts = {"changed": 0, "fixed": 0, "broken": 0}
    for ex, old, new in zip(
        examples, served_entities(preds, labels, before), served_entities(preds, labels, after), strict=True
    ):
        gold = set(ex.spans)
        counts["changed"] += len(new - old)
        counts["fixed"] += len((new - old) & gold)
        counts["broken"] += len((old - new) & gold)
    return counts


def added_ms_per_sentence(preds: list[ner_core.TokenPredictions], labels: list[str], name: str, runs: int) -> float:
    """Median over ``runs`` of (find_entities with the approach - without) per sentence, in ms."""

    def seconds(trim) -> float:
        started = time.perf_counter()
        for pred in preds:
            ner_core.find_entities(pred, labels, trim=trim)
        return time.perf_counter() - started

    deltas = []
    for _ in tqdm(range(runs), desc=f"time {name}", unit="run"):
        trim = make_trims([name])[name]
        deltas.append(seconds(trim) - seconds(None))
    return statistics.median(deltas) / len(preds) * 1000


def memory_probe(name: str) -> dict[str, float]:
    """In a fresh process: MB of resident memory the approach adds once ner_core is imported
    (what a TorchServe worker holds), and the seconds its setup takes."""
    setup = (
        f"from kiwipiepy import Kiwi; Kiwi().tokenize({PROBE!r})"
        if name.startswith("kiwi")
        else f"import ner_particles; ner_particles.trim_end({PROBE!r}, 0, 4, 0)"
    )
    code = (
        "import time, json, psutil; import ner_core; "
        "p = psutil.Process(); before = p.memory_info().rss; t = time.perf_counter(); "
        f"{setup}; "
        "print(json.dumps({'mb': (p.memory_info().rss - before) / 2**20, 'load_s': time.perf_counter() - t}))"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def median_memory(name: str, runs: int) -> dict[str, float]:
    if name == "none":
        return {"mb": 0.0, "load_s": 0.0}
    probes = [memory_probe(name) for _ in tqdm(range(runs), desc=f"memory {name}", unit="process")]
    return {key: statistics.median(p[key] for p in probes) for key in ("mb", "load_s")}


# --------------------------------------------------------------------------- main


def markdown(rows: list[dict], baseline_ms: float | None) -> str:
    lines = [
        "| approach | oracle F1 | model F1 | model P / R | added ms / sentence | added memory / process | setup |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        model = row.get("model")
        f1 = f"{model['f1']:.4f}" if model else "–"
        pr = f"{model['precision']:.4f} / {model['recall']:.4f}" if model else "–"
        share = f" ({row['ms'] / baseline_ms:.1%} of predict)" if baseline_ms else ""
        lines.append(
            f"| {row['name']} | {row['oracle']['f1']:.4f} | {f1} | {pr} | {row['ms']:.3f}{share} "
            f"| {row['memory']['mb']:.0f} MB | {row['memory']['load_s']:.2f} s |"
        )
    return "\n".join(lines)


def run(
    corpus_dir: Path,
    split: str,
    model: Path,
    vocab: Path | None,
    approaches: list[str],
    limit: int | None,
    runs: int,
    json_path: Path | None,
) -> list[dict]:
    """Score every approach on the split, print the table (and write the JSON): the rows."""
    examples = corpus.read_corpus(corpus_dir / f"{split}.txt")[0][:limit]
    texts = [ex.text for ex in examples]
    trims = make_trims(approaches)
    if vocab:
        ner, labels = None, corpus.build_label_map(examples)
        tokenizer = ner_model.build_tokenizer(vocab)
    else:
        ner = ner_model.load_model(model, HandlerSettings(torch_threads=0))  # in-process: all of torch's threads
        labels, tokenizer = ner.labels, ner.tokenizer
    oracle = oracle_predictions(examples, tokenizer, labels)
    preds, predict_s = model_predictions(ner, texts) if ner else (None, 0.0)
    timed = preds or oracle
    baseline_ms = predict_s / len(texts) * 1000 if ner else None

    rows = []
    for name, trim in trims.items():
        row: dict[str, Any] = {"name": name, "oracle": entity_f1(examples, oracle, labels, trim)}
        if preds:
            row["model"] = entity_f1(examples, preds, labels, trim)
        row["ms"] = 0.0 if trim is None else added_ms_per_sentence(timed, labels, name, runs)
        row["memory"] = median_memory(name, runs)
        rows.append(row)

    print(
        f"\n{split}: {len(texts)} sentences; "
        + (f"predict {baseline_ms:.2f} ms / sentence (chunks of 64)" if ner else "oracle only")
    )
    print(markdown(rows, baseline_ms))
    names = list(trims)
    for a, b in itertools.pairwise(names):
        for who, predictions in (("oracle", oracle), ("model", preds)):
            if predictions:
                counted = changes(examples, predictions, labels, trims[a], trims[b])
                rows[names.index(b)].setdefault("changes", {})[who] = counted
                print(
                    f"{b} against {a}, {who}: {counted['changed']} spans changed, {counted['fixed']} "
                    f"fixed, {counted['broken']} broken"
                )
    if json_path:
        json_path.write_text(
            json.dumps({"sentences": len(texts), "predict_ms": baseline_ms, "rows": rows}, indent=2) + "\n",
            encoding="utf-8",
        )
    return rows
