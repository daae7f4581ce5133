"""How well the escalation router picks the questions the large model should answer.

Run from the project root (tune on clapnq only, see ../shared/eval/README.md):

    .venv/bin/python -m evaluation.router ../shared/eval/clapnq --limit 40 --json
    .venv/bin/python -m evaluation.router <set-folder> [--limit N] [--seed S]
                                               [--max-tokens M] [--json] [--png PATH]

For every question of the set (or a reproducible sample of `--limit` of them that
keeps the set's share of unanswerable questions) it:

1. retrieves passages exactly as the app does (same chunking, retriever and top-k
   from `Settings`) and builds the same grounded prompt;
2. answers with the SLM (temperature 0, with token log-probabilities) and with the
   LLM (temperature 0), the two models of the catalog: the embedded ones, or a
   configured server's;
3. scores each answer against the gold: SQuAD-style token F1 (best over the gold
   answers) when the question is answerable, and 1/0 for "did it say the documents
   do not cover it" when it is not;
4. computes the router's signals and `confidence` for the SLM answer with the
   thresholds from `Settings` (below 1 means escalate).

It reports, as one JSON object (`--json`) or a short summary:

- `slm_only`, `llm_only`: mean score when one model answers everything;
- `hybrid`: mean score and escalation rate at the configured thresholds
  (the LLM's score where the router escalates, the SLM's elsewhere);
- `auroc`: how well the confidence ranks good SLM answers (score >= 0.5) above the
  rest; `signal_auroc`: the same for each signal alone;
- `curve`: score against escalation rate when the confidence cut-off is swept from
  "never escalate" to "always escalate" (cut-off null means +infinity), also drawn
  as a PNG (default bench/results/router_curve_<set>.png);
- `per_question`: the figures the summary is made of.

`token_f1`, `auroc` and `sweep` are pure functions, importable by tests and notebooks.
Progress goes to stderr, one line per question.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from answering.attempts import generate
from models.factory import load_catalog, make_backends
from models.base import GenerationParams
from answering.confidence import Signals, collect_signals
from answering.grounding import CITATION, is_abstention
from answering.router import Thresholds, confidence
from models.settings import PROJECT_ROOT, Settings
from evaluation.retrieval import load_set
from rag.index import KnowledgeBase, SharedCorpus
from answering.prompt import build_messages, fit_passages
from rag.text import normalise_answer

DEFAULT_MAX_TOKENS = 96
# An SLM answer scoring at least this counts as good when measuring AUROC.
GOOD_ANSWER = 0.5


# --- pure functions -----------------------------------------------------------------


def token_f1(prediction: str, answers: str | Sequence[str]) -> float:
    """SQuAD-style token F1 of `prediction`, the best over the gold `answers`.

    Tokens are `normalise_answer(text).split()` (folded words). With no gold answer
    the result is 0.
    """
    golds = [answers] if isinstance(answers, str) else list(answers)
    predicted = normalise_answer(prediction).split()
    best = 0.0
    for gold in golds:
        expected = normalise_answer(gold).split()
        if not predicted or not expected:
            best = max(best, float(predicted == expected))
            continue
        same = sum((Counter(predicted) & Counter(expected)).values())
        if same:
            precision, recall = same / len(predicted), same / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def score_answer(text: str, answers: Sequence[str]) -> float:
    """Token F1 for an answerable question; 1 if it abstains (else 0) for an unanswerable one."""
    if not answers:
        return float(is_abstention(text))
    return token_f1(CITATION.sub(" ", text), answers)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half).

    Rank-based (Mann-Whitney U with average ranks for ties). None when there are
    no positives or no negatives.
    """
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1  # average 1-based rank of the tie
        start = end + 1
    rank_sum = sum(rank for rank, label in zip(ranks, labels) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def hybrid_point(
    confidences: Sequence[float], slm_scores: Sequence[float], llm_scores: Sequence[float], cutoff: float
) -> tuple[float, float]:
    """(escalation rate, mean score) when every answer with confidence < `cutoff` is escalated."""
    n = len(confidences)
    if not n:
        return 0.0, 0.0
    escalated = [value < cutoff for value in confidences]
    total = sum(llm if up else slm for up, slm, llm in zip(escalated, slm_scores, llm_scores))
    return sum(escalated) / n, total / n


def sweep(
    confidences: Sequence[float],
    slm_scores: Sequence[float],
    llm_scores: Sequence[float],
    cutoffs: Sequence[float] | None = None,
) -> list[dict]:
    """Score against escalation rate over cut-offs (escalate iff confidence < cut-off).

    By default the cut-offs are 0, each distinct confidence value, and +infinity,
    which covers every escalation rate the confidence can give, from 0 to 1. Each
    point is `{cutoff, escalation_rate, score}`; an infinite cut-off is written as
    None so that the result is valid JSON.
    """
    if cutoffs is None:
        cutoffs = [0.0, *sorted(set(confidences) - {0.0}), math.inf]
    points = []
    for cutoff in cutoffs:
        rate, score = hybrid_point(confidences, slm_scores, llm_scores, cutoff)
        points.append({
            "cutoff": None if math.isinf(cutoff) else cutoff,
            "escalation_rate": rate,
            "score": score,
        })
    return points


def sample_questions(questions: Sequence[dict], limit: int | None, seed: int) -> list[dict]:
    """`limit` questions drawn with `random.Random(seed)`, keeping the set's answerable/unanswerable mix."""
    if limit is None or limit >= len(questions):
        return list(questions)
    rng = random.Random(seed)
    answerable = [i for i, q in enumerate(questions) if q["answers"]]
    unanswerable = [i for i, q in enumerate(questions) if not q["answers"]]
    take = round(limit * len(answerable) / len(questions))
    chosen = rng.sample(answerable, take) + rng.sample(unanswerable, limit - take)
    return [questions[i] for i in sorted(chosen)]


# --- running the models -------------------------------------------------------------


@dataclass
class Record:
    """One question's outcome."""

    id: str
    answerable: bool
    slm_score: float
    llm_score: float
    confidence: float
    answer_tokens: int
    low_token_prob: float | None
    retrieval_score: float
    abstained: bool
    slm_error: str | None = None
    llm_error: str | None = None


async def _run(
    settings: Settings, knowledge: KnowledgeBase, questions: list[dict], max_tokens: int
) -> tuple[list[Record], dict[str, str]]:
    backends = make_backends(settings)
    catalog = await load_catalog(settings, backends)
    for notice in catalog.notices:
        print(f"note: {notice}", file=sys.stderr)
    slm, llm = catalog.slm, catalog.llm
    thresholds = Thresholds(
        settings.router_min_answer_tokens, settings.router_min_token_prob, settings.router_min_retrieval_score
    )
    slm_params = GenerationParams(max_tokens=max_tokens, temperature=0.0, logprobs=True)
    llm_params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    # Both models get the same passages: those that fit the smaller window.
    window = min(slm.context_window, llm.context_window)
    records: list[Record] = []
    for number, question in enumerate(questions, start=1):
        started = time.perf_counter()
        text = question["question"]
        hits = knowledge.search(text, settings.retrieval_mode, settings.top_k)
        best = hits[0].score if hits else 0.0
        passages = fit_passages([hit.chunk for hit in hits], text, window, max_tokens)
        small_run = await generate(slm, build_messages(text, [], passages, slm.context_window, max_tokens),
                                   slm_params, backends)
        large = (await generate(llm, build_messages(text, [], passages, llm.context_window, max_tokens),
                                llm_params, backends)).answer
        small = small_run.answer
        completion_tokens = small.usage.completion_tokens if small.usage else len(small_run.logprobs)
        signals: Signals = collect_signals(small.text, completion_tokens, small_run.logprobs, best)
        record = Record(
            id=str(question["id"]),
            answerable=bool(question["answers"]),
            slm_score=score_answer(small.text, question["answers"]),
            llm_score=score_answer(large.text, question["answers"]),
            confidence=confidence(signals, thresholds),
            answer_tokens=signals.answer_tokens,
            low_token_prob=signals.low_token_prob,
            retrieval_score=best,
            abstained=signals.abstained,
            slm_error=str(small.error) if small.error else None,
            llm_error=str(large.error) if large.error else None,
        )
        records.append(record)
        errors = "".join(f" {who} error: {e}" for who, e in (("SLM", record.slm_error), ("LLM", record.llm_error)) if e)
        print(
            f"[{number}/{len(questions)}] {'answerable' if record.answerable else 'unanswerable':12} "
            f"slm {record.slm_score:.2f} llm {record.llm_score:.2f} confidence {record.confidence:.2f} "
            f"({time.perf_counter() - started:.1f}s){errors}",
            file=sys.stderr, flush=True,
        )
    return records, {"slm": slm.label, "llm": llm.label}


# --- the report ---------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(records: Sequence[Record]) -> dict:
    """The figures of the report that depend only on the per-question records."""
    slm = [r.slm_score for r in records]
    llm = [r.llm_score for r in records]
    conf = [r.confidence for r in records]
    good = [score >= GOOD_ANSWER for score in slm]
    rate, hybrid = hybrid_point(conf, slm, llm, 1.0)
    escalated = [c < 1.0 for c in conf]
    with_probs = [r for r in records if r.low_token_prob is not None]

    def by_kind(scores: Sequence[float], answerable: bool) -> float | None:
        return _mean([s for s, r in zip(scores, records) if r.answerable == answerable])

    hybrid_scores = [l if up else s for up, s, l in zip(escalated, slm, llm)]
    return {
        "slm_only": {"score": _mean(slm), "answerable": by_kind(slm, True), "unanswerable": by_kind(slm, False)},
        "llm_only": {"score": _mean(llm), "answerable": by_kind(llm, True), "unanswerable": by_kind(llm, False)},
        "hybrid": {
            "score": hybrid if records else None,
            "escalation_rate": rate if records else None,
            "answerable": by_kind(hybrid_scores, True),
            "unanswerable": by_kind(hybrid_scores, False),
        },
        "auroc": auroc(conf, good),
        "good_slm_answers": sum(good),
        "signal_auroc": {
            "answer_tokens": auroc([r.answer_tokens for r in records], good),
            "low_token_prob": auroc(
                [r.low_token_prob for r in with_probs], [r.slm_score >= GOOD_ANSWER for r in with_probs]
            ),
            "retrieval_score": auroc([r.retrieval_score for r in records], good),
            # 1 when the SLM did not abstain: the direction the router reads it in.
            "no_abstention": auroc([float(not r.abstained) for r in records], good),
        },
        "signals_available": len(with_probs) / len(records) if records else 0.0,
        "curve": sweep(conf, slm, llm),
        "errors": {
            "slm": sum(1 for r in records if r.slm_error),
            "llm": sum(1 for r in records if r.llm_error),
        },
    }


def plot_curve(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    axes.plot([p["escalation_rate"] for p in curve], [p["score"] for p in curve],
              marker=".", color="tab:blue", label="hybrid, cut-off swept")
    axes.axhline(report["slm_only"]["score"], color="tab:orange", linestyle="--",
                 label=f"SLM only: {report['models']['slm']}")
    axes.axhline(report["llm_only"]["score"], color="tab:green", linestyle="--",
                 label=f"LLM only: {report['models']['llm']}")
    axes.plot([report["hybrid"]["escalation_rate"]], [report["hybrid"]["score"]], marker="*",
              markersize=14, color="tab:red", linestyle="none", label="default thresholds")
    axes.set_xlim(-0.02, 1.02)
    # From 0, so that a small wiggle does not look like a large effect.
    top = max([p["score"] for p in curve] + [report["slm_only"]["score"], report["llm_only"]["score"]])
    axes.set_ylim(0, min(1.0, top * 1.25) or 1.0)
    axes.set_xlabel("escalation rate (share of questions the LLM answers)")
    axes.set_ylabel("mean score (token F1 / correct abstention)")
    auc = report["auroc"]
    axes.set_title(f"Router on {report['set']}: {report['questions']} questions, "
                   f"AUROC {'n/a' if auc is None else f'{auc:.2f}'} "
                   f"({report['good_slm_answers']} good SLM answers)", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Score the SLM, the LLM and the router's hybrid on a QA set; sweep the escalation cut-off."
    )
    parser.add_argument("set_folder", type=Path, help="a set in the neutral format, e.g. ../shared/eval/clapnq")
    parser.add_argument("--limit", type=int, default=None, help="answer a sample of N questions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"answer length limit (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--png", type=Path, default=None,
                        help="where to draw the curve (default bench/results/router_curve_<set>.png)")
    args = parser.parse_args(argv)

    folder: Path = args.set_folder
    missing = [name for name in ("docs.jsonl", "questions.jsonl") if not (folder / name).is_file()]
    if missing:
        print(f"{folder} is not a QA set folder (no {' or '.join(missing)}): pass one such as "
              f"../shared/eval/clapnq", file=sys.stderr)
        return 2
    if (args.limit is not None and args.limit < 1) or args.max_tokens < 1:
        print("--limit and --max-tokens must be at least 1", file=sys.stderr)
        return 2

    started = time.perf_counter()
    settings = Settings()
    documents, questions = load_set(folder)
    questions = sample_questions(questions, args.limit, args.seed)
    set_name = folder.resolve().name
    knowledge = KnowledgeBase(SharedCorpus(documents), settings.chunk_size, settings.chunk_overlap)
    print(f"{set_name}: {len(documents)} documents, {len(questions)} questions; indexing and answering…",
          file=sys.stderr, flush=True)

    records, models = asyncio.run(_run(settings, knowledge, questions, args.max_tokens))

    report = {
        "set": set_name,
        "questions": len(records),
        "answerable": sum(1 for r in records if r.answerable),
        "models": models,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "limit": args.limit,
        "thresholds": {
            "min_answer_tokens": settings.router_min_answer_tokens,
            "min_token_prob": settings.router_min_token_prob,
            "min_retrieval_score": settings.router_min_retrieval_score,
        },
        **summarise(records),
        "per_question": [asdict(record) for record in records],
    }
    png = args.png or PROJECT_ROOT / "bench" / "results" / f"router_curve_{set_name}.png"
    report["png"] = str(png)
    report["seconds"] = round(time.perf_counter() - started, 1)
    plot_curve(report, png)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{set_name}: {report['questions']} questions ({report['answerable']} answerable), "
          f"SLM {models['slm']}, LLM {models['llm']}, max {args.max_tokens} tokens")
    print(f"  SLM only   {_fmt(report['slm_only']['score'])}")
    print(f"  LLM only   {_fmt(report['llm_only']['score'])}")
    print(f"  hybrid     {_fmt(report['hybrid']['score'])}  "
          f"(escalation rate {_fmt(report['hybrid']['escalation_rate'])})")
    print(f"  AUROC      {_fmt(report['auroc'])} over {report['good_slm_answers']} good SLM answers (signals: "
          + ", ".join(f"{name} {_fmt(value)}" for name, value in report["signal_auroc"].items()) + ")")
    print(f"  token probabilities for {report['signals_available']:.0%} of SLM answers")
    print(f"  {report['seconds']:.0f} s; curve in {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
