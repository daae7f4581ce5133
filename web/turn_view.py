"""One turn in the chat: the pipeline's events as Chainlit messages, side elements and notices."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import ClassVar

import chainlit as cl
from chainlit.element import Element, ElementType

from answering.attempts import Answer
from answering.context import Excerpt, whole_chunks
from answering.pipeline import FinalAnswer, Notice, Retrieved, Routed, SentenceCut, TurnDone
from answering.timings import LABELS, PhaseTimings, price_for
from models.base import Usage
from models.settings import Settings
from models.streaming import TokenBatcher, close_code_block
from web.charts import latency_chart
from web.chat_store import ANSWER_METADATA_KEY

# A side element shows only where its exact name appears in the message text.
TIMINGS_ELEMENT = "Latency breakdown"
CHART_ELEMENT = "Session latency chart"
DRAFT_ELEMENT = "Small model's draft"


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
    """The messages of one turn in the chat: the small model's answer, and the large one's if escalated."""

    def __init__(self, settings: Settings, retrieval_mode: str) -> None:
        self.settings = settings
        self.retrieval_mode = retrieval_mode
        self.excerpts: list[Excerpt] = []
        self.reply = cl.Message(content="")
        self.batcher = TokenBatcher(self.settings.stream_flush_ms / 1000)
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
        self.batcher = TokenBatcher(self.settings.stream_flush_ms / 1000)

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
        self.reply.content = self.reply.content[:at] + _struck(sentence) + self.reply.content[at + len(sentence) :]
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
            self.batcher = TokenBatcher(self.settings.stream_flush_ms / 1000)

    async def escalate(self, routed: Routed) -> None:
        """Close the small model's answer as a draft and open one for the large model."""
        self.escalated = True
        self.draft = self.answers.get(self.reply.id)
        if self.reply.content:
            footer = [f"*{self.draft.model.label}* · draft"] if self.draft else []
            await self._close(self.reply, self.draft, footer, self._source_elements())
        await self.restart(
            f"↗️ Escalated to **{routed.llm.label}** ({routed.decision.mode.value}): {routed.decision.summary()}."
        )

    async def done(self, done: TurnDone, turns: list[PhaseTimings]) -> str:
        """Close the turn's last message with its sources, timings and chart; returns the answer kept."""
        llm_ok = done.llm_answer is not None and done.llm_answer.error is None
        if done.decision.escalate and done.llm_answer and done.llm_answer.error:
            outcome = (
                "The small model's answer above stands."
                if done.slm_answer and done.slm_answer.text
                else "Try again, or pick another model or escalation mode in the settings."
            )
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
            cl.Text(name=TIMINGS_ELEMENT, content=turn_markdown(done, self.settings.model_prices), display="side"),
            PlotlyChart(name=CHART_ELEMENT, content=json.dumps(latency_chart(turns)), display="side"),
        ]
        if self.draft and llm_ok and done.llm_answer and done.llm_answer.text:
            footer.append(DRAFT_ELEMENT)
            elements.append(cl.Text(name=DRAFT_ELEMENT, content=self.draft.text, display="side"))
        if final.text:
            self.reply.metadata = {ANSWER_METADATA_KEY: final.text}  # the resumed chat's history
        # Under the message that holds the answer kept (not under a failed large model's).
        shows_final = final.source == "llm" or (final.source == "slm" and not self.escalated)
        evidence = final.evidence if shows_final else ""
        await self._close(self.reply, answer, [" · ".join(part for part in footer if part)], elements, evidence)
        return final.text

    def _source_elements(self) -> list:
        return [
            cl.Text(
                name=_source_name(excerpt.number), content=source_markdown(excerpt, self.retrieval_mode), display="side"
            )
            for excerpt in self.excerpts
        ]

    async def stopped(self) -> None:
        await self.reply.stream_token(self.batcher.flush())
        if self.reply.content:
            self.reply.content = close_code_block(self.reply.content)
            self.reply.content += "\n\n*Stopped: the answer above is partial.*"
            await self.reply.update()

    async def _close(
        self, reply: cl.Message, answer: Answer | None, footer: list[str], elements: list, evidence: str = ""
    ) -> None:
        if answer and answer.checked and answer.checked.cuts and not answer.error:
            reply.content = _checked_markdown(answer)
        reply.content = close_code_block(reply.content)
        if answer and answer.error and answer.text:
            reply.content += f"\n\n*⚠️ Cut off: {answer.error.what.rstrip('.')}. The answer above is partial.*"
        elif answer and answer.finish_reason == "length":
            reply.content += "\n\n*The answer reached the max-tokens limit.*"
        if answer and answer.checked and answer.checked.cuts:
            reply.content += "\n\n" + _cut_line(answer)
        if evidence:
            reply.content += "\n\n*From the documents:*\n\n" + evidence
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
        return (
            f"{final.text}\n\nThe nearest passages are listed below. To get an answer from the model's "
            "general knowledge anyway, turn on *General-knowledge answers* in the settings."
        )
    cut = ("\n\n" + _cut_line(answer)) if answer and answer.checked and answer.checked.cuts else ""
    shown = (_checked_markdown(answer) if answer and answer.checked else streamed).strip()
    shown = f"{shown}{cut}\n\n" if shown else ""
    if final.source == "quotes":
        return (
            f"{shown}**No model answer could be checked against the documents.** "
            f"The closest passages say:\n\n{final.text}"
        )
    return f"{shown}**No model answer could be checked against the documents**, and no passage matched it."


def markdown_text(text: str) -> str:
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


def turn_markdown(done: TurnDone, prices: Mapping[str, tuple[float, float]]) -> str:
    def seconds(value: float) -> str:
        return f"{value:.2f} s" if value else "–"

    lines = ["| Phase | Time |", "|---|---|"]
    lines += [f"| {LABELS[name]} | {seconds(value)} |" for name, value in done.timings.phases().items()]
    lines.append(f"| **Total** | **{done.timings.total_s:.2f} s** |")
    lines += ["", "| Model | Tokens in / out | Tokens/s | Simulated cost |", "|---|---|---|---|"]
    for answer in (done.slm_answer, done.llm_answer):
        if answer is None:
            continue
        price = price_for(answer.model.model, prices)
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
