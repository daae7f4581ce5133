"""Ranking chunks for a query: one `Retriever` protocol, two implementations side by side.

Both return hits whose `score` is in [0, 1] and comparable across queries (how
much of the query the chunk covers), so a single threshold can say "the documents
do not seem to cover this", and the escalation router can read them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from rank_bm25 import BM25Okapi

from rag.documents import Chunk, Hit
from rag.text import tokenize

# The title is said three times: a question usually names its topic, and
# the title is the one place where every chunk of a document names it (tuned on clapnq).
TITLE_WEIGHT = 3


def indexed_text(chunk: Chunk) -> str:
    """What retrieval sees: the chunk, its heading path, and its document's title."""
    return " ".join((*[chunk.document.title] * TITLE_WEIGHT, *chunk.heading_path, chunk.text))


class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int) -> list[Hit]: ...


def _ranked(chunks: Sequence[Chunk], scores: Sequence[float], k: int) -> list[Hit]:
    """The k best chunks with a positive score; ties keep corpus order."""
    order = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i))
    return [Hit(chunks[i], float(scores[i]), rank) for rank, i in enumerate(order[:k], start=1)]


class LexicalRetriever:
    """The prototype's term overlap, done properly.

    A chunk's score is the share of the query's distinct terms that it contains,
    each term weighted by its rarity (inverse document frequency), so that
    "bm25" counts for more than "answer". Terms the corpus has never seen still
    count in the denominator: a query about something absent scores low.
    """

    name = "lexical"

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._terms = [frozenset(tokenize(indexed_text(chunk))) for chunk in self.chunks]
        document_frequency = Counter(term for terms in self._terms for term in terms)
        total = len(self.chunks)
        self._idf = {term: math.log((total + 1) / (count + 0.5)) for term, count in document_frequency.items()}
        self._unseen_idf = math.log((total + 1) / 0.5)

    def search(self, query: str, k: int) -> list[Hit]:
        weights = {term: self._idf.get(term, self._unseen_idf) for term in set(tokenize(query))}
        total = sum(weights.values())
        if not self.chunks or total <= 0:
            return []
        scores = [sum(weights[t] for t in weights if t in terms) / total for terms in self._terms]
        return _ranked(self.chunks, scores, k)


class _BM25(BM25Okapi):  # type: ignore[misc]  # rank-bm25 has no type hints, so BM25Okapi is Any
    """Okapi BM25 with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)).

    rank-bm25's own idf is zero or negative for a term in half the chunks or more,
    so in a small knowledge base (a few uploads) the one chunk that names the
    subject could score nothing at all. Lucene's form stays positive.
    """

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))


class BM25Retriever:
    """Okapi BM25 (rank-bm25), with scores divided by the query's best possible score.

    BM25's raw scores grow with the number and rarity of query terms, so they
    cannot be compared between queries. A chunk's score can never exceed
    sum(idf(t) * (k1 + 1)) over the query's terms, so dividing by that puts every
    score in [0, 1] without changing the ranking.
    """

    name = "bm25"

    def __init__(self, chunks: Sequence[Chunk], k1: float = 1.5, b: float = 0.75) -> None:
        self.chunks = list(chunks)
        self.k1 = k1
        self._bm25 = _BM25([tokenize(indexed_text(c)) for c in self.chunks], k1=k1, b=b) if self.chunks else None

    def search(self, query: str, k: int) -> list[Hit]:
        terms = tokenize(query)
        if self._bm25 is None or not terms:
            return []
        raw = self._bm25.get_scores(terms)
        # Unseen terms get the idf of the rarest possible term: they could have matched.
        best_idf = math.log(1 + (len(self.chunks) + 0.5) / 0.5)
        ceiling = sum(self._bm25.idf.get(t, best_idf) * (self.k1 + 1) for t in terms)
        scores = np.clip(raw / ceiling, 0.0, 1.0) if ceiling > 0 else raw * 0
        return _ranked(self.chunks, scores.tolist(), k)


RETRIEVERS: dict[str, Callable[[Sequence[Chunk]], Retriever]] = {"lexical": LexicalRetriever, "bm25": BM25Retriever}


def make_retriever(mode: str, chunks: Sequence[Chunk]) -> Retriever:
    return RETRIEVERS[mode](chunks)
