"""Retrieval quality on a QA set: `python -m evaluation.retrieval <set-folder> [--json]`.

The set is in the neutral format of ../shared/eval/README.md (docs.jsonl,
questions.jsonl). Documents are chunked and indexed exactly as the app indexes
its corpus (same chunker, same settings), and every retriever is scored:

- recall@1/5/10 and MRR at document level, over questions that have gold documents;
- answer_hit@5: share of questions with an answer whose normalised text appears
  in one of the top 5 chunks;
- ms_per_query: mean wall time of one search.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models.settings import Settings
from rag.chunking import chunk_documents
from rag.documents import Document
from rag.retrieval import RETRIEVERS, make_retriever
from rag.text import normalise_answer

# Enough chunks to find ten distinct documents even when one document fills the top.
_CHUNKS_SEARCHED = 100


def load_set(folder: Path) -> tuple[list[Document], list[dict]]:
    with (folder / "docs.jsonl").open(encoding="utf-8") as lines:
        documents = [
            Document(row["id"], row.get("title", ""), folder.name, row["text"]) for row in map(json.loads, lines)
        ]
    with (folder / "questions.jsonl").open(encoding="utf-8") as lines:
        questions = [json.loads(line) for line in lines]
    return documents, questions


def evaluate(folder: Path, chunk_size: int, chunk_overlap: int, modes: list[str]) -> dict:
    documents, questions = load_set(folder)
    chunks = chunk_documents(documents, chunk_size, chunk_overlap)
    report: dict = {
        "set": folder.name,
        "documents": len(documents),
        "chunks": len(chunks),
        "questions": len(questions),
        "chunk_size": chunk_size,
        "chunk_overlap": chunk_overlap,
    }
    for mode in modes:
        retriever = make_retriever(mode, chunks)
        recall = {1: 0, 5: 0, 10: 0}
        reciprocal_ranks = 0.0
        with_gold = with_answer = answer_hits = 0
        elapsed = 0.0
        for question in questions:
            started = time.perf_counter()
            hits = retriever.search(question["question"], _CHUNKS_SEARCHED)
            elapsed += time.perf_counter() - started
            if question["gold_doc_ids"]:
                with_gold += 1
                ranked_documents = list(dict.fromkeys(hit.chunk.document.id for hit in hits))
                gold = set(question["gold_doc_ids"])
                first = next((i for i, doc_id in enumerate(ranked_documents, 1) if doc_id in gold), None)
                for k in recall:
                    recall[k] += first is not None and first <= k
                reciprocal_ranks += 1 / first if first else 0.0
            if question["answers"]:
                with_answer += 1
                top_text = [normalise_answer(hit.chunk.text) for hit in hits[:5]]
                answers = [normalise_answer(answer) for answer in question["answers"]]
                answer_hits += any(a and a in text for a in answers for text in top_text)
        report[mode] = {
            "recall@1": recall[1] / max(with_gold, 1),
            "recall@5": recall[5] / max(with_gold, 1),
            "recall@10": recall[10] / max(with_gold, 1),
            "mrr": reciprocal_ranks / max(with_gold, 1),
            "answer_hit@5": answer_hits / max(with_answer, 1),
            "ms_per_query": 1000 * elapsed / max(len(questions), 1),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_folder", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--chunk-size", type=int, default=settings.chunk_size)
    parser.add_argument("--chunk-overlap", type=int, default=settings.chunk_overlap)
    parser.add_argument("--retrievers", default=",".join(RETRIEVERS))
    args = parser.parse_args(argv)
    if not (args.set_folder / "docs.jsonl").is_file():
        print(f"{args.set_folder} has no docs.jsonl: pass a set folder such as ../shared/eval/clapnq", file=sys.stderr)
        return 2
    modes = args.retrievers.split(",")
    report = evaluate(args.set_folder, args.chunk_size, args.chunk_overlap, modes)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['set']}: {report['documents']} documents, {report['chunks']} chunks "
        f"(size {report['chunk_size']}, overlap {report['chunk_overlap']}), {report['questions']} questions"
    )
    columns = ["recall@1", "recall@5", "recall@10", "mrr", "answer_hit@5", "ms_per_query"]
    print(f"{'retriever':10}" + "".join(f"{c:>14}" for c in columns))
    for mode in modes:
        print(f"{mode:10}" + "".join(f"{report[mode][c]:>14.3f}" for c in columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
