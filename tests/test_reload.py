"""`chainlit run app.py -w` runs app.py again after every change, in the same server process:
what the previous run started (the upload reader process, the loop's upkeep) is stopped,
not left running beside the new run's, and uploads still work."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil

from tests.chainlit_client import ChainlitClient
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


async def wait_for_line(log: Path, line: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {line!r} in {log}"
        await asyncio.sleep(0.2)


async def test_after_a_reload_one_upload_reader_runs_and_uploads_still_work(tmp_path):
    log = tmp_path / "app.log"
    with chainlit_app(log, {"ROUTER_MODE": "off"}, watch=True) as url:
        assert "Added" in await added_after_upload(url)
        [first_reader] = upload_readers(url)

        # Any .py file that changes in the app root makes Chainlit run app.py again.
        (app_root_of(log) / "edited.py").write_text("# an edit\n")
        await wait_for_line(log, RELOADED)
        await asyncio.sleep(2)  # Chainlit waits 1 s after the reload before telling the pages

        assert "Added" in await added_after_upload(url)
        _, alive = psutil.wait_procs([first_reader], timeout=15)
        assert not alive, "the first run's reader process is still running"
        [reader] = upload_readers(url)
        assert reader.pid != first_reader.pid
