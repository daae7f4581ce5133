"""The escalation router: should the larger model answer this turn, and why.

A decision lists every signal that crossed its threshold, with the value and the
threshold, so that the chat can say exactly why a turn was escalated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from answering.confidence import Signals


class Mode(str, Enum):
    OFF = "off"  # the small model always answers
    ESCALATE = "escalate"  # an unsure small answer is replaced by the large model's
    DRAFT_REFINE = "draft-refine"  # an unsure small answer is polished by the large model
    ALWAYS_LLM = "always-llm"  # the large model answers every question


@dataclass(frozen=True)
class Thresholds:
    # Chosen on 40 clapnq questions with the embedded pair (evaluation.router):
    # about 40% of turns escalate and the hybrid matches the larger model's score.
    # The app takes them from the settings (ROUTER_MIN_*); re-tune for a server pair.
    min_answer_tokens: int = 6
    min_low_token_prob: float = 0.10
    min_retrieval_score: float = 0.3
    # A copy answer whose choice leads the next candidate by less is escalated.
    min_copy_margin: float = 0.0


@dataclass(frozen=True)
class Reason:
    signal: str
    value: float
    threshold: float
    explanation: str


@dataclass(frozen=True)
class Decision:
    mode: Mode
    escalate: bool
    reasons: tuple[Reason, ...] = ()

    def summary(self) -> str:
        if self.mode is Mode.OFF:
            return "escalation is off"
        if not self.reasons:
            return "the small model's answer passed every check"
        return "; ".join(reason.explanation for reason in self.reasons)


def confidence(signals: Signals, thresholds: Thresholds) -> float:
    """One number for how sure the small answer looks: below 1 means escalate.

    Each signal is divided by its threshold and the weakest one counts, so the
    number crosses 1 exactly where `decide` starts giving reasons. Scaling every
    threshold at once is the same as comparing this number with another cut-off,
    which is how the evaluation sweeps the escalation rate.
    """
    if signals.abstained:
        return 0.0
    ratios = [float("inf")]
    if signals.copy_margin is not None:
        if thresholds.min_copy_margin:
            ratios.append(signals.copy_margin / thresholds.min_copy_margin)
    elif thresholds.min_answer_tokens:
        ratios.append(signals.answer_tokens / thresholds.min_answer_tokens)
    if thresholds.min_retrieval_score:
        ratios.append(signals.retrieval_score / thresholds.min_retrieval_score)
    if signals.low_token_prob is not None and thresholds.min_low_token_prob:
        ratios.append(signals.low_token_prob / thresholds.min_low_token_prob)
    return min(ratios)


def decide(signals: Signals, mode: Mode, thresholds: Thresholds) -> Decision:
    if mode is Mode.OFF:
        return Decision(mode, escalate=False)
    if mode is Mode.ALWAYS_LLM:
        return Decision(
            mode, escalate=True, reasons=(Reason("mode", 1.0, 1.0, "the router is set to always use the large model"),)
        )
    reasons = list(_weak_signals(signals, thresholds))
    return Decision(mode, escalate=bool(reasons), reasons=tuple(reasons))


def _weak_signals(signals: Signals, thresholds: Thresholds) -> Iterator[Reason]:
    if signals.copy_margin is not None:
        if signals.copy_margin < thresholds.min_copy_margin:
            yield Reason(
                "copy_margin",
                signals.copy_margin,
                thresholds.min_copy_margin,
                f"the small model hesitated between passage sentences (its choice leads by "
                f"{signals.copy_margin:.2f} < {thresholds.min_copy_margin:.2f})",
            )
    elif signals.answer_tokens < thresholds.min_answer_tokens:
        yield Reason(
            "answer_tokens",
            signals.answer_tokens,
            thresholds.min_answer_tokens,
            f"the answer is short ({signals.answer_tokens} tokens < {thresholds.min_answer_tokens})",
        )
    if signals.abstained:
        yield Reason("abstained", 1.0, 0.0, "the small model said the passages do not answer the question")
    if (
        signals.copy_margin is None
        and signals.low_token_prob is not None
        and signals.low_token_prob < thresholds.min_low_token_prob
    ):
        yield Reason(
            "low_token_prob",
            signals.low_token_prob,
            thresholds.min_low_token_prob,
            f"the small model was unsure of its words (10th-percentile token probability "
            f"{signals.low_token_prob:.2f} < {thresholds.min_low_token_prob:.2f})",
        )
    if signals.retrieval_score < thresholds.min_retrieval_score:
        yield Reason(
            "retrieval_score",
            signals.retrieval_score,
            thresholds.min_retrieval_score,
            f"the best passage matched weakly (score {signals.retrieval_score:.2f} < "
            f"{thresholds.min_retrieval_score:.2f})",
        )
