"""Train the embedded demo model: a small Korean NER BERT from scratch on the KMOU corpus.

Reads the ratsnlp NER line format (``sentence`` U+241E ``tagged sentence``, entities marked
``<surface:TAG>``), trains a cased WordPiece vocab, and trains a small
``BertForTokenClassification`` from random init on the CPU, on the train split plus one copy of
it with entities swapped within their type (``--swap-copies``; the corpus is short of data, not
the model of size). ``--out`` gets what a ratsnlp user
has: ``epoch=E-val_loss=X.ckpt`` (Lightning layout, keys prefixed ``model.``), ``label_map.txt``,
the "pretrained" side (``config.json`` without task labels, ``vocab.txt``) and ``metrics.json``.
``--export`` also writes the committed form (fp16 ``model.safetensors`` + config with labels,
vocab, label map, README) to ``demo_model/``. Prints entity precision / recall / F1 on val:
(a) wordpiece spans from BIO decoding, (b) exact character spans from the served prediction path.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import BertWordPieceTokenizer
from torch.nn import functional
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm
from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification, get_linear_schedule_with_warmup

import ner_model
from ner_settings import HandlerSettings
from serving import paths
from serving.corpus import (
    SPECIAL_TOKENS,
    Encoded,
    Example,
    build_label_map,
    encode,
    evaluate,
    markdown_table,
    read_corpus,
)
from study.make_checkpoint import save_lightning

IGNORE = -100  # label of padding: no loss
# Width beat depth here; hidden dropout 0.2 (BERT's default is 0.1) curbs overfitting: val F1 +0.0075.
MODEL_CONFIG: dict[str, Any] = dict(
    hidden_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=1024,
    max_position_embeddings=300,
    hidden_dropout_prob=0.2,
)
WARMUP_RATIO = 0.1


@dataclass(frozen=True)
class TrainSpec:
    """One training run (the CLI's flags, one field each)."""

    corpus: Path = paths.SHARED_DATA  # folder with train.txt and val.txt
    out: Path = paths.RUN_DIR / "demo-train"  # ratsnlp-style output folder
    export: Path | None = None  # also write the committed form here (demo_model/)
    vocab: Path | None = None  # use this vocab.txt instead of training one
    vocab_size: int = 8000
    epochs: int = 8
    max_steps: int = 0  # 0: no limit
    batch_size: int = 32
    lr: float = 1e-3
    max_seq_length: int = 128
    train_limit: int | None = None
    val_limit: int | None = None
    seed: int = 42
    time_budget_min: float = 60.0
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0: none, as ratsnlp)
    swap_copies: int = 1  # extra copies of the train split with entities swapped within their type (the demo recipe)
    swap_rate: float = 0.5  # in each copy, the share of entities replaced
    name_rate: float = 0.0  # in each copy, the share of Korean full names (PER) replaced by made-up full names
    mlm_epochs: int = 0  # masked-language-model pre-training on the train sentences first (0: none)
    mlm_probability: float = 0.15  # share of wordpieces masked in pre-training
    init: Path | None = None  # start from this served model's weights (same labels and vocab) instead of random init
    ema: float = 0.0  # keep an exponential moving average of the weights with this decay per step and ship it (0: off)
    min_entity_score: float = 0.0  # the entity score threshold the model names for itself in config.json (0: none)


# --------------------------------------------------------------------------- vocab


def train_vocab(texts: list[str], size: int, path: Path) -> None:
    """A cased WordPiece vocab in BERT order, from NFC text as the server sees it; the alphabet
    keeps every character (~2,200 here)."""
    wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    nfc = (unicodedata.normalize("NFC", text) for text in texts)
    wordpiece.train_from_iterator(
        nfc, vocab_size=size, limit_alphabet=10_000, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    vocab = wordpiece.get_vocab()
    path.write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- augmentation


def sound_class(surface: str) -> str:
    """What a particle after ``surface`` must fit: its last character ends in a vowel, a final
    consonant, or is not Hangul. A swapped-in entity keeps the class, so ``서울은`` never
    becomes ``파리은``."""
    code = ord(surface[-1]) - 0xAC00
    if not 0 <= code <= 0xD7A3 - 0xAC00:
        return "other"
    return "vowel" if code % 28 == 0 else "consonant"


# Made-up Korean full names for entity swapping: surnames (the common ones listed three times, so
# they come up more often) and given names, many ending in a syllable that also reads as a
# particle (소은, 수아, 미나, 상도), so the model sees ``##은`` inside names, not only after them.
# None of the given names is one of the names probe's (study/eval_names.py), which stays unseen.
COMMON_SURNAMES = "김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 전 홍".split()
RARER_SURNAMES = (
    "류 유 고 문 양 손 배 백 허 남 심 노 하 곽 성 차 주 우 구 민 진 나 지 엄 채 원 천 방 "
    "공 현 함 변 염 여 추 도 소 석 선 설 마 길 연 위 표 명 기 반 왕 금 옥 육 인 맹 제 모 탁 국"
).split()
SWAP_SURNAMES = tuple(COMMON_SURNAMES * 3 + RARER_SURNAMES)
SWAP_GIVEN_NAMES = tuple(
    "소은 윤은 나은 시은 혜은 연은 주은 도은 아은 세은 희은 라은 "  # 은
    "세이 로이 하이 나이 "  # 이
    "수아 은아 채아 하아 윤아 나아 "  # 아
    "미나 보나 이나 수나 혜나 "  # 나
    "상도 재도 영도 "  # 도
    "민수 영호 성민 지훈 현우 준호 서윤 지민 수진 영희 은지 지원 민재 유진 서현 하윤 시우 도현 "
    "건우 지안 하린 예서 윤서 수현 태민 정우 상훈 경민 혜진 미경 은영 진호 동현 승민 정희 영수".split()
)


def korean_full_name(surface: str) -> bool:
    """Three Hangul syllables starting with a surname: the shape of most Korean full names."""
    return len(surface) == 3 and surface[0] in SWAP_SURNAMES and all(sound_class(char) != "other" for char in surface)


def made_up_name(sound: str, rng: random.Random) -> str:
    """A surname + given name whose last syllable has ``sound`` (so the particle after it fits)."""
    return rng.choice(SWAP_SURNAMES) + rng.choice([g for g in SWAP_GIVEN_NAMES if sound_class(g) == sound])


def swap_entities(
    examples: list[Example], copies: int, rate: float, seed: int, name_rate: float = 0.0
) -> list[Example]:
    """``copies`` new versions of the examples in which each entity is, with probability
    ``rate``, replaced by the surface of another entity of the same type and sound class
    from the same split; before that, a Korean full name (PER) is replaced with probability
    ``name_rate`` by a made-up one of the same sound class (seeded: the same every run)."""
    pool: dict[tuple[str, str], list[str]] = {}
    for ex in examples:
        for kind, a, b in ex.spans:
            pool.setdefault((kind, sound_class(ex.text[a:b])), []).append(ex.text[a:b])
    rng = random.Random(seed)
    names = random.Random(seed + 1)  # its own stream: name_rate 0 leaves the other swaps as they were
    out = []
    for _ in range(copies):
        for ex in examples:
            parts, spans, last, shift = [], [], 0, 0
            for kind, a, b in ex.spans:
                surface = ex.text[a:b]
                if kind == "PER" and name_rate and korean_full_name(surface) and names.random() < name_rate:
                    surface = made_up_name(sound_class(surface), names)
                elif rng.random() < rate:
                    surface = rng.choice(pool[(kind, sound_class(surface))])
                parts += [ex.text[last:a], surface]
                spans.append((kind, a + shift, a + shift + len(surface)))
                shift += len(surface) - (b - a)
                last = b
            parts.append(ex.text[last:])
            out.append(Example("".join(parts), spans))
    return out


# --------------------------------------------------------------------------- features


def make_batch(
    rows: list[Encoded], labels: list[str], max_len: int, special: dict[str, int]
) -> dict[str, torch.Tensor]:
    """[CLS] ids [SEP], truncated to ``max_len`` and padded to the longest row; [CLS] and
    [SEP] carry their own labels as in ratsnlp, padding carries no loss."""
    label_id = {label: i for i, label in enumerate(labels)}
    width = min(max_len, max(len(r.ids) for r in rows) + 2)
    input_ids = torch.full((len(rows), width), special["[PAD]"], dtype=torch.long)
    label_ids = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = min(len(row.ids), width - 2)
        input_ids[i, : n + 2] = torch.tensor([special["[CLS]"], *row.ids[:n], special["[SEP]"]])
        tags = ["[CLS]", *row.tags[:n], "[SEP]"]
        label_ids[i, : n + 2] = torch.tensor([label_id.get(tag, IGNORE) for tag in tags])
        attention[i, : n + 2] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": label_ids,
    }


def batches(rows: list[Encoded], size: int, rng: random.Random | None, pool: int = 50) -> list[list[Encoded]]:
    """Batches of rows of similar length, so padding to the longest stays small. With ``rng``
    (training): shuffle, sort each pool of ``pool`` batches by length, shuffle the batches.
    Without: all rows sorted by length."""
    order = list(range(len(rows)))
    chunk = len(order)
    if rng is not None:
        rng.shuffle(order)
        chunk = size * pool
    order = [
        i for k in range(0, len(order), chunk) for i in sorted(order[k : k + chunk], key=lambda i: len(rows[i].ids))
    ]
    groups = [order[k : k + size] for k in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(groups)
    return [[rows[i] for i in group] for group in groups]


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    epoch: int  # the last epoch trained, counted from 0 as Lightning does
    global_step: int
    seconds: float  # wall clock
    cpu_seconds: float  # all threads: on a busy machine, a better measure of the work
    cut_by_time_budget: bool


def training_batches(rows: list[Encoded], args: TrainSpec):
    """(epoch, batch) for every step of every epoch, in the seeded order."""
    rng = random.Random(args.seed)
    for epoch in range(args.epochs):
        for batch in batches(rows, args.batch_size, rng):
            yield epoch, batch


def optimise(
    model: torch.nn.Module,
    steps: Iterable[tuple[int, list[Encoded]]],
    total: int,
    loss_of: Callable[[list[Encoded]], torch.Tensor | None],
    args: TrainSpec,
    desc: str,
    average: AveragedModel | None = None,
) -> TrainResult:
    """AdamW with linear warmup and decay over ``total`` steps of (epoch, batch), gradients
    clipped to norm 1, a progress bar, and the time budget. ``loss_of`` gives a batch's loss
    (None: skip the batch); ``average``, if given, is updated after every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(total * WARMUP_RATIO), total)
    model.train()
    start, cpu_start, step, epoch, cut = time.monotonic(), time.process_time(), 0, 0, False
    with tqdm(total=total, desc=desc, unit="step", mininterval=2) as bar:
        for epoch, batch in itertools.islice(steps, total):
            loss = loss_of(batch)
            if loss is None:
                continue
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            if average is not None:
                average.update_parameters(model)
            step += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
            cut = time.monotonic() - start > args.time_budget_min * 60 and step < total
            if cut:
                print(
                    (
                        f"warning: time budget of {args.time_budget_min} min reached after {step} of "
                        f"{total} steps ({desc})"
                    ),
                    file=sys.stderr,
                )
                break
    return TrainResult(epoch, step, time.monotonic() - start, time.process_time() - cpu_start, cut)


def train(
    model: BertForTokenClassification,
    rows: list[Encoded],
    labels: list[str],
    special: dict[str, int],
    args: TrainSpec,
    average: AveragedModel | None = None,
) -> TrainResult:
    steps_per_epoch = -(-len(rows) // args.batch_size)
    total = min(args.max_steps or steps_per_epoch * args.epochs, steps_per_epoch * args.epochs)

    def loss_of(batch: list[Encoded]) -> torch.Tensor:
        inputs = make_batch(batch, labels, args.max_seq_length, special)
        gold = inputs.pop("labels")
        logits = model(**inputs).logits
        return functional.cross_entropy(
            logits.flatten(0, 1), gold.flatten(), ignore_index=IGNORE, label_smoothing=args.label_smoothing
        )

    return optimise(model, training_batches(rows, args), total, loss_of, args, "train", average)


def mask_wordpieces(
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    special: dict[str, int],
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``probability`` of the real wordpieces are chosen; of those 80 % become
    [MASK], 10 % a random wordpiece, 10 % stay. Returns (the masked ids, which were chosen)."""
    candidates = attention.bool() & (input_ids != special["[CLS]"]) & (input_ids != special["[SEP]"])

    def draw(p: float) -> torch.Tensor:
        return torch.rand(input_ids.shape, generator=generator) < p

    chosen = candidates & draw(probability)
    masked = input_ids.clone()
    to_mask = chosen & draw(0.8)
    to_random = chosen & ~to_mask & draw(0.5)
    masked[to_mask] = special["[MASK]"]
    masked[to_random] = torch.randint(len(special), vocab_size, (int(to_random.sum()),), generator=generator)
    return masked, chosen


def pretrain(
    config: BertConfig, rows: list[Encoded], labels: list[str], special: dict[str, int], args: TrainSpec
) -> tuple[dict, TrainResult]:
    """Masked-language-model pre-training from random init on the train sentences (their tags
    unused): the encoder's weights, to start fine-tuning from. The prediction head runs on the
    chosen wordpieces only, so a step costs about what a fine-tuning step costs."""
    model = BertForMaskedLM(config)
    generator = torch.Generator().manual_seed(args.seed)

    def loss_of(batch: list[Encoded]) -> torch.Tensor | None:
        inputs = make_batch(batch, labels, args.max_seq_length, special)
        masked, chosen = mask_wordpieces(
            inputs["input_ids"], inputs["attention_mask"], special, config.vocab_size, args.mlm_probability, generator
        )
        if not chosen.any():
            return None
        hidden = model.bert(input_ids=masked, attention_mask=inputs["attention_mask"]).last_hidden_state
        return functional.cross_entropy(model.cls(hidden[chosen]), inputs["input_ids"][chosen])

    total = -(-len(rows) // args.batch_size) * args.mlm_epochs
    result = optimise(
        model,
        training_batches(rows, replace(args, epochs=args.mlm_epochs)),
        total,
        loss_of,
        args,
        "pre-train (masked LM)",
    )
    return model.bert.state_dict(), result


@torch.inference_mode()
def validation_loss(
    model: BertForTokenClassification, rows: list[Encoded], labels: list[str], special: dict[str, int], args: TrainSpec
) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in batches(rows, args.batch_size, None):
        inputs = make_batch(batch, labels, args.max_seq_length, special)
        gold = inputs.pop("labels")
        logits = model(**inputs).logits
        total += functional.cross_entropy(
            logits.flatten(0, 1), gold.flatten(), ignore_index=IGNORE, reduction="sum"
        ).item()
        count += int((gold != IGNORE).sum())
    return total / max(count, 1)


# --------------------------------------------------------------------------- writing


def write_checkpoint(out: Path, model: BertForTokenClassification, result: TrainResult, val_loss: float) -> Path:
    """Lightning's layout; an older checkpoint in ``out`` is removed so packaging picks this one."""
    for old in out.glob("epoch=*-val_loss=*.ckpt"):
        old.unlink()
    return save_lightning(
        out / f"epoch={result.epoch}-val_loss={val_loss:.4f}.ckpt", model, result.epoch, result.global_step
    )


def model_config(
    vocab_size: int, pad_id: int | None, labels: list[str] | None = None, min_entity_score: float = 0.0
) -> BertConfig:
    """The demo shape; without labels it is the "pretrained" config a base model ships. A
    threshold goes where the server reads a model's own (ner_model.model_threshold)."""
    extra: dict[str, Any] = (
        dict(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)}) if labels else {}
    )
    if min_entity_score:
        extra["task_specific_params"] = {ner_model.TASK: {"min_entity_score": min_entity_score}}
    return BertConfig(vocab_size=vocab_size, pad_token_id=pad_id, **MODEL_CONFIG, **extra)


def export(
    out: Path, export_dir: Path, model: BertForTokenClassification, labels: list[str], min_entity_score: float = 0.0
) -> None:
    """The committed form: fp16 safetensors with HF key names, config with labels (and the
    entity score threshold, if any)."""
    export_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(export_dir / "model.safetensors"), metadata={"format": "pt"})
    model_config(model.config.vocab_size, model.config.pad_token_id, labels, min_entity_score).to_json_file(
        str(export_dir / "config.json")
    )
    for name in ("vocab.txt", "label_map.txt"):
        shutil.copyfile(out / name, export_dir / name)


def export_readme(command: str, metrics: dict) -> str:
    shape = ", ".join(f"{k} {v}" for k, v in MODEL_CONFIG.items())
    minutes, cpu_minutes = metrics["train_seconds"] / 60, metrics["train_cpu_seconds"] / 60
    cut = " **Cut by the time budget: not the full run.**" if metrics["cut_by_time_budget"] else ""
    init = (
        (
            f" This run started from the weights in `{metrics['init']}` (`--init`), not from random ones: the"
            " epochs, steps and minutes are of this stage alone."
        )
        if metrics.get("init")
        else ""
    )
    threshold, every_score = "", ""
    if "served_every_score" in metrics:
        threshold = (
            f",\nand the entity score threshold this model names for itself in `config.json`,"
            f" {metrics['min_entity_score']:g}: entities\nscored below it are left out"
        )
        every = metrics["served_every_score"]["overall"]
        every_score = (
            "\nWithout the threshold (`min_entity_score: 0` in the model config): precision "
            f"{every['precision']:.4f},\n"
            f"recall {every['recall']:.4f}, F1 {every['f1']:.4f}, {every['predicted']} predicted.\n"
        )
    return f"""# Demo model: small Korean NER BERT trained from scratch

This is a **demo model**, not a production one: a small `BertForTokenClassification` trained
from random initialisation on the KMOU Korean NER corpus (train split, {metrics["train_sentences"]}
sentences), so that the quick start serves a real model with no download. Real deployments
package their own fine-tuned kcbert checkpoint.

- Config: {shape}, vocab {metrics["vocab_size"]}.
- Licence: the training corpus is **non-commercial use only**, and so is this model.
- Weights: `model.safetensors`, stored in **half precision (fp16)** to keep the folder small; the
  handler loads them as float32. The scores below are of these fp16 weights.
- Files: `config.json` (with the labels), `vocab.txt` (cased WordPiece), `label_map.txt` (ratsnlp order).
- Made by this command: {metrics["epoch"] + 1} epochs, {metrics["global_step"]} steps, {minutes:.1f} min wall clock
  with 2 CPU threads, {cpu_minutes:.1f} CPU-minutes.{cut} Wall clock depends on what else the
  machine runs; CPU-minutes / 2 is roughly the wall time on 2 idle cores. `--time-budget-min`
  stops training early: a cut run scores differently from the full one.{init}

```
{command}
```

Without `--vocab` the script trains the vocab itself; the vocab trainer is not deterministic,
so runs differ by about ±0.01 F1 from the vocab alone. With `--vocab demo_model/vocab.txt` and
the same seed, training is deterministic on the same machine: it reproduces these weights.

## Validation scores ({metrics["val_sentences"]} sentences)

Entity level, exact span and type, micro-averaged.

(a) Wordpiece spans (gold: the aligned wordpiece BIO tags; predicted: the model's BIO tags):

{markdown_table(metrics["wordpiece"])}

(b) Exact character spans (gold: the corpus markup; predicted: the `entities` from the argmax
tags, no particle trimming):

{markdown_table(metrics["char"])}

(c) Exact character spans as served by the shipped config (BIO-constrained decoding, particle
trimming{threshold}):

{markdown_table(metrics["served"])}
{every_score}"""


# --------------------------------------------------------------------------- main


def start_from(model: BertForTokenClassification, init: Path, labels: list[str], vocab_size: int) -> None:
    """Load a served model's weights (``demo_model/``: fp16, read as float32 by the serving
    code's loader) into ``model``; its labels and vocab must be this run's."""
    source = ner_model.load_model(init, HandlerSettings(runtime="torch", torch_threads=0))  # the run keeps its threads
    if source.labels != labels or source.tokenizer.get_vocab_size() != vocab_size:
        sys.exit(f"--init {init}: its labels or vocab differ from this run's (use --vocab {init / 'vocab.txt'})")
    model.load_state_dict(source.model.state_dict())


def prepare_vocab(args: TrainSpec, train_texts: list[str]) -> Path:
    path = args.out / "vocab.txt"
    if args.vocab is None:
        train_vocab(train_texts, args.vocab_size, path)
    elif args.vocab.resolve() != path.resolve():
        shutil.copyfile(args.vocab, path)
    return path


def run(args: TrainSpec, command: str) -> dict:
    """Train, checkpoint, evaluate (and export): the metrics. ``command`` goes into the exported README."""
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)

    all_train, train_skipped = read_corpus(args.corpus / "train.txt")
    all_val, val_skipped = read_corpus(args.corpus / "val.txt")
    train_examples, val_examples = all_train[: args.train_limit], all_val[: args.val_limit]
    print(
        (
            f"train {len(train_examples)} sentences, val {len(val_examples)}; lines skipped "
            f"(markup does not match the sentence): train {train_skipped}, val {val_skipped}"
        ),
        file=sys.stderr,
    )
    labels = build_label_map(all_train)  # from the whole train file, as ratsnlp does
    (args.out / "label_map.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    tokenizer = ner_model.build_tokenizer(prepare_vocab(args, [ex.text for ex in train_examples]))
    special: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        found = tokenizer.token_to_id(token)
        if found is None:
            raise SystemExit(f"train_demo: error: the trained vocab lacks {token}")
        special[token] = found
    swapped = swap_entities(train_examples, args.swap_copies, args.swap_rate, args.seed, args.name_rate)
    train_rows, val_rows = encode(train_examples + swapped, tokenizer), encode(val_examples, tokenizer)

    encoder_config = model_config(tokenizer.get_vocab_size(), special["[PAD]"])  # the "pretrained" side: no labels
    encoder_config.to_json_file(str(args.out / "config.json"))
    model = BertForTokenClassification(model_config(tokenizer.get_vocab_size(), special["[PAD]"], labels))
    pretrained = None
    if args.init is not None:
        start_from(model, args.init, labels, tokenizer.get_vocab_size())
        print(f"starting from the weights in {args.init}", file=sys.stderr)
    elif args.mlm_epochs:
        encoder, pretrained = pretrain(encoder_config, train_rows, labels, special, args)
        model.bert.load_state_dict(encoder)
        print(
            f"pre-trained the encoder: {pretrained.global_step} steps, {pretrained.seconds / 60:.1f} min",
            file=sys.stderr,
        )
    # The moving average of the weights (torch's own EMA) is what is shipped when --ema is on;
    # the last weights are still scored, so each run shows what the average gave.
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema)) if args.ema else None
    result = train(model, train_rows, labels, special, args, average)
    last_weights = None
    if average is not None:
        last_weights = evaluate(
            ner_model.NerModel(model.eval(), tokenizer, labels, HandlerSettings(), args.min_entity_score),
            val_examples,
            val_rows,
        )["served"]
        model.load_state_dict(average.module.state_dict())
    val_loss = validation_loss(model, val_rows, labels, special, args)
    checkpoint = write_checkpoint(args.out, model, result, val_loss)

    metrics: dict[str, Any] = {
        "val_loss": val_loss,
        "epoch": result.epoch,
        "global_step": result.global_step,
        "train_seconds": round(result.seconds, 1),
        "train_cpu_seconds": round(result.cpu_seconds, 1),
        "cut_by_time_budget": result.cut_by_time_budget,
        "pretrain_steps": pretrained.global_step if pretrained else 0,
        "pretrain_seconds": round(pretrained.seconds, 1) if pretrained else 0.0,
        "pretrain_cpu_seconds": round(pretrained.cpu_seconds, 1) if pretrained else 0.0,
        "train_sentences": len(train_examples),
        "val_sentences": len(val_examples),
        "skipped_lines": {"train": train_skipped, "val": val_skipped},
        "vocab_size": tokenizer.get_vocab_size(),
        "init": str(args.init) if args.init else None,
        "ema": args.ema,
        "served_last_weights": last_weights,
        "min_entity_score": args.min_entity_score,
    }
    ner = ner_model.NerModel(model.eval(), tokenizer, labels, HandlerSettings(), args.min_entity_score)
    if args.export:
        export(args.out, args.export, model, labels, args.min_entity_score)
        ner = ner_model.load_model(
            args.export, HandlerSettings(torch_threads=0)
        )  # score what is committed: fp16 weights
    metrics |= evaluate(ner, val_examples, val_rows)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if args.export:
        (args.export / "README.md").write_text(export_readme(command, metrics), encoding="utf-8")

    print(
        (
            f"wrote {checkpoint} ({result.global_step} steps, {result.seconds / 60:.1f} min, "
            f"{result.cpu_seconds / 60:.1f} CPU-min)"
        ),
        file=sys.stderr,
    )
    print(f"\n(a) wordpiece spans, val\n\n{markdown_table(metrics['wordpiece'])}")
    print(f"\n(b) exact character spans, val\n\n{markdown_table(metrics['char'])}")
    print(
        "\n(c) exact character spans as served (constrained decoding, particle "
        f"trimming), val\n\n{markdown_table(metrics['served'])}"
    )
    return metrics
