"""HTTP routes beside Chainlit's own: saved chats' side elements, the side-panel script, the comparison
page, and the OpenAI-compatible API (web/openai_api.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chainlit.auth import get_current_user
from chainlit.data import get_data_layer
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from answering.attempts import Answer, AttemptStart
from answering.comparison import NO_KNOWLEDGE, Comparison, PastedContext, resolve_models, row_for, stream_comparison
from answering.grounding import GuardMode
from answering.pipeline import TurnDone
from models.base import GenerationParams, TokenEvent
from models.settings import Settings
from models.streaming import TokenBatcher
from web.application import Assistant
from web.browser_runner import ISOLATION, REVALIDATE, make_browser_routes
from web.chainlit_fixes import SIDE_PANEL_SCRIPT
from web.chat_store import STORED_ELEMENTS_ROUTE, ChatDataLayer, LocalFileStorage
from web.openai_api import make_api_routes

PAGES = Path(__file__).resolve().parent.parent / ".chainlit"
# Scripts of the comparison page, served beside it.
COMPARE_SCRIPTS = {"browser-runner"}
COMPARE_LIMITS = {"prompt": 20_000, "context": 200_000, "models": 4}
# JSON is the latency chart's figure: the page parses it only when served as JSON.
SAFE_MIMES = {"text/plain", "text/markdown", "application/pdf", "image/png", "image/jpeg", "application/json"}
NO_ACTIVE_CONTENT = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def make_routes(app: Assistant) -> APIRouter:
    routes = APIRouter()
    settings = app.settings

    @routes.get(STORED_ELEMENTS_ROUTE + "/{object_key:path}")
    async def stored_element(object_key: str, user: Any = Depends(get_current_user)) -> Response:
        """A saved chat's side element, for its owner only."""
        data_layer = get_data_layer()
        # The element's chat decides who may see it (an upload's key is made before its chat has an owner).
        mine = (
            bool(user)
            and isinstance(data_layer, ChatDataLayer)
            and user.identifier in await data_layer.element_owners(object_key)
        )
        # A folder store's files; an S3 store gives the page signed URLs of its own instead.
        local = app.storage if isinstance(app.storage, LocalFileStorage) else None
        stored = await asyncio.to_thread(local.stored, object_key) if mine and local else None
        if stored is None:
            raise HTTPException(status_code=404, detail="Not found")
        # Uploaded HTML or SVG must never run as a page of this origin.
        mime = stored.mime if stored.mime in SAFE_MIMES else "text/plain; charset=utf-8"
        return FileResponse(stored.path, media_type=mime, headers=NO_ACTIVE_CONTENT)

    @routes.get(SIDE_PANEL_SCRIPT)
    async def side_panel_script() -> FileResponse:
        return FileResponse(PAGES / "side-panel.js", media_type="text/javascript")

    @routes.get("/compare")
    async def compare_page() -> FileResponse:
        # Cross-origin isolated (COOP and COEP) for the in-browser runner's threads; the chat page is not.
        return FileResponse(
            PAGES / "compare.html", media_type="text/html", headers={"X-Content-Type-Options": "nosniff", **ISOLATION}
        )

    @routes.get("/compare/{name}.js")
    async def compare_script(name: str) -> FileResponse:
        """The page's own scripts, beside it in .chainlit/ (the in-browser runner's controller)."""
        if name not in COMPARE_SCRIPTS:
            raise HTTPException(status_code=404, detail="Not found")
        return FileResponse(PAGES / f"{name}.js", media_type="text/javascript", headers={**ISOLATION, **REVALIDATE})

    @routes.get("/compare/models")
    async def compare_models(user: Any = Depends(get_current_user)) -> dict[str, Any]:
        catalog = await app.catalog()
        return {
            "models": [{"key": spec.key, "label": spec.label} for spec in catalog.models.values()],
            "slm": catalog.slm.key,
            "llm": catalog.llm.key,
            "notices": catalog.notices,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
        }

    @routes.post("/compare/stream")
    async def compare_stream(request: Request, user: Any = Depends(get_current_user)) -> Response:
        """The comparison page's answers, one model after the other, as newline-delimited JSON events."""
        try:
            comparison, wanted = await read_comparison(request, settings)
        except ValueError as error:
            return _bad_request(str(error))
        catalog = await app.catalog()
        try:
            models = resolve_models(wanted, catalog, settings.model_aliases)
        except ValueError as error:
            return _bad_request(str(error), status_code=404)

        async def events() -> AsyncIterator[bytes]:
            batcher = TokenBatcher(settings.stream_flush_ms / 1000)
            current = ""
            with app.collector.busy():
                async for event in stream_comparison(comparison, models, app.backends, app.turn_config):
                    if isinstance(event, AttemptStart):
                        current = event.model.key
                        yield _ndjson({"event": "start", "key": current, "model": event.model.label})
                    elif isinstance(event, TokenEvent):
                        if batch := batcher.add(event.text, time.monotonic()):
                            yield _ndjson({"event": "token", "key": current, "text": batch})
                    elif isinstance(event, Answer):
                        if rest := batcher.flush():
                            yield _ndjson({"event": "token", "key": current, "text": rest})
                    elif isinstance(event, TurnDone):
                        # The result has what the support check left: `final`, `source` and `cuts`
                        # (`checked`: whether the check ran at all, GROUNDING_GUARD not off).
                        result = dataclasses.asdict(row_for(event, settings.model_prices))
                        result["checked"] = comparison.guard is not GuardMode.OFF
                        yield _ndjson({"event": "done", "key": current, "result": result})
            yield _ndjson({"event": "end"})

        return StreamingResponse(
            events(),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    routes.include_router(make_browser_routes(app, read_comparison, resolve_models))
    routes.include_router(make_api_routes(app))
    return routes


async def read_comparison(request: Request, settings: Settings) -> tuple[Comparison, list[str]]:
    """The comparison a /compare request asks for, and the models it names (the server models'
    /compare/stream and the in-browser runner read the same body). ValueError: what to tell the page."""
    try:
        body = await request.json()
        prompt = str(body.get("prompt", "")).strip()
        context = str(body.get("context") or "")
        wanted = [str(name) for name in body.get("models") or []]
        params = GenerationParams(
            max_tokens=min(max(int(body.get("max_tokens") or settings.max_tokens), 1), 4096),
            temperature=min(max(float(body.get("temperature", settings.temperature)), 0.0), 2.0),
        )
    except (ValueError, TypeError, AttributeError):
        raise ValueError('Send JSON: {"prompt": "…", "models": ["slm", "llm"], "context": "…"}.') from None
    if not prompt:
        raise ValueError("Type a prompt first.")
    too_long = [name for name, value in (("prompt", prompt), ("context", context)) if len(value) > COMPARE_LIMITS[name]]
    if too_long or len(wanted) > COMPARE_LIMITS["models"]:
        raise ValueError(
            f"Too much input: at most {COMPARE_LIMITS['prompt']:,} characters of prompt, "
            f"{COMPARE_LIMITS['context']:,} of context and {COMPARE_LIMITS['models']} models."
        )
    # Pasted text is a knowledge base of its own; with none, each model answers from general knowledge.
    knowledge = PastedContext(context, settings.chunk_size, settings.chunk_overlap) if context.strip() else NO_KNOWLEDGE
    return Comparison.from_settings(prompt, settings, params, knowledge), wanted


def _bad_request(message: str, status_code: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code)


def _ndjson(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()
