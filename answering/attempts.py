"""Answering a question with a chosen model: timing it, and falling back when a server fails.

The chat UI and the command-line tools both go through `stream_answer`, so they
measure and recover the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from answering.copying import Choice
from answering.grounding import GuardedText
from i18n import N_, Message
from models.base import Backend, BackendError, ChatMessage, GenerationParams, StreamEnd, TokenEvent, Usage
from models.catalog import ModelSpec


@dataclass(frozen=True)
class AttemptStart:
    """A model starts answering; `replacing` is set when it stands in for a failed one."""

    model: ModelSpec
    replacing: BackendError | None = None
    copying: bool = False  # the model chooses a passage sentence instead of writing (answering.copying)


@dataclass(frozen=True)
class Answer:
    model: ModelSpec
    text: str
    finish_reason: str  # stop | length | error
    usage: Usage | None
    ttft_s: float | None  # time to first token
    total_s: float
    error: BackendError | None = None
    # Filled in by the turn pipeline: what the support check kept and cut, and the
    # per-token log-probabilities the router reads (None where the backend gave none).
    checked: GuardedText | None = None
    logprobs: tuple[float | None, ...] = ()
    # A copy answer: the candidates the model chose among, and its choice (`answering.copying`);
    # in the auto style, the answer the model wrote first, which did not stand.
    choice: Choice | None = None
    written: Answer | None = None

    @property
    def copied(self) -> bool:
        return self.choice is not None

    @property
    def generation_s(self) -> float:
        return self.total_s - (self.ttft_s or 0.0)

    @property
    def tokens_per_s(self) -> float | None:
        if not self.usage or self.usage.completion_tokens < 2 or self.generation_s <= 0:
            return None
        # The first token's time is in ttft; the rate is over the tokens after it.
        return (self.usage.completion_tokens - 1) / self.generation_s


AnswerEvent = AttemptStart | TokenEvent | Answer


async def stream_answer(
    model: ModelSpec,
    messages_for: Callable[[ModelSpec], list[ChatMessage]],
    params: GenerationParams,
    backends: Mapping[str, Backend],
    fallback: ModelSpec | None,
) -> AsyncGenerator[AnswerEvent, None]:
    """Stream one answer: `AttemptStart`, tokens, then `Answer`, per model tried.

    If a server model fails, its partial text stays in its `Answer` (with the
    error) and the `fallback` model answers the same question. `messages_for`
    builds the prompt per model, since context windows differ.
    """
    answer: Answer | None = None
    async for event in _attempt(model, messages_for(model), params, backends):
        yield event
        answer = event if isinstance(event, Answer) else answer
    if answer and answer.error and fallback is not None and fallback.key != model.key:
        yield AttemptStart(fallback, replacing=answer.error)
        async for event in _attempt(fallback, messages_for(fallback), params, backends):
            if not isinstance(event, AttemptStart):
                yield event


async def _attempt(
    model: ModelSpec,
    messages: list[ChatMessage],
    params: GenerationParams,
    backends: Mapping[str, Backend],
) -> AsyncIterator[AnswerEvent]:
    yield AttemptStart(model)
    started = time.perf_counter()
    first_token_at: float | None = None
    parts: list[str] = []
    try:
        backend = backends.get(model.backend)
        if backend is None:
            raise BackendError(
                Message(N_("No {backend} backend is configured"), backend=model.backend),
                model.label,
                Message(N_("Set MODEL_SERVER_URL to use server models.")),
            )
        async for event in backend.stream_chat(model.model, messages, params):
            if isinstance(event, TokenEvent):
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                parts.append(event.text)
                yield event
            elif isinstance(event, StreamEnd):
                yield Answer(
                    model,
                    "".join(parts),
                    event.finish_reason,
                    event.usage,
                    _since(started, first_token_at),
                    time.perf_counter() - started,
                )
    except BackendError as error:
        yield Answer(
            model,
            "".join(parts),
            "error",
            None,
            _since(started, first_token_at),
            time.perf_counter() - started,
            error,
        )


def _since(start: float, moment: float | None) -> float | None:
    return None if moment is None else moment - start


@dataclass
class Generation:
    answer: Answer
    logprobs: list[float | None]
    cpu_s: float | None


async def generate(
    spec: ModelSpec, messages: list[ChatMessage], params: GenerationParams, backends: Mapping[str, Backend]
) -> Generation:
    """One answer through `stream_answer` (no fallback), with its per-token log-probabilities
    and, for an embedded model, the CPU time this process spent on it."""
    logprobs: list[float | None] = []
    answer: Answer | None = None
    cpu_started = time.process_time()
    async for event in stream_answer(spec, lambda _: messages, params, backends, fallback=None):
        if isinstance(event, TokenEvent):
            logprobs.append(event.logprob)
        elif isinstance(event, Answer):
            answer = event
    cpu = time.process_time() - cpu_started if spec.backend == "embedded" else None
    if answer is None:  # stream_answer ends every attempt with its Answer; this would be a bug there
        raise RuntimeError(f"{spec.key} gave no answer")
    return Generation(answer, logprobs, cpu)
