"""Question sets the evaluation commands read (the shared sets, or questions over the app's
corpus), samples of them, and whether a reply shows a question's expected fact."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from answering.grounding import words
from evaluation.retrieval import load_set
from models.settings import Settings
from rag.index import SharedCorpus
from rag.loading import corpus_documents
from rag.text import normalise_answer, tokenize

# An expected fact of this many words or fewer is seen when a reply holds it; a longer one
# (the shared sets' written answers) when a reply has this share of its content words.
SHORT_FACT_WORDS = 6
LONG_FACT_RECALL = 0.5


def load_questions(folder: Path, settings: Settings) -> tuple[SharedCorpus, list[dict]]:
    """A shared set's own documents, or (for a set of questions alone) the app's corpus."""
    if (folder / "docs.jsonl").is_file():
        documents, questions = load_set(folder)
        return SharedCorpus(documents), questions
    with (folder / "questions.jsonl").open(encoding="utf-8") as lines:
        questions = [json.loads(line) for line in lines if line.strip()]
    return SharedCorpus(corpus_documents(settings.corpus_dir)), questions


def sample_questions(questions: Sequence[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """`limit` questions drawn with `random.Random(seed)`, keeping the set's answerable/unanswerable mix."""
    if limit is None or limit >= len(questions):
        return list(questions)
    rng = random.Random(seed)
    answerable = [i for i, q in enumerate(questions) if q["answers"]]
    unanswerable = [i for i, q in enumerate(questions) if not q["answers"]]
    take = round(limit * len(answerable) / len(questions))
    chosen = rng.sample(answerable, take) + rng.sample(unanswerable, limit - take)
    return [questions[i] for i in sorted(chosen)]


def fact_seen(text: str, answers: Sequence[str], pattern: str | None = None) -> bool:
    """Whether the answer shows one of the expected facts (see the module's docstring)."""
    return fact_position(text, answers, pattern) is not None


def fact_position(text: str, answers: Sequence[str], pattern: str | None = None) -> int | None:
    """The number of words before the first place the text shows an expected fact, or None
    when it shows none. A long fact (the shared sets') is seen in the text as a whole, at 0."""
    starts: list[int] = []
    if pattern and (match := re.search(pattern, text, re.IGNORECASE)):
        starts.append(match.start())
    shown_terms = set(tokenize(text))
    for answer in answers:
        if len(answer.split()) <= SHORT_FACT_WORDS:
            # Word for word, or as written ("~/.cache/x", "-DGGML_NATIVE=OFF"), never inside a longer word.
            if match := re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE):
                starts.append(match.start())
            elif f" {normalise_answer(answer)} " in f" {normalise_answer(text)} ":
                starts.append(_normalised_start(text, answer))
        else:
            wanted = set(tokenize(answer))
            if wanted and len(wanted & shown_terms) / len(wanted) >= LONG_FACT_RECALL:
                starts.append(0)
    return len(words(text[: min(starts)])) if starts else None


def _normalised_start(text: str, answer: str) -> int:
    """Where, roughly, an answer matched only after normalising begins: at its first word."""
    first = normalise_answer(answer).split()[0]
    match = re.search(rf"(?<!\w){re.escape(first)}", text, re.IGNORECASE)
    return match.start() if match else 0
