"""The handbook development set stays true to the handbook it asks about."""

from __future__ import annotations

import json
import re

from models.settings import PROJECT_ROOT, Settings
from rag.loading import load_folder

SET = PROJECT_ROOT / "evaluation" / "handbook" / "questions.jsonl"


def test_every_expected_fact_is_stated_in_its_handbook_page():
    pages = {f"corpus:{document.source}": document.text for document in load_folder(Settings().corpus_dir)}
    questions = [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]

    stale = []
    for question in questions:
        for page in question["gold_doc_ids"]:
            text = pages.get(page, "")
            stated = any(answer.lower() in text.lower() for answer in question["answers"])
            pattern = question.get("pattern")
            if not (stated or (pattern and re.search(pattern, text, re.IGNORECASE))):
                stale.append((question["id"], page))
    assert stale == []
    assert sum(bool(q["answers"]) for q in questions) >= 40
    assert sum(not q["answers"] for q in questions) >= 10
