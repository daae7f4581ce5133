"""Retrievers rank chunks of small corpora the tests write; scores are comparable in [0, 1]."""

from __future__ import annotations

import pytest

from rag.chunking import chunk_documents
from rag.documents import Document
from rag.retrieval import BM25Retriever, LexicalRetriever, make_retriever

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


@pytest.mark.parametrize("mode", MODES)
def test_words_in_other_scripts_are_searchable(mode):
    documents = [
        Document("ru", "Отчёт", "ru.md", "Запуск проекта назначен на март."),
        Document("en", "Report", "en.md", "The project launches in March."),
    ]
    hits = make_retriever(mode, chunk_documents(documents)).search("запуск проекта", k=1)
    assert hits[0].chunk.document.id == "ru"
