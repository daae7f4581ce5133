"""The load benchmark command, run for real in its quick mode: a real Chainlit server, real sessions.

No timing thresholds here: the benchmark reports figures, the tests check that it
measured something and that it gates on errors and missing servers as documented.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.load import PHASES, TurnRecord, turn_phases
from tests.servers import run_command


def run_load(*options: str) -> subprocess.CompletedProcess:
    return run_command("bench.load", list(options), timeout_s=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-load")


@pytest.fixture(scope="module")
def quick_run(folder) -> tuple[subprocess.CompletedProcess, dict]:
    out = folder / "load.json"
    finished = run_load("--quick", "--settle-s", "0.5", "--json", str(out), "--cycles", str(folder / "cycles.txt"))
    assert out.exists(), finished.stdout + finished.stderr
    return finished, json.loads(out.read_text())


def test_a_quick_run_succeeds_with_no_errors(quick_run):
    finished, result = quick_run

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert result["errors"] == {"count": 0, "by_phase": {}, "messages": []}
    assert result["config"]["sessions"] == 3 and result["config"]["questions"] == 1 and result["config"]["churn"] == 5


def test_every_kind_of_session_ran(quick_run):
    _, result = quick_run

    assert result["turns"]["churn/churn"] == 5
    assert result["turns"]["baseline/direct"] == 3
    assert result["turns"]["app/scripted"] == 3
    assert result["turns"]["mixed/scripted"] == 3
    assert result["turns"]["mixed/embedded"] >= 1
    assert result["turns"]["mixed/upload"] >= 1
    assert result["connect_ms"]["churn"]["n"] == 5 and result["connect_ms"]["churn"]["median"] > 0


def test_time_to_first_token_is_measured_for_the_backend_and_through_the_app(quick_run):
    _, result = quick_run
    ttft = result["ttft_ms"]

    for side in ("backend", "app", "app_mixed_load"):
        assert ttft[side]["n"] == 3
        assert ttft[side]["median"] > 0 and ttft[side]["p95"] >= ttft[side]["median"]
    # The scripted model waits 50 ms before its first token: nothing can beat that.
    assert ttft["backend"]["median"] >= 50 and ttft["app"]["median"] >= 50
    assert ttft["added"]["median"] == pytest.approx(ttft["app"]["median"] - ttft["backend"]["median"])
    assert ttft["ratio"]["median"] > 0


def test_the_app_phase_time_to_first_token_is_split_into_its_steps(quick_run):
    finished, result = quick_run
    phases = result["ttft_ms"]["phases"]

    assert set(phases) == set(PHASES)
    for name in ("to_server", "message_in", "to_pipeline", "search", "context", "model", "model_added", "to_client"):
        assert phases[name]["n"] == 3, name
    # The model's step holds the backend's own time to first token (50 ms scripted); the steps
    # follow each other, so their medians come near the app's time to first token.
    assert phases["model"]["median"] >= 50
    steps = ("to_server", "message_in", "to_pipeline", "search", "context", "model", "to_client")
    assert sum(phases[name]["median"] for name in steps) == pytest.approx(result["ttft_ms"]["app"]["median"], rel=0.5)
    assert "app phase, step by step" in finished.stdout


def test_steps_are_matched_to_the_clients_turns_by_session_and_question():
    client = [TurnRecord("app", "scripted", 0.200, None, "s1", "Which port?", 100.0)]
    server = [
        {
            "session": "s1",
            "question": "Which port?",
            "received": 100.012,
            "handler": 100.020,
            "turn": 100.021,
            "retrieved": 100.041,
            "first_token": 100.150,
            "timings": {"retrieval_s": 0.005},
        },
        {"session": "s2", "question": "Which port?", "handler": 1.0},  # another client's: not matched
    ]

    phases = turn_phases(client, server, backend_median_ms=60.0)

    expected = {
        "to_server": 12,
        "message_in": 8,
        "to_pipeline": 1,
        "search": 5,
        "context": 15,
        "model": 109,
        "model_added": 49,
    }
    for name, value in expected.items():
        assert phases[name]["n"] == 1 and phases[name]["median"] == pytest.approx(value), name
    assert phases["to_client"]["median"] == pytest.approx(50)


def test_a_question_asked_twice_in_a_session_is_matched_to_each_asking_in_turn():
    client = [
        TurnRecord("app", "scripted", 0.100, None, "s1", "Which port?", 100.0),
        TurnRecord("app", "scripted", 0.100, None, "s1", "Which port?", 200.0),
    ]
    server = [
        {
            "session": "s1",
            "question": "Which port?",
            "handler": at + 0.010,
            "turn": at + 0.011,
            "retrieved": at + 0.02,
            "first_token": at + 0.09,
        }
        for at in (100.0, 200.0)
    ]

    phases = turn_phases(client, server, backend_median_ms=None)

    assert phases["message_in"]["n"] == 2 and phases["message_in"]["median"] == pytest.approx(10)


def test_the_event_loop_lag_is_sampled_inside_the_server_in_every_phase(quick_run):
    _, result = quick_run

    for phase in ("churn", "app", "mixed"):
        lag = result["loop_lag_ms"][phase]
        assert lag["samples"] > 0
        assert 0 <= lag["p50_ms"] <= lag["p99_ms"] <= lag["max_ms"]
        assert isinstance(lag["stalls"], list)
    assert result["stall"]["worst_ms"] == result["loop_lag_ms"]["mixed"]["max_ms"]
    assert result["stall"]["target_ms"] == 100


def test_server_memory_is_read_before_during_and_after_the_churn(quick_run):
    _, result = quick_run
    memory = result["memory"]

    assert 0 < memory["start_mb"] <= memory["peak_mb"]
    assert memory["end_mb"] > 0
    assert memory["end_over_start"] == pytest.approx(memory["end_mb"] / memory["start_mb"])
    # The server says what it holds: the warm-up session at least, before the churn.
    assert memory["server_before"]["chainlit_sessions"] >= 0
    assert memory["server_after"]["pid"] == memory["server_before"]["pid"]


def test_the_uploaded_files_were_real_and_the_table_was_printed(quick_run):
    finished, result = quick_run

    assert result["uploads_kb"]["text"] >= 20 and result["uploads_kb"]["pdf"] > 0
    assert "time to first token (ms)" in finished.stdout
    assert "worst stall under mixed load" in finished.stdout
    assert "server RSS (MB)" in finished.stdout


def test_the_cycles_report_lists_what_the_churned_sessions_left_in_reference_cycles(quick_run, folder):
    finished, _ = quick_run
    report = (folder / "cycles.txt").read_text()

    # Closing a Socket.IO connection alone leaves frames and tracebacks in cycles.
    assert int(report.split()[0]) > 0, report
    assert "objects by type:" in report and "builtins.frame" in report
    assert "cycles.txt: the objects the churn's sessions left in reference cycles" in finished.stdout


def test_an_app_server_that_cannot_start_gives_one_line_and_exit_code_2():
    # MAX_TOKENS=0 fails the app's settings validation, so the server exits at start-up.
    finished = run_load("--quick", "--server-env", "MAX_TOKENS=0", "--embedded-sessions", "0")

    assert finished.returncode == 2
    assert finished.stderr.strip().startswith("error: the app server did not start")
    assert "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1
