"""The real app (app.py, Chainlit, uvicorn) served from the test process, on models the test chooses.

For chat behaviours that do not need a real model: the test hands `build_assistant` fake
backends (tests/fakes.py) and talks to the app over Socket.IO as the page does
(tests/chainlit_client.py). Starting takes a fraction of a second instead of a server
process and a model load.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import uvicorn
from chainlit.config import config, load_module
from chainlit.server import app as http_app

from models.base import Backend
from models.settings import Settings
from tests.servers import PROJECT_ROOT, free_port
from web.application import build_assistant


@dataclass
class InProcessApp:
    url: str
    loop: asyncio.AbstractEventLoop

    async def reload(self) -> None:
        """Run app.py again in the running server, as `chainlit run -w` does after a change
        (without dropping the project's modules, which this test process shares)."""

        async def run_again() -> None:
            load_module(config.run.module_name)
            await http_app.state.replacing

        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run_again(), self.loop))


@contextlib.contextmanager
def app_in_process(settings: Settings, backends: Mapping[str, Backend] | None = None) -> Iterator[InProcessApp]:
    """Serve app.py with `settings`, on `backends` (default: the models `settings` configure)."""
    http_app.state.build_assistant = lambda: build_assistant(settings, backends)
    config.run.headless = True
    config.run.module_name = str(PROJECT_ROOT / "app.py")
    load_module(config.run.module_name)
    # Chainlit's lifespan ends the process (os._exit) when the server stops: run without it
    # and call the app's start and stop hooks here instead.
    server = uvicorn.Server(
        uvicorn.Config(http_app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off")
    )
    # The server gets its own event loop in a thread; the test's loop stays free to be the page.
    loop = asyncio.new_event_loop()

    def serve() -> None:
        loop.run_until_complete(server.serve())
        # Chainlit leaves timers for sessions that ended (each chat kept for reconnection).
        leftover = asyncio.all_tasks(loop)
        for task in leftover:
            task.cancel()
        if leftover:  # gather() of nothing looks for this thread's loop, which there is none of
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=serve, name="app-in-process", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the in-process app did not start"
            time.sleep(0.02)
        asyncio.run_coroutine_threadsafe(config.code.on_app_startup(), loop).result(timeout=30)
        yield InProcessApp(f"http://127.0.0.1:{server.config.port}", loop)
    finally:
        asyncio.run_coroutine_threadsafe(config.code.on_app_shutdown(), loop).result(timeout=30)
        server.should_exit = True
        thread.join(timeout=30)
        # The next in-process app is a new server, not a reload of this one.
        for name in ("build_assistant", "assistant"):
            with contextlib.suppress(AttributeError):
                delattr(http_app.state, name)
