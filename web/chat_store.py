"""Conversation history: Chainlit's SQLAlchemy data layer on SQLite or PostgreSQL, and element storage.

Chainlit stores threads, messages (steps) and their side elements through a data
layer. Its SQLAlchemy one runs here on the schema of web/store_schema.py, the same on
both databases: list and dict parameters are stored as JSON text. Side elements (sources,
latency breakdowns, uploads) go through the storage-client interface of Chainlit's own
cloud clients: files in a folder every app process reaches (`ELEMENTS_DIR`), or an S3
bucket through Chainlit's S3 client (`make_storage`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from chainlit.context import ChainlitContextException, context
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.element import Element
from chainlit.session import WebsocketSession
from chainlit.step import StepDict
from chainlit.types import ThreadDict
from sqlalchemy import TextClause, event, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from i18n import localise, translator
from models.base import ChatMessage
from models.settings import Settings
from rag.index import KnowledgeBase
from rag.uploads import UploadReader, add_upload_off_loop
from web.store_schema import ChatStoreError, is_postgresql

log = logging.getLogger(__name__)

# Where the browser fetches a stored element; app.py serves this path.
STORED_ELEMENTS_ROUTE = "/stored-elements"
# Connections to the chat database each process keeps open. SQLite writes one at a time
# anyway; a PostgreSQL server shared by N processes sees N times this (plus the overflow).
POOL_SIZE = 5
POSTGRESQL_POOL = {"pool_size": 10, "max_overflow": 10}
# How long a save waits for a connection. Chainlit drops a save whose wait times out (it logs
# and goes on): under a burst, saves wait their turn rather than be lost.
POOL_TIMEOUT_S = 600
# How long the end of a turn waits for its messages to reach the chat store (`saved`).
SAVED_WAIT_S = 60
# Chats each process remembers as saved, with their owners (`ChatDataLayer`).
KNOWN_CHATS = 10_000


def _sqlite_write_ahead_log(connection: Any, record: Any) -> None:
    """SQLite's write-ahead log: readers never wait for the writer, and a commit is one append
    (synced at checkpoints) rather than a rewritten journal synced every time."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@functools.lru_cache(maxsize=1024)
def _statement(query: str) -> TextClause:
    return text(query)


def _json_as_text(parameters: dict[str, Any]) -> dict[str, Any]:
    # Chainlit passes tags and modes as Python lists: the schema keeps JSON as text on both databases.
    return {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in parameters.items()}


class ChatDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQLAlchemy data layer on the chat store at `url` (SQLite or PostgreSQL, web/store_schema.py)."""

    def __init__(self, url: str, storage: BaseStorageClient) -> None:
        super().__init__(conninfo=url, storage_provider=storage)
        # Chainlit's engine has SQLAlchemy's default pool: 5 connections, plus up to 10 more
        # opened and closed again under load (on SQLite each with its own aiosqlite thread):
        # a fixed pool (its engine is not connected yet). A PostgreSQL server may restart under
        # the app: its connections are checked before use.
        sqlite = not is_postgresql(url)
        pool = {"pool_size": POOL_SIZE, "max_overflow": 0} if sqlite else POSTGRESQL_POOL
        self.engine = create_async_engine(self._conninfo, **pool, pool_timeout=POOL_TIMEOUT_S, pool_pre_ping=not sqlite)
        self.async_session = async_sessionmaker(self.engine, expire_on_commit=False)
        if sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_write_ahead_log)
        # Chats known to exist, and their owners once known: Chainlit asks the database before
        # every message and side element, and for each element's owner.
        self._known: OrderedDict[str, str | None] = OrderedDict()
        # Side elements handed over and not yet in a batch, and the batches being saved.
        self._unsaved: list[tuple[Element, asyncio.Future[None]]] = []
        self._saving: set[asyncio.Task[None]] = set()
        # Per chat, the tasks writing its messages and side elements now (`saved`).
        self._writing: dict[str, set[asyncio.Task[Any]]] = {}

    @contextlib.contextmanager
    def _writes_to(self, thread_id: str | None) -> Iterator[None]:
        task = asyncio.current_task()
        if not thread_id or task is None:
            yield
            return
        tasks = self._writing.setdefault(thread_id, set())
        if task in tasks:  # nested (Chainlit's update_step calls create_step): the outer write covers it
            yield
            return
        tasks.add(task)
        try:
            yield
        finally:
            tasks.discard(task)
            if not tasks and self._writing.get(thread_id) is tasks:
                del self._writing[thread_id]

    async def saved(self, thread_id: str) -> None:
        """Wait until every write to the chat begun so far is in the store. Chainlit hands each
        write to a task of its own and never waits for it: under load they queue, and a process
        killed then took answers its users had seen with it."""
        await asyncio.sleep(0)  # writes handed to new tasks just now begin (and register) first
        current = asyncio.current_task()
        give_up = asyncio.get_running_loop().time() + SAVED_WAIT_S
        while pending := [task for task in self._writing.get(thread_id, ()) if task is not current]:
            left = give_up - asyncio.get_running_loop().time()
            if left <= 0:  # a database that stopped answering must not hold the chat for good
                log.warning("Chat %s: %d writes still waiting for the chat store.", thread_id, len(pending))
                return
            await asyncio.wait(pending, timeout=left)

    async def create_step(self, step_dict: StepDict) -> None:
        with self._writes_to(step_dict.get("threadId")):
            await super().create_step(step_dict)

    async def update_step(self, step_dict: StepDict) -> None:
        with self._writes_to(step_dict.get("threadId")):
            await super().update_step(step_dict)

    def _remember(self, thread_id: str, owner: str | None) -> None:
        self._known[thread_id] = owner or self._known.get(thread_id)
        self._known.move_to_end(thread_id)
        while len(self._known) > KNOWN_CHATS:
            self._known.popitem(last=False)

    async def _get_user_id_by_thread(self, thread_id: str) -> str | None:
        if owner := self._known.get(thread_id):
            return owner
        owner = await super()._get_user_id_by_thread(thread_id)
        if owner:
            self._remember(thread_id, owner)
        return owner

    async def execute_sql(self, query: str, parameters: dict) -> Any:
        """Chainlit's statement runner, lighter: each query's text parsed once, and a plain
        connection in place of an ORM session (together a third of the chat store's time on
        the event loop under bench.load). As Chainlit's, it logs a failure and returns None."""
        try:
            async with self.engine.begin() as connection:
                result = await connection.execute(_statement(query), _json_as_text(parameters))
                if not result.returns_rows:
                    return result.rowcount
                return self.clean_result([dict(row._mapping) for row in result.fetchall()])
        except Exception as error:  # noqa: BLE001 - Chainlit's callers expect None, not an exception
            log.warning("A chat-store statement failed: %s", error)
            return None

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict | None = None,
        tags: list[str] | None = None,
    ) -> None:
        if name is None and user_id is None and metadata is None and tags is None:
            # Chainlit calls this before each step to make sure the chat exists; when it did not,
            # its insert overwrote the metadata that the chat's first naming (another task) had
            # just written. Create the chat if missing, and touch nothing else.
            if thread_id not in self._known:
                await self.execute_sql(
                    'INSERT INTO threads ("id", "createdAt", "metadata") VALUES (:id, :created, :metadata) '
                    'ON CONFLICT ("id") DO NOTHING',
                    {"id": thread_id, "created": await self.get_current_timestamp(), "metadata": "{}"},
                )
                self._remember(thread_id, None)
            return
        # Chainlit saves a chat's settings when its page disconnects, which a process that dies
        # never sees. Its first write of a chat (naming it after the first message) takes them
        # along here.
        if name is not None and metadata is None:
            with contextlib.suppress(ChainlitContextException):
                session = context.session
                if isinstance(session, WebsocketSession) and session.thread_id == thread_id:
                    metadata = {"chat_settings": session.chat_settings}
        await super().update_thread(thread_id, name, user_id, metadata, tags)
        if user_id is not None:  # each side element asks for its chat's owner
            self._remember(thread_id, user_id)

    async def delete_thread(self, thread_id: str) -> None:
        self._known.pop(thread_id, None)
        await super().delete_thread(thread_id)

    async def create_element(self, element: Element) -> None:
        if not element.for_id:  # as Chainlit: an element of no message is not saved
            return
        with self._writes_to(element.thread_id):
            await self._create_element(element)

    async def _create_element(self, element: Element) -> None:
        # Chainlit saves a first message's attachments in one task while another creates the
        # chat's thread: on PostgreSQL, which enforces the elements' foreign key, an attachment
        # saved first was lost, and the reopened chat had no upload. Make sure the thread exists
        # first, as Chainlit's create_step does (an upsert, harmless if it does).
        if element.thread_id:
            await self.update_thread(element.thread_id)
        if element.path or element.url or not element.content:
            await super().create_element(element)  # an upload: its file is read or fetched
            return
        # A message's side elements (about 8 an answer: passages, timings, chart) are handed
        # over together, each in a task of its own: saved in one batch, one storage trip and
        # one transaction, rather than one of each per element.
        loop = asyncio.get_running_loop()
        saved = loop.create_future()
        self._unsaved.append((element, saved))
        if len(self._unsaved) == 1:
            loop.call_soon(self._save_unsaved)  # after the sibling tasks already scheduled
        await saved

    def _save_unsaved(self) -> None:
        batch, self._unsaved = self._unsaved, []
        task = asyncio.create_task(self._save_elements(batch), name="save-side-elements")
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save_elements(self, batch: list[tuple[Element, asyncio.Future[None]]]) -> None:
        try:
            rows = []
            uploads = []
            for element, _ in batch:
                # Chainlit's create_element, element by element, but for the storage and the SQL.
                owner = await self._get_user_id_by_thread(element.thread_id) or "unknown"
                key = f"{owner}/{element.id}" + (f"/{element.name}" if element.name else "")
                element.mime = element.mime or "application/octet-stream"
                uploads.append((key, element.content, element.mime))
            stored = await self._upload_all(uploads)
            for (element, _), (key, url) in zip(batch, stored, strict=True):
                row = {**element.to_dict(), "url": url, "objectKey": key}
                row = {name: value for name, value in row.items() if value is not None}
                if "props" in row:
                    row["props"] = json.dumps(row["props"])
                rows.append(row)
            await self._insert_elements(rows)
        except Exception as error:  # noqa: BLE001 - each waiting element gets the failure
            for _, saved in batch:
                if not saved.done():
                    saved.set_exception(error)
            return
        for _, saved in batch:
            if not saved.done():
                saved.set_result(None)

    async def _upload_all(self, uploads: list[tuple[str, Any, str]]) -> list[tuple[str, str | None]]:
        """Each (object key, content, mime) into the element storage: (object key, url) each."""
        storage = self.storage_provider
        if isinstance(storage, LocalFileStorage):
            return await asyncio.to_thread(storage.write_all, uploads)
        assert storage is not None
        done = await asyncio.gather(
            *(storage.upload_file(object_key=key, data=data, mime=mime, overwrite=True) for key, data, mime in uploads)
        )
        return [(d.get("object_key") or key, d.get("url")) for d, (key, _, _) in zip(done, uploads, strict=True)]

    async def _insert_elements(self, rows: list[dict[str, Any]]) -> None:
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(row), []).append(_json_as_text(row))
        async with self.engine.begin() as connection:
            for columns, same in by_columns.items():
                names = ", ".join(f'"{column}"' for column in columns)
                values = ", ".join(f":{column}" for column in columns)
                updates = ", ".join(f'"{column}" = :{column}' for column in columns if column != "id")
                query = f"INSERT INTO elements ({names}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET {updates}"
                await connection.execute(_statement(query), same)

    async def element_owners(self, object_key: str) -> set[str]:
        """The users whose chats hold the side element stored under `object_key`."""
        rows = await self.execute_sql(
            'SELECT t."userIdentifier" AS owner FROM elements e JOIN threads t ON t."id" = e."threadId" '
            'WHERE e."objectKey" = :key',
            {"key": object_key},
        )
        return {row["owner"] for row in rows} if isinstance(rows, list) else set()

    async def api_conversation(self, user: str, fingerprint: str) -> str | None:
        """The saved chat an API conversation continues (web/openai_api.py `ApiHistory`), if any."""
        rows = await self.execute_sql(
            'SELECT "threadId" FROM api_conversations WHERE "userIdentifier" = :user AND "fingerprint" = :fingerprint',
            {"user": user, "fingerprint": fingerprint},
        )
        return rows[0]["threadId"] if isinstance(rows, list) and rows else None

    async def remember_api_conversation(self, user: str, fingerprints: Sequence[str], thread_id: str) -> None:
        for fingerprint in fingerprints:
            await self.execute_sql(
                'INSERT INTO api_conversations ("userIdentifier", "fingerprint", "threadId") '
                "VALUES (:user, :fingerprint, :thread) ON CONFLICT DO NOTHING",
                {"user": user, "fingerprint": fingerprint, "thread": thread_id},
            )


@dataclass(frozen=True)
class StoredFile:
    path: Path
    mime: str


class LocalFileStorage(BaseStorageClient):
    """Side elements as files under the data folder, served back by the app's own route.

    Chainlit builds object keys as `<user id>/<element id>/<element name>`; the file
    name on disk is a hash of the key, so a hostile element name can never address a
    path outside the folder. Who may read an element is decided by the app's route.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, object_key: str) -> Path:
        return self.root / hashlib.sha256(object_key.encode()).hexdigest()

    def stored(self, object_key: str) -> StoredFile | None:
        path = self._path(object_key)
        meta = path.with_suffix(".json")
        if not path.is_file() or not meta.is_file():
            return None
        return StoredFile(path, json.loads(meta.read_text())["mime"])

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        await asyncio.to_thread(self._write, object_key, data, mime)
        return {"object_key": object_key, "url": self.read_url(object_key)}

    def write_all(self, files: Sequence[tuple[str, bytes | str, str]]) -> list[tuple[str, str | None]]:
        """Each (object key, data, mime), written in the calling thread: (object key, url) each."""
        for object_key, data, mime in files:
            self._write(object_key, data, mime)
        return [(object_key, self.read_url(object_key)) for object_key, _, _ in files]

    def _write(self, object_key: str, data: bytes | str, mime: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(object_key)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        path.with_suffix(".json").write_text(json.dumps({"object_key": object_key, "mime": mime}))

    async def delete_file(self, object_key: str) -> bool:
        path = self._path(object_key)
        existed = path.exists()
        path.unlink(missing_ok=True)
        path.with_suffix(".json").unlink(missing_ok=True)
        return existed

    async def get_read_url(self, object_key: str) -> str:
        return self.read_url(object_key)

    def read_url(self, object_key: str) -> str:
        return f"{STORED_ELEMENTS_ROUTE}/{quote(object_key, safe='')}"

    async def close(self) -> None:
        return None


# The app marks each final answer's message with the answer's own text, without the
# notices and footers around it, so that a resumed chat's history is what the model said.
ANSWER_METADATA_KEY = "answer"


def conversation_from_steps(steps: Sequence[StepDict]) -> list[ChatMessage]:
    """A stored chat as the model's conversation history: questions and the answers kept."""
    history: list[ChatMessage] = []
    for step in steps:
        metadata = step.get("metadata") or {}
        if isinstance(metadata, str):
            metadata = json.loads(metadata or "{}")
        if step.get("type") == "user_message" and (step.get("output") or "").strip():
            history.append(ChatMessage("user", step["output"].strip()))
        elif step.get("type") == "assistant_message" and metadata.get(ANSWER_METADATA_KEY):
            history.append(ChatMessage("assistant", metadata[ANSWER_METADATA_KEY]))
    return history


def make_storage(settings: Settings) -> BaseStorageClient:
    """Where saved side elements and uploads go: `ELEMENTS_DIR`, or an S3 bucket through Chainlit's
    own client (`chainlit.data.storage_clients`), which serves them by signed URLs."""
    if not settings.elements_s3_bucket:
        return LocalFileStorage(settings.elements_path)
    try:
        from chainlit.data.storage_clients.s3 import S3StorageClient
    except ImportError as error:
        raise ChatStoreError("ELEMENTS_S3_BUCKET needs boto3: `.venv/bin/pip install boto3`.") from error
    endpoint = {"endpoint_url": settings.elements_s3_endpoint_url} if settings.elements_s3_endpoint_url else {}
    return S3StorageClient(bucket=settings.elements_s3_bucket, **endpoint)


@contextlib.asynccontextmanager
async def stored_copy(storage: BaseStorageClient, object_key: str) -> AsyncIterator[Path | None]:
    """A file of the stored element `object_key` while the block runs: the folder store's own
    file, or a download (by the storage's read URL) deleted afterwards; None when it is missing."""
    if isinstance(storage, LocalFileStorage):
        stored = await asyncio.to_thread(storage.stored, object_key)
        yield stored.path if stored else None
        return
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.get(await storage.get_read_url(object_key))
    if response.status_code != 200:
        yield None
        return
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="restored-upload-"))
    try:
        copy = folder / hashlib.sha256(object_key.encode()).hexdigest()
        await asyncio.to_thread(copy.write_bytes, response.content)
        yield copy
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


@dataclass
class RestoredUploads:
    added: list[str]
    refused: list[str]


async def restore_uploads(
    knowledge: KnowledgeBase,
    thread: ThreadDict,
    storage: BaseStorageClient,
    reader: UploadReader,
    max_bytes: int = 1 << 62,
    language: str | None = None,
) -> RestoredUploads:
    """Put a stored chat's uploaded files back into its knowledge base, read by `reader` as new uploads are;
    what could not be restored is said in `language`."""
    _ = translator(language).gettext
    user_steps = {step["id"] for step in thread.get("steps") or [] if step.get("type") == "user_message"}
    restored = RestoredUploads([], [])
    for element in thread.get("elements") or []:
        key = element.get("objectKey")
        if element.get("forId") not in user_steps or not key:
            continue
        name = element.get("name") or "upload"
        async with stored_copy(storage, key) as stored:
            if stored is None:
                restored.refused.append(_("{file}: its stored copy is missing").format(file=name))
                continue
            outcome = await add_upload_off_loop(knowledge, stored, name, max_bytes, reader)
        if outcome.added:
            restored.added.append(outcome.file_name)
        elif not outcome.duplicate:
            restored.refused.append(f"{outcome.file_name}: {localise(outcome.refusal, language)}")
    return restored


def ensure_auth_secret(data_dir: Path, environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Give Chainlit a login-cookie secret that survives restarts (so sessions do too).

    An explicit CHAINLIT_AUTH_SECRET wins; otherwise one is made once and kept,
    readable by its owner only, in the data folder.
    """
    if environ.get("CHAINLIT_AUTH_SECRET"):
        return
    path = data_dir / "auth-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
    environ["CHAINLIT_AUTH_SECRET"] = path.read_text().strip()
