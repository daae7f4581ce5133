"""Chunks follow headings and paragraphs, keep their heading path, and respect size and overlap."""

from __future__ import annotations

from itertools import pairwise

from rag.chunking import chunk_document, split_sections
from rag.documents import Document

HANDBOOK = """# Handbook

Intro paragraph.

## Setup

Install it.

### Linux

Use make.

## Usage

Ask a question.
"""


def document(text: str) -> Document:
    return Document("d", "Doc", "d.md", text)


def test_sections_carry_their_heading_path():
    sections = split_sections(HANDBOOK)

    assert sections == [
        (("Handbook",), "Intro paragraph."),
        (("Handbook", "Setup"), "Install it."),
        (("Handbook", "Setup", "Linux"), "Use make."),
        (("Handbook", "Usage"), "Ask a question."),
    ]


def test_a_chunk_never_crosses_a_heading():
    chunks = chunk_document(document(HANDBOOK), size=1000)

    assert [chunk.text for chunk in chunks] == ["Intro paragraph.", "Install it.", "Use make.", "Ask a question."]
    assert chunks[2].heading == "Handbook › Setup › Linux"
    assert [chunk.position for chunk in chunks] == [0, 1, 2, 3]


def test_paragraphs_are_packed_up_to_the_size_and_never_split_when_they_fit():
    paragraphs = [f"Paragraph {n} " + "word " * 30 for n in range(6)]
    chunks = chunk_document(document("\n\n".join(paragraphs)), size=400, overlap=0)

    assert all(len(chunk.text) <= 400 for chunk in chunks)
    assert "\n\n".join(chunk.text for chunk in chunks) == "\n\n".join(p.strip() for p in paragraphs)


def test_a_long_paragraph_is_cut_at_sentence_ends():
    sentences = [f"Sentence number {n} says something useful." for n in range(40)]
    chunks = chunk_document(document(" ".join(sentences)), size=300, overlap=0)

    assert len(chunks) > 1
    assert all(len(chunk.text) <= 300 for chunk in chunks)
    assert all(chunk.text.endswith(".") for chunk in chunks)


def test_consecutive_chunks_overlap_by_whole_pieces():
    paragraphs = [f"Fact {n}: " + "detail " * 10 for n in range(8)]
    chunks = chunk_document(document("\n\n".join(paragraphs)), size=200, overlap=100)

    for before, after in pairwise(chunks):
        assert after.text.split("\n\n")[0] in before.text


def test_text_without_headings_or_paragraphs_is_one_chunk():
    chunks = chunk_document(document("Just one line."))
    assert [(chunk.text, chunk.heading_path) for chunk in chunks] == [("Just one line.", ())]


def test_hashes_inside_code_blocks_are_not_headings():
    text = "# Title\n\n```bash\n# a shell comment\nmake run\n```\n"
    [chunk] = chunk_document(document(text))
    assert "# a shell comment" in chunk.text and chunk.heading_path == ("Title",)
