"""Core types: documents, the chunks they are cut into, and ranked hits; plus the demo corpus."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    source: str  # where it came from: a path under the corpus folder, an upload's file name, "built-in"
    text: str


@dataclass(frozen=True)
class Chunk:
    document: Document
    position: int  # 0-based order within its document
    text: str
    # Headings above the chunk, outermost first ("Configuration", "Timeouts").
    heading_path: tuple[str, ...] = ()

    @property
    def heading(self) -> str:
        return " › ".join(self.heading_path)


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    # Comparable across queries, in [0, 1]: how much of the query the chunk covers.
    score: float
    rank: int  # 1-based


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
