"""How sure the small model seems: pure functions over what it produced.

Every signal works without log-probabilities too (Foundry Local returns none),
so a router always has something to go on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from answering.grounding import is_abstention

# The quantile of per-token probabilities used as "the weak part of the answer".
# The mean hides a few wild guesses in a long answer; the minimum alone is one token.
LOW_QUANTILE = 0.1


@dataclass(frozen=True)
class Signals:
    answer_tokens: int
    retrieval_score: float  # best passage's score in [0, 1]; 0 when nothing matched
    abstained: bool  # the answer says the passages do not cover the question, or refuses
    # From per-token log-probabilities; None when the backend gave none.
    min_token_prob: float | None = None
    low_token_prob: float | None = None  # the LOW_QUANTILE quantile
    mean_token_logprob: float | None = None
    # A copy answer (the model chose a passage sentence): how far its choice leads the next
    # candidate. Its token signals do not apply: it wrote nothing.
    copy_margin: float | None = None

    @property
    def has_token_probs(self) -> bool:
        return self.low_token_prob is not None


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty sequence."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def collect_signals(
    answer: str,
    completion_tokens: int,
    logprobs: Sequence[float | None],
    retrieval_score: float,
) -> Signals:
    """Signals of one answer. `logprobs` has one entry per streamed piece (None if unknown)."""
    known = [value for value in logprobs if value is not None]
    # A backend either gives log-probabilities for (nearly) every token or none:
    # a few stray values are not enough to judge the answer by.
    if not known or len(known) < len(logprobs) / 2:
        return Signals(completion_tokens, retrieval_score, is_abstention(answer))
    probabilities = [math.exp(value) for value in known]
    return Signals(
        completion_tokens,
        retrieval_score,
        is_abstention(answer),
        min_token_prob=min(probabilities),
        low_token_prob=quantile(probabilities, LOW_QUANTILE),
        mean_token_logprob=sum(known) / len(known),
    )
