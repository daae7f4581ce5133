"""Chainlit glue: chat settings, streaming the answer, and showing what it cost.

The logic lives in `models/` and `rag/`; this file only moves events to the browser.
"""

from __future__ import annotations

import asyncio
import time

import chainlit as cl
from chainlit.input_widget import Select, Slider

from models.answering import Answer, AttemptStart, load_catalog, make_backends, stream_answer
from models.base import ChatMessage, GenerationParams, TokenEvent, Usage
from models.catalog import Catalog, ModelSpec
from models.settings import Settings
from models.streaming import TokenBatcher
from rag.documents import SEED_DOCUMENTS
from rag.prompt import build_messages

SETTINGS = Settings()
# Shared by every session, so that each embedded model is loaded once per process.
BACKENDS = make_backends(SETTINGS)

# A side element shows only where its exact name appears in the message text.
TIMINGS_ELEMENT = "Latency breakdown"


@cl.on_chat_start
async def start() -> None:
    catalog = await load_catalog(SETTINGS, BACKENDS)
    cl.user_session.set("catalog", catalog)
    cl.user_session.set("history", [])
    await cl.ChatSettings(_settings_widgets(catalog)).send()
    lines = [
        "Ask me about your team's documents. Answers stream from "
        f"**{catalog.slm.label}**; change models and generation in the settings panel.",
        *(f"⚠️ {notice}" for notice in catalog.notices),
    ]
    await cl.Message(content="\n\n".join(lines)).send()


def _settings_widgets(catalog: Catalog) -> list:
    items = {spec.label: spec.key for spec in catalog.models.values()}
    return [
        Select(id="slm", label="Small model (answers first)", items=items, initial_value=catalog.slm.key),
        Select(id="llm", label="Large model (escalation)", items=items, initial_value=catalog.llm.key),
        Slider(id="temperature", label="Temperature", initial=SETTINGS.temperature, min=0, max=2, step=0.05),
        Slider(id="max_tokens", label="Max tokens", initial=SETTINGS.max_tokens, min=16, max=max(4096, SETTINGS.max_tokens), step=16),
    ]


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
    catalog: Catalog = cl.user_session.get("catalog")
    chosen = cl.user_session.get("chat_settings") or {}
    model = catalog.get(chosen.get("slm")) or catalog.slm
    params = GenerationParams(
        max_tokens=int(chosen.get("max_tokens", SETTINGS.max_tokens)),
        temperature=float(chosen.get("temperature", SETTINGS.temperature)),
    )
    history: list[ChatMessage] = cl.user_session.get("history")

    def messages_for(spec: ModelSpec) -> list[ChatMessage]:
        return build_messages(
            message.content, history, SEED_DOCUMENTS, spec.context_window, params.max_tokens
        )

    reply = cl.Message(content="")
    batcher = TokenBatcher(SETTINGS.stream_flush_ms / 1000)
    final_text = ""
    try:
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
                await _finish(reply, event)
                if event.error is None:
                    final_text = event.text
    except asyncio.CancelledError:
        await reply.stream_token(batcher.flush())
        if reply.content:
            reply.content += "\n\n*Stopped: the answer above is partial.*"
            await reply.update()
        raise
    finally:
        history.append(ChatMessage("user", message.content))
        if final_text:
            history.append(ChatMessage("assistant", final_text))


async def _finish(reply: cl.Message, answer: Answer) -> None:
    if answer.error and not answer.text:
        # Nothing was streamed. A failed server model is followed by the embedded
        # model with its own notice; a failed embedded model has nobody to follow it.
        if answer.model.backend == "embedded":
            await cl.Message(content=f"⚠️ {answer.error}").send()
        return
    if answer.error:
        reply.content += f"\n\n*⚠️ Cut off: {answer.error.what}. The answer above is partial.*"
    elif answer.finish_reason == "length":
        reply.content += "\n\n*The answer reached the max-tokens limit.*"
    reply.content += f"\n\n*{answer.model.label}* · {TIMINGS_ELEMENT}"
    reply.elements = [cl.Text(name=TIMINGS_ELEMENT, content=timings_markdown(answer), display="side")]
    await reply.send()


def timings_markdown(answer: Answer) -> str:
    def seconds(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f} s"

    usage = answer.usage
    rate = answer.tokens_per_s
    rows = [
        ("Model", answer.model.label),
        ("Time to first token", seconds(answer.ttft_s)),
        ("Generation", seconds(answer.generation_s)),
        ("Total", seconds(answer.total_s)),
        ("Tokens in / out", _token_counts(usage)),
        ("Tokens/s", f"{rate:.1f}" if rate else "–"),
    ]
    return "| Measure | Value |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)


def _token_counts(usage: Usage | None) -> str:
    if usage is None:
        return "–"
    counts = f"{usage.prompt_tokens} / {usage.completion_tokens}"
    # Some servers report no usage; then the counts are our own estimate.
    return f"~{counts} (estimated)" if usage.estimated else counts
