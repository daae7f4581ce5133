"""The load test across processes, run for real in its quick mode: PostgreSQL, nginx, two teams of
instrumented app processes on the scripted model server, chats over Socket.IO, one process killed.

No timing thresholds: the benchmark reports figures; the test checks that it measured them for
each process count, that nothing failed, and that the killed process's chats came back whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.team_load import check_resumed, read_routes
from deploy.team import Team
from tests.servers import run_command
from web.turn_view import CLOSED_NOTE


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench-team-load") / "team-load.json"
    finished = run_command("bench.team_load", ["--quick", "--json", str(out)], timeout_s=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    return finished.stdout, json.loads(out.read_text())


def test_a_quick_run_measures_one_and_two_processes_with_no_errors(quick_run):
    stdout, result = quick_run

    assert [phase["processes"] for phase in result["phases"]] == [1, 2]
    for phase in result["phases"]:
        assert phase["errors"]["count"] == 0, phase["errors"]
        measured = phase["measured"]
        assert measured["answers_per_s"] > 0
        ttft = measured["ttft_ms"]
        # The scripted model waits 50 ms before its first token: nothing beats that.
        assert ttft["backend"]["median"] >= 50 and ttft["app"]["median"] >= 50
        assert ttft["added"]["median"] == pytest.approx(ttft["app"]["median"] - ttft["backend"]["median"])
        assert len(phase["loop_lag_ms"]) == phase["processes"]
        assert all(lag["samples"] > 0 for lag in phase["loop_lag_ms"].values())
        assert phase["cpu"]["cores_used"]["app-1"] > 0
    assert "answers/s" in stdout and "limits:" in stdout
    assert result["limits"] and result["failures"] == []


def test_the_killed_process_chats_resume_whole_with_the_cut_answer_marked(quick_run):
    _, result = quick_run
    [kill] = [phase["kill"] for phase in result["phases"] if "kill" in phase]

    assert kill["chats_affected"] >= 1
    assert kill["chats_resumed"] == kill["chats_affected"]
    assert kill["saved_messages_lost"] == 0 and kill["messages_checked"] >= 1
    assert kill["cut_answers_marked"] >= 1
    assert kill["saved_cut_answers_not_marked"] == 0


def test_a_resumed_chat_is_checked_against_what_its_page_saw_completed():
    steps = [
        {"type": "user_message", "output": "Which port?"},
        {"type": "assistant_message", "output": "No model answer passed the support check"},
        {"type": "user_message", "output": "And then?"},
        {"type": "assistant_message", "output": "Scripted word1\n\n" + CLOSED_NOTE},
    ]

    whole = check_resumed(steps, ["Which port?"], 1, None)
    assert whole == {"questions_lost": 0, "answers_lost": 0, "cut_marked": True, "cut_question_saved": False}
    # Two answered turns seen by the page, one of them missing from the store.
    missing = check_resumed(steps[:2], ["Which port?", "And then?"], 2, None)
    assert missing["questions_lost"] == 1 and missing["answers_lost"] == 1 and not missing["cut_marked"]


def test_each_chat_s_process_is_read_from_nginx_s_access_log(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "nginx-access.log").write_text(
        '127.0.0.1 [x] "GET /auth/config?bench_route_probe=ab-12 HTTP/1.1" 200 10 0.001 127.0.0.1:4001\n'
        # The first process tried was down: nginx passed the request on to the next.
        '127.0.0.1 [x] "GET /auth/config?bench_route_probe=cd-34 HTTP/1.1" 200 10 0.002 '
        "127.0.0.1:4001, 127.0.0.1:4002\n"
        '127.0.0.1 [x] "GET /ws/socket.io/ HTTP/1.1" 101 10 9.0 127.0.0.1:4002\n'
    )
    running = Team("http://127.0.0.1:1", [], tmp_path, {})

    assert read_routes(running) == {"ab-12": 4001, "cd-34": 4002}


def test_the_result_file_names_its_machine(quick_run):
    _, result = quick_run

    assert result["environment"]["cpus"] >= 1
    assert result["command"].startswith("python -m bench.team_load --quick")
    assert Path(result["command"].split("--json ")[1]).name == "team-load.json"
