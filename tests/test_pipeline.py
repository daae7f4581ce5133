"""One turn through the pipeline with fake models: who answers, what is checked, what the user is left with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from answering.attempts import Answer
from answering.context import Meaning
from answering.grounding import GuardMode
from answering.pipeline import Notice, Retrieved, SentenceCut, TurnConfig, TurnDone, TurnRequest, run_turn
from answering.router import Mode, Thresholds
from models.base import BackendError, GenerationParams
from models.catalog import ModelSpec
from rag.documents import Document, Hit
from rag.index import KnowledgeBase, SharedCorpus
from tests.fakes import ScriptedBackend

SMALL = ModelSpec("fake:small", "fake", "small", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)
FALLBACK = ModelSpec("fake:fallback", "fake", "fallback", 4096)

HANDBOOK = KnowledgeBase(
    SharedCorpus(
        [
            Document(
                "ports",
                "Foundry Local",
                "foundry.md",
                "# Foundry Local\n\nFoundry Local usually listens on port 5273.\n\n"
                "Set FOUNDRY_LOCAL_ENDPOINT to the URL that the service prints.",
            ),
            Document(
                "sessions",
                "Sessions",
                "sessions.md",
                "# Sessions\n\nA closed tab's session stays in memory for 120 seconds.",
            ),
        ]
    ),
    chunk_size=1500,
    chunk_overlap=0,
)

CONFIG = TurnConfig(
    Thresholds(min_answer_tokens=0, min_low_token_prob=0.0, min_retrieval_score=0.0), min_retrieval_score=0.3
)
PORT_QUESTION = "On which port does Foundry Local listen?"


async def turn(backend: ScriptedBackend, mode: Mode = Mode.ESCALATE, question: str = PORT_QUESTION, **choices) -> list:
    request = TurnRequest(
        question, HANDBOOK, SMALL, LARGE, FALLBACK, params=GenerationParams(max_tokens=16), router_mode=mode, **choices
    )
    return [event async for event in run_turn(request, {"fake": backend}, CONFIG)]


def done(events: list) -> TurnDone:
    assert isinstance(events[-1], TurnDone)
    return events[-1]


def failing_large_model(small: list[str]) -> ScriptedBackend:
    return ScriptedBackend(
        {
            "small": small,
            "large": BackendError("The model server broke off", "http://127.0.0.1:9/v1"),
            "fallback": ["Foundry Local ", "listens on port 5273."],
        }
    )


async def test_a_supported_small_answer_stands_without_escalation():
    backend = ScriptedBackend({"small": ["Foundry Local ", "usually listens ", "on port 5273 [1]."]})

    result = done(await turn(backend))

    assert not result.decision.escalate
    assert result.final.source == "slm" and result.final.text == "Foundry Local usually listens on port 5273 [1]."


async def test_an_invented_number_is_cut_the_model_stopped_and_the_turn_escalates():
    backend = ScriptedBackend(
        {
            "small": ["Foundry Local listens on port 8001. ", "Then ", "more ", "text."],
            "large": ["Foundry Local ", "usually listens on port 5273 [1]."],
        }
    )

    events = await turn(backend)

    [cut] = [event for event in events if isinstance(event, SentenceCut)]
    assert cut.model == SMALL and cut.stopped and "8001" in cut.cut.reason
    assert "end small" not in backend.log  # the small model's stream was closed early
    result = done(events)
    assert result.slm_answer.finish_reason == "guard"
    assert result.decision.escalate
    assert any(reason.signal == "unsupported_share" for reason in result.decision.reasons)
    assert result.final.source == "llm" and "5273" in result.final.text


async def test_when_no_answer_is_supported_the_user_gets_quotes_from_the_passages():
    backend = ScriptedBackend(
        {
            "small": ["It listens on port 8001."],
            "large": ["It listens on port 9000."],
        }
    )

    events = await turn(backend)

    result = done(events)
    assert result.final.source == "quotes"
    # One sentence, the question's words in bold; the next one for "How this answer was made".
    assert result.final.text == "> **Foundry Local** usually **listens** on **port** 5273. [1]"
    assert result.final.more == ("> Set FOUNDRY_LOCAL_ENDPOINT to the URL that the service prints. [1]",)
    assert any(isinstance(e, Notice) and e.kind == "unsupported" for e in events)


async def test_the_draft_and_the_escalated_answer_read_the_same_numbered_passages():
    backend = ScriptedBackend({"small": ["It listens on port 8001."], "large": ["Port 5273 [1]."]})

    events = await turn(backend, mode=Mode.DRAFT_REFINE)

    [retrieved] = [e for e in events if isinstance(e, Retrieved)]
    assert [e.number for e in retrieved.excerpts] == [1]
    assert done(events).excerpts == tuple(retrieved.excerpts)


async def test_a_model_with_a_smaller_budget_reads_less_and_is_checked_against_what_it_read():
    backend = ScriptedBackend(
        {
            "small": ["Set FOUNDRY_LOCAL_ENDPOINT [1]."],  # in the passage, but not in what the small model read
            "large": ["Foundry Local ", "usually listens on port 5273 [1]."],
        }
    )
    config = replace(CONFIG, model_context_budgets={"small": 1})

    events = [
        event async for event in run_turn(TurnRequest(PORT_QUESTION, HANDBOOK, SMALL, LARGE), {"fake": backend}, config)
    ]

    small_prompt = "".join(message.content for message in backend.prompts["small"])
    large_prompt = "".join(message.content for message in backend.prompts["large"])
    assert "5273" in small_prompt and "FOUNDRY_LOCAL_ENDPOINT" not in small_prompt
    assert "FOUNDRY_LOCAL_ENDPOINT" in large_prompt
    [cut] = [event for event in events if isinstance(event, SentenceCut)]
    assert cut.model == SMALL and "FOUNDRY_LOCAL_ENDPOINT" in cut.cut.reason
    [retrieved] = [e for e in events if isinstance(e, Retrieved)]
    assert "FOUNDRY_LOCAL_ENDPOINT" in retrieved.excerpts[0].text  # the page shows the most any model read
    assert done(events).final.source == "llm"


async def test_an_answer_without_the_number_the_question_asks_for_escalates():
    backend = ScriptedBackend(
        {
            "small": ["Set FOUNDRY_LOCAL_ENDPOINT to the URL that the service prints [1]."],
            "large": ["Foundry Local usually listens on port 5273 [1]."],
        }
    )

    result = done(await turn(backend))  # "On which port does Foundry Local listen?"

    assert [reason.signal for reason in result.decision.reasons] == ["no_number"]
    assert result.final.source == "llm" and "5273" in result.final.text


async def test_a_question_the_documents_do_not_cover_gets_no_model_answer():
    backend = ScriptedBackend({"small": ["Germany."], "large": ["The United States."]})

    events = await turn(backend, question="Who won the 2018 football world cup?")

    assert backend.log == []
    assert any(isinstance(e, Notice) and e.kind == "out_of_scope" for e in events)
    assert done(events).final.source == "out_of_scope"


async def test_a_question_naming_something_no_passage_mentions_is_out_of_scope():
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273."]})

    events = await turn(backend, question="Which port does Foundry Local use for Slack or Okta?")

    assert backend.log == []
    final = done(events).final
    assert final.source == "out_of_scope"
    assert final.text.startswith("The documents never mention Slack or Okta, so they do not cover this question.")


async def test_with_no_retrieval_threshold_a_question_naming_an_unknown_thing_is_answered():
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273."]})
    request = TurnRequest("Which port does Foundry Local use for Slack?", HANDBOOK, SMALL, LARGE, router_mode=Mode.OFF)

    answer_everything = replace(CONFIG, min_retrieval_score=0)

    final = done([event async for event in run_turn(request, {"fake": backend}, answer_everything)]).final

    assert final.source == "slm"


async def test_a_name_that_begins_a_word_of_the_passages_is_mentioned():
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273."]})

    events = await turn(backend, mode=Mode.OFF, question="On which port does Foundry listen?")

    assert done(events).final.source == "slm"


async def test_a_general_knowledge_answer_is_given_only_when_asked_and_is_labelled():
    backend = ScriptedBackend({"small": ["Germany."], "large": ["France won it."]})

    events = await turn(backend, question="Who won the 2018 football world cup?", general_knowledge=True)

    assert any(isinstance(e, Notice) and e.kind == "general_knowledge" for e in events)
    assert done(events).final.source == "general" and done(events).final.text == "France won it."


async def test_with_the_guard_off_an_unsupported_answer_is_shown_as_written():
    backend = ScriptedBackend({"small": ["It listens on port 8001."], "large": ["It listens on port 9000."]})

    result = done(await turn(backend, mode=Mode.OFF, guard=GuardMode.OFF))

    assert result.final.source == "slm" and result.final.text == "It listens on port 8001."


async def test_a_failed_escalation_keeps_the_small_models_supported_answer():
    backend = failing_large_model(["Port ", "5273 ", "[1]."])

    result = done(await turn(backend, mode=Mode.ALWAYS_LLM))

    assert result.slm_answer is None
    assert isinstance(result.llm_answer, Answer) and result.llm_answer.model == FALLBACK
    assert result.final.text == "Foundry Local listens on port 5273."


async def test_a_failed_large_model_leaves_the_small_answer_standing():
    backend = failing_large_model(["Foundry Local ", "listens on port 5273."])
    request = TurnRequest(PORT_QUESTION, HANDBOOK, SMALL, LARGE, FALLBACK, params=GenerationParams(max_tokens=16))
    always_unsure = TurnConfig(Thresholds(min_answer_tokens=100), min_retrieval_score=0.3)

    result = done([event async for event in run_turn(request, {"fake": backend}, always_unsure)])

    assert result.decision.escalate and result.llm_answer.error
    assert result.final.source == "slm" and result.final.text == "Foundry Local listens on port 5273."
    assert "start fallback" not in backend.log


async def test_a_supported_answer_taken_from_a_passage_the_question_does_not_point_to_is_not_the_answer():
    knowledge = KnowledgeBase(
        SharedCorpus(
            [
                Document(
                    "ports",
                    "Foundry Local",
                    "foundry.md",
                    "Foundry Local usually listens on port 5273. Foundry Local prints its port with its status "
                    "command. Foundry Local needs the port in the endpoint setting.",
                ),
                Document(
                    "sessions",
                    "Foundry Local sessions",  # names what the question names, unlike its sentences
                    "sessions.md",
                    "Port numbers are not kept in a session. A closed tab's session stays in memory for 120 seconds.",
                ),
            ]
        ),
        chunk_size=1500,
        chunk_overlap=0,
    )
    # Every word of the small answer is in the passages, but in the one about sessions.
    backend = ScriptedBackend(
        {
            "small": ["A closed tab's session stays in memory for 120 seconds."],
            "large": ["Foundry Local usually listens on port 5273 [1]."],
        }
    )
    request = TurnRequest(PORT_QUESTION, knowledge, SMALL, LARGE, FALLBACK, params=GenerationParams(max_tokens=16))

    result = done([event async for event in run_turn(request, {"fake": backend}, CONFIG)])

    assert result.slm_answer.checked.cuts == []  # supported, sentence by sentence
    assert [reason.signal for reason in result.decision.reasons] == ["drawn_from_best"]
    assert result.final.source == "llm"


async def test_an_answer_that_only_repeats_the_question_escalates():
    backend = ScriptedBackend({"small": ["Foundry Local listens on a port."], "large": ["Port 5273 [1]."]})

    result = done(await turn(backend))

    assert any(reason.signal == "restates_question" for reason in result.decision.reasons)
    assert result.final.source == "llm"


async def test_a_small_answer_the_router_doubted_does_not_stand_when_the_large_answer_is_unsupported():
    backend = ScriptedBackend(
        {"small": ["Foundry Local ", "listens on port 5273."], "large": ["It listens on port 9000."]}
    )
    request = TurnRequest(PORT_QUESTION, HANDBOOK, SMALL, LARGE, FALLBACK, params=GenerationParams(max_tokens=16))
    always_unsure = TurnConfig(Thresholds(min_answer_tokens=100), min_retrieval_score=0.3)

    result = done([event async for event in run_turn(request, {"fake": backend}, always_unsure)])

    assert result.decision.escalate and result.llm_answer.checked.cuts
    assert result.final.source == "quotes"


class WeakMatch:
    """Knowledge whose every chunk matches the question weakly, or not at all (`hits=False`)."""

    def __init__(self, hits: bool = True, score: float = 0.05) -> None:
        self.hits = hits
        self.score = score

    def search(self, query: str, mode: str, k: int) -> list[Hit]:
        found = HANDBOOK.search("Foundry Local port sessions memory", mode, 10) if self.hits else []
        return [Hit(hit.chunk, self.score, hit.rank) for hit in found]

    def mentions(self, word: str, mode: str) -> bool:
        return True


async def test_text_the_user_gave_is_never_out_of_scope_and_is_read_whole_when_it_fits():
    backend = ScriptedBackend({"small": ["A closed tab's session stays in memory for 120 seconds."]})
    request = TurnRequest("Summarise this.", WeakMatch(), SMALL, LARGE, router_mode=Mode.OFF, given_context=True)

    events = [event async for event in run_turn(request, {"fake": backend}, CONFIG)]

    assert not any(isinstance(e, Notice) for e in events)
    [retrieved] = [e for e in events if isinstance(e, Retrieved)]
    read = " ".join(excerpt.text for excerpt in retrieved.excerpts)
    assert "port 5273" in read and "120 seconds" in read and "FOUNDRY_LOCAL_ENDPOINT" in read
    # The question points to no sentence in particular: a supported answer from any of them stands.
    assert done(events).final.source == "slm"


async def test_the_same_weak_match_is_out_of_scope_in_the_chat():
    backend = ScriptedBackend({"small": ["Anything."]})
    request = TurnRequest("Summarise this.", WeakMatch(), SMALL, LARGE)

    events = [event async for event in run_turn(request, {"fake": backend}, CONFIG)]

    assert done(events).final.source == "out_of_scope" and backend.log == []


async def test_with_nothing_found_a_general_knowledge_answer_is_given_even_without_a_threshold():
    backend = ScriptedBackend({"large": ["France won it."]})
    request = TurnRequest(
        "Who won the 2018 football world cup?", WeakMatch(hits=False), SMALL, LARGE, general_knowledge=True
    )
    no_threshold = TurnConfig(CONFIG.thresholds, min_retrieval_score=0.0)

    events = [event async for event in run_turn(request, {"fake": backend}, no_threshold)]

    assert done(events).final.source == "general" and backend.log == ["start large", "end large"]


async def test_a_near_miss_is_out_of_scope_but_quotes_what_the_documents_say_closest():
    backend = ScriptedBackend({"small": ["Anything."]})
    near = CONFIG.min_retrieval_score * 0.9
    request = TurnRequest("How long does a closed tab's session stay?", WeakMatch(score=near), SMALL, LARGE)

    final = done([event async for event in run_turn(request, {"fake": backend}, CONFIG)]).final

    assert final.source == "out_of_scope" and backend.log == []
    assert final.text.startswith("The documents do not seem to cover this question")
    assert "> A **closed tab's session stays** in memory for 120 seconds. [" in final.text


async def test_a_far_miss_quotes_nothing():
    request = TurnRequest("How long does a closed tab's session stay?", WeakMatch(score=0.05), SMALL, LARGE)

    final = done([event async for event in run_turn(request, {"fake": ScriptedBackend({})}, CONFIG)]).final

    assert final.text.startswith("The documents do not cover this question") and ">" not in final.text


async def test_a_model_answer_comes_with_the_passage_sentence_it_is_drawn_from():
    backend = ScriptedBackend({"small": ["It ", "listens ", "on ", "port ", "5273 ", "[1]."]})

    final = done(await turn(backend, mode=Mode.OFF)).final

    assert final.text == "It listens on port 5273 [1]."
    assert final.evidence == "> Foundry Local usually listens on port 5273. [1]"


async def test_an_answer_that_copies_its_passage_sentence_gets_no_evidence_under_it():
    backend = ScriptedBackend({"small": ["Foundry ", "Local ", "usually ", "listens ", "on ", "port ", "5273."]})

    final = done(await turn(backend, mode=Mode.OFF)).final

    assert final.source == "slm" and final.evidence == ""


async def test_a_bare_term_is_checked_against_the_question_it_answers():
    # FOUNDRY_LOCAL_ENDPOINT is in the passages, but not as the answer to "which port?".
    backend = ScriptedBackend({"small": ["`FOUNDRY_LOCAL_ENDPOINT`"], "large": ["Port 5273 [1]."]})

    result = done(await turn(backend))

    assert result.decision.escalate
    assert result.final.source == "llm" and result.final.text == "Port 5273 [1]."


class ConstantCloseness:
    """Every passage sentence is this close in meaning to every question."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, question: str, texts: Sequence[str]) -> list[float]:
        return [self.value] * len(texts)


async def test_a_question_no_passage_sentence_comes_close_to_in_meaning_is_out_of_scope_with_quotes():
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273."]})
    request = TurnRequest(PORT_QUESTION, HANDBOOK, SMALL, LARGE, router_mode=Mode.OFF)
    far = replace(CONFIG, meaning=Meaning(ConstantCloseness(0.7)), min_closeness=0.82)

    final = done([event async for event in run_turn(request, {"fake": backend}, far)]).final

    assert final.source == "out_of_scope" and not backend.prompts
    assert "no passage sentence comes close to it in meaning: 0.70, below 0.82" in final.text
    assert "> **Foundry Local** usually **listens** on **port** 5273. [1]" in final.text


async def test_a_question_a_passage_sentence_comes_close_to_is_answered():
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273."]})
    request = TurnRequest(PORT_QUESTION, HANDBOOK, SMALL, LARGE, router_mode=Mode.OFF)
    near = replace(CONFIG, meaning=Meaning(ConstantCloseness(0.9)), min_closeness=0.82)

    final = done([event async for event in run_turn(request, {"fake": backend}, near)]).final

    assert final.source == "slm"


def test_a_score_just_under_its_threshold_is_never_shown_as_equal_to_it():
    from answering.pipeline import _below

    assert _below(0.8296) == "0.82" and _below(0.29) == "0.29" and _below(0.1999) == "0.19"


async def test_the_questions_of_turns_running_at_once_are_embedded_together_before_their_context_is_chosen():
    import asyncio

    from rag.embedding import Closeness
    from tests.test_question_vectors import BatchingEmbedder

    embedder = BatchingEmbedder()
    meaning = replace(CONFIG, meaning=Meaning(Closeness(embedder)))
    questions = [PORT_QUESTION, "How long does a closed tab's session stay in memory?", "Which URL do I set?"]
    backend = ScriptedBackend({"small": ["Foundry Local listens on port 5273 [1]."]})

    async def one(question: str) -> TurnDone:
        request = TurnRequest(question, HANDBOOK, SMALL, LARGE, router_mode=Mode.OFF)
        return done([event async for event in run_turn(request, {"fake": backend}, meaning)])

    results = await asyncio.gather(*(one(question) for question in questions))

    # One call of the model for the three questions, and none from inside the turns.
    assert embedder.calls == [questions]
    assert all(result.excerpts for result in results)
