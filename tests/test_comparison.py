"""The comparison core on a scripted backend: order, failures, rows, deltas and model names."""

from __future__ import annotations

import dataclasses

import pytest

from answering.attempts import Answer, AttemptStart
from models.base import BackendError, ChatMessage, GenerationParams, Usage
from models.catalog import ModelSpec, build_catalog
from answering.comparison import (
    DELTA_METRICS,
    PASTED_CONTEXT_TITLE,
    ComparisonRow,
    comparison_messages,
    context_passages,
    deltas,
    require_models,
    resolve_models,
    row_for,
    stream_comparison,
)
from models.settings import Settings
from tests.fakes import ScriptedBackend

SMALL = ModelSpec("fake:small", "fake", "small", 4096)
LARGE = ModelSpec("fake:large", "fake", "large", 4096)
PARAMS = GenerationParams(max_tokens=16)


class UnreachableServer:
    name = "server"

    async def list_models(self) -> list[str]:
        raise BackendError("Could not connect to the model server", "http://127.0.0.1:9/v1")


def plain_prompt(spec: ModelSpec) -> list[ChatMessage]:
    return [ChatMessage("user", "question")]


async def collect(models, backend) -> list:
    return [event async for event in stream_comparison(models, plain_prompt, PARAMS, {"fake": backend})]


def make_row(**changes) -> ComparisonRow:
    row = ComparisonRow(
        model="small (fake)", key="fake:small", text="answer", ttft_s=0.5, total_s=2.0,
        prompt_tokens=100, completion_tokens=20, tokens_estimated=False, tokens_per_s=10.0,
        cost_usd=0.004, finish_reason="stop", error=None,
    )
    return dataclasses.replace(row, **changes)


# --- stream_comparison ----------------------------------------------------------------


async def test_models_answer_in_the_order_given_one_after_the_other():
    backend = ScriptedBackend({"small": ["a ", "b"], "large": ["c"]})

    events = await collect([SMALL, LARGE], backend)

    assert backend.log == ["start small", "end small", "start large", "end large"]
    kinds = [(type(event).__name__, getattr(event, "model", None)) for event in events]
    assert kinds == [
        ("AttemptStart", SMALL), ("TokenEvent", None), ("TokenEvent", None), ("Answer", SMALL),
        ("AttemptStart", LARGE), ("TokenEvent", None), ("Answer", LARGE),
    ]
    assert [event.text for event in events if isinstance(event, Answer)] == ["a b", "c"]


async def test_a_failing_model_reports_its_error_and_the_next_model_still_answers():
    backend = ScriptedBackend({"small": BackendError("The server hung up", "fake"), "large": ["fine"]})

    answers = [event for event in await collect([SMALL, LARGE], backend) if isinstance(event, Answer)]

    failed, answered = answers
    assert failed.model == SMALL and failed.finish_reason == "error"
    assert failed.text == "partial " and "The server hung up" in str(failed.error)
    assert answered.model == LARGE and answered.text == "fine" and answered.error is None


async def test_an_unexpected_exception_in_a_backend_also_becomes_that_model_s_error():
    backend = ScriptedBackend({"small": RuntimeError("bug in a backend"), "large": ["fine"]})

    answers = [event for event in await collect([SMALL, LARGE], backend) if isinstance(event, Answer)]

    assert "bug in a backend" in str(answers[0].error)
    assert answers[0].text == "partial "
    assert answers[1].text == "fine"


async def test_no_fallback_model_stands_in_for_a_failed_one():
    backend = ScriptedBackend({"small": BackendError("down", "fake")})

    events = await collect([SMALL], backend)

    assert [event.model for event in events if isinstance(event, AttemptStart)] == [SMALL]


# --- row_for --------------------------------------------------------------------------


def test_a_row_carries_the_answer_s_timings_tokens_and_simulated_cost():
    answer = Answer(SMALL, "text", "stop", Usage(1000, 21), ttft_s=0.5, total_s=2.5)

    row = row_for(answer, {"small": (2.0, 10.0)})

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

    assert row_for(answer, {"someone-else": (1.0, 1.0)}).cost_usd is None


def test_a_failed_answer_row_has_the_error_and_no_token_counts():
    error = BackendError("Could not connect", "http://x/v1", "Start it.")
    answer = Answer(SMALL, "half", "error", None, ttft_s=None, total_s=0.3, error=error)

    row = row_for(answer, {"small": (1.0, 1.0)})

    assert row.error == str(error)
    assert (row.prompt_tokens, row.completion_tokens, row.cost_usd, row.tokens_per_s) == (None, None, None, None)


def test_estimated_token_counts_are_flagged():
    answer = Answer(SMALL, "text", "stop", Usage(10, 2, estimated=True), ttft_s=0.1, total_s=0.2)

    assert row_for(answer, {}).tokens_estimated is True


def test_a_row_is_json_ready():
    assert set(dataclasses.asdict(make_row())) == {field.name for field in dataclasses.fields(ComparisonRow)}


# --- deltas ---------------------------------------------------------------------------


def test_deltas_are_the_second_row_against_the_first():
    first = make_row()
    second = make_row(model="large (fake)", ttft_s=1.5, total_s=5.0, prompt_tokens=120,
                      completion_tokens=30, tokens_per_s=5.0, cost_usd=0.01)

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
        "server:Phi-4-mini-instruct-generic-cpu", "server:gpt-oss-20b-cpu",
    ]


def test_an_explicit_alias_override_wins(server_catalog):
    chosen = resolve_models(["tiny"], server_catalog, aliases={"tiny": "gpt-oss-20b-cpu"})

    assert [spec.key for spec in chosen] == ["server:gpt-oss-20b-cpu"]


def test_an_unknown_model_is_refused_with_the_available_keys(server_catalog):
    with pytest.raises(ValueError) as refused:
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


# --- the prompt -----------------------------------------------------------------------


def test_pasted_context_becomes_passages_of_one_document_cut_like_the_app_s():
    paragraphs = [f"Paragraph {n} says something about topic {n}. " * 4 for n in range(6)]

    passages = context_passages("\n\n".join(paragraphs), chunk_size=400, chunk_overlap=0)

    assert len(passages) > 1
    assert {chunk.document.title for chunk in passages} == {PASTED_CONTEXT_TITLE}
    assert all(len(chunk.text) <= 400 for chunk in passages)
    assert context_passages("  \n ", 400, 0) == []


def test_without_passages_the_model_sees_only_the_prompt():
    messages = comparison_messages("What is RAG?", [], max_tokens=32)(SMALL)

    assert messages == [ChatMessage("user", "What is RAG?")]


def test_with_passages_the_model_gets_the_app_s_grounded_prompt():
    passages = context_passages("RAG combines retrieval and generation.", 1500, 150)

    messages = comparison_messages("What is RAG?", passages, max_tokens=32)(SMALL)

    assert [m.role for m in messages] == ["system", "user"]
    assert "[1] Pasted context\nRAG combines retrieval and generation." in messages[0].content
    assert messages[-1].content == "What is RAG?"


def test_passages_are_fitted_to_each_model_s_context_window():
    passages = context_passages("\n\n".join(f"Fact {n}: " + "word " * 150 for n in range(8)), 800, 0)
    narrow = ModelSpec("fake:narrow", "fake", "narrow", 1024)
    wide = ModelSpec("fake:wide", "fake", "wide", 8192)
    messages_for = comparison_messages("Which facts?", passages, max_tokens=64)

    narrow_system, wide_system = messages_for(narrow)[0].content, messages_for(wide)[0].content

    assert "Fact 0" in narrow_system and "Fact 7" not in narrow_system
    assert "Fact 7" in wide_system
