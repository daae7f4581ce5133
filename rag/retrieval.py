"""Ranking chunks for a query: one `Retriever` protocol, three implementations side by side.

All return hits whose `score` is in [0, 1] and comparable across queries (how
much of the query the chunk covers; for `hybrid`, also how close the chunk's meaning is),
so a single threshold can say "the documents do not seem to cover this", and the
escalation router can read them.

All keep a sparse chunks × terms matrix and score a query with a few numpy calls
over the columns of its terms, so a query costs time in proportion to the chunks that
hold its terms, not to the corpus (at 50,000 chunks, scoring every chunk in Python
took about 60 ms a query). The term statistics (how many chunks, and how many hold
each term) are applied per query, which lets several indexes be searched as one with
`Combined`: a chat's uploads beside the shared corpus.

`HybridRetriever` adds a dense vector per chunk (rag/embedding.py) and fuses its cosine
with the BM25 score, so that a passage that says the same thing in other words is found.
Its dense part does cost time in proportion to the corpus (one matrix-vector product over
every chunk's vector, plus embedding the question; bench/retrieval.py measures both).

A built-in retriever can be kept as plain arrays and rebuilt from them without
tokenising its chunks again (`TermRetriever.to_arrays`, `retriever_from_arrays`);
rag/persisted_index.py keeps the shared corpus's that way.
"""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, Self

import bm25s
import numpy as np
import numpy.typing as npt

from rag.documents import Chunk, Hit
from rag.embedding import DEFAULT_EMBEDDER, KEY_BYTES, Embedder, Vectors, embed_chunks, embedded_text, text_key
from rag.sound_alikes import SoundAlikes
from rag.text import english_words, tokenize

# bm25s sets its own logger to DEBUG at import (bm25s 0.3.16, bm25s/__init__.py), so its
# "Building index from tokens" reached the app's log on every index built; no upstream
# issue found. Warnings still show.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# The title is said three times: a question usually names its topic, and
# the title is the one place where every chunk of a document names it (tuned on clapnq).
TITLE_WEIGHT = 3

Floats = npt.NDArray[np.float64]
# A retriever kept as plain arrays (see `TermRetriever.to_arrays`).
Arrays = Mapping[str, npt.NDArray[Any]]
Parameters = Mapping[str, float]


def indexed_text(chunk: Chunk) -> str:
    """What retrieval sees: the chunk, its heading path, and its document's title."""
    return " ".join((*[chunk.document.title] * TITLE_WEIGHT, *chunk.heading_path, chunk.text))


class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int) -> list[Hit]: ...

    def mentions(self, word: str) -> bool:
        """Whether some chunk holds the word, or a longer word it begins ("Mac" in "macOS");
        true for a word retrieval does not index ("The")."""
        ...

    def sound_alikes(self, word: str) -> list[str]:
        """The passages' English words that a word written in another script sounds like, as
        they write them ("సెట్టింగ్": "setting"; rag/sound_alikes.py)."""
        ...


# A word this short is not looked for as the start of longer words.
MIN_PREFIX = 3


def _term_ids(terms: Collection[str], vocabulary: dict[str, int]) -> list[int]:
    """The terms' ids in the vocabulary, adding the new ones.

    Set operations and `map` keep the loops in C: a Python loop per term cost about
    3 s at 50,000 chunks.
    """
    new = set(terms).difference(vocabulary)
    vocabulary.update(zip(new, itertools.count(len(vocabulary))))
    return list(map(vocabulary.__getitem__, terms))


class _Columns:
    """A chunks × terms sparse matrix kept by term (compressed sparse columns).

    Column `t` lists the chunks that hold term `t` (`rows[starts[t]:starts[t + 1]]`,
    in corpus order) and, for BM25, a value per chunk; its length is the term's
    document frequency.
    """

    def __init__(
        self,
        vocabulary: dict[str, int],
        starts: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int32],
        values: npt.NDArray[np.float32] | None,
        size: int,
    ) -> None:
        self.vocabulary = vocabulary
        self.starts = starts
        self.rows = rows
        self.values = values  # None: every value is 1
        self.size = size  # the number of chunks
        self._sorted_terms: list[str] | None = None  # sorted on first use by `holds_term_starting`

    @classmethod
    def of_sets(cls, term_sets: Iterable[set[str]]) -> _Columns:
        """A 0/1 matrix: which chunks hold which terms.

        Read one chunk at a time into flat arrays: holding every chunk's set of words at
        once took a few hundred megabytes at 50,000 chunks, which the process kept.
        """
        vocabulary: dict[str, int] = {}
        flat = array("q")  # each chunk's term ids, one chunk after the other
        lengths = array("q")
        for terms in term_sets:
            flat.extend(_term_ids(terms, vocabulary))
            lengths.append(len(terms))
        columns = np.frombuffer(flat, dtype=np.int64)
        chunk_rows = np.repeat(np.arange(len(lengths), dtype=np.int32), np.frombuffer(lengths, dtype=np.int64))
        # A stable sort keeps each column's chunks in corpus order.
        order = np.argsort(columns, kind="stable")
        starts = np.zeros(len(vocabulary) + 1, dtype=np.int64)
        np.cumsum(np.bincount(columns, minlength=len(vocabulary)), out=starts[1:])
        return cls(vocabulary, starts, chunk_rows[order], None, len(lengths))

    def to_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """The matrix as plain arrays: `terms` (the JSON list of terms in column order, as
        UTF-8 bytes), `starts`, `rows` and, unless every value is 1, `values`."""
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        arrays: dict[str, npt.NDArray[Any]] = {
            "terms": np.frombuffer(json.dumps(terms, ensure_ascii=False).encode(), dtype=np.uint8),
            "starts": self.starts,
            "rows": self.rows,
        }
        if self.values is not None:
            arrays["values"] = self.values
        return arrays

    @classmethod
    def of_arrays(cls, arrays: Arrays, size: int) -> _Columns:
        """The matrix `to_arrays` gave, of `size` rows; ValueError when the arrays do not
        make one (they may come from a file anyone could have written)."""
        terms = json.loads(arrays["terms"].tobytes())
        if not isinstance(terms, list) or not all(isinstance(term, str) for term in terms):
            raise ValueError("the terms are not a list of strings")
        vocabulary = {term: column for column, term in enumerate(terms)}
        starts, rows, values = arrays["starts"], arrays["rows"], arrays.get("values")
        if len(vocabulary) != len(terms):
            raise ValueError("a term is listed twice")
        if not all(np.issubdtype(array.dtype, np.integer) and array.ndim == 1 for array in (starts, rows)):
            raise ValueError("the starts and rows are not lists of integers")
        if len(starts) != len(terms) + 1 or starts[0] != 0 or starts[-1] != len(rows) or np.any(np.diff(starts) < 0):
            raise ValueError("the column starts do not match the rows")
        if len(rows) and (rows.min() < 0 or rows.max() >= size):
            raise ValueError(f"a row is outside the matrix of {size} rows")
        if values is not None and values.shape != rows.shape:
            raise ValueError("there is not one value per row")
        return cls(
            vocabulary,
            starts.astype(np.int64, copy=False),
            rows.astype(np.int32, copy=False),
            None if values is None else values.astype(np.float32, copy=False),
            size,
        )

    def holds_term_starting(self, prefix: str) -> bool:
        """Whether a term of the vocabulary is `prefix` or begins with it."""
        if prefix in self.vocabulary:
            return True
        if len(prefix) < MIN_PREFIX:
            return False
        if self._sorted_terms is None:
            self._sorted_terms = sorted(self.vocabulary)
        at = bisect.bisect_left(self._sorted_terms, prefix)
        return at < len(self._sorted_terms) and self._sorted_terms[at].startswith(prefix)

    def frequency(self, term: str) -> int:
        """How many chunks hold the term."""
        column = self.vocabulary.get(term)
        return 0 if column is None else int(self.starts[column + 1] - self.starts[column])

    def weighted_sum(self, weights: dict[str, float]) -> Floats:
        """For each chunk, the sum over the given terms of weight × the chunk's value."""
        found = [(self.vocabulary[term], weight) for term, weight in weights.items() if term in self.vocabulary]
        if not found:
            return np.zeros(self.size)
        spans = [(int(self.starts[column]), int(self.starts[column + 1]), weight) for column, weight in found]
        rows = np.concatenate([self.rows[start:end] for start, end, _ in spans])
        if self.values is None:
            values = np.concatenate([np.full(end - start, weight) for start, end, weight in spans])
        else:
            values = np.concatenate([self.values[start:end] * weight for start, end, weight in spans])
        # With weights bincount returns floats already (copy=False: no copy); numpy's
        # stubs type its result as integers whatever the weights.
        return np.bincount(rows, weights=values, minlength=self.size).astype(np.float64, copy=False)


class TermRetriever:
    """What the two built-in retrievers share: chunks, their term matrix, ranking, and
    keeping the matrix as plain arrays."""

    name: str

    def __init__(self, chunks: Sequence[Chunk], columns: _Columns) -> None:
        self.chunks = list(chunks)
        self._columns = columns
        self._sound_alikes: SoundAlikes | None = None  # made on first use by `sound_alikes`

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, float]]:
        """The term matrix as plain numeric arrays (`terms`, `starts`, `rows` and, for BM25,
        `values`; no objects, so `np.load(..., allow_pickle=False)` reads them back) and the
        parameters that go with it: `size`, the number of chunks, and for BM25 `k1` and `b`.
        The chunks themselves are not included: `from_arrays` takes them."""
        return self._columns.to_arrays(), {"size": self._columns.size}

    @classmethod
    def from_arrays(cls, chunks: Sequence[Chunk], arrays: Arrays, parameters: Parameters) -> Self:
        """The retriever `to_arrays` described, over the same `chunks` in the same order,
        without tokenising them; ValueError when the arrays do not fit the chunks.

        The subclass's `__init__` (which tokenises) is not called: a subclass that sets
        attributes there sets them here too, from `parameters`.
        """
        size = int(parameters["size"])
        if size != len(chunks):
            raise ValueError(f"the matrix has {size} rows for {len(chunks)} chunks")
        retriever = cls.__new__(cls)
        TermRetriever.__init__(retriever, chunks, _Columns.of_arrays(arrays, size))
        return retriever

    @classmethod
    def _scores(cls, parts: Sequence[Self], query: str) -> list[Floats] | None:
        """Each part's chunk scores in [0, 1] for the query, from the term statistics of
        all the parts together; None when the query has nothing to score."""
        raise NotImplementedError

    def search(self, query: str, k: int) -> list[Hit]:
        return _search([self], query, k)

    def mentions(self, word: str) -> bool:
        return _mentions([self], word)

    def sound_alikes(self, word: str) -> list[str]:
        return _sound_alikes([self], word)

    def _english_sound_alikes(self, word: str) -> list[str]:
        if self._sound_alikes is None:
            # The words as the chunks write them (the matrix holds only their stems).
            self._sound_alikes = SoundAlikes(set().union(*(english_words(indexed_text(c)) for c in self.chunks)))
        return self._sound_alikes(word)


def _sound_alikes(parts: Sequence[TermRetriever], word: str) -> list[str]:
    return list(dict.fromkeys(found for part in parts for found in part._english_sound_alikes(word)))


def _mentions(parts: Sequence[TermRetriever], word: str) -> bool:
    # A word that is not indexed at all ("The") cannot be ruled out.
    return all(any(part._columns.holds_term_starting(term) for part in parts) for term in tokenize(word))


def _search(parts: Sequence[TermRetriever], query: str, k: int) -> list[Hit]:
    if len({type(part) for part in parts}) != 1:
        raise ValueError("indexes searched together must be of one mode")
    scores = type(parts[0])._scores(parts, query)
    if scores is None:
        return []
    return _ranked([part.chunks for part in parts], scores, k)


def _ranked(parts: Sequence[Sequence[Chunk]], part_scores: Sequence[Floats], k: int) -> list[Hit]:
    """The k best chunks with a positive score; ties keep corpus order (the parts in order)."""
    scores = np.concatenate(part_scores) if len(part_scores) > 1 else part_scores[0]
    candidates = np.flatnonzero(scores > 0)
    if k <= 0 or not len(candidates):
        return []
    if len(candidates) > k:
        # Everything that scores at least the k-th best, ties included, then an exact sort.
        kth = np.partition(scores[candidates], -k)[-k]
        candidates = candidates[scores[candidates] >= kth]
    order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
    offsets = list(itertools.accumulate((len(chunks) for chunks in parts), initial=0))
    hits = []
    for rank, index in enumerate(order.tolist(), start=1):
        part = bisect.bisect_right(offsets, index) - 1
        hits.append(Hit(parts[part][index - offsets[part]], float(scores[index]), rank))
    return hits


class LexicalRetriever(TermRetriever):
    """The prototype's term overlap, done properly.

    A chunk's score is the share of the query's distinct terms that it contains,
    each term weighted by its rarity (inverse document frequency), so that
    "bm25" counts for more than "answer". Terms the corpus has never seen still
    count in the denominator: a query about something absent scores low.
    """

    name = "lexical"

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        super().__init__(chunks, _Columns.of_sets(set(tokenize(indexed_text(chunk))) for chunk in chunks))

    @classmethod
    def _scores(cls, parts: Sequence[Self], query: str) -> list[Floats] | None:
        terms = tokenize(query)
        total = sum(len(part.chunks) for part in parts)
        # idf log((N + 1) / (n + 0.5)); a term no chunk holds (n = 0) weighs the most.
        weights = {
            term: math.log((total + 1) / (sum(part._columns.frequency(term) for part in parts) + 0.5))
            for term in set(terms)
        }
        denominator = sum(weights.values())
        if not total or denominator <= 0:
            return None
        return [part._columns.weighted_sum(weights) / denominator for part in parts]


def _lucene_idf(chunks: int, frequency: npt.ArrayLike) -> Floats:
    """Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5)): positive even for a term in
    half the chunks or more, where Okapi's own is zero or negative, so that in a small
    knowledge base (a few uploads) the one chunk that names the subject still scores."""
    n = np.asarray(frequency, dtype=np.float64)
    idf: Floats = np.log1p((chunks - n + 0.5) / (n + 0.5))
    return idf


class BM25Retriever(TermRetriever):
    """Okapi BM25 with Lucene's idf, with scores divided by the query's best possible score.

    BM25's raw scores grow with the number and rarity of query terms, so they
    cannot be compared between queries. A chunk's score can never exceed
    sum(idf(t) * (k1 + 1)) over the query's terms, so dividing by that puts every
    score in [0, 1] without changing the ranking.

    bm25s builds the sparse matrix from our own tokens. Its stored values are idf ×
    tf / (tf + k1 (1 - b + b dl / avgdl)); we keep the term-frequency part times
    (k1 + 1), as in Okapi's formula, and apply the idf per query (see `Combined`).
    Scores equal rank-bm25's to 1e-6 (a test compares them).
    """

    name = "bm25"

    def __init__(self, chunks: Sequence[Chunk], k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__(chunks, _bm25_columns(chunks, k1, b))
        self.k1 = k1
        self.b = b

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, float]]:
        arrays, parameters = super().to_arrays()
        return arrays, {**parameters, "k1": self.k1, "b": self.b}

    @classmethod
    def from_arrays(cls, chunks: Sequence[Chunk], arrays: Arrays, parameters: Parameters) -> Self:
        retriever = super().from_arrays(chunks, arrays, parameters)
        retriever.k1, retriever.b = float(parameters["k1"]), float(parameters["b"])
        return retriever

    @classmethod
    def _scores(cls, parts: Sequence[Self], query: str) -> list[Floats] | None:
        terms = tokenize(query)
        total = sum(len(part.chunks) for part in parts)
        if not terms or not total:
            return None
        # A repeated query term counts each time, as in Okapi BM25. A term no chunk holds
        # gets the idf of the rarest possible term: it could have matched.
        counts = Counter(terms)
        frequencies = [sum(part._columns.frequency(term) for part in parts) for term in counts]
        idf = _lucene_idf(total, frequencies)
        weights = {term: float(term_idf) * count for (term, count), term_idf in zip(counts.items(), idf, strict=True)}
        ceiling = sum(weights.values()) * (parts[0].k1 + 1)
        return [np.clip(part._columns.weighted_sum(weights) / ceiling, 0.0, 1.0) for part in parts]


def _bm25_columns(chunks: Sequence[Chunk], k1: float, b: float) -> _Columns:
    # bm25s gets each chunk's terms as ids into our vocabulary, tokenised one chunk at a
    # time: no list of every chunk's words is held beside bm25s's own lists of ids.
    vocabulary: dict[str, int] = {}
    corpus = [_term_ids(tokenize(indexed_text(chunk)), vocabulary) for chunk in chunks]
    if not vocabulary:
        return _Columns({}, np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int32), None, len(corpus))
    index = bm25s.BM25(k1=k1, b=b, method="lucene", idf_method="lucene")
    index.index((corpus, vocabulary), create_empty_token=False, show_progress=False)
    del corpus
    starts = np.asarray(index.scores["indptr"], dtype=np.int64)
    # Each column's stored value divided by its idf, times (k1 + 1): Okapi's term-frequency part.
    own_idf = _lucene_idf(len(chunks), np.diff(starts))
    values = index.scores["data"] / np.repeat(own_idf, np.diff(starts)) * (k1 + 1)
    return _Columns(vocabulary, starts, index.scores["indices"], values.astype(np.float32), len(chunks))


# The dense part of a hybrid score: the cosine between the question's and the chunk's
# vectors mapped onto [0, 1]. At DENSE_FLOOR or below it is 0: 99% of all question-chunk
# pairs of clapnq score under 0.82 (median 0.75), so a cosine there says nothing. At
# DENSE_CEILING and above it is 1 (the best chunk for an answerable clapnq question scores
# 0.84-0.92). Tuned on clapnq with the weight: doc recall@1 0.960 and @5 0.997 (BM25 0.930
# and 0.983, reciprocal rank fusion 0.957 and 0.993), and with these values the best
# scores of answerable and unanswerable questions fall on either side of MIN_RETRIEVAL_SCORE
# and ROUTER_MIN_RETRIEVAL_SCORE a little more cleanly than BM25's, so the thresholds stay.
DENSE_FLOOR = 0.80
DENSE_CEILING = 0.95
# The dense part's share of the score; recall@1 stays at 0.96 or above from 0.3 to 0.6.
DENSE_WEIGHT = 0.5


class HybridRetriever(BM25Retriever):
    """BM25 fused with dense vectors: a weighted sum of the BM25 score (as `BM25Retriever`
    gives it) and the chunk's cosine with the question (see `DENSE_FLOOR`).

    A weighted sum of two absolute scores, not reciprocal rank fusion: a rank says how a
    chunk compares with the others for this question, not whether it answers it, so the
    first chunk of every question would score the same and the low-coverage threshold would
    mean nothing. Each part keeps its chunks' vectors; searched together (`Combined`) the
    BM25 part uses the statistics of all the parts and the dense part needs none, so an
    upload scores as it would in one index with the corpus.

    Building embeds every chunk not in `known` (vectors by `text_key`, from a previous
    index): slow, about 0.2-0.5 s a chunk on one core, so callers run it in a worker thread.
    """

    name = "hybrid"

    def __init__(
        self,
        chunks: Sequence[Chunk],
        embedder: Embedder = DEFAULT_EMBEDDER,
        known: Mapping[bytes, Vectors] | None = None,
    ) -> None:
        super().__init__(chunks)
        self.embedder = embedder
        self.vectors = embed_chunks(self.chunks, embedder, known)

    def known_vectors(self) -> dict[bytes, Vectors]:
        """The chunks' vectors by `text_key`: what a new index of mostly the same chunks reuses."""
        return {text_key(embedded_text(chunk)): vector for chunk, vector in zip(self.chunks, self.vectors, strict=True)}

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, float]]:
        """BM25's arrays, the chunks' `vectors` and their `vector_keys` (each row a chunk's
        `text_key`), with which an index built by other code can still reuse the vectors."""
        arrays, parameters = super().to_arrays()
        keys = b"".join(text_key(embedded_text(chunk)) for chunk in self.chunks)
        vector_keys = np.frombuffer(keys, dtype=np.uint8).reshape(len(self.chunks), KEY_BYTES)
        return {**arrays, "vectors": self.vectors, "vector_keys": vector_keys}, parameters

    @classmethod
    def from_arrays(
        cls, chunks: Sequence[Chunk], arrays: Arrays, parameters: Parameters, embedder: Embedder = DEFAULT_EMBEDDER
    ) -> Self:
        """As `TermRetriever.from_arrays`, with the chunks' vectors, which `embedder` made
        (the caller checks that: the arrays do not say which model made them)."""
        retriever = super().from_arrays(chunks, arrays, parameters)
        vectors = arrays["vectors"]
        if vectors.shape != (len(chunks), embedder.dimensions) or not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"the vectors are not {len(chunks)} rows of {embedder.dimensions} numbers")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("a vector is not finite")
        retriever.embedder = embedder
        retriever.vectors = vectors.astype(np.float32, copy=False)
        return retriever

    @classmethod
    def _scores(cls, parts: Sequence[Self], query: str) -> list[Floats] | None:
        if len({part.embedder.name for part in parts}) != 1:
            raise ValueError("indexes searched together must embed with one model")
        if not sum(len(part.chunks) for part in parts) or not query.strip():
            return None
        lexical = super()._scores(parts, query)  # None: no term to score (stop words only), the dense part decides
        question = parts[0].embedder.query(query)
        scores = []
        for index, part in enumerate(parts):
            cosine = (part.vectors @ question).astype(np.float64)
            dense = np.clip((cosine - DENSE_FLOOR) / (DENSE_CEILING - DENSE_FLOOR), 0.0, 1.0)
            bm25 = lexical[index] if lexical is not None else 0.0
            scores.append((1 - DENSE_WEIGHT) * bm25 + DENSE_WEIGHT * dense)
        return scores


class Combined:
    """Indexes of one mode searched as one: a chat's uploads beside the shared corpus.

    Each index keeps its own matrix; the query's term weights (idf) and its ceiling
    come from the statistics of all of them together: the number of chunks and, for
    each query term, how many chunks hold it, summed over the indexes. The scores are
    therefore the ones a single index over all the chunks would give: lexical scores
    exactly; BM25 scores up to the average chunk length, which each index takes from
    its own chunks (the length normalisation is stored in the matrix); hybrid scores
    as BM25's, plus a dense part that depends on the chunk and the question alone. Every
    part's scores share one ceiling, so they compare as directly as within one index.

    Normalising each index by its own ceiling (its own idf) would not: in an upload of
    a few chunks every term it holds is common (idf near log 1.3) and every term it
    lacks rare, so its best chunk would score far lower than the same chunk in the
    corpus, and fall under the low-coverage threshold.
    """

    def __init__(self, parts: Sequence[TermRetriever]) -> None:
        if not parts:
            raise ValueError("nothing to search")
        self.parts = list(parts)
        self.name = parts[0].name

    def search(self, query: str, k: int) -> list[Hit]:
        return _search(self.parts, query, k)

    def mentions(self, word: str) -> bool:
        return _mentions(self.parts, word)

    def sound_alikes(self, word: str) -> list[str]:
        return _sound_alikes(self.parts, word)


def combined(parts: Sequence[Retriever]) -> Retriever:
    """One retriever over several indexes of one mode (one index is returned as it is)."""
    if len(parts) == 1:
        return parts[0]
    term_parts = [part for part in parts if isinstance(part, TermRetriever)]
    if len(term_parts) != len(parts):
        raise TypeError("only the built-in retrievers can be searched together")
    return Combined(term_parts)


RETRIEVERS: dict[str, Callable[[Sequence[Chunk]], Retriever]] = {
    "lexical": LexicalRetriever,
    "bm25": BM25Retriever,
    "hybrid": HybridRetriever,
}


def make_retriever(
    mode: str,
    chunks: Sequence[Chunk],
    embedder: Embedder = DEFAULT_EMBEDDER,
    known: Mapping[bytes, Vectors] | None = None,
) -> Retriever:
    """The `mode` retriever over `chunks`; `embedder` and the vectors `known` already (by
    `text_key`) serve the hybrid mode only."""
    if mode == HybridRetriever.name:
        return HybridRetriever(chunks, embedder, known)
    return RETRIEVERS[mode](chunks)


def retriever_from_arrays(
    mode: str, chunks: Sequence[Chunk], arrays: Arrays, parameters: Parameters, embedder: Embedder = DEFAULT_EMBEDDER
) -> TermRetriever:
    """The `mode` retriever over `chunks` that `to_arrays` described (see `TermRetriever.from_arrays`)."""
    if mode == HybridRetriever.name:
        return HybridRetriever.from_arrays(chunks, arrays, parameters, embedder)
    kind = RETRIEVERS[mode]
    if not (isinstance(kind, type) and issubclass(kind, TermRetriever)):
        raise ValueError(f"a {mode} retriever cannot be rebuilt from arrays")
    return kind.from_arrays(chunks, arrays, parameters)
