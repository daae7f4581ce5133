"""The assistant as an OpenAI-compatible model: `GET /v1/models` and `POST /v1/chat/completions`.

Any OpenAI client (the `openai` packages, `llm`, Open WebUI, editors) gets the chat's answers:
the same `run_turn` over the shared knowledge base, with its router, support check and quotes.
The request's messages are the conversation: earlier turns are history, the last user message
is the question. Streamed or not, the client reads only what stands:

- `content` carries sentences the support check has passed, of the answer that will stand,
  as soon as they pass; a small model's draft that the router may still replace is held until
  the router has decided, and streams meanwhile as `reasoning_content` (clients that show a
  model's thinking show it there, as the chat page shows the draft). A cut sentence is never
  sent; a one-line note says that one was cut.
- When the turn ends, the rest of the chat's reply follows (`answering.reply`): the passage
  sentence an answer is drawn from, or the quotes when no model answer stands, then a
  "Sources" block of the passages cited.
- Extra fields on the response (or the last streamed chunk): `sources` (each passage's number,
  document, heading path, score and text) and `timings` (the phases, the model that answered,
  the router's verdict). `usage` holds the models' token counts.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`. With login on,
each call needs a user's API key (web/api_keys.py); with login off the API answers only
callers on this machine. Each conversation is saved to its user's chat history.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import chainlit as cl
from chainlit.context import init_http_context
from chainlit.data import get_data_layer
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from answering.attempts import AttemptStart
from answering.context import Excerpt, passage_path
from answering.grounding import GuardMode
from answering.pipeline import Retrieved, Routed, SentenceCut, SentenceKept, TurnDone, TurnRequest, run_turn
from answering.reply import MAX_TOKENS_NOTE, reply_for
from answering.router import Mode
from models.base import ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog
from rag.index import KnowledgeBase
from web.api_keys import ApiKeyFileError, ApiKeys
from web.application import Assistant
from web.chat_store import ANSWER_METADATA_KEY, ChatDataLayer

log = logging.getLogger(__name__)

ASSISTANT_MODEL = "knowledge-assistant"
# Before the Sources block of every reply; also where an earlier reply, sent back as history, is cut.
SOURCES_HEADING = "\n\nSources:\n"
SET_ASIDE = (
    "*The sentences above do not stand as the answer (they do not answer the question, or their model "
    "failed); what stands follows.*"
)
# A model's list is asked of the server at most this often (the chat asks once per chat).
CATALOG_TTL_S = 30.0


class ApiError(Exception):
    """An error the client gets in OpenAI's shape."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None, code: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code or None

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# --- the request, as OpenAI's clients send it (unknown fields are ignored, as OpenAI-compatible servers do)
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str = ""


class ApiMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[ApiMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream_options: StreamOptions | None = None


def parse_request(body: bytes, max_question_chars: int) -> ChatCompletionRequest:
    """The request, or ApiError saying what is wrong with it and where."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"The request body is not valid JSON: {error}.") from None
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        problem = first["msg"]
        if first["loc"][-1:] == ("role",):
            problem = "a message's role must be system, developer, user or assistant"
        raise ApiError(400, f"Invalid request: {where or 'body'}: {problem}.", param=where or None) from None
    last = request.messages[-1]
    if last.role != "user" or not last.text.strip():
        raise ApiError(400, "The last message must be the user's question, with text.", param="messages")
    if len(last.text) > max_question_chars:
        raise ApiError(
            400,
            f"The question is {len(last.text):,} characters long; the API answers questions of at most "
            f"{max_question_chars:,} (API_MAX_QUESTION_CHARS).",
            param="messages",
        )
    return request


def without_sources(reply: str) -> str:
    """A reply as the model said it: what comes before its Sources block."""
    return reply.split(SOURCES_HEADING)[0].strip()


def history_of(messages: Sequence[ApiMessage]) -> tuple[ChatMessage, ...]:
    """The turns before the question; system messages are left out (the assistant has its own
    instructions), and an earlier reply loses its Sources block, as the chat keeps only the answer."""
    return tuple(
        ChatMessage(m.role, without_sources(m.text) if m.role == "assistant" else m.text.strip())
        for m in messages
        if m.role in ("user", "assistant") and m.text.strip()
    )


def model_ids() -> list[str]:
    return [ASSISTANT_MODEL, *(f"{ASSISTANT_MODEL}:{mode.value}" for mode in Mode)]


def routing_of(model: str) -> Mode | None:
    """The routing mode a model id asks for (None: the pair's default); ApiError 404 for an unknown id."""
    if model == ASSISTANT_MODEL:
        return None
    name, _, mode = model.partition(":")
    if name == ASSISTANT_MODEL and mode in {m.value for m in Mode}:
        return Mode(mode)
    raise ApiError(
        404,
        f"The model `{model}` does not exist. This server offers: {', '.join(model_ids())}.",
        param="model",
        code="model_not_found",
    )


# --- what the client reads while the turn happens
@dataclass
class ReplyStream:
    """A turn's events as an API client may read them: text that stands, in order.

    `feed` returns (content, reasoning) to send now. The answer's sentences go out as the
    support check passes them; while the router may still replace a small model's draft
    (escalate, draft-refine), the draft goes to reasoning and the content waits. `finish`
    returns the rest of the reply once the turn is done.
    """

    mode: Mode
    # With the guard off (GROUNDING_GUARD=off) nothing is checked: tokens go out as they come.
    checked: bool = True
    # Content already sent for the current answer (reset when a model stands in for a failed one).
    answer_sent: str = ""
    sent: str = ""  # all content sent
    copying: bool = False
    routed: bool = False

    @property
    def drafting(self) -> bool:
        return not self.routed and self.mode in (Mode.ESCALATE, Mode.DRAFT_REFINE)

    def feed(self, event: object) -> tuple[str, str]:
        if isinstance(event, AttemptStart):
            self.copying = event.copying
            if event.replacing is None:
                return "", ""
            note = f"\n\n*⚠️ {event.replacing}. Answering with the embedded model {event.model.label} instead.*\n\n"
            if self.drafting:
                return "", note
            self.answer_sent = ""
            return self._content(note), ""
        passed = SentenceKept if self.checked else TokenEvent
        if isinstance(event, passed):
            if self.drafting:
                return "", event.text
            if self.copying:  # a chosen sentence is quoted when the turn ends
                return "", ""
            self.answer_sent += event.text
            return self._content(event.text), ""
        if isinstance(event, SentenceCut) and self.drafting:
            return "", f" *(a sentence was cut: {event.cut.reason})* "
        if isinstance(event, Routed):
            self.routed = True
            if event.decision.escalate and event.signals is not None:
                return "", f"\n\n↗️ Escalated to {event.llm.label}: {event.decision.summary()}.\n\n"
        return "", ""

    def _content(self, text: str) -> str:
        self.sent += text
        return text

    def finish(self, reply: str) -> str:
        """What is left to send of `reply` after what was sent as the answer streamed."""
        sent = self.answer_sent.strip()
        if not sent:
            return reply if not self.sent else "\n\n" + reply
        if reply.startswith(sent):
            return reply[len(sent) :]
        return f"\n\n{SET_ASIDE}\n\n{reply}"


@dataclass(frozen=True)
class ApiReply:
    """A finished turn as the API gives it."""

    text: str  # the chat's reply as text: the answer first, notes, then the Sources block
    finish_reason: str
    usage: dict[str, int]
    # Extra fields beside OpenAI's, named so that no client reads them as its own (Open WebUI
    # takes a field called `sources` for its citations, in another shape).
    extra: dict[str, Any]

    @classmethod
    def of(cls, done: TurnDone, passages: Sequence[Excerpt], mode: Mode) -> ApiReply:
        """`passages`: those the reply's [n] refer to (the turn's, or the nearest ones when it is
        out of scope); `mode`: the routing the caller asked for."""
        text = reply_text(done, passages)
        length = done.answered_by is not None and done.answered_by.finish_reason == "length"
        extra = {"knowledge_sources": sources_field(passages, text), "knowledge_timings": timings_of(done, mode)}
        return cls(text, "length" if length else "stop", usage_of(done), extra)


def reply_text(done: TurnDone, passages: Sequence[Excerpt]) -> str:
    """The chat's reply as text for any client: the answer first, notes, then the Sources block."""
    final = done.final
    # The chat's hint points at its settings panel, which an API client does not have.
    body = final.text if final.source == "out_of_scope" else reply_for(done).body
    notes = []
    if cuts := final.cuts:
        stopped = any(answer.finish_reason == "guard" for answer in done.attempts)
        what = "sentence" if len(cuts) == 1 else "sentences"
        notes.append(
            f"*{len(cuts)} {what} the documents do not support {'was' if len(cuts) == 1 else 'were'} cut"
            + (" and the model stopped there.*" if stopped else ".*")
        )
    if done.decision.escalate and done.llm_answer is not None and done.llm_answer.error is not None:
        notes.append(f"*⚠️ The large model failed: {done.llm_answer.error}.*")
    if done.answered_by is not None and done.answered_by.finish_reason == "length":
        notes.append(MAX_TOKENS_NOTE)
    # Out of scope, a passage that is not quoted has nothing to do with the reply.
    listed = cited(body, passages, otherwise_all=final.source != "out_of_scope")
    return "\n\n".join([body, *notes]) + sources_block(listed)


def cited(body: str, excerpts: Sequence[Excerpt], otherwise_all: bool = True) -> list[Excerpt]:
    """The passages the reply cites by [n]; when it cites none, all of them (`otherwise_all`:
    a model answer without markers still comes from what its model read) or none."""
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", body)}
    return [e for e in excerpts if e.number in numbers] or (list(excerpts) if otherwise_all else [])


def sources_block(excerpts: Sequence[Excerpt]) -> str:
    """One list item a passage, `- [2] Uploading files › How to upload a file (uploads.md)`: a
    Markdown list, so that clients that render Markdown keep one passage a line."""
    if not excerpts:
        return ""
    lines = [f"- [{e.number}] {e.label} ({e.hit.chunk.document.source})" for e in excerpts]
    return SOURCES_HEADING + "\n".join(lines)


def sources_field(passages: Sequence[Excerpt], text: str) -> list[dict[str, Any]]:
    """Every passage, `cited` when the reply's text (its Sources block included) names it."""
    numbers = {e.number for e in cited(text, passages, otherwise_all=False)}
    return [
        {
            "number": e.number,
            "document": e.hit.chunk.document.source,
            "title": e.hit.chunk.document.title,
            "heading_path": list(passage_path(e.hit.chunk)),
            "score": round(e.hit.score, 4),
            "cited": e.number in numbers,
            "text": e.text,
        }
        for e in passages
    ]


def usage_of(done: TurnDone) -> dict[str, int]:
    usages = [a.usage for a in done.attempts if a.usage is not None]
    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def timings_of(done: TurnDone, mode: Mode) -> dict[str, Any]:
    answered_by = done.answered_by
    return {
        "phases_s": {name: round(value, 4) for name, value in done.timings.phases().items()},
        "total_s": round(done.timings.total_s, 4),
        "answered_by": answered_by.model.label if answered_by else None,
        "answer_source": done.final.source,
        "router": {
            "mode": mode.value,
            "escalated": done.decision.escalate,
            "why": done.decision.summary(),
        },
        "usage_estimated": any(a.usage is not None and a.usage.estimated for a in done.attempts),
    }


# --- who is calling
@dataclass
class Callers:
    """Who a request comes from: a user's API key with login on; this machine only with login off."""

    app: Assistant
    keys: ApiKeys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = ApiKeys(self.app.settings.api_keys_path)

    def user_of(self, request: Request) -> str:
        if self.app.users is None:
            host = request.client.host if request.client else ""
            if not _loopback(host):
                raise ApiError(
                    403,
                    "Login is off, so the API answers only on this machine. Turn login on (AUTH_USERS_FILE) and "
                    "use an API key (python -m web.api_keys) to call it from elsewhere.",
                    kind="permission_error",
                )
            return "local"
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "Send an API key as `Authorization: Bearer <key>`; make one with python -m web.api_keys new NAME.",
                kind="authentication_error",
                code="invalid_api_key",
            )
        try:
            user = self.keys.user_of(key)
        except ApiKeyFileError as error:
            log.error("API keys cannot be read: %s", error)
            raise ApiError(
                500, "The server's API keys cannot be read; tell its operator.", kind="server_error"
            ) from None
        if user is None or user not in self.app.users:
            raise ApiError(401, "The API key is wrong or revoked.", kind="authentication_error", code="invalid_api_key")
        return user


def _loopback(host: str) -> bool:
    """A caller on this machine. Behind a reverse proxy on this machine every caller looks
    local: turn login on before putting the app behind one (docs/operations.md)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the conversation, saved to its user's chat history
class ApiHistory:
    """API conversations in the chat store, one thread each, shown in the page's history list.

    A client sends the whole conversation each time; a request whose earlier turns are a
    saved conversation (the same user, the same messages) continues its thread. The match is
    kept here and in the store (`api_conversations`), where every process finds it. The turn
    is written in the background, after the turns before it in the same conversation.
    """

    # Conversations remembered for continuing; an older one sent again starts a new thread.
    REMEMBERED = 10_000

    def __init__(self) -> None:
        self._threads: OrderedDict[str, str] = OrderedDict()  # conversation fingerprint -> thread id
        self._writing: dict[str, asyncio.Task[None]] = {}  # thread id -> its last turn being written

    @staticmethod
    def fingerprint(user: str, turns: Sequence[ChatMessage]) -> str:
        text = json.dumps([user, *[(m.role, " ".join(m.content.split())) for m in turns]])
        return hashlib.sha256(text.encode()).hexdigest()

    async def record(
        self,
        user: str,
        history: Sequence[ChatMessage],
        question: str,
        reply: str,
        answer: str,
        model: str,
        also_read: str = "",
    ) -> str | None:
        """Add the turn to its conversation's thread; returns the thread id (None without a chat
        store). `also_read`: the reply as a streaming client read it, when that differs (text set
        aside before it), which the client sends back with its next question."""
        data_layer = get_data_layer()
        if not isinstance(data_layer, ChatDataLayer):
            return None
        thread_id = None
        if history:
            earlier = self.fingerprint(user, history)
            thread_id = self._threads.get(earlier) or await data_layer.api_conversation(user, earlier)
        new = thread_id is None
        thread_id = thread_id or str(uuid.uuid4())
        # Known at once, so that a follow-up sent the moment this answer ends finds its thread.
        continued = {
            self.fingerprint(
                user, [*history, ChatMessage("user", question), ChatMessage("assistant", without_sources(text))]
            )
            for text in {reply, also_read or reply}
        }
        for fingerprint in continued:
            self._threads[fingerprint] = thread_id
        while len(self._threads) > self.REMEMBERED:
            self._threads.popitem(last=False)
        turn = _SavedTurn(thread_id, new, user, question, reply, answer, model, tuple(sorted(continued)))
        task = asyncio.create_task(self._write(self._writing.get(thread_id), turn), name="save-api-turn")
        self._writing[thread_id] = task
        task.add_done_callback(
            lambda done: self._writing.pop(thread_id) if self._writing.get(thread_id) is done else None
        )
        return thread_id

    async def _write(self, before: asyncio.Task[None] | None, turn: _SavedTurn) -> None:
        if before is not None:
            await asyncio.wait([before])
        try:
            await turn.write()
        except Exception:  # the answer was given; a chat store problem must not take it back
            log.exception("Saving an API conversation to the chat history failed.")


@dataclass(frozen=True)
class _SavedTurn:
    thread_id: str
    new: bool  # the conversation's first turn
    user: str
    question: str
    reply: str
    answer: str  # the answer alone, the history a resumed chat gives the model
    model: str
    continued_by: tuple[str, ...]  # the fingerprints of the conversation with this turn in it

    async def write(self) -> None:
        data_layer = get_data_layer()
        persisted = await data_layer.get_user(self.user) or await data_layer.create_user(cl.User(identifier=self.user))
        if persisted is None:
            return
        # No user here: given one, Chainlit would also write the thread, racing the write below.
        init_http_context(thread_id=self.thread_id)
        await data_layer.update_thread(
            self.thread_id,
            name=self.question[:80] if self.new else None,
            user_id=persisted.id,
            metadata={"client": "openai-api", "model": self.model} if self.new else None,
        )
        now = time.time()
        for role, text, metadata, at in (
            ("user_message", self.question, {}, now),
            ("assistant_message", self.reply, {ANSWER_METADATA_KEY: self.answer} if self.answer else {}, now + 0.001),
        ):
            await data_layer.create_step(
                {
                    "id": str(uuid.uuid4()),
                    "threadId": self.thread_id,
                    "name": self.user if role == "user_message" else "Assistant",
                    "type": role,
                    "output": text,
                    "metadata": metadata,
                    "streaming": False,
                    "createdAt": _iso(at),
                    "start": _iso(at),
                    "end": _iso(at),
                }
            )
        if isinstance(data_layer, ChatDataLayer):
            await data_layer.remember_api_conversation(self.user, self.continued_by, self.thread_id)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


# --- the routes
def make_api_routes(app: Assistant) -> APIRouter:
    routes = APIRouter()
    settings = app.settings
    callers = Callers(app)
    history = ApiHistory()
    cache: dict[str, tuple[float, Catalog]] = {}
    refreshing = asyncio.Lock()  # one request asks the server for its models; the others wait for it
    started = int(time.time())

    async def catalog() -> Catalog:
        async with refreshing:
            at, known = cache.get("catalog", (0.0, None))
            if known is None or time.monotonic() - at > CATALOG_TTL_S:
                known = await app.catalog()
                cache["catalog"] = (time.monotonic(), known)
            return known

    def default_mode(known: Catalog) -> Mode:
        if settings.router_mode:
            return Mode(settings.router_mode)
        return app.turn_config.router_mode_for(known.slm, known.llm)

    @routes.get("/v1/models")
    async def list_models(request: Request) -> Response:
        try:
            callers.user_of(request)
            known = await catalog()
        except ApiError as error:
            return error.response()
        default = default_mode(known)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_id,
                        "object": "model",
                        "created": started,
                        "owned_by": "knowledge-assistant",
                        "routing": (routing_of(model_id) or default).value,
                        "slm": known.slm.label,
                        "llm": known.llm.label,
                    }
                    for model_id in model_ids()
                ],
            }
        )

    @routes.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            user = callers.user_of(request)
            body = await _read_capped(request, settings.api_max_request_kb * 1024)
            asked = parse_request(body, settings.api_max_question_chars)
            mode = routing_of(asked.model)
            known = await catalog()
        except ApiError as error:
            return error.response()
        turn = TurnRequest(
            question=asked.messages[-1].text.strip(),
            knowledge=KnowledgeBase(app.corpus, settings.chunk_size, settings.chunk_overlap),
            slm=known.slm,
            llm=known.llm,
            fallback=known.embedded_fallback,
            history=history_of(asked.messages[:-1]),
            params=GenerationParams(
                max_tokens=min(asked.max_completion_tokens or asked.max_tokens or settings.max_tokens, 8192),
                temperature=settings.temperature if asked.temperature is None else asked.temperature,
            ),
            router_mode=mode or default_mode(known),
            retrieval_mode=settings.retrieval_mode,
            top_k=settings.top_k,
            guard=GuardMode(settings.grounding_guard),
        )
        completion = Completion(
            asked.model, user, turn, asked.stream_options is not None and asked.stream_options.include_usage
        )
        if asked.stream:
            return StreamingResponse(
                completion.chunks(app, history),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            )
        try:
            result = await completion.whole(app, history)
        except Exception:
            log.exception("An API answer failed.")
            return ApiError(500, "The assistant failed to answer; try again.", kind="server_error").response()
        return JSONResponse(result)

    @routes.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(path: str, request: Request) -> Response:
        # Without this, Chainlit's catch-all would answer a GET with its chat page.
        if (allowed := {"models": "GET", "chat/completions": "POST"}.get(path.strip("/"))) is not None:
            return ApiError(
                405, f"/v1/{path} takes {allowed}, not {request.method}.", code="method_not_allowed"
            ).response()
        return ApiError(
            404, f"This server offers /v1/models and /v1/chat/completions, not /v1/{path}.", code="unknown_url"
        ).response()

    return routes


async def _read_capped(request: Request, cap: int) -> bytes:
    too_big = ApiError(
        413,
        f"The request is larger than the API's cap of {cap // 1024:,} KiB (API_MAX_REQUEST_KB). "
        "Send a shorter conversation.",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_big
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > cap:
            raise too_big
    return bytes(body)


@dataclass
class Completion:
    """One answer through the API, streamed or whole."""

    model: str
    user: str
    turn: TurnRequest
    include_usage: bool = False
    passages: list[Excerpt] = field(default_factory=list)  # what the reply's [n] refer to
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    async def _events(self, app: Assistant) -> AsyncIterator[object]:
        with app.collector.busy():
            async for event in run_turn(self.turn, app.backends, app.turn_config):
                if isinstance(event, Retrieved):
                    # As the chat shows them: out of scope, the nearest chunks whole.
                    self.passages = event.shown
                yield event

    def _reply(self, done: TurnDone) -> ApiReply:
        return ApiReply.of(done, self.passages, self.turn.router_mode)

    async def chunks(self, app: Assistant, history: ApiHistory) -> AsyncIterator[bytes]:
        stream = ReplyStream(self.turn.router_mode, checked=self.turn.guard is not GuardMode.OFF)
        yield self._chunk({"role": "assistant", "content": ""})
        try:
            async for event in self._events(app):
                if isinstance(event, TurnDone):
                    reply = self._reply(event)
                    rest = stream.finish(reply.text)
                    await self._save(history, event, reply.text, also_read=stream.sent + rest)
                    if rest:
                        yield self._chunk({"content": rest})
                    if not self.include_usage:  # not OpenAI's way, but what llama.cpp's server does
                        yield self._chunk({}, reply.finish_reason, usage=reply.usage, **reply.extra)
                        continue
                    # As OpenAI does: the usage alone on a last chunk without choices.
                    yield self._chunk({}, reply.finish_reason, **reply.extra)
                    last = json.loads(self._chunk({})[len(b"data: ") :])
                    last.update(choices=[], usage=reply.usage, **reply.extra)
                    yield f"data: {json.dumps(last)}\n\n".encode()
                else:
                    content, reasoning = stream.feed(event)
                    if content or reasoning:
                        yield self._chunk({"content": content} if content else {"reasoning_content": reasoning})
        except Exception:
            log.exception("An API answer failed while streaming.")
            error = {
                "message": "The assistant failed while answering; the text above is partial.",
                "type": "server_error",
            }
            yield f"data: {json.dumps({'error': error})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def whole(self, app: Assistant, history: ApiHistory) -> dict[str, Any]:
        done: TurnDone | None = None
        async for event in self._events(app):
            done = event if isinstance(event, TurnDone) else done
        if done is None:
            raise RuntimeError("the turn ended without an answer")
        reply = self._reply(done)
        await self._save(history, done, reply.text)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": reply.usage,
            **reply.extra,
        }

    async def _save(self, history: ApiHistory, done: TurnDone, reply: str, also_read: str = "") -> None:
        await history.record(
            self.user, self.turn.history, self.turn.question, reply, done.final.text, self.model, also_read=also_read
        )
