"""Each turn's question embedded before its turn needs it, the questions of chats asking at
once in one call of the model, off the event loop.

Choosing context by meaning needs the question's vector (`rag.embedding.Closeness`). Made
inside each turn's worker thread, twenty chats asking at once each held one of the default
executor's few threads while waiting for the one embedding model, one question after the
other (and the same question as often as it was asked at once), so that every other chat's
search and context choice waited for a free thread behind them. Here a turn asks for its
question's vector as soon as the turn starts, while its search runs; a question already
being embedded is waited for, not embedded again, and the questions asked while one call
runs go together in the next call: one worker thread at a time, whatever the number of chats.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

# Questions embedded in one call at most: a call of 16 takes about a quarter of a second on
# one core, the longest a question that arrives just after it starts waits.
MAX_BATCH = 16


@runtime_checkable
class EmbedsQuestions(Protocol):
    """Closeness in meaning that keeps question vectors (`rag.embedding.Closeness`)."""

    def knows(self, question: str) -> bool: ...

    def embed_questions(self, questions: Sequence[str]) -> None:
        """Embed and keep these questions' vectors; blocking."""
        ...


class QuestionVectors:
    """Embeds questions ahead of the turns that will ask `closeness` about them, in batches.

    Lives on one event loop at a time (a new loop, as in tests that run one per case, starts
    afresh); a question's waiters share one future, shielded so that a cancelled turn does not
    cancel the others' wait.
    """

    def __init__(self, closeness: EmbedsQuestions, max_batch: int = MAX_BATCH) -> None:
        self.closeness = closeness
        self.max_batch = max_batch
        self.calls = 0  # calls of the model made, for tests and benchmarks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}  # queued or being embedded
        self._queued: list[str] = []
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, question: str) -> None:
        """Return once the question's vector is kept by `closeness`. If embedding fails, this
        returns all the same: the turn then embeds the question itself, and meets the error there."""
        if self.closeness.knows(question):
            return
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._waiting, self._queued, self._worker = loop, {}, [], None
        waiting = self._waiting.get(question)
        if waiting is None:
            waiting = self._waiting[question] = loop.create_future()
            self._queued.append(question)
            if self._worker is None or self._worker.done():
                self._worker = loop.create_task(self._drain(), name="embed-questions")
        await asyncio.shield(waiting)

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued[: self.max_batch], self._queued[self.max_batch :]
            try:
                self.calls += 1
                await asyncio.to_thread(self.closeness.embed_questions, batch)
            except Exception:  # each turn then embeds its question itself, and reports the error
                log.exception("Embedding %d questions ahead of their turns failed.", len(batch))
            finally:
                for question in batch:
                    waiting = self._waiting.pop(question)
                    if not waiting.done():
                        waiting.set_result(None)


_BATCHERS: weakref.WeakKeyDictionary[EmbedsQuestions, QuestionVectors] = weakref.WeakKeyDictionary()


def question_vectors(closeness: EmbedsQuestions) -> QuestionVectors:
    """The one batcher of this closeness: every chat's questions go to the model through it."""
    batcher = _BATCHERS.get(closeness)
    if batcher is None:
        batcher = _BATCHERS[closeness] = QuestionVectors(closeness)
    return batcher
