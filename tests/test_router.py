"""Confidence signals and router decisions on constructed answers."""

from __future__ import annotations

import math

import pytest

from answering.confidence import Signals, collect_signals, is_abstention, quantile
from answering.pipeline import TurnConfig
from answering.router import Mode, Thresholds, confidence, decide
from models.catalog import ModelSpec
from models.routing import PairRouting, load_routing, pair_key

THRESHOLDS = Thresholds(min_answer_tokens=6, min_low_token_prob=0.15, min_retrieval_score=0.3)
CONFIDENT = Signals(
    answer_tokens=40,
    retrieval_score=0.8,
    abstained=False,
    min_token_prob=0.3,
    low_token_prob=0.5,
    mean_token_logprob=-0.2,
)


def signals(**changes) -> Signals:
    return Signals(**{**CONFIDENT.__dict__, **changes})


def test_a_confident_answer_stays_with_the_small_model():
    decision = decide(CONFIDENT, Mode.ESCALATE, THRESHOLDS)
    assert (decision.escalate, decision.reasons) == (False, ())


@pytest.mark.parametrize(
    ("weak", "signal"),
    [
        (signals(answer_tokens=3), "answer_tokens"),
        (signals(abstained=True), "abstained"),
        (signals(low_token_prob=0.05), "low_token_prob"),
        (signals(retrieval_score=0.1), "retrieval_score"),
    ],
)
def test_each_weak_signal_alone_escalates_and_says_which(weak, signal):
    decision = decide(weak, Mode.ESCALATE, THRESHOLDS)

    assert decision.escalate
    assert [reason.signal for reason in decision.reasons] == [signal]


def test_the_reason_carries_the_value_and_the_threshold():
    [reason] = decide(signals(retrieval_score=0.12), Mode.ESCALATE, THRESHOLDS).reasons
    assert (reason.value, reason.threshold) == (0.12, 0.3)
    assert "0.12 < 0.30" in reason.explanation


def test_without_log_probabilities_the_other_signals_still_decide():
    no_logprobs = signals(min_token_prob=None, low_token_prob=None, mean_token_logprob=None)

    assert not decide(no_logprobs, Mode.ESCALATE, THRESHOLDS).escalate
    short = signals(min_token_prob=None, low_token_prob=None, mean_token_logprob=None, answer_tokens=2)
    assert decide(short, Mode.ESCALATE, THRESHOLDS).escalate


def test_mode_off_never_escalates():
    assert not decide(signals(answer_tokens=1, abstained=True), Mode.OFF, THRESHOLDS).escalate


def test_mode_always_llm_always_escalates():
    decision = decide(CONFIDENT, Mode.ALWAYS_LLM, THRESHOLDS)
    assert decision.escalate and decision.reasons[0].signal == "mode"


def test_draft_refine_escalates_on_the_same_signals_as_escalate():
    weak = signals(low_token_prob=0.01)
    assert decide(weak, Mode.DRAFT_REFINE, THRESHOLDS).escalate
    assert not decide(CONFIDENT, Mode.DRAFT_REFINE, THRESHOLDS).escalate


@pytest.mark.parametrize(
    "answer",
    [
        "The documents do not cover this.",
        "The passages don't mention the launch date.",
        "I cannot answer that from the passages.",
        "There is no information about pricing in the documents.",
        "I don't know.",
    ],
)
def test_abstentions_are_recognised(answer):
    assert is_abstention(answer)


@pytest.mark.parametrize("answer", ["Nightjar launches in March [1].", "It does not rain in March [2]."])
def test_ordinary_answers_are_not_abstentions(answer):
    assert not is_abstention(answer)


def test_token_probabilities_use_a_low_quantile_not_only_the_mean():
    # One wild guess in a long, otherwise sure answer.
    logprobs = [math.log(0.95)] * 19 + [math.log(0.01)]
    result = collect_signals("answer", 20, logprobs, retrieval_score=0.9)

    assert result.min_token_prob == pytest.approx(0.01)
    assert result.low_token_prob == pytest.approx(quantile([0.95] * 19 + [0.01], 0.1))
    assert math.exp(result.mean_token_logprob) > 0.7


def test_an_answer_without_log_probabilities_has_none():
    result = collect_signals("answer", 5, [None, None, None], retrieval_score=0.5)
    assert not result.has_token_probs and result.answer_tokens == 5


def test_quantile_interpolates():
    assert quantile([1, 2, 3, 4, 5], 0.5) == 3
    assert quantile([0.0, 1.0], 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "case",
    [
        CONFIDENT,
        signals(answer_tokens=3),
        signals(low_token_prob=0.05),
        signals(retrieval_score=0.1),
        signals(abstained=True),
        signals(low_token_prob=None, min_token_prob=None, mean_token_logprob=None),
    ],
)
def test_confidence_below_one_is_exactly_when_the_router_escalates(case):
    assert (confidence(case, THRESHOLDS) < 1) == decide(case, Mode.ESCALATE, THRESHOLDS).escalate


def test_confidence_is_the_weakest_signal_relative_to_its_threshold():
    assert confidence(signals(retrieval_score=0.15), THRESHOLDS) == pytest.approx(0.5)


def test_a_copy_answer_is_judged_by_how_far_its_choice_leads_not_by_its_tokens():
    copied = Thresholds(min_answer_tokens=6, min_low_token_prob=0.15, min_retrieval_score=0.3, min_copy_margin=0.2)

    sure = decide(signals(answer_tokens=0, low_token_prob=None, copy_margin=0.5), Mode.ESCALATE, copied)
    hesitant = decide(signals(answer_tokens=0, low_token_prob=None, copy_margin=0.05), Mode.ESCALATE, copied)

    assert not sure.escalate
    assert [reason.signal for reason in hesitant.reasons] == ["copy_margin"]
    assert confidence(signals(answer_tokens=0, copy_margin=0.1), copied) == pytest.approx(0.5)


def test_a_measured_pair_starts_in_its_mode_with_its_thresholds():
    small, large = ModelSpec("a:small", "a", "small", 1), ModelSpec("a:large", "a", "large", 1)
    config = TurnConfig(
        THRESHOLDS, pairs={pair_key(small.key, large.key): PairRouting("off", {"min_copy_margin": 0.3})}
    )

    assert config.router_mode_for(small, large) is Mode.OFF
    assert config.thresholds_for(small, large).min_copy_margin == 0.3
    assert config.thresholds_for(small, large).min_answer_tokens == THRESHOLDS.min_answer_tokens
    assert config.router_mode_for(large, small) is Mode.ESCALATE  # a pair never measured
    # The embedded pair, as measured on the handbook set: its large model is no better.
    embedded = load_routing()["embedded:smollm2-135m -> embedded:gemma3-270m"]
    assert embedded.mode == "off" and "handbook" in embedded.measured
