"""Cut Korean particles (조사) off the end of entity spans. Plain Python, no TorchServe import.

A Korean particle follows its noun with no space (``서울에서``, ``삼성전자가``), and a wordpiece
often holds noun and particle together, so even a perfect token tagger reports ``서울에서`` as
the place. ``trim_end`` moves an entity's end back to where its trailing particles start.

It is a fixed list, not a morpheme analyser: measured on the KMOU validation split it gets
most of what the Kiwi analyser gets at no memory and next to no time (docs/particles.md).
Three guards keep it from eating the end of a name:
- it only cuts inside the entity's last wordpiece, and never the whole entity;
- a particle must fit the syllable before it: ``가/는/를/와/로`` follow a vowel, ``이/은/을/과/으로``
  a consonant (so ``상하이``, ``김고은`` and ``마을`` stay whole);
- particles that end many names are left out (``나``: 하나) or cut only right after another
  particle (``도``: 경기도 but ``서울에도``; ``만``: 대만 but ``정부에서만``).
"""

from __future__ import annotations

from typing import Callable

from ner_settings import HandlerSettings

# (text, entity start, entity end, start of the entity's last wordpiece) -> new end
Trim = Callable[[str, int, int, int], int]

VOWEL, CONSONANT, VOWEL_OR_L, ANY = "vowel", "consonant", "vowel or ㄹ", "any"

# Particles cut at the end of an entity, with the sound the syllable before them must end in.
PARTICLES = {
    "이": CONSONANT, "가": VOWEL,  # subject
    "은": CONSONANT, "는": VOWEL,  # topic
    "을": CONSONANT, "를": VOWEL,  # object
    "과": CONSONANT, "와": VOWEL,  # "and", "with"
    "으로": CONSONANT, "로": VOWEL_OR_L,  # direction, means
    "의": ANY, "에": ANY, "에서": ANY, "께": ANY,
}
# Particles that other particles may follow (``에서`` + ``는``), and the ones that may follow.
CHAIN_HEADS = {"에서": ANY, "에": ANY, "에게": ANY, "으로": CONSONANT, "로": VOWEL_OR_L,
               "과": CONSONANT, "와": VOWEL, "까지": ANY, "부터": ANY}
CHAIN_TAILS = {"는": ANY, "의": ANY, "도": ANY, "만": ANY}

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3
RIEUL = 8  # index of ㄹ among the final consonants of a Hangul syllable


def final_consonant(char: str) -> int | None:
    """Index of the syllable's final consonant (0: it ends in a vowel); None if not Hangul."""
    code = ord(char)
    if not HANGUL_FIRST <= code <= HANGUL_LAST:
        return None
    return (code - HANGUL_FIRST) % 28


def fits(before: str, sound: str) -> bool:
    """Whether a particle that needs ``sound`` may follow the character ``before``. After a
    digit, a Latin letter or a symbol the reading is unknown, so any particle fits."""
    final = final_consonant(before)
    if final is None or sound == ANY:
        return True
    if sound == VOWEL:
        return final == 0
    if sound == VOWEL_OR_L:
        return final in (0, RIEUL)
    return final != 0  # CONSONANT


def strip_one(text: str, floor: int, end: int, particles: dict[str, str]) -> int:
    """Start of the longest particle from ``particles`` that ends at ``end``, begins at or after
    ``floor`` and fits the character before it; ``end`` when none does."""
    for particle in sorted(particles, key=len, reverse=True):
        cut = end - len(particle)
        if cut >= floor and text[cut:end] == particle and fits(text[cut - 1], particles[particle]):
            return cut
    return end


def trim_end(text: str, start: int, end: int, piece_start: int) -> int:
    """The entity ``text[start:end]`` without its trailing particles: returns the new end.

    Only characters of the last wordpiece (from ``piece_start``) are cut, and at least one
    character of the entity stays.
    """
    floor = max(start + 1, piece_start)
    tail = strip_one(text, floor, end, CHAIN_TAILS)
    if tail < end:
        head = strip_one(text, floor, tail, CHAIN_HEADS)
        if head < tail:
            return head
    return strip_one(text, floor, end, PARTICLES)


def trimmer(settings: HandlerSettings) -> Trim | None:
    """What ``ner_core.to_response`` gets as ``trim`` under these settings."""
    return trim_end if settings.trim_particles else None
