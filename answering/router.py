"""The escalation router: should the larger model answer this turn, and why.

A decision lists every signal that crossed its threshold, with the value and the
threshold, so that the chat can say exactly why a turn was escalated. The explanations are
`i18n.Message`s: English as made, said in the chat's language where shown (`Decision.summary`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from answering.confidence import Signals
from i18n import N_, Message, localise


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
    # For the user: an `i18n.Message` (English as a str, translated where shown), or plain English.
    explanation: str


# The reasons answering.pipeline adds to a decision (support as a routing signal, a question the
# small model cannot read), made there as `Message(UNSUPPORTED_SHARE, cut=..., total=...)`.
UNSUPPORTED_SHARE = N_("{cut} of {total} sentences of the small model's answer are not in the passages")
EMPTY_ANSWER = N_("the small model's answer is empty")
# Translators: a log-probability is a number (negative); keep the comparison as it is.
COPY_LIKELIHOOD = N_(
    "the model doubts that the sentence it chose answers the question (question log-probability "
    "{likelihood:.2f} < {minimum:.2f})"
)
RESTATES_QUESTION = N_("the small model's answer only repeats the question")
NO_NUMBER = N_("the question asks for a number and the answer gives none")
DRAWN_FROM_BEST = N_("the answer does not come from the passages that match the question ({share:.0%} of its words do)")
UNREADABLE = N_("the small model's tokenizer hardly knows the question's script ({ratio:.1f} tokens a character)")

ESCALATION_OFF = N_("escalation is off")
PASSED_EVERY_CHECK = N_("the small model's answer passed every check")


@dataclass(frozen=True)
class Decision:
    mode: Mode
    escalate: bool
    reasons: tuple[Reason, ...] = ()

    def summary(self, language: str | None = None) -> str:
        """Why the router decided so, in `language` (English by default)."""
        if self.mode is Mode.OFF:
            return Message(ESCALATION_OFF).text(language)
        if not self.reasons:
            return Message(PASSED_EVERY_CHECK).text(language)
        return "; ".join(localise(reason.explanation, language) for reason in self.reasons)


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
            mode,
            escalate=True,
            reasons=(Reason("mode", 1.0, 1.0, Message(N_("the router is set to always use the large model"))),),
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
                Message(
                    N_(
                        "the small model hesitated between passage sentences (its choice leads by "
                        "{margin:.2f} < {minimum:.2f})"
                    ),
                    margin=signals.copy_margin,
                    minimum=thresholds.min_copy_margin,
                ),
            )
    elif signals.answer_tokens < thresholds.min_answer_tokens:
        yield Reason(
            "answer_tokens",
            signals.answer_tokens,
            thresholds.min_answer_tokens,
            Message(
                N_("the answer is short ({tokens} tokens < {minimum})"),
                tokens=signals.answer_tokens,
                minimum=thresholds.min_answer_tokens,
            ),
        )
    if signals.abstained:
        yield Reason("abstained", 1.0, 0.0, Message(N_("the small model said the passages do not answer the question")))
    if (
        signals.copy_margin is None
        and signals.low_token_prob is not None
        and signals.low_token_prob < thresholds.min_low_token_prob
    ):
        yield Reason(
            "low_token_prob",
            signals.low_token_prob,
            thresholds.min_low_token_prob,
            Message(
                N_(
                    "the small model was unsure of its words (10th-percentile token probability "
                    "{probability:.2f} < {minimum:.2f})"
                ),
                probability=signals.low_token_prob,
                minimum=thresholds.min_low_token_prob,
            ),
        )
    if signals.retrieval_score < thresholds.min_retrieval_score:
        yield Reason(
            "retrieval_score",
            signals.retrieval_score,
            thresholds.min_retrieval_score,
            Message(
                N_("the best passage matched weakly (score {score:.2f} < {minimum:.2f})"),
                score=signals.retrieval_score,
                minimum=thresholds.min_retrieval_score,
            ),
        )
