"""`python -m evaluation.compare` on the real embedded models, and its one-line failures."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from answering.comparison import DELTA_METRICS, PASTED_CONTEXT_TITLE, ComparisonRow
from evaluation.compare import main
from tests.fault_server import refused_url
from tests.servers import run_command

ROW_FIELDS = {field.name for field in dataclasses.fields(ComparisonRow)}
SLM = "embedded:smollm2-135m"
LLM = "embedded:gemma3-270m"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No server, no developer settings: the embedded models, from a clean directory."""
    for name in (
        "MODEL_SERVER_URL",
        "FOUNDRY_LOCAL_ENDPOINT",
        "SLM_MODEL",
        "LLM_MODEL",
        "MAX_TOKENS",
        "TEMPERATURE",
        "MODEL_ALIASES",
        "COMPARE_PROMPT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMBEDDED_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_tool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_command("evaluation.compare", args, env, timeout_s=120)


def test_the_default_pair_answers_in_turn_and_the_json_has_rows_and_deltas(isolated, capsys):
    out = isolated / "compare.json"

    assert main(["What does RAG combine?", "--max-tokens", "8", "--temperature", "0", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["models"] == [SLM, LLM]
    assert (report["max_tokens"], report["temperature"], report["rag"]) == (8, 0.0, False)
    assert [row["key"] for row in report["rows"]] == [SLM, LLM]
    for row in report["rows"]:
        assert set(row) == ROW_FIELDS
        assert row["error"] is None and row["text"]
        # No context and no --rag: a general-knowledge turn of the pipeline, labelled so.
        assert row["source"] == "general" and row["final"] == row["text"].strip() and row["cuts"] == []
        assert 0 < row["completion_tokens"] <= 8
        assert 0 < row["ttft_s"] <= row["total_s"]
        assert row["cost_usd"] > 0
    assert set(report["deltas"]) == {"baseline", "compared", *DELTA_METRICS}
    first, second = report["rows"]
    assert report["deltas"]["total_s"]["difference"] == pytest.approx(second["total_s"] - first["total_s"])
    assert set(report["load_s"]) == {SLM, LLM}

    printed = capsys.readouterr().out
    assert "general knowledge" in printed
    assert printed.index("── smollm2-135m (embedded) ──") < printed.index("── gemma3-270m (embedded) ──")
    assert "TTFT" in printed and "Sim. cost" in printed and "Δ 2nd vs 1st" in printed
    assert first["text"] in printed


def test_a_context_file_is_given_to_the_model_as_passages_and_the_answer_checked_against_it(isolated):
    note = "The office coffee machine is descaled every Friday by Priya."
    context = isolated / "notes.md"
    context.write_text(note)
    out = isolated / "compare.json"

    assert (
        main(
            [
                "Who descales the coffee machine?",
                "--models",
                "slm",
                "--max-tokens",
                "8",
                "--context-file",
                str(context),
                "--json",
                str(out),
            ]
        )
        == 0
    )

    report = json.loads(out.read_text())
    [passage] = report["passages"]
    assert (passage["label"], passage["source"], passage["text"]) == (PASTED_CONTEXT_TITLE, "pasted", note)
    assert passage["score"] > 0
    assert report["context_file"] == str(context) and report["guard"] == "stop"
    [row] = report["rows"]
    assert row["source"] in ("slm", "quotes", "none")  # checked against the note, never general knowledge
    assert all(set(cut) == {"text", "reason", "loop"} for cut in row["cuts"])


def test_rag_answers_over_the_app_s_corpus_with_scored_sources(isolated):
    out = isolated / "compare.json"

    assert (
        main(
            [
                "How do I point the app at Foundry Local?",
                "--rag",
                "--models",
                "slm",
                "--max-tokens",
                "8",
                "--json",
                str(out),
            ]
        )
        == 0
    )

    report = json.loads(out.read_text())
    assert report["rag"] is True and report["retrieval_mode"] == "bm25"
    assert report["passages"], "retrieval found nothing in the handbook"
    scores = [passage["score"] for passage in report["passages"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert any("Foundry Local" in passage["label"] for passage in report["passages"])


def test_an_unknown_model_fails_with_one_line_listing_the_models(isolated, capsys):
    assert main(["hello", "--models", "slm,llama-9000"]) == 2

    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "llama-9000" in error and SLM in error and LLM in error


def test_no_prompt_fails_with_one_line(isolated, capsys):
    assert main([]) == 2

    assert "COMPARE_PROMPT" in capsys.readouterr().err


def test_an_unreachable_server_fails_with_one_line_and_exit_code_2():
    url = refused_url()

    result = run_tool(["hello"], {"MODEL_SERVER_URL": url})

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot reach the model server" in result.stderr and url in result.stderr
    assert "Traceback" not in result.stderr


def test_the_prompt_can_come_from_compare_prompt_and_json_from_stdout():
    result = run_tool(
        ["--models", "slm", "--max-tokens", "4", "--json"], {"COMPARE_PROMPT": "Say hello.", "EMBEDDED_THREADS": "1"}
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["prompt"] == "Say hello."
    assert [row["key"] for row in report["rows"]] == [SLM]
    # The human-readable table went to stderr, leaving stdout to the JSON.
    assert "TTFT" in result.stderr
