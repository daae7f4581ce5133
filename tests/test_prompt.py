"""The grounded prompt and the conversation that fits the context window."""

from __future__ import annotations

from answering.prompt import build_messages, retrieval_query
from models.base import ChatMessage
from models.prompt_formats import completion_prompt
from rag.chunking import chunk_documents
from rag.documents import SEED_DOCUMENTS

PASSAGES = chunk_documents(SEED_DOCUMENTS)


def conversation(turns: int, words_each: int = 50) -> list[ChatMessage]:
    history = []
    for number in range(turns):
        history.append(ChatMessage("user", f"question {number} " + "word " * words_each))
        history.append(ChatMessage("assistant", f"answer {number} " + "word " * words_each))
    return history


def test_the_system_prompt_numbers_the_passages_and_asks_for_grounding():
    system = build_messages("q", [], PASSAGES, 4096, 256)[0]

    assert system.role == "system"
    assert "[1] Foundry Local\nFoundry Local enables" in system.content
    assert "[3] SLMs\nSLMs provide" in system.content
    assert "do not cover" in system.content


def test_a_short_conversation_is_kept_whole_before_the_question():
    history = conversation(2)
    messages = build_messages("next?", history, PASSAGES, 4096, 256)

    assert messages[1:-1] == history
    assert messages[-1] == ChatMessage("user", "next?")


def test_the_oldest_turns_are_dropped_to_fit_the_context_window():
    history = conversation(30)
    messages = build_messages("next?", history, PASSAGES, 2048, 512)

    kept = messages[1:-1]
    assert 0 < len(kept) < len(history)
    assert kept == history[-len(kept) :]
    assert kept[0].role == "user"  # never half a turn
    assert sum(len(m.content) for m in messages) // 3 < 2048 - 512


def test_a_pretrained_model_gets_a_question_and_answer_document():
    messages = [
        ChatMessage("system", "Passages: ..."),
        ChatMessage("user", "Who?"),
        ChatMessage("assistant", "Ada."),
        ChatMessage("user", "When?"),
    ]
    prompt = completion_prompt(messages)

    assert prompt.text == "Passages: ...\n\nQuestion: Who?\nAnswer: Ada.\n\nQuestion: When?\nAnswer:"
    assert "\n\n" in prompt.stop


def test_a_follow_up_question_is_searched_together_with_the_previous_one():
    history = [ChatMessage("user", "How do I point the app at Ollama?"), ChatMessage("assistant", "Set ...")]

    assert retrieval_query("and what about vLLM?", history) == "How do I point the app at Ollama? and what about vLLM?"


def test_a_complete_question_is_searched_on_its_own():
    history = [ChatMessage("user", "How do I point the app at Ollama?")]
    question = "Which timeout applies to the first token of a streamed answer?"

    assert retrieval_query(question, history) == question
