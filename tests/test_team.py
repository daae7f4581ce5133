"""A team on one assistant: two app processes behind nginx on one PostgreSQL store (deploy/team.py,
`make team`). One login for both, nobody reaching another's chats through either, and nothing lost
when the process serving a chat is killed or stopped in the middle of an answer."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from deploy.proxy import FAIL_TIMEOUT_S
from deploy.team import AppProcess, Team
from tests.chainlit_client import ChainlitClient, Turn
from tests.conftest import ALICE, BOB
from tests.servers import PROJECT_ROOT, run_command, team_app
from tests.test_chainlit_app import NIGHTJAR, answer_message
from tests.test_chat_history import settings_panel
from tests.test_openai_clients import saved_threads
from web.turn_view import CLOSED_NOTE, SAVE_PARTIAL_EVERY_S, UNSAVED_ANSWER_NOTE

LONG_QUESTION = "Explain in detail everything about uploading files, step by step."


@pytest.fixture(scope="module")
def two(tmp_path_factory, postgres, accounts) -> Team:
    folder = tmp_path_factory.mktemp("team")
    env = {
        **accounts,
        # Long answers, so that there is one to cut; one decoding thread per process on two cores.
        "MAX_TOKENS": "240",
        "ROUTER_MODE": "off",
        "TEMPERATURE": "0",
        "EMBEDDED_THREADS": "1",
        "MODEL_CACHE_DIR": str(folder / "models"),
    }
    shutil.copytree(PROJECT_ROOT / "docs_corpus", folder / "corpus")
    env["CORPUS_DIR"] = str(folder / "corpus")
    with team_app(folder, postgres.create_database("team"), env) as running:
        yield running


def process_of_last_request(team: Team) -> AppProcess:
    last = (team.logs / "nginx-access.log").read_text().splitlines()[-1]
    port = int(last.rsplit(":", 1)[-1])
    return next(app for app in team.processes if app.port == port)


async def latest_chats(client: ChainlitClient, count: int) -> list[dict]:
    listed = await client.http.post("/project/threads", json={"pagination": {"first": count}, "filter": {}})
    return listed.json()["data"]


async def signed_in(team: Team, credentials: tuple[str, str]) -> ChainlitClient:
    client = ChainlitClient(team.url, credentials=credentials)
    await client.sign_in()
    return client


async def answer_cut_by(team: Team, stop: signal.Signals) -> tuple[ChainlitClient, str, AppProcess]:
    """Alice's chat with an upload and one answer; a second answer is streaming when its process
    gets `stop`. Returns her page's client, the chat's id and the stopped process."""
    alice = ChainlitClient(team.url, credentials=ALICE)
    await alice.connect()
    await alice.change_settings({"retrieval_mode": "lexical", "top_k": 2})
    file_id = await alice.upload("nightjar.md", NIGHTJAR, "text/markdown")
    answer_message(await alice.ask("When does Project Nightjar launch?", file_ids=(file_id,)))
    # Asked before the stop: nginx leaves a process that an earlier test restarted out of its
    # rotation for a while (FAIL_TIMEOUT_S), and would then have no process to ask.
    [thread] = await latest_chats(alice, 1)
    victim = process_of_last_request(team)
    await alice.send(LONG_QUESTION)
    await alice.wait_for("stream_token")
    await asyncio.sleep(SAVE_PARTIAL_EVERY_S + 1)  # streaming, and saved once
    victim.stop(stop, timeout_s=30)
    return alice, thread["id"], victim


async def reopened_as_the_page_does(team: Team, page: ChainlitClient, thread_id: str) -> tuple[ChainlitClient, Turn]:
    """The page's Socket.IO client reconnects through nginx with its session and its chat's id."""
    again = ChainlitClient(team.url, credentials=ALICE)
    again.http.cookies = page.http.cookies
    again.session_id = page.session_id
    opened = await again.connect(thread_id=thread_id, sign_in=False)
    if not opened.named("resume_thread"):  # sent after on_chat_resume's own messages
        opened.events += (await again.wait_for("resume_thread")).events
    return again, opened


def resumed_steps(opened: Turn) -> list[dict]:
    [thread] = opened.named("resume_thread")
    return thread["steps"]


async def test_one_login_reaches_every_process_and_no_user_reaches_anothers_chat(two):
    alice = ChainlitClient(two.url, credentials=ALICE)
    await alice.connect()
    answer_message(await alice.ask("When does Project Nightjar launch?"))
    [thread] = (await alice.http.post("/project/threads", json={"pagination": {"first": 1}, "filter": {}})).json()[
        "data"
    ]
    bob = await signed_in(two, BOB)

    for app in two.processes:  # straight to each process, past nginx
        async with httpx.AsyncClient(base_url=app.url, cookies=alice.http.cookies) as as_alice:
            assert (await as_alice.get("/user")).json()["identifier"] == "alice"
            assert (await as_alice.get(f"/project/thread/{thread['id']}")).status_code == 200
        async with httpx.AsyncClient(base_url=app.url, cookies=bob.http.cookies) as as_bob:
            assert (await as_bob.get("/user")).json()["identifier"] == "bob"
            assert (await as_bob.get(f"/project/thread/{thread['id']}")).status_code in (401, 403, 404)
            listed = await as_bob.post("/project/threads", json={"pagination": {"first": 20}, "filter": {}})
            assert listed.json()["data"] == []
    await alice.close()
    await bob.http.aclose()


async def test_a_chat_whose_process_is_killed_reopens_on_the_other_with_its_cut_answer_marked(two):
    page, thread_id, killed = await answer_cut_by(two, signal.SIGKILL)

    again, opened = await reopened_as_the_page_does(two, page, thread_id)
    try:
        steps = resumed_steps(opened)
        questions = [step["output"] for step in steps if step["type"] == "user_message"]
        answers = [step["output"] for step in steps if step["type"] == "assistant_message"]
        assert questions == ["When does Project Nightjar launch?", LONG_QUESTION]
        assert "Sources: [1]" in answers[-2]
        assert answers[-1].endswith(CLOSED_NOTE) and len(answers[-1]) > len(CLOSED_NOTE) + 20
        assert {key: settings_panel(opened)[key] for key in ("retrieval_mode", "top_k")} == {
            "retrieval_mode": "lexical",
            "top_k": 2,
        }
        # The next question is answered, from the chat's upload, on the process still running.
        turn = await again.ask("When does Project Nightjar launch?")
        [source] = [element for element in turn.named("element") if element["name"] == "[1]"]
        assert "nightjar.md" in await again.element_text(source)
    finally:
        await again.close()
        two.restart(killed)


async def test_a_question_whose_process_died_before_saving_any_answer_is_marked_when_reopened(two, postgres):
    await asyncio.sleep(FAIL_TIMEOUT_S + 1)  # nginx takes back the process an earlier test restarted
    alice = ChainlitClient(two.url, credentials=ALICE)
    await alice.connect()
    await (await alice.http.get("/user")).aread()  # a request of this chat's, for nginx's log
    victim = process_of_last_request(two)
    await alice.send(LONG_QUESTION)
    await alice.wait_for("first_interaction")  # the chat is in the store; its question follows
    [thread] = await latest_chats(alice, 1)
    for _ in range(100):  # killed once the question is saved, before the answer's first save (2 s)
        asked = f"""SELECT count(*) FROM steps WHERE "threadId" = '{thread["id"]}' AND type = 'user_message'"""
        if postgres.sql(asked, "team").strip() != "0":
            break
        await asyncio.sleep(0.02)
    victim.stop(signal.SIGKILL, timeout_s=30)
    try:
        again, opened = await reopened_as_the_page_does(two, alice, thread["id"])
        await again.close()
        steps = resumed_steps(opened)
        assert [step["type"] for step in steps if step["type"].endswith("_message")][-2:] == [
            "user_message",
            "assistant_message",
        ]
        assert steps[-1]["output"] == UNSAVED_ANSWER_NOTE
        saved = postgres.sql(
            f"""SELECT output FROM steps WHERE "threadId" = '{thread["id"]}' AND type = 'assistant_message' """
            """ORDER BY "createdAt" DESC LIMIT 1""",
            "team",
        )
        assert saved.strip() == UNSAVED_ANSWER_NOTE  # kept: the next reopening shows it, once
    finally:
        two.restart(victim)


async def test_a_clean_stop_marks_the_answer_in_flight_before_the_process_exits(two, postgres):
    page, thread_id, stopped = await answer_cut_by(two, signal.SIGTERM)
    try:
        assert stopped.process.returncode is not None
        # Read from the store before any page reconnects: the stopping process marked it.
        saved = postgres.sql(
            f"""SELECT output FROM steps WHERE "threadId" = '{thread_id}' AND type = 'assistant_message' """
            """ORDER BY "createdAt" DESC LIMIT 1""",
            "team",
        )
        assert saved.strip().endswith(CLOSED_NOTE)
    finally:
        await page.http.aclose()
        two.restart(stopped)


async def test_an_api_conversation_continues_on_whichever_process_gets_the_follow_up(two, accounts):
    key = run_command("web.api_keys", ["new", "alice"], accounts).stdout.strip()
    first, second = (openai.AsyncOpenAI(base_url=f"{app.url}/v1", api_key=key, max_retries=0) for app in two.processes)
    question = {"role": "user", "content": "Which port does Foundry Local usually listen on?"}
    answered = await first.chat.completions.create(model="knowledge-assistant", messages=[question])
    said = {"role": "assistant", "content": answered.choices[0].message.content}

    await second.chat.completions.create(
        model="knowledge-assistant", messages=[question, said, {"role": "user", "content": "And how do I change it?"}]
    )

    alice = await signed_in(two, ALICE)
    for _ in range(50):  # API turns are saved in the background
        threads = await saved_threads(alice.http, question["content"])
        [thread] = [thread for thread in threads if thread["name"] == question["content"]]
        asked = [step["output"] for step in thread["steps"] if step["type"] == "user_message"]
        if len(asked) == 2:
            break
        await asyncio.sleep(0.2)
    await alice.http.aclose()
    assert asked == [question["content"], "And how do I change it?"]


async def test_a_file_saved_into_the_corpus_folder_reaches_every_process(two, accounts):
    key = run_command("web.api_keys", ["new", "alice"], accounts).stdout.strip()
    question = {"role": "user", "content": "When does the Osprey release ship?"}
    (Path(two.env["CORPUS_DIR"]) / "osprey.md").write_text(
        "# Osprey\n\nThe Osprey release ships on the twelfth of May.\n"
    )

    for app in two.processes:
        async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {key}"}) as api:
            deadline = time.monotonic() + 30
            found: list[str] = []
            while "osprey.md" not in found and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                response = await api.post(
                    "/v1/chat/completions",
                    json={"model": "knowledge-assistant", "messages": [question], "max_tokens": 8},
                    timeout=120,
                )
                found = [source["document"] for source in response.json()["knowledge_sources"]]
        assert "osprey.md" in found, (app.name, found)
