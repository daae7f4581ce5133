"""Side-by-side comparison of models on one prompt: the core shared by the CLI tools and the app's /compare page.

Each model's answer is one turn of the chat's own pipeline (`answering.pipeline.run_turn`)
with routing off: the same retrieval, context selection, prompt and support check as the
chat, the compared model playing the small model alone (no escalation, no fallback).
Pasted text is a small knowledge base of its own (`PastedContext`); with no context at
all the turn is a general-knowledge answer, labelled so.

The models answer one after the other, never together: on a two-core machine two
models decoding at once would each run at about half speed, and the comparison
would measure the contention rather than the models.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from answering.attempts import Answer
from answering.grounding import Cut, GuardMode
from answering.pipeline import Searchable, TurnConfig, TurnDone, TurnEvent, TurnRequest, run_turn
from answering.router import Decision, Mode
from answering.timings import PhaseTimings, price_for
from i18n import N_, Message, message_of
from models.base import Backend, BackendError, GenerationParams, TokenEvent
from models.catalog import Catalog, ModelSpec, build_catalog, match_server_model
from models.settings import Settings
from rag.chunking import chunk_documents
from rag.documents import Chunk, Document, Hit
from rag.retrieval import Retriever, make_retriever

PASTED_CONTEXT_TITLE = "Pasted context"
# The metrics `deltas` compares, in table order.
DELTA_METRICS = ("ttft_s", "total_s", "prompt_tokens", "completion_tokens", "tokens_per_s", "cost_usd")


@dataclass(frozen=True)
class ComparisonRow:
    """One model's result, JSON-ready via `dataclasses.asdict`."""

    model: str  # ModelSpec.label
    key: str  # ModelSpec.key
    text: str
    ttft_s: float | None
    total_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    tokens_per_s: float | None
    cost_usd: float | None  # simulated, from Settings.model_prices
    finish_reason: str
    error: str | None
    # What the support check left: the text the chat would show, where it came from
    # (answering.pipeline.Source: "slm" is the model's own checked answer, "general" a
    # general-knowledge one, "quotes" the passages quoted when no sentence stood), and
    # the sentences it cut, with why.
    final: str
    source: str
    cuts: tuple[Cut, ...]


def resolve_models(
    names: Sequence[str] | None, catalog: Catalog, aliases: Mapping[str, str] | None = None
) -> list[ModelSpec]:
    """The models asked for, in the order asked; none asked means the catalog's SLM then LLM.

    A name may be "slm" or "llm", a catalog key ("embedded:gemma3-270m"), a bare id
    ("gemma3-270m"), or an alias the catalog's ids are matched against the way server
    names are ("phi-4-mini" finds "Phi-4-mini-instruct-generic-cpu"); `aliases` are
    explicit overrides (Settings.model_aliases). Unknown names raise ValueError.
    """
    wanted = [name.strip() for name in names or () if name.strip()]
    if not wanted:
        return [catalog.slm, catalog.llm]
    by_id = {spec.model: spec for spec in reversed(list(catalog.models.values()))}
    chosen: list[ModelSpec] = []
    for name in wanted:
        spec = _find(name, catalog, by_id, aliases or {})
        if spec is None:
            available = ", ".join(["slm", "llm", *catalog.models])
            raise ValueError(f"Unknown model {name!r}; available: {available}")
        chosen.append(spec)
    return chosen


def _find(name: str, catalog: Catalog, by_id: Mapping[str, ModelSpec], aliases: Mapping[str, str]) -> ModelSpec | None:
    role = {"slm": catalog.slm, "llm": catalog.llm}.get(name.lower())
    if role is not None:
        return role
    # The same order as the catalog's own choice of SLM and LLM: key, embedded id, server id.
    for key in (name, f"embedded:{name}", f"server:{name}"):
        if key in catalog.models:
            return catalog.models[key]
    matched = match_server_model(name, list(by_id), aliases)
    return by_id.get(matched) if matched else None


class CommandFailure(Exception):
    """What a command cannot do without (a model, a server, an input): one line on stderr, exit code 2."""


async def models_for_command(
    settings: Settings, backends: Mapping[str, Backend], names: Sequence[str] | None
) -> tuple[Catalog, list[ModelSpec]]:
    """`require_models` for the command-line tools: a failure becomes one `CommandFailure`
    line, and the catalog's notices go to stderr."""
    try:
        catalog, models = await require_models(settings, backends, names)
    except ValueError as error:
        raise CommandFailure(str(error)) from None
    except BackendError as error:
        raise CommandFailure(f"cannot reach the model server: {error}") from None
    for notice in catalog.notices:
        print(f"note: {notice}", file=sys.stderr)
    return catalog, models


async def require_models(
    settings: Settings, backends: Mapping[str, Backend], names: Sequence[str] | None
) -> tuple[Catalog, list[ModelSpec]]:
    """The catalog and the models a command was asked to run, or a clear failure.

    Raises ValueError for an unknown model and BackendError when the configured server
    cannot be reached but is needed: the catalog would quietly fall back to the embedded
    models, and a comparison of other models than those asked for is worse than none.
    A server that is down does not matter when only embedded models are named.
    """
    server = backends.get("server")
    server_models: list[str] | None = None
    server_error: BackendError | None = None
    if server is not None:
        try:
            server_models = await server.list_models()
        except BackendError as error:
            server_error = error
    catalog = build_catalog(settings, server_models if server_error is None else [], server_error)
    if server_error is not None and not _all_embedded(names, catalog):
        raise server_error
    return catalog, resolve_models(names, catalog, settings.model_aliases)


def _all_embedded(names: Sequence[str] | None, catalog: Catalog) -> bool:
    wanted = [name.strip() for name in names or () if name.strip()]
    if not wanted:
        return False
    try:
        return all(spec.backend == "embedded" for spec in resolve_models(wanted, catalog))
    except ValueError:
        return False


class PastedContext:
    """Text pasted for one prompt, as a knowledge base of its own.

    Cut as the app cuts its documents and searched with the chat's retrievers, but
    returned whole: every chunk, those the retriever ranks first, then the others in
    order (score 0). The user gave the text on purpose, so the turn's context budget,
    not top-k, decides how much of it the model reads (see `TurnRequest.given_context`).
    """

    def __init__(self, text: str, chunk_size: int, chunk_overlap: int) -> None:
        self.text = text
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self._chunks: list[Chunk] | None = None
        self._retrievers: dict[str, Retriever] = {}
        self._lock = threading.Lock()

    def search(self, query: str, mode: str, k: int) -> list[Hit]:
        """Every chunk, best first; `k` is ignored. Blocking: the pipeline calls it in a worker thread."""
        with self._lock:
            if self._chunks is None:
                document = Document("pasted-context", PASTED_CONTEXT_TITLE, "pasted", self.text)
                self._chunks = (
                    chunk_documents([document], self.chunk_size, self.chunk_overlap) if self.text.strip() else []
                )
            chunks = self._chunks
            if chunks and mode not in self._retrievers:
                self._retrievers[mode] = make_retriever(mode, chunks)
        if not chunks:
            return []
        ranked = self._retrievers[mode].search(query, len(chunks))
        found = {hit.chunk.position for hit in ranked}
        rest = [chunk for chunk in chunks if chunk.position not in found]
        return ranked + [Hit(chunk, 0.0, rank) for rank, chunk in enumerate(rest, start=len(ranked) + 1)]

    def mentions(self, word: str, mode: str) -> bool:
        """Text the user gave covers the question whatever it names (it is never out of scope)."""
        return True


class NoKnowledge:
    """No documents at all: a turn over it is out of scope, so a comparison with neither
    pasted text nor the app's corpus is a general-knowledge turn."""

    def search(self, query: str, mode: str, k: int) -> list[Hit]:
        return []

    def mentions(self, word: str, mode: str) -> bool:
        return False


NO_KNOWLEDGE = NoKnowledge()


@dataclass(frozen=True)
class Comparison:
    """One prompt put to each model, and what the models answer over. The models write their
    answers (compose): comparing models is comparing their own words, speed and cost, so a
    copy answer, which the chat gives by default with embedded models, has no place here."""

    prompt: str
    knowledge: Searchable = NO_KNOWLEDGE
    params: GenerationParams = GenerationParams()
    guard: GuardMode = GuardMode.STOP
    retrieval_mode: str = "bm25"
    top_k: int = 3

    @classmethod
    def from_settings(
        cls,
        prompt: str,
        settings: Settings,
        params: GenerationParams,
        knowledge: Searchable = NO_KNOWLEDGE,
        guard: GuardMode | None = None,
    ) -> Comparison:
        """The prompt with the settings' retrieval and guard (`guard` overrides the latter)."""
        return cls(
            prompt,
            knowledge,
            params,
            guard or GuardMode(settings.grounding_guard),
            settings.retrieval_mode,
            settings.top_k,
        )

    def request(self, model: ModelSpec) -> TurnRequest:
        """The model's turn: it plays the small model with routing off, and answers from
        general knowledge (labelled) where the knowledge does not cover the prompt."""
        return TurnRequest(
            self.prompt,
            self.knowledge,
            slm=model,
            llm=model,
            params=self.params,
            router_mode=Mode.OFF,
            retrieval_mode=self.retrieval_mode,
            top_k=self.top_k,
            guard=self.guard,
            general_knowledge=True,
            given_context=isinstance(self.knowledge, PastedContext),
            answer_style="compose",
        )


async def stream_comparison(
    comparison: Comparison,
    models: Sequence[ModelSpec],
    backends: Mapping[str, Backend],
    config: TurnConfig,
) -> AsyncIterator[TurnEvent]:
    """For each model in turn, the events of its pipeline turn, ending with its `TurnDone`.

    Every model reads the same passages: those chosen for the smallest context budget of
    the models compared. A model that fails, even with an unexpected exception, yields
    its `Answer` with `.error` (and any partial text) and its `TurnDone`, and the next
    model still answers.
    """
    budget = min((config.budget(model) for model in models), default=config.server_context_budget)
    shared = config.with_budget(budget)
    for model in models:
        started = time.perf_counter()
        parts: list[str] = []
        answered = False
        try:
            async for event in run_turn(comparison.request(model), backends, shared):
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                answered = answered or isinstance(event, Answer)
                yield event
        except Exception as error:  # one broken backend must not hide the others' results
            if answered:
                raise
            failure = BackendError(
                Message(N_("The model failed unexpectedly: {error}"), error=message_of(error)), model.label
            )
            answer = Answer(model, "".join(parts), "error", None, None, time.perf_counter() - started, failure)
            yield answer
            yield TurnDone(PhaseTimings(total_s=answer.total_s), answer, None, Decision(Mode.OFF, escalate=False))


def answer_of(done: TurnDone) -> Answer:
    """The compared model's answer in its turn: grounded (as the small model) or general (as the large)."""
    answer = done.slm_answer or done.llm_answer
    if answer is None:  # a comparison turn answers from general knowledge rather than not at all
        raise ValueError("the comparison turn ended without its model's answer")
    return answer


def row_for(done: TurnDone, prices: Mapping[str, tuple[float, float]]) -> ComparisonRow:
    answer = answer_of(done)
    usage = answer.usage
    price = price_for(answer.model.model, prices)
    return ComparisonRow(
        model=answer.model.label,
        key=answer.model.key,
        text=answer.text,
        ttft_s=answer.ttft_s,
        total_s=answer.total_s,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        tokens_estimated=bool(usage and usage.estimated),
        tokens_per_s=answer.tokens_per_s,
        cost_usd=price.cost_usd(usage) if price and usage else None,
        finish_reason=answer.finish_reason,
        error=str(answer.error) if answer.error else None,
        final=done.final.text,
        source=done.final.source,
        cuts=done.final.cuts,
    )


def deltas(rows: Sequence[ComparisonRow]) -> dict[str, Any]:
    """The second row against the first (the baseline).

    Returns {"baseline": label, "compared": label, <metric>: {"difference": b - a,
    "ratio": b / a}} for each of DELTA_METRICS. A value is None where it cannot be
    computed: fewer than two rows, a metric missing on either side, a zero baseline
    for the ratio, or either model failed (a failed request's timing is not a result).
    """
    first = rows[0] if rows else None
    second = rows[1] if len(rows) > 1 else None
    comparable = first is not None and second is not None and not first.error and not second.error
    result: dict[str, Any] = {
        "baseline": first.model if first else None,
        "compared": second.model if second else None,
    }
    for metric in DELTA_METRICS:
        a: float | None = getattr(first, metric) if comparable else None
        b: float | None = getattr(second, metric) if comparable else None
        if a is None or b is None:
            result[metric] = {"difference": None, "ratio": None}
        else:
            result[metric] = {"difference": b - a, "ratio": b / a if a != 0 else None}
    return result
