"""Scoring one answer from 1 to 5 on groundedness, correctness and conciseness.

Two ways to score, with the same three criteria:

- the rubric: pure functions over (answer, passages, gold answers), cheap and
  reproducible; every mapping table is in the docstring of its function;
- an LLM judge: `judge_messages` asks a capable model for the three scores in a
  strict JSON format and `parse_judge_reply` reads them back, tolerating prose and
  code fences around the JSON; a reply it cannot read gives None, and the caller
  falls back to the rubric for that answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from answering.grounding import CITATION, is_abstention, is_repetitive, support_share, words
from evaluation.router import token_f1
from models.base import ChatMessage

CRITERIA = ("groundedness", "correctness", "conciseness")


# (lowest value, score) rows, checked from the top: the first row the value reaches wins.
SUPPORT_TABLE = ((0.9, 5), (0.75, 4), (0.5, 3), (0.25, 2), (0.0, 1))
F1_TABLE = ((0.8, 5), (0.6, 4), (0.4, 3), (0.2, 2), (0.0, 1))
# (highest length ratio, score) rows, checked from the top.
LENGTH_TABLE = ((1.5, 5), (2.0, 4), (3.0, 3), (5.0, 2), (float("inf"), 1))

# A complete one-sentence answer is about this long, however short the gold ("1889").
MIN_TARGET_WORDS = 10
# The target length of an abstention ("The documents do not cover who ...").
ABSTENTION_TARGET_WORDS = 20


@dataclass(frozen=True)
class Scores:
    """Three 1-5 scores and where they came from ("rubric" or "judge")."""

    groundedness: int
    correctness: int
    conciseness: int
    source: str = "rubric"

    @property
    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in CRITERIA}


@dataclass(frozen=True)
class RubricDetail:
    """The rubric's scores with the measurements they were read from."""

    scores: Scores
    support: float | None  # share of the answer's content words found in the passages
    f1: float | None  # token F1 against the best gold answer; None for an unanswerable question
    length_ratio: float | None  # answer words / target words
    abstained: bool
    repetitive: bool


def _from_floor_table(value: float, table: Sequence[tuple[float, int]]) -> int:
    return next(score for floor, score in table if value >= floor)


def _from_ceiling_table(value: float, table: Sequence[tuple[float, int]]) -> int:
    return next(score for ceiling, score in table if value <= ceiling)


def strip_citations(answer: str) -> str:
    return CITATION.sub(" ", answer)


def groundedness(answer: str, passages: Sequence[str]) -> int:
    """1-5 from the share of the answer's content words found in the passages.

    | share of content words in the passages | score |
    |---|---|
    | >= 0.90 | 5 |
    | >= 0.75 | 4 |
    | >= 0.50 | 3 |
    | >= 0.25 | 2 |
    | below, or an empty answer | 1 |

    An abstention ("the documents do not cover it") claims nothing beyond the
    passages and scores 5.
    """
    if is_abstention(answer):
        return 5
    return _from_floor_table(support_share(answer, passages), SUPPORT_TABLE)


def correctness(answer: str, gold_answers: Sequence[str]) -> int:
    """1-5 against the gold answers.

    Answerable question (at least one gold answer): SQuAD token F1 of the answer
    without its citation markers, best over the gold answers
    (`evaluation.router.token_f1`):

    | token F1 | score |
    |---|---|
    | >= 0.8 | 5 |
    | >= 0.6 | 4 |
    | >= 0.4 | 3 |
    | >= 0.2 | 2 |
    | below, or an empty answer | 1 |

    An abstention on an answerable question scores 1, whatever words it shares with
    the gold ("the documents do not cover who opened the bridge").

    Unanswerable question (no gold answer): 5 for an abstention
    (`answering.confidence.is_abstention`), 1 for anything else, since any answer is invented.
    """
    if not gold_answers:
        return 5 if is_abstention(answer) else 1
    if is_abstention(answer):
        return 1
    return _from_floor_table(token_f1(strip_citations(answer), gold_answers), F1_TABLE)


def target_words(gold_answers: Sequence[str]) -> int:
    """The length a good answer needs: the shortest gold answer, at least
    MIN_TARGET_WORDS; ABSTENTION_TARGET_WORDS for an unanswerable question."""
    if not gold_answers:
        return ABSTENTION_TARGET_WORDS
    return max(MIN_TARGET_WORDS, min(len(words(gold)) for gold in gold_answers))


def conciseness(answer: str, gold_answers: Sequence[str]) -> int:
    """1-5 from the answer's length in words (citation markers left out) divided by
    `target_words(gold_answers)`:

    | length / target | score |
    |---|---|
    | <= 1.5 | 5 |
    | <= 2 | 4 |
    | <= 3 | 3 |
    | <= 5 | 2 |
    | longer, or an empty answer | 1 |

    A short answer is not penalised here (correctness sees what it misses); an answer
    that loops (`is_repetitive`) loses one more point, down to 1.
    """
    length = len(words(strip_citations(answer)))
    if not length:
        return 1
    score = _from_ceiling_table(length / target_words(gold_answers), LENGTH_TABLE)
    return max(1, score - 1) if is_repetitive(answer) else score


def score(answer: str, passages: Sequence[str], gold_answers: Sequence[str]) -> RubricDetail:
    """The three rubric scores of one answer, with the measurements behind them."""
    length = len(words(strip_citations(answer)))
    return RubricDetail(
        Scores(groundedness(answer, passages), correctness(answer, gold_answers), conciseness(answer, gold_answers)),
        support=support_share(answer, passages),
        f1=token_f1(strip_citations(answer), gold_answers) if gold_answers else None,
        length_ratio=length / target_words(gold_answers),
        abstained=is_abstention(answer),
        repetitive=is_repetitive(answer),
    )


# --- the LLM judge ------------------------------------------------------------------

JUDGE_INSTRUCTIONS = (
    "You grade answers of a document question-answering assistant. Score the answer "
    "from 1 (worst) to 5 (best) on three criteria:\n"
    "- groundedness: every claim of the answer is supported by the passages (an answer "
    "saying the documents do not cover the question claims nothing and scores 5);\n"
    "- correctness: the answer agrees with the reference answer; when there is no "
    "reference answer the question cannot be answered from the documents, and only an "
    "answer saying so is correct (5), any other answer scores 1;\n"
    "- conciseness: the answer is about as long as it needs to be, with no rambling or "
    "repetition; an empty answer scores 1.\n"
    "Reply with exactly one JSON object and nothing else, in this format:\n"
    '{"groundedness": 4, "correctness": 3, "conciseness": 5}'
)


def judge_messages(
    question: str, answer: str, passages: Sequence[str], gold_answers: Sequence[str]
) -> list[ChatMessage]:
    """The judge's prompt: the instructions, then the question, passages, reference and answer."""
    numbered = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(passages, start=1)) or "(no passages)"
    reference = "\n".join(f"- {gold}" for gold in gold_answers) or "(none: the documents do not answer it)"
    return [
        ChatMessage("system", JUDGE_INSTRUCTIONS),
        ChatMessage(
            "user",
            f"Question: {question}\n\nPassages:\n{numbered}\n\nReference answer(s):\n{reference}\n\n"
            f"Answer to grade:\n{answer.strip() or '(empty)'}\n\nJSON scores:",
        ),
    ]


# "groundedness": 4, groundedness = 4, Groundedness: 4/5 ...
_KEY_VALUE = {name: re.compile(rf"{name}\W{{0,4}}([1-5])(?![\d.])", re.IGNORECASE) for name in CRITERIA}


def _json_objects(text: str) -> Iterator[Any]:
    """Every balanced {...} span of the text, outermost first, as parsed JSON objects."""
    for start in (i for i, char in enumerate(text) if char == "{"):
        depth = 0
        for end in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            if depth == 0:
                try:
                    value = json.loads(text[start : end + 1])
                except ValueError:
                    break
                if isinstance(value, dict):
                    yield value
                break


def _as_score(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().split("/")[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return round(number) if 1 <= number <= 5 and number == round(number) else None


def parse_judge_reply(reply: str) -> Scores | None:
    """The judge's three scores, or None when the reply does not give all three as 1-5.

    Accepted: the strict JSON object; the same inside prose or a code fence (the
    first object with all three keys wins; keys in any case; values as integers,
    whole floats or strings such as "4" or "4/5"); failing any JSON, "name: n"
    pairs for all three criteria.
    """
    for candidate in _json_objects(reply):
        lowered = {str(key).strip().lower(): value for key, value in candidate.items()}
        found = {name: _as_score(lowered.get(name)) for name in CRITERIA}
        if all(value is not None for value in found.values()):
            return Scores(**found, source="judge")  # type: ignore[arg-type]
    pairs = {name: pattern.search(reply) for name, pattern in _KEY_VALUE.items()}
    matched = {name: match for name, match in pairs.items() if match is not None}
    if len(matched) == len(pairs):
        return Scores(**{name: int(match.group(1)) for name, match in matched.items()}, source="judge")
    return None
