"""What escalation is worth for a model pair: the router's thresholds and default mode, as
`evaluation.router --save` measured them, kept in models/routing.json.

A pair whose large model did not score better than its small one is not escalated to by
default: escalation that only adds time is not a feature. A pair never measured here keeps
the settings' `ROUTER_MIN_*` thresholds and `escalate`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

ROUTING_FILE = Path(__file__).with_name("routing.json")

Mode = Literal["off", "escalate", "draft-refine", "always-llm"]


@dataclass(frozen=True)
class PairRouting:
    """The measured routing of one small model → large model pair."""

    mode: Mode  # the escalation mode a chat with this pair starts in
    # `answering.router.Thresholds` fields: min_answer_tokens, min_low_token_prob,
    # min_retrieval_score, min_copy_margin.
    thresholds: dict[str, float] = field(default_factory=dict)
    measured: str = ""  # on what, when, with which figures


def pair_key(slm: str, llm: str) -> str:
    """Catalog keys of the pair: "embedded:smollm2-135m -> embedded:gemma3-270m"."""
    return f"{slm} -> {llm}"


def load_routing(path: Path = ROUTING_FILE) -> dict[str, PairRouting]:
    """The measured pairs; none when the file is missing."""
    if not path.is_file():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {key: PairRouting(**value) for key, value in raw.items()}


def save_routing(pairs: dict[str, PairRouting], path: Path = ROUTING_FILE) -> None:
    text = json.dumps({key: asdict(value) for key, value in sorted(pairs.items())}, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
