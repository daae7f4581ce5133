"""How well the escalation router picks the questions the large model should answer.

Run from the project root (tune on clapnq only, see ../shared/eval/README.md):

    .venv/bin/python -m evaluation.router ../shared/eval/clapnq --limit 40 --json
    .venv/bin/python -m evaluation.router <set-folder> [--limit N] [--seed S]
                                               [--max-tokens M] [--guard G] [--json] [--png PATH]

For every question of the set (or a reproducible sample of `--limit` of them that
keeps the set's share of unanswerable questions) it runs the chat's own turn pipeline
(`answering.pipeline.run_turn`: retrieval with the settings' chunking, retriever and
top-k, the out-of-scope rule, context selection, the grounded prompt and the support
check) at temperature 0 with the catalog's SLM and LLM, three times:

1. router `off`: the SLM alone; `always-llm`: the LLM alone; `escalate`: the router
   decides (its `Routed` event: the decision, its reasons and the SLM's signals);
2. each turn's final answer (`TurnDone.final`: what the user is left with, after the
   support check; quotes from the passages when no sentence stands; the out-of-scope
   notice) is scored against the gold: SQuAD-style token F1 (best over the gold
   answers) when the question is answerable, and 1/0 for "did it say the documents
   do not cover it" when it is not;
3. the SLM's `confidence` (`answering.router.confidence` of the signals the pipeline
   collected, with the settings' thresholds; below 1 means escalate) ranks the answers.
   An answer the pipeline escalated on its support (sentences cut, restating the
   question, drawn from the wrong passages) counts as confidence 0, so that at cut-off
   1 the sweep escalates exactly what the pipeline did.

It reports, as one JSON object (`--json`) or a short summary:

- `slm_only`, `llm_only`: mean score of the `off` and the `always-llm` turns;
- `hybrid`: mean score and escalation rate of the `escalate` turns (the pipeline's
  own decision at the configured thresholds);
- `auroc`: how well the confidence ranks good SLM answers (score >= 0.5) above the
  rest; `signal_auroc`: the same for each signal alone;
- `curve`: score against escalation rate when the confidence cut-off is swept from
  "never escalate" to "always escalate" (cut-off null means +infinity), mixing the
  `off` and `always-llm` scores, also drawn as a PNG (default
  bench/results/router_curve_<set>.png). A question the router never sees (out of
  scope: no model answers; or the SLM failed) is never escalated;
- `per_question`: the figures the summary is made of.

`token_f1`, `auroc` and `sweep` are pure functions, importable by tests and notebooks.
Progress goes to stderr, one line per question.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

from answering.grounding import CITATION, GuardMode, is_abstention
from answering.pipeline import Retrieved, Routed, TurnConfig, TurnDone, TurnRequest, embed_ahead, run_turn
from answering.reply import reply_for, without_struck
from answering.router import Decision, Mode, Thresholds, confidence
from evaluation.sets import SHORT_FACT_WORDS, fact_position, load_questions, sample_questions
from models.base import Backend, GenerationParams
from models.catalog import Catalog
from models.factory import load_catalog, make_backends
from models.routing import PairRouting, load_routing, pair_key, save_routing
from models.settings import PROJECT_ROOT, Settings
from rag.documents import Chunk
from rag.index import KnowledgeBase
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


def score_answer(text: str, answers: Sequence[str], pattern: str | None = None) -> float:
    """For an answerable question, 1 if the text shows a short expected fact (the handbook
    set's, six words or fewer) else 0, or token F1 against written answers (the shared sets');
    for an unanswerable one, 1 if it abstains (else 0)."""
    if not answers:
        return float(is_abstention(text))
    if all(len(answer.split()) <= SHORT_FACT_WORDS for answer in answers):
        return float(fact_position(text, answers, pattern) is not None)
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
    rank_sum = sum(rank for rank, label in zip(ranks, labels, strict=False) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def hybrid_point(
    confidences: Sequence[float], slm_scores: Sequence[float], llm_scores: Sequence[float], cutoff: float
) -> tuple[float, float]:
    """(escalation rate, mean score) when every answer with confidence < `cutoff` is escalated."""
    n = len(confidences)
    if not n:
        return 0.0, 0.0
    escalated = [value < cutoff for value in confidences]
    total = sum(llm if up else slm for up, slm, llm in zip(escalated, slm_scores, llm_scores, strict=False))
    return sum(escalated) / n, total / n


def sweep(
    confidences: Sequence[float],
    slm_scores: Sequence[float],
    llm_scores: Sequence[float],
    cutoffs: Sequence[float] | None = None,
) -> list[dict[str, float | None]]:
    """Score against escalation rate over cut-offs (escalate iff confidence < cut-off).

    By default the cut-offs are 0, each distinct confidence value, and +infinity,
    which covers every escalation rate the confidence can give, from 0 to 1. Each
    point is `{cutoff, escalation_rate, score}`; an infinite cut-off is written as
    None so that the result is valid JSON.
    """
    if cutoffs is None:
        cutoffs = [0.0, *sorted(set(confidences) - {0.0, math.inf}), math.inf]
    points = []
    for cutoff in cutoffs:
        rate, score = hybrid_point(confidences, slm_scores, llm_scores, cutoff)
        points.append(
            {
                "cutoff": None if math.isinf(cutoff) else cutoff,
                "escalation_rate": rate,
                "score": score,
            }
        )
    return points


def best_cutoff(curve: Sequence[Mapping[str, float | None]]) -> Mapping[str, float | None]:
    """The point of the sweep with the best score; of equal scores, the one that escalates least."""
    return max(curve, key=lambda point: (round(point["score"] or 0.0, 6), -(point["escalation_rate"] or 0.0)))


def chosen_routing(report: Mapping[str, Any], thresholds: Thresholds) -> PairRouting:
    """The pair's routing from a report: `escalate` with the thresholds scaled to the best
    cut-off of the sweep; or `off`, with the thresholds as configured, when the large model
    alone did not score better than the small one."""
    point = best_cutoff(report["curve"])
    cutoff = point["cutoff"]
    better = (report["llm_only"]["score"] or 0.0) > (report["slm_only"]["score"] or 0.0)
    # Not escalated by default: a chat switched to `escalate` gets the settings' thresholds.
    scale = 1.0 if not better else 1e6 if cutoff is None else float(cutoff)
    return PairRouting(
        "escalate" if better else "off",
        {
            "min_answer_tokens": round(thresholds.min_answer_tokens * scale),
            "min_low_token_prob": round(thresholds.min_low_token_prob * scale, 4),
            "min_retrieval_score": round(thresholds.min_retrieval_score * scale, 4),
            "min_copy_margin": round(thresholds.min_copy_margin * scale, 4),
        },
        f"evaluation.router on {report['set']} ({report['questions']} questions, seed {report['seed']}), "
        f"{date.today().isoformat()}: small model alone {_fmt(report['slm_only']['score'])}, large model alone "
        f"{_fmt(report['llm_only']['score'])}, best mix {_fmt(point['score'])} at "
        f"{_fmt(point['escalation_rate'])} escalated; AUROC {_fmt(report['auroc'])}",
    )


# --- running the models -------------------------------------------------------------


@dataclass
class Record:
    """One question's outcome: a pipeline turn per router mode, each final answer scored."""

    id: str
    answerable: bool
    slm_score: float  # the `off` turn: the SLM alone
    llm_score: float  # the `always-llm` turn: the LLM alone
    hybrid_score: float  # the `escalate` turn: the router decides
    escalated: bool  # the `escalate` turn's decision
    confidence: float | None  # None when the router never saw the question
    answer_tokens: int | None
    low_token_prob: float | None
    copy_margin: float | None  # a copy answer: how far the model's choice led the next candidate
    retrieval_score: float
    abstained: bool | None
    reasons: list[str] = field(default_factory=list)  # the signals the decision names
    sources: dict[str, str] = field(default_factory=dict)  # where each mode's final answer came from
    slm_error: str | None = None
    llm_error: str | None = None


# The router mode of each turn per question, by the score it gives.
MODES = {"slm": Mode.OFF, "llm": Mode.ALWAYS_LLM, "hybrid": Mode.ESCALATE}


@dataclass(frozen=True)
class _Outcome:
    """What one turn told: its end, the router's verdict (if it was asked) and the best retrieval score."""

    done: TurnDone
    routed: Routed | None
    best_score: float


async def _turn(request: TurnRequest, backends: Mapping[str, Backend], config: TurnConfig) -> _Outcome:
    done: TurnDone | None = None
    routed: Routed | None = None
    best = 0.0
    async for event in run_turn(request, backends, config):
        if isinstance(event, Retrieved):
            best = event.best_score
        elif isinstance(event, Routed):
            routed = event
        elif isinstance(event, TurnDone):
            done = event
    assert done is not None, "run_turn ends every turn with TurnDone"
    return _Outcome(done, routed, best)


def escalation_confidence(routed: Routed | None, config: TurnConfig) -> float | None:
    """The confidence of the SLM's answer as the sweep reads it; None when the router never saw it.

    An answer the pipeline escalated although its confidence is at least 1 was escalated
    on its support, which the confidence does not see: it counts as 0 (escalated at every
    cut-off above 0), so that cut-off 1 reproduces the pipeline's own decision.
    """
    if routed is None or routed.signals is None:
        return None
    value = confidence(routed.signals, config.thresholds)
    return 0.0 if routed.decision.escalate and value >= 1.0 else value


async def _run(
    settings: Settings,
    knowledge: KnowledgeBase,
    chunks: Sequence[Chunk],
    questions: list[dict[str, Any]],
    max_tokens: int,
    guard: GuardMode,
) -> tuple[list[Record], dict[str, str], str]:
    backends = make_backends(settings)
    catalog: Catalog = await load_catalog(settings, backends)
    for notice in catalog.notices:
        print(f"note: {notice}", file=sys.stderr)
    # The settings' thresholds, not those stored for the pair: the sweep scales them.
    config = replace(TurnConfig.from_settings(settings), pairs={})
    params = GenerationParams(max_tokens=max_tokens, temperature=settings.temperature)
    # As the app does at start-up (EMBED_CORPUS_AHEAD), so that no turn waits for it.
    if settings.embed_corpus_ahead:
        await asyncio.to_thread(embed_ahead, settings, chunks)
    records: list[Record] = []
    for number, question in enumerate(questions, start=1):
        started = time.perf_counter()
        outcomes: dict[str, _Outcome] = {}
        for name, mode in MODES.items():
            # No fallback: the catalog's two models are measured, and a failure is reported as such.
            request = TurnRequest(
                question["question"],
                knowledge,
                catalog.slm,
                catalog.llm,
                params=params,
                router_mode=mode,
                retrieval_mode=settings.retrieval_mode,
                top_k=settings.top_k,
                guard=guard,
            )
            outcomes[name] = await _turn(request, backends, config)
        record = _record(question, outcomes, config)
        records.append(record)
        errors = "".join(f" {who} error: {e}" for who, e in (("SLM", record.slm_error), ("LLM", record.llm_error)) if e)
        conf = "n/a (not routed)" if record.confidence is None else f"{record.confidence:.2f}"
        print(
            f"[{number}/{len(questions)}] {'answerable' if record.answerable else 'unanswerable':12} "
            f"slm {record.slm_score:.2f} llm {record.llm_score:.2f} hybrid {record.hybrid_score:.2f} "
            f"({'escalated' if record.escalated else 'kept'}) confidence {conf} "
            f"({time.perf_counter() - started:.1f}s){errors}",
            file=sys.stderr,
            flush=True,
        )
    return records, {"slm": catalog.slm.label, "llm": catalog.llm.label}, pair_key(catalog.slm.key, catalog.llm.key)


def _record(question: dict[str, Any], outcomes: Mapping[str, _Outcome], config: TurnConfig) -> Record:
    golds = list(question["answers"])
    routed = outcomes["hybrid"].routed
    signals = routed.signals if routed else None
    decision = routed.decision if routed else Decision(Mode.ESCALATE, escalate=False)
    small, large = outcomes["slm"].done.slm_answer, outcomes["llm"].done.llm_answer
    pattern = question.get("pattern")

    def score(name: str) -> float:
        # What the user reads: the reply's body, struck-through text left out.
        return score_answer(without_struck(reply_for(outcomes[name].done).body), golds, pattern)

    return Record(
        id=str(question["id"]),
        answerable=bool(golds),
        slm_score=score("slm"),
        llm_score=score("llm"),
        hybrid_score=score("hybrid"),
        escalated=decision.escalate,
        confidence=escalation_confidence(routed, config),
        answer_tokens=signals.answer_tokens if signals else None,
        low_token_prob=signals.low_token_prob if signals else None,
        copy_margin=signals.copy_margin if signals else None,
        retrieval_score=outcomes["hybrid"].best_score,
        abstained=signals.abstained if signals else None,
        reasons=[reason.signal for reason in decision.reasons],
        sources={name: outcome.done.final.source for name, outcome in outcomes.items()},
        slm_error=str(small.error) if small and small.error else None,
        llm_error=str(large.error) if large and large.error else None,
    )


# --- the report ---------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(records: Sequence[Record]) -> dict[str, Any]:
    """The figures of the report that depend only on the per-question records."""
    slm = [r.slm_score for r in records]
    llm = [r.llm_score for r in records]
    hybrid = [r.hybrid_score for r in records]
    # The router never saw an out-of-scope question (no model answers it) or a failed SLM answer.
    routed = [r for r in records if r.confidence is not None]
    good = [r.slm_score >= GOOD_ANSWER for r in routed]
    with_probs = [r for r in routed if r.low_token_prob is not None]

    def by_kind(scores: Sequence[float], answerable: bool) -> float | None:
        return _mean([s for s, r in zip(scores, records, strict=True) if r.answerable == answerable])

    def signal(values: Sequence[float]) -> float | None:
        return auroc(values, good)

    return {
        "slm_only": {"score": _mean(slm), "answerable": by_kind(slm, True), "unanswerable": by_kind(slm, False)},
        "llm_only": {"score": _mean(llm), "answerable": by_kind(llm, True), "unanswerable": by_kind(llm, False)},
        "hybrid": {
            "score": _mean(hybrid),
            "escalation_rate": _mean([float(r.escalated) for r in records]),
            "answerable": by_kind(hybrid, True),
            "unanswerable": by_kind(hybrid, False),
        },
        "routed": len(routed),
        "auroc": auroc([r.confidence for r in routed if r.confidence is not None], good),
        "good_slm_answers": sum(good),
        "signal_auroc": {
            "answer_tokens": signal([r.answer_tokens or 0 for r in routed]),
            "low_token_prob": auroc(
                [r.low_token_prob for r in with_probs if r.low_token_prob is not None],
                [r.slm_score >= GOOD_ANSWER for r in with_probs],
            ),
            "copy_margin": auroc(
                [r.copy_margin for r in routed if r.copy_margin is not None],
                [r.slm_score >= GOOD_ANSWER for r in routed if r.copy_margin is not None],
            ),
            "retrieval_score": signal([r.retrieval_score for r in routed]),
            # 1 when the SLM did not abstain: the direction the router reads it in.
            "no_abstention": signal([float(not r.abstained) for r in routed]),
        },
        "signals_available": len(with_probs) / len(routed) if routed else 0.0,
        "curve": sweep([math.inf if r.confidence is None else r.confidence for r in records], slm, llm),
        "errors": {
            "slm": sum(1 for r in records if r.slm_error),
            "llm": sum(1 for r in records if r.llm_error),
        },
    }


def plot_curve(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    axes.plot(
        [p["escalation_rate"] for p in curve],
        [p["score"] for p in curve],
        marker=".",
        color="tab:blue",
        label="hybrid, cut-off swept",
    )
    axes.axhline(
        report["slm_only"]["score"], color="tab:orange", linestyle="--", label=f"SLM only: {report['models']['slm']}"
    )
    axes.axhline(
        report["llm_only"]["score"], color="tab:green", linestyle="--", label=f"LLM only: {report['models']['llm']}"
    )
    axes.plot(
        [report["hybrid"]["escalation_rate"]],
        [report["hybrid"]["score"]],
        marker="*",
        markersize=14,
        color="tab:red",
        linestyle="none",
        label="the pipeline's escalate turns",
    )
    axes.set_xlim(-0.02, 1.02)
    # From 0, so that a small wiggle does not look like a large effect.
    top = max([p["score"] for p in curve] + [report["slm_only"]["score"], report["llm_only"]["score"]])
    axes.set_ylim(0, min(1.0, top * 1.25) or 1.0)
    axes.set_xlabel("escalation rate (share of questions the LLM answers)")
    axes.set_ylabel("mean score (token F1 / correct abstention)")
    auc = report["auroc"]
    axes.set_title(
        f"Router on {report['set']}: {report['questions']} questions, "
        f"AUROC {'n/a' if auc is None else f'{auc:.2f}'} "
        f"({report['good_slm_answers']} good of {report['routed']} routed SLM answers)",
        fontsize=10,
    )
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
    parser.add_argument(
        "--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help=f"answer length limit (default {DEFAULT_MAX_TOKENS})"
    )
    parser.add_argument(
        "--guard",
        choices=[mode.value for mode in GuardMode],
        default=None,
        help="the support check's mode in every turn (default: GROUNDING_GUARD)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--save",
        action="store_true",
        help="keep the chosen mode and thresholds for this model pair in models/routing.json, where the app reads them",
    )
    parser.add_argument(
        "--png", type=Path, default=None, help="where to draw the curve (default bench/results/router_curve_<set>.png)"
    )
    args = parser.parse_args(argv)

    folder: Path = args.set_folder
    if not (folder / "questions.jsonl").is_file():
        print(
            f"{folder} is not a QA set folder (no questions.jsonl): pass one such as ../shared/eval/clapnq "
            "or evaluation/handbook",
            file=sys.stderr,
        )
        return 2
    if (args.limit is not None and args.limit < 1) or args.max_tokens < 1:
        print("--limit and --max-tokens must be at least 1", file=sys.stderr)
        return 2

    started = time.perf_counter()
    settings = Settings()
    corpus, questions = load_questions(folder, settings)
    questions = sample_questions(questions, args.limit, args.seed)
    set_name = folder.resolve().name
    knowledge = KnowledgeBase(corpus, settings.chunk_size, settings.chunk_overlap)
    print(
        f"{set_name}: {len(corpus.documents)} documents, {len(questions)} questions; indexing and answering…",
        file=sys.stderr,
        flush=True,
    )

    guard = GuardMode(args.guard or settings.grounding_guard)
    chunks = corpus.chunks(settings.chunk_size, settings.chunk_overlap)
    records, models, pair = asyncio.run(_run(settings, knowledge, chunks, questions, args.max_tokens, guard))
    thresholds = TurnConfig.from_settings(settings).thresholds

    report = {
        "set": set_name,
        "questions": len(records),
        "answerable": sum(1 for r in records if r.answerable),
        "models": models,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "limit": args.limit,
        "guard": guard.value,
        "min_retrieval_score": settings.min_retrieval_score,
        "thresholds": asdict(thresholds),
        **summarise(records),
        "per_question": [asdict(record) for record in records],
    }
    chosen = chosen_routing(report, thresholds)
    report["chosen"] = {"pair": pair, **asdict(chosen)}
    if args.save:
        pairs = load_routing()
        pairs[pair] = chosen
        save_routing(pairs)
    png = args.png or PROJECT_ROOT / "bench" / "results" / f"router_curve_{set_name}.png"
    report["png"] = str(png)
    report["seconds"] = round(time.perf_counter() - started, 1)
    plot_curve(report, png)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{set_name}: {report['questions']} questions ({report['answerable']} answerable), "
        f"SLM {models['slm']}, LLM {models['llm']}, max {args.max_tokens} tokens, guard {guard.value}"
    )
    print(f"  SLM only   {_fmt(report['slm_only']['score'])}")
    print(f"  LLM only   {_fmt(report['llm_only']['score'])}")
    print(
        f"  hybrid     {_fmt(report['hybrid']['score'])}  (escalation rate {_fmt(report['hybrid']['escalation_rate'])})"
    )
    print(
        f"  AUROC      {_fmt(report['auroc'])} over {report['routed']} routed SLM answers, "
        f"{report['good_slm_answers']} good (signals: "
        + ", ".join(f"{name} {_fmt(value)}" for name, value in report["signal_auroc"].items())
        + ")"
    )
    print(f"  token probabilities for {report['signals_available']:.0%} of routed SLM answers")
    print(
        f"  chosen for {pair}: mode {chosen.mode}, thresholds {chosen.thresholds}"
        + (" (saved in models/routing.json)" if args.save else " (--save keeps them in models/routing.json)")
    )
    print(f"  {report['seconds']:.0f} s; curve in {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
