"""The application object: everything a running assistant holds, built once from `Settings`.

`build_assistant` makes it; `app.py` holds one and its Chainlit handlers work on it. Tests
build one with fake backends (`tests/fakes.py`) and serve it in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import chainlit.server as chainlit_server
from chainlit.data.storage_clients.base import BaseStorageClient

from answering.pipeline import TurnConfig, embed_ahead
from i18n import message_of
from models.base import Backend
from models.catalog import Catalog
from models.factory import load_catalog, make_backends
from models.settings import Settings
from rag.corpus_watch import CorpusWatcher
from rag.persisted_index import PersistedCorpus, exclusive
from rag.uploads import UploadReader
from web.accounts import load_users
from web.chat_store import ensure_auth_secret, make_storage
from web.loop_health import IdleCollector, keep_timer_heap_clean
from web.store_schema import ChatStoreError, prepare_store

log = logging.getLogger(__name__)

SENTENCE_VECTORS_LOCK = "sentence-vectors.lock"


@dataclass
class Assistant:
    """One running assistant: its models, knowledge base, file reader, chat store and upkeep."""

    settings: Settings
    # Shared by every chat, so that each embedded model is loaded once per process.
    backends: Mapping[str, Backend]
    # The built-in sentences and the on-disk handbook, indexed into DATA_DIR; uploads are per chat.
    corpus: PersistedCorpus
    # Uploaded files are read in their own process(es), shared by every chat.
    upload_reader: UploadReader
    # Where saved chats keep their side elements and uploads.
    storage: BaseStorageClient
    turn_config: TurnConfig
    # Full garbage collections wait until no answer is streaming (see web/loop_health.py).
    collector: IdleCollector = field(default_factory=IdleCollector)
    # User name -> password hash when login is on; None when there is one local user.
    users: dict[str, str] | None = None
    # Why chats are not saved, when the chat store could not be opened (an i18n.Message: `localise` it).
    chat_store_problem: str | None = None
    # Re-indexes the handbook when a file under CORPUS_DIR changes (WATCH_CORPUS), from start to stop.
    watcher: CorpusWatcher | None = None
    # The chats' answers being written, which a clean stop lets end (`answers_ended`).
    answering: set[asyncio.Task[Any]] = field(default_factory=set)
    _upkeep: list[asyncio.Task[Any]] = field(default_factory=list)
    _stop_embedding: threading.Event = field(default_factory=threading.Event)

    @property
    def saves_chats(self) -> bool:
        return self.settings.persist_chats and self.chat_store_problem is None

    async def catalog(self) -> Catalog:
        """The models on offer now (the server's list is asked for each time)."""
        return await load_catalog(self.settings, self.backends)

    async def start(self) -> None:
        """Start the loop's upkeep and the upload reader; called on the server's event loop."""
        self._upkeep[:] = [
            asyncio.create_task(keep_timer_heap_clean(), name="purge-cancelled-timers"),
            asyncio.create_task(self.collector.run(), name="idle-garbage-collector"),
        ]
        await asyncio.to_thread(self.upload_reader.start)
        ahead = self.settings.embed_corpus_ahead
        if ahead:
            self._stop_embedding.clear()
            self._upkeep.append(asyncio.create_task(asyncio.to_thread(self.embed_corpus_ahead), name="embed-corpus"))
        if self.settings.watch_corpus:
            self.watcher = CorpusWatcher(self.corpus, after_refresh=self.embed_corpus_ahead if ahead else None)
            self.watcher.start()

    def embed_corpus_ahead(self) -> int:
        """Embed the handbook's sentences before questions need them (`embed_ahead`); returns how
        many were embedded. Blocking. Processes sharing MODEL_CACHE_DIR take turns: the first
        embeds and saves, the others then load its vectors and embed nothing again."""
        chunks = self.corpus.current().chunks(self.settings.chunk_size, self.settings.chunk_overlap)
        try:
            with exclusive(self.settings.model_cache_dir / SENTENCE_VECTORS_LOCK):
                return embed_ahead(self.settings, chunks, self._stop_embedding)
        except Exception:  # questions embed what they need themselves; the app runs on
            log.exception("Embedding the corpus's sentences ahead of questions failed.")
            return 0

    async def answers_ended(self, timeout_s: float = 10) -> None:
        """Wait (up to `timeout_s`) for the answers being written to end: a clean stop closes
        their chats, which cancels them, and each marks and saves its partial answer."""
        if self.answering:
            await asyncio.wait(set(self.answering), timeout=timeout_s)

    async def stop(self) -> None:
        """Stop what `start` started and release the models, so that a replacement starts clean."""
        self._stop_embedding.set()
        for task in self._upkeep:
            task.cancel()
        self._upkeep.clear()
        if self.watcher is not None:
            # Before the replacement starts its own: two watchers would index every change twice.
            await self.watcher.stop()
            self.watcher = None
        self.upload_reader.close()
        for backend in self.backends.values():
            with contextlib.suppress(Exception):  # a stopping backend must not keep the others loaded
                await backend.aclose()


def build_assistant(settings: Settings, backends: Mapping[str, Backend] | None = None) -> Assistant:
    """The assistant `settings` describe; `backends` replaces the configured models (tests pass fakes)."""
    chat_store_problem = None
    stored_secret = None
    if settings.persist_chats:
        try:
            stored_secret = prepare_store(settings.chat_store_url, settings.data_dir / "auth-secret")
        except ChatStoreError as error:
            # Start anyway, without history: a broken store must not keep the assistant down.
            chat_store_problem = message_of(error)  # an i18n.Message: said in each chat's language
            print(f"⚠️ {chat_store_problem}", file=sys.stderr)
    _keep_login_secret(settings, stored_secret)
    return Assistant(
        settings=settings,
        backends=make_backends(settings) if backends is None else backends,
        corpus=_shared_corpus(settings),
        upload_reader=UploadReader(settings.upload_parse_workers),
        storage=make_storage(settings),
        turn_config=TurnConfig.from_settings(settings),
        # Never fall back to an open app when the operator asked for login.
        users=load_users(settings) if settings.login_required else None,
        chat_store_problem=chat_store_problem,
    )


def _shared_corpus(settings: Settings) -> PersistedCorpus:
    """The handbook, loaded from its index in DATA_DIR; only files changed since are read again."""
    corpus = PersistedCorpus(
        settings.corpus_dir,
        settings.data_dir / "corpus-index",
        settings.chunk_size,
        settings.chunk_overlap,
        settings.retrieval_mode,
    )
    corpus.refresh()
    return corpus


def _keep_login_secret(settings: Settings, stored: str | None) -> None:
    """One login-cookie secret for every process of this assistant, so that a user signed in on
    one is signed in on all, and stays signed in across restarts: CHAINLIT_AUTH_SECRET if set,
    else the one kept in the chat store, else (no store) one kept in DATA_DIR."""
    if os.environ.get("CHAINLIT_AUTH_SECRET"):
        return
    if stored is not None:
        os.environ["CHAINLIT_AUTH_SECRET"] = stored
        return
    try:
        ensure_auth_secret(settings.data_dir)
    except OSError as error:
        print(f"⚠️ Cannot keep a login secret in {settings.data_dir} ({error}); sessions end when the app restarts.")
        os.environ.setdefault("CHAINLIT_AUTH_SECRET", secrets.token_urlsafe(48))


def serve(build: Callable[[], Assistant]) -> Assistant:
    """The assistant this server runs: built by `build`, or by the builder a test installed as
    `app.state.build_assistant` (tests/in_process.py) to serve fake models.

    `chainlit run -w` runs app.py again inside the running server after every change and does
    not call the start-up hook again: the previous run's assistant is stopped here (its models
    are released, its reader process and loop tasks end) and this run's started.
    """
    state = chainlit_server.app.state
    assistant = getattr(state, "build_assistant", build)()
    previous, state.assistant = getattr(state, "assistant", None), assistant
    if previous is not None:
        # The previous run's module and objects were frozen out of the collector's reach
        # (app.py ends with gc.freeze()); let them go now that nothing serves them.
        gc.unfreeze()

        async def replace() -> None:
            await previous.stop()
            await assistant.start()

        state.replacing = asyncio.get_running_loop().create_task(replace(), name="replace-assistant")
    return assistant
