"""The embedded backend runs the real SmolLM2 file in-process."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from answering.copying import Candidate, conversation
from models.base import BackendError, ChatMessage, GenerationParams, StreamEnd, TokenEvent
from models.embedded import EmbeddedBackend, EmbeddedModel

QUESTION = [
    ChatMessage("system", "Answer in one sentence."),
    ChatMessage("user", "What is the capital of France?"),
]
LONG_ANSWER = [ChatMessage("user", "Write a long story about a lighthouse keeper and the sea.")]


async def collect(stream) -> list:
    return [event async for event in stream]


def embedded_workers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("embedded-")]


async def wait_for_workers_to_finish(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while embedded_workers() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_streams_text_token_by_token_then_usage(embedded):
    events = await collect(embedded.stream_chat("smollm2-135m", QUESTION, GenerationParams(max_tokens=24)))

    tokens = [event for event in events if isinstance(event, TokenEvent)]
    end = events[-1]
    assert len(tokens) >= 2
    assert "".join(token.text for token in tokens).strip()
    assert isinstance(end, StreamEnd)
    assert end.finish_reason in ("stop", "length")
    assert end.usage.prompt_tokens > 10
    assert len(tokens) <= end.usage.completion_tokens <= 24


async def test_max_tokens_ends_the_answer_with_reason_length(embedded):
    events = await collect(
        embedded.stream_chat("smollm2-135m", LONG_ANSWER, GenerationParams(max_tokens=6, temperature=0))
    )

    assert events[-1] == StreamEnd(events[-1].usage, "length")
    assert events[-1].usage.completion_tokens == 6


async def test_log_probabilities_come_with_each_token_when_asked(embedded):
    params = GenerationParams(max_tokens=12, temperature=0, logprobs=True)
    events = await collect(embedded.stream_chat("smollm2-135m", QUESTION, params))

    logprobs = [event.logprob for event in events if isinstance(event, TokenEvent)]
    assert logprobs and all(value is not None and value <= 0.0 for value in logprobs)
    # Greedy decoding of a factual answer is mostly confident.
    assert max(logprobs) > -0.7


async def test_closing_the_stream_stops_the_generation(embedded):
    stream = embedded.stream_chat("smollm2-135m", LONG_ANSWER, GenerationParams(max_tokens=400))
    received = [await anext(stream) for _ in range(3)]
    await stream.aclose()

    await wait_for_workers_to_finish()
    assert all(isinstance(event, TokenEvent) for event in received)
    assert embedded_workers() == []


async def test_cancelling_the_consuming_task_stops_the_generation_promptly(embedded):
    first_token = asyncio.Event()

    async def consume():
        async for _ in embedded.stream_chat("smollm2-135m", LONG_ANSWER, GenerationParams(max_tokens=400)):
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_for_workers_to_finish(timeout_s=1.0)
    assert embedded_workers() == []


async def test_the_model_is_free_for_the_next_question_after_a_cancel(embedded):
    stream = embedded.stream_chat("smollm2-135m", LONG_ANSWER, GenerationParams(max_tokens=400))
    await anext(stream)
    await stream.aclose()

    events = await asyncio.wait_for(
        collect(embedded.stream_chat("smollm2-135m", QUESTION, GenerationParams(max_tokens=8))), 30
    )
    assert isinstance(events[-1], StreamEnd)


async def test_an_unknown_model_is_a_clear_error(embedded):
    with pytest.raises(BackendError, match="no embedded model called 'nope'"):
        await collect(embedded.stream_chat("nope", QUESTION, GenerationParams()))


async def test_a_prompt_longer_than_the_context_window_is_a_clear_error(embedded):
    huge = [ChatMessage("user", "word " * 5000)]
    with pytest.raises(BackendError, match="do not fit the model's context window"):
        await collect(embedded.stream_chat("smollm2-135m", huge, GenerationParams(max_tokens=8)))


async def test_generation_does_not_block_the_event_loop(embedded):
    """A ticker keeps running on the loop while the model decodes."""
    ticks = 0
    worst_gap = 0.0

    async def ticker():
        nonlocal ticks, worst_gap
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            worst_gap = max(worst_gap, now - last)
            last = now
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await collect(embedded.stream_chat("smollm2-135m", LONG_ANSWER, GenerationParams(max_tokens=60)))
    generation_s = time.perf_counter() - started
    ticking.cancel()

    # Blocking decode would freeze the ticker for the whole generation.
    assert ticks > 10
    assert worst_gap < generation_s / 3


async def test_generations_beyond_the_concurrency_limit_wait_their_turn(smollm2_file):
    """Two models decoding at once on the same cores would each slow down; the second waits."""
    two_models = EmbeddedBackend(
        [EmbeddedModel(name, lambda: smollm2_file) for name in ("first", "second")],
        context_window=1024,
        threads=2,
        concurrency=1,
    )
    finished: dict[str, float] = {}
    first_token: dict[str, float] = {}

    async def answer(model: str, question: list[ChatMessage]) -> None:
        async for event in two_models.stream_chat(model, question, GenerationParams(max_tokens=24)):
            if isinstance(event, TokenEvent):
                first_token.setdefault(model, time.perf_counter())
        finished[model] = time.perf_counter()

    await asyncio.gather(answer("first", LONG_ANSWER), answer("second", LONG_ANSWER))

    first, second = sorted(finished, key=finished.get)
    assert first_token[second] > finished[first]


PASSAGES = [
    "Foundry Local usually listens on port 5273.",
    "Uploads are limited to 20 MB per file.",
]


def under(passage: str) -> list[ChatMessage]:
    return conversation(Candidate(passage, 1, 1.0))  # as copy answers ask


async def test_a_question_is_more_likely_under_the_passage_that_answers_it(embedded):
    port, uploads = await embedded.reply_likelihoods(
        "smollm2-135m", [under(p) for p in PASSAGES], "On which port does Foundry Local listen?"
    )

    assert port.mean > uploads.mean
    assert port.tokens > 5 and port.prompt_tokens > port.tokens


async def test_scoring_leaves_the_model_answering_as_before(embedded):
    params = GenerationParams(max_tokens=12, temperature=0)
    before = await collect(embedded.stream_chat("smollm2-135m", QUESTION, params))

    await embedded.reply_likelihoods("smollm2-135m", [QUESTION, under(PASSAGES[0])], "Paris.")
    again = await embedded.reply_likelihoods("smollm2-135m", [QUESTION], "Paris.")
    after = await collect(embedded.stream_chat("smollm2-135m", QUESTION, params))

    assert [e for e in after if isinstance(e, TokenEvent)] == [e for e in before if isinstance(e, TokenEvent)]
    first = await embedded.reply_likelihoods("smollm2-135m", [QUESTION], "Paris.")
    assert first == again  # the cache shared between prompts changes nothing


async def test_scoring_an_unknown_model_is_refused(embedded):
    with pytest.raises(BackendError, match="no embedded model"):
        await embedded.reply_likelihoods("nope", [QUESTION], "Paris.")
