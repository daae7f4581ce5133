"""Every place the app reaches into Chainlit (2.12) beyond its public API, with the reason for each.

Each workaround has a test in tests/test_chainlit_fixes.py that fails when a Chainlit
upgrade breaks it (or makes it unnecessary). `chainlit run -w` runs app.py again inside
the running server after every change, so each function here can run more than once:
replacements always wrap Chainlit's own function, never the previous run's replacement.

Adaptations made through Chainlit's extension points live with their users instead: the
SQLite data layer (a fixed connection pool in place of the engine Chainlit builds, JSON for
list parameters) in web/chat_store.py, and the plotly.js chart element in web/turn_view.py.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

import chainlit.server as chainlit_server
from chainlit.chat_context import chat_contexts
from chainlit.config import config as chainlit_config
from chainlit.session import WebsocketSession
from fastapi import APIRouter
from fastapi.routing import APIRoute

from models.settings import Settings
from web.loop_health import IdleCollector

F = TypeVar("F", bound=Callable[..., Any])
http_app = chainlit_server.app

# Served by the app (web/routes.py); keeps the side panel closed until a link is clicked.
SIDE_PANEL_SCRIPT = "/ui/side-panel.js"


def _replaces(original: Callable[..., Any]) -> Callable[[F], F]:
    """Marks a replacement of one of Chainlit's functions (a decorator, like functools.wraps)."""

    def mark(wrapper: F) -> F:
        wrapped = cast(F, functools.wraps(original)(wrapper))
        wrapped.replaces_chainlit = True  # type: ignore[attr-defined]
        return wrapped

    return mark


def chainlit_original(function: Callable[..., Any]) -> Callable[..., Any]:
    """Chainlit's own function under any replacements made by earlier runs of app.py."""
    while getattr(function, "replaces_chainlit", False):
        function = function.__wrapped__  # type: ignore[attr-defined]
    return function


def configure(settings: Settings, upload_types: Iterable[str]) -> None:
    """Chainlit settings that come from our `Settings`, not from a second copy in .chainlit/config.toml."""
    uploads = chainlit_config.features.spontaneous_file_upload
    assert uploads is not None  # .chainlit/config.toml has the section
    uploads.enabled = True
    uploads.accept = list(upload_types)
    uploads.max_size_mb = math.ceil(settings.upload_max_mb)
    uploads.max_files = settings.upload_max_files
    # A closed tab's session (its knowledge base, history and tasks) is kept this long in
    # case it reconnects; Chainlit's default is an hour, and chats are saved anyway.
    chainlit_config.project.session_timeout = settings.session_timeout_s
    # Chainlit 2.11+ opens the side panel with every side element of the chat whenever an
    # answer with elements arrives (chainlit#2979); the script closes a panel nobody asked for.
    chainlit_config.ui.custom_js = SIDE_PANEL_SCRIPT


# The page Chainlit serves loads a font from Google and a LaTeX stylesheet from a CDN (LaTeX
# is off here): a private, local-first app must not call out on every visit. No setting
# turns them off (no upstream issue).
_EXTERNAL_ASSETS = re.compile(r'<!-- FONT START -->.*?<!-- FONT END -->|<link[^>]+href="https://[^"]*"[^>]*>', re.S)


def serve_page_without_external_assets() -> None:
    page = chainlit_original(chainlit_server.get_html_template)

    @_replaces(page)
    def page_without_external_assets(root_path: str) -> str:
        return _EXTERNAL_ASSETS.sub("", page(root_path))

    chainlit_server.get_html_template = page_without_external_assets


def delete_session_files_off_loop() -> None:
    """Chainlit deletes an ended session's files (its uploads and every side element sent)
    with a blocking rmtree on the event loop: 100-250 ms under load (bench.load). Empty the
    folder in a thread first; Chainlit's own delete then finds nothing left to remove."""
    delete = chainlit_original(WebsocketSession.delete)

    @_replaces(delete)
    async def delete_files_in_a_thread(session: WebsocketSession) -> None:
        await asyncio.to_thread(shutil.rmtree, session.files_dir, ignore_errors=True)
        await delete(session)

    WebsocketSession.delete = delete_files_in_a_thread  # type: ignore[method-assign]


def count_socket_events_as_busy(collector: IdleCollector) -> None:
    """Every browser event counts as activity for the idle garbage collector: a burst of tabs
    opening (sign-in, chat start) must not look like a quiet moment for a full collection.
    Chainlit has no hook around its Socket.IO handlers, so this wraps the server's dispatch."""
    dispatch = chainlit_original(chainlit_server.sio._trigger_event)

    @_replaces(dispatch)
    async def busy_while_handling(*args: Any, **kwargs: Any) -> Any:
        with collector.busy():
            return await dispatch(*args, **kwargs)

    chainlit_server.sio._trigger_event = busy_while_handling


def forget_chat_context(session_id: str) -> None:
    """Chainlit keeps every session's messages in `chat_contexts` for the life of the process
    (chainlit#2951, fix proposed in chainlit#2959); the app keeps its own history per chat."""
    chat_contexts.pop(session_id, None)


def serve_before_chainlit_pages(router: APIRouter) -> None:
    """Chainlit answers every unknown GET with its chat page, from a catch-all route registered
    when it is imported, so routes added later are never reached (chainlit#1819): put ours
    first. A previous run's routes (before a `-w` reload) are taken out, not stacked."""
    ours = list(router.routes)
    paths = {(route.path, frozenset(route.methods or ())) for route in ours if isinstance(route, APIRoute)}
    http_app.router.routes[:] = ours + [
        route
        for route in http_app.router.routes
        if not (isinstance(route, APIRoute) and (route.path, frozenset(route.methods or ())) in paths)
    ]


def keep_main_module_on_reload() -> None:
    """A `-w` reload drops every module whose file lies under the project folder from
    `sys.modules`, including the `chainlit` script itself when the virtualenv is inside the
    project (.venv here); starting the upload reader's process needs `__main__` back."""
    if hasattr(http_app.state, "main_module"):
        sys.modules.setdefault("__main__", http_app.state.main_module)
    else:
        http_app.state.main_module = sys.modules["__main__"]
