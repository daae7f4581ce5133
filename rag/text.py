"""Tokenisation shared by every retriever, so that scores mean the same thing everywhere.

Tuned on ../shared/eval/clapnq only (see README, "Retrieval").

Every script is searchable: Latin, Greek and Cyrillic accents fold away ("Café" is
"cafe"), the vowel signs and viramas of Indic scripts and the voicing marks of Japanese
stay (they are letters there, not accents), Chinese and Japanese text, written without
spaces, is cut into overlapping character pairs as Lucene's CJK analyser does, and only
Latin words are stemmed.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

# Function words that match everywhere and rank nothing, plus the question words
# (who, when, where, why…) that name the kind of answer, not its topic. Kept short on
# purpose; "us" is not in it, since questions say "the US" (tuned on clapnq). The last
# line is what contractions leave ("I've", "you'll", "what's"): a user's question has
# them, documents seldom do, so they would count against every passage.
STOP_WORDS = frozenset(
    """a an and are as at be been being but by can could did do does for from had has have
    how i if in into is it its me my of on or our so than that the their them then there
    these they this those to too was we were what when where which who whom whose why will
    with would you your
    d ll m re s t ve""".split()
)

# Telugu's question words, pronouns, postpositions and copulas: like English's, they match
# everywhere and name the kind of answer, not its topic ("ఏ పోర్ట్" is "which port"). Written
# as the tokenizer gives them (a suffix after a zero-width non-joiner is a word of its own).
OTHER_STOP_WORDS = frozenset(
    """ఏ ఏది ఏవి ఏమి ఏమిటి ఎంత ఎన్ని ఎలా ఎక్కడ ఎప్పుడు ఎవరు ఎవరి ఎందుకు ఎటువంటి ఏయే
    నేను నా నాకు మేము మా మీరు మీ మీకు నువ్వు అది ఇది అవి ఇవి ఈ ఆ దీని దాని వారు వాళ్ళు
    లో లోని ను ని కు కి తో పై మీద నుండి నుంచి కోసం గురించి వరకు కంటే మరియు లేదా కూడా అని
    ఉంది ఉందా ఉన్నాయి ఉన్నాయా ఉంటుంది ఉంటాయి ఉండాలి అవుతుంది అవుతాయి ఒక ఒకటి చేయాలి
    చేయవచ్చు చేయవచ్చా చేస్తుంది చెప్పండి""".split()
)

# The original Porter algorithm: on clapnq it matched a little better than its
# successor Porter2 ("english"): recall@1 0.930 against 0.927.
_stemmer = snowballstemmer.stemmer("porter")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stem: str = _stemmer.stemWord(word)  # snowballstemmer has no type hints
    return stem


def _ranges(codes: list[int]) -> str:
    """A regex character-class body for these code points, as ranges."""
    parts: list[str] = []
    start = previous = codes[0]
    for code in [*codes[1:], -1]:
        if code != previous + 1:
            parts.append(re.escape(chr(start)) + ("-" + re.escape(chr(previous)) if previous > start else ""))
            start = code
        previous = code
    return "".join(parts)


# Combining marks (Unicode categories Mn, Mc, Me). Python's `\w` has none of them, so
# a word regex alone cuts "స్థానిక" at each vowel sign. The ranges skipped hold no marks
# (below U+0300; ideographs, Hangul syllables, surrogates, private use): computing the
# rest at import takes about 20 ms, against 200 ms for every code point (a test checks
# they agree).
_MARK_SEARCHED = (range(0x300, 0x3400), range(0xA000, 0xAC00), range(0xF900, 0x20000), range(0xE0100, 0xE01F0))
_MARK_CODES = [code for block in _MARK_SEARCHED for code in block if unicodedata.category(chr(code))[0] == "M"]

# Chinese and Japanese: Hiragana and Katakana (with the prolonged sound mark ー and the
# voicing marks), the CJK ideographs and their extensions (half-width Katakana is folded
# to these by NFKD), the iteration marks 々 〆 〇.
_CJK_BMP = "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_ASTRAL = "\U00020000-\U0003134f"

# Accents that fold away: the generic combining diacritics (what Latin, Greek and Cyrillic
# letters decompose into), Cyrillic's own, and the optional vowel points of Hebrew and
# Arabic. Other scripts' marks are part of their letters and stay.
_FOLDED_MARKS = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
    "\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670]+"
)


@dataclass(frozen=True)
class _Words:
    """The word regexes for one set of marks and CJK characters."""

    token: re.Pattern[str]  # a word, or a run of CJK characters
    word: re.Pattern[str]  # a word, CJK characters included
    special: re.Pattern[str]  # a mark or a CJK character: the text needs `token`

    @classmethod
    def of(cls, marks: str, cjk: str) -> _Words:
        # A word starts with a letter or digit and goes on through letters, digits and
        # marks. Written as runs rather than one character at a time, which the regex
        # engine matches about twice as fast.
        return cls(
            re.compile(rf"[{cjk}]+|[^\W_{cjk}]+(?:[{marks}]+[^\W_{cjk}]*)*"),
            re.compile(rf"[^\W_]+(?:[{marks}]+[^\W_]*)*"),
            re.compile(f"[{marks}{cjk}]"),
        )


# A character class with any character beyond U+FFFF is matched range by range, about
# 70 times slower on clapnq's documents than one within the Basic Multilingual Plane
# (a bitmap), so the astral marks and ideographs get patterns of their own, used only
# for text that has such characters.
_BMP = _Words.of(_ranges([c for c in _MARK_CODES if c <= 0xFFFF]), _CJK_BMP)
_ALL = _Words.of(_ranges(_MARK_CODES), _CJK_BMP + _CJK_ASTRAL)
_CJK_START = re.compile(f"[{_CJK_BMP}{_CJK_ASTRAL}]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # one range: quick, unlike a class of many
_PLAIN_WORD = re.compile(r"[^\W_]+")
_ASCII_WORD = re.compile(r"[a-z0-9]+")
# Words the Porter stemmer is for: Latin letters (ß, ø, æ… do not decompose) and digits.
_LATIN = re.compile(r"[a-z0-9\u00c0-\u024f\u02b0-\u02ff\u1e00-\u1eff]+")


def fold(text: str) -> str:
    """Lower case without accents, so that "Café" and "cafe" are the same word.

    NFKD splits "é" into "e" and its accent (and turns full-width and ligature forms into
    plain ones); only the accents of `_FOLDED_MARKS` are dropped, and NFC puts the
    remaining marks back together (Japanese モデル keeps its voicing mark). Whole-text
    regex and normalisation calls, never a Python loop per character: a loop over a
    whole upload once held the interpreter lock long enough to stall every chat.
    """
    lowered = text.lower()
    if lowered.isascii():
        return lowered
    return unicodedata.normalize("NFC", _FOLDED_MARKS.sub("", unicodedata.normalize("NFKD", lowered)))


def _words(folded: str) -> _Words:
    return _ALL if not folded.isascii() and _ASTRAL.search(folded) else _BMP


def _is_latin(word: str) -> bool:
    return word.isascii() or _LATIN.fullmatch(word) is not None


def _pairs(run: str) -> list[str]:
    """Overlapping character pairs of a Chinese or Japanese run ("本地模型": 本地, 地模, 模型).

    A character alone stays a word of its own, as in Lucene's CJK bigram filter.
    """
    if len(run) == 1:
        return [run]
    return list(map(operator.add, run, run[1:]))


def tokenize(text: str) -> list[str]:
    """Normalised content words, in order (repeats kept for term frequency).

    Latin words are stemmed and stop words dropped; other scripts' words are kept
    whole; Chinese and Japanese runs become character pairs.
    """
    folded = fold(text)
    if folded.isascii():  # the common case, kept to one regex and one cached stem per word
        return [_stem(word) for word in _ASCII_WORD.findall(folded) if word not in STOP_WORDS]
    words = _words(folded)
    if not words.special.search(folded):  # English with curly quotes, Russian, Greek…
        plain = _PLAIN_WORD.findall(folded)
        # `_is_latin` written out: this runs once per word of most uploads.
        latin = _LATIN.fullmatch
        return [_stem(w) if w.isascii() or latin(w) else w for w in plain if w not in STOP_WORDS]
    tokens: list[str] = []
    for word in words.token.findall(folded):
        if _is_latin(word):
            if word not in STOP_WORDS:
                tokens.append(_stem(word))
        elif _CJK_START.match(word):
            tokens += _pairs(word)
        elif word not in OTHER_STOP_WORDS:
            tokens.append(word)
    return tokens


_ENGLISH_WORD = re.compile(r"[a-z]{3,}")


def english_words(text: str) -> frozenset[str]:
    """The text's words of three or more unaccented Latin letters, lower case and unstemmed,
    that are not stop words: "Settings" gives "settings", where `tokenize` gives "set"."""
    return frozenset(word for word in _ENGLISH_WORD.findall(text.lower()) if word not in STOP_WORDS)


def normalise_answer(text: str) -> str:
    """For matching answer text inside passages: folded words joined by single spaces.

    Marks stay inside their words, so the same text normalises the same way in an
    answer and in a passage, whatever its script.
    """
    folded = fold(text)
    return " ".join(_words(folded).word.findall(folded))
