"""The cost simulation: the arithmetic on hand-computed numbers, the roles, the JSON, the failures."""

from __future__ import annotations

import json

import pytest

from answering.timings import Price
from evaluation.cost import (
    ModelFigures,
    hybrid_value,
    main,
    per_thousand,
    scenario,
    simulate,
    token_cost,
)
from models.settings import Settings

SLM, LLM = "embedded:smollm2-135m", "embedded:gemma3-270m"
PRICES = {"smollm2-135m": (0.02, 0.05), "gemma3-270m": (1.0, 2.0)}


def test_a_thousand_questions_of_500_output_tokens_at_two_dollars_a_million_cost_one_dollar():
    assert per_thousand(token_cost(0, 500, Price(0.0, 2.0))) == pytest.approx(1.00)


def test_input_and_output_tokens_are_priced_separately():
    # 1,000 in x $1/M + 200 out x $2/M = $0.001 + $0.0004
    assert token_cost(1000, 200, Price(1.0, 2.0)) == pytest.approx(0.0014)


def test_unknown_tokens_or_price_give_no_cost():
    assert token_cost(None, 200, Price(1.0, 2.0)) is None
    assert token_cost(1000, 200, None) is None


def test_the_hybrid_pays_the_slm_always_and_the_llm_for_the_escalated_share():
    # $0.002 + 25% x $0.010 = $0.0045
    assert hybrid_value(0.002, 0.010, 0.25) == pytest.approx(0.0045)
    assert hybrid_value(0.002, 0.010, 0.0) == pytest.approx(0.002)
    assert hybrid_value(0.002, None, 0.5) is None


def test_a_hosted_api_has_no_local_cpu_time():
    figures = ModelFigures("server:x", 1000, 100, 2.0, 0.5)
    api = scenario("API", figures, Price(0.15, 0.60), local=False)
    # 1,000 x 0.15/M + 100 x 0.60/M = $0.00021 a question, $0.21 per 1,000
    assert api.usd_per_1000 == pytest.approx(0.21)
    assert (api.cpu_s_per_question, api.latency_s) == (None, None)


def results(**extra) -> dict:
    return {
        "per_question": {
            SLM: {"prompt_tokens": 1000, "completion_tokens": 100, "latency_s": 1.0, "cpu_s": 2.0},
            LLM: {"prompt_tokens": 1200, "completion_tokens": 300, "latency_s": 4.0, "cpu_s": 8.0, "gpu_s": 1.5},
        },
        **extra,
    }


def settings(**overrides) -> Settings:
    values = {"model_server_url": None, "slm_model": None, "llm_model": None, "model_prices": PRICES, **overrides}
    return Settings(_env_file=None, **values)


def by_name(result: dict) -> dict[str, dict]:
    return {row["name"].split(":")[0].split(" (")[0]: row for row in result["scenarios"]}


def test_the_scenarios_per_thousand_questions():
    result = simulate(results(escalation_rate=0.4), settings())
    rows = by_name(result)

    # SLM: 1,000 x 0.02/M + 100 x 0.05/M = $0.000025 a question -> $0.025 per 1,000
    assert rows["SLM only"]["usd_per_1000"] == pytest.approx(0.025)
    # LLM: 1,200 x 1/M + 300 x 2/M = $0.0018 -> $1.80 per 1,000
    assert rows["LLM only"]["usd_per_1000"] == pytest.approx(1.80)
    # hybrid at 40%: 0.025 + 0.4 x 1.80 = $0.745; CPU 2 + 0.4 x 8 = 5.2 s a question
    hybrid = rows["hybrid"]
    assert hybrid["usd_per_1000"] == pytest.approx(0.745)
    assert hybrid["cpu_s_per_question"] == pytest.approx(5.2)
    assert hybrid["cpu_s_per_1000"] == pytest.approx(5200)
    assert hybrid["name"] == "hybrid (40% escalated)"
    # API on the LLM's tokens at the default $0.15/$0.60: 1,200 x 0.15/M + 300 x 0.60/M = $0.00036
    assert rows["API"]["usd_per_1000"] == pytest.approx(0.36)
    assert result["escalation_rate_source"] == "results"


def test_gpu_seconds_are_carried_when_recorded():
    rows = by_name(simulate(results(escalation_rate=0.5), settings()))
    assert rows["LLM only"]["gpu_s_per_1000"] == pytest.approx(1500)
    assert rows["SLM only"]["gpu_s_per_question"] is None
    assert rows["hybrid"]["gpu_s_per_question"] is None  # the SLM's GPU time is unknown


def test_the_escalation_rate_option_overrides_the_results():
    result = simulate(results(escalation_rate=0.4), settings(), escalation_rate=1.0)
    assert by_name(result)["hybrid"]["usd_per_1000"] == pytest.approx(0.025 + 1.80)
    assert result["escalation_rate_source"] == "option"


def test_without_an_escalation_rate_there_is_no_hybrid():
    result = simulate(results(), settings())
    assert list(by_name(result)) == ["SLM only", "LLM only", "API"]


def test_roles_come_from_the_options_then_the_results_then_the_settings():
    swapped = results(roles={"slm": LLM, "llm": SLM})
    assert simulate(swapped, settings())["roles"] == {"slm": LLM, "llm": SLM}
    assert simulate(swapped, settings(), slm=SLM, llm=LLM)["roles"] == {"slm": SLM, "llm": LLM}
    # No roles in the results: the settings' SLM and LLM, whatever the JSON's order.
    reordered = {"per_question": dict(reversed(list(results()["per_question"].items())))}
    assert simulate(reordered, settings())["roles"] == {"slm": SLM, "llm": LLM}


def test_a_benchmark_of_other_models_takes_its_first_two():
    bench = {
        "per_question": {
            "server:a": {"prompt_tokens": 10, "completion_tokens": 10, "latency_s": 1, "cpu_s": None},
            "server:b": {"prompt_tokens": 10, "completion_tokens": 10, "latency_s": 1, "cpu_s": None},
        }
    }
    result = simulate(bench, settings(model_prices={"a": (1.0, 1.0), "b": (2.0, 2.0)}))
    assert result["roles"] == {"slm": "server:a", "llm": "server:b"}
    assert by_name(result)["SLM only"]["cpu_s_per_1000"] is None


# --- the command ---------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name in ("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT", "SLM_MODEL", "LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_PRICES", json.dumps(PRICES))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_command_prints_the_table_and_writes_json(env, capsys):
    source = env / "run.json"
    source.write_text(json.dumps(results(escalation_rate=0.4)))
    out = env / "out" / "cost.json"

    assert (
        main(
            [str(source), "--json", str(out), "--api-name", "Acme", "--api-input-price", "1", "--api-output-price", "2"]
        )
        == 0
    )

    printed = capsys.readouterr().out
    assert "hybrid (40% escalated)" in printed and "API: Acme" in printed
    written = json.loads(out.read_text())
    assert set(written) >= {"questions", "roles", "escalation_rate", "prices_usd_per_million", "api", "scenarios"}
    assert written["api"] == {"name": "Acme", "input_per_million": 1.0, "output_per_million": 2.0, "tokens_from": LLM}
    # 1,200 x 1/M + 300 x 2/M = $0.0018 a question
    assert written["scenarios"][-1]["usd_per_1000"] == pytest.approx(1.80)
    assert set(written["scenarios"][0]) == {
        "name",
        "prompt_tokens",
        "completion_tokens",
        "usd_per_question",
        "usd_per_1000",
        "cpu_s_per_question",
        "cpu_s_per_1000",
        "gpu_s_per_question",
        "gpu_s_per_1000",
        "latency_s",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("not json", "is not JSON"),
        (json.dumps({"models": {}}), '"per_question"'),
    ],
)
def test_unusable_results_exit_with_2(env, capsys, content, message):
    source = env / "run.json"
    if content is not None:
        source.write_text(content)
    assert main([str(source)]) == 2
    assert message in capsys.readouterr().err


def test_a_model_without_a_price_exits_with_2(env, monkeypatch, capsys):
    monkeypatch.setenv("MODEL_PRICES", json.dumps({"smollm2-135m": [0.02, 0.05]}))
    source = env / "run.json"
    source.write_text(json.dumps(results()))
    assert main([str(source)]) == 2
    assert "no price for embedded:gemma3-270m" in capsys.readouterr().err


def test_an_unknown_role_or_rate_exits_with_2(env, capsys):
    source = env / "run.json"
    source.write_text(json.dumps(results()))
    assert main([str(source), "--llm", "server:nope"]) == 2
    assert "server:nope" in capsys.readouterr().err
    assert main([str(source), "--escalation-rate", "1.5"]) == 2
