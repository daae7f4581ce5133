"""Decode rate and time to first token of the embedded SLM: the app's backend against raw llama-cpp-python.

Three variants answer the same grounded question in the same process:

- raw:              `llama_cpp.Llama.create_chat_completion(stream=True)`, the library's own path,
                    on a short-lived thread like the backend's worker (see `_on_fresh_thread`);
- backend:          `EmbeddedBackend.stream_chat`, exactly as the app calls it (worker thread,
                    asyncio queue, stop scanning, UTF-8 decoding);
- backend+logprobs: the same with `logprobs=True` (our chosen-token log-probability).

Both sides load the same GGUF file (SmolLM2-135M) with the same context window and
thread count, and decode greedily (temperature 0). After one warm-up per variant the
variants run interleaved (raw, backend, backend+logprobs, raw, ...) so that machine noise
hits them alike. For each run:

    TTFT        = first token's arrival - request
    decode rate = (tokens - 1) / (last token's arrival - first token's arrival)

The target (the issue's): the backend keeps at least 95% of the raw median decode rate.

The answer guard's cost: each backend run's tokens are fed again, one by one, to the
answer guard (`answering.grounding.AnswerGuard` in `mark` mode, over the same passages)
and timed; the report gives that time as a share of the run's decode time (target: at
most 2%).

Run:

    .venv/bin/python -m bench.decode                   # 5 runs of up to 200 tokens
    .venv/bin/python -m bench.decode --runs 10 --max-tokens 300 --check

Figures go to bench/results/decode.json (`--json PATH` to change). The exit code is 0
whatever the result, unless `--check` is given: then 1 when the backend is below target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import llama_cpp
from llama_cpp.llama_types import CreateChatCompletionStreamResponse

from answering.grounding import AnswerGuard, Evidence, GuardMode
from answering.prompt import build_messages
from models.base import ChatMessage, GenerationParams, StreamEnd, TokenEvent
from models.catalog import EMBEDDED_SLM
from models.embedded import EmbeddedBackend, llama_message
from models.factory import make_backends
from models.settings import PROJECT_ROOT, Settings
from models.weights import smollm2_path
from rag.chunking import chunk_documents
from rag.documents import SEED_DOCUMENTS

TARGET_RATIO = 0.95
LOGPROB_TARGET = 0.90  # the router's signal may cost at most 10% of decode speed
# Below this a run's rate is mostly noise from the first and last token's timing.
MIN_TOKENS_FOR_RATE = 20
DEFAULT_JSON = PROJECT_ROOT / "bench" / "results" / "decode.json"

# Asks for all three passages in detail so that SmolLM2 writes a long answer
# instead of stopping after one sentence.
QUESTION = (
    "Explain each of the three passages in detail, one paragraph per passage: what it "
    "says, why it matters for a team, and how it relates to the other two passages."
)

RAW, BACKEND, BACKEND_LOGPROBS = "raw", "backend", "backend+logprobs"
GUARD_TARGET = 0.02
VARIANTS = (RAW, BACKEND, BACKEND_LOGPROBS)


@dataclass
class Run:
    variant: str
    tokens: int
    ttft_s: float | None
    decode_tok_s: float | None  # None when the answer was shorter than MIN_TOKENS_FOR_RATE
    finish: str
    text: str
    pieces: tuple[str, ...] = ()  # the streamed pieces, for replaying them through the guard
    decode_s: float | None = None  # first to last token


@dataclass(frozen=True)
class TimedStream:
    """One answer streamed from a backend, with when its first and last token came."""

    started: float
    first_at: float | None
    last_at: float | None
    pieces: tuple[str, ...]
    end: StreamEnd

    @property
    def tokens(self) -> int:
        # Tokens actually decoded, not events: held-back text can merge tokens into one event.
        return self.end.usage.completion_tokens

    @property
    def decode_tok_s(self) -> float | None:
        return rate(self.tokens, self.first_at, self.last_at)


async def timed_stream(backend: EmbeddedBackend, messages: list[ChatMessage], params: GenerationParams) -> TimedStream:
    first_at = last_at = None
    pieces: list[str] = []
    end: StreamEnd | None = None
    started = time.perf_counter()
    async for event in backend.stream_chat(EMBEDDED_SLM, messages, params):
        now = time.perf_counter()
        if isinstance(event, TokenEvent):
            first_at = now if first_at is None else first_at
            last_at = now
            pieces.append(event.text)
        elif isinstance(event, StreamEnd):
            end = event
    assert end is not None
    return TimedStream(started, first_at, last_at, tuple(pieces), end)


def rate(tokens: int, first_at: float | None, last_at: float | None) -> float | None:
    if tokens < MIN_TOKENS_FOR_RATE or first_at is None or last_at is None or last_at <= first_at:
        return None
    return (tokens - 1) / (last_at - first_at)


class RawLlama:
    """llama-cpp-python used directly, the way its own documentation streams a chat."""

    def __init__(self, settings: Settings) -> None:
        self.llama = llama_cpp.Llama(
            model_path=str(smollm2_path()),
            n_ctx=settings.embedded_context_window,
            n_threads=settings.embedded_threads,
            n_threads_batch=settings.embedded_threads,
            verbose=False,
        )
        self.repeat_penalty = settings.embedded_repeat_penalty

    def run(self, messages: list[ChatMessage], max_tokens: int) -> Run:
        return _on_fresh_thread(lambda: self._run(messages, max_tokens))

    def _run(self, messages: list[ChatMessage], max_tokens: int) -> Run:
        # Llama reuses the KV cache of a matching prompt prefix; every run would then
        # skip prompt evaluation, unlike a new question in the app. Start cold instead.
        self.llama.reset()
        as_dicts = [llama_message(m) for m in messages]
        tokens, first_at, last_at, finish, parts = 0, None, None, "length", []
        started = time.perf_counter()
        # With stream=True the answer is an iterator of chunks (the return type covers both).
        stream = cast(
            "Iterator[CreateChatCompletionStreamResponse]",
            self.llama.create_chat_completion(
                messages=as_dicts,
                stream=True,
                max_tokens=max_tokens,
                temperature=0,
                # The same sampling penalty the app's backend applies.
                repeat_penalty=self.repeat_penalty,
            ),
        )
        for chunk in stream:
            now = time.perf_counter()
            choice = chunk["choices"][0]
            content = choice["delta"].get("content")
            # The first chunk carries only the role, the last only finish_reason.
            if isinstance(content, str) and content:
                tokens += 1
                first_at = now if first_at is None else first_at
                last_at = now
                parts.append(content)
            finish = choice["finish_reason"] or finish
        return Run(RAW, tokens, _since(started, first_at), rate(tokens, first_at, last_at), finish, "".join(parts))


class AppBackend:
    """The app's EmbeddedBackend, driven from one event loop for the whole benchmark."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        backend = make_backends(settings)["embedded"]
        assert isinstance(backend, EmbeddedBackend)
        self.backend = backend
        self.loop = loop
        # Load outside the timed runs: the app's first question pays this once, not per answer.
        self.backend.load(EMBEDDED_SLM)

    def run(self, messages: list[ChatMessage], max_tokens: int, logprobs: bool) -> Run:
        # Same cold start as the raw side (see RawLlama.run); the lock is free between runs.
        self.backend.load(EMBEDDED_SLM).llama.reset()
        params = GenerationParams(max_tokens=max_tokens, temperature=0, logprobs=logprobs)
        return self.loop.run_until_complete(self._run(messages, params))

    async def _run(self, messages: list[ChatMessage], params: GenerationParams) -> Run:
        stream = await timed_stream(self.backend, messages, params)
        first_at, last_at = stream.first_at, stream.last_at
        return Run(
            BACKEND_LOGPROBS if params.logprobs else BACKEND,
            stream.tokens,
            _since(stream.started, first_at),
            stream.decode_tok_s,
            stream.end.finish_reason,
            "".join(stream.pieces),
            stream.pieces,
            last_at - first_at if first_at is not None and last_at is not None else None,
        )


def _on_fresh_thread(work: Callable[[], Run]) -> Run:
    """Run `work` on a new thread that ends with it, as the backend does for each answer.

    llama.cpp's OpenMP keeps a pool of threads for each thread that has decoded, for as
    long as that thread lives. Decoding on the main thread would leave such a pool behind;
    OpenMP then counts more threads than cores and stops spin-waiting in the backend's
    worker, which made the backend look about 20% slower than it is in the app (where
    only short-lived worker threads decode). A thread by itself costs nothing measurable.
    """
    result: list[Run] = []
    worker = threading.Thread(target=lambda: result.append(work()), name="raw-llama")
    worker.start()
    worker.join()
    if not result:
        raise RuntimeError("the raw llama-cpp-python run failed (see the traceback above)")
    return result[0]


def _since(start: float, moment: float | None) -> float | None:
    return None if moment is None else moment - start


def guard_share(run: Run, evidence: Evidence, repeats: int = 20) -> float | None:
    """The answer guard's time over this run's pieces, as a share of its decode time (best of
    `repeats` replays: the guard's own cost, without the machine's noise)."""
    if not run.decode_s:
        return None
    best = float("inf")
    for _ in range(repeats):
        guard = AnswerGuard(evidence, GuardMode.MARK)
        started = time.perf_counter()
        for piece in run.pieces:
            guard.feed(piece)
        guard.finish()
        best = min(best, time.perf_counter() - started)
    return best / run.decode_s


def summarise(runs: list[Run]) -> dict:
    rates = [r.decode_tok_s for r in runs if r.decode_tok_s is not None]
    ttfts = [r.ttft_s for r in runs if r.ttft_s is not None]
    return {
        "runs": len(runs),
        "runs_with_rate": len(rates),
        "decode_tok_s_median": statistics.median(rates) if rates else None,
        "decode_tok_s_min": min(rates, default=None),
        "decode_tok_s_max": max(rates, default=None),
        "ttft_s_median": statistics.median(ttfts) if ttfts else None,
        "tokens_median": statistics.median(r.tokens for r in runs),
    }


def ratio(summary: dict, variant: str, baseline: str = RAW) -> float | None:
    base, other = summary[baseline]["decode_tok_s_median"], summary[variant]["decode_tok_s_median"]
    return other / base if base and other else None


def print_table(summary: dict, ratios: dict, passed: bool, same_text: bool) -> None:
    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    print(f"\n{'variant':<18} {'decode tok/s':>12} {'(min - max)':>17} {'TTFT ms':>9} {'tokens':>7}")
    for variant in VARIANTS:
        s = summary[variant]
        spread = f"({num(s['decode_tok_s_min'], '.1f')} - {num(s['decode_tok_s_max'], '.1f')})"
        ttft_ms = None if s["ttft_s_median"] is None else s["ttft_s_median"] * 1000
        print(
            f"{variant:<18} {num(s['decode_tok_s_median'], '.1f'):>12} {spread:>17} "
            f"{num(ttft_ms, '.0f'):>9} {num(s['tokens_median'], '.0f'):>7}"
        )
    print()
    print(
        f"backend / raw            {num(ratios[BACKEND], '.3f')}  "
        f"{'PASS' if passed else 'FAIL'} (target >= {TARGET_RATIO})"
    )
    print(f"backend+logprobs / raw   {num(ratios[BACKEND_LOGPROBS], '.3f')}")
    print(
        f"backend+logprobs / backend {num(ratios['logprobs_vs_backend'], '.3f')}  "
        f"(the log-probability's cost; target >= {LOGPROB_TARGET})"
    )
    if not same_text:
        # Greedy decoding of one prompt should give one answer; if not, the sides differ
        # in more than their plumbing (prompt rendering, sampler) and the ratio is suspect.
        print("warning: the variants did not all produce the same text")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--max-tokens", type=int, default=200, help="answer length cap (default 200)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    parser.add_argument("--check", action="store_true", help=f"exit 1 when backend/raw < {TARGET_RATIO}")
    args = parser.parse_args(argv)

    settings = Settings()
    messages = build_messages(
        QUESTION, [], chunk_documents(SEED_DOCUMENTS), settings.embedded_context_window, args.max_tokens
    )
    print(
        f"SmolLM2-135M ({smollm2_path().name}), n_ctx={settings.embedded_context_window}, "
        f"threads={settings.embedded_threads}, max_tokens={args.max_tokens}, runs={args.runs}"
    )

    loop = asyncio.new_event_loop()
    try:
        raw = RawLlama(settings)
        app = AppBackend(settings, loop)
        run_variant = {
            RAW: lambda: raw.run(messages, args.max_tokens),
            BACKEND: lambda: app.run(messages, args.max_tokens, logprobs=False),
            BACKEND_LOGPROBS: lambda: app.run(messages, args.max_tokens, logprobs=True),
        }
        for variant in VARIANTS:  # warm-up: first-touch page faults, thread pools, caches
            run_variant[variant]()
        runs: list[Run] = []
        for number in range(1, args.runs + 1):
            for variant in VARIANTS:
                run = run_variant[variant]()
                runs.append(run)
                print(
                    f"  run {number} {variant:<17} {run.tokens:>4} tokens  "
                    f"{'n/a' if run.decode_tok_s is None else f'{run.decode_tok_s:6.1f}'} tok/s  "
                    f"TTFT {'n/a' if run.ttft_s is None else f'{run.ttft_s * 1000:5.0f}'} ms"
                )
    finally:
        loop.close()

    summary = {v: summarise([r for r in runs if r.variant == v]) for v in VARIANTS}
    evidence = Evidence.of(f"{chunk.document.title}\n{chunk.text}" for chunk in chunk_documents(SEED_DOCUMENTS))
    shares = [s for s in (guard_share(r, evidence) for r in runs if r.variant != RAW) if s is not None]
    guard = {
        "median_share_of_decode": statistics.median(shares) if shares else None,
        "max_share_of_decode": max(shares, default=None),
        "target": GUARD_TARGET,
    }
    if shares:
        print(
            f"answer guard: {guard['median_share_of_decode']:.3%} of decode time (median, max "
            f"{guard['max_share_of_decode']:.3%}; target at most {GUARD_TARGET:.0%})"
        )
    ratios = {v: ratio(summary, v) for v in (BACKEND, BACKEND_LOGPROBS)}
    # The log-probability's own cost, against the same backend streaming without it.
    ratios["logprobs_vs_backend"] = ratio(summary, BACKEND_LOGPROBS, BACKEND)
    backend_ratio = ratios[BACKEND]
    passed = backend_ratio is not None and backend_ratio >= TARGET_RATIO
    same_text = len({r.text for r in runs}) == 1
    print_table(summary, ratios, passed, same_text)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model_file": str(smollm2_path()),
                "n_ctx": settings.embedded_context_window,
                "threads": settings.embedded_threads,
                "max_tokens": args.max_tokens,
                "question": QUESTION,
                "environment": {
                    "llama_cpp_python": llama_cpp.__version__,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                },
                "summary": summary,
                "ratios": ratios,
                "answer_guard": guard,
                "target_ratio": TARGET_RATIO,
                "passed": passed,
                "same_text": same_text,
                "runs": [{k: v for k, v in asdict(r).items() if k != "pieces"} for r in runs],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.json}")
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
