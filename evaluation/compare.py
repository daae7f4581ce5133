"""Compare models on one prompt: each answer streamed in turn, then a table of timings, tokens and cost.

    .venv/bin/python -m evaluation.compare "What does RAG combine?"
    .venv/bin/python -m evaluation.compare "How do I set the server URL?" --rag --models slm,llm --json out.json
    COMPARE_PROMPT="Summarise this" .venv/bin/python -m evaluation.compare --context-file notes.md

Each model answers through the chat's own pipeline with routing off (see
answering/comparison.py): with `--rag`, over the app's corpus as the chat does (a
question it does not cover gets a labelled general-knowledge answer); with
`--context-file`, over that text alone, all of it that the context budget holds; with
neither, from general knowledge. Grounded answers are checked sentence by sentence as
in the chat (`--guard`), and the table counts the sentences cut.

The models answer one after the other. Embedded models are loaded before the timed
answers, and their load time is reported on its own, so that time to first token
measures answering, not reading a GGUF file. Exit code 2 with a one-line message when
a model is unknown, the server cannot be reached, or a model fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from answering.attempts import Answer, AttemptStart
from answering.comparison import (
    NO_KNOWLEDGE,
    PASTED_CONTEXT_TITLE,
    CommandFailure,
    Comparison,
    ComparisonRow,
    PastedContext,
    deltas,
    models_for_command,
    row_for,
    stream_comparison,
)
from answering.context import Excerpt
from answering.grounding import GuardMode
from answering.pipeline import Notice, Retrieved, Searchable, SentenceCut, TurnConfig, TurnDone
from models.base import Backend, GenerationParams, TokenEvent
from models.catalog import ModelSpec
from models.embedded import EmbeddedBackend
from models.factory import make_backends
from models.settings import Settings
from rag.documents import Document
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import corpus_documents


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.compare",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument(
        "prompt",
        nargs="?",
        default=os.environ.get("COMPARE_PROMPT"),
        help="the prompt (default: the COMPARE_PROMPT environment variable)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated models: slm, llm, catalog keys, ids or aliases "
        "(default: the SLM and the LLM from the settings)",
    )
    parser.add_argument("--max-tokens", type=int, default=None, help="longest answer (default: MAX_TOKENS)")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: TEMPERATURE)")
    parser.add_argument(
        "--rag",
        action="store_true",
        help="answer over the app's corpus (built-in documents + CORPUS_DIR) as the chat does",
    )
    parser.add_argument(
        "--context-file",
        type=Path,
        default=None,
        help="reference text the models answer over (with --rag: added to the searched "
        "documents, like a file attached in the chat)",
    )
    parser.add_argument(
        "--guard",
        choices=[mode.value for mode in GuardMode],
        default=None,
        help="what the support check does with an unsupported sentence, as in the chat (default: GROUNDING_GUARD)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write the result as JSON to PATH, or to stdout without PATH "
        "(the human-readable output then goes to stderr)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(_compare(args))
    except CommandFailure as failure:
        print(f"compare: {failure}", file=sys.stderr)
        return 2
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = [row for row in report["rows"] if row["error"]]
    for row in failed:
        print(f"compare: {row['model']} failed: {row['error']}", file=sys.stderr)
    return 2 if failed else 0


async def _compare(args: argparse.Namespace) -> dict[str, Any]:
    out: TextIO = sys.stderr if args.json == "-" else sys.stdout
    prompt = (args.prompt or "").strip()
    if not prompt:
        raise CommandFailure("no prompt: pass one as the first argument or set COMPARE_PROMPT")
    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        raise CommandFailure(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    max_tokens = args.max_tokens if args.max_tokens is not None else settings.max_tokens
    temperature = args.temperature if args.temperature is not None else settings.temperature
    if max_tokens < 1 or not 0 <= temperature <= 2:
        raise CommandFailure("--max-tokens must be at least 1 and --temperature between 0 and 2")
    context_text = _read_context(args.context_file)

    backends = make_backends(settings)
    names = args.models.split(",") if args.models else None
    _, models = await models_for_command(settings, backends, names)

    if args.rag:
        # Indexing is blocking work, kept off the event loop as in the app.
        knowledge: Searchable = await asyncio.to_thread(_corpus, settings, context_text)
    elif context_text.strip():
        knowledge = PastedContext(context_text, settings.chunk_size, settings.chunk_overlap)
    else:
        knowledge = NO_KNOWLEDGE
        print("note: no context and no --rag: each model answers from its general knowledge", file=out)

    load_s = await _preload(models, backends, out)
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature)
    guard = GuardMode(args.guard) if args.guard else None
    comparison = Comparison.from_settings(prompt, settings, params, knowledge, guard)
    rows: list[ComparisonRow] = []
    passages: list[dict[str, Any]] | None = None
    noted: set[str] = set()
    async for event in stream_comparison(comparison, models, backends, TurnConfig.from_settings(settings)):
        if isinstance(event, Retrieved) and passages is None:
            # Every model reads the same excerpts (those for the smallest budget): listed once.
            passages = [_passage(excerpt) for excerpt in event.excerpts]
            for number, passage in enumerate(passages, start=1):
                print(f"[{number}] {passage['label']} (score {passage['score']:.2f})", file=out)
        elif isinstance(event, Notice) and event.kind != "unsupported" and event.text not in noted:
            # The same for every model (general knowledge): said once. A model's unsupported answer
            # is said under it, with the quotes.
            noted.add(event.text)
            print(f"note: {event.text}", file=out)
        elif isinstance(event, AttemptStart):
            print(f"\n── {event.model.label} ──", file=out, flush=True)
        elif isinstance(event, TokenEvent):
            out.write(event.text)
            out.flush()
        elif isinstance(event, SentenceCut):
            print(f" ✂ [cut: {event.cut.reason}]", file=out, end="", flush=True)
        elif isinstance(event, Answer):
            if event.error:
                print(f"\n⚠️ {event.error}", file=out, end="")
            elif event.finish_reason == "length":
                print(" […max tokens]", file=out, end="")
            print(file=out)
        elif isinstance(event, TurnDone):
            row = row_for(event, settings.model_prices)
            if row.error:
                pass
            elif row.source == "quotes":
                print(f"the answer does not stand; the chat would quote the passages instead:\n{row.final}", file=out)
            elif row.source == "none":
                print("the answer does not stand; the chat would show nothing of it", file=out)
            elif row.cuts:
                print(f"the chat keeps: {row.final}", file=out)
            rows.append(row)
    compared = deltas(rows)
    print(file=out)
    print(format_table(rows, compared), file=out, flush=True)
    return {
        "prompt": prompt,
        "models": [spec.key for spec in models],
        "max_tokens": max_tokens,
        "temperature": temperature,
        "rag": args.rag,
        "retrieval_mode": settings.retrieval_mode if args.rag else None,
        "context_file": str(args.context_file) if args.context_file else None,
        "guard": comparison.guard.value,
        "passages": passages or [],
        "load_s": load_s,
        "rows": [asdict(row) for row in rows],
        "deltas": compared,
    }


def _read_context(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CommandFailure(f"cannot read --context-file {path}: {error.strerror}") from None


def _corpus(settings: Settings, context_text: str) -> KnowledgeBase:
    """The chat's knowledge base: the app's corpus, with the pasted text as an upload."""
    corpus = SharedCorpus(corpus_documents(settings.corpus_dir))
    knowledge = KnowledgeBase(corpus, settings.chunk_size, settings.chunk_overlap)
    if context_text.strip():
        knowledge.add(Document("pasted-context", PASTED_CONTEXT_TITLE, "pasted", context_text))
    return knowledge


def _passage(excerpt: Excerpt) -> dict[str, Any]:
    """A passage the models read: its label, its document's source, its retrieval score and its text."""
    chunk = excerpt.hit.chunk
    return {"label": excerpt.label, "source": chunk.document.source, "score": excerpt.hit.score, "text": excerpt.text}


async def _preload(models: Sequence[ModelSpec], backends: Mapping[str, Backend], out: TextIO) -> dict[str, float]:
    """Load embedded models before the timed answers; seconds per model key."""
    seconds: dict[str, float] = {}
    for spec in models:
        backend = backends.get(spec.backend)
        if not isinstance(backend, EmbeddedBackend) or spec.key in seconds:
            continue
        started = time.perf_counter()
        try:
            await asyncio.to_thread(backend.load, spec.model)
        except Exception as error:  # noqa: BLE001 - its answer reports the failure again, in plain words
            print(f"note: could not load {spec.label}: {error}", file=sys.stderr)
            continue
        seconds[spec.key] = time.perf_counter() - started
        print(f"loaded {spec.label} in {seconds[spec.key]:.2f} s", file=out)
    return seconds


# --- the table ------------------------------------------------------------------------

HEADERS = ("Model", "TTFT", "Total", "Tokens in", "Tokens out", "Tok/s", "Sim. cost", "Cut")


def format_table(rows: Sequence[ComparisonRow], compared: dict[str, Any]) -> str:
    """The rows, and the second against the first; "Cut" counts the sentences the support
    check took back ("–" for a general-knowledge answer: nothing to check it against)."""
    lines = [
        [
            row.model,
            _num(row.ttft_s, "{:.2f} s"),
            _num(row.total_s, "{:.2f} s"),
            _tokens(row.prompt_tokens, row.tokens_estimated),
            _tokens(row.completion_tokens, row.tokens_estimated),
            _num(row.tokens_per_s, "{:.1f}"),
            _num(row.cost_usd, "${:.7f}"),
            "–" if row.source == "general" else str(len(row.cuts)),
        ]
        + (["failed"] if row.error else [])
        for row in rows
    ]
    if len(rows) >= 2:
        lines.append(
            [
                "Δ 2nd vs 1st",
                _delta(compared["ttft_s"], "{:+.2f} s"),
                _delta(compared["total_s"], "{:+.2f} s"),
                _delta(compared["prompt_tokens"], "{:+d}"),
                _delta(compared["completion_tokens"], "{:+d}"),
                _delta(compared["tokens_per_s"], "{:+.1f}"),
                _delta(compared["cost_usd"], "{:+.7f}"),
            ]
        )
    widths = [max(len(str(cells[i])) for cells in [HEADERS, *lines] if i < len(cells)) for i in range(len(HEADERS))]

    def render(cells: Sequence[str]) -> str:
        head = f"{cells[0]:<{widths[0]}}"
        rest = [f"{cell:>{width}}" for cell, width in zip(cells[1 : len(HEADERS)], widths[1:], strict=False)]
        return "  ".join([head, *rest, *cells[len(HEADERS) :]]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(HEADERS), rule, *(render(cells) for cells in lines)])


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _tokens(value: int | None, estimated: bool) -> str:
    return "–" if value is None else f"{'~' if estimated else ''}{value}"


def _delta(entry: dict[str, Any], fmt: str) -> str:
    if entry["difference"] is None:
        return "–"
    ratio = f" (×{entry['ratio']:.2f})" if entry["ratio"] is not None else ""
    return fmt.format(entry["difference"]) + ratio


if __name__ == "__main__":
    raise SystemExit(main())
