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
from typing import ClassVar

import chainlit as cl
from chainlit.auth import get_current_user
from chainlit.chat_context import chat_contexts
from chainlit.config import config as chainlit_config
from chainlit.data import get_data_layer
from chainlit.element import Element, ElementType
from chainlit.input_widget import Select, Slider, Switch
from chainlit.session import WebsocketSession
import chainlit.server as chainlit_server
from chainlit.server import app as http_app
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from answering.attempts import Answer, AttemptStart
from models.factory import load_catalog, make_backends
from models.charts import latency_chart
from models.costs import LABELS, PhaseTimings, price_for
from answering.context import Excerpt, whole_chunks
from answering.grounding import GuardMode
from answering.pipeline import (
    FinalAnswer, Notice, Retrieved, Routed, SentenceCut, TurnConfig, TurnDone, TurnRequest, run_turn,
)
from answering.router import Mode
from models.base import ChatMessage, GenerationParams, TokenEvent, Usage
from models.catalog import Catalog, ModelSpec
from answering.comparison import comparison_messages, context_passages, resolve_models, row_for, stream_comparison
from models.settings import Settings
from models.streaming import TokenBatcher, close_code_block
from models.loop_health import IdleCollector, keep_timer_heap_clean
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import corpus_documents
from rag.parsing import SUPPORTED_TYPES, safe_file_name
from rag.uploads import UploadReader, add_upload_off_loop
from rag.accounts import UserListError, load_users, verify_password
from rag.persistence import (
    ANSWER_METADATA_KEY, ChatStoreError, LocalFileStorage, SQLiteDataLayer, conversation_from_steps, create_schema, ensure_auth_secret,
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

# A side element shows only where its exact name appears in the message text.
TIMINGS_ELEMENT = "Latency breakdown"
CHART_ELEMENT = "Session latency chart"
DRAFT_ELEMENT = "Small model's draft"


class PlotlyChart(Element):
    """A Plotly chart sent as its plotly.js JSON, drawn by the page as `cl.Plotly`'s is.

    `cl.Plotly` takes only a plotly.py figure and validates it again; see models/charts.py
    for what that cost under load. Not re-decorated as a dataclass: Chainlit loads app.py
    outside `sys.modules`, where dataclasses cannot resolve its annotations.
    """

    type: ClassVar[ElementType] = "plotly"

    def __post_init__(self) -> None:
        self.mime = "application/json"
        self.size = self.size or "medium"
        super().__post_init__()


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
        Switch(id="general_knowledge", label="Answer from general knowledge when the documents do not cover "
                                             "a question (labelled as such)",
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
            lines.append(f"📄 Added **{_markdown_text(outcome.file_name)}** ({_markdown_text(outcome.title)}): "
                         f"{chunks} in {outcome.seconds:.2f} s.")
        else:
            lines.append(f"⚠️ **{_markdown_text(outcome.file_name)}** was not added: {outcome.refusal}")
    for element in refused:
        lines.append(f"⚠️ **{_markdown_text(safe_file_name(element.name or 'upload'))}** was not added: at most "
                     f"{SETTINGS.upload_max_files} files per message.")
    await cl.Message(content="\n\n".join(lines)).send()


async def _manage_uploads(knowledge: KnowledgeBase, command: str) -> None:
    if command.startswith("/remove"):
        name = command.removeprefix("/remove").strip()
        removed = await asyncio.to_thread(knowledge.remove, name) if name else None
        if not name:
            reply = "Say which file to remove: `/remove <file name>`."
        else:
            reply = (f"Removed **{_markdown_text(removed.source)}**." if removed
                     else f"No uploaded file is called **{_markdown_text(name)}**.")
    elif knowledge.uploads:
        reply = "Files uploaded in this chat:\n" + "\n".join(
            f"- **{_markdown_text(document.source)}** ({_markdown_text(document.title)})" for document in knowledge.uploads.values()
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
    turn = _TurnView(request.retrieval_mode)
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


class _TurnView:
    """The messages of one turn in the chat: the small model's answer, and the large one's if escalated."""

    def __init__(self, retrieval_mode: str) -> None:
        self.retrieval_mode = retrieval_mode
        self.excerpts: list[Excerpt] = []
        self.reply = cl.Message(content="")
        self.batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)
        self.answers: dict[str, Answer] = {}  # message id -> the answer streamed into it
        self.draft: Answer | None = None
        self.escalated = False

    def retrieved(self, retrieved: Retrieved) -> None:
        # Out of scope, nothing was given to a model: the nearest passages are shown whole.
        self.excerpts = retrieved.excerpts or whole_chunks(retrieved.hits)

    async def notice(self, notice: Notice) -> None:
        if notice.kind == "general_knowledge":
            await self.reply.stream_token(f"*{notice.text}*\n\n")

    async def restart(self, notice: str) -> None:
        """A new message for a new attempt, after a notice saying why."""
        await cl.Message(content=notice).send()
        self.reply = cl.Message(content="")
        self.batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)

    async def add(self, text: str) -> None:
        if batch := self.batcher.add(text, time.monotonic()):
            await self.reply.stream_token(batch)

    async def cut(self, event: SentenceCut) -> None:
        """Take a sentence back from the page at once: struck through, with the reason."""
        await self.reply.stream_token(self.batcher.flush())
        sentence = event.cut.text.strip()
        at = self.reply.content.rfind(sentence)
        if at < 0:
            return
        self.reply.content = (self.reply.content[:at] + _struck(sentence) + self.reply.content[at + len(sentence):])
        if event.stopped:
            self.reply.content = self.reply.content[: at + len(_struck(sentence))]
        await self.reply.update()

    async def answered(self, answer: Answer) -> None:
        await self.reply.stream_token(self.batcher.flush())
        self.answers[self.reply.id] = answer
        if answer.error:
            if answer.text:  # keep the partial answer, marked
                await self._close(self.reply, answer, [f"*{answer.model.label}*"], [])
            elif answer.model.backend == "embedded" and not self.escalated:
                # Nothing was streamed and no other model follows: say what happened
                # (a failed large model is reported when the turn ends).
                await cl.Message(content=f"⚠️ {answer.error}").send()
            self.reply = cl.Message(content="")
            self.batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)

    async def escalate(self, routed: Routed) -> None:
        """Close the small model's answer as a draft and open one for the large model."""
        self.escalated = True
        self.draft = self.answers.get(self.reply.id)
        if self.reply.content:
            footer = [f"*{self.draft.model.label}* · draft"] if self.draft else []
            await self._close(self.reply, self.draft, footer, self._source_elements())
        await self.restart(f"↗️ Escalated to **{routed.llm.label}** ({routed.decision.mode.value}): "
                           f"{routed.decision.summary()}.")

    async def done(self, done: TurnDone, turns: list[PhaseTimings]) -> str:
        """Close the turn's last message with its sources, timings and chart; returns the answer kept."""
        llm_ok = done.llm_answer is not None and done.llm_answer.error is None
        if done.decision.escalate and done.llm_answer and done.llm_answer.error:
            outcome = ("The small model's answer above stands." if done.slm_answer and done.slm_answer.text
                       else "Try again, or pick another model or escalation mode in the settings.")
            await cl.Message(content=f"⚠️ The large model failed: {done.llm_answer.error}. {outcome}").send()
        answer = self.answers.get(self.reply.id)
        final = done.final
        footer = [f"*{answer.model.label}*" if answer else "", f"{TIMINGS_ELEMENT} · {CHART_ELEMENT}"]
        if final.source in ("quotes", "out_of_scope", "none"):
            # No model answer stands: what the user reads is the notice and the passages' own words.
            self.reply.content = _fallback_markdown(final, self.reply.content, answer)
            answer = None
        elements = [
            *self._source_elements(),
            cl.Text(name=TIMINGS_ELEMENT, content=turn_markdown(done), display="side"),
            PlotlyChart(name=CHART_ELEMENT, content=json.dumps(latency_chart(turns)), display="side"),
        ]
        if self.draft and llm_ok and done.llm_answer and done.llm_answer.text:
            footer.append(DRAFT_ELEMENT)
            elements.append(cl.Text(name=DRAFT_ELEMENT, content=self.draft.text, display="side"))
        if final.text:
            self.reply.metadata = {ANSWER_METADATA_KEY: final.text}  # the resumed chat's history
        await self._close(self.reply, answer, [" · ".join(part for part in footer if part)], elements)
        return final.text

    def _source_elements(self) -> list:
        return [
            cl.Text(name=_source_name(excerpt.number), content=source_markdown(excerpt, self.retrieval_mode),
                    display="side")
            for excerpt in self.excerpts
        ]

    async def stopped(self) -> None:
        await self.reply.stream_token(self.batcher.flush())
        if self.reply.content:
            self.reply.content = close_code_block(self.reply.content)
            self.reply.content += "\n\n*Stopped: the answer above is partial.*"
            await self.reply.update()

    async def _close(self, reply: cl.Message, answer: Answer | None, footer: list[str], elements: list) -> None:
        if answer and answer.checked and answer.checked.cuts and not answer.error:
            reply.content = _checked_markdown(answer)
        reply.content = close_code_block(reply.content)
        if answer and answer.error and answer.text:
            reply.content += f"\n\n*⚠️ Cut off: {answer.error.what.rstrip('.')}. The answer above is partial.*"
        elif answer and answer.finish_reason == "length":
            reply.content += "\n\n*The answer reached the max-tokens limit.*"
        if answer and answer.checked and answer.checked.cuts:
            reply.content += "\n\n" + _cut_line(answer)
        if self.excerpts:
            reply.content += "\n\nSources: " + " ".join(_source_name(e.number) for e in self.excerpts)
        reply.content += "\n\n" + "\n\n".join(footer)
        reply.elements = elements
        await reply.send()


def _struck(sentence: str) -> str:
    return " ".join(f"~~{line.strip()}~~" for line in sentence.splitlines() if line.strip())


def _checked_markdown(answer: Answer) -> str:
    """The answer as checked: what stands, and what was cut, struck through."""
    assert answer.checked is not None
    return "".join(part if isinstance(part, str) else _struck(part.text) + " " for part in answer.checked.parts)


def _cut_line(answer: Answer) -> str:
    assert answer.checked is not None
    cuts = answer.checked.cuts
    what = "1 sentence" if len(cuts) == 1 else f"{len(cuts)} sentences"
    stopped = " and the model was stopped" if answer.finish_reason == "guard" else ""
    return f"*✂️ Cut {what} the documents do not support{stopped}: {cuts[0].reason}.*"


def _fallback_markdown(final: FinalAnswer, streamed: str, answer: Answer | None) -> str:
    if final.source == "out_of_scope":
        return (f"{final.text} Here are the nearest passages; to get an answer from the model's general "
                "knowledge anyway, turn on *General-knowledge answers* in the settings.")
    cut = ("\n\n" + _cut_line(answer)) if answer and answer.checked and answer.checked.cuts else ""
    shown = (_checked_markdown(answer) if answer and answer.checked else streamed).strip()
    shown = f"{shown}{cut}\n\n" if shown else ""
    if final.source == "quotes":
        return (f"{shown}**No model answer could be checked against the documents.** "
                f"The closest passages say:\n\n{final.text}")
    return f"{shown}**No model answer could be checked against the documents**, and no passage matched it."


def _markdown_text(text: str) -> str:
    """A file name or title shown literally: `**`, `[text](url)` or `<b>` in it must not format the chat."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)


def _source_name(number: int) -> str:
    # The same text as the model's citation markers, so that "[2]" in the answer opens passage 2.
    return f"[{number}]"


def source_markdown(excerpt: Excerpt, mode: str) -> str:
    """A passage as the model read it, then the whole chunk it was taken from."""
    hit = excerpt.hit
    chunk = hit.chunk
    lines = [
        f"**{excerpt.label}**",
        "",
        f"Document: {chunk.document.title} (`{chunk.document.source}`)  ",
        f"Section: {chunk.heading or '–'}  ",
        f"Score: {hit.score:.2f} ({mode}, rank {hit.rank})",
        "",
    ]
    if not excerpt.whole:
        lines += ["**What the model read:**", "", *_quoted(excerpt.text), "", "**The whole chunk:**", ""]
    return "\n".join([*lines, *_quoted(chunk.text)])


def _quoted(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def turn_markdown(done: TurnDone) -> str:
    def seconds(value: float) -> str:
        return f"{value:.2f} s" if value else "–"

    lines = ["| Phase | Time |", "|---|---|"]
    lines += [f"| {LABELS[name]} | {seconds(value)} |" for name, value in done.timings.phases().items()]
    lines.append(f"| **Total** | **{done.timings.total_s:.2f} s** |")
    lines += ["", "| Model | Tokens in / out | Tokens/s | Simulated cost |", "|---|---|---|---|"]
    for answer in (done.slm_answer, done.llm_answer):
        if answer is None:
            continue
        price = price_for(answer.model.model, SETTINGS.model_prices)
        cost = f"${price.cost_usd(answer.usage):.6f}" if price and answer.usage else "–"
        rate = f"{answer.tokens_per_s:.1f}" if answer.tokens_per_s else "–"
        lines.append(f"| {answer.model.label} | {_token_counts(answer.usage)} | {rate} | {cost} |")
    verdict = "escalated: " if done.decision.escalate else "kept the small model's answer: "
    lines += ["", f"Router ({done.decision.mode.value}): {verdict}{done.decision.summary()}."]
    return "\n".join(lines)


def _token_counts(usage: Usage | None) -> str:
    if usage is None:
        return "–"
    counts = f"{usage.prompt_tokens} / {usage.completion_tokens}"
    # Some servers report no usage; then the counts are our own estimate.
    return f"~{counts} (estimated)" if usage.estimated else counts


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
