"""The demo-model training script: corpus parsing, label alignment, and a few-step run."""

from __future__ import annotations

import json

import pytest
import torch

import ner_core
import ner_model
from ner_labels import spans_to_tags
from ner_settings import HandlerSettings
from scripts import package_model as package_cli
from scripts import train_demo as train_cli
from serving import corpus, paths
from study import train_demo
from study.train_demo import mask_wordpieces, sound_class, swap_entities
from tests.unit.answers import answer_for

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tokenizer_with(tmp_path, words):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIALS + words) + "\n", encoding="utf-8")
    return ner_model.build_tokenizer(path)


def test_parse_tagged_gives_plain_text_and_character_spans():
    example = corpus.parse_tagged("<이순신:PER>은 <조선 중기:DAT>의 무신이다.")
    assert example.text == "이순신은 조선 중기의 무신이다."
    assert example.spans == [("PER", 0, 3), ("DAT", 5, 10)]
    assert [example.text[a:b] for _, a, b in example.spans] == ["이순신", "조선 중기"]


def test_parse_tagged_keeps_angle_brackets_inside_a_surface():
    example = corpus.parse_tagged("<<2>:NOH> 문제의 근원")
    assert example.text == "<2> 문제의 근원"
    assert example.spans == [("NOH", 0, 3)]


def test_spans_to_tags_by_wordpiece_start(tmp_path):
    tokenizer = tokenizer_with(tmp_path, ["이순", "##신", "##은", "조선", "중기", "##의", "무신", "##이다", "."])
    example = corpus.parse_tagged("<이순신:PER>은 <조선 중기:DAT>의 무신이다.")
    enc = tokenizer.encode(example.text, add_special_tokens=False)
    assert enc.tokens == ["이순", "##신", "##은", "조선", "중기", "##의", "무신", "##이다", "."]
    tags = spans_to_tags(enc.offsets, example.spans)
    assert tags == ["B-PER", "I-PER", "O", "B-DAT", "I-DAT", "O", "O", "O", "O"]
    assert ner_core.group_entities(tags) == [("PER", 0, 1), ("DAT", 3, 4)]


def test_spans_to_tags_wordpiece_crossing_the_entity_end_and_adjacent_entities(tmp_path):
    tokenizer = tokenizer_with(tmp_path, ["이순", "##신은", "김", "##철수"])
    enc = tokenizer.encode("이순신은", add_special_tokens=False)
    assert enc.tokens == ["이순", "##신은"]
    assert spans_to_tags(enc.offsets, [("PER", 0, 3)]) == ["B-PER", "I-PER"]
    enc = tokenizer.encode("김철수", add_special_tokens=False)  # two entities touching
    assert spans_to_tags(enc.offsets, [("PER", 0, 1), ("PER", 1, 3)]) == ["B-PER", "B-PER"]


def test_label_map_in_ratsnlp_order():
    examples = [corpus.parse_tagged("<서울:LOC>의 <김철수:PER>"), corpus.parse_tagged("<홍길동:PER>")]
    assert corpus.build_label_map(examples) == [
        "[CLS]",
        "[SEP]",
        "[PAD]",
        "[MASK]",
        "O",
        "B-LOC",
        "B-PER",
        "I-LOC",
        "I-PER",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-step run on a small slice of the corpus: (ratsnlp-style folder, export folder)."""
    if not (paths.SHARED_DATA / "train.txt").is_file():
        pytest.skip(f"KMOU corpus not found at {paths.SHARED_DATA}")
    tmp = tmp_path_factory.mktemp("train_demo")
    out, export = tmp / "train", tmp / "export"
    argv = ["--max-steps", "3", "--train-limit", "200", "--val-limit", "50", "--vocab-size", "500"]
    assert train_cli.main([*argv, "--out", str(out), "--export", str(export), "--min-entity-score", "0.5"]) == 0
    return out, export


def test_training_writes_what_a_ratsnlp_user_has(trained):
    out, _ = trained
    (ckpt_path,) = out.glob("epoch=*-val_loss=*.ckpt")
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["global_step"] == 3
    assert ckpt["state_dict"] and all(key.startswith("model.") for key in ckpt["state_dict"])
    labels = (out / "label_map.txt").read_text(encoding="utf-8").splitlines()
    assert labels[:5] == ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "O"]
    assert "id2label" not in json.loads((out / "config.json").read_text())  # the pretrained side
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines()[:5] == SPECIALS
    metrics = json.loads((out / "metrics.json").read_text())
    for view in ("wordpiece", "char", "served"):
        assert 0.0 <= metrics[view]["overall"]["f1"] <= 1.0


def test_export_loads_with_the_serving_code(trained):
    out, export = trained
    ner = ner_model.load_model(export, HandlerSettings())
    assert ner.labels == ner_model.read_label_map(out / "label_map.txt")
    assert (export / "README.md").is_file()


def test_export_names_the_entity_score_threshold_it_was_scored_with(trained):
    out, export = trained
    assert ner_model.load_model(export, HandlerSettings()).min_entity_score == 0.5
    assert "task_specific_params" not in json.loads((out / "config.json").read_text())  # the pretrained side
    metrics = json.loads((out / "metrics.json").read_text())
    served, every = metrics["served"]["overall"], metrics["served_every_score"]["overall"]
    assert metrics["min_entity_score"] == 0.5 and served["predicted"] <= every["predicted"]
    card = (export / "README.md").read_text(encoding="utf-8")
    assert "entity score threshold this model names for itself in `config.json`, 0.5" in card
    assert f"F1 {every['f1']:.4f}, {every['predicted']} predicted" in card


def test_training_output_packages_into_a_mar(trained, tmp_path):
    out, _ = trained
    argv = ["--checkpoint", str(out), "--name", "demo", "--export-path", str(tmp_path)]
    assert package_cli.main(argv) == 0
    assert (tmp_path / "demo.mar").is_file()


def test_committed_demo_model_finds_the_person():
    if not paths.demo_model_available():
        pytest.skip(f"no demo model in {paths.DEMO_MODEL_DIR}; make it with scripts/train_demo.py --export")
    ner = ner_model.load_model(paths.DEMO_MODEL_DIR, HandlerSettings())
    (pred,) = ner_core.predict(ner, ["이순신은 조선 중기의 무신이다."])
    entities = answer_for(pred, ner.labels)["entities"]
    assert ("이순신", "PER") in [(e["text"], e["label"]) for e in entities]


def gaps(example: corpus.Example) -> list[str]:
    ends = [0] + [b for _, _, b in example.spans]
    starts = [a for _, a, _ in example.spans] + [len(example.text)]
    return [example.text[e:s] for e, s in zip(ends, starts, strict=True)]


def test_entity_swapping_keeps_type_markup_and_particle_sound():
    examples = [
        corpus.parse_tagged(t)
        for t in (
            "<서울:LOC>은 크다. <김정은:PER>이 왔다.",
            "<파리:LOC>는 멀다.",
            "<부산:LOC>은 가깝다, <이순신:PER>이 말했다.",
            "<KBS:ORG>는 보도했다.",
            "<삼성전자:ORG>가 발표했다.",
        )
    ]
    swapped = swap_entities(examples, copies=3, rate=1.0, seed=7)
    assert len(swapped) == 3 * len(examples)
    assert swapped == swap_entities(examples, copies=3, rate=1.0, seed=7)  # seeded
    surfaces = {(ex.text[a:b], kind) for ex in examples for kind, a, b in ex.spans}
    changed = 0
    for new, old in zip(swapped, examples * 3, strict=True):
        assert [kind for kind, _, _ in new.spans] == [kind for kind, _, _ in old.spans]
        assert gaps(new) == gaps(old)  # the text around the entities (particles included) stays
        for (kind, a, b), (_, c, d) in zip(new.spans, old.spans, strict=True):
            assert (new.text[a:b], kind) in surfaces  # a surface of the same type from the split
            # the same sound class, so the particle after it still fits (서울은 never becomes 파리은)
            assert sound_class(new.text[a:b]) == sound_class(old.text[c:d])
            changed += new.text[a:b] != old.text[c:d]
    assert changed > 0
    assert swap_entities(examples, copies=1, rate=0.0, seed=7) == examples


def test_entity_swapping_puts_in_made_up_korean_full_names():
    examples = [
        corpus.parse_tagged(t)
        for t in (
            "<김정은:PER>이 왔다.",
            "<박지성:PER>은 웃었다.",
            "<이순신:PER>이 말했다.",
            "<트럼프:PER>는 떠났다.",
            "<이영표:PER>가 뛰었다.",
        )
    ]
    swapped = swap_entities(examples, copies=40, rate=0.0, seed=7, name_rate=1.0)
    assert swapped == swap_entities(examples, copies=40, rate=0.0, seed=7, name_rate=1.0)  # seeded
    endings = set()
    for new, old in zip(swapped, examples * 40, strict=True):
        (kind, a, b), (_, c, d) = new.spans[0], old.spans[0]
        name, was = new.text[a:b], old.text[c:d]
        assert kind == "PER" and gaps(new) == gaps(old)
        if was == "트럼프":  # not a Korean full name (no surname first): left alone
            assert name == was
            continue
        assert train_demo.korean_full_name(name) and name[1:] in train_demo.SWAP_GIVEN_NAMES
        assert sound_class(name) == sound_class(was)  # 김정은이 stays a fit: never 김하나이
        endings.add(name[-1])
    assert {"은", "나", "아"} <= endings  # names that end like a particle come up
    # name_rate 0 swaps as before
    assert swap_entities(examples, 2, 0.5, 7, name_rate=0.0) == swap_entities(examples, 2, 0.5, 7)


def two_step_run(out, *flags: str) -> dict:
    """A 2-step training run on 64 train sentences with ``flags``: its metrics.json."""
    if not (paths.SHARED_DATA / "train.txt").is_file():
        pytest.skip(f"KMOU corpus not found at {paths.SHARED_DATA}")
    argv = [
        "--max-steps",
        "2",
        "--train-limit",
        "64",
        "--val-limit",
        "16",
        "--vocab-size",
        "500",
        *flags,
        "--out",
        str(out),
    ]
    assert train_cli.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_label_smoothing_and_swapping_train(tmp_path):
    assert two_step_run(tmp_path, "--label-smoothing", "0.1", "--swap-copies", "1")["global_step"] == 2


def test_training_can_start_from_a_served_models_weights(tmp_path):
    if not paths.demo_model_available():
        pytest.skip(f"no demo model in {paths.DEMO_MODEL_DIR}")
    vocab = str(paths.DEMO_MODEL_DIR / "vocab.txt")
    cold = two_step_run(tmp_path / "cold", "--vocab", vocab)
    warm = two_step_run(tmp_path / "warm", "--vocab", vocab, "--init", str(paths.DEMO_MODEL_DIR), "--lr", "1e-6")
    assert cold["served"]["overall"]["f1"] < 0.2 < warm["served"]["overall"]["f1"]
    with pytest.raises(SystemExit, match="labels or vocab differ"):
        two_step_run(tmp_path / "other", "--init", str(paths.DEMO_MODEL_DIR))  # a vocab of its own


def test_masking_chooses_only_real_wordpieces_at_the_rate_asked():
    special = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    rows, width = 400, 60
    ids = torch.randint(5, 500, (rows, width))
    ids[:, 0], ids[:, 40] = special["[CLS]"], special["[SEP]"]
    ids[:, 41:] = special["[PAD]"]
    attention = (torch.arange(width) <= 40).long().expand(rows, width)
    masked, chosen = mask_wordpieces(ids, attention, special, 500, 0.15, torch.Generator().manual_seed(0))
    assert not chosen[:, 0].any() and not chosen[:, 40:].any()  # never [CLS], [SEP] or padding
    assert 0.13 < chosen.float().sum() / (rows * 39) < 0.17
    as_mask = (masked == special["[MASK]"]) & chosen
    assert 0.75 < as_mask.sum() / chosen.sum() < 0.85  # BERT's 80 % [MASK]
    assert torch.equal(masked[~chosen], ids[~chosen])  # what was not chosen is untouched
    again, _ = mask_wordpieces(ids, attention, special, 500, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(masked, again)  # seeded


def test_masked_lm_pretraining_runs_before_fine_tuning(tmp_path):
    metrics = two_step_run(tmp_path, "--mlm-epochs", "1", "--swap-copies", "0")
    assert (metrics["pretrain_steps"], metrics["global_step"]) == (2, 2)  # 64 sentences / batch 32


def test_ema_ships_the_moving_average_of_the_weights(tmp_path):
    """With ``--ema D`` the checkpoint holds torch's exponential moving average (the first
    step's weights, then D * average + (1 - D) * weights), and the last weights are still scored."""

    def weights(out):
        (path,) = out.glob("epoch=*-val_loss=*.ckpt")
        return torch.load(path, weights_only=True)["state_dict"]["model.classifier.weight"]

    two_step_run(tmp_path / "one", "--max-steps", "1", "--swap-copies", "0")  # trains the vocab the others share
    same = ("--swap-copies", "0", "--vocab", str(tmp_path / "one" / "vocab.txt"))
    plain = two_step_run(tmp_path / "two", *same)
    averaged = two_step_run(tmp_path / "ema", *same, "--ema", "0.9")
    first, last = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert not torch.equal(first, last)
    torch.testing.assert_close(weights(tmp_path / "ema"), 0.9 * first + 0.1 * last)
    assert plain["served_last_weights"] is None
    assert averaged["served_last_weights"] == plain["served"]  # the same last weights, scored
