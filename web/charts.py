"""The session's latency chart: one stacked bar per turn, small and large model told apart.

The chart is a plotly.js figure spec (plain dicts), which the chat page draws with the
Plotly it ships. Building it with plotly.py's figure objects instead cost about 12 ms of
interpreter time per answer, and left some 1,900 blocks of cyclic garbage each (plotly
validates every property path by defining a class per call): under many chats that
garbage piled up until a full collection and grew the server's memory for good.
"""

from __future__ import annotations

from collections.abc import Sequence

from answering.timings import LABELS, PhaseTimings
from i18n import translator

# Greys for the app's own phases, blues for the small model, oranges for the large one.
COLOURS = {
    "prep_s": "#b0b0b0",
    "retrieval_s": "#8a8a8a",
    "slm_ttft_s": "#9ecae1",
    "slm_generation_s": "#3182bd",
    "router_s": "#636363",
    "llm_ttft_s": "#fdae6b",
    "llm_generation_s": "#e6550d",
}


def latency_chart(turns: Sequence[PhaseTimings], language: str | None = None) -> dict:
    """A plotly.js figure: `{"data": [one bar trace per phase], "layout": {...}}`, its words in `language`."""
    _ = translator(language).gettext
    numbers = [_("Turn {number}").format(number=n) for n in range(1, len(turns) + 1)]
    return {
        "data": [
            {
                "type": "bar",
                # The phases' names come from answering.timings; translated when in the catalog.
                "name": _(LABELS[phase]),
                "x": numbers,
                "y": [getattr(t, phase) for t in turns],
                "marker": {"color": colour},
            }
            for phase, colour in COLOURS.items()
        ],
        "layout": {
            "barmode": "stack",
            "autosize": True,
            "title": {"text": _("Latency per turn")},
            "yaxis": {"title": {"text": _("seconds")}},
            "legend": {"orientation": "h"},
            "margin": {"l": 40, "r": 10, "t": 30, "b": 10},
        },
    }
