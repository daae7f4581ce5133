"""Reading the on-disk corpus: Markdown and text files under a folder, recursively."""

from __future__ import annotations

import re
from pathlib import Path

from rag.documents import SEED_DOCUMENTS, Document

CORPUS_SUFFIXES = (".md", ".markdown", ".txt")
_FIRST_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


def title_of(text: str, fallback: str) -> str:
    """The first level-one Markdown heading, else a readable form of `fallback`."""
    if match := _FIRST_HEADING.search(text):
        return match.group(1).strip()
    return re.sub(r"[-_]+", " ", fallback).strip().capitalize() or fallback


def load_folder(folder: Path) -> list[Document]:
    """Every Markdown and text file under `folder`; a missing folder is an empty corpus."""
    documents = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix.lower() not in CORPUS_SUFFIXES or not path.is_file():
            continue
        relative = path.relative_to(folder).as_posix()
        text = path.read_text(encoding="utf-8", errors="replace")
        documents.append(Document(f"corpus:{relative}", title_of(text, path.stem), relative, text))
    return documents


def corpus_documents(folder: Path) -> list[Document]:
    """What the app answers from: the built-in demo sentences and every document under `folder`."""
    return [*SEED_DOCUMENTS, *load_folder(folder)]
