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
import mimetypes
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

import chainlit.server as chainlit_server
from chainlit.chat_context import chat_contexts
from chainlit.config import config as chainlit_config
from chainlit.session import BaseSession, WebsocketSession
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
    # LANGUAGE (i18n): Chainlit's own interface and welcome page in the language the chats are
    # in, whatever the browser's.
    if language := settings.language:
        chainlit_config.ui.language = language.replace("_", "-")


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


def serve_welcome_page_in_base_language() -> None:
    """Chainlit serves `chainlit_<language>.md` as the welcome page for the browser's exact
    language tag only: a browser set to Telugu asks for "te-IN" and gets the English
    chainlit.md beside chainlit_te.md (its interface's translations do fall back from "te-IN"
    to te.json; no upstream issue). Fall back to the base language's page the same way."""
    markdown = chainlit_original(chainlit_server.get_markdown_str)

    @_replaces(markdown)
    def markdown_in_base_language(root: str, language: str) -> str | None:
        base = language.split("-")[0]
        if base != language and not (Path(root) / f"chainlit_{language}.md").is_file():
            language = base
        return cast(str | None, markdown(root, language))

    chainlit_server.get_markdown_str = markdown_in_base_language


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


def persist_files_in_one_thread_trip() -> None:
    """Chainlit writes every element it sends (about 8 an answer: passages, timings, chart) to
    the session's folder through aiofiles: open, write and close a thread trip each, with a
    mkdir and a stat on the event loop (6% of its time under bench.load). One trip a file."""
    persist = chainlit_original(BaseSession.persist_file)

    @_replaces(persist)
    async def persist_in_one_trip(
        session: BaseSession, name: str, mime: str, path: str | None = None, content: bytes | str | None = None
    ) -> dict[str, str]:
        if not path and not content:
            return cast(dict[str, str], await persist(session, name, mime, path, content))  # Chainlit's error
        file_id = str(uuid.uuid4())
        file_path = session.files_dir / file_id
        if extension := mimetypes.guess_extension(mime):
            file_path = file_path.with_suffix(extension)
        size = await asyncio.to_thread(_write_session_file, file_path, path, content)
        session.files[file_id] = {"id": file_id, "path": file_path, "name": name, "type": mime, "size": size}
        return {"id": file_id}

    BaseSession.persist_file = persist_in_one_trip  # type: ignore[method-assign, assignment]


def _write_session_file(file_path: Path, source: str | None, content: bytes | str | None) -> int:
    file_path.parent.mkdir(exist_ok=True)
    if source:
        shutil.copyfile(source, file_path)
    else:
        file_path.write_bytes(content.encode() if isinstance(content, str) else content or b"")
    return file_path.stat().st_size


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


_NEST_ASYNCIO_LOOP_PATCHES = (
    "run_forever",
    "run_until_complete",
    "_run_once",
    "_check_running",
    "_check_runnung",
    "_num_runs_pending",
    "_is_proactorloop",
    "_nest_patched",
)


def run_loop_with_c_tasks() -> None:
    """Chainlit's CLI applies nest_asyncio when it is imported (chainlit#1789; removed in the
    proposed chainlit#2953), for a re-entrant `run_until_complete` that only chat profiles'
    config overrides use, and this app has none. nest_asyncio swaps asyncio's C tasks and
    futures for the pure-Python ones and patches the loop's class and the loop policy: every
    await costs more on the loop that all chats share. Undone before the server's loop starts."""
    import _asyncio

    if asyncio._get_running_loop() is not None or not getattr(asyncio, "_nest_patched", False):
        return  # a -w reload runs inside the loop, which keeps what it started with
    asyncio.run = asyncio.runners.run  # nest_asyncio's reuses a loop it makes and patches
    asyncio.Task = asyncio.tasks.Task = asyncio.tasks._CTask = _asyncio.Task  # type: ignore[misc, attr-defined]
    asyncio.Future = asyncio.futures.Future = asyncio.futures._CFuture = _asyncio.Future  # type: ignore[misc, attr-defined]
    for loop_class in (asyncio.SelectorEventLoop, *asyncio.BaseEventLoop.__subclasses__()):
        if "_nest_patched" in vars(loop_class):
            for name in _NEST_ASYNCIO_LOOP_PATCHES:
                if name in vars(loop_class):
                    delattr(loop_class, name)
    # The patched policy made and patched a loop for any thread asking for one.
    policy_class = type(asyncio.get_event_loop_policy())
    for cls in policy_class.__mro__:
        method = vars(cls).get("get_event_loop")
        if method is not None and method.__module__ == "nest_asyncio":
            delattr(cls, "get_event_loop")


def keep_main_module_on_reload() -> None:
    """A `-w` reload drops every module whose file lies under the project folder from
    `sys.modules`, including the `chainlit` script itself when the virtualenv is inside the
    project (.venv here); starting the upload reader's process needs `__main__` back."""
    if hasattr(http_app.state, "main_module"):
        sys.modules.setdefault("__main__", http_app.state.main_module)
    else:
        http_app.state.main_module = sys.modules["__main__"]
