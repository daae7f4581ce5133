"""A failing model server gives a clear error, quickly, and the embedded model answers instead."""

from __future__ import annotations

import asyncio

import pytest

from answering.attempts import Answer, AttemptStart, stream_answer
from models.base import BackendError, ChatMessage, GenerationParams, TokenEvent
from models.catalog import ModelSpec
from models.openai_compat import OpenAICompatBackend
from tests.fault_server import fault_server, refused_url

QUESTION = [ChatMessage("user", "What is the answer?")]
PARAMS = GenerationParams(max_tokens=16)


def backend(url: str) -> OpenAICompatBackend:
    return OpenAICompatBackend(url, connect_timeout_s=1, first_token_timeout_s=1, token_timeout_s=1)


async def failure_of(url: str) -> BackendError:
    """Run one request; return the error it raised (the test fails if none, or if it hangs)."""
    received: list[str] = []
    with pytest.raises(BackendError) as caught:  # noqa: PT012 - the error may come at any point of the stream
        async with asyncio.timeout(10):
            async for event in backend(url).stream_chat("scripted", QUESTION, PARAMS):
                received.append(event.text)
    assert caught.value.partial_text == "".join(received)
    return caught.value


async def test_a_refused_connection_names_the_address_and_what_to_do():
    url = refused_url()
    error = await failure_of(url)

    assert error.what.startswith("Could not connect to the model server")
    assert error.where == url
    assert "MODEL_SERVER_URL" in error.hint


async def test_http_500_reports_the_status_and_the_servers_message():
    async with fault_server("http-500") as url:
        error = await failure_of(url)

    assert "HTTP 500" in error.what and "model crashed" in error.what


async def test_a_server_that_never_answers_times_out():
    async with fault_server("hang") as url:
        error = await failure_of(url)

    assert "did not answer in time" in error.what


async def test_a_stream_cut_halfway_keeps_the_partial_text():
    async with fault_server("cut") as url:
        error = await failure_of(url)

    assert error.partial_text == "The answer is "
    assert "broke off" in error.what or "before it was complete" in error.what


async def test_a_stream_that_stalls_after_some_tokens_times_out():
    async with fault_server("stall") as url:
        error = await failure_of(url)

    assert error.partial_text == "The answer is "
    assert "did not answer in time" in error.what


async def test_a_malformed_chunk_is_reported_as_such():
    async with fault_server("malformed") as url:
        error = await failure_of(url)

    assert error.partial_text == "The answer is "
    assert "malformed" in error.what


async def test_listing_models_on_a_dead_server_is_a_clear_error():
    url = refused_url()
    with pytest.raises(BackendError, match="Could not connect"):
        await backend(url).list_models()


async def test_the_embedded_model_answers_when_the_server_fails(embedded):
    server_model = ModelSpec("server:scripted", "server", "scripted", 2048)
    fallback = ModelSpec("embedded:smollm2-135m", "embedded", "smollm2-135m", 2048)

    async with fault_server("cut") as url:
        backends = {"server": backend(url), "embedded": embedded}
        events = [
            event async for event in stream_answer(server_model, lambda spec: QUESTION, PARAMS, backends, fallback)
        ]

    starts = [event for event in events if isinstance(event, AttemptStart)]
    answers = [event for event in events if isinstance(event, Answer)]
    assert [start.model for start in starts] == [server_model, fallback]
    assert starts[1].replacing is answers[0].error
    assert answers[0].text == "The answer is " and answers[0].finish_reason == "error"
    assert answers[1].model == fallback and answers[1].error is None and answers[1].text
    assert any(isinstance(event, TokenEvent) for event in events[events.index(starts[1]) :])


async def test_a_server_that_returns_no_log_probabilities_is_not_asked_again():
    requests: list[dict] = []
    params = GenerationParams(max_tokens=16, logprobs=True)
    async with fault_server("no-logprobs", requests) as url:
        server = backend(url)
        first = [event async for event in server.stream_chat("scripted", QUESTION, params)]
        second = [event async for event in server.stream_chat("scripted", QUESTION, params)]

    assert all(e.logprob is None for e in first + second if isinstance(e, TokenEvent))
    assert server.logprobs_supported is False
    assert [request.get("logprobs") for request in requests] == [True, None]
