"""The chat, served in-process on scripted models: what the user sees for each kind of answer.

The real app (app.py, Chainlit, Socket.IO) with fake backends: these behaviours are about the
app around the model, not the model, so no model is loaded.
"""

from __future__ import annotations

import pytest

from models.base import BackendError
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM
from models.settings import Settings
from tests.chainlit_client import ChainlitClient, Turn
from tests.fakes import ScriptedBackend
from tests.in_process import app_in_process

PORT_QUESTION = "On which port does Foundry Local usually listen?"
SUPPORTED = ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "5273 ", "[1]."]


@pytest.fixture(scope="module")
def models() -> ScriptedBackend:
    return ScriptedBackend({EMBEDDED_SLM: SUPPORTED, EMBEDDED_LLM: SUPPORTED})


@pytest.fixture(scope="module")
def app_url(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("in-process")
    # The handbook in docs_corpus/ is the knowledge base, as in the app's defaults.
    settings = Settings(data_dir=folder / "data", model_cache_dir=folder / "models")
    with app_in_process(settings, {"embedded": models}) as app:
        yield app.url


@pytest.fixture
async def chat(app_url, models):
    models.replies.update({EMBEDDED_SLM: SUPPORTED, EMBEDDED_LLM: SUPPORTED})
    models.log.clear()
    client = ChainlitClient(app_url)
    await client.connect()
    yield client
    await client.close()


def final_output(turn: Turn) -> str:
    return turn.messages[-1]["output"]


def element_names(turn: Turn) -> set[str]:
    return {element["name"] for element in turn.named("element")}


async def test_a_supported_answer_streams_with_its_sources_and_timings(chat, models):
    turn = await chat.ask(PORT_QUESTION)

    assert turn.named("stream_start") and turn.named("stream_token")  # streamed, not sent whole
    assert final_output(turn).startswith("Foundry Local usually listens on port 5273 [1].")
    assert "✂️" not in final_output(turn)
    assert {"[1]", "Latency breakdown"} <= element_names(turn)
    assert models.log == [f"start {EMBEDDED_SLM}", f"end {EMBEDDED_SLM}"]  # supported: not escalated


async def test_an_invented_number_is_cut_and_the_large_model_asked(chat, models):
    models.replies[EMBEDDED_SLM] = [
        "Foundry ",
        "Local ",
        "usually ",
        "listens ",
        "on ",
        "port ",
        "9431. ",
        "It is fast.",
    ]

    turn = await chat.ask(PORT_QUESTION)

    [draft] = [message["output"] for message in turn.messages if "· draft" in message["output"]]
    assert "~~Foundry Local usually listens on port 9431.~~" in draft and "✂️" in draft
    assert f"start {EMBEDDED_LLM}" in models.log
    assert final_output(turn).startswith("Foundry Local usually listens on port 5273 [1].")


async def test_a_question_the_documents_do_not_cover_is_not_answered_from_memory(chat, models):
    turn = await chat.ask("Who won the 2018 football world cup?")

    assert models.log == []
    assert "do not cover" in final_output(turn).lower() or "don't cover" in final_output(turn).lower()


async def test_a_failing_model_is_reported_and_the_chat_goes_on(chat, models):
    models.replies[EMBEDDED_SLM] = BackendError("The model broke off", "embedded models", "Try again.")
    models.replies[EMBEDDED_LLM] = BackendError("The model broke off", "embedded models", "Try again.")

    failed = await chat.ask(PORT_QUESTION)
    models.replies.update({EMBEDDED_SLM: SUPPORTED, EMBEDDED_LLM: SUPPORTED})
    answered = await chat.ask(PORT_QUESTION)

    assert any("The model broke off" in message["output"] for message in failed.messages)
    assert "port 5273" in final_output(answered)


async def test_uploads_are_listed_and_removed_by_command(chat):
    file_id = await chat.upload(
        "nightjar.md", b"# Nightjar\n\nThe nightjar release ships on 3 March.\n", "text/markdown"
    )
    added = await chat.ask("", file_ids=(file_id,))
    listed = await chat.ask("/uploads")
    removed = await chat.ask("/remove nightjar.md")
    after = await chat.ask("/uploads")

    assert "📄 Added **nightjar.md**" in final_output(added)
    assert "**nightjar.md**" in final_output(listed)
    assert "Removed **nightjar.md**" in final_output(removed)
    assert "No files uploaded" in final_output(after)
