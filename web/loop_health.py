"""Keeping the event loop that every chat shares responsive: timers and garbage collection.

Both were found with `python -m bench.load` (its event-loop lag report names the cause of
each stall).

**Cancelled timers.** Every streamed chunk arms and cancels deadlines: ours (`TOKEN_TIMEOUT_S`), httpx's read
timeout and anyio's cancel scopes. asyncio's own loop drops cancelled timers once they
are half of its heap, but Chainlit runs under nest_asyncio, whose loop only drops them
when they reach the top of the heap, that is when they would have fired, 30-60 s later.

Under 20 streaming chats that is ~20,000 dead timers at any moment, each holding a
context copy and a callback: most of what the garbage collector scans, so a full
collection stalled every chat for 100+ ms (`python -m bench.load`). A purge once a second,
as asyncio's own loop does it, keeps the heap to the live timers.

**Full garbage collections.** A full collection scans every object the process holds and
keeps the interpreter lock throughout: with 20 chats open that was 120-160k objects and
100-140 ms during which no chat streams (70-100k objects and 40-50 ms since the latency
chart stopped using plotly.py's figure objects). `IdleCollector` leaves the young generations to
Python and runs the full collections itself, once no answer has been in flight for
`quiet_s`, or after `max_interval_s` whatever the load, so that garbage with reference
cycles is still freed. Under load that never pauses, one full collection per
`max_interval_s` still stalls the chats for its duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
import time
from collections.abc import Iterator

PURGE_INTERVAL_S = 1.0
# As in asyncio.base_events: not worth rebuilding a small heap.
MIN_CANCELLED = 100

log = logging.getLogger(__name__)


def purge_cancelled_timers(loop: asyncio.AbstractEventLoop) -> int:
    """Drop cancelled timers from the loop's heap, exactly as asyncio's own loop does; returns how many."""
    scheduled = getattr(loop, "_scheduled", None)
    if not isinstance(scheduled, list):
        return 0  # not a selector/proactor loop (uvloop purges by itself)
    cancelled = sum(1 for handle in scheduled if handle._cancelled)
    if cancelled < MIN_CANCELLED:
        return 0
    live = []
    for handle in scheduled:
        if handle._cancelled:
            handle._scheduled = False
        else:
            live.append(handle)
    heapq.heapify(live)
    # In place: a loop iteration in progress holds a reference to this very list.
    scheduled[:] = live
    if hasattr(loop, "_timer_cancelled_count"):
        loop._timer_cancelled_count = 0
    return cancelled


async def keep_timer_heap_clean(interval_s: float = PURGE_INTERVAL_S) -> None:
    """Run for the life of the server: purge the running loop's heap every `interval_s`."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        try:
            purge_cancelled_timers(loop)
        except Exception:  # a failed purge must never take the server down
            log.exception("could not purge cancelled timers; stopping the purge")
            return


# Python's own rule starts a full collection after 10 collections of the middle generation;
# it is kept as the sign that the oldest generation has new objects worth a scan.
FULL_COLLECTION_DUE = 10
NEVER = 1_000_000_000


class IdleCollector:
    """Full garbage collections between answers rather than in the middle of them."""

    def __init__(self, check_s: float = 1.0, quiet_s: float = 2.0, max_interval_s: float = 300.0) -> None:
        self.check_s = check_s
        # A moment between two answers is not a pause: the next question may already be on its way.
        self.quiet_s = quiet_s
        self.max_interval_s = max_interval_s
        self.in_flight = 0
        self._last_full = self._last_busy = time.monotonic()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Marks work a pause would be felt in (an answer streaming, a file being read)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._last_busy = time.monotonic()

    def take_over(self) -> None:
        """Stop Python from starting full collections by itself; the young generations are unchanged."""
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)

    def collect_if_due(self) -> bool:
        """Run a full collection if one is due and all is quiet, or if the last was too long ago."""
        now = time.monotonic()
        promoted = gc.get_count()[2]  # collections of the middle generation since the last full one
        overdue = promoted > 0 and now - self._last_full >= self.max_interval_s
        quiet = self.in_flight == 0 and now - self._last_busy >= self.quiet_s
        due = promoted >= FULL_COLLECTION_DUE and quiet
        if not (overdue or due):
            return False
        gc.collect()
        self._last_full = time.monotonic()
        return True

    async def run(self) -> None:
        """Run for the life of the server."""
        self.take_over()
        try:
            while True:
                await asyncio.sleep(self.check_s)
                self.collect_if_due()
        finally:
            gc.set_threshold(*gc.get_threshold()[:2], FULL_COLLECTION_DUE)
