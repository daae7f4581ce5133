"""Files saved under CORPUS_DIR while the app runs: re-indexed within seconds, without a restart.

The watcher alone on a folder, then the real app served in-process on scripted models
(tests/in_process.py): a chat already open finds the new passage on its next question.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from chainlit.server import app as http_app

from answering.context import embedded_units
from answering.pipeline import SENTENCE_VECTORS
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM
from models.settings import Settings
from rag.corpus_watch import CorpusWatcher
from rag.embedding import Closeness
from rag.persisted_index import PersistedCorpus
from tests.chainlit_client import ChainlitClient
from tests.fakes import ScriptedBackend
from tests.in_process import app_in_process
from tests.servers import PROJECT_ROOT
from web.application import build_assistant

OSPREY_QUESTION = "When does the Osprey release ship?"
OSPREY = b"# Osprey\n\nThe Osprey release ships on the twelfth of May.\n"
REPLY = ["The ", "Osprey ", "release ", "ships ", "on ", "the ", "twelfth ", "of ", "May ", "[1]."]


async def eventually(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    """Wait for `condition`, within the "a few seconds" the handbook promises."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not seen within the time allowed"
        await asyncio.sleep(0.05)


def sources(corpus: PersistedCorpus) -> list[str]:
    return [document.source for document in corpus.documents]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "expenses.md").write_text("# Expenses\n\nTravel expenses are refunded within ten days.\n")
    return folder


async def test_the_watcher_indexes_a_new_file_and_drops_a_deleted_one(folder, tmp_path):
    corpus = PersistedCorpus(folder, tmp_path / "index", 1500, 150, "bm25")
    corpus.refresh()
    watcher = CorpusWatcher(corpus)
    watcher.start()
    try:
        await asyncio.sleep(0.2)  # the watch is set up in a worker thread
        (folder / "osprey.md").write_bytes(OSPREY)
        await eventually(lambda: "osprey.md" in sources(corpus))
        assert corpus.last_change.added == ("osprey.md",)

        (folder / "expenses.md").unlink()
        await eventually(lambda: "expenses.md" not in sources(corpus))
    finally:
        await watcher.stop()
    assert not watcher.running


async def test_after_each_refresh_the_watcher_runs_the_work_given_to_it(folder, tmp_path):
    corpus = PersistedCorpus(folder, tmp_path / "index", 1500, 150, "bm25")
    corpus.refresh()
    seen: list[list[str]] = []
    watcher = CorpusWatcher(corpus, after_refresh=lambda: seen.append(sources(corpus)))
    watcher.start()
    try:
        await asyncio.sleep(0.2)
        (folder / "osprey.md").write_bytes(OSPREY)
        await eventually(lambda: any("osprey.md" in found for found in seen))
    finally:
        await watcher.stop()


async def test_the_app_embeds_its_corpus_s_sentences_ahead_into_its_model_cache(folder, tmp_path):
    settings = Settings(
        corpus_dir=folder,
        data_dir=tmp_path / "data",
        model_cache_dir=tmp_path / "models",
        upload_parse_workers=0,
        embed_corpus_ahead=True,
    )
    assistant = build_assistant(settings, {"embedded": ScriptedBackend({})})
    await assistant.start()
    try:
        await eventually(lambda: (tmp_path / "models" / SENTENCE_VECTORS).is_file(), timeout_s=30)
    finally:
        await assistant.stop()

    chunks = assistant.corpus.current().chunks(settings.chunk_size, settings.chunk_overlap)
    assert Closeness().load(tmp_path / "models" / SENTENCE_VECTORS) >= len(embedded_units(chunks))


EMBED_AHEAD = """
import sys
from pathlib import Path
from models.settings import Settings
from tests.fakes import ScriptedBackend
from web.application import build_assistant

folder, data = Path(sys.argv[1]), Path(sys.argv[2])
settings = Settings(corpus_dir=folder, data_dir=data / "data", model_cache_dir=data / "models", upload_parse_workers=0)
print(build_assistant(settings, {"embedded": ScriptedBackend({})}).embed_corpus_ahead())
"""


def test_of_two_processes_starting_together_one_embeds_the_sentences_and_the_other_loads_them(folder, tmp_path):
    started = [
        subprocess.Popen(
            [sys.executable, "-c", EMBED_AHEAD, str(folder), str(tmp_path)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    embedded = sorted(int(process.communicate(timeout=120)[0].split()[-1]) for process in started)

    assert embedded[0] == 0 and embedded[1] > 0


async def test_stopping_the_app_stops_its_watcher_and_watch_corpus_false_starts_none(folder, tmp_path):
    def assistant(watch: bool):
        settings = Settings(corpus_dir=folder, data_dir=tmp_path / "data", upload_parse_workers=0, watch_corpus=watch)
        return build_assistant(settings, {"embedded": ScriptedBackend({})})

    watching, not_watching = assistant(True), assistant(False)
    await watching.start()
    await not_watching.start()
    watcher = watching.watcher
    assert watcher is not None and watcher.running and not_watching.watcher is None

    await watching.stop()
    await not_watching.stop()

    assert not watcher.running and watching.watcher is None


@pytest.fixture(scope="module")
def models() -> ScriptedBackend:
    return ScriptedBackend({EMBEDDED_SLM: REPLY, EMBEDDED_LLM: REPLY})


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("watched")
    folder = root / "corpus"
    folder.mkdir()
    (folder / "expenses.md").write_text("# Expenses\n\nTravel expenses are refunded within ten days.\n")
    settings = Settings(corpus_dir=folder, data_dir=root / "data", model_cache_dir=root / "models")
    with app_in_process(settings, {"embedded": models}) as app:
        yield app, folder


async def test_a_saved_file_is_answered_from_on_the_open_chats_next_question(served):
    app, folder = served
    chat = ChainlitClient(app.url)
    await chat.connect()
    try:
        before = await chat.ask(OSPREY_QUESTION)
        (folder / "osprey.md").write_bytes(OSPREY)
        await eventually(lambda: "osprey.md" in sources(http_app.state.assistant.corpus))
        after = await chat.ask(OSPREY_QUESTION)
    finally:
        await chat.close()

    assert "do not cover" in before.messages[-1]["output"].lower()
    assert "on the twelfth of May" in after.messages[-1]["output"].split("Sources:")[0]
    # A new chat's welcome says what changed.
    newcomer = ChainlitClient(app.url)
    welcome = await newcomer.connect()
    await newcomer.close()
    assert "1 document added" in welcome.messages[-1]["output"]


async def test_a_file_that_cannot_be_read_is_named_in_new_chats_and_its_previous_version_stays(served):
    app, folder = served
    corpus = http_app.state.assistant.corpus
    (folder / "expenses.md").write_bytes(b"# Expenses\x00\x00")
    await eventually(lambda: "expenses.md" in corpus.failed)

    newcomer = ChainlitClient(app.url)
    welcome = await newcomer.connect()
    await newcomer.close()

    assert "**expenses.md** in the knowledge base could not be read" in welcome.messages[-1]["output"]
    hits = corpus.current().retriever("bm25", 1500, 150).search("travel expenses refunded", 1)
    assert hits[0].chunk.document.source == "expenses.md"


async def test_a_reload_stops_the_previous_watcher_and_starts_one(served):
    app, _ = served
    previous = http_app.state.assistant.watcher

    await app.reload()

    assert previous is not None and not previous.running
    assert http_app.state.assistant.watcher.running
