"""Watching the corpus folder: a saved, added or deleted file re-indexes the shared corpus.

`watchfiles.awatch` waits for file-system events in a worker thread (inotify on Linux) and
groups a burst of them (an editor's save is several) into one batch; the re-indexing, which
reads and hashes files and rebuilds the matrix, runs in another worker thread, so the event
loop never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from watchfiles import awatch

from rag.persisted_index import PersistedCorpus

log = logging.getLogger(__name__)


class CorpusWatcher:
    """Keeps a `PersistedCorpus` up to date with its folder from `start()` until `stop()`."""

    def __init__(
        self, corpus: PersistedCorpus, debounce_ms: int = 300, after_refresh: Callable[[], object] | None = None
    ) -> None:
        self.corpus = corpus
        self.debounce_ms = debounce_ms
        # Blocking work on the refreshed corpus, run in the same worker thread after each refresh.
        self.after_refresh = after_refresh
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start watching; called on the event loop."""
        self._stop.clear()
        self._task = asyncio.create_task(self._watch(), name="watch-corpus")

    async def stop(self) -> None:
        """Stop watching and wait until the watcher has let go of the folder."""
        self._stop.set()  # awatch checks it between waits (every 50 ms), then returns
        if self._task is not None:
            await self._task
            self._task = None

    async def _watch(self) -> None:
        folder = self.corpus.folder
        if not folder.is_dir():
            log.warning("Not watching %s for changes: there is no such folder.", folder)
            return
        # A change made while the previous batch was re-indexed is seen by the next refresh:
        # each one compares every file's hash with the index, not the events.
        async for _ in awatch(folder, stop_event=self._stop, debounce=self.debounce_ms, step=50, recursive=True):
            try:
                await asyncio.to_thread(self._refresh)
            except Exception:  # log.exception names it; the watcher must outlive one failed refresh
                log.exception("Re-indexing %s failed; the previous index stays in use.", folder)

    def _refresh(self) -> None:
        self.corpus.refresh()
        if self.after_refresh is not None:
            self.after_refresh()
