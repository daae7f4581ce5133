"""The /compare page's in-browser runner: SmolLM2 run by llama.cpp compiled for the browser (wllama).

The app serves everything the page needs, so that nothing is fetched from another host:
wllama's JavaScript and WebAssembly (from `web/browser_runner/node_modules`, installed by
`make install` from the npm registry at the versions in its lock file), including the
compatibility build for browsers without JSPI or Memory64, and the SmolLM2 GGUF file from
its Python package (SHA-256 as ETag, range requests, 304 on revalidation).

The browser runs the prompt the server would: `POST /compare/browser/prompt` builds the
grounded messages with the comparison pipeline itself (a stand-in backend records what the
pipeline would send to the embedded SmolLM2, `_Replay`) and renders them with the GGUF's own
chat template, as the embedded backend does. The finished answer comes back to
`POST /compare/browser/check`, which replays it through the same pipeline turn, so the
support check, the text the chat would keep and the quotes are those of a server row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chainlit.auth import get_current_user
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from answering.comparison import Comparison, row_for, stream_comparison
from answering.grounding import GuardMode
from answering.pipeline import TurnDone
from models.base import ChatMessage, GenerationParams, StreamEnd, StreamEvent, TokenEvent, Usage
from models.catalog import EMBEDDED_SLM, ModelSpec
from models.embedded import EmbeddedBackend
from models.settings import Settings
from models.weights import smollm2_path
from web.application import Assistant

RUNNER_DIR = Path(__file__).resolve().parent / "browser_runner"
NODE_MODULES = RUNNER_DIR / "node_modules"
# What the page loads, by the name it asks for. wllama's module carries its worker's code
# inline (it starts the worker from a blob: URL); the compatibility build's worker is a file.
ASSETS = {
    "wllama.js": NODE_MODULES / "@wllama" / "wllama" / "esm" / "index.js",
    "wllama.wasm": NODE_MODULES / "@wllama" / "wllama" / "esm" / "wasm" / "wllama.wasm",
    "compat/wllama.js": NODE_MODULES / "@wllama" / "wllama-compat" / "wasm" / "wllama.js",
    "compat/wllama.wasm": NODE_MODULES / "@wllama" / "wllama-compat" / "wasm" / "wllama.wasm",
}
INSTALL_HINT = (
    "The in-browser runner is not installed: run `make install` in the project folder "
    "(it needs npm, and installs wllama from the npm registry), then reload this page."
)
BROWSER_KEY = "browser:smollm2-135m"
BROWSER_LABEL = "smollm2-135m (in this browser)"
MODEL_ROUTE = "/compare/browser/model.gguf"
# 4,096 tokens (the page's longest answer) of even very long words.
MAX_ANSWER_CHARS = 100_000

# Multithreaded WebAssembly needs SharedArrayBuffer, which browsers give only to a
# cross-origin isolated page: /compare and everything it loads send these.
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# The page keeps the model in its cache storage; the HTTP cache may keep files too but
# must ask first (a 304 costs nothing), so a reinstalled package is never served stale.
REVALIDATE = {"Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
MEDIA_TYPES = {".js": "text/javascript", ".wasm": "application/wasm"}
# The embedded backend's sampler settings that wllama does not share as defaults
# (models/embedded.py: `llama.generate(top_k=40, min_p=0.05, ...)`).
TOP_K = 40
MIN_P = 0.05


def missing_assets() -> list[str]:
    return [name for name, path in ASSETS.items() if not path.is_file()]


_hash_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The file's SHA-256, computed once per version of the file (blocking: call it in a thread).
    The lock makes a second caller wait for the first one's result instead of hashing again."""
    with _hash_lock:
        stat = path.stat()
        return _sha256_of(path, stat.st_size, stat.st_mtime_ns)


class _Replay:
    """A stand-in backend for one pipeline turn: it records the messages the pipeline sends
    each model and answers with the text the browser wrote (or nothing)."""

    name = "browser-replay"

    def __init__(self, answer: str = "", usage: Usage | None = None, finish_reason: str = "stop") -> None:
        self.answer = answer
        self.usage = usage or Usage(0, 0, estimated=True)
        self.finish_reason = finish_reason
        self.messages: dict[str, list[ChatMessage]] = {}

    async def list_models(self) -> list[str]:
        return []

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        self.messages.setdefault(model, list(messages))
        if self.answer:
            yield TokenEvent(self.answer)
        yield StreamEnd(self.usage, self.finish_reason)

    async def aclose(self) -> None:
        return None


async def _first_turn(comparison: Comparison, models: Sequence[ModelSpec], app: Assistant, replay: _Replay) -> TurnDone:
    """The browser model's turn, the first of `models`: the others are there only so that the
    context budget is the one the server models get in the same run (the smallest of them)."""
    backends = dict.fromkeys({*app.backends, "embedded", "server"}, replay)
    first: TurnDone | None = None
    # The other models' turns run too (instantly, on the stand-in): stopping the iteration
    # halfway would leave the comparison's generator open.
    async for event in stream_comparison(comparison, models, backends, app.turn_config):
        if isinstance(event, TurnDone) and first is None:
            first = event
    if first is not None:
        return first
    raise RuntimeError("the comparison turn ended without its TurnDone")


@dataclass(frozen=True)
class BrowserRequest:
    """What the page asks about: the comparison's input, and the server models run beside it."""

    comparison: Comparison
    models: list[ModelSpec]  # the browser's SmolLM2 first

    async def messages(self, app: Assistant) -> list[ChatMessage]:
        replay = _Replay()
        await _first_turn(self.comparison, self.models, app, replay)
        return replay.messages[self.models[0].model]

    async def check(self, app: Assistant, answer: str, usage: Usage, finish_reason: str) -> dict[str, Any]:
        """The row the server would give for this answer: its support check, the text the chat
        would keep and where it comes from (timings are the page's own, not these)."""
        done = await _first_turn(self.comparison, self.models, app, _Replay(answer, usage, finish_reason))
        row = dataclasses.asdict(row_for(done, app.settings.model_prices))
        row["checked"] = self.comparison.guard is not GuardMode.OFF
        return row


async def render_prompt(app: Assistant, messages: list[ChatMessage]) -> tuple[str, tuple[str, ...]]:
    """The messages through the GGUF's chat template, exactly as the embedded backend renders them."""
    backend = app.backends.get("embedded")
    if not isinstance(backend, EmbeddedBackend):
        raise HTTPException(status_code=503, detail="The embedded SmolLM2 backend is not running in this app.")
    # Loading reads the GGUF file (once per process; the chat loads it anyway): off the loop.
    loaded = await asyncio.to_thread(backend.load, EMBEDDED_SLM)
    prompt = loaded.format(messages)
    return prompt.text, prompt.stop


def make_browser_routes(
    app: Assistant,
    parse: Callable[[Request, Settings], Awaitable[tuple[Comparison, list[str]]]],
    resolve: Callable[..., list[ModelSpec]],
) -> APIRouter:
    """The runner's routes. `parse` turns a request body into the comparison the server models
    would run and the names of those models (web/routes.py, shared with /compare/stream);
    `resolve` finds them in the catalog (answering.comparison.resolve_models)."""
    routes = APIRouter()
    settings = app.settings

    async def browser_request(request: Request) -> BrowserRequest:
        try:
            comparison, wanted = await parse(request, settings)
        except ValueError as error:
            raise HTTPException(status_code=400, detail=str(error)) from None
        catalog = await app.catalog()
        try:
            compared = resolve(wanted, catalog, settings.model_aliases) if wanted else []
        except ValueError as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        return BrowserRequest(comparison, [catalog.models[f"embedded:{EMBEDDED_SLM}"], *compared])

    @routes.get("/compare/browser/setup")
    async def setup(user: Any = Depends(get_current_user)) -> Response:
        """What the page needs to know before it loads anything: installed or not, and where things are."""
        missing = missing_assets()
        if missing:
            return JSONResponse({"installed": False, "problem": INSTALL_HINT, "missing": missing})
        try:
            path = smollm2_path()
        except FileNotFoundError as error:
            return JSONResponse({"installed": False, "problem": f"The model file is missing: {error}."})
        sha256 = await asyncio.to_thread(file_sha256, path)
        return JSONResponse(
            {
                "installed": True,
                "model": {"url": MODEL_ROUTE, "name": path.name, "size": path.stat().st_size, "sha256": sha256},
                "assets": {name: f"/compare/browser/assets/{name}" for name in ASSETS},
                "label": BROWSER_LABEL,
                "key": BROWSER_KEY,
            },
            headers={"Cache-Control": "no-store"},
        )

    @routes.get("/compare/browser/assets/{name:path}")
    async def asset(name: str, user: Any = Depends(get_current_user)) -> FileResponse:
        path = ASSETS.get(name)
        if path is None or not path.is_file():
            raise HTTPException(status_code=404, detail=INSTALL_HINT if path else "Not found")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={**ISOLATION, **REVALIDATE})

    @routes.api_route(MODEL_ROUTE, methods=["GET", "HEAD"])
    async def model_file(request: Request, user: Any = Depends(get_current_user)) -> Response:
        """SmolLM2's GGUF from its Python package: SHA-256 ETag, 304, ranges (Starlette's FileResponse)."""
        path = smollm2_path()
        etag = f'"{await asyncio.to_thread(file_sha256, path)}"'
        headers = {**ISOLATION, **REVALIDATE, "ETag": etag}
        if etag in _etags(request.headers.get("if-none-match", "")):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type="application/octet-stream", headers=headers)

    @routes.post("/compare/browser/prompt")
    async def prompt(request: Request, user: Any = Depends(get_current_user)) -> Response:
        """The rendered prompt and sampling settings for the browser's run."""
        wanted = await browser_request(request)
        messages = await wanted.messages(app)
        text, stops = await render_prompt(app, messages)
        params = wanted.comparison.params
        return JSONResponse(
            {
                "prompt": text,
                "messages": [dataclasses.asdict(message) for message in messages],
                "sampling": {
                    "temperature": params.temperature,
                    "top_p": params.top_p,
                    "top_k": TOP_K,
                    "min_p": MIN_P,
                    "repeat_penalty": settings.embedded_repeat_penalty,
                    "max_tokens": params.max_tokens,
                    "stop": [*stops, *params.stop],
                },
                "n_ctx": settings.embedded_context_window,
            },
            headers={"Cache-Control": "no-store"},
        )

    @routes.post("/compare/browser/check")
    async def check(request: Request, user: Any = Depends(get_current_user)) -> Response:
        """The support check on the browser's finished answer, as a comparison row with the page's timings."""
        body = await request.json()
        wanted = await browser_request(request)
        try:
            answer = str(body.get("answer") or "")
            usage = Usage(int(body.get("prompt_tokens") or 0), int(body.get("completion_tokens") or 0))
            timings = {name: _seconds(body.get(name)) for name in ("ttft_s", "total_s", "load_s")}
        except (TypeError, ValueError):
            raise HTTPException(status_code=400, detail="Send the answer with its token counts and timings.") from None
        if len(answer) > MAX_ANSWER_CHARS:
            raise HTTPException(status_code=400, detail=f"An answer has at most {MAX_ANSWER_CHARS:,} characters.")
        finish = str(body.get("finish_reason") or "stop")
        row = await wanted.check(app, answer, usage, finish)
        total, ttft = timings["total_s"] or 0.0, timings["ttft_s"]
        generation = total - (ttft or 0.0)
        row.update(
            model=BROWSER_LABEL,
            key=BROWSER_KEY,
            ttft_s=ttft,
            total_s=total,
            load_s=timings["load_s"],
            # The rate as the server rows count it: the tokens after the first over the time after it.
            tokens_per_s=(usage.completion_tokens - 1) / generation
            if usage.completion_tokens >= 2 and generation > 0
            else None,
            tokens_estimated=False,
            cost_usd=None,  # nothing to simulate: it ran on the reader's own machine
            path=str(body.get("path") or ""),
        )
        return JSONResponse(row)

    return routes


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    seconds = float(value)
    if not 0 <= seconds < 86_400:
        raise ValueError(value)
    return seconds
