"""Uploaded files are read in a separate process, and a reader that dies costs one file only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import psutil
import pytest

from models.settings import PROJECT_ROOT
from rag.documents import Document
from rag.index import KnowledgeBase, SharedCorpus
from rag.parsing import UploadError
from rag.uploads import UploadReader, add_upload_off_loop

PNG_HEADER = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture
def reader():
    reader = UploadReader(workers=1)
    reader.start()
    yield reader
    reader.close()


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Launch plan\n\nProject Nightjar launches on the ninth of March.\n")
    return path


def reader_processes(parent: psutil.Process | None = None) -> list[psutil.Process]:
    """The reader processes `parent` (this test process by default) has started."""
    parent = parent or psutil.Process()
    return [child for child in parent.children() if "spawn_main" in " ".join(child.cmdline())]


def test_a_file_is_read_in_another_process(reader, notes):
    document = asyncio.run(reader.parse(notes, "notes.md", 10_000))

    assert "ninth of March" in document.text
    assert document.title == "Launch plan"
    assert [process.pid for process in reader_processes()] != [os.getpid()]
    assert len(reader_processes()) == 1


def test_a_refusal_comes_back_with_its_reason(reader, tmp_path):
    disguised = tmp_path / "photo.txt"
    disguised.write_bytes(PNG_HEADER)

    with pytest.raises(UploadError) as refused:
        asyncio.run(reader.parse(disguised, "photo.txt", 10_000))
    assert refused.value.file_name == "photo.txt"
    assert "stopped the file reader" not in refused.value.reason
    assert "PNG" in refused.value.reason or "image" in refused.value.reason


def test_a_reader_that_dies_refuses_that_file_and_the_next_file_is_read(reader, notes):
    for process in reader_processes():
        process.kill()
        process.wait(5)

    with pytest.raises(UploadError) as refused:
        asyncio.run(reader.parse(notes, "notes.md", 10_000))
    assert "stopped the file reader" in refused.value.reason

    assert "ninth of March" in asyncio.run(reader.parse(notes, "notes.md", 10_000)).text


def test_no_workers_reads_in_a_thread_of_this_process(notes):
    before = {process.pid for process in reader_processes()}
    reader = UploadReader(workers=0)
    reader.start()

    assert "ninth of March" in asyncio.run(reader.parse(notes, "notes.md", 10_000)).text
    assert {process.pid for process in reader_processes()} <= before


def test_the_app_path_adds_the_file_to_the_session_only(reader, notes):
    corpus = SharedCorpus([Document("c1", "Handbook", "handbook.md", "Expenses and travel.")])
    mine, theirs = KnowledgeBase(corpus, 1000, 0), KnowledgeBase(corpus, 1000, 0)

    outcome = asyncio.run(add_upload_off_loop(mine, notes, "../../notes.md", 10_000, reader))

    assert outcome.added and outcome.file_name == "notes.md"
    assert mine.search("When does Nightjar launch?", "bm25", 1)[0].chunk.document.source == "notes.md"
    assert all(hit.chunk.document.source != "notes.md" for hit in theirs.search("Nightjar launch", "bm25", 3))


def test_a_reader_left_behind_by_a_killed_app_exits(tmp_path):
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from rag.uploads import UploadReader; UploadReader(1).start(); "
            "print('ready', flush=True); time.sleep(600)",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout.readline().strip() == "ready"
        readers = reader_processes(psutil.Process(app.pid))
        assert readers
    finally:
        app.kill()  # no shutdown: as a crash or an out-of-memory kill would leave it
        app.wait()

    _, alive = psutil.wait_procs(readers, timeout=15)
    assert not alive
