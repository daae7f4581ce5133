"""Side-by-side comparison of models on one prompt: the core shared by the CLI tools and the app's /compare page.

The models answer one after the other, never together: on a two-core machine two
models decoding at once would each run at about half speed, and the comparison
would measure the contention rather than the models.
"""

from __future__ import annotations

import sys

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from answering.attempts import Answer, AttemptStart, stream_answer
from models.base import Backend, BackendError, ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog, ModelSpec, build_catalog, match_server_model
from models.costs import price_for
from models.settings import Settings
from rag.chunking import chunk_documents
from rag.documents import Chunk, Document
from answering.prompt import build_messages, fit_passages

PASTED_CONTEXT_TITLE = "Pasted context"
# The metrics `deltas` compares, in table order.
DELTA_METRICS = ("ttft_s", "total_s", "prompt_tokens", "completion_tokens", "tokens_per_s", "cost_usd")

ComparisonEvent = AttemptStart | TokenEvent | Answer


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


def context_passages(context_text: str, chunk_size: int, chunk_overlap: int) -> list[Chunk]:
    """Pasted reference text as passages, cut exactly as the app cuts its documents."""
    if not context_text.strip():
        return []
    document = Document("pasted-context", PASTED_CONTEXT_TITLE, "pasted", context_text)
    return chunk_documents([document], chunk_size, chunk_overlap)


def comparison_messages(
    prompt: str, passages: Sequence[Chunk], max_tokens: int
) -> Callable[[ModelSpec], list[ChatMessage]]:
    """The prompt each model is given.

    With passages: the app's grounded prompt, the passages fitted to that model's
    context window. Without: the prompt alone, as one user message, so that the
    models are compared on the prompt and nothing else.
    """

    def messages_for(spec: ModelSpec) -> list[ChatMessage]:
        if not passages:
            return [ChatMessage("user", prompt)]
        fitted = fit_passages(passages, prompt, spec.context_window, max_tokens)
        return build_messages(prompt, [], fitted, spec.context_window, max_tokens)

    return messages_for


async def stream_comparison(
    models: Sequence[ModelSpec],
    messages_for: Callable[[ModelSpec], list[ChatMessage]],
    params: GenerationParams,
    backends: Mapping[str, Backend],
) -> AsyncIterator[ComparisonEvent]:
    """For each model in turn: `AttemptStart`, its tokens, then its `Answer`.

    No fallback: a model that fails yields its `Answer` with `.error` (and any
    partial text), and the next model still answers.
    """
    for model in models:
        started = time.perf_counter()
        parts: list[str] = []
        answered = False
        try:
            async for event in stream_answer(model, messages_for, params, backends, fallback=None):
                if isinstance(event, TokenEvent):
                    parts.append(event.text)
                answered = answered or isinstance(event, Answer)
                yield event
        except Exception as error:  # one broken backend must not hide the others' results
            if answered:
                raise
            failure = BackendError(f"The model failed unexpectedly: {error}", model.label)
            yield Answer(model, "".join(parts), "error", None, None, time.perf_counter() - started, failure)


def row_for(answer: Answer, prices: Mapping[str, tuple[float, float]]) -> ComparisonRow:
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
    )


def deltas(rows: Sequence[ComparisonRow]) -> dict:
    """The second row against the first (the baseline).

    Returns {"baseline": label, "compared": label, <metric>: {"difference": b - a,
    "ratio": b / a}} for each of DELTA_METRICS. A value is None where it cannot be
    computed: fewer than two rows, a metric missing on either side, a zero baseline
    for the ratio, or either model failed (a failed request's timing is not a result).
    """
    first = rows[0] if rows else None
    second = rows[1] if len(rows) > 1 else None
    comparable = first is not None and second is not None and not first.error and not second.error
    result: dict = {
        "baseline": first.model if first else None,
        "compared": second.model if second else None,
    }
    for metric in DELTA_METRICS:
        a = getattr(first, metric) if comparable else None
        b = getattr(second, metric) if comparable else None
        both = a is not None and b is not None
        result[metric] = {
            "difference": b - a if both else None,
            "ratio": b / a if both and a != 0 else None,
        }
    return result
