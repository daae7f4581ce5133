"""A scripted OpenAI-compatible server whose behaviour a test changes request by request.

`tests/fault_server.py` serves one behaviour for its whole life, so a chat app
started against it fails every question the same way. The session tests need a
fault on one question and a full answer on the next (to show the session is
still usable), from the same app process: here each chat completion request
takes the next behaviour of a script, the last one repeating. Every request
body is recorded, so tests can read the exact prompt a model was given.

The failure behaviours themselves are the ones in `tests/fault_server.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from tests.fault_server import (
    _chunk,
    _cut,
    _hang,
    _http_500,
    _malformed,
    _models,
    _stall,
)
from tests.servers import free_port

# Long enough (one chunk a word, each counted as a token) that the router never escalates
# it for being short; it carries no log-probabilities, as Foundry Local's do not.
SCRIPTED_ANSWER = "The scripted server answered this question in full, as asked [1]."


async def _answer(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in SCRIPTED_ANSWER.split(" ")[:-1]:
        await response.write(_chunk(word + " "))
    await response.write(_chunk(SCRIPTED_ANSWER.split(" ")[-1], finish="stop"))
    await response.write(b"data: [DONE]\n\n")
    return response


async def _slow_answer(request: web.Request) -> web.StreamResponse:
    """The same answer at five words a second: a stream that is still going while a test acts."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in SCRIPTED_ANSWER.split(" ")[:-1]:
        await response.write(_chunk(word + " "))
        await asyncio.sleep(0.2)
    await response.write(_chunk(SCRIPTED_ANSWER.split(" ")[-1], finish="stop"))
    await response.write(b"data: [DONE]\n\n")
    return response


BEHAVIOURS = {
    "answer": _answer,
    "slow": _slow_answer,
    "cut": _cut,
    "malformed": _malformed,
    "stall": _stall,
    "hang": _hang,
    "http-500": _http_500,
}


@dataclass
class ScriptedServer:
    url: str  # the /v1 base URL
    requests: list[dict] = field(default_factory=list)  # every chat completion request body, in order
    script: list[str] = field(default_factory=lambda: ["answer"])

    def play(self, *behaviours: str) -> None:
        """Serve these behaviours to the next requests, in order; the last one repeats."""
        unknown = set(behaviours) - set(BEHAVIOURS)
        assert behaviours and not unknown, f"unknown behaviours {unknown}; known: {sorted(BEHAVIOURS)}"
        self.script = list(behaviours)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        behaviour = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return await BEHAVIOURS[behaviour](request)


@contextlib.asynccontextmanager
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    """Serve `/v1/models` (one model, "scripted") and scripted chat completions on a free port."""
    port = free_port()
    server = ScriptedServer(f"http://127.0.0.1:{port}/v1")
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server._serve)
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield server
    finally:
        await runner.cleanup()
