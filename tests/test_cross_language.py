"""Telugu questions about English passages: found by sound and meaning, answered through the real
pipeline and the real embedding model; and answers in the user's language, marked and checked."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import pytest

from answering.context import Meaning, embedded_units, select_context
from answering.cross_script import fused_hits, glossary_terms, glossed, in_passage_words, is_cross_script
from answering.pipeline import Retrieved, SentenceCut, TurnConfig, TurnDone, TurnRequest, run_turn
from answering.prompt import IN_THE_QUESTIONS_LANGUAGE, build_messages
from answering.reply import TRANSLATION_NOTE, reply_for
from answering.router import Mode, Thresholds
from models.base import GenerationParams
from models.catalog import ModelSpec
from models.embedded import EmbeddedBackend
from rag.documents import Chunk, Document, Hit
from rag.embedding import DEFAULT_EMBEDDER, Closeness, Vectors
from rag.index import KnowledgeBase, SharedCorpus
from tests.fakes import CopyingBackend, ScriptedBackend

SERVER = ModelSpec("fake:server", "fake", "server", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)

HANDBOOK = KnowledgeBase(
    SharedCorpus(
        [
            Document(
                "sessions",
                "Sessions",
                "sessions.md",
                "# Sessions\n\nWhen a browser tab is closed, its session and uploads stay in memory for 120 seconds.",
            ),
            Document(
                "python",
                "Requirements",
                "requirements.md",
                "# Requirements\n\nThe assistant needs Python version 3.11 or newer, and a C compiler.",
            ),
            Document(
                "latency",
                "The latency panel",
                "latency.md",
                "# The latency panel\n\nThe latency panel shows how long each phase of an answer took.",
            ),
        ]
    ),
    chunk_size=1500,
    chunk_overlap=0,
)

# The real embedding model (multilingual-e5-small), as the app ranks by meaning, with the
# passages' sentences embedded ahead as the app does at start-up.
CLOSENESS = Closeness()
CLOSENESS.embed_ahead([*embedded_units(HANDBOOK.passages("bm25")), *glossary_terms(HANDBOOK.passages("bm25"))])
CONFIG = TurnConfig(
    Thresholds(min_answer_tokens=0, min_low_token_prob=0.0, min_retrieval_score=0.0),
    min_retrieval_score=0.2,
    meaning=Meaning(CLOSENESS),
)
# "Which Python version is needed?"
PYTHON_QUESTION = "ఏ పైథాన్ వెర్షన్ అవసరం?"
# "How many seconds does the session of a closed browser tab stay in memory?"
SESSION_QUESTION = "బ్రౌజర్ ట్యాబ్ మూసేశాక సెషన్ ఎన్ని సెకన్లు మెమరీలో ఉంటుంది?"


async def turn(backend: ScriptedBackend, question: str, **choices: object) -> list[object]:
    request = TurnRequest(
        question, HANDBOOK, SERVER, LARGE, params=GenerationParams(max_tokens=32), router_mode=Mode.OFF, **choices
    )
    return [event async for event in run_turn(request, {"fake": backend}, CONFIG)]


def done(events: list[object]) -> TurnDone:
    last = events[-1]
    assert isinstance(last, TurnDone)
    return last


def test_a_telugu_word_written_from_english_is_searched_as_the_english_word() -> None:
    assert in_passage_words(PYTHON_QUESTION, HANDBOOK, "bm25") == "ఏ python version అవసరం?"


def test_a_telugu_word_whose_stem_a_passage_holds_keeps_it() -> None:
    # "ప్రాసెస్‌ల" (of processes) is "ప్రాసెస్" + "ల": a Telugu page holds the first, and it stays
    # searched as written rather than as its English sound-alike alone.
    pages = KnowledgeBase(
        SharedCorpus(
            [
                Document("te", "అప్‌లోడ్లు", "te/uploads.md", "ఫైళ్లను వేరే reader ప్రాసెస్ చదువుతుంది."),
                Document("en", "Uploads", "uploads.md", "A file that crashes its reader process is refused."),
            ]
        ),
        chunk_size=1500,
        chunk_overlap=0,
    )

    assert in_passage_words("reader ప్రాసెస్‌ల సంఖ్య?", pages, "bm25") == "reader ప్రాసెస్‌ల సంఖ్య?"
    assert in_passage_words("reader ప్రాసెస్‌ల సంఖ్య?", pages, "bm25", every=True) == "reader process సంఖ్య?"


def test_a_telugu_word_of_telugu_origin_is_searched_as_the_english_word_it_means() -> None:
    # "How long did each phase take?": దశ (phase) sounds like no English word.
    assert "phase" in glossed("ప్రతి దశకు ఎంత సమయం పట్టింది?", HANDBOOK, "bm25", Meaning(CLOSENESS))


def test_only_a_question_mostly_in_another_script_takes_the_cross_script_path() -> None:
    assert is_cross_script(PYTHON_QUESTION)
    assert not is_cross_script("Which Python version is needed for SmolLM2?")


@pytest.mark.asyncio
async def test_a_telugu_question_about_an_english_passage_is_answered_from_it() -> None:
    backend = ScriptedBackend({"server": ["A browser tab's ", "session stays ", "for 120 seconds [1]."]})
    events = await turn(backend, SESSION_QUESTION)
    retrieved = next(event for event in events if isinstance(event, Retrieved))
    assert retrieved.hits[0].chunk.document.id == "sessions"
    assert done(events).final.source == "slm"
    assert "120 seconds" in done(events).final.text


@pytest.mark.asyncio
async def test_a_telugu_question_nothing_covers_is_told_so() -> None:
    backend = ScriptedBackend({"server": ["Cook it slowly."]})
    events = await turn(backend, "ఆవకాయ పచ్చడి ఎలా పెట్టాలి?")  # "How is mango pickle made?"
    assert done(events).final.source == "out_of_scope"
    assert "start server" not in backend.log


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("question", "name"),
    [
        ("వాట్సాప్‌లో ఈ అసిస్టెంట్‌ను అడగవచ్చా?", "వాట్సాప్"),  # "Can I ask this assistant on WhatsApp?"
        ("Slack ఛానల్ నుంచి ఈ అసిస్టెంట్‌ను అడగవచ్చా?", "Slack"),  # "Can I ask it from a Slack channel?"
    ],
)
async def test_a_telugu_question_naming_or_borrowing_what_no_passage_mentions_is_told_so(
    question: str, name: str
) -> None:
    backend = ScriptedBackend({"server": ["Yes [1]."]})
    events = await turn(backend, question)
    final = done(events).final
    assert final.source == "out_of_scope"
    assert f"never mention {name}" in final.text
    assert "start server" not in backend.log


@pytest.mark.asyncio
async def test_an_answer_in_the_users_language_is_marked_and_quotes_the_passage() -> None:
    # "Python 3.11 or newer is needed [1]."
    backend = ScriptedBackend({"server": ["Python 3.11 ", "లేదా కొత్తది ", "అవసరం [1]."]})
    events = await turn(backend, PYTHON_QUESTION, answer_in_language=True)
    final = done(events).final
    assert final.translated and final.source == "slm"
    assert IN_THE_QUESTIONS_LANGUAGE in backend.prompts["server"][0].content
    body = reply_for(done(events)).body
    assert body.startswith("Python 3.11 లేదా కొత్తది అవసరం [1].")
    assert TRANSLATION_NOTE in body
    assert "> The assistant needs Python version 3.11 or newer, and a C compiler. [" in body


@pytest.mark.asyncio
async def test_a_number_changed_in_a_translated_answer_is_cut() -> None:
    # "Python 3.9 is enough [1]." The passage says 3.11.
    backend = ScriptedBackend({"server": ["Python 3.9 ", "సరిపోతుంది [1]."]})
    events = await turn(backend, PYTHON_QUESTION, answer_in_language=True)
    assert any(isinstance(event, SentenceCut) for event in events)
    assert "3.9" not in reply_for(done(events)).body


# A Telugu paragraph of the kind a user uploads: one long sentence, many of SmolLM2's tokens.
TELUGU_PARAGRAPH = (
    "అప్‌లోడ్ చేసిన ప్రతి ఫైల్ ఆ చాట్‌కు మాత్రమే కనిపిస్తుంది, ఇతర చాట్‌లు దానిని చూడలేవు, "
    "బ్రౌజర్ ట్యాబ్ మూసిన తర్వాత 120 సెకన్ల వరకు అది మెమరీలో ఉంటుంది, ఆ తర్వాత తొలగిపోతుంది, "
    "కాబట్టి మళ్లీ అవసరమైతే ఫైల్‌ను మళ్లీ జత చేయాలి."
)


def test_an_embedded_model_counts_a_telugu_passage_in_its_own_tokens(embedded: EmbeddedBackend) -> None:
    tokens = embedded.count_tokens("smollm2-135m", TELUGU_PARAGRAPH)
    # SmolLM2's English vocabulary spends a few tokens on each Telugu letter; the old estimate
    # (a token for three characters) would have counted a tenth of that.
    assert tokens > 2 * len(TELUGU_PARAGRAPH)


def test_a_telugu_passage_over_the_budget_is_cut_to_fit_it(embedded: EmbeddedBackend) -> None:
    count = functools.partial(embedded.count_tokens, "smollm2-135m")
    hit = Hit(Chunk(Document("te", "ఫైళ్లు", "te.md", TELUGU_PARAGRAPH), 0, TELUGU_PARAGRAPH), 1.0, 1)
    [excerpt] = select_context([hit], "ఫైల్ ఎంతసేపు ఉంటుంది?", 200, count)
    assert excerpt.text.endswith("…") and TELUGU_PARAGRAPH.startswith(excerpt.text[:-1])
    assert count(excerpt.text) + count(excerpt.label) + 4 <= 200


def test_a_prompt_of_telugu_passages_fits_the_models_context_window(embedded: EmbeddedBackend) -> None:
    count = functools.partial(embedded.count_tokens, "smollm2-135m")
    hits = [
        Hit(Chunk(Document(f"te-{n}", "ఫైళ్లు", f"te-{n}.md", TELUGU_PARAGRAPH * 4), 0, TELUGU_PARAGRAPH * 4), 1.0, n)
        for n in range(1, 6)
    ]
    excerpts = select_context(hits, "ఫైల్ ఎంతసేపు ఉంటుంది?", 230, count)
    messages = build_messages("ఫైల్ ఎంతసేపు ఉంటుంది?", [], excerpts, embedded.context_window, 256, count)
    assert sum(count(message.content) for message in messages) + 256 <= embedded.context_window


class CountingEmbedder:
    """The real embedding model, counting the passages it is asked to embed."""

    def __init__(self) -> None:
        self.name, self.dimensions, self.passages_embedded = DEFAULT_EMBEDDER.name, DEFAULT_EMBEDDER.dimensions, 0

    def passages(self, texts: Sequence[str]) -> Vectors:
        self.passages_embedded += len(texts)
        return DEFAULT_EMBEDDER.passages(texts)

    def query(self, text: str) -> Vectors:
        return DEFAULT_EMBEDDER.query(text)


def test_a_question_asked_before_the_sentences_are_embedded_does_not_wait_for_them() -> None:
    embedder = CountingEmbedder()
    meaning = Meaning(Closeness(embedder), everywhere=True)
    hits = fused_hits(in_passage_words(SESSION_QUESTION, HANDBOOK, "bm25"), HANDBOOK, "bm25", 3, meaning)
    assert embedder.passages_embedded == 0
    assert hits[0].chunk.document.id == "sessions"  # by its words alone: browser, session, memory


@pytest.mark.asyncio
async def test_a_chosen_list_item_is_checked_whole_not_cut_after_its_number() -> None:
    # Checked as two sentences, "1." and the rest, the rest was cut as off topic: Telugu
    # inflects what the question and the passage share ("తెరవాలి", "తెరవండి": open).
    page = KnowledgeBase(
        SharedCorpus(
            [
                Document(
                    "te",
                    "మొదలుపెట్టడం",
                    "te.md",
                    "# మొదలుపెట్టడం\n\n## యాప్ ప్రారంభించాక మొదటి ప్రశ్న అడగడం\n\n1. బ్రౌజర్‌లో http://localhost:8000 తెరవండి.\n"
                    "2. మొదటి సందేశం knowledge base లో ఎన్ని పత్రాలు ఉన్నాయో చెబుతుంది.\n",
                )
            ]
        ),
        chunk_size=1500,
        chunk_overlap=0,
    )
    CLOSENESS.embed_ahead(embedded_units(page.passages("bm25")))
    backend = CopyingBackend({"server": [], "large": []}, favourites={"server": "8000", "large": "8000"})
    # "Which address should I open in the browser after starting the app for the first time?"
    question = "మొదటిసారి యాప్ ప్రారంభించాక బ్రౌజర్‌లో ఏ చిరునామా తెరవాలి?"
    request = TurnRequest(question, page, SERVER, LARGE, router_mode=Mode.OFF, answer_style="copy")
    events = [event async for event in run_turn(request, {"fake": backend}, CONFIG)]
    assert not any(isinstance(event, SentenceCut) for event in events)
    final = done(events).final
    assert final.source == "slm" and final.text.startswith("1. బ్రౌజర్‌లో http://localhost:8000")
