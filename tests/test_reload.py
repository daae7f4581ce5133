"""`chainlit run app.py -w` runs app.py again after every change, in the same server process:
what the previous run started (its models, the upload reader process, the loop's upkeep, its
routes) is stopped or replaced, not left running beside the new run's, and the chat still works."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
from chainlit.server import app as http_app
from fastapi.routing import APIRoute

from models.settings import Settings
from models.weights import smollm2_path
from tests.chainlit_client import ChainlitClient
from tests.in_process import app_in_process
from tests.servers import app_root_of, chainlit_app
from tests.test_chainlit_app import NIGHTJAR
from tests.test_hostile_input import upload_report
from tests.test_upload_reader import reader_processes

RELOADED = "Reloading app"


def upload_readers(url: str) -> list[psutil.Process]:
    port = url.rsplit(":", 1)[1]
    [server] = [child for child in psutil.Process().children() if port in child.cmdline()]
    return reader_processes(server)


async def added_after_upload(url: str) -> str:
    chat = ChainlitClient(url)
    await chat.connect()
    try:
        return await upload_report(chat, "nightjar.md", NIGHTJAR, "text/markdown")
    finally:
        await chat.close()


async def wait_for_line(log: Path, line: str, times: int = 1, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count(line) < times:
        assert time.monotonic() < deadline, f"no {line!r} in {log}"
        await asyncio.sleep(0.2)


async def reload_app(log: Path, times: int) -> None:
    """Change a .py file in the app root, as an editor does; Chainlit runs app.py again."""
    (app_root_of(log) / "edited.py").write_text(f"# edit {times}\n")
    await wait_for_line(log, RELOADED, times)
    await asyncio.sleep(2)  # Chainlit waits 1 s after the reload before telling the pages


def mappings_of(process: psutil.Process, model_file: Path) -> int:
    """How many times `process` has the model's weights mapped (one per loaded copy)."""
    return sum(1 for mapping in process.memory_maps(grouped=False) if mapping.path == str(model_file))


async def answer_from_the_embedded_model(url: str) -> str:
    chat = ChainlitClient(url)
    await chat.connect()
    try:
        return (await chat.ask("What does Foundry Local enable?")).messages[-1]["output"]
    finally:
        await chat.close()


async def test_after_a_reload_one_upload_reader_runs_and_uploads_still_work(tmp_path):
    log = tmp_path / "app.log"
    with chainlit_app(log, {"ROUTER_MODE": "off"}, watch=True) as url:
        assert "Added" in await added_after_upload(url)
        [first_reader] = upload_readers(url)

        await reload_app(log, times=1)

        assert "Added" in await added_after_upload(url)
        _, alive = psutil.wait_procs([first_reader], timeout=15)
        assert not alive, "the first run's reader process is still running"
        [reader] = upload_readers(url)
        assert reader.pid != first_reader.pid


async def test_after_ten_reloads_one_set_of_routes_serves_and_the_model_is_loaded_once(tmp_path):
    # In-process, on the real embedded model: each run of app.py builds its own assistant.
    settings = Settings(
        data_dir=tmp_path / "data",
        model_cache_dir=tmp_path / "models",
        router_mode="off",
        grounding_guard="off",
        min_retrieval_score=0,
        max_tokens=8,
    )
    model_file, this_process = smollm2_path(), psutil.Process()
    mapped_before = mappings_of(this_process, model_file)
    with app_in_process(settings) as app:
        for _ in range(10):
            assert "smollm2-135m" in await answer_from_the_embedded_model(app.url)
            await app.reload()
        assert "smollm2-135m" in await answer_from_the_embedded_model(app.url)

        assert mappings_of(this_process, model_file) - mapped_before == 1
        routes = [route.path for route in http_app.router.routes if isinstance(route, APIRoute)]
        assert routes.count("/compare") == 1
