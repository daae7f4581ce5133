"""Fake model classes that implement the `Backend` protocol, for tests about what surrounds a model."""

from __future__ import annotations

from collections.abc import AsyncIterator

from models.base import ChatMessage, GenerationParams, StreamEnd, TokenEvent, Usage


class ScriptedBackend:
    """Answers each model with its scripted words, or raises its scripted error; logs what happens."""

    name = "fake"

    def __init__(self, replies: dict[str, list[str] | Exception]) -> None:
        self.replies = replies
        self.log: list[str] = []
        self.prompts: dict[str, list[ChatMessage]] = {}  # model -> the messages it was last sent

    async def list_models(self) -> list[str]:
        return list(self.replies)

    async def aclose(self) -> None:
        self.log.append("closed")

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[TokenEvent | StreamEnd]:
        self.log.append(f"start {model}")
        self.prompts[model] = list(messages)
        reply = self.replies[model]
        if isinstance(reply, Exception):
            yield TokenEvent("partial ")
            raise reply
        for word in reply:
            yield TokenEvent(word)
        self.log.append(f"end {model}")
        yield StreamEnd(Usage(prompt_tokens=10, completion_tokens=len(reply)), "stop")
