"""`python -m evaluation.answers`: the app's pipeline on a tiny set, with the real embedded models."""

from __future__ import annotations

import json

import pytest

from answering.grounding import GuardMode
from answering.router import Mode
from evaluation.answers import evaluate, fact_seen, main
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM
from models.settings import Settings
from tests.fakes import ScriptedBackend

DOCS = [
    {
        "id": "d1",
        "title": "Quorrin bridge",
        "text": "The Quorrin bridge over the Ammel was opened in 1911 by the engineer Helga Strand.",
    },
    {"id": "d2", "title": "Ammel river", "text": "The Ammel river is 212 kilometres long."},
]
QUESTIONS = [
    {"id": "q1", "question": "When was the Quorrin bridge opened?", "answers": ["1911"], "gold_doc_ids": ["d1"]},
    {"id": "q2", "question": "Who won the 2018 football world cup?", "answers": [], "gold_doc_ids": []},
    {"id": "q3", "question": "What firm from Norway painted the Quorrin bridge?", "answers": [], "gold_doc_ids": []},
]


@pytest.fixture
def tiny_set(tmp_path, monkeypatch):
    for name in ("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT", "SLM_MODEL", "LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "docs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in DOCS), encoding="utf-8")
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return folder


def test_a_short_fact_is_seen_when_the_answer_contains_it():
    assert fact_seen("It was opened in 1911 [1].", ["1911"])
    assert not fact_seen("It was opened in 19111.", ["1911"])
    assert fact_seen("Port five two seven three", [], pattern=r"five\s+two")


def test_a_long_written_answer_is_seen_when_half_its_words_are_there():
    gold = "The bridge was opened in 1911 by the engineer Helga Strand over the Ammel."
    assert fact_seen("Helga Strand opened the bridge over the Ammel in 1911.", [gold])
    assert not fact_seen("The bridge is long.", [gold])


@pytest.mark.timeout(240)
def test_a_real_run_reports_what_the_user_sees(tiny_set, capsys):
    out = tiny_set.parent / "turns.json"

    assert main([str(tiny_set), "--max-tokens", "24", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    summary = report["summary"]
    assert (summary["answerable"], summary["unanswerable"]) == (1, 2)
    [unanswerable] = [r for r in report["records"] if r["id"] == "q2"]
    assert unanswerable["source"] == "out_of_scope" and unanswerable["told_out_of_scope"]
    assert summary["out_of_scope_told"] == 1.0 and summary["out_of_scope_invented"] == 0
    # Out of scope, though retrieval matched the bridge: the record keeps the score it reached.
    [near_miss] = [r for r in report["records"] if r["id"] == "q3"]
    assert near_miss["source"] == "out_of_scope" and near_miss["best_score"] > 0
    [answerable] = [r for r in report["records"] if r["id"] == "q1"]
    assert answerable["source"] in ("slm", "llm", "quotes") and answerable["total_s"] > 0
    assert summary["unsupported_shown"] == 0  # the guard is on by default
    printed = capsys.readouterr().out
    assert "answerable questions whose fact the user sees" in printed and "escalation rate" in printed


def test_a_folder_without_questions_exits_with_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no questions.jsonl" in capsys.readouterr().err


BRIDGE_DOCS = [
    {
        "id": "d1",
        "title": "Quorrin bridge",
        "text": "The Quorrin bridge was opened in 1911.\n\nHelga Strand designed the Quorrin bridge.",
    }
]
WHEN = [{"id": "q1", "question": "When was the Quorrin bridge opened?", "answers": ["1911"], "gold_doc_ids": ["d1"]}]


async def test_struck_through_text_does_not_count_as_seen(tmp_path):
    folder = tmp_path / "bridge"
    folder.mkdir()
    (folder / "docs.jsonl").write_text(json.dumps(BRIDGE_DOCS[0]) + "\n", encoding="utf-8")
    (folder / "questions.jsonl").write_text(json.dumps(WHEN[0]) + "\n", encoding="utf-8")
    models = ScriptedBackend(
        {
            # The fact, in a sentence the support check cuts (1950 is invented) ...
            EMBEDDED_SLM: ["It ", "was ", "opened ", "in ", "1911 ", "and ", "painted ", "in ", "1950."],
            # ... and an answer beside the point, which stands.
            EMBEDDED_LLM: ["Helga ", "Strand ", "designed ", "the ", "Quorrin ", "bridge ", "[1]."],
        }
    )
    settings = Settings(model_cache_dir=tmp_path / "models", min_retrieval_score=0.0, min_sentence_closeness=0.0)

    report = await evaluate(
        folder, settings, 0, 0, Mode.ESCALATE, GuardMode.STOP, 24, {"embedded": models}, False, show_drafts=True
    )

    [record] = report["records"]
    # The draft is in the reply, struck through: a reader does not take its 1911 as said.
    assert "✂️ Cut 1 sentence" in record["shown"] and "opened in 1911" not in record["shown"]
    assert "Helga Strand designed the Quorrin bridge [1]." in record["shown"]
    assert record["fact_seen"] is False and report["summary"]["model_answers_without_fact"] == 1
