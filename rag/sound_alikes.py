"""English words written in another script, found again by their sound.

A Telugu user asks about "పైథాన్ వెర్షన్" (Python version), "ఫైళ్లు" (files) or "పోర్ట్" (port):
technical Telugu writes English words as they sound, in its own script. Matched on their
letters they never meet the handbook's English words, and the question scores as if it
asked about nothing the documents hold. Here such a word is transliterated to the Latin
script (`indic_transliteration`, any Brahmic script) and reduced, as the index's English
words are, to a key of its consonant sounds (`sound_key`): "paithān" and "python" are both
"ptn", "vèrṣan" and "version" both "vrsn". A word of the question that the index does not
hold is then looked for among the index's Latin words with the same key, or whose key
begins it (Telugu adds its endings to the word: "ఫైళ్లు", files, is "file" + "lu").

What it cannot do: a Telugu word of Telugu origin ("గరిష్ట", maximum) has no English
sound-alike; closeness in meaning (the embedding model) carries those. Keys are short,
so a key must have at least `MIN_KEY` consonants to match, and a native word can still meet
an English one by chance; the scope checks read the score that results like any other.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterable
from functools import lru_cache

from indic_transliteration import sanscript

from rag.text import fold, tokenize

# Consonant sounds a key must have to be matched at all: two match too many unrelated words.
MIN_KEY = 3
# Consonant sounds a word of the question may have beyond the index word's key (its endings).
MAX_ENDING = 2
# Among the terms of one key, those whose `spoken` forms are this close to the word's
# (difflib's ratio: "paithan" and "python" 0.80, "vimtumdi" and "event" 0.46), and nearly as
# close as the closest ("pyanel": "panel" 0.91, not "final" 0.55). Chosen on the Telugu sets:
# at 0.5 fewer handbook questions find the fact, at 0.6 fewer uncovered ones are refused.
MIN_LIKENESS = 0.55
LIKENESS_MARGIN = 0.05

# Brahmic scripts indic_transliteration reads, by a letter range of each.
_SCRIPTS = (
    (re.compile("[\u0c00-\u0c7f]"), sanscript.TELUGU),
    (re.compile("[\u0900-\u097f]"), sanscript.DEVANAGARI),
    (re.compile("[\u0b80-\u0bff]"), sanscript.TAMIL),
    (re.compile("[\u0c80-\u0cff]"), sanscript.KANNADA),
    (re.compile("[\u0d00-\u0d7f]"), sanscript.MALAYALAM),
    (re.compile("[\u0980-\u09ff]"), sanscript.BENGALI),
    (re.compile("[\u0a80-\u0aff]"), sanscript.GUJARATI),
)

# Spellings of one sound, rewritten in order, on lower-case ASCII: English spelling and the
# transliteration meet halfway. "ch" is a k in English as often as not ("chat" is
# చాట్, cāṭ, which becomes "kat" too); an anusvara (ṃ, folded to m) before a consonant is an n.
_REWRITES = (
    (re.compile(r"qu"), "kw"),  # "quantise" is క్వాంటైజ్ (kvāṇṭaij)
    (re.compile(r"tur(?=e?[sd]?$)"), "kur"),  # "temperature" is టెంపరేచర్ (ṭèmparècar), "feature" ఫీచర్
    (re.compile(r"ck|q"), "k"),
    (re.compile(r"x"), "ks"),
    (re.compile(r"ph|f"), "p"),
    (re.compile(r"c(?=[eiy])|c$"), "s"),  # "latency" (its stem "latenc"), "service"
    (re.compile(r"ch|c"), "k"),
    (re.compile(r"ai"), "i"),  # Telugu's ఐ is English's long i: "paithan" is "python", "phail" "file"
    (re.compile(r"au"), "o"),
    (re.compile(r"(?<=[^aeiou])y(?=[^aeiou])"), "i"),
    (re.compile(r"([aeiou])w"), r"\1"),  # "browser": the w is a vowel there
    (re.compile(r"w"), "v"),
    (re.compile(r"z|j"), "s"),  # Telugu writes "browser" బ్రౌజర్ (braujar)
    (re.compile(r"m"), "n"),  # m and n, and the anusvara, are one nasal
    (re.compile(r"(?<=[^aeiou])h"), ""),  # aspirates, and "th" alike
    (re.compile(r"(.)\1+"), r"\1"),  # a double letter is a spelling, not two sounds
)
_VOWELS = re.compile(r"[aeiouyh]")


def spoken(latin: str) -> str:
    """A Latin-script word as sounded: English spelling and a transliteration rewritten to meet
    halfway ("browser" → "broser", "braujar" → "brausar")."""
    text = re.sub(r"[^a-z]", "", fold(latin))
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text


def sound_key(latin: str) -> str:
    """The consonant sounds of a Latin-script word: "python" → "ptn", "session" → "ssn"."""
    return _VOWELS.sub("", spoken(latin))


@lru_cache(maxsize=20_000)
def transliterated(word: str) -> str | None:
    """The word in Latin letters (IAST, accents folded, its c written "ch"), or None when its
    script is not one that `indic_transliteration` reads."""
    for letters, scheme in _SCRIPTS:
        if letters.search(word):
            # IAST's c is always the sound of "chat", never the s of "place": సెర్చ్ is "search".
            return fold(sanscript.transliterate(word, scheme, sanscript.IAST)).replace("c", "ch")
    return None


class SoundAlikes:
    """The English words of an index by their sound key, for words of other scripts to find.

    Compared as written, not as the index's stems: "setting" sounds like సెట్టింగ్, its stem
    "set" does not, and "retriev" is no word anyone writes, in any script. A plural is keyed
    as its singular too: "పారామీటర్లు" is "parameter" + "lu", where the passages write "parameters".
    Each word found is returned as written; `tokenize` stems it as the index did.
    """

    def __init__(self, words: Iterable[str]) -> None:
        keyed = {
            (sound_key(form), word)
            for word in words
            if word.isascii() and word.isalpha()
            for form in {word, _singular(word)}
        }
        self._keyed = sorted((key, word) for key, word in keyed if len(key) >= MIN_KEY)

    def __call__(self, word: str) -> list[str]:
        """The words `word` (in another script) sounds like: those with its key, else those
        whose key begins it and leaves at most `MAX_ENDING` sounds of ending (the longest key
        wins), and among them the closest in letters (`MIN_LIKENESS`), one per stem."""
        latin = transliterated(word)
        if latin is None:
            return []
        key = sound_key(latin)
        for length in range(len(key), max(MIN_KEY, len(key) - MAX_ENDING) - 1, -1):
            prefix = key[:length]
            at = bisect.bisect_left(self._keyed, (prefix, ""))
            found = []
            while at < len(self._keyed) and self._keyed[at][0] == prefix:
                found.append(self._keyed[at][1])
                at += 1
            if found:
                return _closest(latin, found)
        return []


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _closest(latin: str, words: list[str]) -> list[str]:
    """The words closest in sound, best first, one for each stem ("setting", not "settings" too)."""
    sounded = spoken(latin)
    likeness = {word: difflib.SequenceMatcher(None, sounded, spoken(word)).ratio() for word in words}
    best = max(likeness.values())
    close = sorted(
        (word for word, like in likeness.items() if like >= MIN_LIKENESS and like >= best - LIKENESS_MARGIN),
        key=lambda word: (-likeness[word], word),
    )
    by_stem: dict[tuple[str, ...], str] = {}
    for word in close:
        by_stem.setdefault(tuple(tokenize(word)), word)
    return list(by_stem.values())


# Voiced and voiceless stops as one sound, for `LooseSounds`: Telugu writes "exit" ఎగ్జిట్
# (egjit) and "code" కోడ్ (kōḍ) with sounds English spells otherwise.
_UNVOICED = str.maketrans("gdb", "ktp")
# How alike two words' sounds must be for `LooseSounds` (difflib's ratio), the consonants a
# passage word's key may lack against the word's, and the fewest it may have. Chosen on
# evaluation/telugu-*: no borrowed word of a question the handbook answers is unknown from
# 0.55 to 0.65 (at 0.7 "డిఫాల్ట్", default, is), and 7 of the 16 questions nothing covers have
# one from 0.62 (5 at 0.6, when "వాట్సాప్", WhatsApp, still sounds like "waits"): స్లాక్ (Slack),
# మైక్రోఫోన్ (microphone), గూగుల్ (Google), ఈమెయిల్ (e-mail), ఐఫోన్ (iPhone), చార్మినార్.
LOOSE_LIKENESS = 0.62
LOOSE_FEWER = 2
LOOSE_MIN_KEY = 2


def _loose(latin: str) -> str:
    return spoken(latin).translate(_UNVOICED)


class LooseSounds:
    """Whether a word of another script sounds at all like one of some Latin words.

    `SoundAlikes` rewrites the question's words, so it must be right: keys of three consonants,
    close likeness. This asks the opposite question, whether the passages could mention the
    word under another spelling at all, so it errs the other way: keys of any length, voiced and
    voiceless alike, a consonant more or up to two fewer, likeness `LOOSE_LIKENESS`.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        self._by_key: dict[str, list[str]] = {}
        for term in terms:
            if term.isascii() and term.isalpha():
                self._by_key.setdefault(_VOWELS.sub("", _loose(term)), []).append(_loose(term))
        self._keys = sorted(self._by_key)

    def __call__(self, word: str) -> bool:
        latin = transliterated(word)
        if latin is None:
            return False
        sounded = _loose(latin)
        key = _VOWELS.sub("", sounded)
        if not key:
            return False
        found = [*self._by_key.get(key, [])]
        at = bisect.bisect_right(self._keys, key)
        while at < len(self._keys) and self._keys[at].startswith(key) and len(self._keys[at]) <= len(key) + 1:
            found += self._by_key[self._keys[at]]
            at += 1
        for length in range(max(LOOSE_MIN_KEY, len(key) - LOOSE_FEWER), len(key)):
            found += self._by_key.get(key[:length], [])
        return any(difflib.SequenceMatcher(None, sounded, term).ratio() >= LOOSE_LIKENESS for term in found)
