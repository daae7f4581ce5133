"""A backend for any OpenAI-compatible server: Foundry Local, Ollama, vLLM, llama.cpp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai

from i18n import N_, Message
from models.base import (
    BackendError,
    ChatMessage,
    GenerationParams,
    StreamEnd,
    StreamEvent,
    TokenEvent,
    Usage,
)

_START_HINT = N_(
    "Check that the server is running (for Foundry Local, `foundry service status` "
    "prints its address) and that MODEL_SERVER_URL or FOUNDRY_LOCAL_ENDPOINT points at it."
)


class OpenAICompatBackend:
    name = "server"

    def __init__(
        self,
        base_url: str,
        api_key: str = "not-needed",
        connect_timeout_s: float = 3.0,
        first_token_timeout_s: float = 60.0,
        token_timeout_s: float = 30.0,
    ) -> None:
        self.base_url = base_url
        # Whether this server returns log-probabilities: unknown until the first
        # answer that asked for them (Foundry Local accepts the request but sends none).
        self.logprobs_supported: bool | None = None
        self.first_token_timeout_s = first_token_timeout_s
        self.token_timeout_s = token_timeout_s
        # Per-phase deadlines are enforced around each awaited event below; the
        # httpx read timeout is only a backstop for a socket that stays silent.
        read_timeout = max(first_token_timeout_s, token_timeout_s) + 1
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            max_retries=0,
            # openai's own Timeout: the httpx one, or httpx2's in openai 3 (which converts an httpx one).
            timeout=openai.Timeout(read_timeout, connect=connect_timeout_s),
        )

    async def list_models(self) -> list[str]:
        try:
            async with asyncio.timeout(self.first_token_timeout_s):
                page = await self._client.models.list()
        except Exception as error:  # every failure becomes a user-facing message
            raise self._explain(error, Message(N_("listing models"))) from error
        return [model.id for model in page.data]

    async def aclose(self) -> None:
        await self._client.close()

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            request["stop"] = list(params.stop)
        asked_for_logprobs = params.logprobs and self.logprobs_supported is not False
        if asked_for_logprobs:
            # llama.cpp's servers return logprobs only when top_logprobs is set too.
            request.update(logprobs=True, top_logprobs=1)
        got_logprobs = False

        stream = None
        usage: Usage | None = None
        finish_reason: str | None = None
        chunks_with_text = 0
        got_chunk = False
        text_so_far: list[str] = []
        try:
            # One deadline covers the request and its first chunk; after that,
            # each chunk must follow the previous one within token_timeout_s.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.first_token_timeout_s
            async with asyncio.timeout_at(deadline):
                # The SDK's client, errors and SSE decoding, with each chunk left as its JSON:
                # `chat.completions.create` builds a pydantic model per chunk (about 0.1 ms of the
                # event loop each, 10% of its time under 20 chats in bench.load).
                stream = await self._client.post(
                    "/chat/completions", body=request, cast_to=object, stream=True, stream_cls=_JsonStream
                )
            events = aiter(stream)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(events)
                except StopAsyncIteration:
                    break
                # Reasoning models send thinking chunks before any answer text:
                # any chunk proves the server is alive, so the clock restarts.
                deadline = loop.time() + self.token_timeout_s
                got_chunk = True
                if chunk_usage := chunk.get("usage"):
                    usage = Usage(chunk_usage["prompt_tokens"], chunk_usage["completion_tokens"])
                for choice in chunk.get("choices") or ():
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        chunks_with_text += 1
                        text_so_far.append(text)
                        logprob = _chunk_logprob(choice)
                        got_logprobs = got_logprobs or logprob is not None
                        yield TokenEvent(text, logprob)
        except BackendError:
            raise
        except TimeoutError as error:
            # Our own deadlines: the server took the request but is too slow, so the
            # advice is the limit to raise, not to check that the server is running.
            limit, setting = (
                (self.token_timeout_s, "TOKEN_TIMEOUT_S")
                if got_chunk
                else (self.first_token_timeout_s, "FIRST_TOKEN_TIMEOUT_S")
            )
            what = (
                N_("The model server did not answer in time (model {model}: no new token within {limit:g} s)")
                if got_chunk
                else N_("The model server did not answer in time (model {model}: no first token within {limit:g} s)")
            )
            raise BackendError(
                Message(what, model=model, limit=limit),
                self.base_url,
                Message(
                    N_(
                        "The server is up but slow: raise {setting} (now {limit:g} s) if its model needs "
                        "longer, or try again."
                    ),
                    setting=setting,
                    limit=limit,
                ),
                partial_text="".join(text_so_far),
            ) from error
        except Exception as error:  # every failure becomes a user-facing message
            explained = self._explain(error, Message(N_("model {model}"), model=model), mid_stream=stream is not None)
            explained.partial_text = "".join(text_so_far)
            raise explained from error
        finally:
            if stream is not None:
                await stream.close()

        if finish_reason is None:
            raise BackendError(
                Message(N_("The model server ended the answer before it was complete")),
                self.base_url,
                Message(N_("The server may have crashed or restarted; try again.")),
                partial_text="".join(text_so_far),
            )
        if asked_for_logprobs and chunks_with_text:
            self.logprobs_supported = got_logprobs
        if usage is None:
            # Servers that ignore stream_options send no usage: count for ourselves,
            # at about four characters a token for the prompt.
            prompt_chars = sum(len(message.content) for message in messages)
            usage = Usage(prompt_chars // 4 + 1, chunks_with_text, estimated=True)
        yield StreamEnd(usage, finish_reason)

    def _explain(self, error: BaseException, doing: Message, mid_stream: bool = False) -> BackendError:
        """The error in plain words; `doing`: what was asked ("model {model}", "listing models")."""
        where = self.base_url
        if isinstance(error, (TimeoutError, openai.APITimeoutError, httpx.TimeoutException)):
            what = Message(N_("The model server did not answer in time ({doing})"), doing=doing)
            return BackendError(what, where, Message(_START_HINT))
        if isinstance(error, openai.APIStatusError):
            detail = _short(error.message)
            if error.status_code == 404:
                return BackendError(
                    Message(
                        N_("The model server does not know {model}: {detail}"),
                        model=doing.params.get("model", doing),
                        detail=detail,
                    ),
                    where,
                    Message(N_("Pick another model in the chat settings or check SLM_MODEL / LLM_MODEL.")),
                )
            return BackendError(
                Message(
                    N_("The model server answered HTTP {status} ({doing}): {detail}"),
                    status=error.status_code,
                    doing=doing,
                    detail=detail,
                ),
                where,
                Message(N_("Look at the server's log; the request may be too long or the model not loaded.")),
            )
        if isinstance(error, openai.APIConnectionError) and not mid_stream:
            what = Message(N_("Could not connect to the model server ({doing})"), doing=doing)
            return BackendError(what, where, Message(_START_HINT))
        if isinstance(error, (httpx.HTTPError, openai.APIError)):
            return BackendError(
                Message(
                    N_("The connection to the model server broke off ({doing}): {detail}"),
                    doing=doing,
                    detail=_short(str(error)),
                ),
                where,
                Message(N_("Try again; if it keeps happening, look at the server's log.")),
            )
        if isinstance(error, ValueError):  # malformed JSON in a stream chunk
            return BackendError(
                Message(N_("The model server sent a malformed answer ({doing})"), doing=doing),
                where,
                Message(N_("The server may not be fully OpenAI-compatible; look at its log.")),
            )
        what = Message(N_("The model server failed ({doing}): {detail}"), doing=doing, detail=_short(repr(error)))
        return BackendError(what, where)


# Any: the SDK hands each chunk's JSON over as it is (a typed dict would be walked, key by key).
_JsonStream = openai.AsyncStream[Any]


def _chunk_logprob(choice: dict[str, Any]) -> float | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    # A chunk may carry several tokens: its text's probability is their product.
    return float(sum(token["logprob"] for token in content))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
