"""Each Chainlit workaround in web/chainlit_fixes.py still works on the installed Chainlit, and is
still needed. A failure here after an upgrade says which workaround to revisit."""

from __future__ import annotations

import inspect

import chainlit.config
import chainlit.server as chainlit_server
import chainlit.socket
import httpx
from chainlit.chat_context import chat_contexts
from chainlit.session import WebsocketSession
from fastapi import APIRouter
from fastapi.routing import APIRoute

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
