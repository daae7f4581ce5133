"""Phase timings add up, prices are simple arithmetic, and the chart has a bar per phase."""

from __future__ import annotations

import pytest

from answering.timings import PhaseTimings, Price, price_for
from models.base import Usage
from web.charts import latency_chart

PRICES = {"phi-4-mini": (0.08, 0.30), "gpt-oss-20b": (0.10, 0.50)}


def test_a_price_is_per_million_input_and_output_tokens():
    price = Price(input_per_million=0.10, output_per_million=0.50)
    assert price.cost_usd(Usage(2_000_000, 1_000_000)) == pytest.approx(0.70)


def test_a_price_listed_under_an_alias_applies_to_the_servers_name_for_the_model():
    assert price_for("Phi-4-mini-instruct-generic-cpu", PRICES) == Price(0.08, 0.30)
    assert price_for("gpt-oss:20b", PRICES) == Price(0.10, 0.50)
    assert price_for("llama-3.2-1b", PRICES) is None


def test_the_phases_add_up_to_what_they_account_for():
    timings = PhaseTimings(
        prep_s=0.01,
        retrieval_s=0.02,
        slm_ttft_s=0.3,
        slm_generation_s=1.0,
        router_s=0.001,
        llm_ttft_s=0.5,
        llm_generation_s=2.0,
        total_s=3.9,
    )
    assert timings.accounted_s == pytest.approx(3.831)
    assert timings.accounted_s <= timings.total_s


def test_the_chart_stacks_one_bar_per_phase_for_every_turn():
    turns = [PhaseTimings(slm_generation_s=1.0, total_s=1.0), PhaseTimings(llm_generation_s=2.0, total_s=2.0)]
    figure = latency_chart(turns)

    assert figure["layout"]["barmode"] == "stack"
    assert len(figure["data"]) == len(PhaseTimings.PHASES)
    generation = {bar["name"]: bar["y"] for bar in figure["data"]}
    assert generation["SLM generation"] == [1.0, 0.0] and generation["LLM generation"] == [0.0, 2.0]
