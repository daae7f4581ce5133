"""The session's latency chart: one stacked bar per turn, small and large model told apart."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from models.costs import LABELS, PhaseTimings

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


def latency_chart(turns: Sequence[PhaseTimings]) -> go.Figure:
    numbers = [f"Turn {n}" for n in range(1, len(turns) + 1)]
    figure = go.Figure(
        [
            go.Bar(name=LABELS[phase], x=numbers, y=[getattr(t, phase) for t in turns], marker_color=colour)
            for phase, colour in COLOURS.items()
        ]
    )
    figure.update_layout(
        barmode="stack", yaxis_title="seconds", legend_orientation="h", margin=dict(l=40, r=10, t=30, b=10),
        title="Latency per turn",
    )
    return figure
