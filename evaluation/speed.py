"""Benchmark models on a fixed set of short prompts: cold load, TTFT, decode rate, latency, CPU and memory.

    .venv/bin/python -m evaluation.speed                                  # SLM and LLM, 3 runs
    .venv/bin/python -m evaluation.speed --models slm,llm --runs 5 --max-tokens 64 --json out.json --chart out.png
    BENCH_MODELS=embedded:smollm2-135m BENCH_STREAM=0 .venv/bin/python -m evaluation.speed

For each model, one after the other (never two at once on a small machine):

1. Cold start. Embedded: the time to load the GGUF file (a fresh backend per model, so
   nothing is loaded before; the file itself may be in the OS page cache). Server: the
   first request's latency, which includes whatever loading the server does on demand.
2. `--warmup N` untimed requests, then every prompt `--runs N` times, timed.
   Each request is one turn of the chat's pipeline with routing off, exactly as the
   comparison runs it (answering/comparison.py): a prompt with a passage is answered
   over that passage (the chat's context selection and grounded prompt), one without
   as a general-knowledge turn (the chat's general prompt), so that a model reads
   what it reads in the chat. The support check runs in `--guard off` by default:
   every answer then runs to its natural end or `--max-tokens`, as a speed benchmark
   needs (in `stop` mode a cut would end answers early, at a length that depends on
   what the check thought of them, and leave estimated token counts); `--guard stop`
   or `mark` measures the chat's configuration instead.
3. Per timed request: time to first token, decode rate ((tokens - 1) / time after the
   first token), end-to-end latency (the model's answer, from the request to its last
   token), and the CPU time the whole turn cost. CPU time is this
   process's (user + system, all threads: it includes embedded decoding) plus, for a
   server on this machine, the server process's, found by its listening port; a remote
   server's CPU cannot be seen and is not counted (the JSON says which).
4. Memory: the peak resident set size sampled every 20 ms while the model is loaded and
   answering (this process, plus a local server's), and GPU memory when `nvidia-smi` exists.

The backends only stream. `--no-stream` (or BENCH_STREAM=0) still reads the stream but
reports end-to-end figures only, as a non-streaming client would see them: no TTFT and no
decode rate. Embedded models start every request with an empty KV cache, so that a
repeated prompt is not answered from the cache of its previous run.

The JSON has a top-level "per_question" map, {model key: {"prompt_tokens": mean,
"completion_tokens": mean, "latency_s": median, "cpu_s": mean CPU seconds per request,
null for a remote server}}, read by the cost tool. Exit code 2 with a one-line message
when a model is unknown, the server cannot be reached, or a request fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
from pydantic import ValidationError
from tqdm import tqdm

from answering.attempts import Answer
from answering.comparison import (
    NO_KNOWLEDGE,
    CommandFailure,
    Comparison,
    PastedContext,
    answer_of,
    models_for_command,
    stream_comparison,
)
from answering.grounding import GuardMode
from answering.pipeline import TurnConfig, TurnDone
from models.base import Backend, GenerationParams
from models.catalog import ModelSpec
from models.embedded import EmbeddedBackend
from models.factory import make_backends
from models.settings import PROJECT_ROOT, Settings

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
DEFAULT_MAX_TOKENS = 64
MEMORY_SAMPLE_S = 0.02

_HANDBOOK_PASSAGE = (
    "The assistant reads its settings from the environment and a .env file. MODEL_SERVER_URL "
    "points it at an OpenAI-compatible server such as Foundry Local or Ollama; without it, "
    "the embedded models answer. TOP_K sets how many passages each answer is given."
)
_PRICING_PASSAGE = (
    "Simulated costs use MODEL_PRICES, in US dollars per million input and output tokens. "
    "The small model costs 0.02 and 0.05; the large model costs 0.03 and 0.10."
)


@dataclass(frozen=True)
class BenchPrompt:
    name: str
    text: str
    context: str = ""  # a passage the answer should be grounded in, given as the app gives it


PROMPTS: tuple[BenchPrompt, ...] = (
    # Grounded first, so that `--prompts 1` still goes through the app's grounded prompt.
    BenchPrompt("grounded-setting", "Which variable points the assistant at a model server?", _HANDBOOK_PASSAGE),
    BenchPrompt("define", "What is retrieval-augmented generation? Answer in one sentence."),
    BenchPrompt("list", "Name three uses of a small language model running on a laptop."),
    BenchPrompt("grounded-number", "What does the large model cost per million output tokens?", _PRICING_PASSAGE),
    BenchPrompt("rewrite", "Rewrite more politely: send me the report now."),
)


@dataclass(frozen=True)
class Request:
    prompt: str
    run: int  # 1-based; 0 for warm-up
    ttft_s: float | None
    latency_s: float
    decode_tok_s: float | None
    prompt_tokens: int
    completion_tokens: int
    cpu_s: float


# --- measuring ------------------------------------------------------------------------


class CpuClock:
    """CPU seconds (user + system) of this process and, when it runs here, the model server."""

    def __init__(self, processes: Sequence[psutil.Process]) -> None:
        self.processes = list(processes)

    def read(self) -> float:
        total = 0.0
        for process in self.processes:
            try:
                times = process.cpu_times()
            except psutil.Error:  # a server that exited mid-run: count what is left
                continue
            total += times.user + times.system
        return total


class MemoryPeak:
    """The largest resident set size seen, sampled on a thread while a model is in use."""

    def __init__(self, processes: Sequence[psutil.Process]) -> None:
        self.processes = list(processes)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-memory", daemon=True)

    def current(self) -> int:
        total = 0
        for process in self.processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.current())
            self._stop.wait(MEMORY_SAMPLE_S)

    @contextmanager
    def watching(self) -> Iterator[MemoryPeak]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self.current())


def local_server_process(base_url: str | None) -> psutil.Process | None:
    """The process listening on a loopback server URL's port, when it can be seen."""
    if not base_url:
        return None
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        for connection in psutil.net_connections(kind="tcp"):
            listening = connection.status == psutil.CONN_LISTEN and connection.laddr
            if listening and getattr(connection.laddr, "port", None) == port and connection.pid:
                return psutil.Process(connection.pid)
    except psutil.Error:
        return None
    return None


def gpu_memory_mb() -> float | None:
    """GPU memory in use across all GPUs, or None where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return sum(float(line) for line in result.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def spread(values: Sequence[float]) -> dict | None:
    """Median, 90th percentile, min and max; None for no values."""
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "p90": float(np.percentile(values, 90)),
        "min": min(values),
        "max": max(values),
    }


# --- running --------------------------------------------------------------------------


async def _request(
    spec: ModelSpec,
    prompt: BenchPrompt,
    backends: dict[str, Backend],
    settings: Settings,
    cpu: CpuClock,
    args: argparse.Namespace,
    run: int,
) -> Request:
    """One timed turn: the prompt over its passage, or from general knowledge, with routing off."""
    backend = backends[spec.backend]
    if isinstance(backend, EmbeddedBackend):
        # llama.cpp reuses the KV cache of a matching prompt prefix: without a reset, a
        # repeated prompt would skip prompt evaluation and flatter the TTFT.
        backend.load(spec.model).llama.reset()
    knowledge = (
        PastedContext(prompt.context, settings.chunk_size, settings.chunk_overlap) if prompt.context else NO_KNOWLEDGE
    )
    params = GenerationParams(max_tokens=args.max_tokens, temperature=args.temperature)
    comparison = Comparison.from_settings(prompt.text, settings, params, knowledge, GuardMode(args.guard))

    cpu_before = cpu.read()
    answer: Answer | None = None
    async for event in stream_comparison(comparison, [spec], backends, TurnConfig.from_settings(settings)):
        if isinstance(event, TurnDone):
            answer = answer_of(event)
    cpu_s = cpu.read() - cpu_before
    if answer is None or answer.error or answer.usage is None:
        reason = answer.error if answer and answer.error else "no answer"
        raise CommandFailure(f"{spec.label} failed on prompt {prompt.name!r}: {reason}")
    return Request(
        prompt=prompt.name,
        run=run,
        ttft_s=answer.ttft_s if args.stream else None,
        latency_s=answer.total_s,
        decode_tok_s=answer.tokens_per_s if args.stream else None,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=answer.usage.completion_tokens,
        cpu_s=cpu_s,
    )


async def bench_model(spec: ModelSpec, settings: Settings, args: argparse.Namespace, progress: tqdm) -> dict:
    # Fresh backends per model: nothing is loaded yet (a true cold load), and the previous
    # model's memory is released before this one's peak is measured.
    backends = make_backends(settings)
    server = local_server_process(settings.model_server_url) if spec.backend == "server" else None
    processes = [psutil.Process(), *([server] if server else [])]
    cpu = CpuClock(processes)
    memory = MemoryPeak(processes)
    rss_before = memory.current()
    cold: dict = {"load_s": None, "first_request_s": None}
    requests: list[Request] = []
    gpu: list[float] = []

    with memory.watching():
        backend = backends.get(spec.backend)
        if isinstance(backend, EmbeddedBackend):
            started = time.perf_counter()
            try:
                await asyncio.to_thread(backend.load, spec.model)
            except Exception as error:  # noqa: BLE001 - reported as one line
                raise CommandFailure(f"could not load {spec.label}: {error}") from None
            cold["load_s"] = time.perf_counter() - started
        if (used := gpu_memory_mb()) is not None:
            gpu.append(used)
        for number in range(args.warmup):
            prompt = args.prompt_set[number % len(args.prompt_set)]
            request = await _request(spec, prompt, backends, settings, cpu, args, run=0)
            cold["first_request_s"] = cold["first_request_s"] or request.latency_s
            progress.update()
        for run in range(1, args.runs + 1):
            for prompt in args.prompt_set:
                request = await _request(spec, prompt, backends, settings, cpu, args, run)
                cold["first_request_s"] = cold["first_request_s"] or request.latency_s
                requests.append(request)
                progress.update()
        if (used := gpu_memory_mb()) is not None:
            gpu.append(used)
    del backends, backend
    gc.collect()

    return {
        "model": spec.label,
        "key": spec.key,
        "backend": spec.backend,
        "cold": {
            **cold,
            "load_note": (
                "time to load the GGUF file into a fresh backend"
                if cold["load_s"] is not None
                else "not measurable for a server: see first_request_s"
            ),
            "first_request_note": "latency of the first request after the load, untimed in the statistics "
            "when --warmup > 0",
        },
        "ttft_s": spread([r.ttft_s for r in requests if r.ttft_s is not None]),
        "decode_tok_s": spread([r.decode_tok_s for r in requests if r.decode_tok_s is not None]),
        "latency_s": spread([r.latency_s for r in requests]),
        "end_to_end_tok_s": _ratio(sum(r.completion_tokens for r in requests), sum(r.latency_s for r in requests)),
        "prompt_tokens_mean": statistics.fmean(r.prompt_tokens for r in requests),
        "completion_tokens_mean": statistics.fmean(r.completion_tokens for r in requests),
        "cpu_s_per_request_mean": statistics.fmean(r.cpu_s for r in requests),
        "cpu_scope": _cpu_scope(spec, server),
        # Only then is the CPU time the model's own; a remote server's client time is not.
        "cpu_covers_model": spec.backend == "embedded" or server is not None,
        "rss_before_mb": rss_before / 2**20,
        "peak_rss_mb": memory.peak_bytes / 2**20,
        "gpu_memory_used_mb": max(gpu) if gpu else None,
        "requests": [asdict(r) for r in requests],
    }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def _cpu_scope(spec: ModelSpec, server: psutil.Process | None) -> str:
    if spec.backend == "embedded":
        return "this process (the model runs in it)"
    if server is not None:
        return f"this process + the local server process (pid {server.pid})"
    return "this process only: the server's CPU time is not visible from here"


async def run_bench(settings: Settings, args: argparse.Namespace) -> dict:
    _, models = await models_for_command(settings, make_backends(settings), args.models)
    load = _load_average()
    if load and load[0] > (os.cpu_count() or 1):
        # Decoding is CPU-bound: on a busy machine the figures measure the other work too.
        print(
            f"note: the machine is busy (load average {load[0]:.1f} on {os.cpu_count()} CPUs); "
            "figures will be slower and noisier than on an idle machine",
            file=sys.stderr,
        )
    total = len(models) * (args.warmup + args.runs * len(args.prompt_set))
    results: dict[str, dict] = {}
    with tqdm(total=total, desc="bench", unit="req", file=sys.stderr, disable=args.quiet) as progress:
        for spec in models:
            progress.set_postfix_str(spec.label)
            results[spec.key] = await bench_model(spec, settings, args, progress)
    return results


# --- reporting ------------------------------------------------------------------------


def per_question(results: dict[str, dict]) -> dict[str, dict]:
    """What one request costs each model, as the cost tool reads it."""
    return {
        key: {
            "prompt_tokens": result["prompt_tokens_mean"],
            "completion_tokens": result["completion_tokens_mean"],
            "latency_s": result["latency_s"]["median"],
            "cpu_s": result["cpu_s_per_request_mean"] if result.get("cpu_covers_model", True) else None,
        }
        for key, result in results.items()
    }


def format_table(results: dict[str, dict]) -> str:
    def num(value: float | None, fmt: str = "{:.2f}") -> str:
        return "–" if value is None else fmt.format(value)

    def pick(stats: dict | None, name: str) -> float | None:
        return stats[name] if stats else None

    headers = (
        "Model",
        "Cold",
        "TTFT med",
        "Decode tok/s",
        "Latency med",
        "p90",
        "min",
        "max",
        "Tokens in/out",
        "CPU s/req",
        "Peak RSS MB",
    )
    rows = []
    for result in results.values():
        cold = result["cold"]
        cold_text = (
            f"load {cold['load_s']:.2f} s"
            if cold["load_s"] is not None
            else f"1st req {num(cold['first_request_s'])} s"
        )
        latency = result["latency_s"]
        rows.append(
            (
                result["model"],
                cold_text,
                num(pick(result["ttft_s"], "median")),
                num(pick(result["decode_tok_s"], "median"), "{:.1f}"),
                num(latency["median"]),
                num(latency["p90"]),
                num(latency["min"]),
                num(latency["max"]),
                f"{result['prompt_tokens_mean']:.0f}/{result['completion_tokens_mean']:.0f}",
                num(result["cpu_s_per_request_mean"]),
                f"{result['peak_rss_mb']:.0f}",
            )
        )
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    lines = [
        "  ".join(
            f"{cell:<{w}}" if i == 0 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        )
        for row in (headers, *rows)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    gpus = [
        f"{r['model']}: {r['gpu_memory_used_mb']:.0f} MB"
        for r in results.values()
        if r["gpu_memory_used_mb"] is not None
    ]
    if gpus:
        lines.append("GPU memory used: " + ", ".join(gpus))
    return "\n".join(lines)


def draw_chart(results: dict[str, dict], path: Path, streamed: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    labels = [result["model"] for result in results.values()]
    panels = (
        [
            ("End-to-end latency (s)", "latency_s"),
            ("Time to first token (s)", "ttft_s"),
            ("Decode rate (tokens/s)", "decode_tok_s"),
        ]
        if streamed
        else [("End-to-end latency (s)", "latency_s")]
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for axis, (title, metric) in zip(axes[0], panels, strict=False):
        stats = [result[metric] for result in results.values()]
        medians = [s["median"] if s else 0.0 for s in stats]
        low = [s["median"] - s["min"] if s else 0.0 for s in stats]
        high = [s["max"] - s["median"] if s else 0.0 for s in stats]
        axis.bar(
            labels,
            medians,
            yerr=[low, high],
            capsize=6,
            color=["#4C72B0", "#DD8452", "#55A868", "#C44E52"][: len(labels)],
        )
        if metric == "latency_s":
            axis.scatter(labels, [s["p90"] for s in stats], marker="_", s=400, color="black", label="p90", zorder=3)
            axis.legend()
        axis.set_title(title, fontsize=10)
        axis.tick_params(axis="x", labelrotation=15, labelsize=8)
    figure.suptitle("Bars: median; whiskers: min to max", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _environment(settings: Settings) -> dict:
    import llama_cpp

    return {
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "embedded_threads": settings.embedded_threads,
        "embedded_context_window": settings.embedded_context_window,
        "model_server_url": settings.model_server_url,
        "load_average_end": _load_average(),
    }


def _load_average() -> list[float] | None:
    return [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None


# --- command line ---------------------------------------------------------------------


def _env_flag(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.speed", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default=os.environ.get("BENCH_MODELS"),
        help="comma-separated models: slm, llm, catalog keys, ids or aliases "
        "(default: BENCH_MODELS, else the SLM and the LLM from the settings)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed repetitions of each prompt (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed requests per model first (default 1)")
    parser.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"longest answer (default {DEFAULT_MAX_TOKENS})"
    )
    parser.add_argument(
        "--prompts",
        type=int,
        default=len(PROMPTS),
        help=f"use the first N of the {len(PROMPTS)} built-in prompts (default all)",
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    parser.add_argument(
        "--guard",
        choices=[mode.value for mode in GuardMode],
        default=GuardMode.OFF.value,
        help="the support check's mode (default off: every answer runs to its end; "
        "stop or mark: as the chat is configured)",
    )
    env_stream = _env_flag(os.environ.get("BENCH_STREAM"))
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True if env_stream is None else env_stream,
        help="report TTFT and decode rate (default; BENCH_STREAM=0 or --no-stream: end-to-end figures only)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="output file (default bench/results/bench-<timestamp>.json)"
    )
    parser.add_argument("--chart", type=Path, default=None, help="PNG chart (default: the JSON path with .png)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.models = [name for name in (args.models or "").split(",") if name.strip()] or None
    args.prompt_set = PROMPTS[: max(args.prompts, 0)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if (
        args.runs < 1
        or args.warmup < 0
        or args.max_tokens < 1
        or not 1 <= args.prompts <= len(PROMPTS)
        or not 0 <= args.temperature <= 2
    ):
        print(
            f"bench: --runs and --max-tokens must be at least 1, --warmup at least 0, --prompts 1 to "
            f"{len(PROMPTS)}, --temperature between 0 and 2",
            file=sys.stderr,
        )
        return 2
    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        print(f"bench: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    started = datetime.now()
    load_at_start = _load_average()
    json_path = args.json or RESULTS_DIR / f"bench-{started:%Y%m%d-%H%M%S}.json"
    chart_path = args.chart or json_path.with_suffix(".png")
    try:
        results = asyncio.run(run_bench(settings, args))
    except CommandFailure as failure:
        print(f"bench: {failure}", file=sys.stderr)
        return 2

    report = {
        "started": started.isoformat(timespec="seconds"),
        "streamed": args.stream,
        "runs": args.runs,
        "warmup": args.warmup,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "guard": args.guard,
        "prompts": [asdict(prompt) for prompt in args.prompt_set],
        "environment": {**_environment(settings), "load_average_start": load_at_start},
        "per_question": per_question(results),
        "models": results,
        "chart": str(chart_path),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    draw_chart(results, chart_path, args.stream)
    mode = "streamed" if args.stream else "end-to-end only (--no-stream)"
    print(
        f"{len(args.prompt_set)} prompts × {args.runs} runs after {args.warmup} warm-up, "
        f"max {args.max_tokens} tokens, {mode}"
    )
    print(format_table(results))
    print(f"wrote {json_path} and {chart_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
