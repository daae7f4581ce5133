"""A scripted OpenAI-compatible server that fails on purpose, for fault tests only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

from tests.servers import free_port

REQUESTS = web.AppKey("requests", list)


def _chunk(text: str, finish: str | None = None) -> bytes:
    body = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "scripted",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _http_500(request: web.Request) -> web.Response:
    return web.json_response({"error": {"message": "model crashed"}}, status=500)


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def _stream_then(request: web.Request, ending: bytes | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in ("The ", "answer ", "is "):
        await response.write(_chunk(word))
    if ending is None:
        # Die mid-answer: drop the connection without finishing the chunked body.
        request.transport.close()
        return response
    await response.write(ending)
    await asyncio.sleep(3600)  # then say nothing more
    return response


async def _cut(request: web.Request) -> web.StreamResponse:
    return await _stream_then(request, None)


async def _malformed(request: web.Request) -> web.StreamResponse:
    return await _stream_then(request, b"data: {not json\n\n")


async def _stall(request: web.Request) -> web.StreamResponse:
    return await _stream_then(request, b": keep-alive comment\n\n")


async def _models(request: web.Request) -> web.Response:
    model = {"id": "scripted", "object": "model", "created": 0, "owned_by": "tests"}
    return web.json_response({"object": "list", "data": [model]})


async def _no_logprobs(request: web.Request) -> web.StreamResponse:
    """A complete answer without log-probabilities, as Foundry Local gives; records the request."""
    request.app[REQUESTS].append(await request.json())
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in ("The ", "answer ", "is "):
        await response.write(_chunk(word))
    await response.write(_chunk("42.", finish="stop"))
    await response.write(b"data: [DONE]\n\n")
    return response


BEHAVIOURS = {
    "no-logprobs": _no_logprobs,
    "http-500": _http_500,
    "hang": _hang,
    "cut": _cut,
    "malformed": _malformed,
    "stall": _stall,
}


@contextlib.asynccontextmanager
async def fault_server(behaviour: str, requests: list | None = None) -> AsyncIterator[str]:
    """Serve `behaviour` for chat completions; yields the /v1 base URL.

    Request bodies are appended to `requests` by the behaviours that record them."""
    app = web.Application()
    app[REQUESTS] = requests if requests is not None else []
    app.router.add_post("/v1/chat/completions", BEHAVIOURS[behaviour])
    app.router.add_get("/v1/models", _models)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def refused_url() -> str:
    """An address where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"
