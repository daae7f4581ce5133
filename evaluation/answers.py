"""What the user sees, on a question set: the app's own turn pipeline, question by question.

    .venv/bin/python -m evaluation.answers evaluation/handbook
    .venv/bin/python -m evaluation.answers ../shared/eval/clapnq --limit 40 [--router-mode off] [--guard mark]

Each question goes through `answering.pipeline.run_turn` with the app's settings
(retrieval, context budget, answer styles, router, guard, temperature), and the reply is
built by `answering.reply.reply_for`, as the chat builds it. The report counts what the
user reads in it; struck-through text, and what is inside the collapsed "How this answer
was made", does not count as seen:

- answerable questions whose expected fact the user sees, by a model answer (written, or
  a passage sentence the model chose) or by the quoted fallback; model answers that do
  not show it;
- words in the visible reply, and the word at which the fact first appears;
- unanswerable questions told so (the documents do not cover it, or the model
  said so), and those given an invented answer;
- answer sentences shown unmarked that the support check does not support;
- answers that loop (shown, and in the models' raw text); prompts over a model's context
  window; words per answer;
- time to first token and total time (median, p90); the escalation rate.

A set folder holds `questions.jsonl` ({"id", "question", "answers": [...],
optional "pattern"}) and either `docs.jsonl` (the shared sets) or nothing else:
then the questions are answered over CORPUS_DIR as the app indexes it (the
handbook set). A short expected fact (six words or fewer) is seen when the
answer contains it, or matches "pattern"; a long one (the shared sets' written
answers) when the answer has at least half of its content words.
The table goes to stdout, every answer to the JSON (default
bench/results/turns-<set>-<time>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from tqdm import tqdm

from answering.attempts import Answer
from answering.grounding import (
    Evidence,
    GuardMode,
    check_sentence,
    is_repetitive,
    opens_with_abstention,
    split_sentences,
    words,
)
from answering.pipeline import Retrieved, TurnConfig, TurnDone, TurnRequest, embed_ahead, run_turn
from answering.reply import model_words, reply_for, without_struck
from answering.router import Mode
from evaluation.sets import fact_position, fact_seen, load_questions, sample_questions
from models.base import Backend, ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog
from models.embedded import OVER_WINDOW
from models.factory import load_catalog, make_backends
from models.settings import PROJECT_ROOT, Settings
from rag.index import KnowledgeBase

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


@dataclass
class TurnRecord:
    id: str
    question: str
    answerable: bool
    shown: str  # the reply the user reads (struck-through text left out), without the collapsed element
    source: str  # slm | llm | quotes | out_of_scope | general | none
    copied: bool  # the final answer is a passage sentence a model chose
    fact_seen: bool | None  # None for an unanswerable question
    fact_in_model_words: bool  # in the model's answer itself, not only in the evidence quoted under it
    fact_word: int | None  # words of the reply before the fact first appears
    told_out_of_scope: bool
    invented: bool  # an unanswerable question answered by a model with a claim
    unsupported_shown: int  # sentences shown unmarked that the check does not support
    sentences_shown: int
    cuts: int
    loops_shown: bool  # a model answer that loops (quotes are the passages' own words)
    over_window: int  # model attempts whose prompt did not fit the model's context window
    loops_raw: bool
    words: int  # of the reply the user reads
    escalated: bool
    best_score: float  # the best retrieved passage's score (what the out-of-scope threshold sees)
    ttft_s: float | None
    total_s: float
    slm_text: str | None = None
    llm_text: str | None = None
    reasons: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)  # what the models read, "[n] label\ntext"
    # A copy answer's candidates, best first: [text, match, question likelihood, shows the fact].
    candidates: list[list] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase, as the latency panel shows


async def answer_one(
    question: dict,
    knowledge: KnowledgeBase,
    catalog: Catalog,
    backends: Mapping[str, Backend],
    settings: Settings,
    mode: Mode,
    guard: GuardMode,
    max_tokens: int,
    show_drafts: bool = False,
) -> TurnRecord:
    request = TurnRequest(
        question=question["question"],
        knowledge=knowledge,
        slm=catalog.slm,
        llm=catalog.llm,
        fallback=catalog.embedded_fallback,
        params=GenerationParams(max_tokens=max_tokens, temperature=settings.temperature),
        router_mode=mode,
        retrieval_mode=settings.retrieval_mode,
        top_k=settings.top_k,
        guard=guard,
    )
    started = time.perf_counter()
    first_token: float | None = None
    done: TurnDone | None = None
    best_score = 0.0
    async for event in run_turn(request, backends, TurnConfig.from_settings(settings)):
        if isinstance(event, TokenEvent) and first_token is None:
            first_token = time.perf_counter() - started
        elif isinstance(event, Retrieved):
            best_score = event.best_score
        elif isinstance(event, TurnDone):
            done = event
    assert done is not None, "run_turn ends every turn with TurnDone"
    final, golds = done.final, list(question["answers"])
    shown = without_struck(reply_for(done, show_drafts).body)
    # Checked as the pipeline checked it (a cross-script question with its sound-alike words).
    evidence = Evidence.of((f"{e.label}\n{e.text}" for e in done.excerpts), done.question or question["question"])
    from_model = final.source in ("slm", "llm")
    model_text = model_words(final)
    shown_sentences = [s for s in split_sentences(model_text) if not s.fence and words(s.text)] if from_model else []
    unsupported = sum(not check_sentence(s.text, evidence, code=s.code).supported for s in shown_sentences)
    # What the models wrote; a chosen passage sentence is the documents' own words.
    raw = [a.text for a in (done.slm_answer, done.llm_answer) if isinstance(a, Answer) and not a.copied]
    told = final.source == "out_of_scope" or (from_model and opens_with_abstention(final.text))
    position = fact_position(shown, golds, question.get("pattern")) if golds else None
    return TurnRecord(
        id=str(question["id"]),
        question=question["question"],
        answerable=bool(golds),
        shown=shown,
        source=final.source,
        copied=final.copied,
        fact_seen=position is not None if golds else None,
        fact_in_model_words=from_model and bool(golds) and fact_seen(model_text, golds, question.get("pattern")),
        fact_word=position,
        told_out_of_scope=told,
        invented=not golds and from_model and not opens_with_abstention(final.text),
        unsupported_shown=unsupported,
        sentences_shown=len(shown_sentences),
        cuts=len(final.cuts),
        loops_shown=from_model and is_repetitive(model_text),
        loops_raw=any(is_repetitive(text) for text in raw),
        over_window=sum(
            getattr(answer.error.what, "msgid", None) in OVER_WINDOW for answer in done.attempts if answer.error
        ),
        words=len(words(shown)),
        escalated=done.decision.escalate,
        best_score=best_score,
        ttft_s=first_token,
        total_s=done.timings.total_s,
        slm_text=done.slm_answer.text if done.slm_answer else None,
        llm_text=done.llm_answer.text if done.llm_answer else None,
        reasons=[reason.explanation for reason in done.decision.reasons],
        passages=[f"[{e.number}] {e.label}\n{e.text}" for e in done.excerpts],
        candidates=[
            [
                c.cited,
                round(c.ranking, 3),
                c.likelihood,
                bool(golds) and fact_seen(c.text, golds, question.get("pattern")),
            ]
            for answer in (done.slm_answer, done.llm_answer)
            if answer is not None and answer.choice is not None
            for c in answer.choice.candidates
        ],
        phases=done.timings.phases(),
    )


def _share(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


def summarise(records: Sequence[TurnRecord]) -> dict:
    answerable = [r for r in records if r.answerable]
    unanswerable = [r for r in records if not r.answerable]
    generated = [r for r in records if r.source in ("slm", "llm", "quotes", "none")]
    seen = [r for r in answerable if r.fact_seen]
    by_model = [r for r in answerable if r.source in ("slm", "llm")]
    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "fact_seen": _share([bool(r.fact_seen) for r in answerable]),
        "fact_seen_from_model": sum(r.source in ("slm", "llm") for r in seen),
        "fact_seen_from_copies": sum(r.source in ("slm", "llm") and r.copied for r in seen),
        "fact_in_model_words": sum(r.fact_in_model_words for r in seen),
        "fact_seen_from_quotes": sum(r.source in ("quotes", "out_of_scope") for r in seen),
        "model_answers_without_fact": sum(not r.fact_seen for r in by_model),
        "fact_within_30_words": _share([r.fact_word is not None and r.fact_word < 30 for r in answerable]),
        "fact_word": _quantiles([r.fact_word for r in seen if r.fact_word is not None]),
        "sources": {s: sum(r.source == s for r in records) for s in dict.fromkeys(r.source for r in records)},
        "out_of_scope_told": _share([r.told_out_of_scope for r in unanswerable]),
        "out_of_scope_invented": sum(r.invented for r in unanswerable),
        "answerable_refused": sum(r.source == "out_of_scope" for r in answerable),
        "unsupported_shown": sum(r.unsupported_shown for r in records),
        "sentences_shown": sum(r.sentences_shown for r in records),
        "loops_shown": sum(r.loops_shown for r in records),
        "loops_raw": sum(r.loops_raw for r in records),
        "over_window": sum(r.over_window for r in records),
        "words": _quantiles([r.words for r in records]),
        "words_answerable": _quantiles([r.words for r in answerable]),
        "ttft_s": _quantiles([r.ttft_s for r in records if r.ttft_s is not None]),
        "total_s": _quantiles([r.total_s for r in records]),
        "escalation_rate": _share([r.escalated for r in generated]),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def format_table(report: dict) -> str:
    s = report["summary"]

    def n(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    rows = [
        (
            "answerable questions whose fact the user sees",
            f"{_pct(s['fact_seen'])} of {s['answerable']} ({s['fact_seen_from_model']} by a model answer, "
            f"{s['fact_seen_from_copies']} of them a sentence it chose, {s['fact_in_model_words']} in the model's "
            f"own words; {s['fact_seen_from_quotes']} by quotes; {s['answerable_refused']} told out of scope)",
        ),
        ("model answers without the fact", f"{s['model_answers_without_fact']} of {s['answerable']} answerable"),
        ("the fact within the reply's first 30 words", _pct(s["fact_within_30_words"])),
        (
            "words before the fact (median / p90)",
            f"{n(s['fact_word']['median'])} / {n(s['fact_word']['p90'])}",
        ),
        (
            "words in the visible reply (median / p90)",
            f"{n(s['words']['median'])} / {n(s['words']['p90'])}; answerable {n(s['words_answerable']['median'])}",
        ),
        (
            "unanswerable questions told so",
            f"{_pct(s['out_of_scope_told'])} of {s['unanswerable']} ({s['out_of_scope_invented']} invented answers)",
        ),
        ("unsupported sentences shown unmarked", f"{s['unsupported_shown']} of {s['sentences_shown']}"),
        ("answers that loop (shown / raw model text)", f"{s['loops_shown']} / {s['loops_raw']}"),
        ("prompts over a model's context window", str(s["over_window"])),
        ("time to first token (median / p90)", f"{_s(s['ttft_s']['median'])} / {_s(s['ttft_s']['p90'])}"),
        ("total time (median / p90)", f"{_s(s['total_s']['median'])} / {_s(s['total_s']['p90'])}"),
        ("escalation rate", _pct(s["escalation_rate"])),
        ("final answer from", ", ".join(f"{k} {v}" for k, v in s["sources"].items())),
    ]
    head = (
        f"{report['set']}: {report['questions']} questions, router {report['router_mode']}, "
        f"guard {report['guard']}, temperature {report['temperature']}, {report['slm']} → {report['llm']}"
        + (", drafts shown in the reply" if report.get("show_drafts") else "")
    )
    width = max(len(name) for name, _ in rows)
    return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])


async def evaluate(
    folder: Path,
    settings: Settings,
    limit: int,
    seed: int,
    mode: Mode | None,
    guard: GuardMode,
    max_tokens: int,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
    show_drafts: bool = False,
) -> dict:
    corpus, questions = load_questions(folder, settings)
    questions = sample_questions(questions, limit or None, seed)
    backends = backends or make_backends(settings)
    catalog = await load_catalog(settings, backends)
    knowledge = KnowledgeBase(corpus, settings.chunk_size, settings.chunk_overlap)
    mode = mode or TurnConfig.from_settings(settings).router_mode_for(catalog.slm, catalog.llm)
    # Load the models before timing anything.
    for spec in (catalog.slm, catalog.llm):
        async for _ in backends[spec.backend].stream_chat(
            spec.model, [ChatMessage("user", "Hi")], GenerationParams(max_tokens=1, temperature=0.0)
        ):
            pass
    # As the app does at start-up, before the first question (EMBED_CORPUS_AHEAD).
    started = time.perf_counter()
    chunks = corpus.chunks(settings.chunk_size, settings.chunk_overlap)
    embedded = await asyncio.to_thread(embed_ahead, settings, chunks) if settings.embed_corpus_ahead else 0
    embedding_s = time.perf_counter() - started
    started = time.perf_counter()
    records = []
    for question in tqdm(questions, desc="turns", unit="question", file=sys.stderr, disable=not progress):
        records.append(
            await answer_one(question, knowledge, catalog, backends, settings, mode, guard, max_tokens, show_drafts)
        )
    return {
        "set": folder.resolve().name,
        "questions": len(records),
        "router_mode": mode.value,
        "guard": guard.value,
        "slm": catalog.slm.key,
        "llm": catalog.llm.key,
        "max_tokens": max_tokens,
        "temperature": settings.temperature,
        "answer_styles": dict(settings.answer_styles),
        "show_drafts": show_drafts,
        "retrieval_mode": settings.retrieval_mode,
        "top_k": settings.top_k,
        "min_retrieval_score": settings.min_retrieval_score,
        "context_budget": {
            "embedded": settings.embedded_context_budget,
            "server": settings.server_context_budget,
            **settings.model_context_budgets,
        },
        "seconds": round(time.perf_counter() - started, 1),
        "sentences_embedded_ahead": {"count": embedded, "seconds": round(embedding_s, 1)},
        "summary": summarise(records),
        "records": [asdict(record) for record in records],
    }


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(description="What the user sees: the app's pipeline on a question set.")
    parser.add_argument("set_folder", type=Path, help="e.g. evaluation/handbook or ../shared/eval/clapnq")
    parser.add_argument("--limit", type=int, default=0, help="a reproducible sample of N questions (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--router-mode",
        default=settings.router_mode,
        choices=[m.value for m in Mode],
        help="default: ROUTER_MODE, else the mode measured for the model pair (models/routing.json)",
    )
    parser.add_argument("--guard", default=settings.grounding_guard, choices=[g.value for g in GuardMode])
    parser.add_argument("--max-tokens", type=int, default=settings.max_tokens)
    parser.add_argument(
        "--show-drafts",
        action="store_true",
        help='the reply as the chat shows it with "Show drafts in the reply" on (struck-through text still not seen)',
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    if not (args.set_folder / "questions.jsonl").is_file():
        print(
            f"error: {args.set_folder} has no questions.jsonl: pass a set folder such as evaluation/handbook",
            file=sys.stderr,
        )
        return 2
    report = asyncio.run(
        evaluate(
            args.set_folder,
            settings,
            args.limit,
            args.seed,
            Mode(args.router_mode) if args.router_mode else None,
            GuardMode(args.guard),
            args.max_tokens,
            show_drafts=args.show_drafts,
        )
    )
    path = args.json or RESULTS_DIR / f"turns-{report['set']}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(format_table(report))
    ahead = report["sentences_embedded_ahead"]
    print(f"{report['seconds']:.0f} s, after {ahead['count']} sentences embedded ahead in {ahead['seconds']:.0f} s")
    print(f"JSON in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
