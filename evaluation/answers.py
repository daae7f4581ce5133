"""What the user sees, on a question set: the app's own turn pipeline, question by question.

    .venv/bin/python -m evaluation.answers evaluation/handbook
    .venv/bin/python -m evaluation.answers ../shared/eval/clapnq --limit 40 [--router-mode off] [--guard mark]

Each question goes through `answering.pipeline.run_turn` with the app's settings
(retrieval, context budget, router, guard), at temperature 0, and the report
counts what the user is left with:

- answerable questions whose expected fact the user sees (from a model, with the
  passage sentence quoted under its answer, or from the quoted fallback), and how many
  of the model's answers state it in their own words;
- unanswerable questions told so (the documents do not cover it, or the model
  said so), and those given an invented answer;
- answer sentences shown unmarked that the support check does not support;
- answers that loop (shown, and in the models' raw text); words per answer;
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
import re
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
from answering.pipeline import CLOSEST_PASSAGES, Retrieved, TurnConfig, TurnDone, TurnRequest, embed_ahead, run_turn
from answering.router import Mode
from evaluation.retrieval import load_set
from evaluation.router import sample_questions
from models.base import Backend, ChatMessage, GenerationParams, TokenEvent
from models.catalog import Catalog
from models.factory import load_catalog, make_backends
from models.settings import PROJECT_ROOT, Settings
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import corpus_documents
from rag.text import normalise_answer, tokenize

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
SHORT_FACT_WORDS = 6
LONG_FACT_RECALL = 0.5


def fact_seen(text: str, answers: Sequence[str], pattern: str | None = None) -> bool:
    """Whether the answer shows one of the expected facts (see the module's docstring)."""
    if pattern and re.search(pattern, text, re.IGNORECASE):
        return True
    shown = f" {normalise_answer(text)} "
    shown_terms = set(tokenize(text))
    for answer in answers:
        if len(answer.split()) <= SHORT_FACT_WORDS:
            # Word for word, or as written ("~/.cache/x", "-DGGML_NATIVE=OFF"), never inside a longer word.
            as_written = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, re.IGNORECASE)
            if f" {normalise_answer(answer)} " in shown or as_written:
                return True
        else:
            wanted = set(tokenize(answer))
            if wanted and len(wanted & shown_terms) / len(wanted) >= LONG_FACT_RECALL:
                return True
    return False


@dataclass
class TurnRecord:
    id: str
    question: str
    answerable: bool
    shown: str  # the final answer the user is left with
    source: str  # slm | llm | quotes | out_of_scope | general | none
    fact_seen: bool | None  # None for an unanswerable question
    fact_in_model_words: bool  # in the model's answer itself, not only in the evidence quoted under it
    told_out_of_scope: bool
    invented: bool  # an unanswerable question answered by a model with a claim
    unsupported_shown: int  # sentences shown unmarked that the check does not support
    sentences_shown: int
    cuts: int
    loops_shown: bool  # a model answer that loops (quotes are the passages' own words)
    loops_raw: bool
    words: int
    escalated: bool
    best_score: float  # the best retrieved passage's score (what the out-of-scope threshold sees)
    ttft_s: float | None
    total_s: float
    slm_text: str | None = None
    llm_text: str | None = None
    reasons: list[str] = field(default_factory=list)
    passages: list[str] = field(default_factory=list)  # what the models read, "[n] label\ntext"
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
) -> TurnRecord:
    request = TurnRequest(
        question=question["question"],
        knowledge=knowledge,
        slm=catalog.slm,
        llm=catalog.llm,
        fallback=catalog.embedded_fallback,
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
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
    # A model's answer is shown with the passage sentence it is drawn from under it.
    shown = f"{final.text}\n\n{final.evidence}" if final.evidence else final.text
    evidence = Evidence.of((f"{e.label}\n{e.text}" for e in done.excerpts), question["question"])
    from_model = final.source in ("slm", "llm")
    model_text = final.text.split(CLOSEST_PASSAGES)[0]  # not the passages quoted under an abstention
    shown_sentences = [s for s in split_sentences(model_text) if not s.fence and words(s.text)] if from_model else []
    unsupported = sum(not check_sentence(s.text, evidence, code=s.code).supported for s in shown_sentences)
    raw = [a.text for a in (done.slm_answer, done.llm_answer) if isinstance(a, Answer)]
    told = final.source == "out_of_scope" or (from_model and opens_with_abstention(shown))
    return TurnRecord(
        id=str(question["id"]),
        question=question["question"],
        answerable=bool(golds),
        shown=shown,
        source=final.source,
        fact_seen=fact_seen(shown, golds, question.get("pattern")) if golds else None,
        fact_in_model_words=from_model and bool(golds) and fact_seen(final.text, golds, question.get("pattern")),
        told_out_of_scope=told,
        invented=not golds and from_model and not opens_with_abstention(shown),
        unsupported_shown=unsupported,
        sentences_shown=len(shown_sentences),
        cuts=len(final.cuts),
        loops_shown=from_model and is_repetitive(model_text),
        loops_raw=any(is_repetitive(text) for text in raw),
        words=len(words(shown)),
        escalated=done.decision.escalate,
        best_score=best_score,
        ttft_s=first_token,
        total_s=done.timings.total_s,
        slm_text=done.slm_answer.text if done.slm_answer else None,
        llm_text=done.llm_answer.text if done.llm_answer else None,
        reasons=[reason.explanation for reason in done.decision.reasons],
        passages=[f"[{e.number}] {e.label}\n{e.text}" for e in done.excerpts],
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
    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "fact_seen": _share([bool(r.fact_seen) for r in answerable]),
        "fact_seen_from_model": sum(r.source in ("slm", "llm") for r in seen),
        "fact_in_model_words": sum(r.fact_in_model_words for r in seen),
        "fact_seen_from_quotes": sum(r.source == "quotes" for r in seen),
        "sources": {s: sum(r.source == s for r in records) for s in dict.fromkeys(r.source for r in records)},
        "out_of_scope_told": _share([r.told_out_of_scope for r in unanswerable]),
        "out_of_scope_invented": sum(r.invented for r in unanswerable),
        "answerable_refused": sum(r.source == "out_of_scope" for r in answerable),
        "unsupported_shown": sum(r.unsupported_shown for r in records),
        "sentences_shown": sum(r.sentences_shown for r in records),
        "loops_shown": sum(r.loops_shown for r in records),
        "loops_raw": sum(r.loops_raw for r in records),
        "words_per_answer": statistics.mean([r.words for r in records]) if records else None,
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
    rows = [
        (
            "answerable questions whose fact the user sees",
            f"{_pct(s['fact_seen'])} ({s['fact_seen_from_model']} from a model, {s['fact_in_model_words']} of them "
            f"in its own words, {s['fact_seen_from_quotes']} quoted, "
            f"of {s['answerable']}; {s['answerable_refused']} told out of scope)",
        ),
        (
            "unanswerable questions told so",
            f"{_pct(s['out_of_scope_told'])} of {s['unanswerable']} ({s['out_of_scope_invented']} invented answers)",
        ),
        ("unsupported sentences shown unmarked", f"{s['unsupported_shown']} of {s['sentences_shown']}"),
        ("answers that loop (shown / raw model text)", f"{s['loops_shown']} / {s['loops_raw']}"),
        ("words per answer (mean)", f"{s['words_per_answer']:.1f}" if s["words_per_answer"] is not None else "n/a"),
        ("time to first token (median / p90)", f"{_s(s['ttft_s']['median'])} / {_s(s['ttft_s']['p90'])}"),
        ("total time (median / p90)", f"{_s(s['total_s']['median'])} / {_s(s['total_s']['p90'])}"),
        ("escalation rate", _pct(s["escalation_rate"])),
        ("final answer from", ", ".join(f"{k} {v}" for k, v in s["sources"].items())),
    ]
    head = (
        f"{report['set']}: {report['questions']} questions, router {report['router_mode']}, "
        f"guard {report['guard']}, {report['slm']} → {report['llm']}"
    )
    width = max(len(name) for name, _ in rows)
    return "\n".join([head, *(f"  {name:<{width}}  {value}" for name, value in rows)])


def load_questions(folder: Path, settings: Settings) -> tuple[SharedCorpus, list[dict]]:
    """A shared set's own documents, or (for a set of questions alone) the app's corpus."""
    if (folder / "docs.jsonl").is_file():
        documents, questions = load_set(folder)
        return SharedCorpus(documents), questions
    with (folder / "questions.jsonl").open(encoding="utf-8") as lines:
        questions = [json.loads(line) for line in lines if line.strip()]
    return SharedCorpus(corpus_documents(settings.corpus_dir)), questions


async def evaluate(
    folder: Path,
    settings: Settings,
    limit: int,
    seed: int,
    mode: Mode,
    guard: GuardMode,
    max_tokens: int,
    backends: Mapping[str, Backend] | None = None,
    progress: bool = True,
) -> dict:
    corpus, questions = load_questions(folder, settings)
    questions = sample_questions(questions, limit or None, seed)
    backends = backends or make_backends(settings)
    catalog = await load_catalog(settings, backends)
    knowledge = KnowledgeBase(corpus, settings.chunk_size, settings.chunk_overlap)
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
        records.append(await answer_one(question, knowledge, catalog, backends, settings, mode, guard, max_tokens))
    return {
        "set": folder.resolve().name,
        "questions": len(records),
        "router_mode": mode.value,
        "guard": guard.value,
        "slm": catalog.slm.key,
        "llm": catalog.llm.key,
        "max_tokens": max_tokens,
        "temperature": 0.0,
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
    parser.add_argument("--router-mode", default=settings.router_mode, choices=[m.value for m in Mode])
    parser.add_argument("--guard", default=settings.grounding_guard, choices=[g.value for g in GuardMode])
    parser.add_argument("--max-tokens", type=int, default=settings.max_tokens)
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
            Mode(args.router_mode),
            GuardMode(args.guard),
            args.max_tokens,
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
