"""Copy answers: a model chooses the passage sentence that answers, shown word for word and checked."""

from __future__ import annotations

from dataclasses import replace

from answering.attempts import AttemptStart
from answering.context import whole_chunks
from answering.copying import OTHER_SCRIPT_LIKELIHOOD, Candidate, Choice, candidates, emphasised
from answering.pipeline import TurnConfig, TurnDone, TurnRequest, run_turn
from answering.router import Mode, Thresholds
from models.base import GenerationParams, TokenEvent
from models.catalog import ModelSpec
from rag.documents import Chunk, Document, Hit
from rag.index import KnowledgeBase, SharedCorpus
from tests.fakes import CopyingBackend, ScriptedBackend

SMALL = ModelSpec("fake:small", "fake", "small", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)

FOUNDRY = (
    "# Foundry Local\n\nFoundry Local usually listens on port 5273.\n\n"
    "Set FOUNDRY_LOCAL_ENDPOINT to the URL that the service prints."
)
HANDBOOK = KnowledgeBase(SharedCorpus([Document("foundry", "Foundry Local", "foundry.md", FOUNDRY)]), 1500, 0)
COPYING = TurnConfig(
    Thresholds(min_answer_tokens=0, min_low_token_prob=0.0, min_retrieval_score=0.0),
    min_retrieval_score=0.0,  # every question is in scope here
    answer_styles={"fake": "copy"},
)
QUESTION = "How do I point the app at Foundry Local?"


async def turn(backend: CopyingBackend, config: TurnConfig = COPYING, mode: Mode = Mode.OFF, **choices) -> list:
    request = TurnRequest(
        choices.pop("question", QUESTION),
        HANDBOOK,
        SMALL,
        LARGE,
        params=GenerationParams(max_tokens=16),
        router_mode=mode,
        **choices,
    )
    return [event async for event in run_turn(request, {"fake": backend}, config)]


def done(events: list) -> TurnDone:
    assert isinstance(events[-1], TurnDone)
    return events[-1]


async def test_a_copying_model_answers_with_the_passage_sentence_it_chose_word_for_word():
    backend = CopyingBackend({}, {"small": "FOUNDRY_LOCAL_ENDPOINT"})

    events = await turn(backend)

    final = done(events).final
    assert final.source == "slm" and final.copied
    assert final.text == "Set FOUNDRY_LOCAL_ENDPOINT to the URL that the service prints. [1]"
    assert final.evidence == ""  # the answer is the passage's own sentence
    assert backend.log == ["score small"]  # chosen, not written
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == final.text  # and still streamed


async def test_the_models_likelihood_decides_between_sentences_that_match_alike():
    backend = CopyingBackend({}, {"small": "5273"})

    final = done(await turn(backend)).final

    assert final.text == "Foundry Local usually listens on port 5273. [1]"


async def test_auto_writes_first_and_chooses_a_sentence_when_what_it_wrote_is_cut():
    backend = CopyingBackend({"small": ["Set ", "OLLAMA_HOST ", "to ", "it."]}, {"small": "FOUNDRY_LOCAL_ENDPOINT"})
    auto = replace(COPYING, answer_styles={"fake": "auto"})

    events = await turn(backend, auto)

    result = done(events)
    assert [e.copying for e in events if isinstance(e, AttemptStart)] == [False, True]
    assert result.final.copied and "FOUNDRY_LOCAL_ENDPOINT" in result.final.text
    assert result.slm_answer is not None and result.slm_answer.written is not None
    assert [cut.text.strip() for cut in result.final.cuts] == ["Set OLLAMA_HOST to it."]


async def test_auto_keeps_a_written_answer_that_stands():
    backend = CopyingBackend(
        {"small": ["Set ", "FOUNDRY_LOCAL_ENDPOINT ", "to ", "the ", "URL ", "the ", "service ", "prints ", "[1]."]},
        {"small": "5273"},
    )

    final = done(await turn(backend, replace(COPYING, answer_styles={"fake": "auto"}))).final

    assert final.source == "slm" and not final.copied and backend.log == ["start small", "end small"]


async def test_a_hesitant_choice_escalates_and_the_large_model_chooses_again():
    backend = CopyingBackend({}, {"small": "port", "large": "FOUNDRY_LOCAL_ENDPOINT"})
    hesitant = replace(COPYING, thresholds=Thresholds(0, 0.0, 0.0, min_copy_margin=10.0))

    result = done(await turn(backend, hesitant, mode=Mode.ESCALATE))

    assert [reason.signal for reason in result.decision.reasons] == ["copy_margin"]
    assert result.final.source == "llm" and "FOUNDRY_LOCAL_ENDPOINT" in result.final.text


async def test_a_chosen_sentence_without_the_number_asked_for_is_not_the_answer():
    backend = CopyingBackend({}, {"small": "FOUNDRY_LOCAL_ENDPOINT"})

    result = done(await turn(backend, question="On which port does Foundry Local listen?"))

    # The ranking puts the sentence with a number first, and the model's liking cannot outweigh it.
    assert result.final.text == "Foundry Local usually listens on port 5273. [1]"


async def test_a_sentence_under_which_the_model_finds_the_question_unlikely_is_quoted_not_answered():
    backend = CopyingBackend({}, {"small": "nothing of these"}, otherwise=-5.0)

    result = done(await turn(backend))

    assert result.final.source == "quotes" and not result.final.copied
    assert result.slm_answer is not None and result.slm_answer.copied


async def test_a_backend_that_cannot_score_writes_its_answer_in_the_copy_style():
    # As server backends: no reply_likelihoods.
    backend = ScriptedBackend({"small": ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "5273."]})
    request = TurnRequest("On which port does Foundry Local listen?", HANDBOOK, SMALL, LARGE, router_mode=Mode.OFF)

    final = done([event async for event in run_turn(request, {"fake": backend}, COPYING)]).final

    assert final.source == "slm" and not final.copied


def test_a_sentence_without_the_name_asked_for_is_not_the_first_candidate():
    text = "The service prints its endpoint.\n\nThe app reads its endpoint from `MODEL_SERVER_URL`."
    hit = Hit(Chunk(Document("s", "Servers", "s.md", text), 0, text), 0.9, 1)

    # Both sentences match "endpoint" alike; only a name answers "which setting".
    found = candidates(whole_chunks([hit]), "Which setting holds the endpoint?")

    assert found[0].text == "The app reads its endpoint from `MODEL_SERVER_URL`."


def test_a_cross_script_questions_sentences_in_the_latin_script_are_marked_as_another_script():
    english = "Foundry Local usually listens on port 5273."
    telugu = "ఫౌండ్రీ లోకల్ సాధారణంగా 5273 పోర్ట్‌లో వింటుంది."
    hits = [
        Hit(Chunk(Document(name, name, f"{name}.md", text), 0, text), 0.9, rank)
        for rank, (name, text) in enumerate([("en", english), ("te", telugu)], start=1)
    ]
    question = "ఫౌండ్రీ లోకల్ ఏ port లో వింటుంది?"

    across = {c.text: c.other_script for c in candidates(whole_chunks(hits), question, cross=True)}
    alike = {c.text: c.other_script for c in candidates(whole_chunks(hits), question)}

    assert across == {english: True, telugu: False}
    assert alike == {english: False, telugu: False}


def test_a_sentence_in_another_script_is_weighed_with_its_likelihood_levelled():
    # A question is less likely under a sentence in another script, however well it answers.
    own = Candidate("ఫౌండ్రీ లోకల్ ఒక సర్వీస్.", 1, 0.8, -3.2)
    other = Candidate("Foundry Local usually listens on port 5273.", 2, 0.8, -4.3, other_script=True)

    assert other.levelled == -4.3 + OTHER_SCRIPT_LIKELIHOOD
    assert Choice(tuple(sorted((own, other), key=lambda c: -c.score))).chosen is other


def test_a_table_row_is_a_candidate_under_its_column_names_and_its_header_never_is():
    table = "| Variable | Default | Meaning |\n|---|---|---|\n| `TEMPERATURE` | `0.0` | Sampling temperature. |"
    hit = Hit(Chunk(Document("c", "Configuration", "c.md", table), 0, table, ("Configuration",)), 0.9, 1)

    found = candidates(whole_chunks([hit]), "What is the default temperature?")

    assert [c.text for c in found] == ["Variable: `TEMPERATURE` · Default: `0.0` · Meaning: Sampling temperature."]


def test_the_question_words_are_bold_outside_code_and_markers():
    text = emphasised("Set `port` to the port Foundry Local prints [1].", "Which port does Foundry Local print?")

    assert text == "Set `port` to the **port Foundry Local prints** [1]."


def test_the_margin_is_how_far_the_choice_leads():
    choice = Choice((Candidate("a", 1, 0.9, -1.0), Candidate("b", 1, 0.5, -2.0)))

    assert round(choice.margin, 2) == round((0.9 - 0.12) - (0.5 - 0.24), 2)
