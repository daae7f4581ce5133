"""Tokenisation shared by every retriever, so that scores mean the same thing everywhere.

Tuned on ../shared/eval/clapnq only (see README, "Retrieval").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import snowballstemmer

# Function words that match everywhere and rank nothing, plus the question words
# (who, when, where, why…) that name the kind of answer, not its topic. Kept short on
# purpose; "us" is not in it, since questions say "the US" (tuned on clapnq).
STOP_WORDS = frozenset(
    """a an and are as at be been being but by can could did do does for from had has have
    how i if in into is it its me my of on or our so than that the their them then there
    these they this those to too was we were what when where which who whom whose why will
    with would you your""".split()
)

_WORDS = frozenset(
    """a an and are as at be been being but by can could did do does for from had has have
    how i if in into is it its me my of on or our so than that the their them then there
    these they this those to too us was we were what which will with would you your""".split()
)

# Letters and digits of any script, so that a Cyrillic or Greek upload is searchable too.
_WORD = re.compile(r"[^\W_]+")
# The original Porter algorithm: on clapnq it matched a little better than its
# successor Porter2 ("english"): recall@1 0.930 against 0.927.
_stemmer = snowballstemmer.stemmer("porter")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stem: str = _stemmer.stemWord(word)  # snowballstemmer has no type hints
    return stem


# Accents are dropped only inside runs of non-ASCII characters: a character-by-character
# loop over a whole upload held the interpreter lock long enough to stall every chat.
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _without_combining(run: re.Match[str]) -> str:
    return "".join(char for char in run.group() if not unicodedata.combining(char))


def fold(text: str) -> str:
    """Lower case without accents, so that "Café" and "cafe" are the same word."""
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    return _NON_ASCII.sub(_without_combining, unicodedata.normalize("NFKD", lowered))


def tokenize(text: str) -> list[str]:
    """Normalised, stemmed content words, in order (repeats kept for term frequency)."""
    return [_stem(word) for word in _WORD.findall(fold(text)) if word not in STOP_WORDS]


def normalise_answer(text: str) -> str:
    """For matching answer text inside passages: folded words joined by single spaces."""
    return " ".join(_WORD.findall(fold(text)))
