"""The Telugu development sets stay well formed, in Telugu, and true to the pages they ask about."""

from __future__ import annotations

import json
import re

import pytest

from evaluation.sets import fact_seen
from models.settings import PROJECT_ROOT
from rag.loading import corpus_documents

EVALUATION = PROJECT_ROOT / "evaluation"
CORPUS = PROJECT_ROOT / "docs_corpus"
SETS = {"telugu-handbook": ("te-hb-", 30), "telugu-pages": ("te-pg-", 20), "telugu-uncovered": ("te-oos-", 10)}

_TELUGU = re.compile(r"[\u0C00-\u0C7F]")
_LATIN = re.compile(r"[A-Za-z]")


def _questions(name: str) -> list[dict]:
    lines = (EVALUATION / name / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _pages() -> dict[str, str]:
    """The corpus as the app names it: document id ("corpus:te/uploads.md") to text."""
    return {document.id: document.text for document in corpus_documents(CORPUS)}


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_set_is_json_lines_with_unique_ids_and_its_minimum_size(name):
    prefix, minimum = SETS[name]
    questions = _questions(name)
    ids = [question["id"] for question in questions]
    assert len(ids) == len(set(ids))
    assert all(question_id.startswith(prefix) for question_id in ids)
    assert len(questions) >= minimum
    for question in questions:
        assert isinstance(question["question"], str) and question["question"].strip()
        assert isinstance(question["answers"], list) and isinstance(question["gold_doc_ids"], list)
        assert all(len(answer.split()) <= 6 for answer in question["answers"])
        if question.get("pattern"):
            re.compile(question["pattern"])


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_question_is_mostly_telugu(name):
    for question in _questions(name):
        letters = [c for c in question["question"] if c.isalpha() or _TELUGU.match(c)]
        telugu = sum(bool(_TELUGU.match(c)) for c in letters)
        assert telugu / len(letters) >= 0.6, question["id"]


def test_half_the_handbook_questions_have_no_latin_script_at_all():
    questions = _questions("telugu-handbook")
    assert sum(not _LATIN.search(q["question"]) for q in questions) * 2 >= len(questions)


def test_the_telugu_pages_are_corpus_documents_under_te():
    pages = _pages()
    assert "corpus:te/getting-started.md" in pages
    assert "corpus:te/uploads.md" in pages
    for page in ("getting-started.md", "uploads.md"):
        telugu, english = pages[f"corpus:te/{page}"], pages[f"corpus:{page}"]
        assert 0.4 <= len(telugu.split()) / len(english.split()) <= 0.8
        assert len(_TELUGU.findall(telugu)) > len(_LATIN.findall(telugu))


@pytest.mark.parametrize(
    ("name", "gold_pages"),
    [
        ("telugu-handbook", lambda page: page.startswith("corpus:") and "/" not in page),
        ("telugu-pages", lambda page: page in {"corpus:te/getting-started.md", "corpus:te/uploads.md"}),
    ],
)
def test_every_expected_fact_is_stated_in_its_gold_page(name, gold_pages):
    pages = _pages()
    questions = _questions(name)
    stale = []
    for question in questions:
        assert question["answers"] and question["gold_doc_ids"], question["id"]
        for page in question["gold_doc_ids"]:
            assert gold_pages(page) and page in pages, (question["id"], page)
            if not fact_seen(pages[page], question["answers"], question.get("pattern")):
                stale.append((question["id"], page))
    assert stale == []


def test_the_handbook_questions_spread_over_the_english_pages():
    asked = {page for q in _questions("telugu-handbook") for page in q["gold_doc_ids"]}
    assert len(asked) >= 10


def test_uncovered_questions_have_no_answers_and_no_gold_documents():
    for question in _questions("telugu-uncovered"):
        assert question["answers"] == [] and question["gold_doc_ids"] == [], question["id"]
        assert "pattern" not in question, question["id"]
