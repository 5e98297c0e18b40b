"""A probe of Korean full names: are they answered whole, cut short, or missed?

Sentences written for this project, not corpus text: common surnames × given names, many of
which end in a syllable that also reads as a particle (하은, 지은, 하나, 유나, 소이, 민도), in
several frames: a title after the name (``송하은 씨가``), a particle glued to the name
(``송하은이``, ``송하은에게``, with the particle's form fitting the name's last sound), and the
name at the end of the sentence (``만난 사람은 송하은.``). Every sentence holds one name at known
character offsets; the served entities (``find_entities``, as the handler calls it) are compared
with it:

- **whole**: a PER entity with exactly the name's characters;
- **cut**: a PER entity inside the name, shorter than it (``송하``);
- **long**: a PER entity that overlaps the name and reaches past it (``송하은이``);
- **missed**: no PER entity overlaps the name (the name unanswered, or answered with another type).

The names are fixed lists in this file, so the probe is the same on every run and every model.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import ner_core
import ner_model
import ner_particles
from ner_settings import HandlerSettings

# Common surnames, most common first (2015 census), and two rarer ones the particle list's name
# guard does not know.
SURNAMES = ("김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신", "권", "송", "곽", "류")
# Given names that end in a syllable that also reads as a particle (은 이 나 도 아 ...), then
# common given names that do not, as a control.
PARTICLE_LIKE = (
    "하은",
    "지은",
    "다은",
    "서은",
    "예은",
    "가은",
    "채은",
    "수은",
    "하나",
    "유나",
    "세나",
    "지나",
    "예나",
    "소이",
    "서이",
    "유이",
    "민도",
    "현도",
    "민아",
    "지아",
    "서아",
)
CONTROL = ("민준", "서준", "지우", "서연", "도윤", "예린", "지호", "수빈")
GIVEN_NAMES = PARTICLE_LIKE + CONTROL

# Frames: {name} is the full name, {subj}/{top}/{obj}/{and} its subject/topic/object/"and"
# particle in the form that fits its last sound.
FRAMES = {
    "title": (
        "{name} 씨가 어제 서울에 도착했다.",
        "{name} 교수는 이번 학기에 새 강의를 연다.",
        "{name} 선수가 결승에서 두 골을 넣었다.",
    ),
    "particle": (
        "{name}{subj} 어제 서울에 도착했다.",
        "{name}{top} 이번 학기에 새 강의를 연다.",
        "경찰은 {name}에게 출석을 요구했다.",
        "회사는 {name}{obj} 새 대표로 뽑았다.",
        "{name}{and} 함께 일한 동료들이 모였다.",
    ),
    "end": ("어제 만난 사람은 {name}.", "이번 대회 우승자는 {name}."),
}
PARTICLE_FORMS = {  # after a final consonant, after a vowel
    "subj": ("이", "가"),
    "top": ("은", "는"),
    "obj": ("을", "를"),
    "and": ("과", "와"),
}
OUTCOMES = ("whole", "cut", "long", "missed")


@dataclass(frozen=True)
class ProbeSentence:
    text: str
    start: int  # the name's characters: text[start:end]
    end: int
    frame: str  # a key of FRAMES
    given: str  # the given name (particle-like or control)

    @property
    def name(self) -> str:
        return self.text[self.start : self.end]


def particles_for(name: str) -> dict[str, str]:
    consonant = ner_particles.final_consonant(name[-1]) != 0
    return {key: forms[0] if consonant else forms[1] for key, forms in PARTICLE_FORMS.items()}


def sentences() -> list[ProbeSentence]:
    """Every surname × given name once; the templates are dealt round-robin so each frame and
    each template gets names of every kind."""
    templates = [(frame, template) for frame, group in FRAMES.items() for template in group]
    out = []
    for i, (surname, given) in enumerate(itertools.product(SURNAMES, GIVEN_NAMES)):
        frame, template = templates[i % len(templates)]
        name = surname + given
        text = template.format(name=name, **particles_for(name))
        start = template.index("{name}")
        out.append(ProbeSentence(text, start, start + len(name), frame, given))
    return out


def outcome(sentence: ProbeSentence, entities: list[tuple[str, int, int]]) -> str:
    """whole / cut / long / missed for the name, given the entities (type, start, end)."""
    people = [(a, b) for kind, a, b in entities if kind == "PER" and a < sentence.end and b > sentence.start]
    if (sentence.start, sentence.end) in people:
        return "whole"
    if not people:
        return "missed"
    if any(b > sentence.end or a < sentence.start for a, b in people):
        return "long"
    return "cut"


def tally(probe: list[ProbeSentence], found: list[list[tuple[str, int, int]]]) -> dict[str, Counter]:
    """Outcome counts: overall, per frame, and for particle-like vs control given names."""
    counts: dict[str, Counter] = {}
    for sentence, entities in zip(probe, found, strict=True):
        result = outcome(sentence, entities)
        group = "particle-like" if sentence.given in PARTICLE_LIKE else "control"
        for key in ("all", sentence.frame, group):
            counts.setdefault(key, Counter())[result] += 1
    return counts


def without_completion(text: str, start: int, end: int, piece_start: int, **context) -> int:
    """The shipped trimming with the name completion off (the model's own end kept)."""
    return ner_particles.trim_end(text, start, end, piece_start, **{**context, "next_outside": False})


def ways(settings: HandlerSettings, threshold: float = 0.0) -> dict[str, tuple[str, Callable[..., int] | None, float]]:
    """What the probe compares, each way adding one step to the one before: the argmax tags as
    they come; ``settings``' decoding and trimming without the name completion; with it; and
    (as served) with the entity score ``threshold`` in force too: (decoding, trim, threshold) by name."""
    trim = ner_particles.trimmer(settings)
    decoding, trimmed = settings.bio_decoding, ", trimmed" if trim else ""
    out: dict[str, tuple[str, Callable[..., int] | None, float]] = {"greedy, untrimmed": ("greedy", None, 0.0)}
    if trim is not None:
        out[f"{decoding}, trimmed, no name completion"] = (decoding, without_completion, 0.0)
    if threshold:
        out[f"{decoding}{trimmed}, every score"] = (decoding, trim, 0.0)
    out[f"{decoding}{trimmed} (as served)"] = (decoding, trim, threshold)
    return out


def read_each_way(
    ner: ner_model.NerModel, probe: list[ProbeSentence], settings: HandlerSettings
) -> dict[str, list[list[tuple[str, int, int]]]]:
    """The entities (type, start, end) the served code finds in each probe sentence, read each
    way of ``ways(settings)``, with the threshold ``ner`` holds: one forward pass, then each
    way's decoding, trimming and threshold."""
    preds = ner_core.predict(ner, [s.text for s in probe])
    return {
        way: [
            [e.span for e in ner_core.find_entities(p, ner.labels, trim=trim, decoding=decoding, min_score=threshold)]
            for p in preds
        ]
        for way, (decoding, trim, threshold) in ways(settings, ner.min_entity_score).items()
    }


def markdown(rows: dict[str, dict[str, Counter]]) -> str:
    """One row per (way, group): counts of each outcome."""
    lines = ["| entities read | names | " + " | ".join(OUTCOMES) + " |", "|---|---|" + "---:|" * len(OUTCOMES)]
    for way, counts in rows.items():
        for group in ("all", "particle-like", "control", *FRAMES):
            c = counts.get(group, Counter())
            lines.append(f"| {way} | {group} ({sum(c.values())}) | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)


def run(
    model: Path, settings: HandlerSettings, json_path: Path | None = None, show: int = 0
) -> dict[str, dict[str, Counter]]:
    """The probe, read each way of ``ways(settings)``: print the table (and up to ``show``
    names not kept whole as served), write the JSON; the counts."""
    probe = sentences()
    ner = ner_model.load_model(model, replace(settings, torch_threads=0))  # in-process: all of torch's threads
    found_each_way = read_each_way(ner, probe, settings)
    rows = {way: tally(probe, found) for way, found in found_each_way.items()}
    found = list(found_each_way.values())[-1]  # as served
    wrong = [(s, f) for s, f in zip(probe, found, strict=True) if outcome(s, f) != "whole"]
    for sentence, entities in wrong[:show]:
        people = [sentence.text[a:b] for kind, a, b in entities if kind == "PER"]
        print(f"{outcome(sentence, entities)}: {sentence.name} in {sentence.text!r}, PER {people}")
    print(f"\nnames probe: {len(probe)} sentences, model {model}")
    print(markdown(rows))
    if json_path:
        json_path.write_text(
            json.dumps({k: {g: dict(c) for g, c in v.items()} for k, v in rows.items()}, indent=2, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
    return rows
