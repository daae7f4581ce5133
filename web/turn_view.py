"""One turn in the chat: the pipeline's events as Chainlit messages, side elements and notices."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import ClassVar

import chainlit as cl
from chainlit.data import get_data_layer
from chainlit.element import Element, ElementType

from answering.attempts import Answer
from answering.context import Excerpt
from answering.pipeline import Notice, Retrieved, Routed, SentenceCut, TurnDone
from answering.reply import HOW_ELEMENT, MAX_TOKENS_NOTE, reply_for, struck
from answering.timings import LABELS, PhaseTimings, price_for
from i18n import N_, localise, translator
from models.base import Usage
from models.settings import Settings
from models.streaming import TokenBatcher, close_code_block
from web.charts import latency_chart
from web.chat_store import ANSWER_METADATA_KEY

log = logging.getLogger(__name__)

# A streaming answer is saved this often, so that a process that dies loses at most this much of it.
SAVE_PARTIAL_EVERY_S = 2.0
# Marks a saved answer that is still streaming; a chat resumed with one marks it cut (web/chat.py).
PARTIAL_METADATA_KEY = "partial"
# A question whose process died before any of its answer was saved, marked when its chat reopens.
# The notes are in English here; a chat shows them in its language: `translator(language).gettext(NOTE)`.
UNSAVED_ANSWER_NOTE = N_(
    "*✂️ Cut off: the app process stopped before any of this question's answer was saved. Ask again.*"
)
CLOSED_NOTE = N_(
    "*✂️ Cut off: this chat's connection closed while the answer was being written (the page was closed, "
    "or the app process stopped). The answer above is partial: ask again for a whole one.*"
)
STOPPED_NOTE = N_("*Stopped: the answer above is partial.*")

# A side element shows only where its exact name appears in the message text (translated, as
# the notes are, where used).
TIMINGS_ELEMENT = N_("Latency breakdown")
CHART_ELEMENT = N_("Session latency chart")


class PlotlyChart(Element):
    """A Plotly chart sent as its plotly.js JSON, drawn by the page as `cl.Plotly`'s is.

    `cl.Plotly` takes only a plotly.py figure and validates it again; see web/charts.py
    for what that cost under load. Not re-decorated as a dataclass: Chainlit loads app.py
    outside `sys.modules`, where dataclasses cannot resolve its annotations.
    """

    type: ClassVar[ElementType] = "plotly"

    def __post_init__(self) -> None:
        self.mime = "application/json"
        self.size = self.size or "medium"
        super().__post_init__()


class TurnView:
    """One turn as one message: the answer streams in as it is made, and when the turn ends
    the message becomes the reply (`answering.reply`): the answer first, and what led there
    in the collapsed "How this answer was made". A failed server model's partial answer stays
    in a message of its own, marked as cut off."""

    def __init__(
        self, settings: Settings, retrieval_mode: str, show_drafts: bool = False, language: str | None = None
    ) -> None:
        self.settings = settings
        self.retrieval_mode = retrieval_mode
        self.show_drafts = show_drafts
        # The chat's language (i18n): what this view adds to the pipeline's text is said in it.
        self.language = language
        self.translations = translator(language)
        self.excerpts: list[Excerpt] = []
        self.reply = cl.Message(content="")
        self.batcher = TokenBatcher(self.settings.stream_flush_ms / 1000)
        self._saved_at = time.monotonic()
        self._saving: asyncio.Task[None] | None = None

    def retrieved(self, retrieved: Retrieved) -> None:
        # Out of scope, nothing was given to a model: the nearest passages are shown whole.
        self.excerpts = retrieved.shown

    async def notice(self, notice: Notice) -> None:
        if notice.kind == "general_knowledge":
            await self.reply.stream_token(f"*{notice.text}*\n\n")

    async def restart(self, notice: str) -> None:
        """A new message for a new attempt, after a notice saying why."""
        await cl.Message(content=notice).send()
        self._new_reply()

    def _new_reply(self) -> None:
        self.reply = cl.Message(content="")
        self.batcher = TokenBatcher(self.settings.stream_flush_ms / 1000)

    async def add(self, text: str) -> None:
        now = time.monotonic()
        if batch := self.batcher.add(text, now):
            await self.reply.stream_token(batch)
        if now - self._saved_at >= SAVE_PARTIAL_EVERY_S and (self._saving is None or self._saving.done()):
            self._saved_at = now
            self._saving = asyncio.create_task(self._save_partial(), name="save-partial-answer")

    async def _save_partial(self) -> None:
        """The answer so far, into the chat store, marked as still streaming; the page sees nothing."""
        data_layer = get_data_layer()
        if data_layer is None or not self.reply.content:
            return
        step = self.reply.to_dict()
        step["metadata"] = {**(step.get("metadata") or {}), PARTIAL_METADATA_KEY: True}
        step["streaming"] = False
        try:
            await data_layer.update_step(step)
        except Exception:  # the answer goes on; only its saved copy is late
            log.exception("Saving a streaming answer failed.")

    async def _saved(self) -> None:
        """Wait for a partial save in flight, so that it can never land after the final one."""
        if self._saving is not None:
            await asyncio.wait([self._saving])

    async def cut(self, event: SentenceCut) -> None:
        """Take a sentence back from the page at once: struck through, with the reason."""
        await self.reply.stream_token(self.batcher.flush())
        sentence = event.cut.text.strip()
        at = self.reply.content.rfind(sentence)
        if at < 0:
            return
        self.reply.content = self.reply.content[:at] + struck(sentence) + self.reply.content[at + len(sentence) :]
        if event.stopped:
            self.reply.content = self.reply.content[: at + len(struck(sentence))]
        await self.reply.update()

    async def answered(self, answer: Answer) -> None:
        await self.reply.stream_token(self.batcher.flush())
        await self._saved()
        if not answer.error:
            return
        _ = self.translations.gettext
        if answer.text:  # keep the partial answer, marked, in a message of its own
            self.reply.content = close_code_block(self.reply.content)
            self.reply.content += "\n\n" + _("*⚠️ Cut off: {problem}. The answer above is partial.*").format(
                problem=localise(answer.error.what, self.language).rstrip(".")
            )
            self.reply.content += f"\n\n*{answer.model.label}*"
            await self.reply.send()
            self._new_reply()
        elif answer.model.backend == "embedded":
            # Nothing was streamed: say what happened (a failed large model is reported when the turn ends).
            await cl.Message(content=f"⚠️ {answer.error.text(self.language)}").send()

    async def escalate(self, routed: Routed) -> None:
        """The large model takes over: say so under the draft, and stream its answer below.
        With no draft (always-llm) there is nothing to say: the reply is the large model's."""
        pending = self.batcher.flush()
        if not (self.reply.content or pending):
            return
        _ = self.translations.gettext
        escalated = _("*↗️ Escalated to **{model}** ({mode}): {reasons}.*").format(
            model=routed.llm.label, mode=routed.decision.mode.value, reasons=routed.decision.summary(self.language)
        )
        await self.reply.stream_token(f"{pending}\n\n{escalated}\n\n")

    async def done(self, done: TurnDone, turns: list[PhaseTimings]) -> str:
        """Close the turn: the reply, its sources, timings, chart and how it was made; returns the answer kept."""
        _ = self.translations.gettext
        await self.reply.stream_token(self.batcher.flush())
        await self._saved()
        llm_failed = done.llm_answer is not None and done.llm_answer.error is not None
        if done.decision.escalate and llm_failed and done.llm_answer:
            failed = (
                _("⚠️ The large model failed: {error}. The small model's answer stands.")
                if done.final.source == "slm"
                else _(
                    "⚠️ The large model failed: {error}. Try again, or pick another model or escalation mode in "
                    "the settings."
                )
            )
            await cl.Message(content=failed.format(error=localise(done.llm_answer.error, self.language))).send()
        final = done.final
        reply = reply_for(done, self.show_drafts)
        answered_by = done.answered_by
        # answering.reply's words are translated where they are in the catalog (marked there).
        timings_name, chart_name, how_name = _(TIMINGS_ELEMENT), _(CHART_ELEMENT), _(HOW_ELEMENT)
        links = [timings_name, chart_name, *([how_name] if reply.how else [])]
        footer = [f"*{answered_by.model.label}*" if answered_by else "", " · ".join(links)]
        elements = [
            *self._source_elements(),
            cl.Text(
                name=timings_name,
                content=turn_markdown(done, self.settings.model_prices, self.language),
                display="side",
            ),
            PlotlyChart(name=chart_name, content=json.dumps(latency_chart(turns, self.language)), display="side"),
            *([cl.Text(name=how_name, content=reply.how, display="side")] if reply.how else []),
        ]
        if final.text:
            self.reply.metadata = {ANSWER_METADATA_KEY: final.text}  # the resumed chat's history
        content = close_code_block(reply.body)
        if answered_by and answered_by.finish_reason == "length":
            content += "\n\n" + _(MAX_TOKENS_NOTE)
        if self.excerpts:
            sources = " ".join(_source_name(e.number) for e in self.excerpts)
            content += "\n\n" + _("Sources: {sources}").format(sources=sources)
        self.reply.content = content + "\n\n" + " · ".join(part for part in footer if part)
        self.reply.elements = elements
        await self.reply.send()
        return final.text

    def _source_elements(self) -> list:
        return [
            cl.Text(
                name=_source_name(excerpt.number),
                content=source_markdown(excerpt, self.retrieval_mode, self.language),
                display="side",
            )
            for excerpt in self.excerpts
        ]

    async def stopped(self, chat_closed: bool = False) -> None:
        """The turn was cancelled: by the Stop button, or because its chat closed (`chat_closed`);
        the partial answer is marked and saved before this returns."""
        pending = self.batcher.flush()
        if chat_closed:  # no page to send it to
            self.reply.content += pending
        else:
            await self.reply.stream_token(pending)
        await self._saved()
        if not self.reply.content:
            return
        self.reply.content = close_code_block(self.reply.content)
        _ = self.translations.gettext
        self.reply.content += "\n\n" + _(CLOSED_NOTE if chat_closed else STOPPED_NOTE)
        if not chat_closed:
            await self.reply.update()
        if data_layer := get_data_layer():
            # Awaited, not left to Chainlit's background write: the process may be about to exit.
            await data_layer.update_step(self.reply.to_dict())


def markdown_text(text: str) -> str:
    """A file name or title shown literally: `**`, `[text](url)` or `<b>` in it must not format the chat."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)


def _source_name(number: int) -> str:
    # The same text as the model's citation markers, so that "[2]" in the answer opens passage 2.
    return f"[{number}]"


def source_markdown(excerpt: Excerpt, mode: str, language: str | None = None) -> str:
    """A passage as the model read it, then the whole chunk it was taken from."""
    _ = translator(language).gettext
    hit = excerpt.hit
    chunk = hit.chunk
    lines = [
        f"**{excerpt.label}**",
        "",
        # Two trailing spaces: a line break in Markdown.
        _("Document: {title} (`{source}`)").format(title=chunk.document.title, source=chunk.document.source) + "  ",
        _("Section: {heading}").format(heading=chunk.heading or "–") + "  ",
        _("Score: {score} ({mode}, rank {rank})").format(score=f"{hit.score:.2f}", mode=mode, rank=hit.rank),
        "",
    ]
    if not excerpt.whole:
        lines += [_("**What the model read:**"), "", *_quoted(excerpt.text), "", _("**The whole chunk:**"), ""]
    return "\n".join([*lines, *_quoted(chunk.text)])


def _quoted(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def turn_markdown(done: TurnDone, prices: Mapping[str, tuple[float, float]], language: str | None = None) -> str:
    _ = translator(language).gettext

    def seconds(value: float) -> str:
        return _("{seconds} s").format(seconds=f"{value:.2f}") if value else "–"

    phase, time_taken, total_label = _("Phase"), _("Time"), _("Total")
    lines = [f"| {phase} | {time_taken} |", "|---|---|"]
    # The phases' names come from answering.timings; translated when they are in the catalog.
    lines += [f"| {_(LABELS[name])} | {seconds(value)} |" for name, value in done.timings.phases().items()]
    total = _("{seconds} s").format(seconds=f"{done.timings.total_s:.2f}")
    lines.append(f"| **{total_label}** | **{total}** |")
    headers = (_("Model"), _("Tokens in / out"), _("Tokens/s"), _("Simulated cost"))
    lines += ["", "| " + " | ".join(headers) + " |", "|---|---|---|---|"]
    for answer in (done.slm_answer, done.llm_answer):
        if answer is None:
            continue
        price = price_for(answer.model.model, prices)
        cost = f"${price.cost_usd(answer.usage):.6f}" if price and answer.usage else "–"
        rate = f"{answer.tokens_per_s:.1f}" if answer.tokens_per_s else "–"
        lines.append(f"| {answer.model.label} | {_token_counts(answer.usage, language)} | {rate} | {cost} |")
    verdict = (
        _("Router ({mode}): escalated: {reasons}.")
        if done.decision.escalate
        else _("Router ({mode}): kept the small model's answer: {reasons}.")
    )
    lines += ["", verdict.format(mode=done.decision.mode.value, reasons=done.decision.summary(language))]
    return "\n".join(lines)


def _token_counts(usage: Usage | None, language: str | None = None) -> str:
    if usage is None:
        return "–"
    counts = f"{usage.prompt_tokens} / {usage.completion_tokens}"
    # Some servers report no usage; then the counts are our own estimate.
    return translator(language).gettext("~{counts} (estimated)").format(counts=counts) if usage.estimated else counts
