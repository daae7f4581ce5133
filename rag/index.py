"""A session's knowledge base: the shared corpus plus that session's own uploads.

Searching and (re)building indexes are blocking: the app calls them in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from rag.chunking import chunk_documents
from rag.documents import Chunk, Document, Hit
from rag.retrieval import Retriever, make_retriever


class SharedCorpus:
    """Documents every session can search; their chunks and indexes are built once per setting."""

    def __init__(self, documents: Sequence[Document]) -> None:
        self.documents = tuple(documents)
        self._chunks: dict[tuple[int, int], list[Chunk]] = {}
        self._retrievers: dict[tuple[str, int, int], Retriever] = {}
        self._lock = threading.Lock()

    def chunks(self, size: int, overlap: int) -> list[Chunk]:
        with self._lock:
            if (size, overlap) not in self._chunks:
                self._chunks[size, overlap] = chunk_documents(self.documents, size, overlap)
            return self._chunks[size, overlap]

    def retriever(self, mode: str, size: int, overlap: int) -> Retriever:
        chunks = self.chunks(size, overlap)
        with self._lock:
            if (mode, size, overlap) not in self._retrievers:
                self._retrievers[mode, size, overlap] = make_retriever(mode, chunks)
            return self._retrievers[mode, size, overlap]


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

    def __init__(self, corpus: SharedCorpus, chunk_size: int, chunk_overlap: int) -> None:
        self.corpus = corpus
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.uploads: dict[str, Document] = {}
        self._own_retrievers: dict[str, Retriever] = {}
        self._lock = threading.Lock()

    def add(self, document: Document) -> Added:
        with self._lock:
            if document.id in self.uploads:
                raise DuplicateUpload(self.uploads[document.id])
            chunks = chunk_documents([document], self.chunk_size, self.chunk_overlap)
            self.uploads[document.id] = document
            self._own_retrievers.clear()
        return Added(document, len(chunks))

    def remove(self, source: str) -> Document | None:
        """Remove an upload by its file name; returns it, or None if there is none."""
        with self._lock:
            for doc_id, document in self.uploads.items():
                if document.source == source:
                    del self.uploads[doc_id]
                    self._own_retrievers.clear()
                    return document
        return None

    def rechunk(self, size: int, overlap: int) -> None:
        with self._lock:
            if (size, overlap) != (self.chunk_size, self.chunk_overlap):
                self.chunk_size, self.chunk_overlap = size, overlap
                self._own_retrievers.clear()

    def search(self, query: str, mode: str, k: int) -> list[Hit]:
        return self._retriever(mode).search(query, k)

    def _retriever(self, mode: str) -> Retriever:
        with self._lock:
            if not self.uploads:
                size, overlap = self.chunk_size, self.chunk_overlap
            elif mode in self._own_retrievers:
                return self._own_retrievers[mode]
            else:
                chunks = self.corpus.chunks(self.chunk_size, self.chunk_overlap) + chunk_documents(
                    self.uploads.values(), self.chunk_size, self.chunk_overlap
                )
                self._own_retrievers[mode] = make_retriever(mode, chunks)
                return self._own_retrievers[mode]
        return self.corpus.retriever(mode, size, overlap)
