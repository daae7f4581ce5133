"""The comparison core on a scripted backend: each model's pipeline turn, failures, rows, deltas and model names."""

from __future__ import annotations

import dataclasses

import pytest

from answering.attempts import Answer, AttemptStart
from answering.comparison import (
    DELTA_METRICS,
    NO_KNOWLEDGE,
    PASTED_CONTEXT_TITLE,
    Comparison,
    ComparisonRow,
    PastedContext,
    deltas,
    require_models,
    resolve_models,
    row_for,
    stream_comparison,
)
from answering.grounding import Cut, GuardMode
from answering.pipeline import FinalAnswer, Notice, Searchable, TurnConfig, TurnDone
from answering.prompt import GENERAL_PROMPT, SYSTEM_PROMPT
from answering.router import Decision, Mode
from answering.timings import PhaseTimings
from models.base import BackendError, ChatMessage, GenerationParams, Usage
from models.catalog import ModelSpec, build_catalog
from models.settings import Settings
from tests.fakes import ScriptedBackend

SMALL = ModelSpec("fake:small", "fake", "small", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)
PARAMS = GenerationParams(max_tokens=16)
DEPOT = "The Zorblax depot opens at 07:15 on weekdays. It closes at noon on Saturdays."
CHAT_CONFIG = TurnConfig()
SUPPORTED = FinalAnswer("text", "slm")


class UnreachableServer:
    name = "server"

    async def list_models(self) -> list[str]:
        raise BackendError("Could not connect to the model server", "http://127.0.0.1:9/v1")


async def collect(
    models: list[ModelSpec],
    backend: ScriptedBackend,
    knowledge: Searchable = NO_KNOWLEDGE,
    config: TurnConfig = CHAT_CONFIG,
    guard: GuardMode = GuardMode.STOP,
    prompt: str = "question",
) -> list:
    comparison = Comparison(prompt, knowledge, PARAMS, guard)
    backends = {"fake": backend, "embedded": backend}
    return [event async for event in stream_comparison(comparison, models, backends, config)]


def rows(events: list) -> list[ComparisonRow]:
    return [row_for(event, {}) for event in events if isinstance(event, TurnDone)]


def make_row(**changes) -> ComparisonRow:
    row = ComparisonRow(
        model="small (fake)",
        key="fake:small",
        text="answer",
        ttft_s=0.5,
        total_s=2.0,
        prompt_tokens=100,
        completion_tokens=20,
        tokens_estimated=False,
        tokens_per_s=10.0,
        cost_usd=0.004,
        finish_reason="stop",
        error=None,
        final="answer",
        source="slm",
        cuts=(),
    )
    return dataclasses.replace(row, **changes)


def done_with(answer: Answer, final: FinalAnswer = SUPPORTED) -> TurnDone:
    return TurnDone(PhaseTimings(), answer, None, Decision(Mode.OFF, escalate=False), final)


# --- stream_comparison ----------------------------------------------------------------


async def test_models_answer_in_the_order_given_one_after_the_other_each_in_its_own_turn():
    backend = ScriptedBackend({"small": ["a ", "b"], "large": ["c"]})

    events = await collect([SMALL, LARGE], backend)

    assert backend.log == ["start small", "end small", "start large", "end large"]
    kinds = [
        (type(event).__name__, getattr(event, "model", None))
        for event in events
        if isinstance(event, (AttemptStart, Answer, TurnDone))
    ]
    assert kinds == [
        ("AttemptStart", SMALL),
        ("Answer", SMALL),
        ("TurnDone", None),
        ("AttemptStart", LARGE),
        ("Answer", LARGE),
        ("TurnDone", None),
    ]
    assert [row.text for row in rows(events)] == ["a b", "c"]


async def test_a_failing_model_reports_its_error_and_the_next_model_still_answers():
    backend = ScriptedBackend({"small": BackendError("The server hung up", "fake"), "large": ["fine"]})

    failed, answered = rows(await collect([SMALL, LARGE], backend))

    assert failed.key == SMALL.key and failed.finish_reason == "error"
    assert failed.text == "partial " and "The server hung up" in str(failed.error)
    assert answered.key == LARGE.key and answered.text == "fine" and answered.error is None


async def test_an_unexpected_exception_in_a_backend_also_becomes_that_model_s_error():
    backend = ScriptedBackend({"small": RuntimeError("bug in a backend"), "large": ["fine"]})

    failed, answered = rows(await collect([SMALL, LARGE], backend))

    assert "bug in a backend" in str(failed.error)
    assert failed.text == "partial " and failed.final == ""
    assert answered.text == "fine"


async def test_no_fallback_model_stands_in_for_a_failed_one():
    backend = ScriptedBackend({"small": BackendError("down", "fake")})

    events = await collect([SMALL], backend)

    assert [event.model for event in events if isinstance(event, AttemptStart)] == [SMALL]


# --- what each model reads ------------------------------------------------------------


def test_pasted_context_becomes_a_knowledge_base_returned_whole_best_first():
    paragraphs = [f"Paragraph {n} says something about topic{n}. " * 4 for n in range(6)]
    pasted = PastedContext("\n\n".join(paragraphs), chunk_size=400, chunk_overlap=0)

    hits = pasted.search("topic5", "bm25", k=1)

    assert len(hits) > 1  # every chunk: the budget, not top-k, decides how much is read
    assert "topic5" in hits[0].chunk.text and hits[0].score > 0
    assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
    assert {hit.chunk.document.title for hit in hits} == {PASTED_CONTEXT_TITLE}
    assert all(len(hit.chunk.text) <= 400 for hit in hits)
    assert PastedContext("  \n ", 400, 0).search("topic5", "bm25", 3) == []


async def test_without_context_each_model_answers_from_general_knowledge_labelled_so():
    backend = ScriptedBackend({"small": ["RAG ", "retrieves, then generates."]})

    events = await collect([SMALL], backend, prompt="Summarize retrieval augmented generation in 2 sentences.")

    assert backend.prompts["small"] == [
        ChatMessage("system", GENERAL_PROMPT),
        ChatMessage("user", "Summarize retrieval augmented generation in 2 sentences."),
    ]
    assert any(isinstance(event, Notice) and event.kind == "general_knowledge" for event in events)
    [row] = rows(events)
    assert (row.source, row.final, row.cuts) == ("general", "RAG retrieves, then generates.", ())


async def test_pasted_context_is_given_to_the_model_as_the_chat_s_grounded_prompt():
    backend = ScriptedBackend({"small": ["It opens at 07:15 [1]."]})

    events = await collect([SMALL], backend, PastedContext(DEPOT, 1500, 150), prompt="When does the depot open?")

    system, question = backend.prompts["small"]
    assert system.content.startswith(SYSTEM_PROMPT)
    assert f"[1] {PASTED_CONTEXT_TITLE}\n{DEPOT}" in system.content
    assert question == ChatMessage("user", "When does the depot open?")
    [row] = rows(events)
    assert (row.source, row.final, row.cuts) == ("slm", "It opens at 07:15 [1].", ())


async def test_pasted_context_is_never_out_of_scope_and_all_of_it_is_read_when_it_fits():
    backend = ScriptedBackend({"small": ["The depot opens at 07:15 on weekdays."]})

    events = await collect([SMALL], backend, PastedContext(DEPOT, 1500, 150), prompt="Summarise this.")

    assert not any(isinstance(event, Notice) for event in events)
    assert DEPOT in backend.prompts["small"][0].content
    assert rows(events)[0].source == "slm"


async def test_a_long_pasted_context_is_cut_to_the_budget_the_sentences_matching_the_prompt_first():
    facts = " ".join(f"Fact {n} is that the crate weighs {n * 10} kilograms." for n in range(1, 40))
    backend = ScriptedBackend({"small": ["It weighs 370 kilograms."]})
    small_budget = TurnConfig(server_context_budget=60)

    await collect([SMALL], backend, PastedContext(facts, 8000, 0), small_budget, prompt="What is fact 37?")

    system = backend.prompts["small"][0].content
    assert "Fact 37 is that the crate weighs 370 kilograms." in system
    assert "Fact 1 is" not in system


async def test_every_model_reads_the_passages_chosen_for_the_smallest_budget():
    narrow = ModelSpec("embedded:tiny", "embedded", "tiny", 2048)
    facts = " ".join(f"Fact {n} is that the crate weighs {n * 10} kilograms." for n in range(1, 40))
    backend = ScriptedBackend({"tiny": ["370."], "large": ["370."]})
    config = TurnConfig(embedded_context_budget=60, server_context_budget=4000)

    await collect([narrow, LARGE], backend, PastedContext(facts, 8000, 0), config, prompt="What is fact 37?")

    assert backend.prompts["tiny"] == backend.prompts["large"]
    assert "Fact 1 is" not in backend.prompts["large"][0].content


async def test_an_answer_is_checked_against_the_context_as_in_the_chat():
    backend = ScriptedBackend({"small": ["The depot opens at 07:15. ", "It closes at 9 pm. ", "Bye."]})

    events = await collect([SMALL], backend, PastedContext(DEPOT, 1500, 150), prompt="When does the depot open?")

    [row] = rows(events)
    assert [cut.reason for cut in row.cuts] == ["the passages never state 9"]
    assert row.final == "The depot opens at 07:15."
    assert row.finish_reason == "guard"  # stopped at the cut, as the chat's `stop` guard does
    assert "end small" not in backend.log


async def test_with_the_guard_off_the_answer_stands_as_written():
    backend = ScriptedBackend({"small": ["The depot opens at 07:15. ", "It closes at 9 pm."]})

    events = await collect(
        [SMALL], backend, PastedContext(DEPOT, 1500, 150), guard=GuardMode.OFF, prompt="When does the depot open?"
    )

    [row] = rows(events)
    assert row.cuts == () and row.final == "The depot opens at 07:15. It closes at 9 pm."


# --- row_for --------------------------------------------------------------------------


def test_a_row_carries_the_answer_s_timings_tokens_and_simulated_cost():
    answer = Answer(SMALL, "text", "stop", Usage(1000, 21), ttft_s=0.5, total_s=2.5)

    row = row_for(done_with(answer), {"small": (2.0, 10.0)})

    assert (row.model, row.key, row.text) == (SMALL.label, SMALL.key, "text")
    assert (row.ttft_s, row.total_s) == (0.5, 2.5)
    assert (row.prompt_tokens, row.completion_tokens, row.tokens_estimated) == (1000, 21, False)
    # 20 tokens after the first one, in the 2.0 s after the first token
    assert row.tokens_per_s == pytest.approx(10.0)
    # 1000 * 2.0 / 1e6 + 21 * 10.0 / 1e6
    assert row.cost_usd == pytest.approx(0.00221)
    assert row.error is None


def test_a_model_without_a_price_has_no_cost():
    answer = Answer(SMALL, "text", "stop", Usage(10, 2), ttft_s=0.1, total_s=0.2)

    assert row_for(done_with(answer), {"someone-else": (1.0, 1.0)}).cost_usd is None


def test_a_failed_answer_row_has_the_error_and_no_token_counts():
    error = BackendError("Could not connect", "http://x/v1", "Start it.")
    answer = Answer(SMALL, "half", "error", None, ttft_s=None, total_s=0.3, error=error)

    row = row_for(done_with(answer, FinalAnswer("", "none")), {"small": (1.0, 1.0)})

    assert row.error == str(error)
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd, row.tokens_per_s) == (None, None, None, None)


def test_estimated_token_counts_are_flagged():
    answer = Answer(SMALL, "text", "stop", Usage(10, 2, estimated=True), ttft_s=0.1, total_s=0.2)

    assert row_for(done_with(answer), {}).tokens_estimated is True


def test_a_row_carries_what_the_support_check_left():
    cut = Cut("It closes at 9 pm.", "the passages never state 9")
    answer = Answer(SMALL, "It opens at 07:15. It closes at 9 pm.", "guard", Usage(10, 9), ttft_s=0.1, total_s=0.2)

    row = row_for(done_with(answer, FinalAnswer("It opens at 07:15.", "slm", (cut,))), {})

    assert (row.text, row.final, row.source, row.cuts) == (answer.text, "It opens at 07:15.", "slm", (cut,))
    assert dataclasses.asdict(row)["cuts"] == ({"text": cut.text, "reason": cut.reason, "loop": False},)


def test_a_row_is_json_ready():
    assert set(dataclasses.asdict(make_row())) == {field.name for field in dataclasses.fields(ComparisonRow)}


# --- deltas ---------------------------------------------------------------------------


def test_deltas_are_the_second_row_against_the_first():
    first = make_row()
    second = make_row(
        model="large (fake)",
        ttft_s=1.5,
        total_s=5.0,
        prompt_tokens=120,
        completion_tokens=30,
        tokens_per_s=5.0,
        cost_usd=0.01,
    )

    result = deltas([first, second])

    assert (result["baseline"], result["compared"]) == ("small (fake)", "large (fake)")
    assert result["ttft_s"] == {"difference": pytest.approx(1.0), "ratio": pytest.approx(3.0)}
    assert result["total_s"] == {"difference": pytest.approx(3.0), "ratio": pytest.approx(2.5)}
    assert result["prompt_tokens"] == {"difference": 20, "ratio": pytest.approx(1.2)}
    assert result["completion_tokens"] == {"difference": 10, "ratio": pytest.approx(1.5)}
    assert result["tokens_per_s"] == {"difference": pytest.approx(-5.0), "ratio": pytest.approx(0.5)}
    assert result["cost_usd"] == {"difference": pytest.approx(0.006), "ratio": pytest.approx(2.5)}


def test_a_metric_missing_on_either_side_has_no_delta():
    result = deltas([make_row(ttft_s=None), make_row(cost_usd=None)])

    assert result["ttft_s"] == {"difference": None, "ratio": None}
    assert result["cost_usd"] == {"difference": None, "ratio": None}
    assert result["total_s"]["difference"] == 0.0


def test_a_zero_baseline_gives_a_difference_but_no_ratio():
    result = deltas([make_row(cost_usd=0.0), make_row(cost_usd=0.002)])

    assert result["cost_usd"] == {"difference": pytest.approx(0.002), "ratio": None}


def test_a_failed_model_makes_every_delta_none():
    result = deltas([make_row(), make_row(error="server down", total_s=0.1)])

    assert all(result[metric] == {"difference": None, "ratio": None} for metric in DELTA_METRICS)


def test_fewer_than_two_rows_give_the_same_shape_with_nothing_computed():
    for rows in ([], [make_row()]):
        result = deltas(rows)
        assert set(result) == {"baseline", "compared", *DELTA_METRICS}
        assert all(result[metric]["difference"] is None for metric in DELTA_METRICS)


# --- resolve_models -------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, model_server_url=None, slm_model=None, llm_model=None)


@pytest.fixture
def server_catalog(settings):
    return build_catalog(settings, ["Phi-4-mini-instruct-generic-cpu", "gpt-oss-20b-cpu"])


def test_no_names_mean_the_catalog_s_slm_then_llm(settings):
    catalog = build_catalog(settings)

    assert resolve_models(None, catalog) == [catalog.slm, catalog.llm]
    assert resolve_models([], catalog) == [catalog.slm, catalog.llm]


def test_roles_keys_and_bare_ids_name_models(settings):
    catalog = build_catalog(settings)
    gemma = catalog.models["embedded:gemma3-270m"]

    assert resolve_models(["LLM", "slm"], catalog) == [catalog.llm, catalog.slm]
    assert resolve_models(["embedded:gemma3-270m"], catalog) == [gemma]
    assert resolve_models(["gemma3-270m"], catalog) == [gemma]


def test_an_alias_finds_the_server_s_own_name_for_a_model(server_catalog):
    assert [spec.key for spec in resolve_models(["phi-4-mini", "gpt-oss-20b"], server_catalog)] == [
        "server:Phi-4-mini-instruct-generic-cpu",
        "server:gpt-oss-20b-cpu",
    ]


def test_an_explicit_alias_override_wins(server_catalog):
    chosen = resolve_models(["tiny"], server_catalog, aliases={"tiny": "gpt-oss-20b-cpu"})

    assert [spec.key for spec in chosen] == ["server:gpt-oss-20b-cpu"]


def test_an_unknown_model_is_refused_with_the_available_keys(server_catalog):
    with pytest.raises(ValueError) as refused:  # noqa: PT011 - the message is checked below
        resolve_models(["slm", "llama-9000"], server_catalog)

    message = str(refused.value)
    assert "llama-9000" in message
    for key in server_catalog.models:
        assert key in message


async def test_an_unreachable_server_is_an_error_when_its_models_are_wanted(settings):
    configured = settings.model_copy(update={"model_server_url": "http://127.0.0.1:9/v1"})

    with pytest.raises(BackendError, match="Could not connect"):
        await require_models(configured, {"server": UnreachableServer()}, None)


async def test_an_unreachable_server_does_not_matter_for_embedded_models(settings):
    configured = settings.model_copy(update={"model_server_url": "http://127.0.0.1:9/v1"})

    catalog, models = await require_models(configured, {"server": UnreachableServer()}, ["embedded:smollm2-135m"])

    assert [spec.key for spec in models] == ["embedded:smollm2-135m"]
    assert any("Could not connect" in notice for notice in catalog.notices)
