"""Core document type and the built-in demo corpus."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    source: str
    text: str


# The original prototype's inline corpus; it stays available as the demo corpus.
SEED_DOCUMENTS: tuple[Document, ...] = (
    Document(
        id="seed-1",
        title="Foundry Local",
        source="built-in",
        text="Foundry Local enables local model execution with OpenAI-compatible APIs.",
    ),
    Document(
        id="seed-2",
        title="RAG",
        source="built-in",
        text="RAG combines retrieval and generation for grounded answers.",
    ),
    Document(
        id="seed-3",
        title="SLMs",
        source="built-in",
        text="SLMs provide efficiency advantages on constrained hardware.",
    ),
)
