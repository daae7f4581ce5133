"""Optional password login on a real server: nobody gets in, or sees another user's chats, without it."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import socketio

from tests.chainlit_client import ChainlitClient
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR, answer_message
from web.accounts import hash_password

ALICE = ("alice", "alice's long password")
BOB = ("bob", "bob's long password")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("login")
    users = ",".join(f"{name}:{hash_password(password)}" for name, password in (ALICE, BOB))
    env = {
        "AUTH_USERS": users,
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
