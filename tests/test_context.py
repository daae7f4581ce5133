"""What the model reads: units of a chunk, selection within a budget, and where an answer comes from."""

from __future__ import annotations

from answering.context import Excerpt, best_sentences, drawn_from_best, select_context, select_contexts, units
from rag.documents import Chunk, Document, Hit

FOUNDRY = Document("foundry", "Models and backends", "models.md", "")
VLLM_TEXT = (
    "vLLM serves at http://HOST:8000/v1. The Knowledge Assistant itself also listens on port 8000,\n"
    "so a vLLM on the same machine needs another port (`--port 8001`)."
)
FOUNDRY_TEXT = (
    "Foundry Local runs on Windows and macOS. Its usual address is http://localhost:5273/v1,\n"
    "but the port can differ: `foundry service status` prints the actual endpoint."
)


def hit(text: str, heading: str, rank: int) -> Hit:
    return Hit(Chunk(FOUNDRY, rank, text, ("Models and backends", heading)), 0.5, rank)


HITS = [hit(FOUNDRY_TEXT, "Using Foundry Local", 1), hit(VLLM_TEXT, "Using vLLM", 2)]
QUESTION = "On which port does Foundry Local usually listen?"


def test_hard_wrapped_lines_are_joined_and_cut_into_sentences_and_list_items_keep_their_number():
    text = "The first run does three things:\n1. Creates a virtual\n   environment.\n2. Installs it. Then runs."
    assert units(text) == [
        "The first run does three things:",
        "1. Creates a virtual environment.",
        "2. Installs it.",
        "Then runs.",
    ]


def test_a_wrapped_line_that_starts_with_a_number_other_than_one_continues_its_sentence():
    text = "`UPLOAD_MAX_FILES` (default\n10) is the most files per message.\n\n1. First\n2) Second"

    assert units(text) == ["`UPLOAD_MAX_FILES` (default 10) is the most files per message.", "1. First", "2) Second"]


def test_the_best_matching_sentence_is_given_even_over_budget_and_the_rest_fits_the_budget():
    [excerpt] = select_context(HITS, QUESTION, budget_tokens=1)
    assert excerpt.number == 1 and "5273" in excerpt.text and excerpt.text.count(".") <= 3

    generous = select_context(HITS, QUESTION, budget_tokens=1000)
    assert [e.number for e in generous] == [1, 2]
    assert "5273" in generous[0].text and "8001" in generous[1].text


def test_a_larger_budget_reads_all_that_a_smaller_one_reads_under_the_same_numbers():
    selections = select_contexts(HITS, QUESTION, [1, 1000])
    small, large = selections[1], selections[1000]

    assert [e.number for e in small] == [1] and [e.number for e in large] == [1, 2]
    assert small[0].text in large[0].text and len(small[0].text) < len(large[0].text)
    assert select_context(HITS, QUESTION, budget_tokens=1000) == large


def test_the_best_sentences_are_quoted_once_each():
    excerpts = [Excerpt(1, HITS[0], FOUNDRY_TEXT), Excerpt(2, HITS[0], FOUNDRY_TEXT)]
    quoted = best_sentences(excerpts, QUESTION, count=3)
    assert len({text for text, _ in quoted}) == len(quoted)
    assert "5273" in quoted[0][0]


def test_a_quoted_sentence_that_ends_in_a_colon_comes_with_what_follows():
    text = "To find the port Foundry Local listens on, run:\n\n```\nfoundry service status\n```"
    [(quoted, number)] = best_sentences([Excerpt(1, HITS[0], text)], QUESTION, count=1)
    assert quoted.endswith("run: foundry service status") and number == 1


def test_an_answer_whose_number_comes_from_another_paragraph_is_not_drawn_from_the_best():
    excerpts = select_context(HITS, QUESTION, budget_tokens=1000)
    assert drawn_from_best("Foundry Local usually listens on port 5273.", QUESTION, excerpts) == 1.0
    assert drawn_from_best("8001.", QUESTION, excerpts) == 0.0
