"""The Chainlit app: handlers and login callbacks over one `Assistant` (web/application.py).

Where a question goes: `web/chat.py` `answer` runs the turn pipeline (`answering/pipeline.py`)
and `web/turn_view.py` shows its events. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import chainlit as cl
from chainlit.types import ThreadDict

from models.settings import Settings
from rag.parsing import SUPPORTED_TYPES
from web import chainlit_fixes, chat
from web.accounts import UserListError, verify_password
from web.application import build_assistant, serve
from web.chat_store import ChatDataLayer
from web.routes import make_routes
from web.store_schema import ChatStoreError

try:
    APP = serve(lambda: build_assistant(Settings()))
except UserListError as error:
    # Never fall back to an open app when the operator asked for login.
    print(f"❌ Login is configured but unusable: {error}", file=sys.stderr)
    raise SystemExit(2) from error
except ChatStoreError as error:  # the element storage asked for cannot be used
    print(f"❌ {error}", file=sys.stderr)
    raise SystemExit(2) from error

chainlit_fixes.configure(APP.settings, SUPPORTED_TYPES)
chainlit_fixes.run_loop_with_c_tasks()
chainlit_fixes.serve_page_without_external_assets()
chainlit_fixes.serve_welcome_page_in_base_language()
chainlit_fixes.delete_session_files_off_loop()
chainlit_fixes.persist_files_in_one_thread_trip()
chainlit_fixes.count_socket_events_as_busy(APP.collector)
chainlit_fixes.keep_main_module_on_reload()
chainlit_fixes.serve_before_chainlit_pages(make_routes(APP))
# A thread that wants the interpreter lock waits up to this long for the one holding it;
# the loop waits like that after each socket write while a decode runs (5 ms by
# default). 1 ms: worst stall under bench.load's mixed load 98 ms, against 100-116 ms.
sys.setswitchinterval(0.001)


@cl.on_app_startup
async def app_started() -> None:
    await APP.start()


@cl.on_app_shutdown
async def app_stopping() -> None:
    # Answers cut by the stop are marked and saved first (web/chat.py `answer`).
    await APP.answers_ended()
    await APP.stop()


# --- who may use the app, and where chats are kept
if APP.saves_chats:
    cl.data_layer(lambda: ChatDataLayer(APP.settings.chat_store_url, APP.storage))

if APP.users is not None:

    @cl.password_auth_callback
    async def password_login(name: str, password: str) -> cl.User | None:
        stored = APP.users.get(name) if APP.users else None
        # scrypt is slow on purpose: keep it off the event loop.
        if stored is not None and await asyncio.to_thread(verify_password, password, stored):
            return cl.User(identifier=name, metadata={"provider": "password"})
        return None

elif APP.saves_chats:
    # Without a user list there is one local user, signed in silently, so that the chat
    # history still has an owner.
    @cl.header_auth_callback
    async def local_login(headers: Any) -> cl.User:
        return cl.User(identifier="local", metadata={"provider": "local"})


# --- one chat
@cl.on_chat_start
async def start() -> None:
    await chat.welcome(APP)


@cl.on_chat_resume
async def resume(thread: ThreadDict) -> None:
    await chat.resume(APP, thread)


@cl.on_settings_update
async def settings_changed(chosen: dict[str, Any]) -> None:
    await chat.settings_changed(APP, chosen)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    await chat.on_message(APP, message)


@cl.on_chat_end
async def end() -> None:
    # A closed tab must not leave a generation running for nobody.
    task = cl.context.session.current_task
    if task and not task.done():
        task.cancel(chat.CHAT_CLOSED)
    chainlit_fixes.forget_chat_context(cl.context.session.id)


# Everything loaded so far (models, corpus, indexes) lives as long as the process:
# keep it out of the garbage collector's scans, which otherwise stall every chat.
gc.freeze()
