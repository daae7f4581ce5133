"""Retrievers rank chunks of small corpora the tests write; scores are comparable in [0, 1]."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from rag.chunking import chunk_documents
from rag.documents import Document
from rag.retrieval import (
    BM25Retriever,
    LexicalRetriever,
    TermRetriever,
    combined,
    make_retriever,
    retriever_from_arrays,
)

MODES = ["lexical", "bm25"]

CORPUS = [
    Document("cats", "Cats", "cats.md", "Cats purr when they are content. A cat sleeps most of the day."),
    Document("dogs", "Dogs", "dogs.md", "Dogs bark at strangers. A dog needs a daily walk."),
    Document("vllm", "Serving", "serving.md", "vLLM serves models to a cluster of GPUs with an OpenAI-compatible API."),
]


@pytest.fixture
def chunks():
    return chunk_documents(CORPUS, size=500, overlap=0)


@pytest.mark.parametrize("mode", MODES)
def test_a_retriever_mentions_the_words_its_chunks_hold_and_the_starts_of_longer_ones(mode, chunks):
    retriever = make_retriever(mode, chunks)

    assert retriever.mentions("vLLM") and retriever.mentions("OpenAI")
    assert retriever.mentions("Open")  # begins "openai"
    assert not retriever.mentions("Slack") and not retriever.mentions("Op")
    assert retriever.mentions("The")  # a stop word is not indexed, so it cannot be ruled out


def test_indexes_searched_together_mention_what_any_of_them_holds(chunks):
    upload = chunk_documents([Document("up", "Notes", "notes.md", "Slack messages are archived weekly.")], 500, 0)
    together = combined([make_retriever("bm25", chunks), make_retriever("bm25", upload)])

    assert together.mentions("Slack") and together.mentions("vLLM")
    assert not together.mentions("Okta")


@pytest.mark.parametrize("mode", MODES)
def test_the_chunk_that_answers_ranks_first(mode, chunks):
    hits = make_retriever(mode, chunks).search("Why do cats purr?", k=3)

    assert hits[0].chunk.document.id == "cats"
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))


@pytest.mark.parametrize("mode", MODES)
def test_scores_are_between_zero_and_one_and_fall_with_rank(mode, chunks):
    hits = make_retriever(mode, chunks).search("a dog that barks at strangers", k=3)

    scores = [hit.score for hit in hits]
    assert all(0 < score <= 1 for score in scores)
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("mode", MODES)
def test_a_query_the_corpus_covers_scores_higher_than_one_it_does_not(mode, chunks):
    retriever = make_retriever(mode, chunks)
    covered = retriever.search("dogs bark at strangers", k=1)[0].score
    uncovered = retriever.search("dogs and the price of tulip bulbs in holland", k=1)[0].score

    assert covered > uncovered


@pytest.mark.parametrize("mode", MODES)
def test_words_are_matched_whatever_their_case_accents_and_endings(mode, chunks):
    hits = make_retriever(mode, chunks).search("SERVING MODELS on GPU clusters", k=1)
    assert hits[0].chunk.document.id == "vllm"


@pytest.mark.parametrize("mode", MODES)
def test_a_query_of_stop_words_only_finds_nothing(mode, chunks):
    assert make_retriever(mode, chunks).search("what is the and of it", k=3) == []


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_corpus_finds_nothing(mode):
    assert make_retriever(mode, []).search("cats", k=3) == []


@pytest.mark.parametrize("mode", MODES)
def test_ties_keep_corpus_order(mode):
    twins = [Document(name, "Notes", f"{name}.md", "The launch is on Tuesday.") for name in ("first", "second")]
    hits = make_retriever(mode, chunk_documents(twins)).search("launch tuesday", k=2)

    assert [hit.chunk.document.id for hit in hits] == ["first", "second"]
    assert hits[0].score == hits[1].score


def test_the_title_counts_for_retrieval():
    documents = [
        Document("a", "Quarterly budget", "a.md", "Numbers for the next period are below."),
        Document("b", "Holiday rota", "b.md", "Who is on call over the holidays."),
    ]
    hits = BM25Retriever(chunk_documents(documents)).search("budget", k=1)
    assert hits[0].chunk.document.id == "a"


def test_lexical_rare_terms_count_for_more_than_common_ones():
    documents = [
        Document("common", "", "c.md", "The team met. The team agreed. The team left."),
        Document("rare", "", "r.md", "Kubernetes upgrade planned."),
        Document("other", "", "o.md", "The team wrote docs."),
    ]
    hits = LexicalRetriever(chunk_documents(documents)).search("team kubernetes", k=3)
    assert hits[0].chunk.document.id == "rare"


# Scores against the reference implementations (the previous code, kept in bench.retrieval):
# rank-bm25 for BM25, the term-overlap loop in Python for lexical.
REFERENCE_CORPUS = [
    Document("a", "Expenses", "a.md", "Travel expenses are paid monthly. Expenses over 500 need approval approval."),
    Document("b", "Travel", "b.md", "Book travel through the portal. Travel by train is preferred for short trips."),
    Document("c", "On call", "c.md", "The on-call rota changes weekly. Call the lead when the pager fires twice."),
    Document("d", "Budget", "d.md", "The quarterly budget covers travel, training and hardware for the team."),
    Document("e", "Hardware", "e.md", "Laptops are replaced every three years; monitors on request."),
    Document("f", "Training", "f.md", "Training budget: each engineer may spend 1000 a year on courses and books."),
    Document("g", "Notes", "g.md", "Short note."),
]
REFERENCE_QUERIES = [
    "travel expenses approval",
    "budget for training courses",
    "who do I call when the pager fires",
    "travel travel train",  # a repeated term counts twice
    "laptop replacement and zeppelins",  # a term no chunk has
    "quarterly hardware budget team travel training",
]


@pytest.mark.parametrize(
    ("ours", "reference"), [("bm25", "ReferenceBM25Retriever"), ("lexical", "ReferenceLexicalRetriever")]
)
@pytest.mark.parametrize("query", REFERENCE_QUERIES)
def test_scores_equal_the_reference_implementation(ours, reference, query):
    from bench import retrieval as bench

    chunks = chunk_documents(REFERENCE_CORPUS, size=200, overlap=0)
    expected = getattr(bench, reference)(chunks).search(query, k=len(chunks))
    hits = make_retriever(ours, chunks).search(query, k=len(chunks))

    assert [hit.chunk for hit in hits] == [hit.chunk for hit in expected]
    assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-6)


def _equal_length_documents(prefix: str, texts: list[str]) -> list[Document]:
    # No title and the same number of words: every chunk has the same length, so BM25's
    # length normalisation is the same in any index and scores can be compared exactly.
    assert len({len(text.split()) for text in texts}) == 1
    return [Document(f"{prefix}{i}", "", f"{prefix}{i}.md", text) for i, text in enumerate(texts)]


SHARED = _equal_length_documents(
    "s", ["kettle descaling steps weekly", "printer toner replacement guide", "kettle warranty claim form"]
)
UPLOADED = _equal_length_documents("u", ["nightjar launch date march", "nightjar kettle budget review"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["kettle warranty", "nightjar kettle", "nightjar launch", "toner for the printer"])
def test_indexes_searched_together_score_as_one_index(mode, query):
    shared, uploaded = chunk_documents(SHARED), chunk_documents(UPLOADED)
    together = combined([make_retriever(mode, shared), make_retriever(mode, uploaded)])
    one = make_retriever(mode, shared + uploaded)

    hits, expected = together.search(query, k=5), one.search(query, k=5)

    assert [hit.chunk for hit in hits] == [hit.chunk for hit in expected]
    assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))


@pytest.mark.parametrize("mode", MODES)
def test_ties_across_indexes_keep_the_shared_corpus_first(mode):
    note = "The launch is on Tuesday."
    first = chunk_documents([Document("shared", "Notes", "s.md", note)])
    second = chunk_documents([Document("upload", "Notes", "u.md", note)])

    hits = combined([make_retriever(mode, first), make_retriever(mode, second)]).search("launch tuesday", k=2)

    assert [hit.chunk.document.id for hit in hits] == ["shared", "upload"]


@pytest.mark.parametrize("mode", MODES)
def test_chunks_without_a_content_word_are_indexed_but_never_found(mode):
    documents = [Document("empty", "", "e.md", "Of the and."), Document("full", "", "f.md", "Kettle descaling.")]
    retriever = make_retriever(mode, chunk_documents(documents))

    assert [hit.chunk.document.id for hit in retriever.search("kettle", k=5)] == ["full"]
    assert make_retriever(mode, chunk_documents(documents[:1])).search("kettle", k=5) == []


@pytest.mark.parametrize("mode", MODES)
def test_only_the_k_best_come_back_even_among_ties(mode):
    twins = [Document(f"d{i}", "Notes", f"{i}.md", "The launch is on Tuesday.") for i in range(6)]
    hits = make_retriever(mode, chunk_documents(twins)).search("launch", k=4)

    assert [hit.chunk.document.id for hit in hits] == ["d0", "d1", "d2", "d3"]


def _stored(retriever: TermRetriever) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The retriever's arrays and parameters as rag.persisted_index keeps them: an .npz read
    without pickle, and JSON."""
    arrays, parameters = retriever.to_arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}, json.loads(json.dumps(parameters))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", [*REFERENCE_QUERIES, "what is the and of it"])
def test_a_retriever_rebuilt_from_its_arrays_finds_the_same_hits_and_scores(mode, query):
    chunks = chunk_documents(REFERENCE_CORPUS, size=200, overlap=0)
    built = make_retriever(mode, chunks)
    assert isinstance(built, TermRetriever)

    rebuilt = retriever_from_arrays(mode, chunks, *_stored(built))

    assert type(rebuilt) is type(built)
    assert rebuilt.search(query, k=len(chunks)) == built.search(query, k=len(chunks))


def test_a_bm25_retriever_keeps_its_parameters_through_its_arrays():
    chunks = chunk_documents(REFERENCE_CORPUS, size=200, overlap=0)
    built = BM25Retriever(chunks, k1=1.2, b=0.5)

    rebuilt = BM25Retriever.from_arrays(chunks, *_stored(built))

    assert (rebuilt.k1, rebuilt.b) == (1.2, 0.5)
    assert rebuilt.search("travel expenses", k=3) == built.search("travel expenses", k=3)


@pytest.mark.parametrize("mode", MODES)
def test_arrays_for_another_number_of_chunks_are_refused(mode):
    chunks = chunk_documents(REFERENCE_CORPUS, size=200, overlap=0)
    arrays, parameters = _stored(make_retriever(mode, chunks))

    with pytest.raises(ValueError, match="rows"):
        retriever_from_arrays(mode, chunks[:-1], arrays, parameters)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("damage", "refusal"),
    [
        (lambda arrays: arrays.update(rows=arrays["rows"] + 100), "outside the matrix"),
        (lambda arrays: arrays.update(starts=arrays["starts"][:-1]), "starts do not match"),
        (lambda arrays: arrays.update(terms=np.frombuffer(b'{"a": 1}', dtype=np.uint8)), "not a list"),
    ],
)
def test_arrays_that_do_not_make_a_matrix_are_refused(mode, damage, refusal):
    chunks = chunk_documents(REFERENCE_CORPUS, size=200, overlap=0)
    arrays, parameters = _stored(make_retriever(mode, chunks))
    damage(arrays)

    with pytest.raises(ValueError, match=refusal):
        retriever_from_arrays(mode, chunks, arrays, parameters)
