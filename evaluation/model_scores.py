"""Answer quality per model on a QA set: groundedness, correctness and conciseness from 1 to 5.

Run from the project root (tune on clapnq only, see ../shared/eval/README.md):

    .venv/bin/python -m evaluation.model_scores ../shared/eval/clapnq --limit 5
    .venv/bin/python -m evaluation.model_scores <set-folder> [--limit N] [--seed S]
        [--questions-file IDS] [--models a,b,...] [--max-tokens M] [--judge MODEL]
        [--judge-max-tokens M] [--json PATH]

A fixed list of questions (a reproducible sample of `--limit` of them that keeps the
set's share of unanswerable questions, or the ids listed in `--questions-file`, one a
line) is answered by every model of `--models` (default: the SLM and the LLM of the
settings), at temperature 0, through the app's own turn pipeline with the router and
the answer guard off (`answering.pipeline.run_turn`): the set's documents chunked with
the app's settings, the same retriever, top-k, context selection (for the smallest
budget of the models compared) and grounded prompt. Every model answers from the same
passages. Each model first
answers one untimed warm-up request, so that loading its weights is not counted.

Every answer is scored by the rubric of `evaluation.rubric` (pure functions; the
mapping tables are in its docstrings). With `--judge MODEL` a capable model (usually
a server's) gives the three scores instead; where its reply cannot be read, the
rubric's scores count for that answer and the fallback is counted.

With two models or more, the first plays the SLM and the second the LLM (the default
order), and the report adds the escalation rate: the share of the SLM's answers the
pipeline's router, in escalate mode with the thresholds from the settings, hands to the
LLM (the turn stops at the decision: the LLM's answer is the one scored on its own); and
the hybrid's scores (the LLM's where it escalates).

The table goes to stdout; the JSON (default bench/results/answers-<set>-<time>.json)
holds every answer with its scores, plus `per_question`, the per-model means that
`python -m evaluation.cost` turns into a cost per 1,000 questions:

    {model_key: {"prompt_tokens": mean, "completion_tokens": mean,
                 "latency_s": median, "cpu_s": mean, or null for a server model}}

CPU-seconds are this process's CPU time during the answer: the embedded models decode
in it; a server's CPU is not visible from here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from answering.attempts import Answer, Generation, generate
from answering.comparison import CommandFailure, models_for_command, resolve_models
from answering.context import Excerpt
from answering.grounding import GuardMode
from answering.pipeline import Retrieved, Routed, TurnConfig, TurnRequest, run_turn
from answering.router import Decision, Mode
from evaluation import rubric
from evaluation.retrieval import load_set
from evaluation.router import DEFAULT_MAX_TOKENS, sample_questions
from models.base import Backend, ChatMessage, GenerationParams
from models.catalog import ModelSpec
from models.factory import make_backends
from models.settings import PROJECT_ROOT, Settings
from rag.index import KnowledgeBase, SharedCorpus

DEFAULT_LIMIT = 20
DEFAULT_JUDGE_MAX_TOKENS = 64
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


# --- answering ----------------------------------------------------------------------


async def judge_scores(
    judge: ModelSpec,
    backends: Mapping[str, Backend],
    question: str,
    answer: str,
    passages: Sequence[str],
    gold_answers: Sequence[str],
    max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
) -> tuple[rubric.Scores | None, str]:
    """The judge's scores for one answer (None when its reply cannot be read) and its reply."""
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    result = await generate(judge, rubric.judge_messages(question, answer, passages, gold_answers), params, backends)
    if result.answer.error:
        return None, f"error: {result.answer.error}"
    return rubric.parse_judge_reply(result.answer.text), result.answer.text


@dataclass
class AnswerRecord:
    """One model's answer to one question, its measurements and its scores."""

    question_id: str
    question: str
    answerable: bool
    model: str  # catalog key
    text: str
    finish_reason: str
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_estimated: bool
    ttft_s: float | None
    latency_s: float
    cpu_s: float | None
    retrieval_score: float
    passages: int
    rubric: dict[str, int]
    support: float | None
    f1: float | None
    length_ratio: float | None
    judge: dict[str, int] | None = None
    judge_reply: str | None = None
    judge_fallback: bool = False
    scores: dict[str, int] = field(default_factory=dict)  # the judge's, or the rubric's
    escalate: bool | None = None  # SLM answers only: the router's verdict
    escalation_reasons: list[str] = field(default_factory=list)


async def run(
    settings: Settings,
    knowledge: KnowledgeBase,
    questions: Sequence[dict],
    models: Sequence[ModelSpec],
    backends: Mapping[str, Backend],
    max_tokens: int,
    judge: ModelSpec | None = None,
    judge_max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS,
    progress: bool = True,
) -> list[AnswerRecord]:
    """Answer every question with every model (models one after the other, so that their
    timings do not disturb each other) and score each answer."""
    slm = models[0] if len(models) >= 2 else None
    await warm_up([*models, *([judge] if judge else [])], backends)
    # Every model answers from the same passages: those chosen for the smallest budget.
    config = TurnConfig.from_settings(settings)
    narrowest = min(models, key=config.budget)
    records: list[AnswerRecord] = []
    bar = tqdm(total=len(questions) * len(models), desc="answers", unit="answer", file=sys.stderr, disable=not progress)
    for question in questions:
        for spec in models:
            bar.set_postfix_str(spec.model)
            # The app asks its SLM for token probabilities: the router reads them.
            params = GenerationParams(max_tokens=max_tokens, temperature=0.0, logprobs=spec is slm)
            mode = Mode.ESCALATE if spec is slm else Mode.OFF
            result, best, passages, decision = await _one_model_turn(
                question["question"], spec, knowledge, settings, params, backends, narrowest, mode
            )
            records.append(await _record(question, spec, result, best, passages, judge, backends, judge_max_tokens))
            if spec is slm and not result.answer.error:
                records[-1].escalate = decision.escalate
                records[-1].escalation_reasons = [reason.explanation for reason in decision.reasons]
            bar.update()
    bar.close()
    return records


async def _one_model_turn(
    question: str,
    spec: ModelSpec,
    knowledge: KnowledgeBase,
    settings: Settings,
    params: GenerationParams,
    backends: Mapping[str, Backend],
    narrowest: ModelSpec,
    mode: Mode = Mode.OFF,
) -> tuple[Generation, float, list[str], Decision]:
    """One model's own answer, through the app's pipeline with the router and the guard off:
    the same retrieval, context selection and prompt as the chat. Every model reads the
    passages chosen for the smallest budget of the models compared (`narrowest`). The model
    writes its answer whatever `ANSWER_STYLES` says: the rubric scores a model's own words,
    and the cost of an answer is its tokens (`evaluation.answers` measures copy answers)."""
    request = TurnRequest(
        question,
        knowledge,
        slm=spec,
        llm=narrowest,
        router_mode=mode,
        guard=GuardMode.OFF,
        params=params,
        retrieval_mode=settings.retrieval_mode,
        top_k=settings.top_k,
        answer_style="compose",
    )
    config = replace(TurnConfig.from_settings(settings), min_retrieval_score=0.0)
    cpu_started = time.process_time()
    excerpts: list[Excerpt] = []
    answer: Answer | None = None
    decision: Decision | None = None
    turn = run_turn(request, backends, config)
    try:
        async for event in turn:
            if isinstance(event, Retrieved):
                excerpts = event.excerpts
            elif isinstance(event, Answer):
                answer = event
            elif isinstance(event, Routed):
                decision = event.decision
                break  # the router's decision is all this turn is for; the LLM is scored on its own
    finally:
        await turn.aclose()
    cpu = time.process_time() - cpu_started if spec.backend == "embedded" else None
    assert answer is not None and decision is not None
    best = max((excerpt.hit.score for excerpt in excerpts), default=0.0)
    passages = [f"{excerpt.label}\n{excerpt.text}" for excerpt in excerpts]
    return Generation(answer, list(answer.logprobs), cpu), best, passages, decision


async def warm_up(models: Sequence[ModelSpec], backends: Mapping[str, Backend]) -> None:
    """One tiny untimed request per model: loads embedded weights, and fails early
    (`CommandFailure`) when a model is missing or its server unreachable."""
    for spec in models:
        result = await generate(
            spec, [ChatMessage("user", "Hello")], GenerationParams(max_tokens=1, temperature=0.0), backends
        )
        if result.answer.error:
            raise CommandFailure(f"{spec.key} cannot answer: {result.answer.error}")


async def _record(
    question: dict,
    spec: ModelSpec,
    result: Generation,
    best: float,
    passages: list[str],
    judge: ModelSpec | None,
    backends: Mapping[str, Backend],
    judge_max_tokens: int,
) -> AnswerRecord:
    answer, golds = result.answer, list(question["answers"])
    detail = rubric.score(answer.text, passages, golds)
    record = AnswerRecord(
        question_id=str(question["id"]),
        question=question["question"],
        answerable=bool(golds),
        model=spec.key,
        text=answer.text,
        finish_reason=answer.finish_reason,
        error=str(answer.error) if answer.error else None,
        prompt_tokens=answer.usage.prompt_tokens if answer.usage else None,
        completion_tokens=answer.usage.completion_tokens if answer.usage else None,
        tokens_estimated=bool(answer.usage and answer.usage.estimated),
        ttft_s=answer.ttft_s,
        latency_s=answer.total_s,
        cpu_s=result.cpu_s,
        retrieval_score=best,
        passages=len(passages),
        rubric=detail.scores.as_dict,
        support=detail.support,
        f1=detail.f1,
        length_ratio=detail.length_ratio,
        scores=detail.scores.as_dict,
    )
    if judge is not None:
        judged, reply = await judge_scores(
            judge, backends, question["question"], answer.text, passages, golds, judge_max_tokens
        )
        record.judge_reply = reply
        if judged is None:
            record.judge_fallback = True
        else:
            record.judge = record.scores = judged.as_dict
    return record


# --- the report ---------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def per_question(records: Sequence[AnswerRecord]) -> dict[str, dict]:
    """Per model: mean tokens in and out, median latency, mean CPU-seconds (None for a
    server model), over the answers that did not fail. The contract `evaluation.cost` reads."""
    figures: dict[str, dict] = {}
    for key in dict.fromkeys(record.model for record in records):
        answered = [r for r in records if r.model == key and not r.error]
        cpu = [r.cpu_s for r in answered if r.cpu_s is not None]
        figures[key] = {
            "prompt_tokens": _mean([r.prompt_tokens for r in answered if r.prompt_tokens is not None]),
            "completion_tokens": _mean([r.completion_tokens for r in answered if r.completion_tokens is not None]),
            "latency_s": statistics.median([r.latency_s for r in answered]) if answered else None,
            "cpu_s": _mean(cpu) if cpu else None,
        }
    return figures


def model_summary(records: Sequence[AnswerRecord]) -> dict:
    """Mean of each criterion and of latency and tokens, answers, errors, judge fallbacks."""
    answered = [r for r in records if not r.error]
    summary = {name: _mean([r.scores[name] for r in records]) for name in rubric.CRITERIA}
    summary.update(
        {
            "answers": len(records),
            "errors": len(records) - len(answered),
            "latency_s": _mean([r.latency_s for r in answered]),
            "prompt_tokens": _mean([r.prompt_tokens for r in answered if r.prompt_tokens is not None]),
            "completion_tokens": _mean([r.completion_tokens for r in answered if r.completion_tokens is not None]),
            "judge_fallbacks": sum(r.judge_fallback for r in records),
        }
    )
    return summary


def escalation(records: Sequence[AnswerRecord], slm: str, llm: str) -> dict:
    """The router's escalation rate over the SLM's answers, and the hybrid's scores: the
    LLM's answer where the router escalates, the SLM's elsewhere."""
    small = {r.question_id: r for r in records if r.model == slm and r.escalate is not None}
    large = {r.question_id: r for r in records if r.model == llm}
    escalated = [qid for qid, r in small.items() if r.escalate]
    chosen = [large[qid] if small[qid].escalate and qid in large else small[qid] for qid in small]
    return {
        "escalation_rate": len(escalated) / len(small) if small else None,
        "escalated": len(escalated),
        "routed": len(small),
        "hybrid": {name: _mean([r.scores[name] for r in chosen]) for name in rubric.CRITERIA},
    }


def build_report(
    records: Sequence[AnswerRecord], models: Sequence[ModelSpec], judge: ModelSpec | None, meta: dict
) -> dict:
    report = {
        **meta,
        "models": {spec.key: spec.label for spec in models},
        "judge": judge.key if judge else None,
        "summary": {spec.key: model_summary([r for r in records if r.model == spec.key]) for spec in models},
        "per_question": per_question(records),
    }
    if len(models) >= 2:
        routed = escalation(records, models[0].key, models[1].key)
        report["roles"] = {"slm": models[0].key, "llm": models[1].key}
        report["escalation_rate"] = routed.pop("escalation_rate")
        report["hybrid"] = routed
    report["records"] = [asdict(record) for record in records]
    return report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_table(report: dict) -> str:
    """The per-model summary table, for humans."""
    scorer = f"the judge {report['judge']} (rubric where its reply was unreadable)" if report["judge"] else "the rubric"
    lines = [
        (
            f"{report['set']}: {report['questions']} questions ({report['answerable']} answerable), "
            f"{report['retrieval_mode']} top-{report['top_k']}, max {report['max_tokens']} tokens, "
            f"temperature 0, scored 1-5 by {scorer}"
        ),
        (
            f"{'model':28} {'grounded':>8} {'correct':>8} {'concise':>8} {'latency s':>10} "
            f"{'tokens in':>10} {'tokens out':>10} {'errors':>7}"
        ),
    ]
    for key, row in report["summary"].items():
        label = report["models"][key]
        fallbacks = f"  ({row['judge_fallbacks']} judge fallbacks)" if report["judge"] else ""
        lines.append(
            f"{label[:28]:28} {_fmt(row['groundedness']):>8} {_fmt(row['correctness']):>8} "
            f"{_fmt(row['conciseness']):>8} {_fmt(row['latency_s']):>10} {_fmt(row['prompt_tokens'], 1):>10} "
            f"{_fmt(row['completion_tokens'], 1):>10} {row['errors']:>7}{fallbacks}"
        )
    if "hybrid" in report:
        hybrid = report["hybrid"]
        rate = report["escalation_rate"]
        lines.append(
            f"{'hybrid (router, escalate)':28} {_fmt(hybrid['hybrid']['groundedness']):>8} "
            f"{_fmt(hybrid['hybrid']['correctness']):>8} {_fmt(hybrid['hybrid']['conciseness']):>8}"
        )
        lines.append(
            f"escalation rate: {'n/a' if rate is None else f'{rate:.0%}'} "
            f"({hybrid['escalated']} of {hybrid['routed']} answers of {report['roles']['slm']} "
            f"would go to {report['roles']['llm']})"
        )
    return "\n".join(lines)


# --- the command --------------------------------------------------------------------


def read_question_ids(path: Path) -> list[str]:
    """Question ids, one a line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CommandFailure(f"cannot read --questions-file {path}: {error.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def pick_questions(questions: Sequence[dict], limit: int, seed: int, ids: Sequence[str] | None) -> list[dict]:
    if ids is None:
        return sample_questions(questions, limit or None, seed)
    by_id = {str(q["id"]): q for q in questions}
    unknown = [qid for qid in ids if qid not in by_id]
    if unknown:
        raise CommandFailure(f"{len(unknown)} question ids are not in the set, e.g. {unknown[0]!r}")
    return [by_id[qid] for qid in ids]


async def _main_async(args: argparse.Namespace, settings: Settings) -> dict:
    folder: Path = args.set_folder
    missing = [name for name in ("docs.jsonl", "questions.jsonl") if not (folder / name).is_file()]
    if missing:
        raise CommandFailure(
            f"{folder} is not a QA set folder (no {' or '.join(missing)}): pass one such as ../shared/eval/clapnq"
        )
    documents, questions = load_set(folder)
    ids = read_question_ids(args.questions_file) if args.questions_file else None
    questions = pick_questions(questions, args.limit, args.seed, ids)

    backends = make_backends(settings)
    names = [name for name in args.models.split(",") if name.strip()] if args.models else None
    # Fails rather than quietly answering with the embedded models when a needed server is down.
    catalog, chosen = await models_for_command(settings, backends, names)
    try:
        judge = resolve_models([args.judge], catalog, settings.model_aliases)[0] if args.judge else None
    except ValueError as error:
        raise CommandFailure(str(error)) from None
    models = list({spec.key: spec for spec in chosen}.values())  # each model once, in order

    knowledge = KnowledgeBase(SharedCorpus(documents), settings.chunk_size, settings.chunk_overlap)
    print(
        f"{folder.resolve().name}: {len(documents)} documents, {len(questions)} questions, "
        f"models {', '.join(spec.key for spec in models)}",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    records = await run(settings, knowledge, questions, models, backends, args.max_tokens, judge, args.judge_max_tokens)
    meta = {
        "set": folder.resolve().name,
        "questions": len(questions),
        "answerable": sum(1 for q in questions if q["answers"]),
        "question_ids": [str(q["id"]) for q in questions],
        "seed": args.seed,
        "limit": args.limit,
        "max_tokens": args.max_tokens,
        "temperature": 0.0,
        "retrieval_mode": settings.retrieval_mode,
        "top_k": settings.top_k,
        "chunk_size": settings.chunk_size,
        "thresholds": {
            "min_answer_tokens": settings.router_min_answer_tokens,
            "min_token_prob": settings.router_min_token_prob,
            "min_retrieval_score": settings.router_min_retrieval_score,
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    return build_report(records, models, judge, meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Score each model's answers on a QA set (groundedness, correctness, conciseness, 1-5)."
    )
    parser.add_argument("set_folder", type=Path, help="a set in the neutral format, e.g. ../shared/eval/clapnq")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"a reproducible sample of N questions (default {DEFAULT_LIMIT}; 0: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument(
        "--questions-file", type=Path, default=None, help="question ids to answer, one a line (instead of the sample)"
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated models (slm, llm, catalog keys, ids, aliases); default: the settings' SLM and LLM",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"answer length limit (default {DEFAULT_MAX_TOKENS})"
    )
    parser.add_argument("--judge", default=None, help="score with this model as the judge instead of the rubric")
    parser.add_argument(
        "--judge-max-tokens",
        type=int,
        default=DEFAULT_JUDGE_MAX_TOKENS,
        help=f"length limit of the judge's reply (default {DEFAULT_JUDGE_MAX_TOKENS})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the JSON (default bench/results/answers-<set>-<time>.json)",
    )
    args = parser.parse_args(argv)
    if args.limit < 0 or args.max_tokens < 1 or args.judge_max_tokens < 1:
        print("--limit must be at least 0, --max-tokens and --judge-max-tokens at least 1", file=sys.stderr)
        return 2

    settings = Settings()
    try:
        report = asyncio.run(_main_async(args, settings))
    except CommandFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = args.json or RESULTS_DIR / f"answers-{report['set']}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(format_table(report))
    print(f"{report['seconds']:.0f} s; JSON in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
