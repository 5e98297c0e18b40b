"""Cut Korean particles (조사) off the end of entity spans. Plain Python, no TorchServe import.

A Korean particle follows its noun with no space (``서울에서``, ``삼성전자가``), and a wordpiece
often holds noun and particle together, so even a perfect token tagger reports ``서울에서`` as
the place. ``trim_end`` moves an entity's end back to where its trailing particles start.

It is a fixed list, not a morpheme analyser: measured on the KMOU validation split it gets
most of what the Kiwi analyser gets at no memory and next to no time (docs/particles.md).
Guards keep it from eating the end of a name:
- it only cuts inside the entity's last wordpiece, and never the whole entity;
- a particle must fit the syllable before it: ``가/는/를/와/로`` follow a vowel, ``이/은/을/과/으로``
  a consonant (so ``상하이``, ``김고은`` and ``마을`` stay whole);
- particles that end many names are left out (``나``: 하나) or cut only right after another
  particle (``도``: 경기도 but ``서울에도``; ``만``: 대만 but ``정부에서만``);
- when the next wordpiece, glued to the entity, is itself a particle (``김정은 ##은``), the
  entity's end is not one: only a particle that chains with it is cut (``서울에서 ##는``);
- a person (PER; KLUE's PS) whose last word has two syllables (``김은 씨``), or three syllables starting with
  a common surname and ending in ``은/이`` (``김정은``), keeps that word whole.
"""

from __future__ import annotations

from collections.abc import Callable

from ner_settings import HandlerSettings

# (text, entity start, entity end, start of the entity's last wordpiece, *, kind=entity type,
#  next_piece=(start, end) of the wordpiece after the entity or None, next_outside=whether the
#  model labelled that wordpiece O, piece_after=(start, end) of the wordpiece after it or None)
#  -> new end
Trim = Callable[..., int]

VOWEL, CONSONANT, VOWEL_OR_L, ANY = "vowel", "consonant", "vowel or ㄹ", "any"
PERSON_TYPES = ("PER", "PS")  # the person type of KMOU and of KLUE-NER

# Particles cut at the end of an entity, with the sound the syllable before them must end in.
PARTICLES = {
    "이": CONSONANT,
    "가": VOWEL,  # subject
    "은": CONSONANT,
    "는": VOWEL,  # topic
    "을": CONSONANT,
    "를": VOWEL,  # object
    "과": CONSONANT,
    "와": VOWEL,  # "and", "with"
    "으로": CONSONANT,
    "로": VOWEL_OR_L,  # direction, means
    "의": ANY,
    "에": ANY,
    "에서": ANY,
    "께": ANY,
}
# Particles that other particles may follow (``에서`` + ``는``), and the ones that may follow.
CHAIN_HEADS = {
    "에서": ANY,
    "에": ANY,
    "에게": ANY,
    "으로": CONSONANT,
    "로": VOWEL_OR_L,
    "과": CONSONANT,
    "와": VOWEL,
    "까지": ANY,
    "부터": ANY,
}
CHAIN_TAILS = {"는": ANY, "의": ANY, "도": ANY, "만": ANY}
# What a particle may start, when the entity's next wordpiece is glued to it: only a chain head
# may stand before one of these (``에서`` + ``는``, ``으로`` + ``부터``).
CHAINED = (*CHAIN_TAILS, "부터", "까지")
# Wordpieces that begin with one of these are particle pieces (``##은``, ``##에서는``, ``##이다``).
PARTICLE_STARTS = tuple(sorted({*PARTICLES, *CHAIN_HEADS, *CHAIN_TAILS}, key=len, reverse=True))

# The 20 most common Korean surnames (2015 census). A person's
# last word of three syllables starting with one of them is taken for surname + given name.
SURNAMES = frozenset("김 이 박 최 정 강 조 윤 장 임 한 오 서 신 권 황 안 송 전 홍".split())
# Syllables that end given names and also read as a particle after a final consonant (김정은, 맹순이).
NAME_ENDINGS = frozenset({"은", "이"})
# Syllables that end given names and also read as particles (하은, 소이, 민도, 민아, 하나), with the
# sound the syllable before them must end in to read as one: 은/이 (topic, subject) and 아
# (calling someone) follow a final consonant, 나 ("or") a vowel, 도 ("also") anything.
NAME_LAST_SYLLABLES = {"은": CONSONANT, "이": CONSONANT, "아": CONSONANT, "나": VOWEL, "도": ANY}

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


def particle_cut(text: str, start: int, end: int, piece_start: int) -> int:
    """Where the particles that end ``text[start:end]`` begin, by the list alone: only
    characters of the last wordpiece (from ``piece_start``) are cut, at least one stays."""
    floor = max(start + 1, piece_start)
    tail = strip_one(text, floor, end, CHAIN_TAILS)
    if tail < end:
        head = strip_one(text, floor, tail, CHAIN_HEADS)
        if head < tail:
            return head
    return strip_one(text, floor, end, PARTICLES)


def glued_particle(text: str, end: int, next_piece: tuple[int, int] | None) -> str | None:
    """The next wordpiece's text when it follows ``end`` with no space and begins with a
    particle (``김정은`` then ``##은``); else None."""
    if next_piece is None or next_piece[0] != end:
        return None
    piece = text[next_piece[0] : next_piece[1]]
    return piece if piece.startswith(PARTICLE_STARTS) else None


def whole_name(word: str, cut: str) -> bool:
    """Whether a person's last word stays whole although it ends like a particle: two
    syllables (cutting would leave a bare surname: ``김은`` in ``김은 씨``), or three that start
    with a common surname and end in a name syllable (``김정은``, not ``윤상`` + ``은``)."""
    if not all(final_consonant(char) is not None for char in word):
        return False
    if len(word) == 2:
        return True
    return len(word) == 3 and word[0] in SURNAMES and cut in NAME_ENDINGS


def hangul(chars: str) -> bool:
    return bool(chars) and all(final_consonant(char) is not None for char in chars)


def complete_name(
    text: str, start: int, end: int, next_piece: tuple[int, int] | None, piece_after: tuple[int, int] | None
) -> int:
    """The end of a person ``text[start:end]`` that the model ended one syllable short of a
    full name, else ``end``. The person's last word has two Hangul syllables (surname + first
    syllable of the given name), and the next wordpiece, glued to it and labelled O by the
    model, is a single syllable that ends given names and also reads as a particle. It is taken
    into the name when it cannot be that particle here:
    - its sound does not fit the syllable before (``송하 ##은``: the topic particle after a vowel
      is 는, so 은 is the name's: ``송하은``), or
    - a particle follows it, glued (``송민 ##은 ##에게``: the word's particle is 에게).
    A syllable that could be the particle (``장혁 ##은``, ``헬렌 ##이``) stays out."""
    if next_piece != (end, end + 1) or text[end] not in NAME_LAST_SYLLABLES:
        return end
    words = text[start:end].split()
    if not words or len(words[-1]) != 2 or not hangul(words[-1]) or text[end - 2 : end] != words[-1]:
        return end
    if piece_after is not None and piece_after[0] == end + 1 and hangul(text[end + 1]):
        return end + 1 if text[piece_after[0] : piece_after[1]].startswith(PARTICLE_STARTS) else end
    return end if fits(text[end - 1], NAME_LAST_SYLLABLES[text[end]]) else end + 1


def trim_end(
    text: str,
    start: int,
    end: int,
    piece_start: int,
    *,
    kind: str | None = None,
    next_piece: tuple[int, int] | None = None,
    next_outside: bool = False,
    piece_after: tuple[int, int] | None = None,
) -> int:
    """The entity ``text[start:end]`` without its trailing particles: returns the new end.

    Only characters of the last wordpiece (from ``piece_start``) are cut, and at least one
    character of the entity stays. ``kind`` (the entity type) and ``next_piece`` (the character
    range of the wordpiece after the entity, None at the end of the text) keep names whole:
    without them the list alone decides. A person that is not cut may instead be completed by
    one syllable (``complete_name``) when ``next_outside`` says the model labelled the next
    wordpiece O; ``piece_after`` is the wordpiece after that one.
    """
    cut = particle_cut(text, start, end, piece_start)
    if cut < end and not kept_whole(text, start, end, cut, kind, next_piece):
        return cut
    if kind in PERSON_TYPES and next_outside:
        return complete_name(text, start, end, next_piece, piece_after)
    return end


def kept_whole(text: str, start: int, end: int, cut: int, kind: str | None, next_piece: tuple[int, int] | None) -> bool:
    """Whether the name guards keep ``text[start:end]`` whole although the list would cut at ``cut``."""
    following = glued_particle(text, end, next_piece)
    if following is not None and not (text[cut:end] in CHAIN_HEADS and following.startswith(CHAINED)):
        return True  # the particle comes after the entity: its own end is not one
    return kind in PERSON_TYPES and whole_name(text[start:end].split()[-1], text[cut:end])


def trimmer(settings: HandlerSettings) -> Trim | None:
    """What ``ner_core.find_entities`` gets as ``trim`` under these settings."""
    return trim_end if settings.trim_particles else None
