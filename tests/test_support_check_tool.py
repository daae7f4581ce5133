"""`python -m evaluation.support_check`: the check scored against a person's labels."""

from __future__ import annotations

import json

from evaluation.support_check import main, scores

PASSAGES = ["[1] Foundry Local\nFoundry Local usually listens on port 5273."]
ROWS = [
    {"sentence": "Foundry Local listens on port 5273 [1].", "passages": PASSAGES, "supported": True},
    {"sentence": "It listens on port 8001.", "passages": PASSAGES, "supported": False},
    {"sentence": "Germany won the football world cup in a dramatic final.", "passages": PASSAGES, "supported": False},
    # A contradiction in the passages' own words: a person sees it, the check cannot.
    {"sentence": "Foundry Local never listens on port 5273.", "passages": PASSAGES, "supported": False},
]


def test_precision_and_recall_count_the_unsupported_sentences_found():
    result = scores(ROWS)

    assert (result["unsupported_by_label"], result["cut_by_check"]) == (3, 2)
    assert result["precision"] == 1.0 and result["recall"] == 2 / 3


def test_the_command_prints_the_figures_as_json(tmp_path, capsys):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")

    assert main([str(labels)]) == 0

    printed = json.loads(capsys.readouterr().out.splitlines()[0])
    assert printed["sentences"] == 4 and printed["recall"] == 2 / 3
