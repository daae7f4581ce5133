"""The shared corpus's index in DATA_DIR: written once, loaded at start-up, updated file by file.

Each test builds a small corpus folder and counts the files read through the `read` seam
of `PersistedCorpus` (the function that turns a file's bytes into a document).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rag import persisted_index
from rag.documents import Document
from rag.loading import parse_corpus_file
from rag.persisted_index import Change, PersistedCorpus
from rag.retrieval import make_retriever

FILES = {
    "expenses.md": "# Expenses\n\nTravel expenses are refunded within ten days.",
    "guides/setup.md": "# Setup\n\nRun make to install the assistant.",
    "osprey.txt": "The Osprey release ships on the twelfth of May.",
}


class CountingReader:
    """Reads files as the app does and remembers which ones it was asked to read."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.read: list[str] = []
        self.delay_s = delay_s

    def __call__(self, path: str, data: bytes) -> Document:
        self.read.append(path)
        time.sleep(self.delay_s)
        return parse_corpus_file(path, data)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def opened(folder: Path, reader: CountingReader | None = None, mode: str = "bm25") -> PersistedCorpus:
    """A corpus as an app process opens it at start-up."""
    corpus = PersistedCorpus(
        folder, folder.parent / "data" / "corpus-index", 1500, 150, mode, read=reader or CountingReader()
    )
    corpus.refresh()
    return corpus


def best_source(corpus: PersistedCorpus, query: str) -> str | None:
    hits = corpus.current().retriever("bm25", 1500, 150).search(query, 1)
    return hits[0].chunk.document.source if hits else None


def test_a_restart_loads_the_index_without_reading_the_files_again(folder):
    opened(folder)
    reader = CountingReader()

    restarted = opened(folder, reader)

    assert reader.read == []
    assert best_source(restarted, "When does Osprey ship?") == "osprey.txt"
    assert [document.source for document in restarted.documents][-3:] == sorted(FILES)


@pytest.mark.parametrize("mode", ["bm25", "lexical"])
def test_a_loaded_index_scores_as_one_built_from_the_chunks(folder, mode):
    opened(folder, mode=mode)
    loaded = opened(folder, mode=mode).current()
    chunks = loaded.chunks(1500, 150)

    query = "refund travel expenses with make"
    found = [(hit.chunk, hit.score) for hit in loaded.retriever(mode, 1500, 150).search(query, 5)]
    built = [(hit.chunk, hit.score) for hit in make_retriever(mode, chunks).search(query, 5)]

    assert found == built and found


def test_a_changed_file_is_read_again_alone(folder):
    opened(folder)
    (folder / "osprey.txt").write_text("The Osprey release moved to the first of June.")
    reader = CountingReader()

    restarted = opened(folder, reader)

    assert reader.read == ["osprey.txt"]
    assert "June" in restarted.current().retriever("bm25", 1500, 150).search("Osprey release", 1)[0].chunk.text


def test_a_running_corpus_says_what_changed(folder):
    corpus = opened(folder)
    (folder / "osprey.txt").write_text("The Osprey release moved to the first of June.")
    (folder / "expenses.md").write_text("# Expenses\n\nExpenses are refunded monthly.")
    (folder / "guides" / "setup.md").unlink()
    (folder / "kestrel.md").write_text("# Kestrel\n\nKestrel is the next release.")

    change = corpus.refresh()

    assert (change.added, change.updated, change.removed) == (
        ("kestrel.md",),
        ("expenses.md", "osprey.txt"),
        ("guides/setup.md",),
    )
    assert corpus.last_change == change


def test_a_change_is_summed_up_in_words():
    assert Change(updated=("a.md", "b.md"), removed=("c.md",)).summary() == "2 documents updated, 1 removed"
    assert Change(added=("a.md",)).summary() == "1 document added"


def test_a_deleted_file_is_no_longer_found(folder):
    corpus = opened(folder)
    (folder / "osprey.txt").unlink()

    corpus.refresh()

    assert best_source(corpus, "When does Osprey ship?") is None
    assert "osprey.txt" not in [document.source for document in opened(folder).documents]


def test_a_corrupt_index_is_rebuilt_from_the_documents(folder, caplog):
    first = opened(folder)
    first.index_file.write_bytes(b"PK\x03\x04 not really a zip file")
    reader = CountingReader()

    rebuilt = opened(folder, reader)

    assert sorted(reader.read) == sorted(FILES)
    assert "unreadable" in caplog.text
    assert best_source(rebuilt, "When does Osprey ship?") == "osprey.txt"
    restarted = CountingReader()
    opened(folder, restarted)
    assert restarted.read == []  # the rebuilt index was written


def test_an_index_whose_matrix_does_not_fit_its_chunks_is_rebuilt(folder, caplog):
    first = opened(folder)
    with np.load(first.index_file, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["rows"] = arrays["rows"] + 1000  # rows past the last chunk: searching would fail
    with open(first.index_file, "wb") as file:
        np.savez(file, **arrays)
    reader = CountingReader()

    rebuilt = opened(folder, reader)

    assert sorted(reader.read) == sorted(FILES)
    assert "outside the matrix" in caplog.text
    assert best_source(rebuilt, "When does Osprey ship?") == "osprey.txt"


def test_an_index_of_another_format_version_is_rebuilt(folder, monkeypatch):
    opened(folder)
    monkeypatch.setattr(persisted_index, "FORMAT", persisted_index.FORMAT + 1)
    reader = CountingReader()

    opened(folder, reader)

    assert sorted(reader.read) == sorted(FILES)


def test_of_two_processes_starting_together_one_writes_and_the_other_loads(folder):
    # Two corpora over one DATA_DIR stand for two app processes; each has its own open lock file.
    readers = [CountingReader(delay_s=0.1), CountingReader(delay_s=0.1)]
    corpora = [
        PersistedCorpus(folder, folder.parent / "data" / "corpus-index", 1500, 150, "bm25", read=reader)
        for reader in readers
    ]
    start = threading.Barrier(2)

    def start_up(corpus: PersistedCorpus) -> None:
        start.wait()
        corpus.refresh()

    threads = [threading.Thread(target=start_up, args=(corpus,)) for corpus in corpora]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(len(reader.read) for reader in readers) == [0, len(FILES)]
    assert all(best_source(corpus, "When does Osprey ship?") == "osprey.txt" for corpus in corpora)


def test_a_file_that_cannot_be_read_keeps_its_previous_version_and_is_reported(folder, caplog):
    corpus = opened(folder)
    (folder / "osprey.txt").write_bytes(b"The Osprey release\x00\x00\x01")

    change = corpus.refresh()

    assert [path for path, _ in change.failed] == ["osprey.txt"]
    assert "NUL" in corpus.failed["osprey.txt"] and "osprey.txt could not be read" in caplog.text
    assert best_source(corpus, "When does Osprey ship?") == "osprey.txt"  # the previous version
    # Another process loads the same state without trying the broken file again.
    reader = CountingReader()
    assert opened(folder, reader).failed == corpus.failed and reader.read == []


def test_a_repaired_file_replaces_its_previous_version(folder):
    corpus = opened(folder)
    (folder / "osprey.txt").write_bytes(b"\x00broken")
    corpus.refresh()
    (folder / "osprey.txt").write_text("The Osprey release moved to June.")

    change = corpus.refresh()

    assert change.updated == ("osprey.txt",) and corpus.failed == {}


def test_a_new_file_that_cannot_be_read_is_left_out(folder):
    corpus = opened(folder)
    (folder / "broken.md").write_bytes(b"\x00\x01\x02")

    change = corpus.refresh()

    assert change.added == () and [path for path, _ in change.failed] == ["broken.md"]
    assert "broken.md" not in [document.source for document in corpus.documents]


def test_other_chunk_sizes_are_built_on_demand(folder):
    corpus = opened(folder)

    hits = corpus.current().retriever("bm25", 200, 0).search("When does Osprey ship?", 1)

    assert hits[0].chunk.document.source == "osprey.txt"
