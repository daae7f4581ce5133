"""A session's knowledge base: shared corpus plus its own uploads, isolated from other sessions."""

from __future__ import annotations

import pytest

from rag.documents import Document
from rag.index import DuplicateUpload, KnowledgeBase, SharedCorpus
from rag.loading import load_folder
from rag.uploads import UploadReader, add_upload_off_loop

SECRET = Document("upload-1", "Launch plan", "plan.md", "Project Nightjar launches on the ninth of March.")


# The app reads uploads in a separate process (tests/test_upload_reader.py); here, in a thread.
IN_A_THREAD = UploadReader(workers=0)


async def add_upload(knowledge: KnowledgeBase, path, claimed_name: str, max_bytes: int):
    return await add_upload_off_loop(knowledge, path, claimed_name, max_bytes, IN_A_THREAD)


@pytest.fixture
def corpus():
    return SharedCorpus([Document("c1", "Handbook", "handbook.md", "The handbook explains expenses and travel.")])


def test_an_upload_is_searchable_in_its_own_session(corpus):
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)

    hits = knowledge.search("When does Nightjar launch?", "bm25", 3)
    assert hits[0].chunk.document == SECRET


@pytest.mark.parametrize("mode", ["bm25", "lexical"])
def test_another_session_never_finds_it(corpus, mode):
    mine, theirs = KnowledgeBase(corpus, 1000, 0), KnowledgeBase(corpus, 1000, 0)
    mine.add(SECRET)

    assert all(hit.chunk.document != SECRET for hit in theirs.search("Nightjar launch March", mode, 5))


def test_the_same_file_twice_is_refused(corpus):
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    with pytest.raises(DuplicateUpload):
        knowledge.add(SECRET)
    assert list(knowledge.uploads.values()) == [SECRET]


def test_a_removed_upload_is_no_longer_found(corpus):
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    knowledge.search("Nightjar", "bm25", 3)

    assert knowledge.remove("plan.md") == SECRET
    assert knowledge.search("Nightjar", "bm25", 3) == []


def test_the_corpus_folder_is_read_recursively_with_titles(tmp_path):
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text("# Setting up\n\nRun make.")
    (tmp_path / "faq.txt").write_text("Questions and answers.")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")

    documents = load_folder(tmp_path)

    assert [(d.source, d.title) for d in documents] == [("faq.txt", "Faq"), ("guides/setup.md", "Setting up")]


async def test_an_upload_outcome_says_what_was_added(corpus, tmp_path):
    path = tmp_path / "upload-on-disk"
    path.write_text("# Nightjar\n\nProject Nightjar launches in March.")
    knowledge = KnowledgeBase(corpus, 1000, 0)

    outcome = await add_upload(knowledge, path, "../../notes/nightjar.md", max_bytes=10_000)

    assert (outcome.added, outcome.file_name, outcome.title, outcome.chunks) == (True, "nightjar.md", "Nightjar", 1)


async def test_a_refused_upload_leaves_the_knowledge_base_unchanged(corpus, tmp_path):
    path = tmp_path / "upload-on-disk"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    knowledge = KnowledgeBase(corpus, 1000, 0)

    outcome = await add_upload(knowledge, path, "notes.txt", max_bytes=10_000)

    assert not outcome.added and "binary" in outcome.refusal
    assert knowledge.uploads == {}


async def test_the_same_file_twice_is_refused_with_the_name_it_has_here(corpus, tmp_path):
    path = tmp_path / "upload-on-disk"
    path.write_text("Some notes.")
    knowledge = KnowledgeBase(corpus, 1000, 0)
    await add_upload(knowledge, path, "a.txt", 10_000)

    outcome = await add_upload(knowledge, path, "copy of a.txt", 10_000)

    assert outcome.refusal == "the same file is already here as a.txt"


def test_an_upload_is_indexed_alone_and_the_shared_index_is_reused(corpus, monkeypatch):
    import rag.index

    indexed: list[list[str]] = []
    real = rag.index.make_retriever

    def counting(mode, chunks, *embedding):
        indexed.append(sorted({chunk.document.id for chunk in chunks}))
        return real(mode, chunks, *embedding)

    shared = corpus.retriever("bm25", 1000, 0)
    monkeypatch.setattr(rag.index, "make_retriever", counting)
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    knowledge.search("Nightjar", "bm25", 3)
    knowledge.add(Document("upload-2", "Minutes", "minutes.md", "The budget review moved to April."))
    hits = knowledge.search("Nightjar budget handbook expenses", "bm25", 3)

    # Each file was indexed once, on its own; the corpus's index was built before and reused.
    assert indexed == [["upload-1"], ["upload-2"]]
    assert corpus.retriever("bm25", 1000, 0) is shared
    assert {hit.chunk.document.id for hit in hits} == {"c1", "upload-1", "upload-2"}


@pytest.mark.parametrize("mode", ["bm25", "lexical"])
def test_an_upload_scores_as_it_would_in_one_index_with_the_corpus(corpus, mode):
    from rag.chunking import chunk_documents
    from rag.retrieval import make_retriever

    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    one_index = make_retriever(mode, corpus.chunks(1000, 0) + chunk_documents([SECRET], 1000, 0))

    hit = knowledge.search("When does Nightjar launch?", mode, 1)[0]
    expected = one_index.search("When does Nightjar launch?", 1)[0]

    assert hit.chunk == expected.chunk
    # Lexical: exactly; BM25 takes each index's own average chunk length.
    assert hit.score == pytest.approx(expected.score, abs=1e-9 if mode == "lexical" else 0.1)


def test_an_upload_is_still_found_after_the_chunk_size_changes(corpus):
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    knowledge.search("Nightjar", "bm25", 3)

    knowledge.rechunk(40, 0)

    hits = knowledge.search("Nightjar launches", "bm25", 3)
    assert hits[0].chunk.document == SECRET
    assert all(len(hit.chunk.text) <= 40 for hit in hits)


def test_removing_one_upload_keeps_the_others(corpus):
    knowledge = KnowledgeBase(corpus, 1000, 0)
    knowledge.add(SECRET)
    knowledge.add(Document("upload-2", "Minutes", "minutes.md", "Nightjar's budget review moved to April."))
    knowledge.search("Nightjar", "lexical", 3)

    knowledge.remove("plan.md")

    assert [hit.chunk.document.id for hit in knowledge.search("Nightjar", "lexical", 3)] == ["upload-2"]


def test_an_open_knowledge_base_searches_the_corpus_as_it_is_now_and_keeps_its_uploads(corpus):
    class Edited:
        """The shared corpus of a running app: replaced as a whole when a file changes."""

        def __init__(self) -> None:
            self.version = corpus

        def current(self) -> SharedCorpus:
            return self.version

    shared = Edited()
    knowledge = KnowledgeBase(shared, 1000, 0)
    knowledge.add(SECRET)
    assert knowledge.search("Osprey release", "bm25", 3) == []

    shared.version = SharedCorpus([Document("c2", "Osprey", "osprey.md", "The Osprey release ships in May.")])

    assert knowledge.search("Osprey release", "bm25", 1)[0].chunk.document.id == "c2"
    assert knowledge.search("Nightjar launch", "bm25", 1)[0].chunk.document == SECRET
