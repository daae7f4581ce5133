"""Turning chat messages into the prompt text a particular embedded model expects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from models.base import ChatMessage


@dataclass(frozen=True)
class Prompt:
    text: str
    stop: tuple[str, ...] = ()


def completion_prompt(messages: Sequence[ChatMessage]) -> Prompt:
    """A plain question-and-answer document for pretrained (not chat-tuned) models.

    A pretrained model continues text rather than following a chat template, so
    the conversation is written as a document whose natural continuation is the
    answer, and generation stops where the next question would begin.
    """
    text = ""
    for message in messages:
        content = message.content.strip()
        if message.role == "system":
            text += f"{content}\n\n"
        elif message.role == "user":
            text += f"Question: {content}\nAnswer:"
        else:
            text += f" {content}\n\n"
    # "\n[" is where a pretrained model starts inventing further numbered passages.
    return Prompt(text, stop=("\n\n", "\nQuestion:", "\n["))
