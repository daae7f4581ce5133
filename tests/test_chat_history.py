"""Saved chats: a conversation, its settings, sources and uploads survive a server restart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chainlit_client import ChainlitClient, Turn
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR, answer_message

ENV = {"MAX_TOKENS": "48", "ROUTER_MODE": "off", "TEMPERATURE": "0"}


@dataclass
class SavedChat:
    thread_id: str
    first_answer: str
    data_dir: Path


@pytest.fixture(scope="module")
async def saved_chat(tmp_path_factory, chat_store) -> SavedChat:
    """One chat on a first server: settings changed, a file uploaded, a question answered."""
    folder = tmp_path_factory.mktemp("history")
    env = {**ENV, **chat_store, "DATA_DIR": str(folder / "data"), "MODEL_CACHE_DIR": str(folder / "models")}
    with chainlit_app(folder / "first.log", env) as url:
        client = ChainlitClient(url)
        await client.connect()
        await client.change_settings({"retrieval_mode": "lexical", "top_k": 2})
        file_id = await client.upload("nightjar.md", NIGHTJAR, "text/markdown")
        turn = await client.ask("When does Project Nightjar launch?", file_ids=(file_id,))
        threads = await client.http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}})
        await client.close()  # a disconnect is when Chainlit saves the session's settings
    [thread] = threads.json()["data"]
    return SavedChat(thread["id"], answer_message(turn)["output"], folder / "data")


@pytest.fixture(scope="module")
def restarted_url(saved_chat, tmp_path_factory, chat_store):
    folder = tmp_path_factory.mktemp("history-restarted")
    env = {**ENV, **chat_store, "DATA_DIR": str(saved_chat.data_dir), "MODEL_CACHE_DIR": str(folder / "models")}
    with chainlit_app(folder / "second.log", env) as url:
        yield url


@pytest.fixture
async def resumed(restarted_url, saved_chat):
    client = ChainlitClient(restarted_url)
    opened = await client.connect(thread_id=saved_chat.thread_id)
    yield client, opened
    await client.close()


def settings_panel(turn: Turn) -> dict:
    [panel] = turn.named("chat_settings")
    return {widget["id"]: widget["initial"] for widget in panel["value"]}


async def test_the_history_lists_the_chat_after_a_restart(restarted_url, saved_chat):
    client = ChainlitClient(restarted_url)
    await client.sign_in()
    listed = await client.http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}})
    await client.http.aclose()

    assert [(thread["id"], thread["name"]) for thread in listed.json()["data"]] == [
        (saved_chat.thread_id, "When does Project Nightjar launch?")
    ]


async def test_a_resumed_chat_gets_its_settings_back(resumed):
    _, opened = resumed

    chosen = settings_panel(opened)
    assert chosen["retrieval_mode"] == "lexical"
    assert chosen["top_k"] == 2


async def test_a_resumed_chat_shows_its_messages_and_their_sources(resumed, saved_chat):
    client, _ = resumed
    thread = (await client.http.get(f"/project/thread/{saved_chat.thread_id}")).json()

    outputs = [step["output"] for step in thread["steps"]]
    assert "When does Project Nightjar launch?" in outputs
    assert saved_chat.first_answer in outputs
    [source] = [element for element in thread["elements"] if element["name"] == "[1]"]
    passage = await client.element_text(source)
    assert "Document: Project Nightjar (`nightjar.md`)" in passage


async def test_a_resumed_chats_latency_chart_is_served_as_json_for_the_page_to_draw(resumed, saved_chat):
    client, _ = resumed
    thread = (await client.http.get(f"/project/thread/{saved_chat.thread_id}")).json()
    [chart] = [element for element in thread["elements"] if element["name"] == "Session latency chart"]

    response = await client.http.get(chart["url"])

    # Served as text, the page's Plotly drew an empty chart.
    assert response.headers["content-type"] == "application/json"
    assert response.json()["layout"]["title"]["text"] == "Latency per turn"


async def test_a_resumed_chat_still_answers_from_its_uploaded_file(resumed):
    client, _ = resumed

    turn = await client.ask("When does Project Nightjar launch?")

    answer = answer_message(turn)["output"]
    assert "Sources: [1]" in answer
    [source] = [element for element in turn.named("element") if element["name"] == "[1]"]
    assert "nightjar.md" in await client.element_text(source)


async def test_a_database_that_cannot_be_opened_is_explained_and_the_app_still_answers(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chats.sqlite3").write_bytes(b"this is not a SQLite database" * 100)
    with chainlit_app(tmp_path / "chainlit.log", {**ENV, "DATA_DIR": str(data)}) as url:
        client = ChainlitClient(url)
        welcome = await client.connect()
        turn = await client.ask("What does Foundry Local enable?")
        await client.close()

    [notice] = [m["output"] for m in welcome.messages if "cannot be used" in m.get("output", "")]
    assert str(data / "chats.sqlite3") in notice and "PERSIST_CHATS" in notice
    assert "Latency breakdown" in answer_message(turn)["output"]
