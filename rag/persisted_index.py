"""The shared corpus, indexed once into DATA_DIR and brought up to date file by file.

What is kept, in one file per setting (`<DATA_DIR>/corpus-index/bm25-1500-150.npz`: mode, chunk
size, overlap, so that processes configured differently do not overwrite each other's),
replaced atomically:

- `manifest`: JSON, stored as bytes: the format version; the chunk size, overlap, retrieval
  mode and code fingerprint it was built with; per corpus file its SHA-256, its document and
  its chunks at that size; the files that could not be read, with their hash and reason.
- the default mode's chunks × terms matrix (`terms`, `starts`, `rows`, `values`), in corpus order,
  as the retriever's `to_arrays` gives it (its parameters go in the manifest's `retriever`);
  in the hybrid mode also each chunk's dense vector (`vectors`) and the hash of the text it
  was made from (`vector_keys`).

Embedding is the slow part of the hybrid mode (about 0.2-0.5 s a chunk on one core), so a
vector is never made twice for the same text by the same model: a refresh embeds only the
chunks of the files that changed, and an index that must be rebuilt (other settings or code)
still lends its vectors when the same model (`key.embedder`) made them.

Why the matrix itself rather than only each chunk's tokens: loading it costs no tokenising at
all, and tokenising (stemming every word) is most of the cost of building an index. When a
file changes, only that file is read and chunked again; the matrix is rebuilt from every
chunk, because BM25's stored values depend on the average chunk length of the whole corpus
(about 2 s of CPU per 5,000 chunks, most of it tokenising again, which a `tokens` argument to
the retrievers would save).

Safe to load from a shared folder: JSON and plain numeric arrays, read with
`allow_pickle=False`, so a crafted file cannot run code. An index of another format version,
settings or code is rebuilt; an unreadable one is logged and rebuilt from the documents.

Several app processes may share DATA_DIR: the one holding the lock (`fcntl.flock` on
`corpus-index/lock`) writes, and a process that waited for it reads what was written
instead of building it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from i18n import message_of, translator
from rag.chunking import chunk_document, chunk_documents
from rag.documents import SEED_DOCUMENTS, Chunk, Document
from rag.embedding import DEFAULT_EMBEDDER, Embedder, Vectors
from rag.index import SharedCorpus
from rag.loading import corpus_files, parse_corpus_file
from rag.retrieval import HybridRetriever, Retriever, TermRetriever, make_retriever, retriever_from_arrays

log = logging.getLogger(__name__)

# Raise it when the file's layout changes: an older file is then rebuilt, not misread.
FORMAT = 1
LOCK_FILE = "lock"

# What a stored index depends on besides the documents: chunking, tokenising and scoring.
# Their source is hashed, so that an index built by other code is rebuilt rather than trusted.
_CODE = ("chunking.py", "documents.py", "embedding.py", "loading.py", "retrieval.py", "text.py")

# (path under the corpus folder, its bytes) -> its document; raises when the file cannot be read.
Reader = Callable[[str, bytes], Document]


def code_fingerprint() -> str:
    folder = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    document: Document
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class Failure:
    sha256: str
    reason: str


@dataclass(frozen=True)
class _State:
    files: dict[str, FileEntry]
    failed: dict[str, Failure]  # a failed file keeps its previous entry in `files`, if it had one
    corpus: SharedCorpus
    # The index file this state was loaded from or written to (inode, mtime, size), if any.
    stored_as: tuple[int, int, int] | None = None

    def hashes(self) -> dict[str, str]:
        """The content each file was last seen with (read or failed)."""
        return {path: entry.sha256 for path, entry in self.files.items()} | {
            path: failure.sha256 for path, failure in self.failed.items()
        }


@dataclass(frozen=True)
class Change:
    """What one refresh changed, by path under the corpus folder."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    failed: tuple[tuple[str, str], ...] = ()  # (path, reason), newly failing
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed or self.failed)

    def summary(self, language: str | None = None) -> str:
        """ "2 documents updated, 1 removed", in `language` (English by default); failures are
        said apart (see `PersistedCorpus.failed`)."""
        translations = translator(language)
        ngettext = translations.ngettext
        added, updated, removed = len(self.added), len(self.updated), len(self.removed)
        parts: list[str] = []
        # The noun once, in the first part.
        if added:
            parts.append(ngettext("{count} document added", "{count} documents added", added).format(count=added))
        if updated:
            said = (
                ngettext("{count} updated", "{count} updated", updated)
                if parts
                else ngettext("{count} document updated", "{count} documents updated", updated)
            )
            parts.append(said.format(count=updated))
        if removed:
            said = (
                ngettext("{count} removed", "{count} removed", removed)
                if parts
                else ngettext("{count} document removed", "{count} documents removed", removed)
            )
            parts.append(said.format(count=removed))
        parts += [translations.gettext("{path} could not be read").format(path=path) for path, _ in self.failed]
        return ", ".join(parts)


class PersistedCorpus:
    """The shared corpus of a folder, persisted in `index_dir`, replaced as a whole on each change.

    `current()` is the corpus to search now; `refresh()` (blocking) brings it up to date with
    the folder. Other chunk sizes and modes than the indexed ones are built on demand, in memory.
    `embedder` makes the hybrid mode's vectors.
    """

    def __init__(
        self,
        folder: Path,
        index_dir: Path,
        chunk_size: int,
        chunk_overlap: int,
        mode: str,
        read: Reader = parse_corpus_file,
        embedder: Embedder = DEFAULT_EMBEDDER,
    ) -> None:
        self.folder = Path(folder)
        self.index_dir = Path(index_dir)
        self.chunk_size, self.chunk_overlap, self.mode = chunk_size, chunk_overlap, mode
        self.read = read
        self.embedder = embedder
        self._key = {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "mode": mode, "code": code_fingerprint()}
        if mode == HybridRetriever.name:
            self._key["embedder"] = embedder.name
        self._state = _State({}, {}, SharedCorpus(SEED_DOCUMENTS, embedder=embedder))
        self._refreshed = False
        self._refreshing = threading.Lock()  # one refresh at a time in this process
        self.last_change = Change()

    @property
    def index_file(self) -> Path:
        return self.index_dir / f"{self.mode}-{self.chunk_size}-{self.chunk_overlap}.npz"

    def current(self) -> SharedCorpus:
        return self._state.corpus

    @property
    def documents(self) -> tuple[Document, ...]:
        return self.current().documents

    @property
    def failed(self) -> dict[str, str]:
        """Files that cannot be read now, with the reason; their previous version, if any, stays."""
        return {path: failure.reason for path, failure in self._state.failed.items()}

    def refresh(self) -> Change:
        """Bring the index up to date with the folder; returns what changed (nothing, the first time)."""
        with self._refreshing:
            seen = _hashes(self.folder)
            state: _State | None = self._state if self._refreshed and self._state.hashes() == seen else None
            if state is None:
                loaded = self._load()
                state = loaded if loaded is not None and loaded.hashes() == seen else None
            if state is None:
                state = self._write_new(seen)
            if not self._refreshed:
                log.info("Knowledge base: %d documents from %s.", len(state.corpus.documents), self.folder)
            change = _difference(self._state, state) if self._refreshed else Change()
            self._state, self._refreshed = state, True
            if change:
                self.last_change = change
                log.info("Knowledge base updated: %s.", change.summary())
            for path, reason in change.failed:
                log.warning("%s could not be read (%s); its previous version, if any, stays.", path, reason)
            return change

    def _write_new(self, seen: dict[str, str]) -> _State:
        """Under the lock: what another process wrote meanwhile, or a new index written here."""
        try:
            with exclusive(self.index_dir / LOCK_FILE):
                loaded = self._load()
                if loaded is not None and loaded.hashes() == seen:
                    return loaded
                state = self._updated([state for state in (loaded, self._state) if state is not None], seen)
                return replace(state, stored_as=self._save(state))
        except OSError as error:
            # An unwritable DATA_DIR must not keep the documents out: index them in memory.
            log.warning("Cannot keep the corpus index in %s (%s); indexing in memory.", self.index_dir, error)
            return self._updated([self._state], seen)

    def _updated(self, bases: list[_State], seen: dict[str, str]) -> _State:
        """The index of the files `seen`, reading only those no base has with the same content."""
        files: dict[str, FileEntry] = {}
        failed: dict[str, Failure] = {}
        for path, sha in seen.items():
            versions = [base.files[path] for base in bases if path in base.files]  # the stored one first
            same = next((entry for entry in versions if entry.sha256 == sha), None)
            if same is not None:
                files[path] = same
                continue
            # A file that failed with this very content is not tried again until it changes.
            failure = next((base.failed[path] for base in bases if path in base.failed), None)
            if failure is None or failure.sha256 != sha:
                try:
                    files[path] = self._entry(path)
                    continue
                except Exception as error:  # noqa: BLE001 - any broken file: report it, keep the rest
                    # An UploadError's words are an i18n.Message: said in the chat's language where shown.
                    failure = Failure(sha, message_of(error) or type(error).__name__)
            failed[path] = failure
            if versions:
                files[path] = versions[0]  # its previous version stays
        chunks = self._chunks(files)
        return _State(files, failed, self._corpus(files, chunks, self._retriever(chunks, bases)))

    def _retriever(self, chunks: list[Chunk], bases: list[_State]) -> Retriever:
        """The mode's retriever over `chunks`; in the hybrid mode, with the vectors the bases
        and the stored index have for the same texts (embedding only the new ones)."""
        if self.mode != HybridRetriever.name:
            return make_retriever(self.mode, chunks)
        known = self._stored_vectors()
        for base in bases:
            built = base.corpus.built(self.mode, self.chunk_size, self.chunk_overlap)
            if isinstance(built, HybridRetriever) and built.embedder.name == self.embedder.name:
                known.update(built.known_vectors())
        return make_retriever(self.mode, chunks, self.embedder, known)

    def _stored_vectors(self) -> dict[bytes, Vectors]:
        """The stored index's vectors by text, if the same model made them, even when the
        index itself cannot be used (built with other settings or code); {} otherwise."""
        try:
            with np.load(self.index_file, allow_pickle=False) as stored:
                manifest = json.loads(stored["manifest"].tobytes())
                if manifest.get("key", {}).get("embedder") != self.embedder.name:
                    return {}
                keys, vectors = stored["vector_keys"], stored["vectors"]
                if keys.dtype != np.uint8 or vectors.shape != (len(keys), self.embedder.dimensions):
                    return {}
                return dict(zip(map(bytes, keys), vectors.astype(np.float32), strict=True))
        except Exception:  # noqa: BLE001 - no stored vectors to reuse: they are made again
            return {}

    def _entry(self, path: str) -> FileEntry:
        data = (self.folder / path).read_bytes()
        document = self.read(path, data)
        chunks = chunk_document(document, self.chunk_size, self.chunk_overlap)
        return FileEntry(hashlib.sha256(data).hexdigest(), document, tuple(chunks))

    def _chunks(self, files: dict[str, FileEntry]) -> list[Chunk]:
        """Every chunk in corpus order: the built-in sentences', then each file's."""
        chunks = chunk_documents(SEED_DOCUMENTS, self.chunk_size, self.chunk_overlap)
        for entry in files.values():
            chunks.extend(entry.chunks)
        return chunks

    def _corpus(self, files: dict[str, FileEntry], chunks: list[Chunk], retriever: Retriever) -> SharedCorpus:
        return SharedCorpus(
            [*SEED_DOCUMENTS, *(entry.document for entry in files.values())],
            chunks={(self.chunk_size, self.chunk_overlap): chunks},
            retrievers={(self.mode, self.chunk_size, self.chunk_overlap): retriever},
            embedder=self.embedder,
        )

    def _save(self, state: _State) -> tuple[int, int, int]:
        retriever = state.corpus.retriever(self.mode, self.chunk_size, self.chunk_overlap)
        if not isinstance(retriever, TermRetriever):
            raise TypeError(f"cannot store a {type(retriever).__name__}")
        arrays, parameters = retriever.to_arrays()
        manifest = {
            "format": FORMAT,
            "key": self._key,
            "retriever": parameters,
            "files": {path: _entry_json(entry) for path, entry in state.files.items()},
            "failed": {path: {"sha256": f.sha256, "reason": f.reason} for path, f in state.failed.items()},
        }
        self.index_dir.mkdir(parents=True, exist_ok=True)
        # Left by a process killed while writing (this one holds the lock, so no one is writing now).
        for stale in self.index_dir.glob(".index-*.tmp"):
            stale.unlink(missing_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.index_dir, prefix=".index-", suffix=".tmp")
        try:
            # mkstemp makes the file private to this user; other app users must be able to read it.
            os.fchmod(handle, 0o644)
            with os.fdopen(handle, "wb") as file:
                contents: dict[str, Any] = {"manifest": _bytes_array(manifest), **arrays}
                np.savez(file, **contents)
                file.flush()
                os.fsync(file.fileno())
            # Readers see the old file or the new one, never half of one.
            os.replace(temporary, self.index_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return _identity(self.index_file.stat())

    def _load(self) -> _State | None:
        """The stored index, or None when there is none usable (logged when it is unreadable) or
        when it is the one this process holds already (each write is a new file: a new inode)."""
        try:
            stored_as = _identity(self.index_file.stat())
        except FileNotFoundError:
            return None
        if stored_as == self._state.stored_as:
            return None
        try:
            with np.load(self.index_file, allow_pickle=False) as stored:
                manifest = json.loads(stored["manifest"].tobytes())
                if manifest.get("format") != FORMAT or manifest.get("key") != self._key:
                    log.info("The corpus index in %s was built differently; rebuilding it.", self.index_dir)
                    return None
                files = {path: _entry_of(path, raw) for path, raw in manifest["files"].items()}
                failed = {path: Failure(raw["sha256"], raw["reason"]) for path, raw in manifest["failed"].items()}
                chunks = self._chunks(files)
                retriever = retriever_from_arrays(self.mode, chunks, stored, manifest["retriever"], self.embedder)
            return _State(files, failed, self._corpus(files, chunks, retriever), stored_as)
        except Exception as error:  # noqa: BLE001 - whatever is wrong with the file, the documents are still there
            log.warning("The corpus index %s is unreadable (%s); rebuilding it.", self.index_file, error)
            return None


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _hashes(folder: Path) -> dict[str, str]:
    """Each corpus file's SHA-256; a file that cannot be read gets a marker that never matches."""
    hashes = {}
    for path in corpus_files(folder):
        try:
            hashes[path] = hashlib.sha256((folder / path).read_bytes()).hexdigest()
        except OSError as error:
            hashes[path] = f"unreadable: {error}"
    return hashes


def _difference(before: _State, after: _State) -> Change:
    old = {path: entry.sha256 for path, entry in before.files.items()}
    new = {path: entry.sha256 for path, entry in after.files.items()}
    return Change(
        added=tuple(path for path in new if path not in old),
        updated=tuple(path for path in new if path in old and new[path] != old[path]),
        removed=tuple(path for path in old if path not in new),
        failed=tuple(
            (path, failure.reason) for path, failure in after.failed.items() if before.failed.get(path) != failure
        ),
    )


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold the lock file: one process (or thread, each with its own open file) at a time."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entry_json(entry: FileEntry) -> dict[str, Any]:
    document = entry.document
    return {
        "sha256": entry.sha256,
        "id": document.id,
        "title": document.title,
        "text": document.text,
        "chunks": [[chunk.text, list(chunk.heading_path)] for chunk in entry.chunks],
    }


def _entry_of(path: str, raw: dict[str, Any]) -> FileEntry:
    document = Document(str(raw["id"]), str(raw["title"]), path, str(raw["text"]))
    chunks = tuple(
        Chunk(document, position, str(text), tuple(map(str, headings)))
        for position, (text, headings) in enumerate(raw["chunks"])
    )
    return FileEntry(str(raw["sha256"]), document, chunks)


def _bytes_array(value: Any) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)
