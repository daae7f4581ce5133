"""The support check for an answer written in another language than its passages (issue 28).

With "Answer in my language", a Telugu question gets a Telugu answer while the passages,
the evidence, are English. `answering.grounding.check_sentence` compares an answer's words
with the passages' words, which cannot work across languages. This module checks what
can be compared across languages, sentence by sentence:

- numbers, compared as numbers ("20" is "20.0", "1,000" is "1000"), after every Unicode
  decimal digit is read as its ASCII digit (Telugu "౨౦" is "20"); a number followed by a
  unit ("20 MB", "20MB", "120 seconds") must come with the same unit in the passages, so
  "25 MB" is not stated by passages that give 20 MB and a 25-second timeout;
- identifiers, as `grounding.exact_terms` finds them: `code spans`, SETTING_NAMES,
  dotted and slashed names, file paths, URLs, --flags, quoted Latin strings, words mixing
  letters and digits ("SmolLM2"), looked up with `Evidence.states`;
- words written in the Latin script ("Foundry Local", "Chainlit", "MB"), each of which
  must be a word of the passages (compared as the retrievers' stemmed tokens, so "models"
  is "model", and English stop words say nothing). A name of several words is checked word
  by word: their order is not.

A sentence stands when every such item it states is in the passages; one that states a
number, identifier or Latin word the passages never state is cut. A sentence stating none
of them is kept unchecked: the result counts such sentences (`TranslationResult.unchecked`).
`[n]` citation markers are not numbers. Lines of a fenced code block are checked as
`check_sentence` checks them (the line must occur in the passages).

What is NOT checked: the meaning of the words of the answer's own language. "The limit is
20 MB" and "the limit is not 20 MB", written in Telugu, state the same number and both
stand; names transliterated into Telugu script ("ఫౌండ్రీ") are not compared either. That is
why the reply marks such an answer as a translation and quotes the passage under it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from answering.grounding import (
    CITATION,
    REPEATING,
    AnswerGuard,
    Cut,
    Evidence,
    GuardedText,
    GuardMode,
    Sentence,
    _canonical_number,
    _without,
    check_sentence,
    exact_terms,
    never_state,
    words,
)
from i18n import Message
from rag.text import normalise_answer, tokenize

# Sentence ends that grounding's splitter does not know: the danda and double danda, which
# end sentences in Devanagari and which Telugu and other Indic writing also uses.
_DANDA_END = re.compile(r"(?<=[।॥])[\"')\]]*\s+")

# Letters of the Latin script (with accents), and the characters of other scripts: where one
# touches the other ("SmolLM2ను", "20కి") a space is put between them before looking.
_LATIN = "A-Za-z\u00c0-\u024f"
_OTHER = r"^\s\x00-\u024f\u2000-\u206f"  # not a space, Latin, or general punctuation (“ ” – …)
_SCRIPT_CHANGE = re.compile(rf"(?<=[0-9{_LATIN}])(?=[{_OTHER}])|(?<=[{_OTHER}])(?=[0-9{_LATIN}])")
_OTHER_SCRIPT = re.compile(rf"[{_OTHER}]+")
_NON_ASCII_DIGIT = re.compile(r"(?![0-9])\d")  # `\d` is any Unicode decimal digit
_LATIN_WORDS = re.compile(rf"[{_LATIN}]+(?:['’-][{_LATIN}]+)*(?:\s+[{_LATIN}]+(?:['’-][{_LATIN}]+)*)*")

# Units read with the number before them, each under one spelling ("sec" and "seconds" are "s").
UNITS = {
    **{unit: unit for unit in "b kb mb gb tb kib mib gib tib ms px mhz ghz % tokens characters".split()},
    **dict.fromkeys("s sec secs second seconds".split(), "s"),
    **dict.fromkeys("min mins minute minutes".split(), "min"),
    **dict.fromkeys("h hr hrs hour hours".split(), "h"),
    **dict.fromkeys("day days".split(), "day"),
    **dict.fromkeys("byte bytes".split(), "b"),
    "token": "tokens",
    "chars": "characters",
    "character": "characters",
}
_UNIT_NAMES = "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True))
# Not after a hyphen: "SmolLM2-135M" is a name, not 135 of something.
_MEASURE = re.compile(rf"(?<![\w.-])(\d+(?:[.,]\d+)*)\s?({_UNIT_NAMES})(?!\w)", re.IGNORECASE)


def ascii_digits(text: str) -> str:
    """Every Unicode decimal digit as its ASCII digit: "౨౦ MB" is "20 MB"."""
    if text.isascii():
        return text
    return _NON_ASCII_DIGIT.sub(lambda c: str(unicodedata.decimal(c.group())), text)


def _measure(number: str, unit: str) -> tuple[str, str]:
    """A number and its unit as compared: "20.0 MB" is ("20", "mb"), "2 sec" is ("2", "s")."""
    return _canonical_number(number), UNITS[unit.lower()]


@lru_cache(maxsize=64)
def _measures(passages: str) -> frozenset[tuple[str, str]]:
    """The numbers with units the passages state, as (number, unit)."""
    return frozenset(_measure(number, unit) for number, unit in _MEASURE.findall(ascii_digits(passages)))


@dataclass(frozen=True)
class TranslationVerdict:
    """What one sentence states that can be checked across languages, and what of it the
    passages never state."""

    items: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def checked(self) -> bool:
        """Whether the sentence states anything checkable."""
        return bool(self.items)

    @property
    def supported(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        """For the user: an `i18n.Message` (English as a str), or "" when supported."""
        return never_state(self.missing) if self.missing else ""


def check_translated_sentence(sentence: str, evidence: Evidence, *, code: bool = False) -> TranslationVerdict:
    """Whether every number, identifier and Latin-script word of one sentence of a translated
    answer (or one line of a code block, `code=True`) is in the passages."""
    if code:
        verdict = check_sentence(sentence, evidence, code=True)
        return TranslationVerdict((sentence.strip(),), verdict.missing)
    text = _SCRIPT_CHANGE.sub(" ", ascii_digits(CITATION.sub(" ", sentence)))
    items: list[str] = []
    missing: list[str] = []
    for found in _MEASURE.finditer(text):
        item = f"{found[1]} {found[2]}"
        items.append(item)
        if _measure(found[1], found[2]) not in _measures(evidence.text):
            missing.append(item)
    text = _MEASURE.sub(" ", text)
    exact = _latin_exact_terms(text)
    items += exact
    missing += [term for term in exact if not evidence.states(term)]
    for run in _LATIN_WORDS.findall(_without(exact, text)):
        said = tokenize(run)  # stemmed; stop words say nothing
        if said:
            items.append(run)
            if not all(term in evidence.terms for term in said):
                missing.append(run)
    return TranslationVerdict(tuple(dict.fromkeys(items)), tuple(dict.fromkeys(missing)))


def _latin_exact_terms(text: str) -> list[str]:
    """`exact_terms` of the text, without the other script: a quoted Telugu phrase is no exact
    term, but a number or a name inside it is."""
    found: list[str] = []
    for term in exact_terms(text):
        if _OTHER_SCRIPT.search(term):
            found += _latin_exact_terms(_OTHER_SCRIPT.sub(" ", term.strip('`"')))
        else:
            found.append(term)
    return found


def _at_dandas(sentences: list[Sentence]) -> list[Sentence]:
    """Grounding's sentences cut again after each danda (।) that a space follows."""
    out: list[Sentence] = []
    for sentence in sentences:
        if sentence.code or sentence.fence:
            out.append(sentence)
            continue
        start = 0
        for end in _DANDA_END.finditer(sentence.text):
            out.append(Sentence(sentence.text[start : end.end()]))
            start = end.end()
        if start < len(sentence.text):
            out.append(Sentence(sentence.text[start:]))
    return out


@dataclass
class TranslationResult(GuardedText):
    """A translated answer split into what stands and what was cut, with how its sentences
    were judged: `checked` stated something checkable (`verified` of them all held, the rest
    are in `cuts`); `unchecked` stated nothing checkable and were kept as they are."""

    checked: int = 0
    verified: int = 0
    unchecked: int = 0

    @property
    def kept_sentences(self) -> int:
        return self.verified + self.unchecked


class TranslationGuard(AnswerGuard):
    """`AnswerGuard` for an answer in another language than its passages: the same `feed`,
    `finish`, `stopped` and `result` (a `TranslationResult`), the same loop watch, with each
    sentence judged by `check_translated_sentence`."""

    result: TranslationResult

    def __init__(self, evidence: Evidence, mode: GuardMode = GuardMode.STOP) -> None:
        super().__init__(evidence, mode)
        self.result = TranslationResult()

    def feed(self, text: str) -> list[Cut]:
        if self.stopped:
            return []
        return self._judge(_at_dandas(self._splitter.feed(text)))

    def finish(self) -> list[Cut]:
        if self.stopped:
            return []
        return self._judge(_at_dandas(self._splitter.finish()))

    def _cut(self, sentence: Sentence) -> Cut | None:
        if sentence.fence or not words(sentence.text):
            return None
        # Whole words: grounding's `words` cuts Telugu words at their vowel signs.
        if self._repeats(normalise_answer(CITATION.sub(" ", sentence.text)).split()):
            return Cut(sentence.text, Message(REPEATING), loop=True)
        verdict = check_translated_sentence(sentence.text, self.evidence, code=sentence.code)
        if not verdict.checked:
            self.result.unchecked += 1
            return None
        self.result.checked += 1
        self.result.verified += int(verdict.supported)
        return None if verdict.supported else Cut(sentence.text, verdict.reason)


def check_translation(answer: str, evidence: Evidence, mode: GuardMode = GuardMode.MARK) -> TranslationResult:
    """The translation guard's verdict on a finished answer (as if it had streamed)."""
    guard = TranslationGuard(evidence, mode)
    guard.feed(answer)
    guard.finish()
    return guard.result
