"""The real app: `chainlit run app.py --headless`, driven over Socket.IO as the web page does."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from tests.chainlit_client import ChainlitClient, Turn
from tests.fault_server import fault_server, refused_url
from tests.servers import chainlit_app

QUESTION = "What does Foundry Local enable?"


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    # Short answers keep the suite quick. Most tests are about the small model's own
    # answer; the escalation tests switch the router on in their session's settings.
    env = {"MODEL_CACHE_DIR": str(folder / "models"), "MAX_TOKENS": "96", "ROUTER_MODE": "off"}
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture(scope="module")
def app_with_dead_server_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app-dead-server")
    env = {
        "MODEL_CACHE_DIR": str(folder / "models"),
        "MODEL_SERVER_URL": refused_url(),
        "ROUTER_MODE": "off",
        "MAX_TOKENS": "96",
    }
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture
async def chat(app_url):
    client = ChainlitClient(app_url)
    await client.connect()
    yield client
    await client.close()


def answer_message(turn: Turn) -> dict:
    streamed_ids = {start["id"] for start in turn.named("stream_start")}
    finals = [message for message in turn.messages if message["id"] in streamed_ids]
    assert finals, f"no streamed message in {[event for event, _ in turn.events]}"
    return finals[-1]


def warnings_in(turn: Turn) -> list[str]:
    return [
        message["output"] for message in turn.messages if message.get("isError") or "⚠️" in message.get("output", "")
    ]


async def test_the_chat_page_loads_nothing_from_other_sites(app_url):
    async with httpx.AsyncClient() as http:
        page = (await http.get(app_url)).text

    assert 'id="root"' in page  # Chainlit's page, not an error
    # Chainlit's template preconnects to Google Fonts and loads its stylesheet.
    assert "fonts.googleapis.com" not in page and not re.search(r'<link[^>]+href="https://', page)


async def test_a_question_gets_a_streamed_answer_with_its_model_and_timings(chat):
    turn = await chat.ask(QUESTION)

    assert len(turn.named("stream_start")) == 1
    assert len(turn.named("stream_token")) >= 2
    answer = answer_message(turn)
    assert answer["output"].startswith(turn.streamed_text().strip()[:20])
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer["output"]
    [timings] = [element for element in turn.named("element") if element["name"] == "Latency breakdown"]
    assert timings["display"] == "side" and timings["forId"] == answer["id"]
    assert warnings_in(turn) == []


async def test_the_stop_button_ends_the_answer_and_keeps_what_was_written(chat):
    # Greedy decoding: SmolLM2 then writes the story to its token limit (sampled, it can end at once).
    await chat.change_settings({"max_tokens": 2048, "temperature": 0})
    await chat.ask("Say hello.")  # the model is loaded and warm before timing anything

    await chat.send("Write a very long story about a lighthouse keeper.")
    await chat.wait_for("stream_start")
    await chat.stop()
    turn = await chat.collect_until_task_end(timeout_s=10)

    stopped = [m for m in turn.messages if "Stopped: the answer above is partial." in m.get("output", "")]
    assert stopped, [m.get("output") for m in turn.messages]
    follow_up = await chat.ask(QUESTION)
    assert "Latency breakdown" in answer_message(follow_up)["output"]


async def test_an_unreachable_server_is_explained_and_the_embedded_model_answers(app_with_dead_server_url):
    client = ChainlitClient(app_with_dead_server_url)
    welcome = await client.connect()
    try:
        assert any("Could not connect to the model server" in m.get("output", "") for m in welcome.messages)

        async with asyncio.timeout(60):
            turn = await client.ask(QUESTION)
    finally:
        await client.close()

    assert "*smollm2-135m (embedded)*" in answer_message(turn)["output"]
    assert warnings_in(turn) == []  # the catalog already switched to the embedded model


async def test_a_server_that_dies_mid_answer_leaves_the_partial_answer_and_the_embedded_model_answers(
    tmp_path,
):
    async with fault_server("cut") as server_url:
        env = {
            "MODEL_CACHE_DIR": str(tmp_path),
            "MODEL_SERVER_URL": server_url,
            "SLM_MODEL": "scripted",
            "ROUTER_MODE": "off",
            "MAX_TOKENS": "96",
        }
        with chainlit_app(tmp_path / "chainlit.log", env) as app_url:
            client = ChainlitClient(app_url)
            await client.connect()
            try:
                turn = await client.ask(QUESTION, timeout_s=60)
            finally:
                await client.close()

    outputs = [message.get("output", "") for message in turn.messages]
    [cut] = [text for text in outputs if text.startswith("The answer is")]
    assert "Cut off: The connection to the model server broke off" in cut
    [notice] = [text for text in outputs if "Answering with the embedded model" in text]
    assert server_url in notice
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]


NIGHTJAR = b"""# Project Nightjar

## Launch

Project Nightjar launches on the ninth of March from the Zorblax test range.
"""


async def test_an_uploaded_file_answers_the_next_question_and_is_cited(chat):
    await chat.change_settings({"temperature": 0, "max_tokens": 64})
    file_id = await chat.upload("nightjar.md", NIGHTJAR, "text/markdown")
    upload_turn = await chat.ask("", file_ids=(file_id,))
    [added] = [m["output"] for m in upload_turn.messages if "Added" in m.get("output", "")]
    assert "**nightjar.md** (Project Nightjar): 1 chunk" in added

    turn = await chat.ask("When does Project Nightjar launch?")

    answer = answer_message(turn)
    assert "march" in answer["output"].lower()
    assert "Sources: [1]" in answer["output"]
    [first_source] = [e for e in turn.named("element") if e["name"] == "[1]" and e["forId"] == answer["id"]]
    assert first_source["display"] == "side"
    passage = await chat.element_text(first_source)
    assert "Document: Project Nightjar (`nightjar.md`)" in passage
    assert "Section: Project Nightjar › Launch" in passage
    assert "> Project Nightjar launches on the ninth of March" in passage


async def test_one_sessions_upload_is_never_retrieved_by_another(app_url):
    owner, other = ChainlitClient(app_url), ChainlitClient(app_url)
    await owner.connect()
    await other.connect()
    try:
        file_id = await owner.upload("nightjar.md", NIGHTJAR, "text/markdown")
        await owner.ask("", file_ids=(file_id,))
        # The other session cannot attach the owner's file by its id either.
        turn = await other.ask("When does Project Nightjar launch from the Zorblax test range?", file_ids=(file_id,))
        sources = [e for e in turn.named("element") if e["name"].startswith("[")]
        passages = [await other.element_text(source) for source in sources]
    finally:
        await owner.close()
        await other.close()

    outputs = " ".join(m.get("output", "") for m in turn.messages)
    assert "Added" not in outputs
    assert passages  # the handbook's nearest passages, never the other chat's file
    assert not any("nightjar.md" in passage for passage in passages)


async def test_an_out_of_context_question_escalates_and_the_reply_keeps_how_it_was_made_apart(chat):
    await chat.change_settings({"router_mode": "escalate", "temperature": 0, "max_tokens": 48})

    turn = await chat.ask("What colour is the queen's favourite corgi?")

    streamed = turn.streamed_text()
    assert "↗️ Escalated to **gemma3-270m (embedded)** (escalate)" in streamed
    assert "the best passage matched weakly" in streamed
    assert len(turn.named("stream_start")) == 1  # one message: the draft, then the large model, then the reply
    final = answer_message(turn)
    assert "Escalated" not in final["output"]
    assert "Latency breakdown · Session latency chart · How this answer was made" in final["output"]
    side = {element["name"]: element for element in turn.named("element") if element["forId"] == final["id"]}
    assert {"Latency breakdown", "Session latency chart", "How this answer was made"} <= set(side)
    assert side["Session latency chart"]["type"] == "plotly"
    how = await chat.element_text(side["How this answer was made"])
    assert "**smollm2-135m (embedded)**" in how and "**gemma3-270m (embedded)**" in how
    assert "the best passage matched weakly" in how
    breakdown = await chat.element_text(side["Latency breakdown"])
    assert "Router (escalate): escalated:" in breakdown
    assert "smollm2-135m (embedded)" in breakdown and "gemma3-270m (embedded)" in breakdown
