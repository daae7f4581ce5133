"""`python -m evaluation.speed` on the real embedded models, its helpers, and its one-line failures."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from evaluation.speed import local_server_process, main, per_question, spread
from tests.fault_server import refused_url
from tests.servers import run_command

SLM = "embedded:smollm2-135m"
LLM = "embedded:gemma3-270m"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The shape the cost tool (evaluation/cost.py) reads.
PER_QUESTION_FIELDS = {"prompt_tokens", "completion_tokens", "latency_s", "cpu_s"}
TINY = ["--runs", "1", "--warmup", "0", "--prompts", "1", "--max-tokens", "8", "--quiet"]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    for name in (
        "MODEL_SERVER_URL",
        "FOUNDRY_LOCAL_ENDPOINT",
        "SLM_MODEL",
        "LLM_MODEL",
        "MODEL_ALIASES",
        "BENCH_MODELS",
        "BENCH_STREAM",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("EMBEDDED_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_tool(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_command("evaluation.speed", args, env, timeout_s=180)


# --- helpers --------------------------------------------------------------------------


def test_spread_gives_median_p90_min_and_max():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]

    result = spread(values)

    # numpy's linear p90 over 5 values: 4.0 + 0.6 * (10.0 - 4.0)
    assert result == {"median": 3.0, "p90": pytest.approx(7.6), "min": 1.0, "max": 10.0}
    assert spread([]) is None


def test_per_question_keeps_only_what_the_cost_tool_reads():
    results = {
        "m": {
            "prompt_tokens_mean": 50.5,
            "completion_tokens_mean": 7.0,
            "cpu_s_per_request_mean": 0.4,
            "latency_s": {"median": 1.5, "p90": 2.0, "min": 1.0, "max": 2.2},
        }
    }

    assert per_question(results) == {
        "m": {"prompt_tokens": 50.5, "completion_tokens": 7.0, "latency_s": 1.5, "cpu_s": 0.4}
    }


def test_a_remote_server_s_cpu_time_is_not_passed_off_as_the_model_s():
    remote = {
        "prompt_tokens_mean": 50.0,
        "completion_tokens_mean": 7.0,
        "cpu_s_per_request_mean": 0.01,
        "cpu_covers_model": False,
        "latency_s": {"median": 1.5},
    }

    assert per_question({"server:x": remote})["server:x"]["cpu_s"] is None


def test_a_local_server_is_found_by_its_listening_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        found = local_server_process(f"http://127.0.0.1:{port}/v1")

    assert found is not None and found.pid == os.getpid()


def test_a_remote_server_s_process_is_not_looked_for():
    assert local_server_process("http://models.example.com:8000/v1") is None
    assert local_server_process(None) is None


# --- the command on the real embedded models ------------------------------------------


def test_a_tiny_run_writes_per_question_json_and_a_png(isolated, capsys):
    out, chart = isolated / "bench.json", isolated / "bench.png"

    assert main(["--models", "slm,llm", *TINY, "--json", str(out), "--chart", str(chart)]) == 0

    report = json.loads(out.read_text())
    assert set(report["per_question"]) == {SLM, LLM}
    for key, figures in report["per_question"].items():
        assert set(figures) == PER_QUESTION_FIELDS, key
        assert figures["prompt_tokens"] > 0 and 0 < figures["completion_tokens"] <= 8
        assert figures["latency_s"] > 0 and figures["cpu_s"] > 0
    for result in report["models"].values():
        assert result["cold"]["load_s"] > 0  # embedded: the GGUF load, timed on its own
        assert result["ttft_s"]["median"] <= result["latency_s"]["median"]
        assert len(result["requests"]) == 1
        assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0
    assert report["streamed"] is True and len(report["prompts"]) == 1
    # Each request is a pipeline turn; the support check is off so that every answer runs to its end.
    assert report["guard"] == "off"
    assert chart.read_bytes().startswith(PNG_MAGIC)
    printed = capsys.readouterr().out
    assert "smollm2-135m (embedded)" in printed and "Decode tok/s" in printed


def test_a_local_server_s_first_request_and_cpu_time_are_measured(isolated, monkeypatch, llama_server):
    monkeypatch.setenv("MODEL_SERVER_URL", llama_server)
    out = isolated / "bench.json"

    # The test server serves SmolLM2 under Foundry Local's name for phi-4-mini.
    assert main(["--models", "phi-4-mini", *TINY, "--json", str(out), "--chart", str(isolated / "b.png")]) == 0

    report = json.loads(out.read_text())
    ((key, result),) = report["models"].items()
    assert key == "server:Phi-4-mini-instruct-generic-cpu"
    assert result["cold"]["load_s"] is None and result["cold"]["first_request_s"] > 0
    assert result["cpu_covers_model"] is True and "local server process" in result["cpu_scope"]
    assert report["per_question"][key]["cpu_s"] > 0


def test_no_stream_from_the_environment_reports_end_to_end_figures_only(tmp_path):
    out = tmp_path / "bench.json"

    result = run_tool([*TINY, "--json", str(out)], {"BENCH_MODELS": SLM, "BENCH_STREAM": "0", "EMBEDDED_THREADS": "1"})

    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["streamed"] is False
    model = report["models"][SLM]
    assert model["ttft_s"] is None and model["decode_tok_s"] is None
    assert model["latency_s"]["median"] > 0
    assert list(report["per_question"]) == [SLM]
    assert (tmp_path / "bench.png").read_bytes().startswith(PNG_MAGIC)  # beside the JSON by default


def test_an_unknown_model_fails_with_one_line(isolated, capsys):
    assert main(["--models", "llama-9000", *TINY, "--json", str(isolated / "x.json")]) == 2

    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "llama-9000" in error and SLM in error
    assert not (isolated / "x.json").exists()


def test_an_unreachable_server_fails_with_one_line_and_exit_code_2(tmp_path):
    url = refused_url()

    result = run_tool([*TINY, "--json", str(tmp_path / "x.json")], {"MODEL_SERVER_URL": url})

    assert result.returncode == 2
    assert "cannot reach the model server" in result.stderr and url in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
