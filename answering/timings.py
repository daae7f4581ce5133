"""What a turn cost: the time of each phase, and a simulated cloud price for its tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

from i18n import N_
from models.base import Usage
from models.catalog import match_server_model


@dataclass
class PhaseTimings:
    """Seconds spent in each phase of one turn, measured with a monotonic clock.

    The phases follow each other, so they add up to at most `total_s`; what is
    left is the app's own work between them (sending messages to the browser).
    """

    prep_s: float = 0.0  # building the retrieval query and the prompt
    retrieval_s: float = 0.0
    slm_ttft_s: float = 0.0
    slm_generation_s: float = 0.0
    router_s: float = 0.0
    llm_ttft_s: float = 0.0
    llm_generation_s: float = 0.0
    total_s: float = 0.0

    PHASES = ("prep_s", "retrieval_s", "slm_ttft_s", "slm_generation_s", "router_s", "llm_ttft_s", "llm_generation_s")

    def phases(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.PHASES}

    @property
    def accounted_s(self) -> float:
        return sum(self.phases().values())


# The phases' names, in English; translated where shown (`translator(language).gettext(LABELS[name])`).
LABELS = {
    "prep_s": N_("Prep"),
    "retrieval_s": N_("Retrieval"),
    "slm_ttft_s": N_("SLM time to first token"),
    "slm_generation_s": N_("SLM generation"),
    "router_s": N_("Router decision"),
    "llm_ttft_s": N_("LLM time to first token"),
    "llm_generation_s": N_("LLM generation"),
    "total_s": N_("Total"),
}
assert set(LABELS) == {f.name for f in fields(PhaseTimings)}


@dataclass(frozen=True)
class Price:
    """Simulated cloud price, USD per million tokens."""

    input_per_million: float
    output_per_million: float

    def cost_usd(self, usage: Usage) -> float:
        return (usage.prompt_tokens * self.input_per_million + usage.completion_tokens * self.output_per_million) / 1e6


def price_for(model_id: str, prices: Mapping[str, tuple[float, float]]) -> Price | None:
    """The price listed for a model: under its own id, or under an alias that names it
    (a price for "phi-4-mini" applies to the server's "Phi-4-mini-instruct-generic-cpu")."""
    for name, (input_price, output_price) in prices.items():
        if match_server_model(name, [model_id]) == model_id:
            return Price(input_price, output_price)
    return None
