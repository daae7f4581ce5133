"""Reading the on-disk corpus: Markdown and text files under a folder, recursively."""

from __future__ import annotations

import re
from pathlib import Path

from rag.documents import SEED_DOCUMENTS, Document

CORPUS_SUFFIXES = (".md", ".markdown", ".txt")
_FIRST_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


class UnreadableDocument(Exception):
    """A corpus file that cannot be taken as text (the reason is the message)."""


def title_of(text: str, fallback: str) -> str:
    """The first level-one Markdown heading, else a readable form of `fallback`."""
    if match := _FIRST_HEADING.search(text):
        return match.group(1).strip()
    return re.sub(r"[-_]+", " ", fallback).strip().capitalize() or fallback


def corpus_files(folder: Path) -> list[str]:
    """The corpus files under `folder`, as paths relative to it, in corpus order."""
    return [
        path.relative_to(folder).as_posix()
        for path in sorted(Path(folder).rglob("*"))
        if path.suffix.lower() in CORPUS_SUFFIXES and path.is_file()
    ]


def parse_corpus_file(relative: str, data: bytes) -> Document:
    """The document a corpus file's bytes hold; `relative` is its path under the corpus folder."""
    if b"\x00" in data:
        # Text files hold no NUL bytes: this is a binary file (or one being written) with a text name.
        raise UnreadableDocument("it is not a text file (it holds NUL bytes)")
    return _document(relative, data.decode("utf-8", errors="replace"))


def _document(relative: str, text: str) -> Document:
    return Document(f"corpus:{relative}", title_of(text, Path(relative).stem), relative, text)


def load_folder(folder: Path) -> list[Document]:
    """Every Markdown and text file under `folder`; a missing folder is an empty corpus."""
    return [
        _document(relative, (Path(folder) / relative).read_text(encoding="utf-8", errors="replace"))
        for relative in corpus_files(folder)
    ]


def corpus_documents(folder: Path) -> list[Document]:
    """What the app answers from: the built-in demo sentences and every document under `folder`."""
    return [*SEED_DOCUMENTS, *load_folder(folder)]
