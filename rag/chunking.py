"""Cutting documents into passages that follow their structure: headings, then paragraphs."""

from __future__ import annotations

import re
from collections.abc import Iterable

from rag.documents import Chunk, Document

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """Markdown sections as (heading path, body). Text before any heading has no path."""
    sections: list[tuple[tuple[str, ...], str]] = []
    path: list[tuple[int, str]] = []
    body: list[str] = []
    in_code = False

    def close() -> None:
        if "".join(body).strip():
            sections.append((tuple(title for _, title in path), "\n".join(body).strip()))
        body.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            close()
            level = len(match.group(1))
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, match.group(2).strip()))
        else:
            body.append(line)
    close()
    return sections


def chunk_document(document: Document, size: int = 1000, overlap: int = 150) -> list[Chunk]:
    """Chunks of at most about `size` characters that never cross a heading.

    Paragraphs are packed whole; a paragraph longer than `size` is cut at sentence
    ends (or, failing those, between words). Each chunk after the first in a
    section starts with up to `overlap` characters of the pieces before it, so
    that a fact split across a boundary is whole in at least one chunk.
    """
    chunks: list[Chunk] = []
    for heading_path, body in split_sections(document.text):
        for text in _pack(_pieces(body, size), size, overlap):
            chunks.append(Chunk(document, len(chunks), text, heading_path))
    if not chunks and document.text.strip():
        chunks.append(Chunk(document, 0, document.text.strip()))
    return chunks


def chunk_documents(documents: Iterable[Document], size: int = 1000, overlap: int = 150) -> list[Chunk]:
    return [chunk for document in documents for chunk in chunk_document(document, size, overlap)]


def _pieces(body: str, size: int) -> list[str]:
    """Paragraphs, with any paragraph longer than `size` cut into sentences or word runs."""
    pieces: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(body):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= size:
            pieces.append(paragraph)
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            pieces.extend(_word_runs(sentence, size) if len(sentence) > size else [sentence])
    return pieces


def _word_runs(text: str, size: int) -> list[str]:
    runs: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > size:
            runs.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        runs.append(current)
    return runs


def _pack(pieces: list[str], size: int, overlap: int) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    fresh = 0  # pieces in `current` that no earlier chunk has

    def length(parts: list[str]) -> int:
        return sum(len(part) for part in parts) + 2 * max(len(parts) - 1, 0)

    for piece in pieces:
        if current and length([*current, piece]) > size:
            chunks.append("\n\n".join(current))
            carried: list[str] = []
            for previous in reversed(current):
                if length([previous, *carried]) > overlap:
                    break
                carried.insert(0, previous)
            current, fresh = carried, 0
            if current and length([*current, piece]) > size:
                current = []
        current.append(piece)
        fresh += 1
    if current and fresh:
        chunks.append("\n\n".join(current))
    return chunks
