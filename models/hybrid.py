"""One hybrid turn: the small model answers, the router judges, the large model steps in if needed.

The chat and the command-line tools consume the same events:
`AttemptStart`, `TokenEvent`, `Answer` (per model), `Routed` after the small
model's answer, and `TurnDone` with the turn's phase timings last.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from models.answering import Answer, AttemptStart, stream_answer
from models.base import Backend, ChatMessage, GenerationParams, TokenEvent
from models.catalog import ModelSpec
from models.confidence import Signals, collect_signals
from models.costs import PhaseTimings
from models.router import Decision, Mode, Thresholds, decide


@dataclass(frozen=True)
class Routed:
    """The router's verdict on the small model's answer."""

    decision: Decision
    signals: Signals | None  # None when the small model was skipped (always-llm)
    llm: ModelSpec


@dataclass(frozen=True)
class TurnDone:
    timings: PhaseTimings
    slm_answer: Answer | None
    llm_answer: Answer | None
    decision: Decision


HybridEvent = AttemptStart | TokenEvent | Answer | Routed | TurnDone


async def answer_turn(
    slm: ModelSpec,
    llm: ModelSpec,
    messages_for: Callable[[ModelSpec], list[ChatMessage]],
    refine_messages_for: Callable[[ModelSpec, str], list[ChatMessage]],
    params: GenerationParams,
    backends: Mapping[str, Backend],
    fallback: ModelSpec | None,
    mode: Mode,
    thresholds: Thresholds,
    retrieval_score: float,
    timings: PhaseTimings,
    started: float,
) -> AsyncIterator[HybridEvent]:
    """Stream a turn. `timings` arrives with prep and retrieval filled in; `started`
    is the turn's start on `time.perf_counter()`."""
    slm_answer: Answer | None = None
    signals: Signals | None = None
    if mode is Mode.ALWAYS_LLM:
        decision = decide(_no_answer_signals(retrieval_score), mode, thresholds)
    else:
        logprobs: list[float | None] = []
        async for event in stream_answer(slm, messages_for, params.with_logprobs(), backends, fallback):
            if isinstance(event, TokenEvent):
                logprobs.append(event.logprob)
            elif isinstance(event, Answer):
                slm_answer = event
            yield event
        router_started = time.perf_counter()
        if slm_answer is None or slm_answer.error:
            # The small model failed outright; its fallback already answered or explained.
            decision = Decision(mode, escalate=False)
        else:
            completion_tokens = slm_answer.usage.completion_tokens if slm_answer.usage else len(logprobs)
            signals = collect_signals(slm_answer.text, completion_tokens, logprobs, retrieval_score)
            decision = decide(signals, mode, thresholds)
        timings.router_s = time.perf_counter() - router_started
        if slm_answer is not None:
            timings.slm_ttft_s = slm_answer.ttft_s or 0.0
            timings.slm_generation_s = slm_answer.generation_s

    llm_answer: Answer | None = None
    yield Routed(decision, signals, llm)
    if decision.escalate:
        draft = slm_answer.text if slm_answer and mode is Mode.DRAFT_REFINE else None

        def llm_messages(spec: ModelSpec) -> list[ChatMessage]:
            return refine_messages_for(spec, draft) if draft else messages_for(spec)

        # If the large model fails, the small answer stands; with no small answer
        # (always-llm), the embedded fallback answers instead.
        llm_fallback = fallback if slm_answer is None else None
        async for event in stream_answer(llm, llm_messages, params, backends, llm_fallback):
            if isinstance(event, Answer):
                llm_answer = event
                timings.llm_ttft_s = event.ttft_s or 0.0
                timings.llm_generation_s = event.generation_s
            yield event

    timings.total_s = time.perf_counter() - started
    yield TurnDone(timings, slm_answer, llm_answer, decision)


def _no_answer_signals(retrieval_score: float) -> Signals:
    return Signals(answer_tokens=0, retrieval_score=retrieval_score, abstained=False)
