"""A closed tab's session is cleaned up once SESSION_TIMEOUT_S passes: its files leave the disk
(the app empties the folder in a worker thread before Chainlit's own removal), and the app goes on."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chainlit_client import ChainlitClient
from tests.servers import scripted_chainlit_app
from tests.test_chainlit_app import NIGHTJAR
from tests.test_hostile_input import outputs, upload_report

SESSION_TIMEOUT_S = 5  # the shortest the app accepts


@pytest.fixture(scope="module")
def app(scripted, tmp_path_factory):
    with scripted_chainlit_app(
        scripted.url, tmp_path_factory.mktemp("cleanup"), ROUTER_MODE="off", SESSION_TIMEOUT_S=str(SESSION_TIMEOUT_S)
    ) as app:
        yield app


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
