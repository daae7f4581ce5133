"""Keeping the shared event loop responsive: the cancelled-timer purge and the idle collector."""

from __future__ import annotations

import asyncio
import gc

import pytest

from web.loop_health import (
    FULL_COLLECTION_DUE,
    IdleCollector,
    keep_timer_heap_clean,
    purge_cancelled_timers,
)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def schedule(loop, count: int, cancelled: int) -> list:
    handles = [loop.call_later(60, lambda: None) for _ in range(count)]
    for handle in handles[:cancelled]:
        handle.cancel()
    return handles


def test_purge_drops_cancelled_timers_and_keeps_live_ones(loop):
    schedule(loop, 500, cancelled=400)

    assert purge_cancelled_timers(loop) == 400
    assert len(loop._scheduled) == 100
    assert not any(handle._cancelled for handle in loop._scheduled)


def test_a_live_timer_still_fires_after_a_purge(loop):
    schedule(loop, 300, cancelled=300)
    fired = []
    loop.call_later(0.05, fired.append, "on time")

    purge_cancelled_timers(loop)
    loop.run_until_complete(asyncio.sleep(0.2))

    assert fired == ["on time"]


def test_a_few_cancelled_timers_are_not_worth_a_rebuild(loop):
    schedule(loop, 50, cancelled=50)

    assert purge_cancelled_timers(loop) == 0
    assert len(loop._scheduled) == 50


def test_the_purge_task_keeps_the_heap_to_live_timers(loop):
    async def streaming_chunks() -> int:
        purge = asyncio.create_task(keep_timer_heap_clean(interval_s=0.01))
        for _ in range(2000):  # what per-chunk deadlines do
            async with asyncio.timeout(60):
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        purge.cancel()
        return len(asyncio.get_running_loop()._scheduled)

    assert loop.run_until_complete(streaming_chunks()) < 100


@pytest.fixture
def full_collections():
    """Generation-2 collections, as the interpreter reports them; thresholds restored afterwards."""
    thresholds = gc.get_threshold()
    seen: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            seen.append(1)

    gc.callbacks.append(note)
    yield seen
    gc.callbacks.remove(note)
    gc.set_threshold(*thresholds)


def promote_to_oldest_generation(times: int = FULL_COLLECTION_DUE) -> None:
    for _ in range(times):
        gc.collect(1)  # each one counts towards the next full collection


def test_python_no_longer_starts_full_collections_by_itself(full_collections):
    IdleCollector().take_over()

    promote_to_oldest_generation(3 * FULL_COLLECTION_DUE)
    young_garbage = [[[]] for _ in range(50_000)]  # young and middle collections go on as before
    del young_garbage

    assert full_collections == []
    assert gc.get_threshold()[0] > 0


def test_a_due_collection_runs_once_all_is_quiet(full_collections):
    collector = IdleCollector(quiet_s=0)
    collector.take_over()
    promote_to_oldest_generation()

    assert collector.collect_if_due()
    assert full_collections == [1]
    assert gc.get_count()[2] == 0


def test_no_full_collection_while_an_answer_streams(full_collections):
    collector = IdleCollector(quiet_s=0)
    collector.take_over()
    promote_to_oldest_generation()

    with collector.busy():
        assert not collector.collect_if_due()
    assert full_collections == []


def test_a_moment_between_two_answers_is_not_quiet(full_collections):
    collector = IdleCollector(quiet_s=60)
    collector.take_over()
    promote_to_oldest_generation()
    with collector.busy():
        pass

    assert not collector.collect_if_due()
    assert full_collections == []


def test_an_overdue_collection_runs_even_under_load(full_collections):
    collector = IdleCollector(quiet_s=0, max_interval_s=0)
    collector.take_over()
    promote_to_oldest_generation(1)

    with collector.busy():
        assert collector.collect_if_due()
    assert full_collections == [1]


def test_nothing_new_means_no_collection_however_long_ago(full_collections):
    collector = IdleCollector(quiet_s=0, max_interval_s=0)
    collector.take_over()
    gc.collect()
    full_collections.clear()

    assert not collector.collect_if_due()
    assert full_collections == []
