"""The answer-quality run: the judge on a fake backend, the report's shapes, one real run, the failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from evaluation.model_scores import AnswerRecord, build_report, judge_scores, main, per_question, run
from models.base import ChatMessage, GenerationParams, StreamEnd, StreamEvent, TokenEvent, Usage
from models.catalog import ModelSpec
from models.settings import Settings
from rag.documents import Document
from rag.index import KnowledgeBase, SharedCorpus
from tests.fault_server import refused_url


class ScriptedBackend:
    """A `Backend` whose model answers with the reply its script gives for the prompt."""

    name = "scripted"

    def __init__(self, script) -> None:
        self.script = script  # (model, messages) -> reply text
        self.calls: list[tuple[str, list[ChatMessage], GenerationParams]] = []

    async def list_models(self) -> list[str]:
        return ["answerer", "judge"]

    async def aclose(self) -> None:
        pass

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[StreamEvent]:
        self.calls.append((model, messages, params))
        words = self.script(model, messages).split(" ")
        for index, word in enumerate(words):
            yield TokenEvent(word if index == 0 else f" {word}")
        yield StreamEnd(Usage(prompt_tokens=100, completion_tokens=len(words)), "stop")


def spec(model: str) -> ModelSpec:
    return ModelSpec(f"scripted:{model}", "scripted", model, 4096)


ANSWER = "The engineer Helga Strand opened the Quorrin bridge in 1911 [1]."


async def judge_with(reply: str):
    backend = ScriptedBackend(lambda model, messages: reply)
    return await judge_scores(
        spec("judge"),
        {"scripted": backend},
        "Who opened it?",
        ANSWER,
        ["The bridge was opened by Helga Strand."],
        ["Helga Strand"],
    )


async def test_the_judge_reply_in_strict_json_gives_its_scores():
    scores, reply = await judge_with('{"groundedness": 5, "correctness": 4, "conciseness": 3}')
    assert scores.as_dict == {"groundedness": 5, "correctness": 4, "conciseness": 3}
    assert reply.startswith("{")


async def test_the_judge_reply_with_json_in_prose_gives_its_scores():
    scores, _ = await judge_with('My verdict: {"groundedness": 2, "correctness": 1, "conciseness": 5} overall.')
    assert scores.as_dict == {"groundedness": 2, "correctness": 1, "conciseness": 5}


async def test_an_unreadable_judge_reply_gives_no_scores():
    scores, reply = await judge_with("The answer looks fine to me.")
    assert scores is None
    assert reply == "The answer looks fine to me."


# --- the run on fake models ----------------------------------------------------------

BRIDGE = Document(
    "d1",
    "The Quorrin bridge",
    "test",
    "The Quorrin bridge crosses the river Ammel. It was "
    "opened in 1911 by the engineer Helga Strand and is 312 metres long.",
)
BREAD = Document("d2", "Saffa bread", "test", "Saffa bread is baked with barley flour and dried figs.")
QUESTIONS = [
    {"id": "q1", "question": "Who opened the Quorrin bridge?", "answers": ["Helga Strand"], "gold_doc_ids": ["d1"]},
    {
        "id": "q2",
        "question": "What flour is saffa bread baked with?",
        "answers": ["barley flour"],
        "gold_doc_ids": ["d2"],
    },
]


@pytest.fixture
def knowledge() -> KnowledgeBase:
    return KnowledgeBase(SharedCorpus([BRIDGE, BREAD]), 1500, 150)


def settings() -> Settings:
    return Settings(
        _env_file=None,
        model_server_url=None,
        router_min_answer_tokens=6,
        router_min_token_prob=0.1,
        router_min_retrieval_score=0.3,
        top_k=3,
    )


def the_question(messages: list[ChatMessage]) -> str:
    return messages[-1].content


async def test_every_model_answers_every_question_and_the_judge_falls_back_when_unreadable(knowledge):
    def script(model, messages):
        if model == "judge":  # readable for the bridge, garbage for the bread
            if "Quorrin" in messages[-1].content:
                return '{"groundedness": 3, "correctness": 3, "conciseness": 3}'
            return "no idea"
        if "bridge" in the_question(messages):
            return ANSWER
        return "I don't know."  # an abstention: the router escalates it

    backend = ScriptedBackend(script)
    models = [spec("answerer"), spec("judge")]

    records = await run(
        settings(),
        knowledge,
        QUESTIONS,
        models,
        {"scripted": backend},
        max_tokens=16,
        judge=spec("judge"),
        progress=False,
    )

    assert [(r.question_id, r.model) for r in records] == [
        ("q1", "scripted:answerer"),
        ("q1", "scripted:judge"),
        ("q2", "scripted:answerer"),
        ("q2", "scripted:judge"),
    ]
    bridge = records[0]
    assert bridge.judge == bridge.scores == {"groundedness": 3, "correctness": 3, "conciseness": 3}
    # token F1 against "Helga Strand": 2 of the answer's 10 tokens, so precision 0.2, recall 1, F1 0.33 -> 2
    assert bridge.rubric == {"groundedness": 5, "correctness": 2, "conciseness": 5}
    bread = records[2]
    assert bread.judge_fallback and bread.judge is None and bread.scores == bread.rubric
    # The first model plays the SLM: asked for token probabilities, judged by the router.
    answering_calls = [params for model, _, params in backend.calls if model == "answerer"]
    assert answering_calls[-1].logprobs and answering_calls[-1].temperature == 0.0
    assert (bridge.escalate, bread.escalate) == (False, True)
    assert records[1].escalate is None  # the LLM is not routed


async def test_the_report_has_per_question_means_and_the_escalation_rate(knowledge):
    backend = ScriptedBackend(lambda model, messages: ANSWER if "bridge" in the_question(messages) else "Figs.")
    models = [spec("answerer"), spec("judge")]
    records = await run(settings(), knowledge, QUESTIONS, models, {"scripted": backend}, max_tokens=16, progress=False)

    report = build_report(records, models, None, {"set": "tiny"})

    assert set(report) >= {
        "set",
        "models",
        "judge",
        "summary",
        "per_question",
        "roles",
        "escalation_rate",
        "hybrid",
        "records",
    }
    assert report["roles"] == {"slm": "scripted:answerer", "llm": "scripted:judge"}
    # "Figs." is one token: shorter than 6, so the router escalates it; the bridge answer passes.
    assert report["escalation_rate"] == 0.5
    row = report["per_question"]["scripted:answerer"]
    assert row["prompt_tokens"] == 100
    assert row["completion_tokens"] == (len(ANSWER.split(" ")) + 1) / 2
    assert row["cpu_s"] is None  # not an embedded model: its CPU is not ours to measure
    assert len(report["records"]) == 4
    json.dumps(report)  # JSON-ready


def record(model: str, latency: float, cpu: float | None, error: str | None = None) -> AnswerRecord:
    scores = {"groundedness": 5, "correctness": 3, "conciseness": 4}
    return AnswerRecord(
        "q",
        "?",
        True,
        model,
        "text",
        "stop",
        error,
        200,
        20,
        False,
        0.1,
        latency,
        cpu,
        0.5,
        1,
        scores,
        1.0,
        0.5,
        1.0,
        scores=scores,
    )


def test_per_question_takes_the_median_latency_and_skips_failed_answers():
    records = [record("m", 1.0, 0.5), record("m", 3.0, 1.5), record("m", 10.0, 4.0), record("m", 99.0, 9.0, "boom")]
    assert per_question(records) == {
        "m": {"prompt_tokens": 200, "completion_tokens": 20, "latency_s": 3.0, "cpu_s": 2.0}
    }


# --- the command ---------------------------------------------------------------------

DOCS = [
    {"id": "d1", "title": "The Quorrin bridge", "text": BRIDGE.text},
    {"id": "d2", "title": "Saffa bread", "text": BREAD.text},
    {
        "id": "d3",
        "title": "Lake Veltra",
        "text": "Lake Veltra is a glacial lake in the Norrik mountains. It freezes from December to April.",
    },
]
TINY_QUESTIONS = [
    QUESTIONS[0],
    {"id": "q3", "question": "What is the population of Mars City?", "answers": [], "gold_doc_ids": []},
]


@pytest.fixture
def tiny_set(tmp_path, monkeypatch):
    """A three-document set with one answerable and one unanswerable question; no server,
    no project .env, the Gemma file assembled under tmp_path, one llama.cpp thread (two
    stall at their barrier when the machine is busy)."""
    for name in ("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT", "SLM_MODEL", "LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "model-cache"))
    monkeypatch.setenv("EMBEDDED_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "docs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in DOCS), encoding="utf-8")
    (folder / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in TINY_QUESTIONS), encoding="utf-8")
    return folder


@pytest.mark.timeout(240)
def test_a_real_run_with_the_embedded_models(tiny_set, capsys):
    out = tiny_set.parent / "answers.json"

    assert main([str(tiny_set), "--max-tokens", "16", "--json", str(out)]) == 0

    report = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "smollm2-135m (embedded)" in printed and "escalation rate" in printed
    assert report["models"] == {
        "embedded:smollm2-135m": "smollm2-135m (embedded)",
        "embedded:gemma3-270m": "gemma3-270m (embedded)",
    }
    assert (report["questions"], report["answerable"], report["question_ids"]) == (2, 1, ["q1", "q3"])
    assert len(report["records"]) == 4
    for item in report["records"]:
        assert item["error"] is None
        assert all(1 <= value <= 5 for value in item["scores"].values())
        assert 0 < item["completion_tokens"] <= 16
    for figures in report["per_question"].values():
        assert figures["prompt_tokens"] > 0 and figures["latency_s"] > 0
        assert figures["cpu_s"] > 0  # the embedded models decode in this process
    assert 0.0 <= report["escalation_rate"] <= 1.0
    for summary in report["summary"].values():
        assert 1 <= summary["groundedness"] <= 5 and summary["errors"] == 0


def test_a_missing_set_folder_exits_with_2(tiny_set, capsys):
    assert main([str(tiny_set.parent / "nowhere")]) == 2
    assert "not a QA set folder" in capsys.readouterr().err


def test_an_unknown_model_exits_with_2(tiny_set, capsys):
    assert main([str(tiny_set), "--models", "slm,no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "embedded:gemma3-270m" in err


def test_an_unreachable_server_exits_with_2(tiny_set, monkeypatch, capsys):
    url = refused_url()
    monkeypatch.setenv("MODEL_SERVER_URL", url)
    assert main([str(tiny_set)]) == 2
    assert url in capsys.readouterr().err


def test_unknown_question_ids_exit_with_2(tiny_set, capsys):
    ids = tiny_set.parent / "ids.txt"
    ids.write_text("# chosen\nq1\nq404\n")
    assert main([str(tiny_set), "--questions-file", str(ids)]) == 2
    assert "q404" in capsys.readouterr().err
