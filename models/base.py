"""The chat-backend seam: what every model backend streams, and the one protocol they share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

from i18n import localise

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 0.95
    # Ask for per-token log-probabilities. Backends that cannot give them
    # (or servers that ignore the request) yield tokens with logprob=None.
    logprobs: bool = False
    stop: tuple[str, ...] = ()

    def with_logprobs(self) -> GenerationParams:
        return replace(self, logprobs=True)


@dataclass(frozen=True)
class TokenEvent:
    text: str
    logprob: float | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # True when the backend reported no usage and these are our own counts.
    estimated: bool = False


@dataclass(frozen=True)
class StreamEnd:
    usage: Usage
    # "stop" (the model ended its answer), "length" (max_tokens reached),
    # or "cancelled" (the consumer stopped early).
    finish_reason: str


StreamEvent = TokenEvent | StreamEnd


@dataclass
class BackendError(Exception):
    """A failure the user should be told about in plain words.

    `what` says what failed, `where` which model or address, `hint` what to do. Each is an
    `i18n.Message` where it is words of ours (a model's name or a server's address is a plain
    str): `str(error)` is the English, `error.text(language)` (or `i18n.localise`) the words in
    the chat's language.
    """

    what: str
    where: str
    hint: str = ""
    partial_text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.text()

    def text(self, language: str | None = None) -> str:
        """The error in `language` (English by default)."""
        text = f"{localise(self.what, language)} ({localise(self.where, language)})"
        return f"{text}. {localise(self.hint, language)}" if self.hint else text


@dataclass(frozen=True)
class Likelihood:
    """How likely a model finds a given reply: the sum of its tokens' log-probabilities."""

    logprob: float
    tokens: int
    prompt_tokens: int = 0  # what the model read before the reply

    @property
    def mean(self) -> float:
        return self.logprob / self.tokens if self.tokens else 0.0


@runtime_checkable
class Backend(Protocol):
    """Something that can stream a chat completion.

    `stream_chat` yields `TokenEvent`s, then exactly one `StreamEnd`. Closing
    the iterator early (``aclose()``, or cancelling the task that iterates it)
    stops the generation promptly. Failures raise `BackendError`.
    """

    name: str

    async def list_models(self) -> list[str]: ...

    def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None:
        """Release what the backend holds (loaded models, connections); it is not used again."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that counts a text's tokens as its model will read them. Passage budgets and
    the check that a prompt fits the context window count with it: a Telugu sentence is several
    times more of SmolLM2's tokens than of an English one. Blocking, and quick (llama.cpp
    tokenizes a few hundred tokens in well under a millisecond)."""

    def count_tokens(self, model: str, text: str) -> int: ...


@runtime_checkable
class LikelihoodScorer(Protocol):
    """A backend that can score a reply instead of writing one: copy answers need it.

    `reply_likelihoods` gives, for each conversation, how likely the model finds `reply`
    as its next message. Backends that cannot (servers give no log-probabilities of a text
    they did not write) do not implement it, and their models compose their answers.
    """

    async def reply_likelihoods(
        self, model: str, conversations: Sequence[Sequence[ChatMessage]], reply: str
    ) -> list[Likelihood]: ...
