"""What one chat does: its state, its settings panel, uploads and their commands, and answering.

app.py's Chainlit handlers call these with the server's `Assistant`; the chat's own state
lives in Chainlit's `user_session` (catalog, history, knowledge base, timings of its turns).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import chainlit as cl
from chainlit.data import get_data_layer
from chainlit.input_widget import InputWidget, Select, Slider, Switch
from chainlit.types import ThreadDict

from answering.attempts import Answer, AttemptStart
from answering.grounding import GuardMode
from answering.pipeline import (
    AnswerStyle,
    Notice,
    Retrieved,
    Routed,
    SentenceCut,
    TurnDone,
    TurnRequest,
    embed_upload_ahead,
    run_turn,
)
from answering.router import Mode
from answering.timings import PhaseTimings
from i18n import N_, chat_language, localise, translator
from models.base import ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog, ModelSpec
from models.streaming import close_code_block
from rag.index import KnowledgeBase
from rag.parsing import safe_file_name
from rag.uploads import add_upload_off_loop
from web.application import Assistant
from web.chat_store import ChatDataLayer, conversation_from_steps, restore_uploads
from web.turn_view import CLOSED_NOTE, PARTIAL_METADATA_KEY, UNSAVED_ANSWER_NOTE, TurnView, markdown_text

log = logging.getLogger(__name__)

# The reason app.py's on_chat_end gives when it cancels a chat's answer.
CHAT_CLOSED = "chat closed"
COMMANDS_HELP = N_("Type `/uploads` to list this chat's uploaded files and `/remove <file name>` to remove one.")


def language_of(app: Assistant) -> str | None:
    """The language this chat is served in: LANGUAGE when set, else the browser's (i18n)."""
    return chat_language(app.settings.language)


async def welcome(app: Assistant) -> None:
    catalog = await open_chat(app, {})
    _ = translator(language_of(app)).gettext
    lines = [
        _(
            "Ask me about your team's documents ({count} in the knowledge base); attach files to any message to "
            "add them for this chat only. Answers stream from **{model}**; change models and retrieval in the "
            "settings panel. Compare the models side by side on the [comparison page](/compare)."
        ).format(count=len(app.corpus.documents), model=catalog.slm.label),
        _(COMMANDS_HELP),
        *(f"⚠️ {notice}" for notice in catalog.notices),
        *([f"⚠️ {localise(app.chat_store_problem, language_of(app))}"] if app.chat_store_problem else []),
        *corpus_news(app),
    ]
    await cl.Message(content="\n\n".join(lines)).send()


def corpus_news(app: Assistant) -> list[str]:
    """The handbook's last change while the app runs, and its files that cannot be read."""
    language = language_of(app)
    _ = translator(language).gettext
    change = app.corpus.last_change
    return [
        *(
            [
                _("📚 The knowledge base changed at {time} UTC: {summary}.").format(
                    time=f"{change.at:%H:%M}", summary=change.summary(language)
                )
            ]
            if change
            else []
        ),
        *(
            _(
                "⚠️ **{path}** in the knowledge base could not be read ({reason}); its previous version, if any, "
                "is still used."
            ).format(path=path, reason=localise(reason, language))
            for path, reason in app.corpus.failed.items()
        ),
    ]


async def resume(app: Assistant, thread: ThreadDict) -> None:
    """A chat reopened from the history, or by a page whose app process stopped: its settings,
    conversation and uploads come back, and an answer that was cut off is marked so."""
    language = language_of(app)
    _ = translator(language).gettext
    await mark_cut_answers(thread, language)
    chosen = cl.user_session.get("chat_settings") or {}
    catalog = await open_chat(app, chosen)
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    cl.user_session.get("history").extend(conversation_from_steps(thread.get("steps") or []))
    restored = await restore_uploads(
        knowledge, thread, app.storage, app.upload_reader, _max_upload_bytes(app), language
    )
    missing = [model for model in (chosen.get("slm"), chosen.get("llm")) if model and not catalog.get(model)]
    if missing:
        await cl.Message(
            content=_("⚠️ {models} is no longer available; using {slm} and {llm}.").format(
                models=", ".join(missing), slm=catalog.slm.label, llm=catalog.llm.label
            )
        ).send()
    if restored.refused:
        await cl.Message(content=_("⚠️ Not restored: {files}").format(files="; ".join(restored.refused))).send()


async def mark_cut_answers(thread: ThreadDict, language: str | None = None) -> None:
    """Answers saved while streaming (`TurnView`) whose process died before finishing them,
    and a last question whose answer never reached the store: marked cut, in the store and
    in `thread`, which Chainlit shows the page next (in `language`)."""
    _ = translator(language).gettext
    data_layer = get_data_layer()
    steps = thread.get("steps") or []
    messages = [step for step in steps if step.get("type") in ("user_message", "assistant_message")]
    if messages and messages[-1].get("type") == "user_message":
        note = cl.Message(content=_(UNSAVED_ANSWER_NOTE)).to_dict()
        note["threadId"] = thread["id"]
        thread["steps"] = steps = [*steps, note]
        if data_layer is not None:
            await data_layer.create_step(note)
    for step in steps:
        metadata = step.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata or "{}")
        if not metadata.get(PARTIAL_METADATA_KEY):
            continue
        step["metadata"] = {key: value for key, value in metadata.items() if key != PARTIAL_METADATA_KEY}
        step["output"] = close_code_block(step.get("output") or "") + "\n\n" + _(CLOSED_NOTE)
        step["streaming"] = False
        if data_layer is not None:
            await data_layer.update_step(step)


async def open_chat(app: Assistant, chosen: dict[str, Any]) -> Catalog:
    """The chat's state, and the settings panel showing `chosen` (a resumed chat's settings)."""
    catalog = await app.catalog()
    cl.user_session.set("catalog", catalog)
    cl.user_session.set("history", [])
    cl.user_session.set("turns", [])
    chunk_size = int(chosen.get("chunk_size", app.settings.chunk_size))
    cl.user_session.set("knowledge", KnowledgeBase(app.corpus, chunk_size, app.settings.chunk_overlap))
    await cl.ChatSettings(settings_panel(app, catalog, chosen, language_of(app))).send()
    return catalog


def settings_panel(
    app: Assistant, catalog: Catalog, chosen: dict[str, Any], language: str | None = None
) -> list[InputWidget]:
    settings = app.settings
    _ = translator(language).gettext
    items = {spec.label: spec.key for spec in catalog.models.values()}

    def model(role: str, default: ModelSpec) -> str:
        return str(chosen[role]) if catalog.get(chosen.get(role)) else default.key

    return [
        Select(id="slm", label=_("Small model (answers first)"), items=items, initial_value=model("slm", catalog.slm)),
        Select(id="llm", label=_("Large model (escalation)"), items=items, initial_value=model("llm", catalog.llm)),
        Slider(
            id="temperature",
            label=_("Temperature"),
            initial=chosen.get("temperature", settings.temperature),
            min=0,
            max=2,
            step=0.05,
        ),
        Slider(
            id="max_tokens",
            label=_("Max tokens"),
            initial=chosen.get("max_tokens", settings.max_tokens),
            min=16,
            max=8192,  # MAX_TOKENS's own bound
            step=16,
        ),
        Select(
            id="router_mode",
            label=_("Escalation to the large model"),
            values=[mode.value for mode in Mode],
            initial_value=chosen.get("router_mode") or router_mode(app, catalog.slm, catalog.llm).value,
        ),
        Select(
            id="retrieval_mode",
            label=_("Retrieval"),
            values=["bm25", "lexical", "hybrid"],
            initial_value=chosen.get("retrieval_mode", settings.retrieval_mode),
        ),
        Slider(
            id="top_k",
            label=_("Passages per answer (top-k)"),
            initial=chosen.get("top_k", settings.top_k),
            min=1,
            max=20,
            step=1,
        ),
        Slider(
            id="chunk_size",
            label=_("Chunk size (characters)"),
            initial=chosen.get("chunk_size", settings.chunk_size),
            min=200,
            max=max(3000, settings.chunk_size),
            step=100,
        ),
        Select(
            id="answer_style",
            label=_("How the models answer"),
            items={
                _("As configured for each model (ANSWER_STYLES)"): "configured",
                _("Choose the passage sentence that answers (copy)"): "copy",
                _("Write the answer (compose)"): "compose",
                _("Write, and choose a sentence when what was written is cut (auto)"): "auto",
            },
            initial_value=chosen.get("answer_style", "configured"),
        ),
        Select(
            id="grounding_guard",
            label=_("Sentences the documents do not support"),
            items={
                _("Cut them and stop the model"): "stop",
                _("Strike them through"): "mark",
                _("Show them"): "off",
            },
            initial_value=chosen.get("grounding_guard", settings.grounding_guard),
        ),
        Switch(
            id="show_drafts",
            label=_(
                "Show drafts in the reply (the small and large model's attempts, cut sentences struck through, "
                "before the answer)"
            ),
            initial=bool(chosen.get("show_drafts", False)),
        ),
        Switch(
            id="general_knowledge",
            label=_(
                "General-knowledge answers (when the documents do not cover a question; labelled as not from the "
                "documents)"
            ),
            initial=bool(chosen.get("general_knowledge", False)),
        ),
        Switch(
            id="answer_in_language",
            label=_(
                "Answer in my language (server models; the answer's numbers, names and settings are checked "
                "against the documents, and it is marked as a translation)"
            ),
            initial=bool(chosen.get("answer_in_language", False)),
        ),
    ]


# Embedding one passage for the hybrid mode, on one core (rag/embedding.py).
EMBEDDING_S_PER_PASSAGE = 0.5


async def save_chat_settings() -> None:
    """Keep the chat's settings in its saved chat as they change. Chainlit saves them when the
    page disconnects, which a process that dies never sees; its chat must reopen with them
    (the settings of a chat's first message are saved with it: `ChatDataLayer.update_thread`)."""
    session = cl.context.session
    data_layer = get_data_layer()
    if data_layer is not None and session.has_first_interaction:
        await data_layer.update_thread(session.thread_id, metadata={"chat_settings": session.chat_settings})


async def settings_changed(app: Assistant, chosen: dict[str, Any]) -> None:
    await save_chat_settings()
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    if "chunk_size" in chosen:
        knowledge.rechunk(int(chosen["chunk_size"]), app.settings.chunk_overlap)
    # Chunking a large corpus takes a while: off the event loop.
    if pending := await asyncio.to_thread(knowledge.unembedded, chosen.get("retrieval_mode", "")):
        minutes = max(1, round(pending * EMBEDDING_S_PER_PASSAGE / 60))
        _ = translator(language_of(app)).gettext
        await cl.Message(
            content=_(
                "Hybrid retrieval first embeds the meaning of every passage: your next question waits while "
                "{passages} passages are embedded (about {minutes} min on one CPU core). This happens once; later "
                "questions, and chats in other retrieval modes, do not wait for it."
            ).format(passages=pending, minutes=minutes)
        ).send()


async def on_message(app: Assistant, message: cl.Message) -> None:
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    text = message.content.strip()
    files = [element for element in message.elements or [] if getattr(element, "path", None)]
    with app.collector.busy():
        if files:
            await add_uploads(app, knowledge, files)
        if text == "/uploads" or text == "/remove" or text.startswith("/remove "):
            await manage_uploads(knowledge, text, language_of(app))
        elif text:
            await answer(app, knowledge, text)


def _max_upload_bytes(app: Assistant) -> int:
    return int(app.settings.upload_max_mb * 1024 * 1024)


async def add_uploads(app: Assistant, knowledge: KnowledgeBase, files: list[Any]) -> None:
    limit = app.settings.upload_max_files
    accepted, refused = files[:limit], files[limit:]
    translations = translator(language_of(app))
    _, ngettext = translations.gettext, translations.ngettext
    lines = []
    added = 0
    for element in accepted:
        outcome = await add_upload_off_loop(
            knowledge, Path(element.path), element.name or "upload", _max_upload_bytes(app), app.upload_reader
        )
        added += outcome.added
        if outcome.added:
            lines.append(
                ngettext(
                    "📄 Added **{file}** ({title}): {count} chunk in {seconds} s.",
                    "📄 Added **{file}** ({title}): {count} chunks in {seconds} s.",
                    outcome.chunks,
                ).format(
                    file=markdown_text(outcome.file_name),
                    title=markdown_text(outcome.title),
                    count=outcome.chunks,
                    seconds=f"{outcome.seconds:.2f}",
                )
            )
        else:
            lines.append(
                _("⚠️ **{file}** was not added: {reason}").format(
                    file=markdown_text(outcome.file_name), reason=localise(outcome.refusal, language_of(app))
                )
            )
    for element in refused:
        lines.append(
            _("⚠️ **{file}** was not added: at most {limit} files per message.").format(
                file=markdown_text(safe_file_name(element.name or "upload")), limit=limit
            )
        )
    await cl.Message(content="\n\n".join(lines)).send()
    language = language_of(app)
    if added and language and not language.lower().startswith("en"):
        # A chat in another language will likely ask in another script, which ranks every sentence by meaning.
        _embed_uploads_ahead(app, knowledge)


# Uploads' sentences being embedded in the background (a reference keeps each task alive).
_EMBEDDING: set[asyncio.Task[int]] = set()


def _embed_uploads_ahead(app: Assistant, knowledge: KnowledgeBase) -> None:
    """The chat's passages embedded off the loop, so that a question in another script does not
    wait for a new upload's sentences (answering.pipeline.embed_upload_ahead)."""

    def embed() -> int:
        return embed_upload_ahead(app.turn_config, knowledge.upload_chunks())

    task = asyncio.get_running_loop().create_task(asyncio.to_thread(embed), name="embed-uploads")
    _EMBEDDING.add(task)
    task.add_done_callback(_EMBEDDING.discard)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("Embedding a chat's uploads ahead failed: %s", error)


async def manage_uploads(knowledge: KnowledgeBase, command: str, language: str | None = None) -> None:
    _ = translator(language).gettext
    if command.startswith("/remove"):
        name = command.removeprefix("/remove").strip()
        removed = await asyncio.to_thread(knowledge.remove, name) if name else None
        if not name:
            reply = _("Say which file to remove: `/remove <file name>`.")
        elif removed:
            reply = _("Removed **{file}**.").format(file=markdown_text(removed.source))
        else:
            reply = _("No uploaded file is called **{file}**.").format(file=markdown_text(name))
    elif knowledge.uploads:
        reply = _("Files uploaded in this chat:\n{files}").format(
            files="\n".join(
                f"- **{markdown_text(document.source)}** ({markdown_text(document.title)})"
                for document in knowledge.uploads.values()
            )
        )
    else:
        reply = _("No files uploaded in this chat yet. Attach one to a message to add it.")
    await cl.Message(content=f"{reply}\n\n{_(COMMANDS_HELP)}").send()


def turn_request(app: Assistant, knowledge: KnowledgeBase, question: str) -> TurnRequest:
    """The question as the pipeline's request, with this chat's choices from its settings panel."""
    settings = app.settings
    catalog: Catalog = cl.user_session.get("catalog")
    chosen = cl.user_session.get("chat_settings") or {}
    history: list[ChatMessage] = cl.user_session.get("history")
    slm = catalog.get(chosen.get("slm")) or catalog.slm
    llm = catalog.get(chosen.get("llm")) or catalog.llm
    return TurnRequest(
        question=question,
        knowledge=knowledge,
        slm=slm,
        llm=llm,
        fallback=catalog.embedded_fallback,
        history=tuple(history),
        params=GenerationParams(
            max_tokens=int(chosen.get("max_tokens", settings.max_tokens)),
            temperature=float(chosen.get("temperature", settings.temperature)),
        ),
        router_mode=Mode(chosen["router_mode"]) if chosen.get("router_mode") else router_mode(app, slm, llm),
        retrieval_mode=chosen.get("retrieval_mode", settings.retrieval_mode),
        top_k=int(chosen.get("top_k", settings.top_k)),
        guard=GuardMode(chosen.get("grounding_guard", settings.grounding_guard)),
        general_knowledge=bool(chosen.get("general_knowledge", False)),
        answer_style=_answer_style(chosen.get("answer_style")),
        language=language_of(app),
        answer_in_language=bool(chosen.get("answer_in_language", False)),
    )


def router_mode(app: Assistant, slm: ModelSpec, llm: ModelSpec) -> Mode:
    """ROUTER_MODE, else the mode measured for the pair (models/routing.json)."""
    return Mode(app.settings.router_mode) if app.settings.router_mode else app.turn_config.router_mode_for(slm, llm)


def _answer_style(chosen: object) -> AnswerStyle | None:
    return chosen if chosen in ("compose", "copy", "auto") else None


async def answer(app: Assistant, knowledge: KnowledgeBase, question: str) -> None:
    """One turn of the pipeline, shown as it happens."""
    request = turn_request(app, knowledge, question)
    history: list[ChatMessage] = cl.user_session.get("history")
    chosen = cl.user_session.get("chat_settings") or {}
    language = language_of(app)
    _ = translator(language).gettext
    turn = TurnView(app.settings, request.retrieval_mode, bool(chosen.get("show_drafts", False)), language)
    final_text = ""
    this_answer = asyncio.current_task()
    if this_answer is not None:
        app.answering.add(this_answer)
    try:
        async for event in run_turn(request, app.backends, app.turn_config):
            if isinstance(event, Retrieved):
                turn.retrieved(event)
            elif isinstance(event, Notice):
                await turn.notice(event)
            elif isinstance(event, AttemptStart) and event.replacing:
                await turn.restart(
                    _("⚠️ {problem}\n\nAnswering with the embedded model **{model}** instead.").format(
                        problem=localise(event.replacing, language), model=event.model.label
                    )
                )
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
        # The turn ends (the page's stop button goes) once its messages are in the store: a
        # process that dies after that loses nothing its user saw answered.
        if isinstance(data_layer := get_data_layer(), ChatDataLayer):
            await data_layer.saved(cl.context.session.thread_id)
    except asyncio.CancelledError as cancelled:
        await turn.stopped(chat_closed=CHAT_CLOSED in cancelled.args)
        raise
    finally:
        app.answering.discard(this_answer)
        history.append(ChatMessage("user", question))
        if final_text:
            history.append(ChatMessage("assistant", final_text))
