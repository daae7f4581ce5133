"""A session's knowledge base: the shared corpus plus that session's own uploads.

Each upload is an index of its own, searched together with the shared corpus's index
(`rag.retrieval.Combined`, which says why the scores stay comparable): adding or
removing a file costs time in proportion to that file, whatever the size of the corpus,
and the shared index is built once per setting for every session. In the hybrid mode an
upload's chunks are embedded by the shared corpus's model, so that their vectors compare.

The app's shared corpus is a `rag.persisted_index.PersistedCorpus`, which replaces its
`SharedCorpus` with a new one when a file under the corpus folder changes; a knowledge base
asks for the current one on every search, so open chats see the change on their next question.

Searching and (re)building indexes are blocking: the app calls them in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from rag.chunking import chunk_documents
from rag.documents import Chunk, Document, Hit
from rag.embedding import DEFAULT_EMBEDDER, Embedder
from rag.retrieval import Combined, HybridRetriever, Retriever, combined, make_retriever


class SharedCorpus:
    """Documents every session can search; their chunks and indexes are built once per setting.

    `chunks` and `retrievers` hand over ones already made (loaded from the persisted index);
    `embedder` makes the hybrid mode's vectors, the uploads' included.
    """

    def __init__(
        self,
        documents: Sequence[Document],
        chunks: Mapping[tuple[int, int], list[Chunk]] | None = None,
        retrievers: Mapping[tuple[str, int, int], Retriever] | None = None,
        embedder: Embedder = DEFAULT_EMBEDDER,
    ) -> None:
        self.documents = tuple(documents)
        self.embedder = embedder
        self._chunks: dict[tuple[int, int], list[Chunk]] = dict(chunks or {})
        self._retrievers: dict[tuple[str, int, int], Retriever] = dict(retrievers or {})
        self._lock = threading.Lock()
        self._building: dict[tuple[str, int, int], threading.Lock] = {}

    def current(self) -> SharedCorpus:
        """A fixed corpus is its own current version (see `CorpusSource`)."""
        return self

    def chunks(self, size: int, overlap: int) -> list[Chunk]:
        with self._lock:
            if (size, overlap) not in self._chunks:
                self._chunks[size, overlap] = chunk_documents(self.documents, size, overlap)
            return self._chunks[size, overlap]

    def built(self, mode: str, size: int, overlap: int) -> Retriever | None:
        """The retriever of that setting if it is made already (None: asking would build it)."""
        with self._lock:
            return self._retrievers.get((mode, size, overlap))

    def retriever(self, mode: str, size: int, overlap: int) -> Retriever:
        chunks = self.chunks(size, overlap)
        key = (mode, size, overlap)
        with self._lock:
            if key in self._retrievers:
                return self._retrievers[key]
            building = self._building.setdefault(key, threading.Lock())
        # Built once per setting, outside the corpus's lock: embedding the corpus for the
        # hybrid mode takes minutes, and chats searching in another mode must not wait for it.
        with building:
            with self._lock:
                if key in self._retrievers:
                    return self._retrievers[key]
            made = make_retriever(mode, chunks, self.embedder)
            with self._lock:
                self._retrievers[key] = made
            return made


class CorpusSource(Protocol):
    """Where a knowledge base finds the shared corpus: its version at the time of asking."""

    def current(self) -> SharedCorpus: ...


class DuplicateUpload(Exception):
    def __init__(self, existing: Document) -> None:
        super().__init__(f"{existing.source} is already in this session's documents")
        self.existing = existing


@dataclass(frozen=True)
class Added:
    document: Document
    chunks: int


class KnowledgeBase:
    """What one chat session searches. Uploads live here and nowhere else."""

    def __init__(self, corpus: CorpusSource, chunk_size: int, chunk_overlap: int) -> None:
        self.corpus = corpus
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.uploads: dict[str, Document] = {}
        # Per upload (by document id): its chunks at the current setting, and its index per mode.
        self._upload_chunks: dict[str, list[Chunk]] = {}
        self._upload_retrievers: dict[tuple[str, str], Retriever] = {}
        self._lock = threading.Lock()

    def add(self, document: Document) -> Added:
        with self._lock:
            if document.id in self.uploads:
                raise DuplicateUpload(self.uploads[document.id])
            chunks = chunk_documents([document], self.chunk_size, self.chunk_overlap)
            self.uploads[document.id] = document
            self._upload_chunks[document.id] = chunks
        return Added(document, len(chunks))

    def remove(self, source: str) -> Document | None:
        """Remove an upload by its file name; returns it, or None if there is none."""
        with self._lock:
            for doc_id, document in self.uploads.items():
                if document.source == source:
                    del self.uploads[doc_id]
                    self._upload_chunks.pop(doc_id, None)
                    for key in [key for key in self._upload_retrievers if key[0] == doc_id]:
                        del self._upload_retrievers[key]
                    return document
        return None

    def rechunk(self, size: int, overlap: int) -> None:
        with self._lock:
            if (size, overlap) != (self.chunk_size, self.chunk_overlap):
                self.chunk_size, self.chunk_overlap = size, overlap
                self._upload_chunks.clear()
                self._upload_retrievers.clear()

    def search(self, query: str, mode: str, k: int) -> list[Hit]:
        return self._retriever(mode).search(query, k)

    def mentions(self, word: str, mode: str) -> bool:
        """Whether the shared corpus or an upload of this chat holds the word (see `Retriever.mentions`)."""
        return self._retriever(mode).mentions(word)

    def sound_alikes(self, word: str, mode: str) -> list[str]:
        """The Latin terms of the corpus or an upload that a word of another script sounds like."""
        return self._retriever(mode).sound_alikes(word)

    def upload_chunks(self) -> list[Chunk]:
        """This chat's uploads' chunks, at the current chunk size."""
        with self._lock:
            return [chunk for doc_id in self.uploads for chunk in self._chunks_of(doc_id)]

    def passages(self, mode: str) -> list[Chunk]:
        """Every chunk searched in `mode`: the shared corpus's, then this chat's uploads'."""
        retriever = self._retriever(mode)
        parts = retriever.parts if isinstance(retriever, Combined) else [retriever]
        return [chunk for part in parts for chunk in getattr(part, "chunks", ())]

    def unembedded(self, mode: str) -> int:
        """How many shared passages the next search in `mode` embeds first (0: none, or not hybrid)."""
        if mode != HybridRetriever.name:
            return 0
        corpus = self.corpus.current()
        if corpus.built(mode, self.chunk_size, self.chunk_overlap) is not None:
            return 0
        return len(corpus.chunks(self.chunk_size, self.chunk_overlap))

    def _retriever(self, mode: str) -> Retriever:
        with self._lock:
            size, overlap = self.chunk_size, self.chunk_overlap
            # The corpus's version now, not the one the chat opened with: files change while the app runs.
            corpus = self.corpus.current()
            uploads = [self._upload_retriever(doc_id, mode, corpus.embedder) for doc_id in self.uploads]
        return combined([corpus.retriever(mode, size, overlap), *uploads])

    def _upload_retriever(self, doc_id: str, mode: str, embedder: Embedder) -> Retriever:
        """One upload's own index, built on its first search in a mode (under the lock)."""
        if (doc_id, mode) not in self._upload_retrievers:
            self._upload_retrievers[doc_id, mode] = make_retriever(mode, self._chunks_of(doc_id), embedder)
        return self._upload_retrievers[doc_id, mode]

    def _chunks_of(self, doc_id: str) -> list[Chunk]:
        """One upload's chunks at the current setting, cut again after a rechunk (under the lock)."""
        if doc_id not in self._upload_chunks:
            self._upload_chunks[doc_id] = chunk_documents([self.uploads[doc_id]], self.chunk_size, self.chunk_overlap)
        return self._upload_chunks[doc_id]
