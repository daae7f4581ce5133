"""`chainlit run` with two measuring hooks, for the load benchmark; app.py is not touched.

    .venv/bin/python -m bench.instrumented_server run app.py --headless --port 8000

is `chainlit run app.py --headless --port 8000` (Chainlit's own CLI, in this process)
plus, on the same FastAPI app and event loop:

- a loop-lag monitor: a task that sleeps 10 ms at a time and records how late it wakes.
  Any blocking call on the loop (a decode, a PDF parse, a slow handler) shows up as lag.
  `GET /bench/loop-lag` returns the lag since the last `?reset=true` (max, p99, p50 in ms).
- `GET /bench/state` (`?gc=true` collects garbage and trims malloc first): the process id, its resident
  memory, and what Chainlit and the app hold per session (Chainlit's sessions,
  `user_session` and `chat_context` entries, the app's KnowledgeBase objects, asyncio
  tasks), so that memory that does not come back can be traced to its owner.
- `GET /bench/memory`: Python's allocator alone (arenas, bytes in use), cheap enough to poll
  during the churn: bytes in use that climb while the sessions come and go are garbage
  waiting for a collection, and each MB of it is an arena that may never be given back.
- with `BENCH_CYCLES_OUT` set (`bench.load --cycles FILE`), what the garbage collector
  freed between the two memory readings (see `_report_cycles`).
- `GET /bench/turns?record=true|false`: when each chat turn recorded since the last call
  reached each step on its way to the first token (`TurnClock`), then records from now on or
  not. The clock is `time.perf_counter`, which on Linux is the system-wide monotonic clock:
  the benchmark's clients read the same one, so a turn's steps line up with when its question
  was sent and its first word arrived.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import contextvars
import ctypes
import gc
import os
import statistics
import sys
import threading
import time
import types
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:  # imported at run time only after Chainlit, as `chainlit run` does (see main)
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Receive, Scope, Send

SAMPLE_S = 0.010
CULPRIT_S = 0.050  # stalls at least this long get the threads' stacks recorded
MAX_STALLS = 10
STACK_DEPTH = 8


class LoopLagMonitor:
    """How late a 10 ms sleep wakes up: the longest time the loop could not run a ready task.

    A watchdog thread also notes, for each stall longer than `CULPRIT_S`, where every
    thread was at that moment, so that a stall can be traced to the code that caused it.
    (If the culprit holds the GIL in one C call, the watchdog only runs after it: such a
    stall is reported without a stack.)
    """

    def __init__(self, interval_s: float = SAMPLE_S) -> None:
        self.interval_s = interval_s
        # Raw doubles, not float objects: the samples taken while the churn's memory settles
        # (some 3,500) would otherwise count as blocks the app kept.
        self.lags_s = array.array("d")
        self.stalls: list[dict] = []
        self._last_wake = time.perf_counter()
        self._captured: dict[float, dict] = {}  # last wake -> stacks seen during that stall
        # Garbage collections hold the GIL from start to end, so the watchdog cannot see them:
        # they are timed through gc.callbacks instead and matched to the stalls they overlap.
        self.gc_pauses: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=2000)
        self.gc_counts = [0, 0, 0]
        self.gc_worst_ms = [0.0, 0.0, 0.0]
        self._gc_started = 0.0
        self.gc_full_scan_max = 0
        gc.callbacks.append(self._on_gc)
        # Timers waiting in the loop's heap, live or cancelled: each holds a callback and a
        # context, so a heap that grows is memory and garbage-collector work that grows.
        self.timer_heap_max = 0

    def _on_gc(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            if info["generation"] == 2:
                # What a full collection has to scan (counted before it is timed: a few ms).
                self.gc_full_scan_max = max(self.gc_full_scan_max, len(gc.get_objects()))
            self._gc_started = time.perf_counter()
            return
        generation = info["generation"]
        self.gc_pauses.append((generation, self._gc_started, now))
        self.gc_counts[generation] += 1
        self.gc_worst_ms[generation] = max(self.gc_worst_ms[generation], (now - self._gc_started) * 1000)

    def _gc_during(self, start: float, end: float) -> dict:
        # A copy first: iterating the deque itself, the comprehension allocates, a collection
        # can start and its callback would append to the deque mid-iteration. Copying allocates
        # only the new deque, before any item is read.
        pauses = [(gen, a, b) for gen, a, b in self.gc_pauses.copy() if b > start and a < end]
        return {
            "gc_ms": sum((b - a) * 1000 for _, a, b in pauses),
            "gc_generations": sorted({gen for gen, _, _ in pauses}),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        threading.Thread(target=self._watch, args=(loop_thread,), name="bench-loop-watchdog", daemon=True).start()
        while True:
            before = self._last_wake = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, time.perf_counter() - before - self.interval_s)
            self.lags_s.append(lag)
            self.timer_heap_max = max(self.timer_heap_max, len(getattr(loop, "_scheduled", ())))
            captured = self._captured.pop(before, None)
            if lag >= CULPRIT_S:
                self.stalls.append(
                    {
                        "lag_ms": lag * 1000,
                        "threads": captured["threads"] if captured else None,
                        **self._gc_during(before, time.perf_counter()),
                    }
                )
                self.stalls = sorted(self.stalls, key=lambda stall: -stall["lag_ms"])[:MAX_STALLS]
            self._captured.clear()

    def _watch(self, loop_thread: int) -> None:
        while True:
            time.sleep(self.interval_s / 2)
            last_wake = self._last_wake
            if time.perf_counter() - last_wake > CULPRIT_S and last_wake not in self._captured:
                self._captured[last_wake] = {"threads": _thread_stacks(loop_thread)}

    def report(self, reset: bool) -> dict:
        lags_ms = sorted(lag * 1000 for lag in self.lags_s)
        stalls = self.stalls
        collections_seen = {
            "counts": self.gc_counts,
            "worst_ms": self.gc_worst_ms,
            "full_collection_objects_max": self.gc_full_scan_max,
        }
        timer_heap_max = self.timer_heap_max
        if reset:
            self.lags_s, self.stalls = array.array("d"), []
            self.timer_heap_max = 0
            self.gc_counts, self.gc_worst_ms, self.gc_full_scan_max = [0, 0, 0], [0.0, 0.0, 0.0], 0
        if not lags_ms:
            return {
                "samples": 0,
                "max_ms": None,
                "p99_ms": None,
                "p50_ms": None,
                "stalls": stalls,
                "gc": collections_seen,
                "timer_heap_max": timer_heap_max,
            }
        return {
            "gc": collections_seen,
            "timer_heap_max": timer_heap_max,
            "samples": len(lags_ms),
            "max_ms": lags_ms[-1],
            "p99_ms": lags_ms[min(len(lags_ms) - 1, int(len(lags_ms) * 0.99))],
            "p50_ms": statistics.median(lags_ms),
            "stalls": stalls,
        }


def _thread_stacks(loop_thread: int) -> dict[str, list[str]]:
    """The innermost frames of every thread; the event loop's thread is called "event-loop"."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = {}
    for ident, innermost in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        # By hand, not with traceback: it registers every file with linecache, memory the
        # benchmark would then report as the app's.
        frames: list[str] = []
        frame: types.FrameType | None = innermost
        while frame is not None and len(frames) < STACK_DEPTH:
            frames.append(f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}")
            frame = frame.f_back
        name = "event-loop" if ident == loop_thread else names.get(ident, str(ident))
        stacks[name] = frames[::-1]
    return stacks


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.relpath(path) if path.startswith(os.getcwd()) else path


def server_state(collect: bool) -> dict:
    from chainlit.chat_context import chat_contexts
    from chainlit.session import ws_sessions_id
    from chainlit.user_session import user_sessions

    rss_before_trim = None
    if collect:
        _report_cycles()
        gc.collect()
        # Freed memory that the C allocator keeps for reuse still counts in RSS; giving it
        # back tells "still referenced" apart from "freed but not returned to the OS".
        rss_before_trim = psutil.Process().memory_info().rss / 2**20
        _malloc_trim()
    objects = gc.get_objects()
    knowledge_bases = sum(1 for obj in objects if type(obj).__name__ == "KnowledgeBase")
    return {
        "pid": os.getpid(),
        "rss_mb": psutil.Process().memory_info().rss / 2**20,
        "rss_before_trim_mb": rss_before_trim,
        "python_objects": len(objects),
        # Per type, to see what grew when memory does not come back.
        "object_types": dict(collections.Counter(_type_name(obj) for obj in objects).most_common(400)),
        # A container that grows with every session holds memory that no type count shows.
        "largest_containers": _largest_containers(objects),
        # What the small long-lived objects are: a few left behind per session pin whole arenas.
        "small_objects_by_target": _small_objects_by_target(objects),
        "chainlit_sessions": len(ws_sessions_id),
        "user_sessions": len(user_sessions),
        "chat_contexts": len(chat_contexts),
        "chat_context_messages": sum(len(messages) for messages in chat_contexts.values()),
        "knowledge_bases": knowledge_bases,
        "asyncio_tasks": len(asyncio.all_tasks()),
        "threads": len(psutil.Process().threads()),
        # Where resident memory is, when Python's objects are back to where they were:
        # blocks Python's allocator hands out, and the C allocator's in-use and free-but-kept bytes.
        "python_allocated_blocks": sys.getallocatedblocks(),
        "pymalloc": _pymalloc_info(),
        "rss_parts_mb": _rss_parts(),
        "malloc": _malloc_info(),
    }


def _report_cycles() -> None:
    """Opt-in (`bench.load --cycles FILE`): what the garbage collector freed between two readings.

    Objects in reference cycles outlive their last use until a collection finds them, and
    the app runs full collections only when idle: garbage made per session piles up under
    load and grows Python's arenas, which rarely come back. The first reading makes the
    collector keep what it frees (`DEBUG_SAVEALL`); the second writes what it kept, by type,
    with the classes and code frames among them, which point at the code that made the cycles.
    """
    out = os.environ.get("BENCH_CYCLES_OUT")
    if not out:
        return
    if not gc.get_debug() & gc.DEBUG_SAVEALL:
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        return
    gc.collect()
    kept, gc.garbage[:] = list(gc.garbage), []
    gc.set_debug(0)
    sections = {
        "objects by type": (_type_name(obj) for obj in kept),
        "classes": (f"{obj.__module__}.{obj.__qualname__}" for obj in kept if isinstance(obj, type)),
        "frames": (
            f"{_short_path(obj.f_code.co_filename)}:{obj.f_code.co_name}"
            for obj in kept
            if isinstance(obj, types.FrameType)
        ),
    }
    with open(out, "w") as report:
        report.write(f"{len(kept)} objects freed by the garbage collector between the two readings\n")
        for title, names in sections.items():
            report.write(f"\n{title}:\n")
            report.writelines(f"{count:8d} {name}\n" for name, count in collections.Counter(names).most_common(60))


class TurnClock:
    """When each chat turn reaches each step before its first token, for `bench.load`'s
    phase-by-phase account of the time the app adds.

    It wraps the Socket.IO handler of a question (`client_message`), `web.chat.answer` (the chat's handler for one
    question, after Chainlit has taken the message in) and the `run_turn` it calls, and notes,
    per turn: when the question came off the socket, the handler's start,
    the pipeline's `Retrieved` event (search and context chosen), its first `TokenEvent` (the
    model's first token, parsed), and when the chat had handed that token to Chainlit (the
    pipeline is resumed after the chat streamed it), with the turn's own `PhaseTimings`.
    Off unless asked (`record`): the churn's memory reading must not count the records.
    """

    def __init__(self) -> None:
        self.recording = False
        self.turns: list[dict] = []

    def install(self) -> None:
        import chainlit.socket  # noqa: F401 - registers the Socket.IO handlers
        from chainlit.context import context
        from chainlit.server import sio
        from chainlit.session import WebsocketSession

        from answering.pipeline import Retrieved, TurnConfig, TurnDone, TurnEvent, TurnRequest
        from models.base import Backend, TokenEvent
        from web import chat

        original_answer, original_run_turn = chat.answer, chat.run_turn
        clock = self
        # When each session's last question came off its socket, before Chainlit takes it in.
        received: dict[str, float] = {}
        handlers = sio.handlers["/"]
        original_message = handlers["client_message"]

        async def message(sid: str, payload: Any) -> Any:
            if clock.recording and (session := WebsocketSession.get(sid)) is not None:
                received[session.id] = time.perf_counter()
            return await original_message(sid, payload)

        handlers["client_message"] = message
        # The record of the turn this task answers: each message is handled in a task of its own.
        current: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bench_turn", default=None)

        async def answer(app: Any, knowledge: Any, question: str) -> None:
            record = None
            if clock.recording:
                record = {
                    "session": context.session.id,
                    "question": question,
                    "received": received.pop(context.session.id, None),
                    "handler": time.perf_counter(),
                }
                clock.turns.append(record)
            token = current.set(record)
            try:
                await original_answer(app, knowledge, question)
            finally:
                current.reset(token)

        default_config = TurnConfig()

        async def run_turn(
            request: TurnRequest, backends: Mapping[str, Backend], config: TurnConfig = default_config
        ) -> AsyncGenerator[TurnEvent, None]:
            record = current.get()
            if record is not None:
                record["turn"] = time.perf_counter()
            async for event in original_run_turn(request, backends, config):
                if record is not None:
                    if isinstance(event, Retrieved):
                        record.setdefault("retrieved", time.perf_counter())
                    elif isinstance(event, TokenEvent) and "first_token" not in record:
                        record["first_token"] = time.perf_counter()
                        yield event
                        record["first_token_sent"] = time.perf_counter()
                        continue
                    elif isinstance(event, TurnDone):
                        record["timings"] = event.timings.phases()
                yield event

        chat.answer, chat.run_turn = answer, run_turn

    def report(self, record: bool) -> dict:
        turns, self.turns, self.recording = self.turns, [], record
        return {"turns": turns}


class BenchRoutes:
    """ASGI middleware answering GET /bench/loop-lag and /bench/state before Chainlit sees them.

    A middleware rather than a route: Chainlit's catch-all GET `/{full_path:path}` (its web
    page) is registered at import, and FastAPI caches its route table, so a route added
    later is not reliably matched ahead of it.
    """

    def __init__(self, app: ASGIApp, monitor: LoopLagMonitor, clock: TurnClock | None = None) -> None:
        self.app = app
        self.monitor = monitor
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/bench/loop-lag":
            payload = self.monitor.report(reset=_flag(Request(scope).query_params.get("reset")))
        elif path == "/bench/memory":
            payload = {"pymalloc": _pymalloc_info()}
        elif path == "/bench/turns" and self.clock is not None:
            payload = self.clock.report(record=_flag(Request(scope).query_params.get("record")))
        elif path == "/bench/state":
            payload = server_state(collect=_flag(Request(scope).query_params.get("gc")))
        else:
            await self.app(scope, receive, send)
            return
        await JSONResponse(payload)(scope, receive, send)


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _small_objects_by_target(objects: list) -> dict[str, int]:
    """Weak references by what they point to (NoneType: dead), partials and methods by function."""
    import functools
    import weakref

    counts: collections.Counter = collections.Counter()
    for obj in objects:
        kind = type(obj)
        if kind is weakref.ReferenceType:
            counts[f"weakref to {_type_name(obj())}"] += 1
        elif kind is functools.partial:
            counts[f"partial {getattr(obj.func, '__qualname__', obj.func)}"] += 1
        elif kind is types.MethodType:
            counts[f"method {obj.__func__.__qualname__}"] += 1
    return dict(counts.most_common(60))


def _largest_containers(objects: list, count: int = 8) -> list[str]:
    sized = [
        (len(obj), obj) for obj in objects if type(obj) in (dict, list, set, collections.deque, collections.OrderedDict)
    ]
    sized.sort(key=lambda pair: -pair[0])
    described = []
    for size, obj in sized[:count]:
        sample = next(iter(obj), None)
        described.append(f"{type(obj).__name__}[{size}] first item {type(sample).__name__} {str(sample)[:60]!r}")
    return described


def _rss_parts() -> dict | None:
    """Resident memory split as Linux counts it: anonymous (heaps, stacks) and file-backed (code, mapped files)."""
    try:
        with open("/proc/self/status") as status:
            lines = status.read().splitlines()
    except OSError:
        return None
    parts = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile", "RssShmem"):
            parts[name.removeprefix("Rss").lower()] = int(value.split()[0]) / 1024
    return parts


def _pymalloc_info() -> dict | None:
    """Python's small-object allocator, in MB: its 1 MB arenas, and the bytes in use inside them."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    numbers = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.startswith("# "):
            numbers[name[2:].strip()] = int(value.strip().replace(",", "") or 0)
    if "arenas allocated current" not in numbers:
        return None
    mb = 2**20
    return {
        "arenas_mb": numbers["arenas allocated current"] * 1.0,
        "in_use_mb": numbers["bytes in allocated blocks"] / mb,
        "free_in_arenas_mb": numbers["bytes in available blocks"] / mb,
    }


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_info() -> dict | None:
    """glibc's totals over all its arenas, in MB: in use, free but kept, and mmapped blocks."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    mb = 2**20
    return {
        "heap_mb": info.arena / mb,
        "in_use_mb": info.uordblks / mb,
        "free_kept_mb": info.fordblks / mb,
        "mmapped_mb": info.hblkhd / mb,
    }


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def install(app: FastAPI, clock: TurnClock | None = None) -> LoopLagMonitor:
    """Start the monitor with the app's lifespan and answer the routes."""
    monitor = LoopLagMonitor()
    original_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(served_app: FastAPI) -> AsyncIterator[Any]:
        task = asyncio.create_task(monitor.run(), name="bench-loop-lag")
        try:
            async with original_lifespan(served_app) as state:
                yield state
        finally:
            task.cancel()

    app.router.lifespan_context = lifespan
    app.add_middleware(BenchRoutes, monitor=monitor, clock=clock)
    return monitor


def main() -> None:
    # Chainlit's CLI applies nest_asyncio and reads the config at import: import it first,
    # exactly as `chainlit run` does, then hook the app it serves.
    from chainlit.cli import cli
    from chainlit.server import app

    clock = TurnClock()
    # Before Chainlit loads app.py, whose handlers call `web.chat` (the same module object).
    clock.install()
    install(app, clock)
    cli(args=sys.argv[1:], prog_name="chainlit")


if __name__ == "__main__":
    main()
