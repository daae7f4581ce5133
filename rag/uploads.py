"""Adding one uploaded file to a session's knowledge base, with the outcome in plain words."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from i18n import N_, Message
from rag.documents import Document
from rag.index import DuplicateUpload, KnowledgeBase
from rag.parsing import UploadError, parse_file, safe_file_name

# A reader process is replaced after this many files, so that whatever a library
# keeps from one file cannot pile up for the life of the app.
FILES_PER_WORKER = 100
# How much lower than the app the reader processes run (Linux "nice" steps).
READER_NICENESS = 10
ORPHAN_CHECK_S = 1.0


@dataclass(frozen=True)
class UploadOutcome:
    file_name: str
    title: str = ""
    chunks: int = 0
    seconds: float = 0.0
    # Why the file was not added (an i18n.Message: English as a str, `i18n.localise` it where
    # shown); None when it was.
    refusal: str | None = None
    duplicate: bool = False  # refused because the same file is already in this knowledge base

    @property
    def added(self) -> bool:
        return self.refusal is None


async def add_upload_off_loop(
    knowledge: KnowledgeBase, path: Path, claimed_name: str, max_bytes: int, reader: UploadReader
) -> UploadOutcome:
    """Parse, chunk and add one file: read by `reader`, chunked in a thread. A refused file
    leaves the knowledge base unchanged."""
    name = safe_file_name(claimed_name)
    started = time.perf_counter()
    try:
        document = await reader.parse(path, name, max_bytes)
        added = await asyncio.to_thread(knowledge.add, document)
    except (UploadError, DuplicateUpload) as error:
        return _refused(name, error)
    return UploadOutcome(document.source, document.title, added.chunks, time.perf_counter() - started)


def _refused(name: str, error: UploadError | DuplicateUpload) -> UploadOutcome:
    if isinstance(error, DuplicateUpload):
        refusal = Message(N_("the same file is already here as {file}"), file=error.existing.source)
        return UploadOutcome(name, refusal=refusal, duplicate=True)
    return UploadOutcome(name, refusal=error.reason)


class UploadReader:
    """Reads uploaded files in separate processes, so that no chat waits while one is read.

    PDF text extraction (pypdf) is pure Python: in a thread it holds the interpreter lock
    for most of a second per large PDF, and every chat's streaming waits behind it
    (stalls of 140-160 ms in `python -m bench.load`, against under 90 ms without uploads).
    A process has its own interpreter. A file that crashes the reader is refused, and the
    next file gets a new process. `workers=0` reads in a thread of this process instead.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def parse(self, path: Path, name: str, max_bytes: int) -> Document:
        """A Document, or UploadError with the reason in plain words."""
        if self.workers == 0:
            return await asyncio.to_thread(parse_file, path, name, max_bytes)
        # Starting a worker process blocks for a moment: not on the event loop.
        pool = await asyncio.to_thread(self._current_pool)
        try:
            outcome = await asyncio.wrap_future(pool.submit(_read, path, name, max_bytes))
        except BrokenProcessPool as error:
            self._discard(pool)
            raise UploadError(
                name,
                Message(
                    N_(
                        "reading it stopped the file reader (the file may be damaged or too "
                        "complex); try another copy or a simpler format"
                    )
                ),
            ) from error
        if isinstance(outcome, str):
            raise UploadError(name, outcome)
        return outcome

    def start(self) -> None:
        """Start the worker processes now, so that the first upload does not wait for them (blocking)."""
        if self.workers:
            pool = self._current_pool()
            for future in [pool.submit(_ready) for _ in range(self.workers)]:
                future.result()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _current_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # "spawn": the app has threads (model decoding, the chat store), and a forked
                # copy of a process with threads can deadlock.
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_reader,
                    max_tasks_per_child=FILES_PER_WORKER,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


def _read(path: Path, name: str, max_bytes: int) -> Document | str:
    """In the reader process: the document, or why it was refused.

    The refusal travels as text (an i18n.Message, pickled with its msgid and parameters): an
    UploadError (a frozen dataclass) cannot be sent back by concurrent.futures, which clears an
    exception's traceback before pickling it.
    """
    try:
        return parse_file(path, name, max_bytes)
    except UploadError as error:
        return error.reason


def _ready() -> bool:
    return True


def _start_reader() -> None:
    """In each new reader process: lower priority, and exit if the app is gone."""
    # Reading a file can wait a little; the chats, which share the app's event loop, cannot.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(READER_NICENESS)
    # An app that is killed (or crashes) cannot shut its pool down, and a reader does not
    # always notice (one was seen waiting for work 35 minutes later): it checks its parent.
    app = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(app,), name="reader-watch", daemon=True).start()


def _exit_when_orphaned(app: int) -> None:
    while os.getppid() == app:
        time.sleep(ORPHAN_CHECK_S)
    os._exit(0)
