"""Each Chainlit workaround in web/chainlit_fixes.py still works on the installed Chainlit, and is
still needed. A failure here after an upgrade says which workaround to revisit."""

from __future__ import annotations

import inspect
import subprocess
import sys

import chainlit.config
import chainlit.server as chainlit_server
import chainlit.socket
import httpx
from chainlit.chat_context import chat_contexts
from chainlit.session import BaseSession, HTTPSession, WebsocketSession
from fastapi import APIRouter
from fastapi.routing import APIRoute

from models.settings import PROJECT_ROOT, Settings
from rag.parsing import SUPPORTED_TYPES
from web import chainlit_fixes
from web.loop_health import IdleCollector


def test_the_chat_page_loses_its_font_and_stylesheet_from_other_sites():
    original = chainlit_fixes.chainlit_original(chainlit_server.get_html_template)("")
    assert "fonts.googleapis.com" in original  # still there upstream: the fix is still needed

    chainlit_fixes.serve_page_without_external_assets()
    chainlit_fixes.serve_page_without_external_assets()  # a -w reload applies it again

    page = chainlit_server.get_html_template("")
    assert 'id="root"' in page
    assert "fonts.googleapis.com" not in page and '<link rel="stylesheet" href="https://' not in page


def test_an_ended_sessions_files_are_still_deleted_on_the_loop_upstream():
    delete = chainlit_fixes.chainlit_original(WebsocketSession.delete)
    assert "shutil.rmtree(self.files_dir" in inspect.getsource(delete)

    chainlit_fixes.delete_session_files_off_loop()

    assert chainlit_fixes.chainlit_original(WebsocketSession.delete) is delete
    assert WebsocketSession.delete.__wrapped__ is delete  # replaced once, not wrapped twice


async def test_socket_events_count_as_busy_for_the_idle_collector():
    collector = IdleCollector()
    seen = []

    @chainlit_server.sio.on("probe-busy")
    async def probe(sid):
        seen.append(collector.in_flight)

    chainlit_fixes.count_socket_events_as_busy(collector)
    await chainlit_server.sio._trigger_event("probe-busy", "/", "sid")

    assert seen == [1] and collector.in_flight == 0


def test_chainlit_still_keeps_chat_contexts_after_a_disconnect():
    # chainlit#2951: once the disconnect handler removes the entry itself, drop forget_chat_context.
    assert "chat_contexts" not in inspect.getsource(chainlit.socket)
    chat_contexts["ended"] = []

    chainlit_fixes.forget_chat_context("ended")

    assert "ended" not in chat_contexts


async def test_our_routes_come_before_chainlits_catch_all_once_however_often_added():
    def ours() -> APIRouter:
        router = APIRouter()
        router.get("/probe-route")(lambda: {"ok": True})
        return router

    chainlit_fixes.serve_before_chainlit_pages(ours())
    chainlit_fixes.serve_before_chainlit_pages(ours())

    paths = [route.path for route in chainlit_server.app.router.routes if isinstance(route, APIRoute)]
    assert paths.count("/probe-route") == 1
    transport = httpx.ASGITransport(app=chainlit_server.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        answered = await http.get("/probe-route")
    assert answered.json() == {"ok": True}  # not Chainlit's chat page (chainlit#1819)


def test_a_reload_still_drops_the_project_modules_including_the_chainlit_script():
    # The reason keep_main_module_on_reload puts __main__ back after a `-w` reload.
    assert "sys.modules.pop(module_name" in inspect.getsource(chainlit.config.load_module)


def test_chainlit_still_makes_asyncio_pure_python_and_the_app_gives_the_loop_its_c_tasks_back():
    script = """
import asyncio, threading, _asyncio
import chainlit.cli  # applies nest_asyncio when imported
assert asyncio.Task is not _asyncio.Task, "Chainlit no longer applies nest_asyncio: drop run_loop_with_c_tasks"
from web import chainlit_fixes
chainlit_fixes.run_loop_with_c_tasks()

async def main():
    refused = []
    def ask_for_a_loop():
        try:
            asyncio.get_event_loop()
        except RuntimeError:
            refused.append(True)
    thread = threading.Thread(target=ask_for_a_loop)
    thread.start()
    thread.join()
    return type(asyncio.current_task()), type(asyncio.get_running_loop())._run_once, refused

task_type, run_once, refused = asyncio.run(main())
assert task_type is _asyncio.Task, task_type
assert run_once is asyncio.BaseEventLoop._run_once, run_once
assert refused == [True], "a thread asking for a loop got a new (patched) one"

async def in_a_thread():  # as the chat store's set-up runs at start and after a -w reload
    return type(asyncio.current_task())
ran = []
thread = threading.Thread(target=lambda: ran.append(asyncio.run(in_a_thread())))
thread.start()
thread.join()
assert ran == [_asyncio.Task], ran
"""
    subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, check=True, capture_output=True, text=True)


async def test_an_element_sent_is_written_to_its_sessions_folder_in_one_thread_trip(tmp_path, monkeypatch):
    persist = chainlit_fixes.chainlit_original(BaseSession.persist_file)
    assert "aiofiles.open" in inspect.getsource(persist)  # upstream: open, write and close, a trip each

    chainlit_fixes.persist_files_in_one_thread_trip()
    chainlit_fixes.persist_files_in_one_thread_trip()  # a -w reload applies it again

    assert BaseSession.persist_file.__wrapped__ is persist  # type: ignore[attr-defined]
    monkeypatch.setattr(chainlit.config, "FILES_DIRECTORY", tmp_path)
    session = HTTPSession(id="a-session", client_type="webapp")
    passage = await session.persist_file(name="[1]", mime="text/plain", content="Passage one.")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF-1.4 a report")
    report = await session.persist_file(name="report.pdf", mime="application/pdf", path=str(source))

    written = session.files[passage["id"]]
    assert written["path"] == tmp_path / "a-session" / f"{passage['id']}.txt"
    assert written["path"].read_text() == "Passage one." and written["size"] == 12
    copied = session.files[report["id"]]
    assert copied["path"].read_bytes() == b"%PDF-1.4 a report"
    assert (copied["name"], copied["type"]) == ("report.pdf", "application/pdf")


def test_a_browser_in_a_regional_language_gets_the_welcome_page_of_its_base_language(tmp_path):
    (tmp_path / "chainlit.md").write_text("English")
    (tmp_path / "chainlit_te.md").write_text("తెలుగు")
    original = chainlit_fixes.chainlit_original(chainlit_server.get_markdown_str)
    assert original(str(tmp_path), "te-IN") == "English"  # still so upstream: the fix is still needed

    chainlit_fixes.serve_welcome_page_in_base_language()
    chainlit_fixes.serve_welcome_page_in_base_language()  # a -w reload applies it again

    markdown = chainlit_server.get_markdown_str
    assert chainlit_fixes.chainlit_original(markdown) is original
    assert markdown(str(tmp_path), "te-IN") == markdown(str(tmp_path), "te") == "తెలుగు"
    assert markdown(str(tmp_path), "fr-FR") == "English"
    (tmp_path / "chainlit_te-IN.md").write_text("తెలుగు (భారత్)")
    assert markdown(str(tmp_path), "te-IN") == "తెలుగు (భారత్)"  # the exact language's page first


def test_the_language_setting_is_chainlits_interface_language_too(monkeypatch):
    monkeypatch.setattr(chainlit.config.config.ui, "language", None)  # restored after the test
    chainlit_fixes.configure(Settings(), SUPPORTED_TYPES)
    assert chainlit.config.config.ui.language is None  # the browser's

    chainlit_fixes.configure(Settings(language="te_IN"), SUPPORTED_TYPES)
    assert chainlit.config.config.ui.language == "te-IN"
