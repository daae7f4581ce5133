"""Questions embedded ahead of their turns, those of chats asking at once together
(`answering.question_vectors`, `rag.embedding.Closeness.embed_questions`).

The embedder is a fake that implements the `Embedder` protocol (and `BatchQueries`, when it
batches) and records each call; a gate holds a call in its worker thread, as the real model
is busy for a while, so that the questions asked meanwhile can be seen to queue.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from answering.question_vectors import QuestionVectors
from rag.embedding import BatchQueries, Closeness, Vectors


def _vector(text: str) -> Vectors:
    vector = np.array([1.0, len(text) % 7, len(text) % 3, 1.0], dtype=np.float32)
    return vector / np.linalg.norm(vector)


class OneByOneEmbedder:
    """An `Embedder` without a batch call: each question is its own call."""

    name = "one-by-one"
    dimensions = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def passages(self, texts: Sequence[str]) -> Vectors:
        return np.array([_vector(text) for text in texts], dtype=np.float32)

    def query(self, text: str) -> Vectors:
        self.calls.append([text])
        return _vector(text)


class BatchingEmbedder(OneByOneEmbedder):
    """An `Embedder` that embeds several questions in one call (`BatchQueries`); `gate`, when
    set, holds each call until it is opened."""

    name = "batching"

    def __init__(self, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.started = threading.Event()

    def queries(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        return np.array([_vector(text) for text in texts], dtype=np.float32)


async def _until(event: threading.Event) -> None:
    deadline = time.monotonic() + 5
    while not event.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.005)


def test_the_packaged_model_embeds_questions_in_batches():
    from rag.embedding import DEFAULT_EMBEDDER

    assert isinstance(DEFAULT_EMBEDDER, BatchQueries)
    assert isinstance(BatchingEmbedder(), BatchQueries) and not isinstance(OneByOneEmbedder(), BatchQueries)


def test_closeness_embeds_the_questions_it_does_not_know_in_one_call():
    embedder = BatchingEmbedder()
    closeness = Closeness(embedder)
    closeness("Which port?", ["Port 5273."])  # asked before: kept

    closeness.embed_questions(["Which port?", "Which file types?", "How long?", "Which file types?"])

    assert embedder.calls == [["Which port?"], ["Which file types?", "How long?"]]
    assert closeness.knows("How long?")
    # Asking about a question embedded ahead embeds nothing more.
    assert closeness("How long?", ["120 seconds."]) == pytest.approx(
        [float(np.dot(_vector("120 seconds."), _vector("How long?")))]
    )
    assert len(embedder.calls) == 2


def test_an_embedder_that_cannot_batch_embeds_the_questions_one_by_one():
    embedder = OneByOneEmbedder()
    closeness = Closeness(embedder)

    closeness.embed_questions(["Which port?", "How long?"])

    assert embedder.calls == [["Which port?"], ["How long?"]]
    assert closeness.knows("Which port?") and closeness.knows("How long?")


async def test_questions_asked_while_the_model_is_busy_go_together_in_its_next_call_each_once():
    gate = threading.Event()
    embedder = BatchingEmbedder(gate)
    vectors = QuestionVectors(Closeness(embedder))

    first = asyncio.create_task(vectors.embed("Which port?"))
    await _until(embedder.started)  # the model is busy with the first question
    meanwhile = [
        asyncio.create_task(vectors.embed(question))
        for question in ("Which file types?", "How long?", "Which port?", "Which file types?")
    ]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in [first, *meanwhile])
    gate.set()
    await asyncio.gather(first, *meanwhile)

    assert embedder.calls == [["Which port?"], ["Which file types?", "How long?"]]
    assert vectors.calls == 2
    # Known now: asking again neither waits nor calls the model.
    await vectors.embed("How long?")
    assert vectors.calls == 2


async def test_a_batch_holds_at_most_max_batch_questions():
    gate = threading.Event()
    embedder = BatchingEmbedder(gate)
    vectors = QuestionVectors(Closeness(embedder), max_batch=2)

    first = asyncio.create_task(vectors.embed("q0"))
    await _until(embedder.started)
    others = [asyncio.create_task(vectors.embed(f"q{n}")) for n in range(1, 6)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, *others)

    assert embedder.calls == [["q0"], ["q1", "q2"], ["q3", "q4"], ["q5"]]


async def test_a_cancelled_turn_does_not_cancel_the_wait_of_another_turn_asking_the_same_question():
    gate = threading.Event()
    embedder = BatchingEmbedder(gate)
    closeness = Closeness(embedder)
    vectors = QuestionVectors(closeness)

    leaving = asyncio.create_task(vectors.embed("Which port?"))
    staying = asyncio.create_task(vectors.embed("Which port?"))
    await _until(embedder.started)
    leaving.cancel()
    gate.set()
    await staying

    assert leaving.cancelled() and closeness.knows("Which port?")


class FailingCloseness:
    """Closeness whose model fails: `embed_questions` raises."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def knows(self, question: str) -> bool:
        return False

    def embed_questions(self, questions: Sequence[str]) -> None:
        self.asked.append(list(questions))
        raise RuntimeError("the embedding engine failed")


async def test_a_failed_call_lets_its_turns_go_on_to_embed_and_report_the_error_themselves(caplog):
    closeness = FailingCloseness()
    vectors = QuestionVectors(closeness)

    await asyncio.wait_for(asyncio.gather(vectors.embed("Which port?"), vectors.embed("How long?")), 5)

    assert closeness.asked == [["Which port?", "How long?"]]
    assert "Embedding 2 questions ahead of their turns failed" in caplog.text


def test_each_event_loop_gets_a_fresh_queue():
    embedder = BatchingEmbedder()
    vectors = QuestionVectors(Closeness(embedder))

    asyncio.run(vectors.embed("Which port?"))
    asyncio.run(vectors.embed("How long?"))

    assert embedder.calls == [["Which port?"], ["How long?"]]
