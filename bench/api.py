"""The OpenAI-compatible API against the chat page: time to first token, and concurrent streams.

Clients: the unchanged `openai` package (`AsyncOpenAI` pointed at `<app>/v1`, streaming) and
the chat page's Socket.IO client of the load benchmark (`bench.load.TimedClient`). Both ask
real app servers (`bench/instrumented_server.py`: `chainlit run app.py --headless` plus its
loop-lag monitor), each in its own app root and DATA_DIR. Two parts, in this order, one run:

1. embedded: the app as `make run` starts it (no model server: the embedded default models
   and settings, with EMBED_CORPUS_AHEAD=false so that background embedding does not compete).
   A fixed choice of handbook questions (evaluation/handbook) x `--rounds`, one request at a
   time, the two clients alternating which goes first; every question is asked once, untimed,
   before (model loads, sentence embeddings). Chat page TTFT = the first streamed token of the
   answer reaching the Socket.IO client - the question sent (a new chat per question). API
   TTFT = the first chunk with non-empty `delta.content` - the request; also the first
   non-empty content or `reasoning_content`, and the whole answer. Target: median API TTFT /
   median page TTFT <= 1.10.
2. concurrent: the app on the scripted model server (`bench/scripted_server.py`, as
   bench.load starts it), answers as written (the tests' AS_WRITTEN: no support check, no
   scope threshold, compose). Every question is asked once first, untimed. Baseline:
   `--chat-users` chat users asking `--baseline-questions` each with no API load, then
   `--baseline-streams` single API streams one at a time. Then `--waves` waves of `--streams`
   concurrent API streams while the chat users keep asking. A chat user asks each question
   in a new chat (no history, as the API requests here have none; opening it is not timed).
   Errors (API and chat, warm-ups included) must be 0.

    .venv/bin/python -m bench.api                        # defaults below (about 2-3 minutes)
    .venv/bin/python -m bench.api --quick                # a smoke run of both parts
    .venv/bin/python -m bench.api --quick --skip-embedded --json /tmp/api.json

Figures print as a table and go to bench/results/api-<timestamp>.json (`--json PATH`).
Exit code: 0; 1 when any request or chat turn failed or the TTFT ratio is over its target;
2 when a server or model is missing or does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
from tqdm import tqdm

from bench.load import (
    QUESTIONS,
    RESULTS_DIR,
    LoadConfig,
    TimedClient,
    Unavailable,
    add_scripted_model_arguments,
    app_server,
    instrumented_app,
    recorded,
    scripted_server,
    summary,
    turn_problem,
    write_result,
)
from bench.scripted_server import FIRST_WORD
from models.settings import PROJECT_ROOT
from tests.servers import AS_WRITTEN

TTFT_RATIO_TARGET = 1.10
HANDBOOK = PROJECT_ROOT / "evaluation" / "handbook" / "questions.jsonl"
# Answerable handbook questions on several pages, in the order used (`--questions N` takes the first N).
HANDBOOK_IDS = ("hb-001", "hb-010", "hb-019", "hb-023", "hb-038", "hb-050", "hb-002", "hb-030")
API_MODEL = "knowledge-assistant"
# The app on the scripted model, answering as the model wrote (see tests/servers.py).
SCRIPTED_APP_ENV = (*AS_WRITTEN.items(), ("EMBED_CORPUS_AHEAD", "false"))


@dataclass(frozen=True)
class ApiConfig:
    # part 1: the embedded default models, one request at a time
    embedded: bool = True
    questions: int = 6
    rounds: int = 4
    # part 2: concurrent API streams on the scripted model, with chat users
    concurrent: bool = True
    streams: int = 20
    waves: int = 5
    chat_users: int = 5
    baseline_questions: int = 3  # per chat user, with no API load
    baseline_streams: int = 10  # single API streams, one at a time
    backend_ttft_ms: float = 50.0
    tokens: int = 40
    backend_tok_s: float = 200.0
    turn_timeout_s: float = 180.0
    # As in bench.load: the clients and the scripted model stand for other machines (part 2 only).
    generator_niceness: int = 10


QUICK = ApiConfig(
    questions=2, rounds=1, streams=5, waves=1, chat_users=2, baseline_questions=1, baseline_streams=2, tokens=8
)


@dataclass
class Timed:
    """One chat turn or API request."""

    part: str  # embedded | concurrent
    phase: str  # warm-up | timed | baseline | load
    client: str  # page | api
    question: str
    ttft_s: float | None = None  # first answer text: a streamed token (page), non-empty delta.content (API)
    first_text_s: float | None = None  # API: first non-empty content or reasoning_content
    total_s: float | None = None
    error: str | None = None
    order: int | None = None  # part 1: 0 when this client went first on the question, 1 when second
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Log:
    records: list[Timed] = field(default_factory=list)

    def add(self, record: Timed) -> Timed:
        self.records.append(record)
        return record

    def select(self, part: str, phase: str, client: str) -> list[Timed]:
        return [r for r in self.records if (r.part, r.phase, r.client) == (part, phase, client)]

    def after_finish_ms(self, part: str, phase: str) -> list[float]:
        """API requests: from the chunk with finish_reason to the end of the stream."""
        return [
            (r.total_s - r.extra["finish_s"]) * 1000
            for r in self.select(part, phase, "api")
            if r.error is None and r.total_s is not None and r.extra.get("finish_s") is not None
        ]

    def ms(self, part: str, phase: str, client: str, key: str = "ttft_s") -> list[float]:
        values = (getattr(r, key) for r in self.select(part, phase, client) if r.error is None)
        return [value * 1000 for value in values if value is not None]


# --- pure figures ----------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if not numerator or not denominator else numerator / denominator


def ttft_comparison(pairs: Sequence[tuple[float | None, float | None]], target: float = TTFT_RATIO_TARGET) -> dict:
    """Median API TTFT over median chat-page TTFT, against the target. `pairs`: (page, API) TTFTs
    of the same question in the same round, None where that request failed; the paired ratio is
    the median of the per-question ratios where both answered."""
    page = summary([p for p, _ in pairs if p is not None])
    api = summary([a for _, a in pairs if a is not None])
    value = ratio(api["median"], page["median"])
    per_question = [a / p for p, a in pairs if p and a is not None]
    return {
        "page": page,
        "api": api,
        "ratio_median": value,
        "paired_ratio_median": statistics.median(per_question) if per_question else None,
        "target": target,
        "ok": value is not None and value <= target,
    }


def error_summary(records: Sequence[Timed]) -> dict:
    """Errors by client and by part/phase/client, with the first message of each client."""
    failed = [r for r in records if r.error]
    by_phase: dict[str, int] = {}
    for record in failed:
        key = f"{record.part}/{record.phase}/{record.client}"
        by_phase[key] = by_phase.get(key, 0) + 1
    clients = {
        client: {
            "count": sum(1 for r in failed if r.client == client),
            "first": next((r.error for r in failed if r.client == client), None),
        }
        for client in ("api", "page")
    }
    return {
        "count": len(failed),
        **clients,
        "by_phase": by_phase,
        "messages": list(dict.fromkeys(r.error for r in failed))[:10],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def handbook_questions(count: int) -> list[dict]:
    with HANDBOOK.open(encoding="utf-8") as lines:
        questions = {q["id"]: q for q in map(json.loads, filter(str.strip, lines))}
    return [{"id": qid, "question": questions[qid]["question"]} for qid in HANDBOOK_IDS[:count]]


# --- the clients -----------------------------------------------------------------------


class FirstTokenClient(TimedClient):
    """bench.load's TimedClient, stamping the first non-empty streamed token whatever its words
    (the embedded models' answers do not start with the scripted model's first word)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)

        @self._sio.on("*")
        async def record(event: str, data: Any = None) -> None:  # replaces TimedClient's handler
            data = data if isinstance(data, dict) else {"value": data}
            if (
                self.first_word_at is None
                and event in ("stream_start", "stream_token")
                and (data.get("output") or data.get("token"))
            ):
                self.first_word_at = time.perf_counter()
            self._events.put_nowait((event, data))


async def page_turn(app_url: str, question: str, *, part: str, phase: str, scripted: bool, timeout_s: float) -> Timed:
    """A new chat (a tab opened), one question, the tab closed: every question without history,
    as each API request here is. Opening the chat is not timed (`extra.connect_s`)."""
    client = TimedClient(app_url) if scripted else FirstTokenClient(app_url)
    record = Timed(part, phase, "page", question)
    try:
        opening = time.perf_counter()
        await client.connect()
        record.extra["connect_s"] = time.perf_counter() - opening
        sent = time.perf_counter()
        turn, ttft = await client.timed_ask(question, timeout_s=timeout_s)
        record.total_s = time.perf_counter() - sent
        record.ttft_s = record.first_text_s = ttft
        record.error = turn_problem(turn, scripted)
        if record.error is None and ttft is None:
            record.error = "no token of the answer was streamed"
    except Exception as error:  # noqa: BLE001 - every failure is counted, not raised
        record.error = f"{type(error).__name__}: {error}"[:200]
    finally:
        with contextlib.suppress(Exception):
            await client.leave(False)
    return record


async def api_request(
    client: openai.AsyncOpenAI, question: str, *, part: str, phase: str, scripted: bool, model: str = API_MODEL
) -> Timed:
    """One streamed chat completion, timed from the request to its first content, first text and end."""
    record = Timed(part, phase, "api", question)
    content: list[str] = []
    finish, finish_s = None, None
    last_extra: dict[str, Any] = {}
    usage = None
    sent = time.perf_counter()
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], stream=True
        )
        async for chunk in stream:
            now = time.perf_counter() - sent
            if chunk.choices:
                delta = chunk.choices[0].delta
                reasoning = getattr(delta, "reasoning_content", None)
                if delta.content and record.ttft_s is None:
                    record.ttft_s = now
                if (delta.content or reasoning) and record.first_text_s is None:
                    record.first_text_s = now
                content.append(delta.content or "")
                if chunk.choices[0].finish_reason and finish is None:
                    finish, finish_s = chunk.choices[0].finish_reason, now
            usage = chunk.usage or usage
            if chunk.model_extra:
                last_extra = {**last_extra, **chunk.model_extra}
        record.total_s = time.perf_counter() - sent
    except Exception as error:  # noqa: BLE001 - every failure is counted, not raised
        record.error = f"{type(error).__name__}: {error}"[:200]
        return record
    text = "".join(content)
    missing = [name for name in ("knowledge_sources", "knowledge_timings") if name not in last_extra] + (
        [] if usage else ["usage"]
    )
    timings = last_extra.get("knowledge_timings") or {}
    record.extra = {
        # The model whose answer stands, else where the reply came from (e.g. quotes).
        "answered_by": timings.get("answered_by") or timings.get("answer_source"),
        "router": (timings.get("router") or {}).get("mode"),
        "server_total_s": timings.get("total_s"),
        "completion_tokens": usage.completion_tokens if usage else None,
        "chars": len(text),
        # The chunk with finish_reason, then the end of the stream ([DONE]): the gap is the app's
        # work after the answer (saving the conversation to the chat history).
        "finish_s": finish_s,
    }
    if record.ttft_s is None:
        record.error = "no content was streamed"
    elif scripted and FIRST_WORD not in text:
        record.error = "the scripted model's answer never arrived"
    elif finish is None:
        record.error = "no finish_reason"
    elif missing:
        record.error = f"the last chunk lacks {', '.join(missing)}"
    return record


def api_client(app_url: str, timeout_s: float) -> openai.AsyncOpenAI:
    # Login is off: the API answers this machine with any key. No retries: a failure is counted.
    return openai.AsyncOpenAI(base_url=f"{app_url}/v1", api_key="bench-api", max_retries=0, timeout=timeout_s)


async def loop_lag(http: httpx.AsyncClient, app_url: str) -> dict:
    """The app's event-loop lag since the last call (bench/instrumented_server.py), then reset."""
    response = await http.get(f"{app_url}/bench/loop-lag", params={"reset": "true"})
    response.raise_for_status()
    lag = response.json()
    return {key: lag.get(key) for key in ("samples", "p50_ms", "p99_ms", "max_ms")}


# --- the servers -----------------------------------------------------------------------


@contextlib.contextmanager
def embedded_app_server(folder: Path) -> Iterator[str]:
    """The app as `make run` starts it, on the embedded default models, without embedding the
    corpus ahead (it would compete with what is measured)."""
    with instrumented_app(folder, {"EMBED_CORPUS_AHEAD": "false"}, name="embedded-app") as url:
        yield url


def load_config(config: ApiConfig) -> LoadConfig:
    """bench.load's settings for its scripted model server and app server."""
    return LoadConfig(
        backend_ttft_ms=config.backend_ttft_ms,
        tokens=config.tokens,
        backend_tok_s=config.backend_tok_s,
        session_timeout_s=None,
        server_env=SCRIPTED_APP_ENV,
        generator_niceness=config.generator_niceness,
        turn_timeout_s=config.turn_timeout_s,
    )


# --- part 1: the embedded default models, one request at a time --------------------------


async def embedded_part(config: ApiConfig, app_url: str, log: Log) -> dict:
    chosen = handbook_questions(config.questions)
    questions = [q["question"] for q in chosen]
    api = api_client(app_url, config.turn_timeout_s)

    async def page(question: str, phase: str) -> Timed:
        return log.add(
            await page_turn(
                app_url, question, part="embedded", phase=phase, scripted=False, timeout_s=config.turn_timeout_s
            )
        )

    async def ask_api(question: str, phase: str) -> Timed:
        return log.add(await api_request(api, question, part="embedded", phase=phase, scripted=False))

    pairs: list[tuple[float | None, float | None]] = []
    try:
        # Untimed: loads the models and embeds the sentences each question's passages need.
        with tqdm(total=len(questions), desc="embedded warm-up", unit="question", leave=False) as progress:
            for number, question in enumerate(questions):
                await (page if number % 2 == 0 else ask_api)(question, "warm-up")
                progress.update()
        total = config.rounds * len(questions) * 2
        with tqdm(total=total, desc="embedded", unit="request", leave=False) as progress:
            for round_number in range(config.rounds):
                for number, question in enumerate(questions):
                    page_first = (round_number + number) % 2 == 0
                    timed: dict[str, float | None] = {}
                    for position, ask in enumerate((page, ask_api) if page_first else (ask_api, page)):
                        record = await ask(question, "timed")
                        record.order = position
                        timed[record.client] = None if record.error else _ms(record.ttft_s)
                        progress.update()
                    pairs.append((timed["page"], timed["api"]))
    finally:
        await api.close()
    comparison = ttft_comparison(pairs)
    api_records = log.select("embedded", "timed", "api")
    return {
        "questions": chosen,
        "rounds": config.rounds,
        "ttft_ms": {
            "page": comparison["page"],
            "api_content": comparison["api"],
            "api_first_text": summary(log.ms("embedded", "timed", "api", "first_text_s")),
        },
        "total_ms": {
            "page": summary(log.ms("embedded", "timed", "page", "total_s")),
            "api": summary(log.ms("embedded", "timed", "api", "total_s")),
            "api_after_finish": summary(log.after_finish_ms("embedded", "timed")),
        },
        "ratio": {key: comparison[key] for key in ("ratio_median", "paired_ratio_median", "target", "ok")},
        "by_order_ms": {
            f"{client}_{'first' if order == 0 else 'second'}": summary(
                [r.ttft_s * 1000 for r in log.select("embedded", "timed", client) if r.order == order and r.ttft_s]
            )
            for client in ("page", "api")
            for order in (0, 1)
        },
        "answered_by": dict(Counter(str(r.extra.get("answered_by")) for r in api_records if r.extra).most_common()),
        "router_modes": sorted({str(r.extra.get("router")) for r in api_records if r.extra}),
    }


# --- part 2: concurrent API streams on the scripted model, with chat users ----------------


async def concurrent_part(config: ApiConfig, app_url: str, log: Log) -> dict:
    api = api_client(app_url, config.turn_timeout_s)
    http = httpx.AsyncClient(timeout=60)
    questions = list(QUESTIONS)

    def ask_api(question: str, phase: str) -> Awaitable[Timed]:
        return api_request(api, question, part="concurrent", phase=phase, scripted=True)

    def ask_page(question: str, phase: str) -> Awaitable[Timed]:
        return page_turn(
            app_url, question, part="concurrent", phase=phase, scripted=True, timeout_s=config.turn_timeout_s
        )

    async def user(number: int, phase: str, more: Callable[[int], bool], progress: tqdm | None) -> None:
        """One chat user: a question in a new chat, then the next (the questions rotated per user)."""
        asked = 0
        while more(asked):
            log.add(await ask_page(questions[(number + asked) % len(questions)], phase))
            asked += 1
            if progress is not None:
                progress.update()

    async def users(phase: str, more: Callable[[int], bool], progress: tqdm | None) -> None:
        await asyncio.gather(*(user(number, phase, more, progress) for number in range(config.chat_users)))

    lags = {}
    try:
        # Untimed: one chat turn, then every question once through the API, one at a time. A
        # question's first answer embeds its passages' sentences (seconds of CPU, once): the
        # timed phases must not count that, nor wait behind it.
        log.add(await ask_page(questions[0], "warm-up"))
        for question in questions:
            log.add(await ask_api(question, "warm-up"))
        await loop_lag(http, app_url)

        with tqdm(
            total=config.chat_users * config.baseline_questions, desc="baseline chat", unit="turn", leave=False
        ) as progress:
            await users("baseline", lambda asked: asked < config.baseline_questions, progress)
        lags["baseline_chat"] = await loop_lag(http, app_url)
        for number in range(config.baseline_streams):
            log.add(await ask_api(questions[number % len(questions)], "baseline"))
        lags["baseline_api"] = await loop_lag(http, app_url)

        waves_done = asyncio.Event()

        async def waves(progress: tqdm) -> None:
            try:
                for wave in range(config.waves):
                    first = wave * config.streams
                    records = await asyncio.gather(
                        *(ask_api(questions[(first + n) % len(questions)], "load") for n in range(config.streams))
                    )
                    for number, record in enumerate(records):
                        record.extra["wave"] = wave
                        record.extra["stream"] = number
                        log.add(record)
                    progress.update(len(records))
            finally:
                waves_done.set()

        with tqdm(total=config.streams * config.waves, desc="API load", unit="stream", leave=False) as progress:
            # Each chat user asks at least once, and again for as long as the waves last.
            await asyncio.gather(
                waves(progress), users("load", lambda asked: asked == 0 or not waves_done.is_set(), None)
            )
        lags["load"] = await loop_lag(http, app_url)
    finally:
        await api.close()
        await http.aclose()

    def figures(phase: str, client: str, key: str = "ttft_s") -> dict:
        return summary(log.ms("concurrent", phase, client, key))

    baseline = {
        "chat_ttft_ms": figures("baseline", "page"),
        "api_ttft_ms": figures("baseline", "api"),
        "api_total_ms": figures("baseline", "api", "total_s"),
        "api_after_finish_ms": summary(log.after_finish_ms("concurrent", "baseline")),
    }
    load: dict[str, Any] = {
        "api_ttft_ms": figures("load", "api"),
        "api_total_ms": figures("load", "api", "total_s"),
        "api_after_finish_ms": summary(log.after_finish_ms("concurrent", "load")),
        "chat_ttft_ms": figures("load", "page"),
        "chat_turns": len(log.select("concurrent", "load", "page")),
    }
    connects = [
        r.extra["connect_s"] * 1000
        for r in log.records
        if r.part == "concurrent" and r.phase in ("baseline", "load") and "connect_s" in r.extra
    ]
    return {
        "baseline": baseline,
        "load": load,
        "ratio": {
            "chat_load_over_baseline": {
                key: ratio(load["chat_ttft_ms"][key], baseline["chat_ttft_ms"][key]) for key in ("median", "p95")
            },
            "api_load_over_single": {
                key: ratio(load["api_ttft_ms"][key], baseline["api_ttft_ms"][key]) for key in ("median", "p95")
            },
        },
        "chat_connect_ms": summary(connects),
        "loop_lag_ms": lags,
    }


# --- the run -----------------------------------------------------------------------------


def run(config: ApiConfig, folder: Path) -> dict:
    log = Log()
    result: dict[str, Any] = {"config": asdict(config), "embedded": None, "concurrent": None}
    if config.embedded:
        _check_embedded()
        with embedded_app_server(folder) as app_url:
            result["embedded"] = asyncio.run(embedded_part(config, app_url, log))
    if config.concurrent:
        settings = load_config(config)
        with scripted_server(settings, folder) as model_url, app_server(settings, model_url, folder) as app_url:
            if config.generator_niceness:
                os.nice(config.generator_niceness)  # the app server, already started, keeps its own
            result["concurrent"] = asyncio.run(concurrent_part(config, app_url, log))
    result["errors"] = error_summary(log.records)  # the warm-ups' too: a failure is a failure
    result["records"] = [asdict(r) for r in log.records]
    ratio_ok = result["embedded"]["ratio"]["ok"] if result["embedded"] else None
    result["targets"] = {
        "errors_ok": result["errors"]["count"] == 0,
        "ttft_ratio_ok": ratio_ok,
        "ok": result["errors"]["count"] == 0 and ratio_ok is not False,
    }
    return result


def _check_embedded() -> None:
    from models.weights import smollm2_path

    try:
        smollm2_path()
    except (FileNotFoundError, ImportError) as error:
        raise Unavailable(f"the embedded SLM is missing: {error} (or run with --skip-embedded)") from error


def print_report(result: dict) -> None:
    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    def times(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    def row(label: str, figures: dict) -> None:
        print(f"{label:<44} {figures['n']:>5} {ms(figures['median']):>9} {ms(figures['p95']):>9}")

    c = result["config"]
    env = result["environment"]
    print(
        f"\nmachine: {env['cpus']} CPUs, load average {env['load_average_1m_before']:.1f} before and "
        f"{env['load_average_1m_after']:.1f} after (other processes compete for the same cores)"
    )
    header = f"{'':<44} {'n':>5} {'median':>9} {'p95':>9}"
    embedded = result["embedded"]
    if embedded:
        print(
            f"\n1. API against the chat page, embedded default models (answered by "
            f"{', '.join(f'{name} {count}' for name, count in embedded['answered_by'].items())}; "
            f"routing {', '.join(embedded['router_modes'])}): {len(embedded['questions'])} handbook questions "
            f"x {embedded['rounds']} rounds, one request at a time, alternating which client goes first"
        )
        print(header.replace(" " * 44, f"{'time to first token (ms)':<44}", 1))
        t = embedded["ttft_ms"]
        row("chat page, first streamed token", t["page"])
        row("API, first delta.content", t["api_content"])
        row("API, first content or reasoning_content", t["api_first_text"])
        print("whole answer (ms)")
        row("chat page, to the turn's end", embedded["total_ms"]["page"])
        row("API, to the end of the stream", embedded["total_ms"]["api"])
        row("API, from finish_reason to the end", embedded["total_ms"]["api_after_finish"])
        r = embedded["ratio"]
        print(
            f"TTFT ratio API / chat page (medians): {times(r['ratio_median'])}  "
            f"{'PASS' if r['ok'] else 'FAIL'} (target <= {r['target']:.2f}); "
            f"median of the per-question ratios {times(r['paired_ratio_median'])}"
        )
    concurrent = result["concurrent"]
    if concurrent:
        print(
            f"\n2. {c['streams']} concurrent API streams x {c['waves']} waves with {c['chat_users']} chat-page users, "
            f"scripted model (TTFT {c['backend_ttft_ms']:g} ms, {c['tokens']} tokens at {c['backend_tok_s']:g} tok/s)"
        )
        if c["generator_niceness"]:
            print(f"clients and scripted model at nice +{c['generator_niceness']}, below the app")
        print(header.replace(" " * 44, f"{'(ms)':<44}", 1))
        b, load = concurrent["baseline"], concurrent["load"]
        row("baseline: chat page TTFT, no API load", b["chat_ttft_ms"])
        row("baseline: API TTFT, one stream at a time", b["api_ttft_ms"])
        row("baseline: API whole answer, one at a time", b["api_total_ms"])
        row(f"load: API TTFT, {c['streams']} streams at once", load["api_ttft_ms"])
        row(f"load: API whole answer, {c['streams']} at once", load["api_total_ms"])
        row(f"load: chat page TTFT, {c['chat_users']} users", load["chat_ttft_ms"])
        row("baseline: API, from finish_reason to the end", b["api_after_finish_ms"])
        row("load: API, from finish_reason to the end", load["api_after_finish_ms"])
        ratios = concurrent["ratio"]
        chat, api = ratios["chat_load_over_baseline"], ratios["api_load_over_single"]
        print(
            f"ratio under load / baseline (median, p95): chat page {times(chat['median'])}, {times(chat['p95'])}; "
            f"API {times(api['median'])}, {times(api['p95'])}"
        )
        lags = concurrent["loop_lag_ms"]
        print(
            "event-loop lag, max (ms): "
            + ", ".join(f"{phase.replace('_', ' ')} {ms(lag['max_ms'])}" for phase, lag in lags.items())
        )
    errors = result["errors"]
    print(
        f"\nerrors: {errors['count']} (API {errors['api']['count']}, chat page {errors['page']['count']})  "
        f"{'PASS' if errors['count'] == 0 else 'FAIL'} (target 0)"
        + (f"  ({', '.join(f'{k} {v}' for k, v in errors['by_phase'].items())})" if errors["by_phase"] else "")
    )
    for client, label in (("api", "API"), ("page", "chat page")):
        if errors[client]["first"]:
            print(f"  first {label} error: {errors[client]['first']}")


def parse_args(argv: list[str] | None) -> tuple[ApiConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n")[0])
    d = ApiConfig()
    parser.add_argument(
        "--questions",
        type=int,
        help=f"handbook questions in part 1, at most {len(HANDBOOK_IDS)} (default {d.questions})",
    )
    parser.add_argument("--rounds", type=int, help=f"times each question is asked by each client (default {d.rounds})")
    parser.add_argument("--streams", type=int, help=f"concurrent API streams in part 2 (default {d.streams})")
    parser.add_argument("--waves", type=int, help=f"waves of those streams (default {d.waves})")
    parser.add_argument("--chat-users", type=int, help=f"chat-page users asking meanwhile (default {d.chat_users})")
    parser.add_argument(
        "--baseline-questions",
        type=int,
        help=f"questions each chat user asks with no API load (default {d.baseline_questions})",
    )
    parser.add_argument(
        "--baseline-streams", type=int, help=f"single API streams, one at a time (default {d.baseline_streams})"
    )
    add_scripted_model_arguments(parser, d)
    parser.add_argument(
        "--generator-nice",
        dest="generator_niceness",
        type=int,
        help=f"part 2: run the clients and the scripted model this much below the app's CPU priority "
        f"(default {d.generator_niceness})",
    )
    parser.add_argument("--skip-embedded", action="store_true", help="skip part 1 (no embedded model needed)")
    parser.add_argument("--skip-concurrent", action="store_true", help="skip part 2")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 questions x 1 round; 5 streams x 1 wave with 2 chat users, 8 tokens",
    )
    parser.add_argument("--json", type=Path, help="output file (default bench/results/api-<timestamp>.json)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else ApiConfig()
    given = {
        name: getattr(args, name)
        for name in asdict(base)
        if name not in ("embedded", "concurrent") and getattr(args, name, None) is not None
    }
    config = replace(base, **given, embedded=not args.skip_embedded, concurrent=not args.skip_concurrent)
    if not config.embedded and not config.concurrent:
        parser.error("--skip-embedded and --skip-concurrent leave nothing to measure")
    if not 1 <= config.questions <= len(HANDBOOK_IDS):
        parser.error(f"--questions must be between 1 and {len(HANDBOOK_IDS)}")
    if min(config.rounds, config.streams, config.waves, config.chat_users, config.baseline_questions) < 1:
        parser.error("--rounds, --streams, --waves, --chat-users and --baseline-questions must be at least 1")
    if config.baseline_streams < 1:
        parser.error("--baseline-streams must be at least 1")
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.json or RESULTS_DIR / f"api-{stamp}.json"
    folder = Path(tempfile.mkdtemp(prefix="bench-api-"))
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        result = run(config, folder)
    except Unavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"error: lost an app server ({type(error).__name__}: {error}); logs in {folder}", file=sys.stderr)
        return 2
    shutil.rmtree(folder, ignore_errors=True)
    result = recorded(result, "bench.api", argv, stamp, started, load_before, packages=("chainlit", "openai"))
    print_report(result)
    write_result(result, out)
    return 0 if result["targets"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
