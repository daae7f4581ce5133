"""Questions whose words cannot meet the passages' words: a Telugu question about an English
handbook, or about a Telugu page whose words it inflects otherwise.

BM25 matches words, and across scripts it has almost none to match: "Foundry Local సాధారణంగా
ఏ పోర్ట్‌లో వింటుంది?" shares two names with the page that answers it, and scored 0.12, under
the scope threshold. For a question mostly in a script other than Latin (`is_cross_script`):

- its words that sound like an English word of the passages are written as that word
  (`in_passage_words`, rag/sound_alikes.py): "పైథాన్ వెర్షన్" is searched as "python version";
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
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from answering.context import MIN_WORDS, Meaning, embedded_units, units
from rag.documents import Chunk, Hit
from rag.embedding import Closeness
from rag.text import tokenize

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
# The weight of meaning, against shared terms, in choosing the sentences a model reads
# (answering.context.Meaning): on the Telugu handbook set the excerpts hold the fact for 33
# of 58 questions at 0.8, 29 at 0.5.
SENTENCE_MEANING_WEIGHT = 0.8

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


def in_passage_words(query: str, knowledge: Passages, mode: str) -> str:
    """The query with each word the passages do not hold, but that sounds like one of their
    Latin words, written as that word (or words)."""

    def replaced(match: re.Match[str]) -> str:
        word = match.group()
        terms = [term for term in tokenize(word) if not term.isascii()]
        if not terms or all(knowledge.mentions(term, mode) for term in terms):
            return word
        alikes = [alike for term in terms for alike in knowledge.sound_alikes(term, mode)]
        return " ".join(dict.fromkeys(alikes)) if alikes else word

    return _WORD.sub(replaced, query)


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
def _mostly_foreign(text: str) -> bool:
    """Whether most of a sentence's letters are not Latin (cached: the same sentences come back)."""
    letters = _LETTER.findall(text)
    return sum(not letter.isascii() for letter in letters) * 2 > len(letters)


def fused_hits(query: str, knowledge: Passages, mode: str, k: int, meaning: Meaning) -> list[Hit]:
    """The k best passages by words (BM25 on `query`) and meaning (their closest sentence's
    closeness to it) together. Blocking: the question is embedded if it is not yet, and so are
    the sentences of an upload the first time."""
    chunks = knowledge.passages(mode)
    if not chunks:
        return []
    by_words = {id(hit.chunk): hit.score for hit in knowledge.search(query, mode, len(chunks))}
    owners: list[int] = []
    texts: list[str] = []
    foreign: list[bool] = []
    for index, chunk in enumerate(chunks):
        for unit, text in zip(units(chunk.text), embedded_units([chunk]), strict=True):
            if len(unit.split()) >= MIN_WORDS:
                owners.append(index)
                texts.append(text)
                foreign.append(_mostly_foreign(unit))
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
