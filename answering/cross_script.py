"""Questions whose words cannot meet the passages' words: a Telugu question about an English
handbook, or about a Telugu page whose words it inflects otherwise.

BM25 matches words, and across scripts it has almost none to match: "Foundry Local సాధారణంగా
ఏ పోర్ట్‌లో వింటుంది?" shares two names with the page that answers it, and scored 0.12, under
the scope threshold. For a question mostly in a script other than Latin (`is_cross_script`):

- its words that sound like an English word of the passages are written as that word
  (`in_passage_words`, rag/sound_alikes.py): "పైథాన్ వెర్షన్" is searched as "python version";
- its words that mean an English word of the passages are searched as that word too
  (`glossed`): "ధరలను" as "prices", "ఖర్చు" as "cost";
- every passage is also ranked by meaning: the closeness of its closest sentence to the
  question, by the packaged multilingual embedding model, whose sentence vectors the corpus
  has already (`answering.pipeline.embed_ahead`);
- the two are fused (`fused_hits`), and the fused score is what the scope threshold reads.

The embedding model finds any text in the question's own language a little closer than text
in another (on the Telugu sets, the median Telugu passage sentence is 0.02-0.04 closer to a
Telugu question than the median English one, whatever it asks): a Telugu page drew every
Telugu question about the English handbook. So each sentence's closeness is taken relative
to the sentences of its own script: less their median, plus the median of all.

English questions never take this path: their figures stay those of BM25 alone.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from answering.context import MIN_WORDS, Meaning, embedded_units, units
from rag.documents import Chunk, Hit
from rag.embedding import Closeness
from rag.sound_alikes import LooseSounds
from rag.text import english_words, tokenize

# A question is cross-script when at least this share of its content words are not Latin.
MIN_FOREIGN_SHARE = 0.5
# Closeness of a passage's closest sentence mapped onto [0, 1]: at or below FLOOR it says
# nothing, at CEILING and above it is certain. Across languages the multilingual-e5-small
# cosines sit lower than within one. Chosen on evaluation/telugu-* with MIN_RETRIEVAL_SCORE
# (0.2) unchanged: the five passages found hold the fact for 83% of the Telugu questions about
# the English handbook (71% also pass the scope check) and for all of those about the Telugu
# pages (97%), and 12 of the 16 questions nothing covers are told so. The model cannot do
# better on those: it finds a question about a mobile app or a Slack channel as close to the
# handbook's sentences as one the handbook answers.
DENSE_FLOOR = 0.78
DENSE_CEILING = 0.90
# The meaning part's share of the fused score.
DENSE_WEIGHT = 0.4
# The scope threshold (MIN_RETRIEVAL_SCORE) times this is what a fused score must reach.
# Chosen on evaluation/telugu-*: at 0.27 two questions nothing covers (0.263, 0.268) are told
# so; the three answerable ones between 0.26 and 0.27 show their fact either way, or neither.
SCORE_FACTOR = 1.35
# The weight of meaning, against shared terms (with the glossed words among them), in choosing
# the sentences a model reads and the sentence quoted (answering.context.Meaning). On the Telugu
# sets, of the questions that pass the scope check, the best-ranked sentence holds the fact for
# 35 of 58 about the handbook and 22 of 32 about the Telugu pages at 0.5, 31 and 22 at 0.8; the
# excerpts read hold it for 39 and 28 at 0.5, 40 and 26 at 0.8.
SENTENCE_MEANING_WEIGHT = 0.5

_WORD = re.compile(r"\S+")
_LETTER = re.compile(r"[^\W\d_]")


@runtime_checkable
class Passages(Protocol):
    """A knowledge base that can list its passages and find sound-alike words (rag.index.KnowledgeBase)."""

    def search(self, query: str, mode: str, k: int) -> list[Hit]: ...

    def mentions(self, word: str, mode: str) -> bool: ...

    def sound_alikes(self, word: str, mode: str) -> list[str]: ...

    def passages(self, mode: str) -> list[Chunk]: ...


def foreign_share(text: str) -> float:
    """Share of the text's content words (rag.text.tokenize) that are not in the Latin script or digits."""
    terms = tokenize(text)
    if not terms:
        return 0.0
    return sum(not term.isascii() for term in terms) / len(terms)


def is_cross_script(question: str) -> bool:
    return foreign_share(question) >= MIN_FOREIGN_SHARE


def in_passage_words(query: str, knowledge: Passages, mode: str, every: bool = False) -> str:
    """The query with each word the passages do not hold (`every`: each word), but that sounds
    like one of their Latin words, written as that word (or words)."""

    def replaced(match: re.Match[str]) -> str:
        word = match.group()
        terms = [term for term in tokenize(word) if not term.isascii()]
        if not terms or (not every and all(knowledge.mentions(term, mode) for term in terms)):
            return word
        # A word whose stem the passages hold keeps it: "ప్రాసెస్‌ల" is "ప్రాసెస్" + "ల". An
        # ending alone ("గా" of "డిఫాల్ట్‌గా") is not kept: it says nothing.
        held = [] if every else [term for term in terms[:1] if knowledge.mentions(term, mode)]
        alikes = [alike for term in terms if term not in held for alike in knowledge.sound_alikes(term, mode)]
        return " ".join(dict.fromkeys([*held, *alikes])) if alikes else word

    return _WORD.sub(replaced, query)


# A word of the question is glossed with the passages' Latin word closest to it in meaning
# only when that word stands out: GLOSS_MARGIN closer than the GLOSS_RANK-th closest. Single
# words are where the embedding model is weakest: "ధరలను" (prices) finds "prices" at 0.93 with a
# margin of 0.06, "చిరునామా" (address) finds "naming" at 0.88 among many as close. Chosen on
# evaluation/telugu-*: the five passages found hold the fact, and pass the scope check, for
# 90% of the Telugu questions about the English handbook instead of 74%.
GLOSS_MARGIN = 0.035
GLOSS_RANK = 20
# The same passages come back question after question.
_latin_words_of = functools.lru_cache(maxsize=20_000)(english_words)


# The glossary holds at most this many words, those the most passages hold: a Telugu word of
# Telugu origin means a common English word (cost, time, first); a rare term is borrowed, and
# found by its sound. The handbook has 1,500; clapnq's 689 passages, 14,500.
MAX_GLOSSARY_TERMS = 5000


def glossary_terms(chunks: Sequence[Chunk]) -> list[str]:
    """The Latin words of the passages (not stop words), each once: what the words of a question
    in another script are glossed with. Embedded ahead with the passages' sentences."""
    return list(_glossary_terms(tuple(chunk.text for chunk in chunks)))


@functools.lru_cache(maxsize=8)
def _glossary_terms(texts: tuple[str, ...]) -> tuple[str, ...]:
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(_latin_words_of(text))
    return tuple(sorted(word for word, _ in counts.most_common(MAX_GLOSSARY_TERMS)))


def glossed(question: str, knowledge: Passages, mode: str, meaning: Meaning) -> list[str]:
    """The passages' Latin words that the question's words in another script mean, where one
    stands out (`GLOSS_MARGIN`). Only words already embedded are looked at. Blocking: the
    question's words are embedded, in one call."""
    closeness = meaning.closeness
    if not isinstance(closeness, Closeness):
        return []
    asked = list(
        dict.fromkeys(
            word
            for word in (raw.strip(string.punctuation) for raw in _WORD.findall(question))
            if any(not term.isascii() for term in tokenize(word))
        )
    )
    if not asked:
        return []
    terms = glossary_terms(knowledge.passages(mode))
    known = [(term, vector) for term, vector in zip(terms, closeness.kept(terms), strict=True) if vector is not None]
    if len(known) <= GLOSS_RANK:
        return []
    matrix = np.stack([vector for _, vector in known])
    found: list[str] = []
    for vector in closeness.questions(asked):
        cosines = matrix @ vector
        closest = np.argpartition(-cosines, GLOSS_RANK - 1)[:GLOSS_RANK]
        ranked = closest[np.argsort(-cosines[closest])]
        if cosines[ranked[0]] - cosines[ranked[-1]] >= GLOSS_MARGIN:
            found.append(known[int(ranked[0])][0])
    return list(dict.fromkeys(found))


def as_searched(question: str, knowledge: Passages, mode: str, meaning: Meaning) -> tuple[str, str]:
    """A cross-script question as it is searched: its words written in the passages' words
    where they sound alike and glossed where they mean one (ranked, read and checked in this
    form); and every word that sounds like a Latin one written as it, for the search by words
    alone. A Telugu page holds "ఫైల్" (file) too, so only the second finds the English pages
    by it; only the first finds the Telugu pages."""
    gloss = " ".join(glossed(question, knowledge, mode, meaning))
    written = in_passage_words(question, knowledge, mode)
    every = in_passage_words(question, knowledge, mode, every=True)
    return (f"{written} {gloss}", f"{every} {gloss}") if gloss else (written, every)


# Viramas of the Brahmic scripts: the sign that a consonant ends without a vowel.
_VIRAMAS = "\u094d\u09cd\u0a4d\u0acd\u0b4d\u0bcd\u0c4d\u0ccd\u0d4d"
_BRAHMIC_WORD = re.compile(r"[\u0900-\u0dff\u200c]+")
_ZWNJ = "\u200c"


@functools.lru_cache(maxsize=8)
def _loose_sounds(texts: tuple[str, ...]) -> LooseSounds:
    """The passages' Latin words and their stems, for a borrowed word to sound like."""
    words = set().union(*map(_latin_words_of, texts))
    return LooseSounds(sorted({*words, *(term for word in words for term in tokenize(word))}))


# A name written in the Latin script within a question in another: capitalised, or mixing
# cases or letters and digits ("Slack", "iPhone", "SmolLM2").
_LATIN_NAME = re.compile(r"(?<![\w.-])(?:[A-Z][\w-]*[A-Za-z0-9]|[a-z]+[A-Z0-9][\w-]*)")


def unknown_names(question: str, knowledge: Passages, mode: str) -> list[str]:
    """What a question in another script names, or borrows from another language, that the
    passages never mention in any script or spelling: "Slack", or "వాట్సాప్‌లో" (in WhatsApp),
    against the handbook. The counterpart of the names an English question asks about
    (`answering.grounding.names`), answered the same way.

    A name in the Latin script is unknown when no passage holds it. Telugu words of its own
    end in a vowel; a word that ends in a consonant, with a virama (before any ending the
    zero-width non-joiner sets off, "పోర్ట్‌లో"), is an English or other borrowed word written
    as it sounds: "స్లాక్" (Slack), "మైక్రోఫోన్" (microphone). Such a word is unknown when no
    passage holds it and it sounds like none of their Latin words even loosely
    (rag/sound_alikes.py: `LooseSounds`)."""
    unknown = [name for name in _LATIN_NAME.findall(question) if not knowledge.mentions(name, mode)]
    loose: LooseSounds | None = None
    for word in _BRAHMIC_WORD.findall(question):
        parts = [part for part in word.split(_ZWNJ) if part]
        forms = ["".join(parts[: end + 1]) for end in range(len(parts))]
        borrowed = [form for form in forms if form.endswith(tuple(_VIRAMAS))]
        if not borrowed or any(knowledge.mentions(term, mode) for form in forms for term in tokenize(form)):
            continue
        loose = loose or _loose_sounds(tuple(chunk.text for chunk in knowledge.passages(mode)))
        if not any(loose(form) for form in forms):
            unknown.append(borrowed[0])
    return list(dict.fromkeys(unknown))


def _closeness_of_kept(meaning: Meaning, query: str, texts: list[str]) -> list[float | None]:
    """The closeness of the sentences already embedded (the corpus's, from `embed_ahead`; an
    upload's, from `embed_upload_ahead`). The others are not embedded for this question: the
    whole handbook takes a minute, so a question asked while the app is still embedding is
    ranked by words and by the sentences done so far."""
    if isinstance(meaning.closeness, Closeness):
        return meaning.closeness.of_kept(query, texts)
    return list(meaning.closeness(query, texts))


# A script's sentences are set against their own median only when there are this many.
MIN_SCRIPT_SENTENCES = 8


def _within_script(closeness: npt.NDArray[np.float64], foreign: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """Each sentence's closeness relative to the sentences of its script (see the module's docstring)."""
    overall = float(np.median(closeness))
    adjusted = closeness.copy()
    for group in (foreign, ~foreign):
        if group.sum() >= MIN_SCRIPT_SENTENCES:
            adjusted[group] += overall - float(np.median(closeness[group]))
    return adjusted


@functools.lru_cache(maxsize=100_000)
def mostly_foreign(text: str) -> bool:
    """Whether most of a sentence's letters are not Latin (cached: the same sentences come back)."""
    letters = _LETTER.findall(text)
    return sum(not letter.isascii() for letter in letters) * 2 > len(letters)


def fused_hits(
    query: str, knowledge: Passages, mode: str, k: int, meaning: Meaning, also: Sequence[str] = ()
) -> list[Hit]:
    """The k best passages by words (BM25 on `query`, or on a form in `also` where that scores
    higher) and meaning (their closest sentence's closeness to `query`) together. Blocking: the
    question is embedded if it is not yet."""
    chunks = knowledge.passages(mode)
    if not chunks:
        return []
    by_words: dict[int, float] = {}
    for form in dict.fromkeys([query, *also]):
        for hit in knowledge.search(form, mode, len(chunks)):
            by_words[id(hit.chunk)] = max(hit.score, by_words.get(id(hit.chunk), 0.0))
    owners: list[int] = []
    texts: list[str] = []
    foreign: list[bool] = []
    for index, chunk in enumerate(chunks):
        for unit, text in zip(units(chunk.text), embedded_units([chunk]), strict=True):
            if len(unit.split()) >= MIN_WORDS:
                owners.append(index)
                texts.append(text)
                foreign.append(mostly_foreign(unit))
    closest = np.full(len(chunks), DENSE_FLOOR)
    found = _closeness_of_kept(meaning, query, texts) if texts else []
    known = np.array([value is not None for value in found], dtype=bool)
    measured = np.zeros(len(chunks), dtype=bool)  # passages with a sentence embedded
    if known.any():
        closeness = np.array([DENSE_FLOOR if value is None else value for value in found])
        closeness[known] = _within_script(closeness[known], np.array(foreign)[known])
        np.maximum.at(closest, np.array(owners)[known], closeness[known])
        measured[np.array(owners)[known]] = True
    dense = np.clip((closest - DENSE_FLOOR) / (DENSE_CEILING - DENSE_FLOOR), 0.0, 1.0)
    words = np.array([by_words.get(id(chunk), 0.0) for chunk in chunks])
    # A passage none of whose sentences is embedded yet is scored by its words alone.
    fused = np.where(measured, (1 - DENSE_WEIGHT) * words + DENSE_WEIGHT * dense, words)
    order = sorted(range(len(chunks)), key=lambda i: (-fused[i], i))[:k]
    return [Hit(chunks[i], float(fused[i]), rank) for rank, i in enumerate(order, start=1) if fused[i] > 0]
