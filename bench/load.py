"""Load and memory: many chat sessions against a real app server, with a fast scripted model.

The app runs as a real Chainlit server (`bench/instrumented_server.py`: `chainlit run
app.py --headless` plus a loop-lag monitor and a state route) pointed at a scripted
OpenAI-compatible server (`bench/scripted_server.py`) that answers after a fixed time to
first token at a fixed rate, so that what is measured is the app itself. Clients talk
to the app over Socket.IO exactly as its web page does (tests/chainlit_client.py).

Phases, in this order, all in one run:

1. warm-up: one session asks one question; the request the app sent to the model
   server is kept for the baseline. (Just before phase 5, one more session asks the
   embedded SLM, so that its one-off load is not counted as a stall of that phase.)
2. churn (memory): `--churn` sessions, `--sessions` at a time, each connects, asks one
   question and disconnects as a closed tab does. The server's resident memory (psutil
   on its pid) is read before, sampled during (peak) and read again after a garbage
   collection and `--settle-s` seconds; the server also reports what it still holds
   per session (Chainlit sessions, user_session and chat_context entries, the app's
   knowledge bases, asyncio tasks).
3. baseline: the same request the app sends, straight to the scripted server,
   `--sessions` concurrent clients x `--questions` requests: the backend's own TTFT.
4. app load: `--sessions` concurrent sessions x `--questions` questions. App TTFT = the
   moment the model's first word reaches the Socket.IO client - the moment the question
   was sent. App-added latency = app TTFT - backend TTFT (medians, and p95s).
5. mixed load: phase 4 again while `--embedded-sessions` sessions switch their chat
   settings to the embedded SmolLM2 and ask (real decoding in the server process) and
   `--upload-sessions` sessions upload a text file and a PDF (`--upload-kb` each) and
   ask about them (real parsing), both repeating until the scripted sessions finish.

The event loop's lag (how late a 10 ms sleep wakes inside the server) is reported per
phase; its worst value in the mixed phase must stay under 100 ms.

    .venv/bin/python -m bench.load                      # defaults below
    .venv/bin/python -m bench.load --quick              # a few seconds' smoke run
    .venv/bin/python -m bench.load --sessions 20 --questions 5 --churn 200 \\
        --backend-ttft-ms 50 --tokens 40 --json bench/results/load.json

Figures print as a table and go to bench/results/load-<timestamp>.json (`--json PATH`).
Exit code: 0; 1 when any session or turn failed (or, with `--strict`, when the stall or
memory target is missed); 2 when a server or model is missing or does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from tqdm import tqdm

from bench.scripted_server import FIRST_WORD, LLM_ID, SLM_ID
from models.settings import PROJECT_ROOT
from tests.chainlit_client import ChainlitClient, Turn
from tests.servers import clean_environment, free_port, make_app_root, running

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
STALL_TARGET_MS = 100.0
BROWSER_CONNECT_TIMEOUT_S = 20.0
# "Back near the start": what 200 sessions may leave behind for good (allocator slack,
# caches that grow once) is a few MB, against ~200 MB for the server at rest.
MEMORY_TOLERANCE = 0.10
QUESTIONS = (
    "What does Foundry Local enable?",
    "How do I change the small model in the chat settings?",
    "Which file types can I upload?",
    "What happens when the model server is unreachable?",
    "How is the retrieval score computed?",
)
UPLOAD_QUESTION = "Summarise what the attached reports say about the quarterly budget."
EMBEDDED_SLM_KEY = "embedded:smollm2-135m"


class Unavailable(Exception):
    """A server or model the benchmark needs is missing or did not start."""


@dataclass(frozen=True)
class LoadConfig:
    sessions: int = 20
    questions: int = 5
    churn: int = 200
    backend_ttft_ms: float = 50.0
    tokens: int = 40
    backend_tok_s: float = 200.0
    embedded_sessions: int = 2
    embedded_max_tokens: int = 64
    upload_sessions: int = 2
    upload_kb: int = 300
    # Closed tabs stay in memory for SESSION_TIMEOUT_S (120 s in the app) in case they
    # reconnect, and a streamed answer's cancelled timeouts for TOKEN_TIMEOUT_S (30 s):
    # the reading waits past both, with a shorter session timeout to keep the run short.
    settle_s: float = 40.0
    clear_sessions: bool = False  # emit clear_session before leaving, as the page's "New chat" does
    session_timeout_s: int | None = 10  # the app's SESSION_TIMEOUT_S
    server_env: tuple[tuple[str, str], ...] = ()  # extra app settings, e.g. (("EMBEDDED_THREADS", "1"),)
    turn_timeout_s: float = 180.0
    # The clients and the scripted model stand for browsers and a model server on other
    # machines: on a shared 2-core machine they run below the app's priority, so that
    # what is measured is the app, not its fight with its own load generator.
    generator_niceness: int = 10


QUICK = LoadConfig(
    sessions=3,
    questions=1,
    churn=5,
    tokens=8,
    embedded_sessions=1,
    embedded_max_tokens=16,
    upload_sessions=1,
    upload_kb=20,
    settle_s=1.0,
    session_timeout_s=None,
)


@dataclass
class TurnRecord:
    phase: str
    kind: str  # scripted | embedded | upload | churn | direct
    ttft_s: float | None = None
    error: str | None = None
    # For matching the server's record of the turn (`TurnClock`): the session, the question,
    # and when it was sent (time.perf_counter, the clock the server's records use).
    session: str | None = None
    question: str | None = None
    sent_at: float | None = None


# The steps of a turn before its first token, as `turn_phases` measures them (server records
# from bench/instrumented_server.py's TurnClock against the client's clock).
PHASES = {
    "to_server": "question sent -> off the server's socket (client, network, Socket.IO)",
    "message_in": "off the socket -> chat handler (Chainlit takes the message in)",
    "to_pipeline": "chat handler -> pipeline starts",
    "search": "search (worker thread, from call to result)",
    "context": "search done -> context chosen (question vector, meaning, evidence)",
    "model": "context chosen -> first token parsed (prompt, request, backend TTFT)",
    "model_added": "  of which beyond the backend's direct median TTFT",
    "to_client": "first token -> first word at the client (stream, socket)",
}


def turn_phases(records: list[TurnRecord], server_turns: list[dict], backend_median_ms: float | None) -> dict:
    """Each step's time (median, p95 in ms) over the turns the server recorded, matched to the
    client's by session and question (the nth time a session asks it, for a question asked again)."""

    def numbered(keys: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any, int]]:
        seen: collections.Counter[tuple[Any, Any]] = collections.Counter()
        out = []
        for key in keys:
            out.append((*key, seen[key]))
            seen[key] += 1
        return out

    asked = [r for r in records if r.sent_at is not None]
    sent = dict(zip(numbered((r.session, r.question) for r in asked), asked, strict=True))
    answered = numbered((turn.get("session"), turn.get("question")) for turn in server_turns)
    steps: dict[str, list[float]] = {name: [] for name in PHASES}
    for key, turn in zip(answered, server_turns, strict=True):
        client = sent.get(key)
        if client is None or client.sent_at is None or client.ttft_s is None or "first_token" not in turn:
            continue
        first_word = client.sent_at + client.ttft_s
        search_s = (turn.get("timings") or {}).get("retrieval_s")
        values = {
            "to_server": turn["received"] - client.sent_at if turn.get("received") else None,
            "message_in": turn["handler"] - (turn.get("received") or client.sent_at),
            "to_pipeline": turn["turn"] - turn["handler"],
            "search": search_s,
            "context": turn["retrieved"] - turn["turn"] - search_s if search_s is not None else None,
            "model": turn["first_token"] - turn["retrieved"],
            "to_client": first_word - turn["first_token"],
        }
        if backend_median_ms is not None:
            values["model_added"] = values["model"] - backend_median_ms / 1000
        for name, value in values.items():
            if value is not None:
                steps[name].append(value * 1000)
    return {name: summary(values) for name, values in steps.items()}


@dataclass
class Records:
    turns: list[TurnRecord] = field(default_factory=list)

    def add(self, record: TurnRecord) -> None:
        self.turns.append(record)

    def ttfts_ms(self, phase: str, kind: str) -> list[float]:
        return [t.ttft_s * 1000 for t in self.turns if t.phase == phase and t.kind == kind and t.ttft_s is not None]

    def errors(self) -> list[TurnRecord]:
        return [t for t in self.turns if t.error]


class TimedClient(ChainlitClient):
    """A ChainlitClient that notes when the model's first word reaches it.

    The stamp is taken in the Socket.IO event handler, as the event arrives, not when
    the turn is collected afterwards.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.first_word_at: float | None = None
        self.sent_at: float | None = None
        # A browser waits 20 s for the socket to open (socket.io-client's default) and has
        # no timeout on fetch; python-socketio gives up after 1 s and httpx after 5 s, which
        # would count a slow server as a failed one.
        self._sio.connect = functools.partial(self._sio.connect, wait_timeout=BROWSER_CONNECT_TIMEOUT_S)
        self.http.timeout = httpx.Timeout(BROWSER_CONNECT_TIMEOUT_S)

        @self._sio.on("*")
        async def record(event: str, data: Any = None) -> None:  # any JSON value
            data = data if isinstance(data, dict) else {"value": data}
            streamed = event in ("stream_start", "stream_token")
            if (
                streamed
                and self.first_word_at is None
                and FIRST_WORD in (data.get("output") or data.get("token") or "")
            ):
                self.first_word_at = time.perf_counter()
            self._events.put_nowait((event, data))

    async def timed_ask(
        self, text: str, file_ids: tuple[str, ...] = (), timeout_s: float = 180
    ) -> tuple[Turn, float | None]:
        self.first_word_at = None
        sent = self.sent_at = time.perf_counter()
        turn = await self.ask(text, file_ids, timeout_s=timeout_s)
        return turn, None if self.first_word_at is None else self.first_word_at - sent

    async def leave(self, clear: bool) -> None:
        if clear:
            await self._sio.emit("clear_session")
        await self.close()


def turn_problem(turn: Turn, scripted: bool) -> str | None:
    """Why a turn counts as an error, or None: a warning shown, or no answer streamed."""
    for message in turn.messages:
        output = message.get("output", "")
        if message.get("isError") or "⚠️" in output:
            return " ".join(output.split())[:200]
    if not turn.named("stream_start"):
        return "no answer was streamed"
    if scripted and FIRST_WORD not in turn.streamed_text():
        return "the scripted model's answer never arrived"
    return None


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = statistics.quantiles(ordered, n=100, method="inclusive")[94] if len(ordered) > 1 else ordered[0]
    return {"n": len(ordered), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def _difference(app: dict, backend: dict, key: str) -> float | None:
    return None if app[key] is None or backend[key] is None else app[key] - backend[key]


def _ratio(app: dict, backend: dict, key: str) -> float | None:
    return None if not app[key] or not backend[key] else app[key] / backend[key]


# --- documents to upload -------------------------------------------------------------

_WORDS = (
    "budget quarterly revenue forecast team hiring roadmap latency storage network customer "
    "contract renewal incident review security audit training release schedule vendor "
    "migration capacity planning support backlog metrics dashboard onboarding policy"
).split()


def report_text(kilobytes: int, seed: int) -> str:
    """A Markdown report of about `kilobytes` KB: headed sections of plain sentences."""
    rng = random.Random(seed)
    parts, size, section = [], 0, 0
    while size < kilobytes * 1024:
        section += 1
        block = [f"## Section {section}: {rng.choice(_WORDS)} {rng.choice(_WORDS)}"]
        for _ in range(4):
            sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(12, 24)))
            block.append(sentence.capitalize() + ".")
        text = "\n\n".join(block) + "\n\n"
        parts.append(text)
        size += len(text)
    return f"# Quarterly report {seed}\n\n" + "".join(parts)


def report_pdf(kilobytes: int, seed: int) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    pdf.add_page()
    for paragraph in report_text(kilobytes, seed).split("\n\n"):
        pdf.multi_cell(0, 5, paragraph.lstrip("# "))
        pdf.ln(2)
    return bytes(pdf.output())


# --- the servers ---------------------------------------------------------------------


@contextlib.contextmanager
def scripted_server(config: LoadConfig, folder: Path) -> Iterator[str]:
    """The scripted model server in its own process, so that the clients' load does not slow it."""
    port = free_port()
    below_app = ["nice", "-n", str(config.generator_niceness)] if config.generator_niceness else []
    command = [
        *below_app,
        sys.executable,
        "-m",
        "bench.scripted_server",
        "--port",
        str(port),
        "--ttft-ms",
        str(config.backend_ttft_ms),
        "--tokens",
        str(config.tokens),
        "--tok-s",
        str(config.backend_tok_s),
    ]
    base = f"http://127.0.0.1:{port}/v1"
    up = False
    try:
        with running(command, f"{base}/models", folder / "scripted.log", clean_environment(), PROJECT_ROOT):
            up = True
            yield base
    except (RuntimeError, TimeoutError) as error:
        if up:  # the benchmark's own failure, not the server's start
            raise
        raise Unavailable(
            f"the scripted model server did not start ({_first_line(error)}); log: {folder / 'scripted.log'}"
        ) from error


@contextlib.contextmanager
def app_server(config: LoadConfig, model_server: str, folder: Path) -> Iterator[str]:
    """The app (instrumented) on the scripted models."""
    env = {
        "MODEL_SERVER_URL": model_server,
        "SLM_MODEL": SLM_ID,
        "LLM_MODEL": LLM_ID,
        "ROUTER_MODE": "off",
        # Every question streams an answer (the scripted words are checked, as any answer is,
        # but a question far from the documents would get no model at all).
        "MIN_RETRIEVAL_SCORE": "0",
        **({"SESSION_TIMEOUT_S": str(config.session_timeout_s)} if config.session_timeout_s is not None else {}),
        **dict(config.server_env),
    }
    with instrumented_app(folder, env) as url:
        yield url


@contextlib.contextmanager
def instrumented_app(folder: Path, settings: Mapping[str, str], name: str = "app") -> Iterator[str]:
    """`chainlit run app.py --headless` (bench/instrumented_server.py) with `settings`, in its own
    app root and data folder under `folder`; yields its URL. Unavailable if it does not start."""
    app_root = make_app_root(folder / f"{name}-root")
    port = free_port()
    command = [sys.executable, "-m", "bench.instrumented_server", "run", "app.py", "--headless"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    # Its own chat database and login secret: never the developer's.
    env = clean_environment({"CHAINLIT_APP_ROOT": str(app_root), "DATA_DIR": str(folder / f"{name}-data"), **settings})
    base = f"http://127.0.0.1:{port}"
    log = folder / f"{name}.log"
    up = False
    try:
        with running(command, f"{base}/bench/state", log, env, PROJECT_ROOT):
            up = True
            yield base
    except (RuntimeError, TimeoutError) as error:
        if up:
            raise
        raise Unavailable(f"the {name} server did not start ({_first_line(error)}); log: {log}") from error


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# --- the benchmark -------------------------------------------------------------------


class Benchmark:
    def __init__(self, config: LoadConfig, app_url: str, model_url: str) -> None:
        self.config = config
        self.app_url = app_url
        self.model_url = model_url
        self.records = Records()
        self.http = httpx.AsyncClient(timeout=60)

    async def run(self) -> dict:
        try:
            state = await self.state(collect=False)
            self.server = psutil.Process(state["pid"])
            await self.warm_up()
            memory = await self.churn()
            await self.baseline()
            await self.turns(record=True)
            cpu_before, started = self.server.cpu_times(), time.perf_counter()
            lag_app = await self.with_loop_lag(self.app_load("app"))
            cpu_after, self.app_phase_s = self.server.cpu_times(), time.perf_counter() - started
            # All the server's threads: the loop, the chat store's, the embedding's.
            self.app_cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            self.server_turns = await self.turns(record=False)
            # Made before the phase (and its lag window): writing the PDF is the client's work.
            uploads = self.make_uploads()
            if self.config.embedded_sessions:
                # Loading the GGUF (~1 s, once per process) is not decoding: load it before the
                # phase, and after the memory reading, which must not count the model's weights.
                await self.session("warm-up", "embedded", 1, None, settings=self.decode_settings())
            lag_mixed = await self.with_loop_lag(self.mixed_load(uploads))
        finally:
            await self.http.aclose()
        return self.report(memory, {"app": lag_app, "mixed": lag_mixed, "churn": memory.pop("loop_lag")})

    async def state(self, collect: bool) -> dict:
        response = await self.http.get(f"{self.app_url}/bench/state", params={"gc": str(collect).lower()})
        response.raise_for_status()
        return response.json()

    async def turns(self, record: bool) -> list[dict]:
        """The server's records of the turns since the last call (`TurnClock`); records from now on or not."""
        response = await self.http.get(f"{self.app_url}/bench/turns", params={"record": str(record).lower()})
        response.raise_for_status()
        return response.json()["turns"]

    async def loop_lag(self, reset: bool = True) -> dict:
        response = await self.http.get(f"{self.app_url}/bench/loop-lag", params={"reset": str(reset).lower()})
        response.raise_for_status()
        return response.json()

    async def with_loop_lag(self, work: Awaitable[object]) -> dict:
        await self.loop_lag(reset=True)
        await work
        return await self.loop_lag(reset=True)

    async def session(
        self,
        phase: str,
        kind: str,
        questions: int,
        progress: tqdm | None,
        settings: dict | None = None,
        uploads: tuple[tuple[str, bytes, str], ...] = (),
    ) -> None:
        """One chat session: connect, (change settings, upload,) ask, leave; every turn recorded."""
        client = TimedClient(self.app_url)
        try:
            opening = time.perf_counter()
            await client.connect()
            self.records.add(TurnRecord(phase, "connect", time.perf_counter() - opening))
            if settings:
                await client.change_settings(settings)
            file_ids = tuple([await client.upload(name, content, mime) for name, content, mime in uploads])
            for number in range(questions):
                question = UPLOAD_QUESTION if file_ids else QUESTIONS[number % len(QUESTIONS)]
                try:
                    turn, ttft = await client.timed_ask(question, file_ids, self.config.turn_timeout_s)
                    problem = turn_problem(turn, scripted=kind != "embedded")
                except Exception as error:  # noqa: BLE001 - every failure is counted, not raised
                    ttft, problem = None, f"{type(error).__name__}: {error}"[:200]
                self.records.add(TurnRecord(phase, kind, ttft, problem, client.session_id, question, client.sent_at))
                file_ids = ()  # the files go with the first message only
                if progress is not None:
                    progress.update()
        except Exception as error:  # noqa: BLE001 - a session that cannot start is an error too
            self.records.add(TurnRecord(phase, kind, None, f"session: {type(error).__name__}: {error}"[:200]))
        finally:
            with contextlib.suppress(Exception):
                await client.leave(self.config.clear_sessions)

    async def warm_up(self) -> None:
        await self.session("warm-up", "scripted", 1, None)
        response = await self.http.get(f"{self.model_url.removesuffix('/v1')}/bench/last-request")
        self.app_request = response.json()
        if not self.app_request:
            raise Unavailable(
                "the app never called the scripted model server; is MODEL_SERVER_URL reaching it? (see the app log)"
            )

    async def churn(self) -> dict:
        config = self.config
        await asyncio.sleep(0.5)
        before = await self.state(collect=True)
        start = self.server.memory_info().rss
        peak = start
        in_use_peak = (before.get("pymalloc") or {}).get("in_use_mb")
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak, in_use_peak
            for tick in itertools.count():
                if done.is_set():
                    return
                peak = max(peak, self.server.memory_info().rss)
                if in_use_peak is not None and tick % 5 == 0:
                    in_use_peak = max(in_use_peak, await self.python_in_use_mb())
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        await self.loop_lag(reset=True)
        gate = asyncio.Semaphore(config.sessions)
        with tqdm(total=config.churn, desc="churn", unit="session", leave=False) as progress:

            async def one() -> None:
                async with gate:
                    await self.session("churn", "churn", 1, progress)

            await asyncio.gather(*(one() for _ in range(config.churn)))
        lag = await self.loop_lag(reset=True)
        done.set()
        await sampler
        after_churn = self.server.memory_info().rss
        peak = max(peak, after_churn)
        await asyncio.sleep(config.settle_s)
        after = await self.state(collect=True)
        before_types, after_types = before.pop("object_types"), after.pop("object_types")
        grown = {name: after_types.get(name, 0) - before_types.get(name, 0) for name in after_types}
        grown = dict(sorted(((n, g) for n, g in grown.items() if g > 0), key=lambda item: -item[1])[:15])
        end = self.server.memory_info().rss
        mb = 2**20
        return {
            "start_mb": start / mb,
            "peak_mb": peak / mb,
            "after_churn_mb": after_churn / mb,
            "end_mb": end / mb,
            "end_minus_start_mb": (end - start) / mb,
            "end_over_start": end / start,
            "retained_kb_per_session": (end - start) / 1024 / config.churn,
            "near_start": end <= start * (1 + MEMORY_TOLERANCE),
            "tolerance": MEMORY_TOLERANCE,
            "server_before": before,
            "server_after": after,
            "loop_lag": lag,
            "objects_grown_by_type": grown,
            # Bytes in Python objects at their highest during the churn: above the start, the
            # sessions in flight and, mostly, garbage waiting for a full collection.
            "python_in_use_peak_mb": in_use_peak,
        }

    async def python_in_use_mb(self) -> float:
        response = await self.http.get(f"{self.app_url}/bench/memory")
        response.raise_for_status()
        return response.json()["pymalloc"]["in_use_mb"]

    async def baseline(self) -> None:
        """The backend's own TTFT: the app's request, straight to the model server, same concurrency."""
        url = f"{self.model_url}/chat/completions"
        with tqdm(
            total=self.config.sessions * self.config.questions, desc="baseline", unit="req", leave=False
        ) as progress:

            async def client() -> None:
                async with httpx.AsyncClient(timeout=60) as http:
                    # Untimed: opens the connection, as the app's client has one open after the warm-up.
                    await self._direct(http, url)
                    for _ in range(self.config.questions):
                        self.records.add(await self._direct(http, url))
                        progress.update()

            await asyncio.gather(*(client() for _ in range(self.config.sessions)))

    async def _direct(self, http: httpx.AsyncClient, url: str) -> TurnRecord:
        first = None
        sent = time.perf_counter()
        try:
            async with http.stream("POST", url, json=self.app_request) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if first is None and FIRST_WORD in line:
                        first = time.perf_counter()
        except httpx.HTTPError as error:
            return TurnRecord("baseline", "direct", None, f"{type(error).__name__}: {error}"[:200])
        return TurnRecord(
            "baseline", "direct", None if first is None else first - sent, None if first else "no first word"
        )

    async def app_load(self, phase: str) -> None:
        config = self.config
        with tqdm(total=config.sessions * config.questions, desc=phase, unit="turn", leave=False) as progress:
            await asyncio.gather(
                *(self.session(phase, "scripted", config.questions, progress) for _ in range(config.sessions))
            )

    def decode_settings(self) -> dict:
        return {"slm": EMBEDDED_SLM_KEY, "max_tokens": self.config.embedded_max_tokens, "temperature": 0}

    def make_uploads(self) -> tuple[tuple[str, bytes, str], ...]:
        text = report_text(self.config.upload_kb, seed=1).encode()
        pdf = report_pdf(self.config.upload_kb, seed=2)
        self.upload_sizes_kb = {"text": len(text) / 1024, "pdf": len(pdf) / 1024}
        return ("report.md", text, "text/plain"), ("report.pdf", pdf, "application/pdf")

    async def mixed_load(self, uploads: tuple[tuple[str, bytes, str], ...]) -> None:
        config = self.config
        scripted_done = asyncio.Event()
        decode_settings = self.decode_settings()

        async def until_done(**session: Any) -> None:
            # At least once, then again for as long as the scripted sessions run.
            while True:
                await self.session("mixed", questions=1, progress=None, **session)
                if scripted_done.is_set():
                    return

        async def scripted() -> None:
            await self.app_load("mixed")
            scripted_done.set()

        await asyncio.gather(
            scripted(),
            *(until_done(kind="embedded", settings=decode_settings) for _ in range(config.embedded_sessions)),
            *(until_done(kind="upload", uploads=uploads) for _ in range(config.upload_sessions)),
        )

    def report(self, memory: dict, lags: dict) -> dict:
        records = self.records
        backend = summary(records.ttfts_ms("baseline", "direct"))
        app = summary(records.ttfts_ms("app", "scripted"))
        mixed = summary(records.ttfts_ms("mixed", "scripted"))
        errors = records.errors()
        by_phase: dict[str, int] = {}
        for error in errors:
            by_phase[f"{error.phase}/{error.kind}"] = by_phase.get(f"{error.phase}/{error.kind}", 0) + 1
        distinct = list(dict.fromkeys(error.error for error in errors))
        worst_mixed = lags["mixed"]["max_ms"]
        for lag in lags.values():
            for stall in lag.get("stalls", []):
                stall["cause"] = stall_cause(stall)
        counts: dict[str, int] = {}
        for turn in records.turns:
            key = f"{turn.phase}/{turn.kind}"
            counts[key] = counts.get(key, 0) + 1
        return {
            "config": asdict(self.config),
            "errors": {"count": len(errors), "by_phase": by_phase, "messages": distinct[:10]},
            "turns": counts,
            "ttft_ms": {
                "backend": backend,
                "app": app,
                "app_mixed_load": mixed,
                "added": {key: _difference(app, backend, key) for key in ("median", "p95")},
                "ratio": {key: _ratio(app, backend, key) for key in ("median", "p95")},
                # Where the app phase's time to first token goes, step by step (`turn_phases`).
                "phases": turn_phases(
                    [turn for turn in records.turns if turn.phase == "app" and turn.kind == "scripted"],
                    getattr(self, "server_turns", []),
                    backend["median"],
                ),
            },
            # The server's CPU time (all threads) per answer in the app phase, and answers per second.
            "app_phase": _app_phase(getattr(self, "app_cpu_s", None), getattr(self, "app_phase_s", None), app["n"]),
            # Opening a session: sign-in, socket, on_chat_start (connect to its first task_end).
            "connect_ms": {phase: summary(records.ttfts_ms(phase, "connect")) for phase in ("churn", "app", "mixed")},
            "loop_lag_ms": lags,
            "stall": {
                "worst_ms": worst_mixed,
                "target_ms": STALL_TARGET_MS,
                "ok": worst_mixed is not None and worst_mixed < STALL_TARGET_MS,
            },
            "memory": memory,
            "uploads_kb": getattr(self, "upload_sizes_kb", None),
        }


def _app_phase(cpu_s: float | None, seconds: float | None, answers: int) -> dict:
    if cpu_s is None or not seconds or not answers:
        return {"cpu_ms_per_answer": None, "answers_per_s": None}
    return {"cpu_ms_per_answer": cpu_s / answers * 1000, "answers_per_s": answers / seconds}


def print_report(result: dict) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    c = result["config"]
    t = result["ttft_ms"]
    print(
        f"\nLoad: {c['sessions']} sessions x {c['questions']} questions, churn {c['churn']}; scripted model "
        f"TTFT {c['backend_ttft_ms']:g} ms, {c['tokens']} tokens at {c['backend_tok_s']:g} tok/s; "
        f"mixed load adds {c['embedded_sessions']} embedded-decode and {c['upload_sessions']} upload sessions"
    )
    env = result["environment"]
    print(
        f"machine: {env['cpus']} CPUs, load average {env['load_average_1m_before']:.1f} before and "
        f"{env['load_average_1m_after']:.1f} after (other processes compete for the same cores)"
    )
    if c["generator_niceness"]:
        print(f"clients and scripted model at nice +{c['generator_niceness']}, below the app")
    print(f"\n{'time to first token (ms)':<32} {'n':>5} {'median':>8} {'p95':>8}")
    for label, key in (
        ("backend, direct", "backend"),
        ("app, over Socket.IO", "app"),
        ("app, during mixed load", "app_mixed_load"),
    ):
        print(f"{label:<32} {t[key]['n']:>5} {ms(t[key]['median']):>8} {ms(t[key]['p95']):>8}")
    added, ratio = t["added"], t["ratio"]
    print(f"{'app-added (app - backend)':<32} {'':>5} {ms(added['median']):>8} {ms(added['p95']):>8}")
    print(
        f"{'ratio (app / backend)':<32} {'':>5} "
        f"{'n/a' if ratio['median'] is None else format(ratio['median'], '.2f'):>8} "
        f"{'n/a' if ratio['p95'] is None else format(ratio['p95'], '.2f'):>8}"
    )
    work = result.get("app_phase") or {}
    if work.get("cpu_ms_per_answer") is not None:
        print(
            f"app phase: {work['cpu_ms_per_answer']:.1f} ms of server CPU per answer (all its threads), "
            f"{work['answers_per_s']:.1f} answers/s"
        )
    phases = t.get("phases") or {}
    if any(phase["n"] for phase in phases.values()):
        print(f"\n{'app phase, step by step (ms)':<32} {'n':>5} {'median':>8} {'p95':>8}")
        for name, phase in phases.items():
            print(f"{name:<32} {phase['n']:>5} {ms(phase['median']):>8} {ms(phase['p95']):>8}  {PHASES[name]}")
    print(f"\n{'opening a session (ms)':<32} {'n':>5} {'median':>8} {'p95':>8}")
    for phase, connect in result["connect_ms"].items():
        print(f"{phase:<32} {connect['n']:>5} {ms(connect['median']):>8} {ms(connect['p95']):>8}")

    print(f"\n{'event-loop lag (ms)':<32} {'samples':>7} {'p50':>8} {'p99':>8} {'max':>8}")
    for label, key in (("churn", "churn"), ("app load (scripted)", "app"), ("mixed (decode + uploads)", "mixed")):
        lag = result["loop_lag_ms"][key]
        print(f"{label:<32} {lag['samples']:>7} {ms(lag['p50_ms']):>8} {ms(lag['p99_ms']):>8} {ms(lag['max_ms']):>8}")
    stall = result["stall"]
    print(
        f"worst stall under mixed load: {ms(stall['worst_ms'])} ms  "
        f"{'PASS' if stall['ok'] else 'FAIL'} (target < {stall['target_ms']:g} ms)"
    )

    for stall in result["loop_lag_ms"]["mixed"].get("stalls", [])[:3]:
        print(f"  stall {stall['lag_ms']:.0f} ms [{stall_cause(stall)}]; {_where(stall['threads'])}")
    collected = result["loop_lag_ms"]["mixed"].get("gc")
    if collected:
        print(
            "  garbage collections in the mixed phase (generation 0/1/2): "
            + "/".join(str(n) for n in collected["counts"])
            + ", longest "
            + "/".join(f"{ms:.1f}" for ms in collected["worst_ms"])
            + " ms; "
            + f"up to {collected.get('full_collection_objects_max', 0)} objects scanned by a full one; "
            + f"at most {result['loop_lag_ms']['mixed'].get('timer_heap_max', 0)} timers in the loop's heap"
        )

    m = result["memory"]
    print(
        f"\nserver RSS (MB), {c['churn']} sessions opened and closed"
        f"{' with clear_session' if c['clear_sessions'] else ''}:"
    )
    print(
        f"  start {m['start_mb']:.1f}  peak {m['peak_mb']:.1f}  end {m['end_mb']:.1f}  "
        f"end-start {m['end_minus_start_mb']:+.1f} ({m['retained_kb_per_session']:.1f} KB/session)  "
        f"end/start {m['end_over_start']:.3f}  "
        f"{'PASS' if m['near_start'] else 'FAIL'} (within {m['tolerance']:.0%} of start)"
    )
    held = (
        "chainlit_sessions",
        "user_sessions",
        "chat_contexts",
        "knowledge_bases",
        "asyncio_tasks",
        "threads",
        "python_objects",
    )
    before, after = m["server_before"], m["server_after"]
    print(
        f"  after gc and settling, before malloc_trim: {after['rss_before_trim_mb']:.1f} MB "
        f"(start {before['rss_before_trim_mb']:.1f}); the end figure is after malloc_trim"
    )
    print("  held by the server, before -> after: " + ", ".join(f"{key} {before[key]} -> {after[key]}" for key in held))

    peak = m.get("python_in_use_peak_mb")
    breakdowns = (
        (
            "C allocator",
            "malloc",
            (f"; Python's allocated blocks {before['python_allocated_blocks']} -> {after['python_allocated_blocks']}"),
        ),
        ("resident", "rss_parts_mb", ""),
        ("Python's allocator", "pymalloc", f"; in use at most {peak:.1f} during the churn" if peak else ""),
    )
    for label, key, more in breakdowns:
        if before.get(key) and after.get(key):
            print(
                f"  {label} (MB), before -> after: "
                + ", ".join(
                    f"{name.removesuffix('_mb')} {before[key][name]:.1f} -> {after[key][name]:.1f}"
                    for name in before[key]
                )
                + more
            )
    grown = list(m["objects_grown_by_type"].items())[:6]
    if grown:
        print("  most grown object types: " + ", ".join(f"{name} +{count}" for name, count in grown))

    errors = result["errors"]
    print(
        f"\nerrors: {errors['count']}  {'PASS' if errors['count'] == 0 else 'FAIL'}"
        + (f"  ({', '.join(f'{k} {v}' for k, v in errors['by_phase'].items())})" if errors["by_phase"] else "")
    )
    for message in errors["messages"][:3]:
        print(f"  {message}")


def stall_cause(stall: dict) -> str:
    """What kept the loop: a garbage collection, code on it, or no CPU for the process."""
    threads = stall["threads"]
    if stall.get("gc_ms", 0) >= stall["lag_ms"] / 2:
        return f"gc generation {max(stall['gc_generations'])}, {stall['gc_ms']:.0f} ms"
    if not threads:
        return "gil-held"  # one long C call kept the watchdog out too
    loop = threads.get("event-loop") or [""]
    if "selectors.py" in loop[-1]:
        # Idle in select and still late: the process got no CPU (other processes, or
        # decode threads on every core) - not code on the loop.
        return "cpu-starved"
    # Inside Python code: running its own work, or waiting for the GIL/CPU at that line.
    return "in-code"


def _where(threads: dict[str, list[str]] | None) -> str:
    """The event loop's innermost frame and what the other busy threads were doing."""
    if not threads:
        return "no stack captured (the GIL was held throughout, e.g. by one long C call)"
    loop = threads.get("event-loop", ["?"])
    others = [
        f"{name}: {stack[-1]}"
        for name, stack in threads.items()
        if name != "event-loop" and stack and not _idle(stack[-1])
    ]
    return f"event loop at {loop[-1]}" + (f"; busy: {'; '.join(others)}" if others else "")


def _idle(frame: str) -> bool:
    # Where a thread waits for work: a pool worker's queue, aiosqlite's request queue.
    waiting = ("threading.py", "queue.py", "selectors.py", "_watch", "thread.py:81 _worker", "aiosqlite/core.py:59 ")
    return any(word in frame for word in waiting)


def add_scripted_model_arguments(parser: argparse.ArgumentParser, d: LoadConfig | Any) -> None:
    """The scripted model server's pace, for every benchmark that runs on it."""
    parser.add_argument(
        "--backend-ttft-ms", type=float, help=f"scripted model's time to first token (default {d.backend_ttft_ms:g})"
    )
    parser.add_argument("--tokens", type=int, help=f"tokens per scripted answer (default {d.tokens})")
    parser.add_argument(
        "--backend-tok-s", type=float, help=f"scripted model's token rate (default {d.backend_tok_s:g})"
    )


def parse_args(argv: list[str] | None) -> tuple[LoadConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    d = LoadConfig()
    parser.add_argument("--sessions", type=int, help=f"concurrent sessions (default {d.sessions})")
    parser.add_argument("--questions", type=int, help=f"questions per session (default {d.questions})")
    parser.add_argument(
        "--churn", type=int, help=f"sessions opened and closed for the memory reading (default {d.churn})"
    )
    add_scripted_model_arguments(parser, d)
    parser.add_argument(
        "--embedded-sessions",
        type=int,
        help=f"sessions decoding with the embedded SLM during the mixed phase (default {d.embedded_sessions})",
    )
    parser.add_argument(
        "--embedded-max-tokens", type=int, help=f"max tokens of those answers (default {d.embedded_max_tokens})"
    )
    parser.add_argument(
        "--upload-sessions",
        type=int,
        help=f"sessions uploading files during the mixed phase (default {d.upload_sessions})",
    )
    parser.add_argument(
        "--upload-kb", type=int, help=f"size of each uploaded report, text and PDF (default {d.upload_kb})"
    )
    parser.add_argument(
        "--settle-s", type=float, help=f"pause after the churn before the last memory reading (default {d.settle_s:g})"
    )
    parser.add_argument(
        "--clear-sessions",
        action="store_true",
        default=None,
        help="clients emit clear_session before leaving (the page's 'New chat') instead of just closing",
    )
    parser.add_argument(
        "--session-timeout",
        dest="session_timeout_s",
        type=int,
        help="the app's SESSION_TIMEOUT_S: how long a closed tab's session is kept (s)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        metavar="NAME=VALUE",
        default=[],
        help="an extra setting for the app server, e.g. EMBEDDED_THREADS=1 (repeatable)",
    )
    parser.add_argument(
        "--cycles",
        type=Path,
        metavar="FILE",
        help="write what the garbage collector freed during the churn to FILE, by type: the "
        "objects that sessions leave in reference cycles (the memory figures of such a run "
        "are not comparable: the collector keeps all it finds until the end)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 sessions x 1 question, churn 5, small files"
    )
    parser.add_argument("--json", type=Path, help="output file (default bench/results/load-<timestamp>.json)")
    parser.add_argument(
        "--generator-nice",
        dest="generator_niceness",
        type=int,
        help=f"run the clients and the scripted model this much below the app's CPU priority "
        f"(default {d.generator_niceness}; 0 to compete with it on equal terms)",
    )
    parser.add_argument("--strict", action="store_true", help="also exit 1 when the stall or memory target is missed")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else LoadConfig()
    given = {
        name: getattr(args, name)
        for name in asdict(base)
        if name != "server_env" and getattr(args, name, None) is not None
    }
    pairs = [item.partition("=") for item in args.server_env]
    if any(not name or not equals for name, equals, _ in pairs):
        parser.error("--server-env takes NAME=VALUE")
    given["server_env"] = tuple((name, value) for name, _, value in pairs)
    if args.cycles:
        given["server_env"] += (("BENCH_CYCLES_OUT", str(args.cycles.resolve())),)
    config = replace(base, **given)
    if config.sessions < 1 or config.questions < 1 or config.churn < 1:
        parser.error("--sessions, --questions and --churn must be at least 1")
    return config, args


def _check_models(config: LoadConfig) -> None:
    if config.embedded_sessions:
        from models.weights import smollm2_path

        try:
            smollm2_path()
        except (FileNotFoundError, ImportError) as error:
            raise Unavailable(f"the embedded SLM is missing: {error} (or run with --embedded-sessions 0)") from error


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.json or RESULTS_DIR / f"load-{stamp}.json"
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        _check_models(config)
        with scripted_server(config, folder) as model_url, app_server(config, model_url, folder) as app_url:
            if config.generator_niceness:
                os.nice(config.generator_niceness)  # the app server, already started, keeps its own
            result = asyncio.run(Benchmark(config, app_url, model_url).run())
    except Unavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"error: lost the app server ({type(error).__name__}: {error}); logs in {folder}", file=sys.stderr)
        return 2
    shutil.rmtree(folder, ignore_errors=True)
    result = recorded(result, "bench.load", argv, stamp, started, load_before)
    print_report(result)
    write_result(result, out)
    if args.cycles:
        print(
            f"wrote {args.cycles}: the objects the churn's sessions left in reference cycles "
            "(this run's memory figures are not comparable: the collector kept them all)"
        )
    if result["errors"]["count"]:
        return 1
    if args.strict and not (result["stall"]["ok"] and result["memory"]["near_start"]):
        return 1
    return 0


def recorded(
    result: dict,
    command: str,
    argv: list[str] | None,
    stamp: str,
    started: float,
    load_before: tuple[float, float, float],
    packages: tuple[str, ...] = ("chainlit",),
) -> dict:
    """A run's figures with what ran, when, and on what machine."""
    return {
        "command": " ".join([f"python -m {command}", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": stamp,
        "duration_s": time.perf_counter() - started,
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            **{package: _version(package) for package in packages},
            "machine": platform.machine(),
            # The figures are only as quiet as the machine: other work shows here.
            "load_average_1m_before": load_before[0],
            "load_average_1m_after": os.getloadavg()[0],
        },
        **result,
    }


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({result['duration_s']:.0f} s)")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
