"""A closed tab's session is cleaned up once SESSION_TIMEOUT_S passes: its files leave the disk
(the app empties the folder in a worker thread before Chainlit's own removal), and the app goes on."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chainlit_client import ChainlitClient
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR
from tests.test_hostile_input import outputs, upload_report

SESSION_TIMEOUT_S = 5  # the shortest the app accepts


@pytest.fixture(scope="module")
def app(scripted, tmp_path_factory):
    log = tmp_path_factory.mktemp("cleanup") / "chainlit.log"
    elsewhere = tmp_path_factory.mktemp("cleanup-data")
    env = {
        "MODEL_CACHE_DIR": str(elsewhere / "models"), "DATA_DIR": str(elsewhere / "data"),
        "MODEL_SERVER_URL": scripted.url, "SLM_MODEL": "scripted", "LLM_MODEL": "scripted",
        "ROUTER_MODE": "off", "MAX_TOKENS": "64", "SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
    }
    with chainlit_app(log, env) as url:
        yield url, log.parent / f"chainlit-root-{log.stem}"


async def test_a_closed_tabs_uploads_leave_the_disk_when_its_session_expires(app, scripted):
    url, app_root = app
    scripted.play("answer")
    chat = ChainlitClient(url)
    await chat.connect()
    report = await upload_report(chat, "nightjar.md", NIGHTJAR, "text/markdown")
    assert "Added" in report
    folder = app_root / ".files" / chat.session_id
    assert any(folder.iterdir())

    await chat.close()
    deadline = time.monotonic() + SESSION_TIMEOUT_S + 15
    while folder.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)

    assert not folder.exists()
    scripted.play("answer")
    after = ChainlitClient(url)
    await after.connect()
    try:
        turn = await after.ask("When does Project Nightjar launch?")
        assert any(text.strip() for text in outputs(turn))
    finally:
        await after.close()
