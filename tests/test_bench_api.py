"""The API benchmark command, run for real in its smallest configuration: real Chainlit servers,
the unchanged `openai` client and the chat page's Socket.IO client; and its pure figures.

No timing thresholds here: the benchmark reports figures; the tests check that it measured
them, counted no error, and gates its exit code on its targets as documented.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from bench.api import QUICK, TTFT_RATIO_TARGET, Timed, error_summary, parse_args, ttft_comparison
from tests.servers import run_command


@pytest.fixture(scope="module")
def smallest_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench-api") / "api.json"
    # Both parts: one handbook question x one round on the embedded models, then 5 API
    # streams x 1 wave with 2 chat users on the scripted model.
    finished = run_command("bench.api", ["--quick", "--questions", "1", "--json", str(out)], timeout_s=300)
    assert out.exists(), finished.stdout + finished.stderr
    return finished, json.loads(out.read_text())


def test_the_smallest_run_counts_no_error_and_exits_on_its_targets(smallest_run):
    finished, result = smallest_run

    assert result["errors"]["count"] == 0, result["errors"]
    assert result["errors"]["api"] == {"count": 0, "first": None}
    assert result["errors"]["page"] == {"count": 0, "first": None}
    # One sample a side: the ratio may miss its target, and then the exit code says so.
    assert result["targets"]["ok"] == result["embedded"]["ratio"]["ok"]
    assert finished.returncode == (0 if result["targets"]["ok"] else 1), finished.stdout + finished.stderr
    assert "Traceback" not in finished.stderr


def test_part_1_times_both_clients_on_the_embedded_models(smallest_run):
    _, result = smallest_run
    embedded = result["embedded"]

    assert [q["id"] for q in embedded["questions"]] == ["hb-001"] and embedded["rounds"] == 1
    for side in ("page", "api_content", "api_first_text"):
        assert embedded["ttft_ms"][side]["n"] == 1 and embedded["ttft_ms"][side]["median"] > 0
    # The first content or reasoning comes no later than the first content, and both before the end.
    api = embedded["ttft_ms"]
    assert api["api_first_text"]["median"] <= api["api_content"]["median"] <= embedded["total_ms"]["api"]["median"]
    ratio = embedded["ratio"]
    assert ratio["ratio_median"] == pytest.approx(api["api_content"]["median"] / api["page"]["median"])
    assert ratio["target"] == TTFT_RATIO_TARGET
    assert sum(embedded["answered_by"].values()) == 1  # the model, or the quotes when its answer did not stand
    timed = [r for r in result["records"] if r["part"] == "embedded" and r["phase"] == "timed"]
    assert sorted((r["client"], r["order"]) for r in timed) == [("api", 1), ("page", 0)]


def test_part_2_measures_concurrent_streams_chat_users_and_their_baseline(smallest_run):
    _, result = smallest_run
    concurrent, config = result["concurrent"], result["config"]

    assert (config["streams"], config["waves"], config["chat_users"]) == (5, 1, 2)
    assert concurrent["baseline"]["chat_ttft_ms"]["n"] == config["chat_users"] * config["baseline_questions"]
    assert concurrent["baseline"]["api_ttft_ms"]["n"] == config["baseline_streams"]
    assert concurrent["load"]["api_ttft_ms"]["n"] == config["streams"] * config["waves"]
    assert concurrent["load"]["api_total_ms"]["n"] == config["streams"] * config["waves"]
    assert concurrent["load"]["chat_ttft_ms"]["n"] >= config["chat_users"]
    # The scripted model waits 50 ms before its first token: no client can see one sooner.
    for figures in (concurrent["baseline"]["chat_ttft_ms"], concurrent["baseline"]["api_ttft_ms"]):
        assert figures["median"] >= 50 and figures["p95"] >= figures["median"]
    for phase in ("baseline_chat", "baseline_api", "load"):
        assert concurrent["loop_lag_ms"][phase]["samples"] > 0
    chat = concurrent["ratio"]["chat_load_over_baseline"]["median"]
    assert chat == pytest.approx(
        concurrent["load"]["chat_ttft_ms"]["median"] / concurrent["baseline"]["chat_ttft_ms"]["median"]
    )


def test_the_report_is_printed(smallest_run):
    finished, _ = smallest_run

    assert "TTFT ratio API / chat page (medians)" in finished.stdout
    assert "load: API TTFT, 5 streams at once" in finished.stdout
    assert "errors: 0 (API 0, chat page 0)  PASS" in finished.stdout


def test_the_ttft_ratio_is_of_the_medians_and_the_paired_one_skips_failed_requests():
    comparison = ttft_comparison([(100.0, 105.0), (200.0, 240.0), (300.0, None), (None, 90.0)])

    assert comparison["page"]["median"] == 200.0  # 100, 200, 300
    assert comparison["api"]["median"] == 105.0  # 90, 105, 240
    assert comparison["ratio_median"] == pytest.approx(105 / 200)
    assert comparison["paired_ratio_median"] == pytest.approx((1.05 + 1.2) / 2)
    assert comparison["ok"]


def test_the_ttft_target_is_inclusive_and_missing_figures_fail_it():
    assert ttft_comparison([(100.0, 110.0)])["ok"]
    assert not ttft_comparison([(100.0, 111.0)])["ok"]
    assert not ttft_comparison([(100.0, None)])["ok"]
    assert ttft_comparison([])["ratio_median"] is None


def test_errors_are_counted_by_client_with_the_first_message_of_each():
    records = [
        Timed("concurrent", "load", "api", "q", error="APIError: boom"),
        Timed("concurrent", "load", "api", "q", error="APIError: again"),
        Timed("concurrent", "load", "page", "q", ttft_s=0.1),
        Timed("embedded", "timed", "page", "q", error="no answer was streamed"),
    ]

    errors = error_summary(records)

    assert errors["count"] == 3
    assert errors["api"] == {"count": 2, "first": "APIError: boom"}
    assert errors["page"] == {"count": 1, "first": "no answer was streamed"}
    assert errors["by_phase"] == {"concurrent/load/api": 2, "embedded/timed/page": 1}


def test_options_override_the_quick_configuration_and_nothing_to_measure_is_refused():
    config, _ = parse_args(["--quick", "--skip-embedded", "--streams", "7"])

    assert config.streams == 7 and config.waves == QUICK.waves and not config.embedded and config.concurrent
    with pytest.raises(SystemExit):
        parse_args(["--skip-embedded", "--skip-concurrent"])
    with pytest.raises(SystemExit):
        parse_args(["--questions", "99"])
