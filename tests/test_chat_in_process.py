"""The chat, served in-process on scripted models: what the user sees for each kind of answer.

The real app (app.py, Chainlit, Socket.IO) with fake backends: these behaviours are about the
app around the model, not the model, so no model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from models.base import BackendError
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM
from models.settings import Settings
from tests.chainlit_client import ChainlitClient, Turn
from tests.fakes import ScriptedBackend
from tests.in_process import app_in_process
from tests.servers import PROJECT_ROOT

PORT_QUESTION = "On which port does Foundry Local usually listen?"
INVENTED = ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "9431. ", "It is fast."]
SUPPORTED = ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "5273 ", "[1]."]


@pytest.fixture(scope="module")
def models() -> ScriptedBackend:
    return ScriptedBackend({EMBEDDED_SLM: SUPPORTED, EMBEDDED_LLM: SUPPORTED})


@pytest.fixture(scope="module")
def app_url(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("in-process")
    # The handbook in docs_corpus/ is the knowledge base, as in the app's defaults.
    settings = Settings(data_dir=folder / "data", model_cache_dir=folder / "models", router_mode="escalate")
    with app_in_process(settings, {"embedded": models}) as app:
        yield app.url


@pytest.fixture
async def chat(app_url, models):
    models.replies.update({EMBEDDED_SLM: SUPPORTED, EMBEDDED_LLM: SUPPORTED})
    models.log.clear()
    models.prompts.clear()
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


async def test_the_reply_starts_with_the_answer_and_the_cut_draft_is_in_how_it_was_made(chat, models):
    models.replies[EMBEDDED_SLM] = INVENTED

    turn = await chat.ask(PORT_QUESTION)

    # The draft streamed, was struck through and escalated while the user watched ...
    assert "↗️ Escalated to **gemma3-270m (embedded)** (escalate)" in turn.streamed_text()
    # ... and the reply the turn ends with is one message that starts with the answer.
    assert final_output(turn).startswith("Foundry Local usually listens on port 5273 [1].")
    assert "~~" not in final_output(turn) and "Escalated" not in final_output(turn)
    final_id = turn.messages[-1]["id"]
    side = {element["name"]: element for element in turn.named("element") if element["forId"] == final_id}
    assert {"Latency breakdown", "Session latency chart", "How this answer was made"} <= set(side)
    assert side["Session latency chart"]["type"] == "plotly"
    how = await chat.element_text(side["How this answer was made"])
    assert "~~Foundry Local usually listens on port 9431.~~" in how and "✂️" in how
    assert "Router (escalate): escalated to the large model" in how
    breakdown = await chat.element_text(side["Latency breakdown"])
    assert "| LLM generation |" in breakdown and "Router (escalate): escalated:" in breakdown


async def test_show_drafts_keeps_the_drafts_in_the_reply_before_the_answer(chat, models):
    models.replies[EMBEDDED_SLM] = INVENTED
    await chat.change_settings({"show_drafts": True})

    turn = await chat.ask(PORT_QUESTION)

    reply = final_output(turn)
    draft, answer = reply.split("**Answer:**")
    assert "~~Foundry Local usually listens on port 9431.~~" in draft and "✂️" in draft
    assert "↗️ Router (escalate): escalated to the large model" in draft
    assert answer.strip().startswith("Foundry Local usually listens on port 5273 [1].")


async def test_draft_refine_hands_the_large_model_the_draft_without_its_cut_sentence(chat, models):
    models.replies[EMBEDDED_SLM] = [*SUPPORTED, " It ", "also ", "listens ", "on ", "port ", "9431."]
    await chat.change_settings({"router_mode": "draft-refine"})

    turn = await chat.ask(PORT_QUESTION)

    assert "↗️ Escalated to **gemma3-270m (embedded)** (draft-refine)" in turn.streamed_text()
    sent = "\n".join(message.content for message in models.prompts[EMBEDDED_LLM])
    assert "Foundry Local usually listens on port 5273 [1]." in sent and "9431" not in sent


SHORT = ["Port ", "5273 ", "[1]."]  # supported, but short: escalate mode hands it on


async def test_with_escalation_off_the_small_models_answer_stands(chat, models):
    models.replies[EMBEDDED_SLM] = SHORT
    await chat.change_settings({"router_mode": "off"})

    turn = await chat.ask(PORT_QUESTION)

    assert not any("Escalated" in message["output"] for message in turn.messages)
    assert models.log == [f"start {EMBEDDED_SLM}", f"end {EMBEDDED_SLM}"]
    assert "*smollm2-135m (embedded)*" in final_output(turn)


async def test_the_chat_settings_change_the_model_that_answers(chat, models):
    await chat.change_settings({"slm": "embedded:gemma3-270m", "llm": "embedded:gemma3-270m"})

    turn = await chat.ask(PORT_QUESTION)

    assert models.log[0] == f"start {EMBEDDED_LLM}"
    assert "*gemma3-270m (embedded)*" in final_output(turn)


async def test_choosing_hybrid_retrieval_says_that_the_next_question_waits_for_embedding(chat):
    changed = await chat.change_settings({"retrieval_mode": "hybrid"})

    [notice] = [message["output"] for message in changed.messages if "embeds" in message["output"]]
    assert "Hybrid retrieval" in notice and "passages are embedded" in notice

    unchanged = await chat.change_settings({"retrieval_mode": "bm25"})
    assert not [message for message in unchanged.messages if "embeds" in message["output"]]


async def test_when_the_large_model_fails_the_small_models_answer_stands_with_a_notice(chat, models):
    models.replies[EMBEDDED_SLM] = SHORT
    models.replies[EMBEDDED_LLM] = BackendError("The model server broke off", "http://127.0.0.1:9/v1")

    turn = await chat.ask(PORT_QUESTION)

    outputs = [message["output"] for message in turn.messages]
    [notice] = [text for text in outputs if text.startswith("⚠️ The large model failed")]
    assert "http://127.0.0.1:9/v1" in notice and "The small model's answer stands." in notice
    assert final_output(turn).startswith("Port 5273 [1].")


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


async def test_a_bad_upload_is_explained_and_the_good_one_beside_it_still_goes_in(chat):
    good = await chat.upload("nightjar.md", b"# Nightjar\n\nThe nightjar release ships on 3 March.\n", "text/markdown")
    # Chainlit itself refuses a 0-byte upload before the app sees it; whitespace only reaches the app.
    empty = await chat.upload("empty.txt", b"  \n\n ", "text/plain")

    turn = await chat.ask("", file_ids=(good, empty))

    [report] = [message["output"] for message in turn.messages if "empty.txt" in message["output"]]
    assert "**empty.txt** was not added" in report and "Added **nightjar.md**" in report


async def test_an_answer_shows_the_passage_sentence_it_is_drawn_from(chat, models):
    models.replies[EMBEDDED_SLM] = ["Its ", "usual ", "port ", "is ", "5273 ", "[1]."]
    await chat.change_settings({"router_mode": "off"})

    turn = await chat.ask(PORT_QUESTION)

    answer, evidence = final_output(turn).split("*From the documents:*")
    assert answer.startswith("Its usual port is 5273 [1].")
    assert evidence.strip().startswith(">") and "5273" in evidence.split("Sources:")[0]


def test_the_in_process_app_keeps_uploads_outside_the_project_folder():
    # An app run from the project folder deletes `<project>/.files` when it stops (make run in
    # another terminal); the in-process app must not keep this test run's uploads there.
    from chainlit.config import APP_ROOT, FILES_DIRECTORY

    assert PROJECT_ROOT not in Path(FILES_DIRECTORY).parents and Path(APP_ROOT) != PROJECT_ROOT
