"""The grounded prompt: instructions, numbered passages, and as much conversation as fits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from answering.context import Excerpt, estimate_tokens, passage_label
from models.base import ChatMessage
from rag.documents import Chunk
from rag.text import tokenize

# A passage of the prompt: an excerpt chosen for the question, or a whole chunk.
Passage = Excerpt | Chunk

SYSTEM_PROMPT = (
    "You are a knowledge assistant for a team. Answer the question using only the "
    "numbered passages below, and cite the passages you use like [1]. If the passages "
    "do not contain the answer, say that the documents do not cover it instead of "
    "guessing. Keep the answer short and factual."
)

# When the user asks for an answer although the documents do not cover the question.
GENERAL_PROMPT = (
    "You are a helpful assistant. The team's documents do not cover this question; answer "
    "briefly from general knowledge, and say so if you are not sure."
)

REFINE_PROMPT = (
    f"{SYSTEM_PROMPT} A smaller model has written a draft answer. Improve the draft: keep "
    "its facts and citations where the passages support them, correct what the passages "
    "contradict, and add what is missing."
)

# Room left for chat-template markup around each message.
_PER_MESSAGE_OVERHEAD = 8


# A follow-up such as "and what about vLLM?" says too little to retrieve on its own.
_FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "also", "what if", "why not")
_FEW_CONTENT_WORDS = 4


def numbered_passages(passages: Sequence[Passage]) -> str:
    """The passages as the model reads them: "[n] title › heading", then the text."""
    return "\n\n".join(f"[{number}] {_label(passage)}\n{passage.text}" for number, passage in _numbered(passages))


def _numbered(passages: Sequence[Passage]) -> list[tuple[int, Passage]]:
    return [(p.number if isinstance(p, Excerpt) else n, p) for n, p in enumerate(passages, start=1)]


def _label(passage: Passage) -> str:
    return passage.label if isinstance(passage, Excerpt) else passage_label(passage)


def system_message(passages: Sequence[Passage], instructions: str = SYSTEM_PROMPT) -> ChatMessage:
    numbered = numbered_passages(passages)
    return ChatMessage("system", f"{instructions}\n\nPassages:\n{numbered or '(no passage matched the question)'}")


# Added to the instructions when a server model answers in the question's language
# (`TurnRequest.answer_in_language`): what the check of a translated answer can read must
# stay as the passages write it.
IN_THE_QUESTIONS_LANGUAGE = (
    "Answer in the language of the question. Write numbers, names, settings, commands and file names "
    "exactly as the passages write them, in the Latin script."
)


def refine_messages(question: str, passages: Sequence[Passage], draft: str) -> list[ChatMessage]:
    """The draft-then-refine prompt: the same passages, the question and the small model's draft."""
    return [
        system_message(passages, REFINE_PROMPT),
        ChatMessage("user", f"{question}\n\nDraft answer: {draft.strip()}"),
    ]


def retrieval_query(question: str, history: Sequence[ChatMessage]) -> str:
    """The text to search with: the question, plus the previous question for a follow-up."""
    previous = next((m.content for m in reversed(history) if m.role == "user"), None)
    opener = question.strip().lower().startswith(_FOLLOW_UP_OPENERS)
    if previous and (opener or len(tokenize(question)) < _FEW_CONTENT_WORDS):
        return f"{previous} {question}"
    return question


def build_messages(
    question: str,
    history: Sequence[ChatMessage],
    passages: Sequence[Passage],
    context_window: int,
    max_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> list[ChatMessage]:
    """System prompt with passages, the most recent turns that fit, then the question.

    The answer's `max_tokens` is reserved out of the context window first; older
    turns are dropped whole (a user message with its answer) so that the model
    never sees half an exchange.
    """
    system = system_message(passages)
    current = ChatMessage("user", question)

    def cost(message: ChatMessage) -> int:
        return count_tokens(message.content) + _PER_MESSAGE_OVERHEAD

    budget = context_window - max_tokens - cost(system) - cost(current)
    kept: list[ChatMessage] = []
    turns = _pair_turns(history)
    for turn in reversed(turns):
        turn_cost = sum(cost(message) for message in turn)
        if turn_cost > budget:
            break
        budget -= turn_cost
        kept[:0] = turn
    return [system, *kept, current]


def _pair_turns(history: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Group the history into turns, each starting at a user message."""
    turns: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "system":
            continue
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns
