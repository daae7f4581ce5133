"""Adding one uploaded file to a session's knowledge base, with the outcome in plain words."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rag.index import DuplicateUpload, KnowledgeBase
from rag.parsing import UploadError, parse_file, safe_file_name


@dataclass(frozen=True)
class UploadOutcome:
    file_name: str
    title: str = ""
    chunks: int = 0
    seconds: float = 0.0
    refusal: str | None = None  # why the file was not added; None when it was

    @property
    def added(self) -> bool:
        return self.refusal is None


def add_upload(knowledge: KnowledgeBase, path: Path, claimed_name: str, max_bytes: int) -> UploadOutcome:
    """Parse, chunk and add one file (blocking). A refused file leaves the knowledge base unchanged."""
    name = safe_file_name(claimed_name)
    started = time.perf_counter()
    try:
        document = parse_file(path, name, max_bytes)
        added = knowledge.add(document)
    except UploadError as error:
        return UploadOutcome(name, refusal=error.reason)
    except DuplicateUpload as duplicate:
        return UploadOutcome(name, refusal=f"the same file is already here as {duplicate.existing.source}")
    return UploadOutcome(document.source, document.title, added.chunks, time.perf_counter() - started)
