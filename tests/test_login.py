"""Optional password login on a real server: nobody gets in, or sees another user's chats, without it."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
import socketio

from tests.chainlit_client import ChainlitClient
from tests.conftest import ALICE, BOB
from tests.servers import chainlit_app, run_command
from tests.test_chainlit_app import NIGHTJAR, answer_message
from tests.test_openai_clients import saved_threads


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, accounts, chat_store):
    folder = tmp_path_factory.mktemp("login")
    env = {
        **accounts,
        **chat_store,
        "MAX_TOKENS": "32",
        "ROUTER_MODE": "off",
        "TEMPERATURE": "0",
        "MODEL_CACHE_DIR": str(folder / "models"),
    }
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture(scope="module")
async def alices_chat(app_url):
    """Alice's saved chat with an upload: (her client, thread id, a stored source element)."""
    alice = ChainlitClient(app_url, credentials=ALICE)
    await alice.connect()
    file_id = await alice.upload("nightjar.md", NIGHTJAR, "text/markdown")
    turn = await alice.ask("When does Project Nightjar launch?", file_ids=(file_id,))
    answer_message(turn)
    listed = await alice.http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}})
    [thread] = listed.json()["data"]
    source = await saved_element(alice, thread["id"], "[1]")
    yield alice, thread["id"], source
    await alice.close()


async def saved_element(client: ChainlitClient, thread_id: str, name: str) -> dict:
    """An element of a saved chat; Chainlit writes elements in the background, so wait a little."""
    for _ in range(50):
        saved = (await client.http.get(f"/project/thread/{thread_id}")).json()
        if found := [element for element in saved["elements"] if element["name"] == name]:
            return found[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} was never saved: {[e['name'] for e in saved['elements']]}")


async def test_the_page_says_login_is_required(app_url):
    async with httpx.AsyncClient(base_url=app_url) as http:
        config = (await http.get("/auth/config")).json()

    assert config["requireLogin"] and config["passwordAuth"]


async def test_an_anonymous_socket_connection_is_refused(app_url):
    anonymous = ChainlitClient(app_url)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await anonymous.connect(sign_in=False)
    await anonymous.http.aclose()


async def test_a_wrong_password_is_refused(app_url):
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post("/login", data={"username": "alice", "password": "not her password"})

    assert response.status_code == 401


async def test_a_user_with_the_right_password_chats(alices_chat):
    alice, _, source = alices_chat

    assert "nightjar.md" in await alice.element_text(source)


async def test_an_upload_needs_the_sessions_cookie(app_url, alices_chat):
    alice, _, _ = alices_chat
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post(
            "/project/file",
            params={"session_id": alice.session_id},
            files={"file": ("x.md", b"# X\n\nplanted", "text/markdown")},
        )

    assert response.status_code in (401, 403)


async def test_another_user_cannot_list_resume_or_read_a_chat(app_url, alices_chat):
    _, thread_id, source = alices_chat
    bob = ChainlitClient(app_url, credentials=BOB)
    await bob.sign_in()

    listed = await bob.http.post("/project/threads", json={"pagination": {"first": 5}, "filter": {}})
    assert listed.json()["data"] == []
    assert (await bob.http.get(f"/project/thread/{thread_id}")).status_code in (401, 403, 404)
    assert (await bob.http.get(source["url"])).status_code == 404
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bob.connect(thread_id=thread_id, sign_in=False)
    await bob.http.aclose()


async def test_the_comparison_endpoint_needs_a_login(app_url):
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post("/compare/stream", json={"prompt": "hello", "models": ["slm"]})

    assert response.status_code == 401


# --- the OpenAI-compatible API: each user's own keys


@pytest.fixture(scope="module")
def api_keys(accounts) -> dict[str, str]:
    """A key for Alice, and Bob's key, revoked: made with the command an operator runs."""
    alice = run_command("web.api_keys", ["new", "alice"], accounts).stdout.strip()
    bob = run_command("web.api_keys", ["new", "bob"], accounts).stdout.strip()
    bobs_id = bob.split("-")[1]
    assert run_command("web.api_keys", ["revoke", bobs_id], accounts).returncode == 0
    return {"alice": alice, "bob (revoked)": bob}


def api(app_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app_url}/v1", api_key=key, max_retries=0)


QUESTION = [{"role": "user", "content": "Which port does Foundry Local usually listen on?"}]


async def test_the_api_refuses_a_call_without_a_key(app_url):
    async with httpx.AsyncClient(base_url=app_url) as http:
        response = await http.post("/v1/chat/completions", json={"model": "knowledge-assistant", "messages": QUESTION})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_the_api_refuses_another_users_revoked_key(app_url, api_keys):
    with pytest.raises(openai.AuthenticationError) as refused:
        api(app_url, api_keys["bob (revoked)"]).chat.completions.create(model="knowledge-assistant", messages=QUESTION)

    assert "wrong or revoked" in refused.value.body["message"]


async def test_an_api_conversation_is_saved_to_its_users_history_only(app_url, api_keys):
    response = api(app_url, api_keys["alice"]).chat.completions.create(model="knowledge-assistant", messages=QUESTION)
    assert response.choices[0].message.content

    alice, bob = ChainlitClient(app_url, credentials=ALICE), ChainlitClient(app_url, credentials=BOB)
    await alice.sign_in()
    await bob.sign_in()
    await saved_threads(alice.http, QUESTION[0]["content"])
    listed = await bob.http.post("/project/threads", json={"pagination": {"first": 20}, "filter": {}})
    assert listed.json()["data"] == []
    await alice.http.aclose()
    await bob.http.aclose()
