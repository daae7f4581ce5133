"""The OpenAI-compatible backend against a real server process (llama-cpp-python's server)."""

from __future__ import annotations

import pytest

from models.base import ChatMessage, GenerationParams, StreamEnd, TokenEvent
from models.factory import load_catalog, make_backends
from models.openai_compat import OpenAICompatBackend
from models.settings import Settings
from tests.conftest import FOUNDRY_STYLE_SLM_ID

QUESTION = [ChatMessage("user", "Name three colours of the rainbow.")]


@pytest.fixture
def server(llama_server) -> OpenAICompatBackend:
    return OpenAICompatBackend(llama_server, first_token_timeout_s=60)


async def test_lists_the_servers_models(server):
    assert await server.list_models() == [FOUNDRY_STYLE_SLM_ID]


async def test_streams_an_answer_in_several_tokens_then_usage(server):
    events = [
        event async for event in server.stream_chat(FOUNDRY_STYLE_SLM_ID, QUESTION, GenerationParams(max_tokens=20))
    ]

    tokens = [event for event in events if isinstance(event, TokenEvent)]
    end = events[-1]
    assert len(tokens) >= 3
    assert "".join(token.text for token in tokens).strip()
    assert isinstance(end, StreamEnd) and end.finish_reason in ("stop", "length")
    assert end.usage.prompt_tokens > 5
    assert 1 <= end.usage.completion_tokens <= 20


async def test_passes_the_servers_log_probabilities_through(server):
    params = GenerationParams(max_tokens=8, temperature=0, logprobs=True)
    events = [event async for event in server.stream_chat(FOUNDRY_STYLE_SLM_ID, QUESTION, params)]

    logprobs = [event.logprob for event in events if isinstance(event, TokenEvent)]
    assert logprobs and all(value is not None and value <= 0 for value in logprobs)


async def test_the_seed_alias_finds_the_servers_own_name_for_the_model(llama_server):
    settings = Settings(model_server_url=llama_server)

    catalog = await load_catalog(settings, make_backends(settings))

    assert catalog.slm.key == f"server:{FOUNDRY_STYLE_SLM_ID}"
    assert catalog.notices == [
        f"The LLM model 'gpt-oss-20b' is not on the server at {llama_server}; using "
        f"gemma3-270m (embedded). Set LLM_MODEL or MODEL_ALIASES to one of: {FOUNDRY_STYLE_SLM_ID}."
    ]
