"""Fake model classes that implement the `Backend` protocol, for tests about what surrounds a model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from models.base import ChatMessage, GenerationParams, Likelihood, StreamEnd, TokenEvent, Usage


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


class CopyingBackend(ScriptedBackend):
    """A `ScriptedBackend` whose models can also score replies (`LikelihoodScorer`), as the
    embedded models do for copy answers: each model finds a question likely under a passage
    holding its favourite words, and unlikely under any other."""

    def __init__(
        self, replies: dict[str, list[str] | Exception], favourites: dict[str, str], otherwise: float = -3.0
    ) -> None:
        super().__init__(replies)
        self.favourites = favourites
        self.otherwise = otherwise  # the mean log-probability of a question under any other passage

    async def reply_likelihoods(
        self, model: str, conversations: Sequence[Sequence[ChatMessage]], reply: str
    ) -> list[Likelihood]:
        self.log.append(f"score {model}")
        favourite = self.favourites[model]
        return [
            Likelihood(
                -1.0 if any(favourite in m.content for m in conversation) else self.otherwise, 1, prompt_tokens=10
            )
            for conversation in conversations
        ]
