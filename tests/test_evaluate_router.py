"""The router evaluation: its scoring functions, and one real run on a tiny set."""

from __future__ import annotations

import json
import math

import pytest

from answering.confidence import Signals
from answering.pipeline import Routed, TurnConfig
from answering.router import Decision, Mode, Reason, Thresholds
from evaluation.router import (
    Record,
    auroc,
    chosen_routing,
    escalation_confidence,
    main,
    sample_questions,
    score_answer,
    summarise,
    sweep,
    token_f1,
)
from models.catalog import ModelSpec

# --- token_f1 ------------------------------------------------------------------------


def test_token_f1_is_one_for_an_exact_match_after_normalisation():
    assert token_f1("The Eiffel Tower.", ["the eiffel tower"]) == 1.0


def test_token_f1_of_a_partial_overlap():
    # prediction: paris france (2 tokens); gold: paris (1 token); 1 shared
    # precision 1/2, recall 1/1 -> F1 = 2/3
    assert token_f1("Paris, France", ["Paris"]) == pytest.approx(2 / 3)


def test_token_f1_counts_repeated_tokens_once_per_occurrence():
    # prediction: a a b; gold: a b c; shared: a, b -> precision 2/3, recall 2/3
    assert token_f1("a a b", ["a b c"]) == pytest.approx(2 / 3)


def test_token_f1_is_zero_without_overlap():
    assert token_f1("Berlin", ["Paris"]) == 0.0
    assert token_f1("", ["Paris"]) == 0.0


def test_token_f1_takes_the_best_gold_answer():
    golds = ["completely different words", "in 1889 in Paris", "1889"]
    assert token_f1("1889", golds) == 1.0
    assert token_f1("1889", "1889") == 1.0  # a single gold string works too


def test_unanswerable_questions_score_an_abstention_as_one():
    assert score_answer("The documents do not cover this question.", []) == 1.0
    assert score_answer("It was built in 1889.", []) == 0.0


def test_citation_markers_do_not_count_against_an_answer():
    assert score_answer("It opened in 1889 in the spring [1].", ["It opened in 1889 in the spring"]) == 1.0


def test_a_short_fact_scores_one_when_the_reply_shows_it():
    assert score_answer("> **Port** 5273 is the usual one [1].", ["5273"]) == 1.0
    assert score_answer("Port 52730.", ["5273"]) == 0.0


def router_report(curve: list[tuple[float | None, float, float]], slm: float, llm: float) -> dict:
    """The parts of an `evaluation.router` report the routing is chosen from: (cut-off,
    escalation rate, score) points, and each model's score alone."""
    return {
        "curve": [{"cutoff": c, "escalation_rate": rate, "score": score} for c, rate, score in curve],
        "slm_only": {"score": slm},
        "llm_only": {"score": llm},
        "set": "handbook",
        "questions": 3,
        "seed": 0,
        "auroc": 0.5,
    }


def test_the_chosen_routing_does_not_escalate_to_a_large_model_that_is_no_better():
    report = router_report([(0.0, 0.0, 0.7), (1.0, 0.4, 0.7), (None, 1.0, 0.6)], slm=0.7, llm=0.6)

    chosen = chosen_routing(report, Thresholds(6, 0.1, 0.3, 0.2))

    assert chosen.mode == "off"
    # A chat switched to escalate anyway gets the thresholds as configured.
    assert chosen.thresholds == {
        "min_answer_tokens": 6,
        "min_low_token_prob": 0.1,
        "min_retrieval_score": 0.3,
        "min_copy_margin": 0.2,
    }


def test_the_chosen_routing_scales_the_thresholds_to_the_best_cut_off():
    report = router_report([(0.0, 0.0, 0.5), (2.0, 0.3, 0.8), (None, 1.0, 0.6)], slm=0.5, llm=0.6)

    chosen = chosen_routing(report, Thresholds(6, 0.1, 0.3, 0.2))

    assert chosen.mode == "escalate" and chosen.thresholds["min_copy_margin"] == 0.4
    assert chosen.thresholds["min_answer_tokens"] == 12


# --- auroc ---------------------------------------------------------------------------


def test_auroc_is_one_when_every_positive_ranks_above_every_negative():
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0


def test_auroc_is_zero_when_the_ranking_is_reversed():
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0


def test_auroc_counts_ties_as_half():
    assert auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    # one positive above one negative, one tie between the other two: (1 + 1 + 0.5 + 1) / 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(3.5 / 4)


def test_auroc_is_none_when_a_class_is_empty():
    assert auroc([0.1, 0.9], [True, True]) is None
    assert auroc([0.1, 0.9], [False, False]) is None
    assert auroc([], []) is None


# --- sweep ---------------------------------------------------------------------------


def test_sweep_runs_from_all_slm_to_all_llm():
    confidences = [0.0, 0.4, 1.2, 3.0]
    slm = [0.0, 1.0, 0.5, 1.0]
    llm = [1.0, 0.0, 0.5, 0.0]

    curve = sweep(confidences, slm, llm)

    assert curve[0] == {"cutoff": 0.0, "escalation_rate": 0.0, "score": pytest.approx(sum(slm) / 4)}
    assert curve[-1] == {"cutoff": None, "escalation_rate": 1.0, "score": pytest.approx(sum(llm) / 4)}
    rates = [point["escalation_rate"] for point in curve]
    assert rates == sorted(rates)
    # Cut-off 0.4 escalates only the answer with confidence 0: its LLM score replaces the SLM's.
    assert {"cutoff": 0.4, "escalation_rate": 0.25, "score": pytest.approx((1 + 1 + 0.5 + 1) / 4)} in curve


def test_sweep_with_given_cutoffs():
    curve = sweep([0.5, 1.5], [1.0, 1.0], [0.0, 0.0], cutoffs=[1.0, math.inf])
    assert [(p["escalation_rate"], p["score"]) for p in curve] == [(0.5, 0.5), (1.0, 0.0)]


def test_a_question_the_router_never_saw_is_never_escalated_in_the_sweep():
    curve = sweep([0.5, math.inf], [1.0, 1.0], [0.0, 1.0])

    assert [point["cutoff"] for point in curve] == [0.0, 0.5, None]
    assert curve[-1] == {"cutoff": None, "escalation_rate": 0.5, "score": 0.5}


# --- the pipeline's router decision -------------------------------------------------

LLM = ModelSpec("fake:large", "fake", "large", 4096)
CONFIG = TurnConfig(Thresholds(min_answer_tokens=6, min_low_token_prob=0.1, min_retrieval_score=0.3))
SURE = Signals(answer_tokens=12, retrieval_score=0.6, abstained=False)


def test_the_confidence_is_the_router_s_for_an_answer_it_kept_or_escalated_on_its_signals():
    kept = Routed(Decision(Mode.ESCALATE, escalate=False), SURE, LLM)
    short = Signals(answer_tokens=3, retrieval_score=0.6, abstained=False)
    escalated = Routed(Decision(Mode.ESCALATE, escalate=True), short, LLM)

    assert escalation_confidence(kept, CONFIG) == pytest.approx(2.0)  # 12 tokens / 6, the weakest signal
    assert escalation_confidence(escalated, CONFIG) == pytest.approx(0.5)


def test_an_answer_escalated_on_its_support_counts_as_confidence_zero():
    cut = Reason("unsupported_share", 0.5, 0.0, "1 of 2 sentences of the small model's answer are not in the passages")
    routed = Routed(Decision(Mode.ESCALATE, escalate=True, reasons=(cut,)), SURE, LLM)

    assert escalation_confidence(routed, CONFIG) == 0.0


def test_a_question_the_router_never_saw_has_no_confidence():
    assert escalation_confidence(None, CONFIG) is None  # out of scope: no model answered


def test_the_hybrid_is_what_the_escalate_turns_gave_and_the_auroc_is_over_the_routed_answers():
    def record(slm: float, llm: float, hybrid: float, escalated: bool, confidence: float | None) -> Record:
        return Record("q", True, slm, llm, hybrid, escalated, confidence, None, None, None, 0.5, None)

    report = summarise(
        [
            record(1.0, 0.0, 1.0, escalated=False, confidence=2.0),
            record(0.0, 1.0, 1.0, escalated=True, confidence=0.0),
            record(1.0, 1.0, 1.0, escalated=False, confidence=None),  # out of scope: the same notice in every mode
        ]
    )

    assert report["hybrid"] == {
        "score": 1.0,
        "escalation_rate": pytest.approx(1 / 3),
        "answerable": 1.0,
        "unanswerable": None,
    }
    assert (report["routed"], report["good_slm_answers"], report["auroc"]) == (2, 1, 1.0)
    assert report["curve"][-1]["escalation_rate"] == pytest.approx(2 / 3)


def test_sampling_is_reproducible_and_keeps_the_mix():
    questions = [{"id": i, "answers": ["x"] if i % 2 else []} for i in range(100)]
    first = sample_questions(questions, 10, seed=3)
    assert first == sample_questions(questions, 10, seed=3)
    assert first != sample_questions(questions, 10, seed=4)
    assert sum(1 for q in first if q["answers"]) == 5
    assert sample_questions(questions, None, seed=0) == questions


# --- the command ---------------------------------------------------------------------

DOCS = [
    {
        "id": "d1",
        "title": "Lake Veltra",
        "text": "Lake Veltra is a glacial lake in the Norrik mountains. Its surface lies at 1,240 metres "
        "and it freezes every winter from December to April.",
    },
    {
        "id": "d2",
        "title": "The Quorrin bridge",
        "text": "The Quorrin bridge crosses the river Ammel. It was opened in 1911 by the engineer "
        "Helga Strand and is 312 metres long.",
    },
    {
        "id": "d3",
        "title": "Saffa bread",
        "text": "Saffa bread is baked with barley flour and dried figs. Bakers in Tolun sell it at the spring market.",
    },
]
QUESTIONS = [
    {"id": "q1", "question": "Who opened the Quorrin bridge?", "answers": ["Helga Strand"], "gold_doc_ids": ["d2"]},
    {
        "id": "q2",
        "question": "What flour is saffa bread baked with?",
        "answers": ["barley flour"],
        "gold_doc_ids": ["d3"],
    },
    {"id": "q3", "question": "What is the population of Mars City?", "answers": [], "gold_doc_ids": []},
]


def _write_set(folder):
    folder.mkdir()
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(row) for row in DOCS) + "\n", encoding="utf-8")
    (folder / "questions.jsonl").write_text("\n".join(json.dumps(row) for row in QUESTIONS) + "\n", encoding="utf-8")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No server, no project .env, and the Gemma file assembled under tmp_path.

    One llama.cpp thread: with two, a machine busy with anything else (another test
    run) stalls every decode step at the threads' barrier, 10-50x slower.
    """
    monkeypatch.delenv("MODEL_SERVER_URL", raising=False)
    monkeypatch.delenv("FOUNDRY_LOCAL_ENDPOINT", raising=False)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    monkeypatch.setenv("EMBEDDED_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_missing_set_folder_exits_with_2(isolated, capsys):
    assert main([str(isolated / "nowhere"), "--json"]) == 2
    assert "no questions.jsonl" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_a_real_run_on_a_tiny_set(isolated, capsys):
    _write_set(isolated / "tiny")
    png = isolated / "out" / "curve.png"

    assert main([str(isolated / "tiny"), "--max-tokens", "16", "--json", "--png", str(png)]) == 0

    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert "[3/3]" in captured.err  # progress went to stderr
    assert report["set"] == "tiny"
    assert (report["questions"], report["answerable"], report["max_tokens"], report["seed"]) == (3, 2, 16, 0)
    assert report["models"] == {"slm": "smollm2-135m (embedded)", "llm": "gemma3-270m (embedded)"}
    for key in ("slm_only", "llm_only", "hybrid"):
        assert 0.0 <= report[key]["score"] <= 1.0
    assert 0.0 <= report["hybrid"]["escalation_rate"] <= 1.0
    assert report["auroc"] is None or 0.0 <= report["auroc"] <= 1.0
    assert set(report["signal_auroc"]) >= {"answer_tokens", "low_token_prob", "copy_margin", "retrieval_score"}
    assert all(value is None or 0.0 <= value <= 1.0 for value in report["signal_auroc"].values())
    assert report["guard"] == "stop" and 0 < report["routed"] <= 3
    # The embedded SLM chooses a passage sentence (the default style): its confidence is its margin.
    assert all(r["copy_margin"] is not None for r in report["per_question"] if r["confidence"] is not None)
    assert report["chosen"]["pair"] == "embedded:smollm2-135m -> embedded:gemma3-270m"
    assert report["chosen"]["mode"] in ("off", "escalate")
    curve = report["curve"]
    # The router sees every question but one the documents do not cover (no model answers that).
    assert curve[0]["escalation_rate"] == 0.0
    assert curve[-1]["escalation_rate"] == pytest.approx(report["routed"] / 3)
    assert curve[0]["score"] == pytest.approx(report["slm_only"]["score"])
    assert curve[-1]["score"] == pytest.approx(report["llm_only"]["score"])
    assert all(0.0 <= point["score"] <= 1.0 for point in curve)
    assert len(report["per_question"]) == 3
    for record in report["per_question"]:
        assert set(record["sources"]) == {"slm", "llm", "hybrid"}
        assert 0.0 <= record["hybrid_score"] <= 1.0 and isinstance(record["escalated"], bool)
    assert report["errors"] == {"slm": 0, "llm": 0}
    assert report["seconds"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
