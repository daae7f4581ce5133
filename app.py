"""Chainlit glue: chat settings, uploads, retrieval, streaming the answer, and its sources and cost.

The logic lives in `models/` and `rag/`; this file only moves events to the browser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import math
import re
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import chainlit as cl
from chainlit.auth import get_current_user
from chainlit.chat_context import chat_contexts
from chainlit.config import config as chainlit_config
from chainlit.data import get_data_layer
from chainlit.input_widget import Select, Slider, Switch
from chainlit.session import WebsocketSession
import chainlit.server as chainlit_server
from chainlit.server import app as http_app
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from answering.attempts import Answer, AttemptStart
from models.factory import load_catalog, make_backends
from models.costs import PhaseTimings
from answering.grounding import GuardMode
from answering.pipeline import (
    Notice, Retrieved, Routed, SentenceCut, TurnConfig, TurnDone, TurnRequest, run_turn,
)
from answering.router import Mode
from models.base import ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog, ModelSpec
from answering.comparison import comparison_messages, context_passages, resolve_models, row_for, stream_comparison
from models.settings import Settings
from models.streaming import TokenBatcher
from web.turn_view import TurnView, markdown_text
from models.loop_health import IdleCollector, keep_timer_heap_clean
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import corpus_documents
from rag.parsing import SUPPORTED_TYPES, safe_file_name
from rag.uploads import UploadReader, add_upload_off_loop
from rag.accounts import UserListError, load_users, verify_password
from rag.persistence import (
    ChatStoreError, LocalFileStorage, SQLiteDataLayer, conversation_from_steps, create_schema, ensure_auth_secret,
    restore_uploads, STORED_ELEMENTS_ROUTE,
)

SETTINGS = Settings()
# Shared by every session, so that each embedded model is loaded once per process.
BACKENDS = make_backends(SETTINGS)
# The built-in demo sentences and the on-disk handbook; uploads are per session.
CORPUS = SharedCorpus(corpus_documents(SETTINGS.corpus_dir))
# Uploaded files are read in their own process(es), shared by every session.
UPLOAD_READER = UploadReader(SETTINGS.upload_parse_workers)


def _wraps_chainlit(original):
    """Marks a replacement of one of Chainlit's functions (a decorator, like functools.wraps)."""
    def mark(wrapper):
        wrapper = functools.wraps(original)(wrapper)
        wrapper.replaces_chainlit = True
        return wrapper
    return mark


def _chainlit_original(function):
    """Chainlit's own function under our replacements: `chainlit run -w` runs this file again
    after every change, and each run must wrap Chainlit's function, not the last run's wrapper."""
    while getattr(function, "replaces_chainlit", False):
        function = function.__wrapped__
    return function


# Upload limits come from the settings object, not from a second copy in config.toml.
_uploads = chainlit_config.features.spontaneous_file_upload
_uploads.enabled = True
_uploads.accept = list(SUPPORTED_TYPES)
_uploads.max_size_mb = math.ceil(SETTINGS.upload_max_mb)
_uploads.max_files = SETTINGS.upload_max_files
# The page Chainlit serves loads a font from Google and a LaTeX stylesheet from a CDN
# (LaTeX is off here): a private, local-first app must not call out on every visit.
_EXTERNAL_ASSETS = re.compile(r'<!-- FONT START -->.*?<!-- FONT END -->|<link[^>]+href="https://[^"]*"[^>]*>', re.S)
_chainlit_page = _chainlit_original(chainlit_server.get_html_template)


@_wraps_chainlit(_chainlit_page)
def _page_without_external_assets(root_path: str) -> str:
    return _EXTERNAL_ASSETS.sub("", _chainlit_page(root_path))


chainlit_server.get_html_template = _page_without_external_assets

# Chainlit keeps a closed tab's session (its knowledge base, history and tasks) for
# this long in case it reconnects; its default is an hour, and chats are saved anyway.
chainlit_config.project.session_timeout = SETTINGS.session_timeout_s
# Keeps the side panel closed until a link is clicked (see the script for why).
SIDE_PANEL_SCRIPT = "/ui/side-panel.js"
chainlit_config.ui.custom_js = SIDE_PANEL_SCRIPT

# --- the event loop every session shares
# Chainlit deletes an ended session's files (its uploads and every side element sent)
# with a blocking rmtree on the loop: 100-250 ms under load. Empty the folder in a
# thread first; Chainlit's own delete then finds nothing left to remove.
_chainlit_delete_session = _chainlit_original(WebsocketSession.delete)


@_wraps_chainlit(_chainlit_delete_session)
async def _delete_session_files_off_loop(session: WebsocketSession) -> None:
    await asyncio.to_thread(shutil.rmtree, session.files_dir, ignore_errors=True)
    await _chainlit_delete_session(session)


WebsocketSession.delete = _delete_session_files_off_loop


# Full garbage collections wait until no answer is streaming (see models/loop_health.py).
COLLECTOR = IdleCollector()
_handle_socket_event = _chainlit_original(chainlit_server.sio._trigger_event)


@_wraps_chainlit(_handle_socket_event)
async def _busy_while_handling(*args, **kwargs):
    # Every browser event counts as activity: a burst of tabs opening (sign-in, chat
    # start) must not look like a quiet moment for a full collection.
    with COLLECTOR.busy():
        return await _handle_socket_event(*args, **kwargs)


chainlit_server.sio._trigger_event = _busy_while_handling
# A thread that wants the interpreter lock waits up to this long for the one holding it;
# the loop waits like that after each socket write while a decode runs (5 ms by
# default). 1 ms: worst stall under bench.load's mixed load 98 ms, against 100-116 ms.
sys.setswitchinterval(0.001)


# Live as long as the server (or until `-w` reloads this file); held here so never collected.
LOOP_UPKEEP: list[asyncio.Task] = []


def _start_background_work() -> None:
    LOOP_UPKEEP[:] = [asyncio.create_task(keep_timer_heap_clean(), name="purge-cancelled-timers"),
                      asyncio.create_task(COLLECTOR.run(), name="idle-garbage-collector")]
    http_app.state.stop_background_work = _stop_background_work


def _stop_background_work() -> None:
    for task in LOOP_UPKEEP:
        task.cancel()
    UPLOAD_READER.close()


@cl.on_app_startup
async def app_started() -> None:
    _start_background_work()
    await asyncio.to_thread(UPLOAD_READER.start)


@cl.on_app_shutdown
async def app_stopping() -> None:
    _stop_background_work()


# `chainlit run -w` runs this file again after every change, inside the running server,
# and does not call the start-up hook again: stop the previous run's reader process and
# loop tasks (they would run on, unseen by the new code) and start this run's. The new
# reader process starts with the first upload.
if hasattr(http_app.state, "stop_background_work"):
    http_app.state.stop_background_work()
    _start_background_work()
    # The reload also drops the `chainlit` script itself from sys.modules when it lies in
    # the project folder (a .venv here); starting a reader process needs it back.
    sys.modules.setdefault("__main__", http_app.state.main_module)
else:
    http_app.state.main_module = sys.modules["__main__"]

# --- who may use the app, and where chats are kept
# Login is on only when a user list is configured. Otherwise there is one local
# user, signed in silently, so that the chat history still has an owner.
LOCAL_USER = "local"
try:
    ensure_auth_secret(SETTINGS.data_dir)
except OSError as error:
    print(f"⚠️ Cannot keep a login secret in {SETTINGS.data_dir} ({error}); sessions end when the app restarts.")
    os.environ.setdefault("CHAINLIT_AUTH_SECRET", secrets.token_urlsafe(48))

CHAT_STORE_PROBLEM: str | None = None
STORAGE = LocalFileStorage(SETTINGS.data_dir / "elements")
if SETTINGS.persist_chats:
    try:
        create_schema(SETTINGS.chat_database)
    except ChatStoreError as error:
        # Start anyway, without history: a broken file must not keep the assistant down.
        CHAT_STORE_PROBLEM = str(error)
        print(f"⚠️ {CHAT_STORE_PROBLEM}", file=sys.stderr)
    else:
        cl.data_layer(lambda: SQLiteDataLayer(SETTINGS.chat_database, STORAGE))

if SETTINGS.login_required:
    try:
        USERS = load_users(SETTINGS)
    except UserListError as error:
        # Never fall back to an open app when the operator asked for login.
        print(f"❌ Login is configured but unusable: {error}", file=sys.stderr)
        raise SystemExit(2) from error

    @cl.password_auth_callback
    async def password_login(name: str, password: str) -> cl.User | None:
        stored = USERS.get(name)
        # scrypt is slow on purpose: keep it off the event loop.
        if stored and await asyncio.to_thread(verify_password, password, stored):
            return cl.User(identifier=name, metadata={"provider": "password"})
        return None
elif SETTINGS.persist_chats and CHAT_STORE_PROBLEM is None:

    @cl.header_auth_callback
    async def local_login(headers) -> cl.User:
        return cl.User(identifier=LOCAL_USER, metadata={"provider": "local"})

TURN_CONFIG = TurnConfig.from_settings(SETTINGS)

COMMANDS_HELP = "Type `/uploads` to list this chat's uploaded files and `/remove <file name>` to remove one."


@cl.on_chat_start
async def start() -> None:
    catalog = await _open_session({})
    lines = [
        f"Ask me about your team's documents ({len(CORPUS.documents)} in the knowledge base); "
        "attach files to any message to add them for this chat only. Answers stream from "
        f"**{catalog.slm.label}**; change models and retrieval in the settings panel. "
        "Compare the models side by side on the [comparison page](/compare).",
        COMMANDS_HELP,
        *(f"⚠️ {notice}" for notice in catalog.notices),
        *([f"⚠️ {CHAT_STORE_PROBLEM}"] if CHAT_STORE_PROBLEM else []),
    ]
    await cl.Message(content="\n\n".join(lines)).send()


@cl.on_chat_resume
async def resume(thread: dict) -> None:
    """A chat reopened from the history: its settings, conversation and uploads come back."""
    chosen = cl.user_session.get("chat_settings") or {}
    catalog = await _open_session(chosen)
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    cl.user_session.get("history").extend(conversation_from_steps(thread.get("steps") or []))
    max_bytes = int(SETTINGS.upload_max_mb * 1024 * 1024)
    restored = await restore_uploads(knowledge, thread, STORAGE, UPLOAD_READER, max_bytes)
    missing = [model for model in (chosen.get("slm"), chosen.get("llm")) if model and not catalog.get(model)]
    if missing:
        await cl.Message(content=f"⚠️ {', '.join(missing)} is no longer available; using "
                                 f"{catalog.slm.label} and {catalog.llm.label}.").send()
    if restored.refused:
        await cl.Message(content="⚠️ Not restored: " + "; ".join(restored.refused)).send()


async def _open_session(chosen: dict) -> Catalog:
    """The per-chat state, and the settings panel showing `chosen` (a resumed chat's settings)."""
    catalog = await load_catalog(SETTINGS, BACKENDS)
    cl.user_session.set("catalog", catalog)
    cl.user_session.set("history", [])
    cl.user_session.set("turns", [])
    chunk_size = int(chosen.get("chunk_size", SETTINGS.chunk_size))
    cl.user_session.set("knowledge", KnowledgeBase(CORPUS, chunk_size, SETTINGS.chunk_overlap))
    await cl.ChatSettings(_settings_widgets(catalog, chosen)).send()
    return catalog


def _settings_widgets(catalog: Catalog, chosen: dict) -> list:
    items = {spec.label: spec.key for spec in catalog.models.values()}

    def model(role: str, default: ModelSpec) -> str:
        return chosen[role] if catalog.get(chosen.get(role)) else default.key

    return [
        Select(id="slm", label="Small model (answers first)", items=items, initial_value=model("slm", catalog.slm)),
        Select(id="llm", label="Large model (escalation)", items=items, initial_value=model("llm", catalog.llm)),
        Slider(id="temperature", label="Temperature", initial=chosen.get("temperature", SETTINGS.temperature),
               min=0, max=2, step=0.05),
        Slider(id="max_tokens", label="Max tokens", initial=chosen.get("max_tokens", SETTINGS.max_tokens), min=16,
               max=max(4096, SETTINGS.max_tokens), step=16),
        Select(id="router_mode", label="Escalation to the large model", values=[mode.value for mode in Mode],
               initial_value=chosen.get("router_mode", SETTINGS.router_mode)),
        Select(id="retrieval_mode", label="Retrieval", values=["bm25", "lexical"],
               initial_value=chosen.get("retrieval_mode", SETTINGS.retrieval_mode)),
        Slider(id="top_k", label="Passages per answer (top-k)", initial=chosen.get("top_k", SETTINGS.top_k),
               min=1, max=20, step=1),
        Slider(id="chunk_size", label="Chunk size (characters)", initial=chosen.get("chunk_size", SETTINGS.chunk_size),
               min=200, max=max(3000, SETTINGS.chunk_size), step=100),
        Select(id="grounding_guard", label="Sentences the documents do not support",
               items={"Cut them and stop the model": "stop", "Strike them through": "mark", "Show them": "off"},
               initial_value=chosen.get("grounding_guard", SETTINGS.grounding_guard)),
        Switch(id="general_knowledge", label="General-knowledge answers (when the documents do not cover a "
                                             "question; labelled as not from the documents)",
               initial=bool(chosen.get("general_knowledge", False))),
    ]


@cl.on_settings_update
async def settings_changed(chosen: dict) -> None:
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    if "chunk_size" in chosen:
        knowledge.rechunk(int(chosen["chunk_size"]), SETTINGS.chunk_overlap)


@cl.on_chat_end
async def end() -> None:
    # A closed tab must not leave a generation running for nobody.
    task = cl.context.session.current_task
    if task and not task.done():
        task.cancel()
    # Chainlit keeps every session's messages for the life of the process
    # unless told otherwise; the app keeps its own history per session.
    chat_contexts.pop(cl.context.session.id, None)


@cl.on_message
async def on_message(message: cl.Message) -> None:
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    text = message.content.strip()
    files = [element for element in message.elements or [] if getattr(element, "path", None)]
    with COLLECTOR.busy():
        if files:
            await _add_uploads(knowledge, files)
        if text == "/uploads" or text == "/remove" or text.startswith("/remove "):
            await _manage_uploads(knowledge, text)
        elif text:
            await _answer(knowledge, text)


async def _add_uploads(knowledge: KnowledgeBase, files: list) -> None:
    accepted, refused = files[: SETTINGS.upload_max_files], files[SETTINGS.upload_max_files :]
    max_bytes = int(SETTINGS.upload_max_mb * 1024 * 1024)
    lines = []
    for element in accepted:
        outcome = await add_upload_off_loop(knowledge, Path(element.path), element.name or "upload", max_bytes,
                                            UPLOAD_READER)
        if outcome.added:
            chunks = f"{outcome.chunks} chunk" + ("" if outcome.chunks == 1 else "s")
            lines.append(f"📄 Added **{markdown_text(outcome.file_name)}** ({markdown_text(outcome.title)}): "
                         f"{chunks} in {outcome.seconds:.2f} s.")
        else:
            lines.append(f"⚠️ **{markdown_text(outcome.file_name)}** was not added: {outcome.refusal}")
    for element in refused:
        lines.append(f"⚠️ **{markdown_text(safe_file_name(element.name or 'upload'))}** was not added: at most "
                     f"{SETTINGS.upload_max_files} files per message.")
    await cl.Message(content="\n\n".join(lines)).send()


async def _manage_uploads(knowledge: KnowledgeBase, command: str) -> None:
    if command.startswith("/remove"):
        name = command.removeprefix("/remove").strip()
        removed = await asyncio.to_thread(knowledge.remove, name) if name else None
        if not name:
            reply = "Say which file to remove: `/remove <file name>`."
        else:
            reply = (f"Removed **{markdown_text(removed.source)}**." if removed
                     else f"No uploaded file is called **{markdown_text(name)}**.")
    elif knowledge.uploads:
        reply = "Files uploaded in this chat:\n" + "\n".join(
            f"- **{markdown_text(document.source)}** ({markdown_text(document.title)})" for document in knowledge.uploads.values()
        )
    else:
        reply = "No files uploaded in this chat yet. Attach one to a message to add it."
    await cl.Message(content=f"{reply}\n\n{COMMANDS_HELP}").send()


async def _answer(knowledge: KnowledgeBase, question: str) -> None:
    catalog: Catalog = cl.user_session.get("catalog")
    chosen = cl.user_session.get("chat_settings") or {}
    history: list[ChatMessage] = cl.user_session.get("history")
    request = TurnRequest(
        question=question,
        knowledge=knowledge,
        slm=catalog.get(chosen.get("slm")) or catalog.slm,
        llm=catalog.get(chosen.get("llm")) or catalog.llm,
        fallback=catalog.embedded_fallback,
        history=tuple(history),
        params=GenerationParams(
            max_tokens=int(chosen.get("max_tokens", SETTINGS.max_tokens)),
            temperature=float(chosen.get("temperature", SETTINGS.temperature)),
        ),
        router_mode=Mode(chosen.get("router_mode", SETTINGS.router_mode)),
        retrieval_mode=chosen.get("retrieval_mode", SETTINGS.retrieval_mode),
        top_k=int(chosen.get("top_k", SETTINGS.top_k)),
        guard=GuardMode(chosen.get("grounding_guard", SETTINGS.grounding_guard)),
        general_knowledge=bool(chosen.get("general_knowledge", False)),
    )
    turn = TurnView(SETTINGS, request.retrieval_mode)
    final_text = ""
    try:
        async for event in run_turn(request, BACKENDS, TURN_CONFIG):
            if isinstance(event, Retrieved):
                turn.retrieved(event)
            elif isinstance(event, Notice):
                await turn.notice(event)
            elif isinstance(event, AttemptStart) and event.replacing:
                await turn.restart(f"⚠️ {event.replacing}\n\nAnswering with the embedded model "
                                   f"**{event.model.label}** instead.")
            elif isinstance(event, TokenEvent):
                await turn.add(event.text)
            elif isinstance(event, SentenceCut):
                await turn.cut(event)
            elif isinstance(event, Answer):
                await turn.answered(event)
            elif isinstance(event, Routed) and event.decision.escalate:
                await turn.escalate(event)
            elif isinstance(event, TurnDone):
                turns: list[PhaseTimings] = cl.user_session.get("turns")
                turns.append(event.timings)
                final_text = await turn.done(event, turns)
    except asyncio.CancelledError:
        await turn.stopped()
        raise
    finally:
        history.append(ChatMessage("user", question))
        if final_text:
            history.append(ChatMessage("assistant", final_text))


# --- HTTP routes beside Chainlit's own: stored side elements and the comparison page

_routes = APIRouter()
COMPARE_PAGE = Path(__file__).parent / ".chainlit" / "compare.html"
_COMPARE_LIMITS = {"prompt": 20_000, "context": 200_000, "models": 4}


@_routes.get(STORED_ELEMENTS_ROUTE + "/{object_key:path}")
async def stored_element(object_key: str, user=Depends(get_current_user)) -> Response:
    """A saved chat's side element, for its owner only."""
    data_layer = get_data_layer()
    owners = await data_layer.execute_sql(
        'SELECT t."userIdentifier" AS owner FROM elements e JOIN threads t ON t."id" = e."threadId" '
        'WHERE e."objectKey" = :key', {"key": object_key},
    ) if user and isinstance(data_layer, SQLiteDataLayer) else []
    # The element's chat decides who may see it (an upload's key is made before its chat has an owner).
    mine = isinstance(owners, list) and any(row["owner"] == user.identifier for row in owners)
    stored = await asyncio.to_thread(STORAGE.stored, object_key) if mine else None
    if stored is None:
        raise HTTPException(status_code=404, detail="Not found")
    # Uploaded HTML or SVG must never run as a page of this origin.
    mime = stored.mime if stored.mime in _SAFE_MIMES else "text/plain; charset=utf-8"
    return FileResponse(stored.path, media_type=mime, headers=_NO_ACTIVE_CONTENT)


# JSON is the latency chart's figure: the page parses it only when served as JSON.
_SAFE_MIMES = {"text/plain", "text/markdown", "application/pdf", "image/png", "image/jpeg", "application/json"}
_NO_ACTIVE_CONTENT = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


@_routes.get(SIDE_PANEL_SCRIPT)
async def side_panel_script() -> FileResponse:
    return FileResponse(Path(__file__).parent / ".chainlit" / "side-panel.js", media_type="text/javascript")


@_routes.get("/compare")
async def compare_page() -> FileResponse:
    return FileResponse(COMPARE_PAGE, media_type="text/html", headers={"X-Content-Type-Options": "nosniff"})


@_routes.get("/compare/models")
async def compare_models(user=Depends(get_current_user)) -> dict:
    catalog = await load_catalog(SETTINGS, BACKENDS)
    return {
        "models": [{"key": spec.key, "label": spec.label} for spec in catalog.models.values()],
        "slm": catalog.slm.key, "llm": catalog.llm.key, "notices": catalog.notices,
        "max_tokens": SETTINGS.max_tokens, "temperature": SETTINGS.temperature,
    }


@_routes.post("/compare/stream")
async def compare_stream(request: Request, user=Depends(get_current_user)) -> Response:
    """The comparison page's answers, one model after the other, as newline-delimited JSON events."""
    try:
        body = await request.json()
        prompt = str(body.get("prompt", "")).strip()
        context = str(body.get("context") or "")
        wanted = [str(name) for name in body.get("models") or []]
        params = GenerationParams(
            max_tokens=min(max(int(body.get("max_tokens") or SETTINGS.max_tokens), 1), 4096),
            temperature=min(max(float(body.get("temperature", SETTINGS.temperature)), 0.0), 2.0),
        )
    except (ValueError, TypeError, AttributeError):
        return _bad_request("Send JSON: {\"prompt\": \"…\", \"models\": [\"slm\", \"llm\"], \"context\": \"…\"}.")
    if not prompt:
        return _bad_request("Type a prompt first.")
    too_long = [name for name, value in (("prompt", prompt), ("context", context))
                if len(value) > _COMPARE_LIMITS[name]]
    if too_long or len(wanted) > _COMPARE_LIMITS["models"]:
        return _bad_request(f"Too much input: at most {_COMPARE_LIMITS['prompt']:,} characters of prompt, "
                            f"{_COMPARE_LIMITS['context']:,} of context and {_COMPARE_LIMITS['models']} models.")
    catalog = await load_catalog(SETTINGS, BACKENDS)
    try:
        models = resolve_models(wanted, catalog, SETTINGS.model_aliases)
    except ValueError as error:
        return _bad_request(str(error), status_code=404)
    passages = await asyncio.to_thread(context_passages, context, SETTINGS.chunk_size, SETTINGS.chunk_overlap) \
        if context.strip() else []
    messages_for = comparison_messages(prompt, passages, params.max_tokens)

    async def events():
        batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)
        current = ""
        with COLLECTOR.busy():
            async for event in stream_comparison(models, messages_for, params, BACKENDS):
                if isinstance(event, AttemptStart):
                    current = event.model.key
                    yield _ndjson({"event": "start", "key": current, "model": event.model.label})
                elif isinstance(event, TokenEvent):
                    if batch := batcher.add(event.text, time.monotonic()):
                        yield _ndjson({"event": "token", "key": current, "text": batch})
                elif isinstance(event, Answer):
                    if rest := batcher.flush():
                        yield _ndjson({"event": "token", "key": current, "text": rest})
                    yield _ndjson({"event": "done", "key": current,
                                   "result": dataclasses.asdict(row_for(event, SETTINGS.model_prices))})
        yield _ndjson({"event": "end"})

    return StreamingResponse(events(), media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _bad_request(message: str, status_code: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def _ndjson(event: dict) -> bytes:
    return (json.dumps(event) + "\n").encode()


def _serve_before_chainlit_pages(router: APIRouter) -> None:
    # Chainlit answers every unknown GET with its chat page (a catch-all route
    # registered when it is imported), so our routes must come before it.
    http_app.router.routes[0:0] = list(router.routes)


_serve_before_chainlit_pages(_routes)


# Everything loaded so far (models, corpus, indexes) lives as long as the process:
# keep it out of the garbage collector's scans, which otherwise stall every chat.
gc.freeze()
