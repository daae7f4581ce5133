"""Load across processes: many chats through nginx to 1, then 2 (or more) app processes on PostgreSQL.

The team set-up of `make team` (deploy/team.py: app processes behind nginx, chats in
PostgreSQL), each app process started as `bench/instrumented_server.py` runs it (the app plus
a loop-lag monitor), on the scripted model server of `bench.load` (a fixed time to first token
and token rate), with a PostgreSQL cluster of the run's own in a temporary folder. For each
process count in `--processes`, in one run: a fresh database and a fresh team; a warm-up chat
on each process (past the proxy); the backend's own time to first token, straight to the model
server at the same concurrency (`bench.load`'s baseline); then `--sessions` chats through the
proxy, each asking one question after another for `--duration-s` seconds, as the page does
(tests/chainlit_client.py over Socket.IO).

It reports, per process count: errors, the app's time to first token and what the app adds to
the backend's (median, p95), answers per second, each process's event-loop lag and stalls, the
CPU time of every part (app processes, clients, PostgreSQL, nginx, model server, the rest of the
machine) and the load average.

With the kill (on by default, `--no-kill`), in the middle of the run with 2 or more processes
one app process gets SIGKILL while one of the long-answer chats it serves has streamed for more
than `SAVE_PARTIAL_EVERY_S` (so that its answer has been saved partially): every chat it served
reconnects through the proxy as the page does (same session id and cookies, its chat's thread
id), must find all its saved questions and answers, and its cut answer marked, and goes on
asking on the process left. That phase's 2-process figures are those before the kill; after it,
they are reported apart.

    .venv/bin/python -m bench.team_load                 # 50 chats x 180 s, 1 then 2 processes, kill on
    .venv/bin/python -m bench.team_load --quick         # smoke run: 4 chats x 10 s
    .venv/bin/python -m bench.team_load --processes 1,2,3 --sessions 80 --no-kill

Figures print as a table and go to bench/results/team-load-<timestamp>.json (`--json PATH`).
Exit code: 0; 1 when a turn failed other than by the kill, a saved message was lost, a killed
chat did not resume or a saved cut answer was not marked; 2 when PostgreSQL, nginx or a server
is missing or does not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from bench.instrumented_server import CULPRIT_S, MAX_STALLS
from bench.load import (
    QUESTIONS,
    RESULTS_DIR,
    STALL_TARGET_MS,
    Benchmark,
    LoadConfig,
    TimedClient,
    TurnRecord,
    Unavailable,
    add_scripted_model_arguments,
    recorded,
    scripted_server,
    summary,
    turn_problem,
    write_result,
)
from bench.scripted_server import LLM_ID, SLM_ID
from deploy.postgres import LocalPostgres, PostgresMissing, local_postgres
from deploy.proxy import NginxMissing
from deploy.team import AppProcess, Team, free_port, team
from tests.chainlit_client import Turn
from tests.servers import clean_environment
from web.turn_view import CLOSED_NOTE, SAVE_PARTIAL_EVERY_S, UNSAVED_ANSWER_NOTE

# The kill waits until a long answer has streamed this long past its first word: its turn's
# partial save (every SAVE_PARTIAL_EVERY_S from the turn's start) has then been written.
SAVED_PARTIAL_AFTER_S = SAVE_PARTIAL_EVERY_S + 0.5
KILL_WAIT_S = 30.0  # longest wait, from the middle of the phase, for such an answer
# The page's Socket.IO client retries a lost connection for ever, 1 s then up to 5 s apart; this
# one gives up this long after the end of the phase.
RESUME_GIVE_UP_S = 60.0
# What a full chat-database pool looks like in an app process's log (Chainlit logs it and goes on).
POOL_TIMEOUT = "QueuePool limit"
STALL_MS = 100.0
ROUTE_PROBE = "bench_route_probe"

T = TypeVar("T")


@dataclass(frozen=True)
class TeamLoadConfig:
    sessions: int = 50
    duration_s: float = 180.0
    processes: tuple[int, ...] = (1, 2)
    kill: bool = True
    # Chats whose answers stream for seconds (max tokens set in their chat settings): the kill
    # cuts one of them after its partial save, so that there is a saved cut answer to mark.
    long_sessions: int = 4
    long_tokens: int = 800
    backend_ttft_ms: float = 50.0
    tokens: int = 40  # the other chats' answers (the app's MAX_TOKENS)
    backend_tok_s: float = 200.0
    baseline_requests: int = 4  # per concurrent client, straight to the model server
    lag_poll_s: float = 2.0  # the loop-lag report keeps 10 stalls: read (and reset) it this often
    generator_niceness: int = 10
    turn_timeout_s: float = 180.0
    server_env: tuple[tuple[str, str], ...] = ()


QUICK = TeamLoadConfig(sessions=4, duration_s=10.0, long_sessions=2, baseline_requests=2)


# --- one chat -------------------------------------------------------------------------


class PageClient(TimedClient):
    """A TimedClient that notices when its socket closes, as the page does when its process dies."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.disconnected = asyncio.Event()

        @self._sio.on("disconnect")
        async def gone(reason: Any = None) -> None:
            self.disconnected.set()


@dataclass
class ChatTurn(TurnRecord):
    ended_at: float | None = None
    cut_by_kill: bool = False


@dataclass
class Cut:
    """The turn in flight when the chat's process stopped."""

    question: str
    sent_at: float
    streamed_s: float | None  # since the model's first word reached the client; None: none had


@dataclass
class Resume:
    session: str
    long: bool
    resumed: bool
    attempts: int
    seconds: float | None
    questions_completed: int
    questions_lost: int
    answers_completed: int
    answers_lost: int
    cut: bool  # a turn was in flight when the socket closed
    cut_streamed_s: float | None
    cut_saved_expected: bool  # the cut answer had streamed past its first partial save
    cut_marked: bool
    cut_question_saved: bool
    error: str | None = None


def thread_of(turn: Turn) -> str | None:
    """The chat's thread id, as the app's messages carry it."""
    for _, data in turn.events:
        if isinstance(data, dict) and data.get("threadId"):
            return str(data["threadId"])
    return None


def check_resumed(steps: list[dict], questions: list[str], answers: int, cut: Cut | None) -> dict[str, Any]:
    """What a resumed chat's saved steps hold against what its page saw completed before the cut."""
    saved_questions = Counter(step.get("output") for step in steps if step.get("type") == "user_message")
    replies = [step.get("output") or "" for step in steps if step.get("type") == "assistant_message"]
    completed = Counter(questions)
    questions_lost = sum(max(0, count - saved_questions[question]) for question, count in completed.items())
    # An answer is saved when its question is followed by a reply before the next question (what the
    # reply says depends on the support check: the scripted words may have been cut from it).
    kinds = [step.get("type") for step in steps if step.get("type") in ("user_message", "assistant_message")]
    answered = sum(
        1
        for kind, after in itertools.pairwise([*kinds, None])
        if kind == "user_message" and after == "assistant_message"
    )
    marked = any(reply.rstrip().endswith((CLOSED_NOTE, UNSAVED_ANSWER_NOTE)) for reply in replies)
    cut_question_saved = cut is not None and saved_questions[cut.question] > completed[cut.question]
    return {
        "questions_lost": questions_lost,
        "answers_lost": max(0, answers - answered),
        "cut_marked": marked,
        "cut_question_saved": cut_question_saved,
    }


class Chat:
    """One browser tab through the proxy: asks one question after another until the deadline;
    when its process dies, reconnects as the page does and goes on."""

    def __init__(self, phase: Phase, index: int, long: bool) -> None:
        self.phase = phase
        self.index = index
        self.long = long
        self.kind = "long" if long else "scripted"
        self.client = PageClient(phase.team.url)
        self.thread_id: str | None = None
        self.questions: list[str] = []  # completed turns' questions, in order
        self.answers = 0
        self.asking = False
        self.cut: Cut | None = None
        self.resume: Resume | None = None
        self.connected = False

    @property
    def session(self) -> str:
        return self.client.session_id

    def streamed_s(self, now: float) -> float | None:
        first = self.client.first_word_at
        return None if not self.asking or first is None else now - first

    async def run(self, deadline: float) -> None:
        try:
            await self.open()
        except Exception as error:  # noqa: BLE001 - a chat that cannot start is an error
            self.phase.add(ChatTurn("load", self.kind, error=f"session: {type(error).__name__}: {error}"[:200]))
            return
        finally:
            self.phase.opened()
        number = self.index
        try:
            while time.perf_counter() < deadline:
                if self.client.disconnected.is_set():
                    if not await self.reopen():
                        return
                    continue
                await self.ask(QUESTIONS[number % len(QUESTIONS)])
                number += 1
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 10)

    async def open(self) -> None:
        opening = time.perf_counter()
        await self.client.connect()
        self.phase.add(ChatTurn("load", "connect", time.perf_counter() - opening))
        # A request nginx logs with the process it chose for this browser (its cookie).
        await self.client.http.get("/auth/config", params={ROUTE_PROBE: self.session})
        if self.long:
            await self.client.change_settings({"max_tokens": self.phase.config.long_tokens})
        self.connected = True

    async def ask(self, question: str) -> None:
        client = self.client
        self.asking = True
        asked = asyncio.ensure_future(client.timed_ask(question, (), self.phase.config.turn_timeout_s))
        gone = asyncio.ensure_future(client.disconnected.wait())
        try:
            await asyncio.wait({asked, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        now = time.perf_counter()
        self.asking = False
        if not asked.done():  # the socket closed mid-turn
            streamed = None if client.first_word_at is None else now - client.first_word_at
            asked.cancel()
            with contextlib.suppress(BaseException):
                await asked
            self.cut = Cut(question, client.sent_at or now, streamed)
            killed = self.phase.killed_at is not None
            reason = "cut: its process was killed" if killed else "the socket closed mid-answer"
            self.phase.add(
                ChatTurn("load", self.kind, None, reason, self.session, question, client.sent_at, now, killed)
            )
            return
        ttft: float | None
        try:
            turn, ttft = asked.result()
            problem = turn_problem(turn, scripted=True)
        except Exception as error:  # noqa: BLE001 - every failure is counted, not raised
            turn, ttft, problem = None, None, f"{type(error).__name__}: {error}"[:200]
        if turn is not None and problem is None:
            self.questions.append(question)
            self.answers += 1
            self.thread_id = thread_of(turn) or self.thread_id
        self.phase.add(ChatTurn("load", self.kind, ttft, problem, self.session, question, client.sent_at, now))

    async def reopen(self) -> bool:
        """The page's reconnection: same session id and cookies, its chat's thread id, through the proxy."""
        lost_at = time.perf_counter()
        killed = self.phase.killed_at is not None
        if not killed:
            self.phase.add(ChatTurn("load", self.kind, None, "the socket closed", self.session, ended_at=lost_at))
        old = self.client
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old._sio.disconnect(), 5)
        error: str | None = None
        steps: list[dict] | None = None
        attempt = 0
        give_up = self.phase.deadline + RESUME_GIVE_UP_S
        while time.perf_counter() < give_up:
            attempt += 1
            again = PageClient(self.phase.team.url)
            again.http.cookies = old.http.cookies
            again.session_id = old.session_id
            try:
                opened = await again.connect(thread_id=self.thread_id or "", sign_in=False)
                if self.thread_id:
                    if not opened.named("resume_thread"):  # sent after on_chat_resume's own messages
                        opened.events += (await again.wait_for("resume_thread", timeout_s=60)).events
                    [thread] = opened.named("resume_thread")
                    steps = list(thread.get("steps") or [])
                self.client, error = again, None
                break
            except Exception as failure:  # noqa: BLE001 - reported, then retried as the page does
                error = f"{type(failure).__name__}: {failure}"[:200]
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(again.close(), 5)
                await asyncio.sleep(min(5, attempt))
        await old.http.aclose()
        cut = self.cut
        checked = check_resumed(steps or [], self.questions, self.answers, cut) if steps is not None else {}
        saved_expected = bool(cut and cut.streamed_s is not None and cut.streamed_s >= SAVED_PARTIAL_AFTER_S)
        self.resume = Resume(
            session=self.session,
            long=self.long,
            resumed=error is None and (steps is not None or not self.thread_id),
            attempts=attempt,
            seconds=time.perf_counter() - lost_at if error is None else None,
            questions_completed=len(self.questions),
            questions_lost=checked.get("questions_lost", 0),
            answers_completed=self.answers,
            answers_lost=checked.get("answers_lost", 0),
            cut=cut is not None,
            cut_streamed_s=cut.streamed_s if cut else None,
            cut_saved_expected=saved_expected,
            cut_marked=bool(checked.get("cut_marked")),
            cut_question_saved=bool(checked.get("cut_question_saved")),
            error=error,
        )
        self.cut = None
        if error is not None:
            self.phase.add(ChatTurn("load", self.kind, None, f"resume: {error}", self.session, ended_at=lost_at))
            return False
        return True


# --- one phase: a team of n processes under load -----------------------------------


@dataclass
class LagWindows:
    """A process's loop lag, read (and reset) every few seconds: the report keeps 10 stalls."""

    samples: int = 0
    max_ms: float = 0.0
    p99s_ms: list[float] = field(default_factory=list)
    stalls_ms: list[float] = field(default_factory=list)
    stall_causes: list[str] = field(default_factory=list)
    full_windows: int = 0  # windows whose stall list was full: more stalls may have been missed

    def add(self, report: dict) -> None:
        if not report.get("samples"):
            return
        self.samples += report["samples"]
        self.max_ms = max(self.max_ms, report["max_ms"])
        self.p99s_ms.append(report["p99_ms"])
        stalls = report.get("stalls") or []
        self.stalls_ms += [stall["lag_ms"] for stall in stalls]
        if len(stalls) >= MAX_STALLS:
            self.full_windows += 1

    def report(self) -> dict:
        return {
            "samples": self.samples,
            "max_ms": self.max_ms if self.samples else None,
            "p99_ms_worst_window": max(self.p99s_ms, default=None),
            "p99_ms_median_window": summary(self.p99s_ms)["median"],
            f"stalls_over_{CULPRIT_S * 1000:.0f}ms": len(self.stalls_ms),
            f"stalls_over_{STALL_MS:.0f}ms": sum(1 for lag in self.stalls_ms if lag >= STALL_MS),
            "windows_with_full_stall_list": self.full_windows,
        }


class Phase:
    def __init__(
        self, config: TeamLoadConfig, running: Team, model_url: str, kill: bool, store: tuple[LocalPostgres, str]
    ) -> None:
        self.config = config
        self.store = store
        self.deadline = 0.0
        self.team = running
        self.model_url = model_url
        self.kill = kill
        self.turns: list[ChatTurn] = []
        self.chats: list[Chat] = []
        self.killed_at: float | None = None
        self.victim: AppProcess | None = None
        self.kill_choice = ""
        self.lags = {app.name: LagWindows() for app in running.processes}
        self.cpu: dict[str, dict] = {}
        self._opened = 0
        self.all_open = asyncio.Event()
        self.all_open_at: float | None = None
        self.http = httpx.AsyncClient(timeout=60)

    def add(self, turn: ChatTurn) -> None:
        self.turns.append(turn)

    def opened(self) -> None:
        self._opened += 1
        if self._opened >= len(self.chats):
            self.all_open_at = time.perf_counter()
            self.all_open.set()

    def alive(self) -> list[AppProcess]:
        return [app for app in self.team.processes if app is not self.victim]

    async def run(self) -> dict:
        try:
            return await self._run()
        finally:
            await self.http.aclose()

    async def _run(self) -> dict:
        config = self.config
        request = await self.warm_up()
        backend = await self.baseline(request)
        load_start = os.getloadavg()[0]
        await self.read_lags(record=False)
        started = time.perf_counter()
        deadline = self.deadline = started + config.duration_s
        self.chats = [Chat(self, index, long=index < config.long_sessions) for index in range(config.sessions)]
        polling = asyncio.create_task(self.poll_lags())
        snapshot = asyncio.create_task(self.cpu_when_open())
        killing = asyncio.create_task(self.kill_one(started + config.duration_s / 2)) if self.kill else None
        await asyncio.gather(*(chat.run(deadline) for chat in self.chats))
        ended = time.perf_counter()
        polling.cancel()
        await snapshot
        if killing is not None:
            killing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killing
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await self.read_lags()
        self.cpu["end"] = await asyncio.to_thread(cpu_snapshot, self.team)
        routes = await asyncio.to_thread(read_routes, self.team)
        result = self.report(backend, started, ended, load_start, routes)
        result["store"] = await self.check_store()
        result["pool_timeouts"] = await asyncio.to_thread(pool_timeouts, self.team)
        return result

    async def check_store(self) -> dict:
        """Every chat's saved messages against what its page saw answered, read from PostgreSQL once
        the last writes are in (Chainlit saves in the background, and logs a failed save and goes on)."""
        server, database = self.store
        queries = {
            "questions": """SELECT "threadId", count(*) FROM steps WHERE type = 'user_message' GROUP BY 1""",
            # Questions followed by a reply before the next question.
            "answers": """SELECT q."threadId", count(*) FROM steps q WHERE q.type = 'user_message' AND EXISTS (
                SELECT 1 FROM steps a WHERE a."threadId" = q."threadId" AND a.type = 'assistant_message'
                AND a."createdAt" > q."createdAt" AND a."createdAt" < COALESCE((
                    SELECT min(n."createdAt") FROM steps n WHERE n."threadId" = q."threadId"
                    AND n.type = 'user_message' AND n."createdAt" > q."createdAt"), 'infinity')
            ) GROUP BY 1""",
        }

        def read() -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for kind, query in queries.items():
                rows = (line.split("|") for line in server.sql(query, database).split())
                counts[kind] = {thread: int(count) for thread, count in rows}
            return counts

        counts, settled_at = await asyncio.to_thread(read), time.perf_counter()
        give_up = settled_at + 40
        while time.perf_counter() < give_up:  # until nothing changes for 3 s
            await asyncio.sleep(1)
            again = await asyncio.to_thread(read)
            if again != counts:
                counts, settled_at = again, time.perf_counter()
            elif time.perf_counter() - settled_at >= 3:
                break
        chats = [chat for chat in self.chats if chat.questions]
        no_thread = [chat for chat in chats if not chat.thread_id]
        questions_lost = answers_lost = 0
        short: list[str] = []
        for chat in chats:
            thread = chat.thread_id or ""
            missing_q = max(0, len(chat.questions) - counts["questions"].get(thread, 0))
            missing_a = max(0, chat.answers - counts["answers"].get(thread, 0))
            questions_lost += missing_q
            answers_lost += missing_a
            if missing_q or missing_a:
                short.append(thread)
        return {
            "chats_checked": len(chats) - len(no_thread),
            "chats_without_thread_id": len(no_thread),
            "questions_answered": sum(len(chat.questions) for chat in chats),
            "answers_seen": sum(chat.answers for chat in chats),
            "questions_lost": questions_lost,
            "answers_lost": answers_lost,
            "chats_missing_messages": len(short),
        }

    async def warm_up(self) -> dict:
        """One chat on each process, past the proxy, asking every question once (one-off work:
        the model listing, the index, the sentences' vectors); returns the request the app sent."""
        request: dict = {}
        for app in self.team.processes:
            bench = Benchmark(self.load_config(1, len(QUESTIONS)), app.url, self.model_url)
            try:
                await bench.session("warm-up", "scripted", len(QUESTIONS), None)
                await bench.warm_up()
                request = bench.app_request
            finally:
                await bench.http.aclose()
            if errors := bench.records.errors():
                raise Unavailable(f"{app.name} failed its warm-up: {errors[0].error}; log: {app.log}")
        return request

    async def baseline(self, request: dict) -> dict:
        """The backend's own time to first token: the app's request straight to the model server,
        as many clients at once as there are chats."""
        bench = Benchmark(self.load_config(self.config.sessions, self.config.baseline_requests), "", self.model_url)
        bench.app_request = request
        try:
            await bench.baseline()
        finally:
            await bench.http.aclose()
        errors = [turn.error for turn in bench.records.errors()]
        return {**summary(bench.records.ttfts_ms("baseline", "direct")), "errors": len(errors), "messages": errors[:3]}

    async def cpu_when_open(self) -> None:
        """The CPU figures start once every chat is open: the measured window's start."""
        await self.all_open.wait()
        self.cpu["start"] = await asyncio.to_thread(cpu_snapshot, self.team)

    def load_config(self, sessions: int, questions: int) -> LoadConfig:
        return LoadConfig(
            sessions=sessions, questions=questions, turn_timeout_s=self.config.turn_timeout_s, generator_niceness=0
        )

    async def poll_lags(self) -> None:
        while True:
            await asyncio.sleep(self.config.lag_poll_s)
            await self.read_lags()

    async def read_lags(self, record: bool = True) -> None:
        async def one(app: AppProcess) -> None:
            with contextlib.suppress(httpx.HTTPError):
                response = await self.http.get(f"{app.url}/bench/loop-lag", params={"reset": "true"})
                if record and app is not self.victim:
                    self.lags[app.name].add(response.json())

        await asyncio.gather(*(one(app) for app in self.alive()))

    async def kill_one(self, at: float) -> None:
        """SIGKILL, in the middle of the phase, the process of a long-answer chat whose answer has
        streamed past its first partial save (or, failing one in KILL_WAIT_S, of any chat)."""
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        await self.all_open.wait()
        routes = await asyncio.to_thread(read_routes, self.team)
        by_port = {app.port: app for app in self.team.processes}
        give_up = time.perf_counter() + KILL_WAIT_S
        victim: AppProcess | None = None
        while victim is None and time.perf_counter() < give_up:
            now = time.perf_counter()
            for chat in self.chats:
                streamed = chat.streamed_s(now)
                if chat.long and streamed is not None and streamed >= SAVED_PARTIAL_AFTER_S:
                    if chat.session not in routes:
                        routes = await asyncio.to_thread(read_routes, self.team)
                    victim = by_port.get(routes.get(chat.session, -1))
                    if victim is not None:
                        self.kill_choice = f"serves a long answer streaming for {streamed:.1f} s"
                        break
            if victim is None:
                await asyncio.sleep(0.05)
        if victim is None:
            known = [by_port[port] for port in routes.values() if port in by_port]
            victim = known[0] if known else self.team.processes[-1]
            self.kill_choice = f"no long answer had streamed {SAVED_PARTIAL_AFTER_S:g} s in {KILL_WAIT_S:g} s"
        await self.read_lags()  # the victim's figures up to the kill
        self.cpu["kill"] = await asyncio.to_thread(cpu_snapshot, self.team)
        self.victim = victim
        self.killed_at = time.perf_counter()
        await asyncio.to_thread(victim.stop, signal.SIGKILL)

    # --- figures ---

    def window(self, start: float, end: float, backend: dict) -> dict:
        """What the chats saw between `start` and `end`: turns sent and answers completed in it."""
        sent = [t for t in self.turns if t.sent_at is not None and start <= t.sent_at < end and t.kind != "connect"]
        answered = [t for t in sent if not t.error and t.ended_at is not None and t.ended_at <= end]
        app = summary([t.ttft_s * 1000 for t in answered if t.ttft_s is not None])
        added = {
            key: None if app[key] is None or backend[key] is None else app[key] - backend[key]
            for key in ("median", "p95")
        }
        seconds = end - start
        by_kind = Counter(t.kind for t in answered)
        return {
            "seconds": seconds,
            "turns_sent": len(sent),
            "answers": len(answered),
            "answers_by_kind": dict(by_kind),
            "answers_per_s": len(answered) / seconds if seconds > 0 else None,
            "ttft_ms": {"app": app, "backend": backend, "added": added},
        }

    def report(self, backend: dict, started: float, ended: float, load_start: float, routes: dict) -> dict:
        config = self.config
        measured_from = self.all_open_at or started
        measured_to = self.killed_at or started + config.duration_s
        errors = [t for t in self.turns if t.error and not t.cut_by_kill]
        cut = [t for t in self.turns if t.cut_by_kill]
        port_names = {app.port: app.name for app in self.team.processes}
        per_process = Counter(port_names.get(routes.get(chat.session, -1), "unknown") for chat in self.chats)
        result: dict[str, Any] = {
            "processes": len(self.team.processes),
            "sessions": config.sessions,
            "long_sessions": min(config.long_sessions, config.sessions),
            "sessions_per_process": dict(sorted(per_process.items())),
            "duration_s": ended - started,
            "chats_open_after_s": measured_from - started,
            "errors": {
                "count": len(errors),
                "messages": list(dict.fromkeys(t.error for t in errors))[:10],
            },
            "connect_ms": summary([t.ttft_s * 1000 for t in self.turns if t.kind == "connect" and t.ttft_s]),
            "measured": self.window(measured_from, measured_to, backend),
            "loop_lag_ms": {name: lag.report() for name, lag in self.lags.items()},
            "cpu": cpu_use(self.cpu["start"], self.cpu.get("kill") or self.cpu["end"]),
            "load_average_1m": {"start": load_start, "end": os.getloadavg()[0]},
            "baseline_errors": {"count": backend["errors"], "messages": backend["messages"]},
        }
        if self.killed_at is not None and self.victim is not None:
            resumes = [chat.resume for chat in self.chats if chat.resume is not None]
            result["after_kill"] = {
                **self.window(self.killed_at, started + config.duration_s, backend),
                "cpu": cpu_use(self.cpu["kill"], self.cpu["end"]),
            }
            saved_cuts = [r for r in resumes if r.cut_saved_expected]
            result["kill"] = {
                "process": self.victim.name,
                "at_s": self.killed_at - started,
                "chosen_because": self.kill_choice,
                "chats_on_it": per_process.get(self.victim.name, 0),
                "chats_affected": len(resumes),
                "chats_resumed": sum(r.resumed for r in resumes),
                "resume_s": summary([r.seconds for r in resumes if r.seconds is not None]),
                "turns_cut": len(cut),
                "saved_messages_lost": sum(r.questions_lost + r.answers_lost for r in resumes),
                "questions_lost": sum(r.questions_lost for r in resumes),
                "answers_lost": sum(r.answers_lost for r in resumes),
                "messages_checked": sum(r.questions_completed + r.answers_completed for r in resumes if r.resumed),
                "cut_answers_saved_partially": len(saved_cuts),
                "cut_answers_marked": sum(r.cut_marked for r in resumes),
                "saved_cut_answers_not_marked": sum(not r.cut_marked for r in saved_cuts),
                "cut_before_any_save": sum(1 for r in resumes if r.cut and not r.cut_saved_expected),
                "cut_questions_saved": sum(r.cut_question_saved for r in resumes),
                "resumes": [asdict(r) for r in resumes],
            }
        return result


# --- processes and their CPU time ----------------------------------------------------


def pool_timeouts(running: Team) -> dict[str, int]:
    """How often each app process's chat-database pool had no connection for 30 s (its log)."""
    counts = {}
    for app in running.processes:
        with contextlib.suppress(OSError):
            counts[app.name] = app.log.read_text(errors="replace").count(POOL_TIMEOUT)
    return counts


def read_routes(running: Team) -> dict[str, int]:
    """Each chat's process, from nginx's access log: the port that served its probe request."""
    routes: dict[str, int] = {}
    log = running.logs / "nginx-access.log"
    if not log.exists():
        return routes
    probe = re.compile(rf"{ROUTE_PROBE}=([0-9a-f-]+)")
    for line in log.read_text(errors="replace").splitlines():
        if (found := probe.search(line)) and ":" in line:
            upstream = line.rsplit(" ", 1)[-1]  # the last process tried, after any that failed
            with contextlib.suppress(ValueError):
                routes[found.group(1)] = int(upstream.rsplit(":", 1)[-1])
    return routes


def _group(process: psutil.Process, apps: Mapping[int, str], me: int) -> str | None:
    """Which part of the set-up a process belongs to, by its ancestry up to this benchmark."""
    chain = [process]
    with contextlib.suppress(psutil.Error):
        chain += process.parents()
    for member in chain:
        if member.pid in apps:
            return apps[member.pid]
    top = next((member for member, parent in itertools.pairwise(chain) if parent.pid == me), None)
    if top is None:
        return None
    with contextlib.suppress(psutil.Error):
        command = " ".join(top.cmdline())
        if "nginx" in command:
            return "nginx"
        if "postgres" in command or "runuser" in command:
            return "PostgreSQL"
        if "scripted_server" in command:
            return "model server"
    return "other children"


def cpu_snapshot(running: Team) -> dict:
    """CPU seconds so far of every process of the run, by part, and of the whole machine."""
    me = psutil.Process()
    apps = {app.process.pid: app.name for app in running.processes}
    by_pid: dict[int, tuple[str, float]] = {}
    own = me.cpu_times()
    by_pid[me.pid] = ("clients (this process)", own.user + own.system)
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            group = _group(child, apps, me.pid)
            if group is None:
                continue
            times = child.cpu_times()
            # Exited children a process has reaped (PostgreSQL's backends) count in its own figures.
            by_pid[child.pid] = (group, times.user + times.system + times.children_user + times.children_system)
    machine = psutil.cpu_times()
    idle = machine.idle + getattr(machine, "iowait", 0.0)
    return {
        "at": time.perf_counter(),
        "by_pid": by_pid,
        "machine_busy_s": sum(machine) - idle,
        "cpus": psutil.cpu_count() or 1,
    }


def cpu_use(start: dict, end: dict) -> dict:
    """Cores used by each part between two snapshots (CPU seconds per second of wall time)."""
    seconds = end["at"] - start["at"]
    if seconds <= 0:
        return {}
    used: Counter[str] = Counter()
    for pid, (group, total) in end["by_pid"].items():
        before = start["by_pid"].get(pid)
        used[group] += total - (before[1] if before and before[0] == group else 0.0)
    busy = end["machine_busy_s"] - start["machine_busy_s"]
    ours = sum(used.values())
    return {
        "seconds": seconds,
        "cpus": end["cpus"],
        "cores_used": {group: value / seconds for group, value in sorted(used.items())},
        "run_cores": ours / seconds,
        "machine_busy_cores": busy / seconds,
        "other_processes_cores": max(0.0, busy - ours) / seconds,
    }


# --- the run ---------------------------------------------------------------------------


def instrumented_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.instrumented_server",
        "run",
        "app.py",
        "--headless",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def app_environment(config: TeamLoadConfig, model_url: str, folder: Path, database_url: str) -> dict[str, str]:
    """The app's settings, as bench.load's app server has them, plus the team's shared store."""
    return clean_environment(
        {
            "MODEL_SERVER_URL": model_url,
            "SLM_MODEL": SLM_ID,
            "LLM_MODEL": LLM_ID,
            "ROUTER_MODE": "off",
            # Every question streams an answer (see bench.load's app server).
            "MIN_RETRIEVAL_SCORE": "0",
            # The scripted server writes `long_tokens` words; the app asks for `tokens` unless a
            # chat's settings say more (the long-answer chats).
            "MAX_TOKENS": str(config.tokens),
            "DATABASE_URL": database_url,
            "DATA_DIR": str(folder / "data"),
            "MODEL_CACHE_DIR": str(folder / "model-cache"),
            "EMBED_CORPUS_AHEAD": "false",
            **dict(config.server_env),
        }
    )


def in_niced_thread(work: Callable[[], Coroutine[Any, Any, T]], niceness: int) -> T:
    """Run `work` on an event loop in a thread of its own at `niceness` (Linux: a thread's own
    priority), so that the clients stand below the servers, which this process starts from its
    main thread at normal priority."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        if niceness:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        try:
            outcome["value"] = asyncio.run(work())
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="bench-clients", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run_phases(config: TeamLoadConfig, folder: Path) -> dict:
    scripted = LoadConfig(
        backend_ttft_ms=config.backend_ttft_ms,
        tokens=max(config.tokens, config.long_tokens),
        backend_tok_s=config.backend_tok_s,
        generator_niceness=config.generator_niceness,
    )
    phases: list[dict] = []
    with (
        scripted_server(scripted, folder) as model_url,
        local_postgres(folder / "postgres", free_port(), folder / "postgres.log") as database,
    ):
        for number, count in enumerate(config.processes, 1):
            kill = config.kill and count >= 2
            print(
                f"{count} process{'es' if count > 1 else ''}: {config.sessions} chats for {config.duration_s:g} s"
                + (", one process killed in the middle" if kill else ""),
                flush=True,
            )
            phases.append(run_phase(config, folder, model_url, database, number, count, kill))
    return {"config": asdict(config), "phases": phases}


def run_phase(
    config: TeamLoadConfig, folder: Path, model_url: str, database: LocalPostgres, number: int, count: int, kill: bool
) -> dict:
    name = f"team_load_{number}"
    database_url = database.create_database(name)
    env = app_environment(config, model_url, folder, database_url)
    try:
        with team(folder / f"team-{number}", count, env, command=instrumented_command) as running:

            async def work() -> dict:
                return await Phase(config, running, model_url, kill, (database, name)).run()

            return in_niced_thread(work, config.generator_niceness)
    except (RuntimeError, TimeoutError) as error:
        if isinstance(error, (PostgresMissing, NginxMissing)):
            raise
        raise Unavailable(f"the team of {count} did not start: {str(error).strip().splitlines()[0]}") from error


# --- output -----------------------------------------------------------------------------


def _app_cores(cpu: dict) -> float:
    return sum(value for name, value in cpu.get("cores_used", {}).items() if name.startswith("app-"))


def limits(result: dict) -> str:
    """What bounds the scaling on this machine, from the answers per second and the CPU each part used."""
    phases = [phase for phase in result["phases"] if phase["cpu"]]
    if not phases:
        return ""
    widest = max(phases, key=lambda phase: phase["processes"])
    cpu = widest["cpu"]
    cpus, busy = cpu["cpus"], cpu["machine_busy_cores"]
    parts = ", ".join(
        f"{name} {value:.2f}" for name, value in sorted(cpu["cores_used"].items(), key=lambda item: -item[1])
    )
    scaling = "; ".join(
        f"{phase['processes']} process{'es' if phase['processes'] > 1 else ''}: "
        f"{phase['measured']['answers_per_s'] or 0:.1f} answers/s on {_app_cores(phase['cpu']):.2f} cores"
        for phase in phases
    )
    said = (
        f"{cpus} CPUs shared by the clients, nginx, PostgreSQL, the scripted model server, the app processes and "
        f"whatever else runs on the machine. {scaling}. With {widest['processes']} processes the machine was busy "
        f"{busy:.2f} of {cpus} cores ({parts}; other processes on the machine {cpu['other_processes_cores']:.2f})."
    )
    if busy >= 0.9 * cpus:
        return (
            said + " One app process cannot use more than about one core (one event loop); more processes use the "
            "others, until the cores are all busy, as here: a process beyond that only splits the same cores."
        )
    return (
        said + " The cores were not all busy: each chat waits for its answer before asking again, so the chats' "
        "own pace (and the model server's) bounds answers per second here."
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def print_report(result: dict) -> None:
    c = result["config"]
    env = result["environment"]
    print(
        f"\nTeam load: {c['sessions']} chats ({c['long_sessions']} with long answers) through nginx for "
        f"{c['duration_s']:g} s per process count; scripted model TTFT {c['backend_ttft_ms']:g} ms, "
        f"{c['tokens']} tokens (long: {c['long_tokens']}) at {c['backend_tok_s']:g} tok/s"
    )
    print(
        f"machine: {env['cpus']} CPUs, load average {env['load_average_1m_before']:.1f} before and "
        f"{env['load_average_1m_after']:.1f} after"
        + (f"; clients and scripted model at nice +{c['generator_niceness']}" if c["generator_niceness"] else "")
    )
    # One column per process count; with the kill, its figures before the kill and after it.
    columns: list[tuple[str, dict, dict, bool]] = []
    for phase in result["phases"]:
        n = phase["processes"]
        label = f"{n} process{'es' if n > 1 else ''}" + (" (before kill)" if "kill" in phase else "")
        columns.append((label, phase, phase["measured"], False))
        if "after_kill" in phase:
            columns.append((f"after kill ({n - 1} of {n} left)", phase, phase["after_kill"], True))

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<34}" + "".join(f"{cell:>27}" for cell in cells))

    def spread(phase: dict, after: bool) -> str:
        if after:
            return f"{phase['sessions']} on {phase['processes'] - 1}"
        return "/".join(str(count) for count in phase["sessions_per_process"].values())

    over = f"stalls_over_{STALL_MS:.0f}ms"

    def lag(phase: dict, key: str) -> str:
        per_process = phase["loop_lag_ms"].items()
        return " ".join(f"{name}:{_ms(v[key]) if key != over else v[key]}" for name, v in per_process)

    def per_answer(window: dict, cpu: dict) -> str:
        rate = window["answers_per_s"]
        return f"{_app_cores(cpu) / rate * 1000:.0f}" if rate and cpu else "n/a"

    cpus = [window.get("cpu") or phase["cpu"] for _, phase, window, _ in columns]
    print()
    row("", [label for label, _, _, _ in columns])
    row("chats per process", [spread(phase, after) for _, phase, _, after in columns])
    row("measured over (s)", [f"{window['seconds']:.0f}" for _, _, window, _ in columns])
    row("errors (whole phase)", [str(phase["errors"]["count"]) for _, phase, _, _ in columns])
    row("answers", [str(window["answers"]) for _, _, window, _ in columns])
    row("answers/s", [f"{w['answers_per_s']:.1f}" if w["answers_per_s"] else "n/a" for _, _, w, _ in columns])
    for name, key in (
        ("app TTFT median / p95 (ms)", "app"),
        ("backend TTFT median / p95 (ms)", "backend"),
        ("app-added median / p95 (ms)", "added"),
    ):
        row(name, [f"{_ms(w['ttft_ms'][key]['median'])} / {_ms(w['ttft_ms'][key]['p95'])}" for _, _, w, _ in columns])
    row(
        "app CPU per answer (ms)",
        [per_answer(window, cpu) for (_, _, window, _), cpu in zip(columns, cpus, strict=True)],
    )
    row("loop lag max, per process (ms)", ["" if after else lag(phase, "max_ms") for _, phase, _, after in columns])
    row(
        f"stalls >= {STALL_MS:.0f} ms, per process",
        ["" if after else lag(phase, over) for _, phase, _, after in columns],
    )
    row(
        "saved: questions, answers lost",
        [
            ""
            if after
            else f"{p['store']['questions_lost']}, {p['store']['answers_lost']} of "
            f"{p['store']['questions_answered']}, {p['store']['answers_seen']}"
            for _, p, _, after in columns
        ],
    )
    row(
        "chat-database pool timeouts",
        ["" if after else " ".join(f"{k}:{v}" for k, v in p["pool_timeouts"].items()) for _, p, _, after in columns],
    )
    row(
        "load average 1 min (start, end)",
        [f"{p['load_average_1m']['start']:.1f}, {p['load_average_1m']['end']:.1f}" for _, p, _, _ in columns],
    )
    groups = sorted({group for cpu in cpus for group in cpu.get("cores_used", {})})
    print("\ncores used (CPU s per s)")
    for group in groups:
        row(f"  {group}", [f"{cpu.get('cores_used', {}).get(group, 0):.2f}" for cpu in cpus])
    row("  other processes on the machine", [f"{cpu.get('other_processes_cores', 0):.2f}" for cpu in cpus])
    row("  machine busy", [f"{cpu.get('machine_busy_cores', 0):.2f} of {cpu.get('cpus', '?')}" for cpu in cpus])

    for phase in result["phases"]:
        kill = phase.get("kill")
        if not kill:
            continue
        print(
            f"\nkill: {kill['process']} (SIGKILL) at {kill['at_s']:.0f} s of {phase['processes']} processes' "
            f"phase ({kill['chosen_because']}); {kill['chats_on_it']} chats on it"
        )
        ok = kill["saved_messages_lost"] == 0 and kill["chats_resumed"] == kill["chats_affected"]
        print(
            f"  chats affected {kill['chats_affected']}, resumed {kill['chats_resumed']} "
            f"(median {_ms((kill['resume_s']['median'] or 0) * 1000)} ms after the socket closed); "
            f"saved messages lost {kill['saved_messages_lost']} of {kill['messages_checked']} checked in the "
            f"resumed chats  {'PASS' if ok else 'FAIL'}"
        )
        print(
            f"  cut answers marked {kill['cut_answers_marked']} of {kill['turns_cut']} (saved partially "
            f"{kill['cut_answers_saved_partially']}, cut before their first save {kill['cut_before_any_save']}); "
            f"turns cut by the kill {kill['turns_cut']} (not counted as errors); "
            f"cut questions found saved {kill['cut_questions_saved']}"
        )
    errors = sum(phase["errors"]["count"] for phase in result["phases"])
    print(f"\nerrors (other than the turns cut by the kill): {errors}  {'PASS' if errors == 0 else 'FAIL'}")
    for phase in result["phases"]:
        for message in phase["errors"]["messages"][:3]:
            print(f"  {phase['processes']} process(es): {message}")
    print(f"limits: {result['limits']}")


def failures(result: dict) -> list[str]:
    found = []
    for phase in result["phases"]:
        n = phase["processes"]
        if phase["errors"]["count"]:
            found.append(f"{n} process(es): {phase['errors']['count']} errors")
        if not phase["measured"]["answers"]:
            found.append(f"{n} process(es): no answer")
        store = phase.get("store") or {}
        if store.get("questions_lost") or store.get("answers_lost"):
            found.append(
                f"{n} process(es): {store['questions_lost']} questions and {store['answers_lost']} answers that the "
                "chats saw answered are not in the store"
            )
        kill = phase.get("kill")
        if kill:
            if kill["saved_messages_lost"]:
                found.append(f"{kill['saved_messages_lost']} saved messages lost")
            if kill["chats_resumed"] < kill["chats_affected"]:
                found.append(f"{kill['chats_affected'] - kill['chats_resumed']} chats did not resume")
            if kill["saved_cut_answers_not_marked"]:
                found.append(f"{kill['saved_cut_answers_not_marked']} saved cut answers not marked")
    return found


def parse_args(argv: list[str] | None) -> tuple[TeamLoadConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench.team_load", description=__doc__.split("\n")[0])
    d = TeamLoadConfig()
    parser.add_argument("--sessions", type=int, help=f"concurrent chats through the proxy (default {d.sessions})")
    parser.add_argument(
        "--duration-s", type=float, help=f"seconds of load per process count (default {d.duration_s:g})"
    )
    parser.add_argument(
        "--processes", help=f"app process counts, one team each (default {','.join(map(str, d.processes))})"
    )
    kill = parser.add_mutually_exclusive_group()
    kill.add_argument(
        "--kill-one", dest="kill", action="store_true", default=None, help="kill one process mid-run (default)"
    )
    kill.add_argument("--no-kill", dest="kill", action="store_false", help="no kill")
    parser.add_argument(
        "--long-sessions", type=int, help=f"chats whose answers stream for seconds (default {d.long_sessions})"
    )
    parser.add_argument("--long-tokens", type=int, help=f"tokens of their answers (default {d.long_tokens})")
    add_scripted_model_arguments(parser, d)
    parser.add_argument(
        "--baseline-requests",
        type=int,
        help=f"requests per client straight to the model server (default {d.baseline_requests})",
    )
    parser.add_argument(
        "--generator-nice",
        dest="generator_niceness",
        type=int,
        help=f"CPU priority of the clients and the scripted model below the servers' (default {d.generator_niceness})",
    )
    parser.add_argument(
        "--server-env", action="append", metavar="NAME=VALUE", default=[], help="an extra app setting (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 chats for 10 s, processes 1,2, kill on")
    parser.add_argument("--json", type=Path, help="output file (default bench/results/team-load-<timestamp>.json)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else d
    given = {
        name: getattr(args, name)
        for name in asdict(base)
        if name not in ("processes", "server_env") and getattr(args, name, None) is not None
    }
    if args.processes:
        try:
            given["processes"] = tuple(int(part) for part in args.processes.split(","))
        except ValueError:
            parser.error("--processes takes counts separated by commas, e.g. 1,2")
    pairs = [item.partition("=") for item in args.server_env]
    if any(not name or not equals for name, equals, _ in pairs):
        parser.error("--server-env takes NAME=VALUE")
    given["server_env"] = tuple((name, value) for name, _, value in pairs)
    config = replace(base, **given)
    if config.sessions < 1 or config.duration_s <= 0 or not config.processes or min(config.processes) < 1:
        parser.error("--sessions, --duration-s and --processes must be positive")
    if config.long_sessions and config.long_tokens / config.backend_tok_s < SAVED_PARTIAL_AFTER_S + 1:
        parser.error(
            f"long answers must stream for more than {SAVED_PARTIAL_AFTER_S + 1:g} s "
            "(--long-tokens / --backend-tok-s) for the kill to cut one after its partial save"
        )
    return config, args


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.json or RESULTS_DIR / f"team-load-{stamp}.json"
    # Under /tmp and open to all: as root, PostgreSQL runs as `nobody`, who must reach its folder.
    folder = Path(tempfile.mkdtemp(prefix="bench-team-load-"))
    folder.chmod(0o755)
    started = time.perf_counter()
    load_before = os.getloadavg()
    try:
        result = run_phases(config, folder)
    except (Unavailable, PostgresMissing, NginxMissing) as error:
        print(f"error: {error} (files in {folder})", file=sys.stderr)
        return 2
    result = recorded(result, "bench.team_load", argv, stamp, started, load_before)
    result["limits"] = limits(result)
    result["stall_target_ms"] = STALL_TARGET_MS
    found = failures(result)
    result["failures"] = found
    print_report(result)
    write_result(result, out)
    for failure in found:
        print(f"FAIL: {failure}")
    if found:
        print(f"the servers' logs are in {folder}")
        return 1
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
