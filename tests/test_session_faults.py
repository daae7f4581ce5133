"""Faults in the middle of a chat, through the real app (`chainlit run app.py --headless`).

Every fault ends the same way for the user: a message naming what happened and
what to do, the partial answer kept and marked as cut off, and a session that
answers the next question. The model server is `tests/fault_behaviours.py`'s
scripted one: a fault on one request, a full answer on the next. The closed
browser and the upload during an answer use the real embedded SmolLM2.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest

from tests.chainlit_client import ChainlitClient, Turn
from tests.fault_behaviours import SCRIPTED_ANSWER
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR, QUESTION, answer_message

# Short enough that a fault test waits a few seconds, long enough for a loaded machine.
TIMEOUT_S = 3
EMBEDDED_SLM = {"slm": "embedded:smollm2-135m", "router_mode": "off"}
# Asked with greedy decoding (temperature 0), SmolLM2 writes this story to its token limit;
# sampled, it sometimes ended at once, leaving nothing for a test to act during.
LONG_STORY = "Write a very long story about a lighthouse keeper."
OFF_TOPIC_QUESTION = "What colour is the queen's favourite corgi?"


@pytest.fixture(scope="module")
def app_url(scripted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("session-faults")
    env = {
        "MODEL_CACHE_DIR": str(folder / "models"),
        "MODEL_SERVER_URL": scripted.url,
        "SLM_MODEL": "scripted",
        "LLM_MODEL": "scripted",
        "ROUTER_MODE": "off",
        "MAX_TOKENS": "64",
        "FIRST_TOKEN_TIMEOUT_S": str(TIMEOUT_S),
        "TOKEN_TIMEOUT_S": str(TIMEOUT_S),
        # One decode thread: two oversubscribe a shared, busy 2-core machine badly.
        "EMBEDDED_THREADS": "1",
        "DATA_DIR": str(folder / "data"),
    }
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture
async def chat(app_url, scripted):
    scripted.play("answer")
    scripted.requests.clear()
    client = ChainlitClient(app_url)
    await client.connect()
    yield client
    await client.close()


def outputs(turn: Turn) -> list[str]:
    return [message.get("output", "") for message in turn.messages]


def cut_off_answer(turn: Turn) -> str:
    """The partial answer the scripted server streamed before failing."""
    [partial] = [text for text in outputs(turn) if "The answer is" in text and "Cut off" in text]
    return partial


async def assert_the_next_question_is_answered_by_the_server(chat: ChainlitClient) -> None:
    turn = await chat.ask(QUESTION, timeout_s=60)
    answer = answer_message(turn)["output"]
    assert answer.startswith(SCRIPTED_ANSWER) and "*scripted (server)* · Latency breakdown" in answer
    assert not any("⚠️" in text for text in outputs(turn))


async def test_a_server_dying_mid_answer_keeps_the_partial_answer_and_the_session_goes_on(chat, scripted):
    scripted.play("cut", "answer")

    turn = await chat.ask(QUESTION, timeout_s=60)

    partial = cut_off_answer(turn)
    assert "*⚠️ Cut off: The connection to the model server broke off" in partial
    assert partial.endswith("*scripted (server)*") and "The answer above is partial." in partial
    [notice] = [text for text in outputs(turn) if "Answering with the embedded model" in text]
    assert scripted.url in notice and "Try again" in notice
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]
    await assert_the_next_question_is_answered_by_the_server(chat)


async def test_the_large_model_dying_mid_escalated_answer_is_reported_and_the_small_answer_stands(chat, scripted):
    await chat.change_settings({**EMBEDDED_SLM, "llm": "server:scripted", "router_mode": "escalate"})
    scripted.play("cut", "answer")

    # Nothing in the documents matches: the router escalates the small model's answer.
    turn = await chat.ask(OFF_TOPIC_QUESTION, timeout_s=60)

    assert any("↗️ Escalated to **scripted (server)** (escalate)" in text for text in outputs(turn))
    assert "*⚠️ Cut off: The connection to the model server broke off" in cut_off_answer(turn)
    [notice] = [text for text in outputs(turn) if text.startswith("⚠️ The large model failed")]
    assert scripted.url in notice and "The small model's answer stands." in notice
    second = await chat.ask(QUESTION, timeout_s=60)
    assert "Latency breakdown" in answer_message(second)["output"]


async def test_with_always_llm_a_large_model_dying_mid_answer_is_replaced_by_the_embedded_model(chat, scripted):
    await chat.change_settings({**EMBEDDED_SLM, "llm": "server:scripted", "router_mode": "always-llm"})
    scripted.play("cut", "answer")

    turn = await chat.ask(QUESTION, timeout_s=60)

    assert "*⚠️ Cut off: The connection to the model server broke off" in cut_off_answer(turn)
    [notice] = [text for text in outputs(turn) if "Answering with the embedded model" in text]
    assert scripted.url in notice and "Try again" in notice
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]
    second = await chat.ask(QUESTION, timeout_s=60)
    assert "*scripted (server)* · Latency breakdown" in answer_message(second)["output"]
    assert SCRIPTED_ANSWER in answer_message(second)["output"]


async def test_malformed_chunks_are_reported_and_the_embedded_model_answers_instead(chat, scripted):
    scripted.play("malformed", "answer")

    turn = await chat.ask(QUESTION, timeout_s=60)

    assert "*⚠️ Cut off: The model server sent a malformed answer" in cut_off_answer(turn)
    [notice] = [text for text in outputs(turn) if "Answering with the embedded model" in text]
    assert "malformed answer" in notice and "look at its log" in notice
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]
    await assert_the_next_question_is_answered_by_the_server(chat)


async def ask_timing_the_notice(chat: ChainlitClient, question: str, marker: str) -> tuple[float, Turn]:
    """Ask; return the seconds until a message containing `marker` arrived, and the whole turn."""
    await chat.send(question)
    started = time.monotonic()
    turn = Turn()
    while not any(marker in text for text in outputs(turn)):
        turn.events += (await chat.wait_for("new_message", timeout_s=60)).events
    waited = time.monotonic() - started
    turn.events += (await chat.collect_until_task_end(timeout_s=60)).events
    return waited, turn


async def test_a_server_that_stalls_mid_answer_is_given_up_after_the_token_timeout(chat, scripted):
    scripted.play("stall", "answer")

    waited, turn = await ask_timing_the_notice(chat, QUESTION, "Answering with the embedded model")

    assert TIMEOUT_S <= waited < TIMEOUT_S + 15
    assert "*⚠️ Cut off: The model server did not answer in time" in cut_off_answer(turn)
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]
    await assert_the_next_question_is_answered_by_the_server(chat)


async def test_a_server_that_never_starts_answering_is_given_up_after_the_first_token_timeout(chat, scripted):
    scripted.play("hang", "answer")

    waited, turn = await ask_timing_the_notice(chat, QUESTION, "Answering with the embedded model")

    assert TIMEOUT_S <= waited < TIMEOUT_S + 15
    [notice] = [text for text in outputs(turn) if "Answering with the embedded model" in text]
    assert notice.startswith("⚠️ The model server did not answer in time")
    assert not any(text.startswith("The answer is") for text in outputs(turn))  # nothing partial to keep
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]
    await assert_the_next_question_is_answered_by_the_server(chat)


@pytest.mark.parametrize(("behaviour", "setting"), [("stall", "TOKEN_TIMEOUT_S"), ("hang", "FIRST_TOKEN_TIMEOUT_S")])
async def test_a_timeout_notice_names_the_setting_that_gives_a_slow_server_more_time(
    chat, scripted, behaviour, setting
):
    scripted.play(behaviour, "answer")

    _, turn = await ask_timing_the_notice(chat, QUESTION, "Answering with the embedded model")

    [notice] = [text for text in outputs(turn) if "Answering with the embedded model" in text]
    # The server is up (it answered the model listing and, for a stall, started the
    # answer): "check that the server is running" is not what to do; raising the limit is.
    assert setting in notice and f"{TIMEOUT_S}" in notice, notice


def server_process(base_url: str) -> psutil.Process:
    port = base_url.rsplit(":", 1)[1]
    for process in psutil.Process().children(recursive=True):
        command = process.cmdline()
        if "--port" in command and command[command.index("--port") + 1] == port:
            return process
    raise LookupError(f"no child process serves {base_url}")


async def wait_for_tokens(chat: ChainlitClient, count: int) -> Turn:
    """Wait until the model itself streams (not just the app's preface); returns those events."""
    turn = Turn()
    while len(turn.named("stream_token")) < count:
        part = await chat._collect(until=lambda event, data: event in ("stream_token", "task_end"), timeout_s=120)
        turn.events += part.events
        assert not part.named("task_end"), "the answer ended before the test could act during it"
    return turn


async def busiest_thread(process: psutil.Process, window_s: float = 1.0) -> int:
    """The id of the thread that used the most CPU in the next `window_s` seconds."""
    before = {thread.id: thread.user_time + thread.system_time for thread in process.threads()}
    await asyncio.sleep(window_s)
    after = {thread.id: thread.user_time + thread.system_time for thread in process.threads()}
    return max(after, key=lambda tid: after[tid] - before.get(tid, 0.0))


async def test_closing_the_browser_mid_answer_stops_the_generation(app_url, chat):
    server = server_process(app_url)
    await chat.change_settings({**EMBEDDED_SLM, "max_tokens": 2048, "temperature": 0})

    await chat.send(LONG_STORY)
    await wait_for_tokens(chat, 5)
    decoding = await busiest_thread(server)  # the generation's worker thread (one decode thread)
    assert decoding != server.pid  # not the event loop: there is a worker to stop
    await chat.close()
    closed = time.monotonic()

    async with asyncio.timeout(120):
        while decoding in {thread.id for thread in server.threads()}:
            await asyncio.sleep(0.1)
    # A token takes well under a second even on a busy machine; the rest of a
    # 2048-token story would take minutes.
    assert time.monotonic() - closed < 10
    other = ChainlitClient(app_url)  # and the model answers the next session
    await other.connect()
    try:
        await other.change_settings({**EMBEDDED_SLM, "max_tokens": 16})
        turn = await other.ask(QUESTION, timeout_s=120)
    finally:
        await other.close()
    assert "*smollm2-135m (embedded)* · Latency breakdown" in answer_message(turn)["output"]


async def test_a_file_uploaded_while_an_answer_streams_is_kept_for_the_next_question(chat):
    await chat.change_settings({**EMBEDDED_SLM, "max_tokens": 200, "temperature": 0})
    await chat.ask("Say hello.")  # loaded and warm

    await chat.send(LONG_STORY)
    turn = await wait_for_tokens(chat, 3)
    file_id = await chat.upload("nightjar.md", NIGHTJAR, "text/markdown")  # raises unless accepted
    rest = await chat.collect_until_task_end(timeout_s=120)
    assert rest.named("stream_token"), "the answer ended before the upload did: nothing was tested"
    turn.events += rest.events

    answer = answer_message(turn)
    # Not corrupted: one stream, whose text is the message's text, closed with its footer.
    assert len(turn.named("stream_start")) == 1
    assert answer["output"].startswith(turn.streamed_text().strip())
    assert "*smollm2-135m (embedded)*" in answer["output"] and "Latency breakdown" in answer["output"]
    assert not any("⚠️" in text for text in outputs(turn))

    await chat.change_settings({"max_tokens": 32, "temperature": 0})
    uploaded = await chat.ask("When does Project Nightjar launch?", file_ids=(file_id,))
    assert any("Added **nightjar.md** (Project Nightjar)" in text for text in outputs(uploaded))
    [source] = [e for e in uploaded.named("element") if e["name"] == "[1]"]
    assert "Document: Project Nightjar (`nightjar.md`)" in await chat.element_text(source)
