"""Chainlit glue: chat settings, uploads, retrieval, streaming the answer, and its sources and cost.

The logic lives in `models/` and `rag/`; this file only moves events to the browser.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import chainlit as cl
from chainlit.config import config as chainlit_config
from chainlit.input_widget import Select, Slider

from models.answering import Answer, AttemptStart, load_catalog, make_backends, stream_answer
from models.base import ChatMessage, GenerationParams, TokenEvent, Usage
from models.catalog import Catalog, ModelSpec
from models.settings import Settings
from models.streaming import TokenBatcher, close_code_block
from rag.documents import SEED_DOCUMENTS, Hit
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import load_folder
from rag.parsing import SUPPORTED_TYPES, safe_file_name
from rag.prompt import build_messages, fit_passages, passage_label, retrieval_query
from rag.uploads import add_upload

SETTINGS = Settings()
# Shared by every session, so that each embedded model is loaded once per process.
BACKENDS = make_backends(SETTINGS)
# The built-in demo sentences and the on-disk handbook; uploads are per session.
CORPUS = SharedCorpus([*SEED_DOCUMENTS, *load_folder(SETTINGS.corpus_dir)])

# Upload limits come from the settings object, not from a second copy in config.toml.
_uploads = chainlit_config.features.spontaneous_file_upload
_uploads.enabled = True
_uploads.accept = list(SUPPORTED_TYPES)
_uploads.max_size_mb = math.ceil(SETTINGS.upload_max_mb)
_uploads.max_files = SETTINGS.upload_max_files

# A side element shows only where its exact name appears in the message text.
TIMINGS_ELEMENT = "Latency breakdown"
COMMANDS_HELP = "Type `/uploads` to list this chat's uploaded files and `/remove <file name>` to remove one."


@cl.on_chat_start
async def start() -> None:
    catalog = await load_catalog(SETTINGS, BACKENDS)
    cl.user_session.set("catalog", catalog)
    cl.user_session.set("history", [])
    cl.user_session.set("knowledge", KnowledgeBase(CORPUS, SETTINGS.chunk_size, SETTINGS.chunk_overlap))
    await cl.ChatSettings(_settings_widgets(catalog)).send()
    lines = [
        f"Ask me about your team's documents ({len(CORPUS.documents)} in the knowledge base); "
        "attach files to any message to add them for this chat only. Answers stream from "
        f"**{catalog.slm.label}**; change models and retrieval in the settings panel.",
        COMMANDS_HELP,
        *(f"⚠️ {notice}" for notice in catalog.notices),
    ]
    await cl.Message(content="\n\n".join(lines)).send()


def _settings_widgets(catalog: Catalog) -> list:
    items = {spec.label: spec.key for spec in catalog.models.values()}
    return [
        Select(id="slm", label="Small model (answers first)", items=items, initial_value=catalog.slm.key),
        Select(id="llm", label="Large model (escalation)", items=items, initial_value=catalog.llm.key),
        Slider(id="temperature", label="Temperature", initial=SETTINGS.temperature, min=0, max=2, step=0.05),
        Slider(id="max_tokens", label="Max tokens", initial=SETTINGS.max_tokens, min=16,
               max=max(4096, SETTINGS.max_tokens), step=16),
        Select(id="retrieval_mode", label="Retrieval", values=["bm25", "lexical"],
               initial_value=SETTINGS.retrieval_mode),
        Slider(id="top_k", label="Passages per answer (top-k)", initial=SETTINGS.top_k, min=1, max=20, step=1),
        Slider(id="chunk_size", label="Chunk size (characters)", initial=SETTINGS.chunk_size,
               min=200, max=max(3000, SETTINGS.chunk_size), step=100),
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
    cl.chat_context.clear()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    knowledge: KnowledgeBase = cl.user_session.get("knowledge")
    text = message.content.strip()
    files = [element for element in message.elements or [] if getattr(element, "path", None)]
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
        # Parsing and chunking are blocking: keep them off the shared event loop.
        outcome = await asyncio.to_thread(add_upload, knowledge, Path(element.path), element.name or "upload", max_bytes)
        if outcome.added:
            lines.append(f"📄 Added **{outcome.file_name}** ({outcome.title}): {outcome.chunks} chunks "
                         f"in {outcome.seconds:.2f} s.")
        else:
            lines.append(f"⚠️ **{outcome.file_name}** was not added: {outcome.refusal}")
    for element in refused:
        lines.append(f"⚠️ **{safe_file_name(element.name or 'upload')}** was not added: at most "
                     f"{SETTINGS.upload_max_files} files per message.")
    await cl.Message(content="\n\n".join(lines)).send()


async def _manage_uploads(knowledge: KnowledgeBase, command: str) -> None:
    if command.startswith("/remove"):
        name = command.removeprefix("/remove").strip()
        removed = await asyncio.to_thread(knowledge.remove, name) if name else None
        if not name:
            reply = "Say which file to remove: `/remove <file name>`."
        else:
            reply = f"Removed **{removed.source}**." if removed else f"No uploaded file is called **{name}**."
    elif knowledge.uploads:
        reply = "Files uploaded in this chat:\n" + "\n".join(
            f"- **{document.source}** ({document.title})" for document in knowledge.uploads.values()
        )
    else:
        reply = "No files uploaded in this chat yet. Attach one to a message to add it."
    await cl.Message(content=f"{reply}\n\n{COMMANDS_HELP}").send()


async def _answer(knowledge: KnowledgeBase, question: str) -> None:
    catalog: Catalog = cl.user_session.get("catalog")
    chosen = cl.user_session.get("chat_settings") or {}
    model = catalog.get(chosen.get("slm")) or catalog.slm
    params = GenerationParams(
        max_tokens=int(chosen.get("max_tokens", SETTINGS.max_tokens)),
        temperature=float(chosen.get("temperature", SETTINGS.temperature)),
    )
    mode = chosen.get("retrieval_mode", SETTINGS.retrieval_mode)
    history: list[ChatMessage] = cl.user_session.get("history")

    started = time.perf_counter()
    query = retrieval_query(question, history)
    hits = await asyncio.to_thread(knowledge.search, query, mode, int(chosen.get("top_k", SETTINGS.top_k)))
    retrieval_s = time.perf_counter() - started
    best = hits[0].score if hits else 0.0
    # Fit the passages to the smaller window, so that the fallback model can take them too.
    window = min(model.context_window, catalog.embedded_fallback.context_window)
    passages = fit_passages([hit.chunk for hit in hits], question, window, params.max_tokens)
    hits = hits[: len(passages)]

    def messages_for(spec: ModelSpec) -> list[ChatMessage]:
        return build_messages(question, history, passages, spec.context_window, params.max_tokens)

    reply = cl.Message(content="")
    batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)
    final_text = ""
    try:
        if best < SETTINGS.min_retrieval_score:
            await reply.stream_token(
                f"*The documents do not seem to cover this question (best match score {best:.2f}, "
                f"threshold {SETTINGS.min_retrieval_score:.2f}); treat this answer with care.*\n\n"
            )
        async for event in stream_answer(model, messages_for, params, BACKENDS, catalog.embedded_fallback):
            if isinstance(event, AttemptStart):
                if event.replacing:
                    await cl.Message(
                        content=f"⚠️ {event.replacing}\n\nAnswering with the embedded model "
                        f"**{event.model.label}** instead."
                    ).send()
                    reply = cl.Message(content="")
                batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)
            elif isinstance(event, TokenEvent):
                if batch := batcher.add(event.text, time.monotonic()):
                    await reply.stream_token(batch)
            elif isinstance(event, Answer):
                await reply.stream_token(batcher.flush())
                await _finish(reply, event, hits, mode, retrieval_s)
                if event.error is None:
                    final_text = event.text
    except asyncio.CancelledError:
        await reply.stream_token(batcher.flush())
        if reply.content:
            reply.content = close_code_block(reply.content)
            reply.content += "\n\n*Stopped: the answer above is partial.*"
            await reply.update()
        raise
    finally:
        history.append(ChatMessage("user", question))
        if final_text:
            history.append(ChatMessage("assistant", final_text))


async def _finish(reply: cl.Message, answer: Answer, hits: list[Hit], mode: str, retrieval_s: float) -> None:
    if answer.error and not answer.text:
        # Nothing was streamed. A failed server model is followed by the embedded
        # model with its own notice; a failed embedded model has nobody to follow it.
        if answer.model.backend == "embedded":
            await cl.Message(content=f"⚠️ {answer.error}").send()
        return
    reply.content = close_code_block(reply.content)
    if answer.error:
        reply.content += f"\n\n*⚠️ Cut off: {answer.error.what}. The answer above is partial.*"
    elif answer.finish_reason == "length":
        reply.content += "\n\n*The answer reached the max-tokens limit.*"
    sources = " ".join(_source_name(number) for number in range(1, len(hits) + 1))
    if sources:
        reply.content += f"\n\nSources: {sources}"
    reply.content += f"\n\n*{answer.model.label}* · {TIMINGS_ELEMENT}"
    reply.elements = [
        *(cl.Text(name=_source_name(hit.rank), content=source_markdown(hit, mode), display="side") for hit in hits),
        cl.Text(name=TIMINGS_ELEMENT, content=timings_markdown(answer, retrieval_s), display="side"),
    ]
    await reply.send()


def _source_name(number: int) -> str:
    # The same text as the model's citation markers, so that "[2]" in the answer opens passage 2.
    return f"[{number}]"


def source_markdown(hit: Hit, mode: str) -> str:
    chunk = hit.chunk
    return "\n".join([
        f"**{passage_label(chunk)}**",
        "",
        f"Document: {chunk.document.title} (`{chunk.document.source}`)  ",
        f"Section: {chunk.heading or '–'}  ",
        f"Score: {hit.score:.2f} ({mode}, rank {hit.rank})",
        "",
        *(f"> {line}" if line else ">" for line in chunk.text.splitlines()),
    ])


def timings_markdown(answer: Answer, retrieval_s: float) -> str:
    def seconds(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f} s"

    rate = answer.tokens_per_s
    rows = [
        ("Model", answer.model.label),
        ("Retrieval", seconds(retrieval_s)),
        ("Time to first token", seconds(answer.ttft_s)),
        ("Generation", seconds(answer.generation_s)),
        ("Total (model)", seconds(answer.total_s)),
        ("Tokens in / out", _token_counts(answer.usage)),
        ("Tokens/s", f"{rate:.1f}" if rate else "–"),
    ]
    return "| Measure | Value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _token_counts(usage: Usage | None) -> str:
    if usage is None:
        return "–"
    counts = f"{usage.prompt_tokens} / {usage.completion_tokens}"
    # Some servers report no usage; then the counts are our own estimate.
    return f"~{counts} (estimated)" if usage.estimated else counts
