"""One hybrid turn with fake models: who answers when the large model fails."""

from __future__ import annotations

import time

from models.answering import Answer
from models.base import BackendError, ChatMessage, GenerationParams
from models.catalog import ModelSpec
from models.costs import PhaseTimings
from models.hybrid import TurnDone, answer_turn
from models.router import Mode, Thresholds
from tests.fakes import ScriptedBackend

SMALL = ModelSpec("fake:small", "fake", "small", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)
FALLBACK = ModelSpec("fake:fallback", "fake", "fallback", 4096)


def prompt(spec: ModelSpec) -> list[ChatMessage]:
    return [ChatMessage("user", "question")]


async def turn(mode: Mode, backend: ScriptedBackend) -> TurnDone:
    events = answer_turn(
        SMALL, LARGE, prompt, lambda spec, draft: prompt(spec), GenerationParams(max_tokens=16),
        {"fake": backend}, FALLBACK, mode, Thresholds(min_answer_tokens=100), retrieval_score=0.9,
        timings=PhaseTimings(), started=time.perf_counter(),
    )
    return [event async for event in events][-1]


def failing_large_model() -> ScriptedBackend:
    return ScriptedBackend({
        "small": ["a ", "short ", "answer"],
        "large": BackendError("The model server broke off", "http://127.0.0.1:9/v1"),
        "fallback": ["the ", "fallback ", "answer"],
    })


async def test_a_failed_escalation_keeps_the_small_models_answer():
    backend = failing_large_model()

    done = await turn(Mode.ESCALATE, backend)

    assert done.decision.escalate and done.llm_answer.error
    assert done.slm_answer.text == "a short answer"
    assert "start fallback" not in backend.log


async def test_with_always_llm_a_failed_large_model_is_replaced_by_the_fallback():
    backend = failing_large_model()

    done = await turn(Mode.ALWAYS_LLM, backend)

    assert done.slm_answer is None
    assert isinstance(done.llm_answer, Answer) and done.llm_answer.model == FALLBACK
    assert done.llm_answer.text == "the fallback answer" and done.llm_answer.error is None
