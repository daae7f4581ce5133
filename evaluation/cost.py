"""What 1,000 questions cost: the SLM alone, the LLM alone, the hybrid, and a hosted API.

    .venv/bin/python -m evaluation.cost RESULTS.json [--slm KEY] [--llm KEY]
        [--escalation-rate X] [--api-name NAME] [--api-input-price USD] [--api-output-price USD]
        [--api-tokens slm|llm] [--json PATH]

RESULTS.json is a benchmark (`python -m evaluation.speed`) or an answer-quality run
(`python -m evaluation.model_scores`): anything with a top-level

    "per_question": {model_key: {"prompt_tokens": mean, "completion_tokens": mean,
                                 "latency_s": median, "cpu_s": mean or null,
                                 "gpu_s": mean (optional)}}

and, optionally, "escalation_rate" and "roles" ({"slm": key, "llm": key}).

The simulated price of a model's tokens comes from the settings' MODEL_PRICES (USD per
million input and output tokens, matched by id or alias as the chat's latency panel
does). Per question:

    cost(model)  = (prompt_tokens x input price + completion_tokens x output price) / 1e6
    hybrid       = cost(SLM) + escalation rate x cost(LLM)

since every question pays the SLM and the escalated share also pays the LLM; the same
holds for CPU-seconds (and GPU-seconds when recorded) and, roughly, for latency. The
hosted API answers every question alone, with the LLM's token counts by default
(`--api-tokens`; tokenizers differ, so it is an estimate), at `--api-input-price` and
`--api-output-price`, by default OpenAI's list price for gpt-4o-mini ($0.15 in,
$0.60 out per million tokens; check the provider's current page). Local CPU time is
the machine's; it is not turned into money here.

Roles: `--slm`/`--llm` (catalog keys of the JSON), else the JSON's "roles", else the
settings' SLM and LLM when the JSON has them, else its first two models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from answering.timings import Price, price_for
from models.catalog import build_catalog
from models.settings import Settings

QUESTIONS = 1000
DEFAULT_API_NAME = "gpt-4o-mini"
# OpenAI's list price for gpt-4o-mini, USD per million tokens (input, output).
DEFAULT_API_INPUT_PRICE = 0.15
DEFAULT_API_OUTPUT_PRICE = 0.60
DEFAULT_API_PRICE = Price(DEFAULT_API_INPUT_PRICE, DEFAULT_API_OUTPUT_PRICE)


class Unusable(Exception):
    """Input the tool cannot work from: reported in one line, exit code 2."""


@dataclass(frozen=True)
class ModelFigures:
    """A model's means per question, from the results' `per_question`."""

    key: str
    prompt_tokens: float | None
    completion_tokens: float | None
    latency_s: float | None
    cpu_s: float | None
    gpu_s: float | None = None


@dataclass(frozen=True)
class Scenario:
    """One way of answering, per question and per 1,000 questions."""

    name: str
    prompt_tokens: float | None
    completion_tokens: float | None
    usd_per_question: float | None
    usd_per_1000: float | None
    cpu_s_per_question: float | None
    cpu_s_per_1000: float | None
    gpu_s_per_question: float | None
    gpu_s_per_1000: float | None
    latency_s: float | None


# --- arithmetic ---------------------------------------------------------------------


def token_cost(prompt_tokens: float | None, completion_tokens: float | None, price: Price | None) -> float | None:
    """USD for these (mean) token counts at `price` (USD per million); None if anything is unknown."""
    if price is None or prompt_tokens is None or completion_tokens is None:
        return None
    return (prompt_tokens * price.input_per_million + completion_tokens * price.output_per_million) / 1e6


def hybrid_value(slm: float | None, llm: float | None, escalation_rate: float) -> float | None:
    """Every question pays the SLM; the escalated share pays the LLM too."""
    if slm is None or llm is None:
        return None
    return slm + escalation_rate * llm


def per_thousand(value: float | None, questions: int = QUESTIONS) -> float | None:
    return None if value is None else value * questions


def scenario(name: str, figures: ModelFigures, price: Price | None, local: bool = True) -> Scenario:
    """One model answering every question; `local=False` (a hosted API) has no local CPU time."""
    usd = token_cost(figures.prompt_tokens, figures.completion_tokens, price)
    cpu = figures.cpu_s if local else None
    gpu = figures.gpu_s if local else None
    return Scenario(
        name,
        figures.prompt_tokens,
        figures.completion_tokens,
        usd,
        per_thousand(usd),
        cpu,
        per_thousand(cpu),
        gpu,
        per_thousand(gpu),
        figures.latency_s if local else None,
    )


def hybrid_scenario(slm: Scenario, llm: Scenario, escalation_rate: float) -> Scenario:
    def mix(name: str) -> float | None:
        return hybrid_value(getattr(slm, name), getattr(llm, name), escalation_rate)

    usd, cpu, gpu = mix("usd_per_question"), mix("cpu_s_per_question"), mix("gpu_s_per_question")
    return Scenario(
        f"hybrid ({escalation_rate:.0%} escalated)",
        mix("prompt_tokens"),
        mix("completion_tokens"),
        usd,
        per_thousand(usd),
        cpu,
        per_thousand(cpu),
        gpu,
        per_thousand(gpu),
        mix("latency_s"),
    )


# --- reading the results ------------------------------------------------------------


def read_figures(report: Mapping) -> dict[str, ModelFigures]:
    table = report.get("per_question")
    if not isinstance(table, Mapping) or not table or not all(isinstance(v, Mapping) for v in table.values()):
        raise Unusable('no "per_question" mapping of model keys to figures in the results')

    def number(row: Mapping, name: str) -> float | None:
        value = row.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return {
        key: ModelFigures(
            key,
            number(row, "prompt_tokens"),
            number(row, "completion_tokens"),
            number(row, "latency_s"),
            number(row, "cpu_s"),
            number(row, "gpu_s"),
        )
        for key, row in table.items()
    }


def choose_roles(
    keys: Sequence[str], slm: str | None, llm: str | None, report: Mapping, settings: Settings
) -> tuple[str, str | None]:
    """(SLM key, LLM key or None) as described in the module docstring."""
    for given in (slm, llm):
        if given is not None and given not in keys:
            raise Unusable(f"model {given!r} is not in the results: choose one of {', '.join(keys)}")
    given_roles = report.get("roles")
    roles: Mapping[str, str] = given_roles if isinstance(given_roles, Mapping) else {}
    server_ids = [key.split(":", 1)[1] for key in keys if key.startswith("server:")]
    catalog = build_catalog(settings, server_ids if settings.model_server_url else None)
    defaults: list[tuple[str | None, str | None]] = [
        (roles.get("slm"), roles.get("llm")),
        (catalog.slm.key, catalog.llm.key),
        (keys[0], keys[1] if len(keys) > 1 else None),
    ]
    for default_slm, default_llm in defaults:
        if default_slm is not None and default_slm in keys and (default_llm in keys or default_llm is None):
            chosen_slm = slm or default_slm
            chosen_llm = llm or (default_llm if default_llm != chosen_slm else None)
            if chosen_llm == chosen_slm:
                raise Unusable(f"{chosen_slm} cannot play both the SLM and the LLM")
            return chosen_slm, chosen_llm
    return slm or keys[0], llm  # unreachable: the last default always fits


def model_id(key: str) -> str:
    """ "embedded:smollm2-135m" -> "smollm2-135m": prices are listed by model id or alias."""
    return key.split(":", 1)[1] if ":" in key else key


def price_of(key: str, prices: Mapping[str, tuple[float, float]]) -> Price:
    price = price_for(model_id(key), prices)
    if price is None:
        raise Unusable(
            f"no price for {key} in MODEL_PRICES (listed: {', '.join(prices) or 'none'}); "
            f"add one, e.g. MODEL_PRICES='{{\"{model_id(key)}\": [0.05, 0.20]}}'"
        )
    return price


def simulate(
    report: Mapping,
    settings: Settings,
    slm: str | None = None,
    llm: str | None = None,
    escalation_rate: float | None = None,
    api_name: str = DEFAULT_API_NAME,
    api_price: Price = DEFAULT_API_PRICE,
    api_tokens: str = "llm",
) -> dict:
    """The scenarios of one results file, as a JSON-ready dict."""
    figures = read_figures(report)
    slm_key, llm_key = choose_roles(list(figures), slm, llm, report, settings)
    measured = report.get("escalation_rate")
    rate = escalation_rate if escalation_rate is not None else measured
    if rate is not None and not 0 <= rate <= 1:
        raise Unusable(f"the escalation rate must be between 0 and 1, not {rate}")

    slm_price = price_of(slm_key, settings.model_prices)
    scenarios = [scenario(f"SLM only: {slm_key}", figures[slm_key], slm_price)]
    prices = {slm_key: asdict(slm_price)}
    if llm_key is not None:
        llm_price = price_of(llm_key, settings.model_prices)
        prices[llm_key] = asdict(llm_price)
        scenarios.append(scenario(f"LLM only: {llm_key}", figures[llm_key], llm_price))
        if rate is not None:
            scenarios.append(hybrid_scenario(scenarios[0], scenarios[1], rate))
    api_source = figures[llm_key] if api_tokens == "llm" and llm_key else figures[slm_key]
    scenarios.append(scenario(f"API: {api_name}", api_source, api_price, local=False))
    return {
        "questions": QUESTIONS,
        "roles": {"slm": slm_key, "llm": llm_key},
        "escalation_rate": rate,
        "escalation_rate_source": "option"
        if escalation_rate is not None
        else ("results" if rate is not None else None),
        "prices_usd_per_million": prices,
        "api": {"name": api_name, **asdict(api_price), "tokens_from": api_source.key},
        "scenarios": [asdict(s) for s in scenarios],
    }


# --- the command --------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    lines = [
        (
            f"{'per question / per 1,000 questions':38} {'tokens in':>9} {'out':>6} {'USD/q':>10} {'USD/1k':>9} "
            f"{'CPU-s/q':>8} {'CPU-h/1k':>9} {'latency s':>9}"
        )
    ]
    for row in result["scenarios"]:
        cpu_hours = None if row["cpu_s_per_1000"] is None else row["cpu_s_per_1000"] / 3600
        lines.append(
            f"{row['name'][:38]:38} {_fmt(row['prompt_tokens'], '.0f'):>9} {_fmt(row['completion_tokens'], '.0f'):>6} "
            f"{_fmt(row['usd_per_question'], '.7f'):>10} {_fmt(row['usd_per_1000'], '.4f'):>9} "
            f"{_fmt(row['cpu_s_per_question'], '.2f'):>8} {_fmt(cpu_hours, '.3f'):>9} "
            f"{_fmt(row['latency_s'], '.2f'):>9}"
        )
        if row["gpu_s_per_question"] is not None:
            lines.append(f"{'':38} GPU-s {row['gpu_s_per_question']:.2f}/q, {row['gpu_s_per_1000']:.0f}/1k")
    api = result["api"]
    notes = [
        "prices USD per million tokens in/out: "
        + ", ".join(
            f"{key} {p['input_per_million']}/{p['output_per_million']}"
            for key, p in result["prices_usd_per_million"].items()
        )
        + f", {api['name']} {api['input_per_million']}/{api['output_per_million']} "
        f"(on {api['tokens_from']}'s token counts)"
    ]
    if result["roles"]["llm"] and result["escalation_rate"] is None:
        notes.append("no escalation rate in the results: pass --escalation-rate X for the hybrid")
    elif result["escalation_rate"] is not None:
        notes.append(
            f"escalation rate {result['escalation_rate']:.0%} (from the {result['escalation_rate_source']}); "
            "hybrid = SLM + rate x LLM; latency is the median per answer"
        )
    return "\n".join([*lines, *notes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cost per 1,000 questions: SLM only, LLM only, hybrid, hosted API.")
    parser.add_argument("results", type=Path, help="a evaluation.speed or evaluation.model_scores JSON")
    parser.add_argument("--slm", default=None, help="the model key playing the SLM")
    parser.add_argument("--llm", default=None, help="the model key playing the LLM")
    parser.add_argument(
        "--escalation-rate",
        type=float,
        default=None,
        help="share of questions the LLM also answers (default: the results')",
    )
    parser.add_argument("--api-name", default=DEFAULT_API_NAME, help=f"hosted API's name (default {DEFAULT_API_NAME})")
    parser.add_argument(
        "--api-input-price",
        type=float,
        default=DEFAULT_API_INPUT_PRICE,
        help=f"USD per million input tokens (default {DEFAULT_API_INPUT_PRICE})",
    )
    parser.add_argument(
        "--api-output-price",
        type=float,
        default=DEFAULT_API_OUTPUT_PRICE,
        help=f"USD per million output tokens (default {DEFAULT_API_OUTPUT_PRICE})",
    )
    parser.add_argument(
        "--api-tokens",
        choices=("llm", "slm"),
        default="llm",
        help="whose token counts the API is charged on (default llm)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    try:
        try:
            report = json.loads(args.results.read_text(encoding="utf-8"))
        except OSError as error:
            raise Unusable(f"cannot read {args.results}: {error.strerror}") from None
        except ValueError as error:
            raise Unusable(f"{args.results} is not JSON ({error})") from None
        if not isinstance(report, dict):
            raise Unusable(f"{args.results} does not hold a JSON object")
        if args.api_input_price < 0 or args.api_output_price < 0:
            raise Unusable("API prices cannot be negative")
        result = simulate(
            report,
            Settings(),
            args.slm,
            args.llm,
            args.escalation_rate,
            args.api_name,
            Price(args.api_input_price, args.api_output_price),
            args.api_tokens,
        )
    except Unusable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result["results"] = str(args.results)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
        print(f"JSON in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
