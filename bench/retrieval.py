"""Retrieval at scale: index build time, memory and query latency per mode, against rank-bm25.

Builds a corpus of at least `--chunks` chunks (default 50,000) from the public sets in
../shared/eval (clapnq, covidqa, pubmedqa: their documents, repeated with new ids as
often as needed), chunked as the app chunks its corpus (CHUNK_SIZE, CHUNK_OVERLAP), and
for each mode (lexical, bm25, hybrid) measures:

- build: the time to index the corpus (`SharedCorpus.retriever`), wall and CPU (the
  CPU time is what to compare on a shared machine, where the wall time also counts
  waiting for a core), and the memory it holds (the process's RSS after the build minus
  before);
- load: the time to read the index back from a file as the persisted index keeps it
  (`to_arrays`, `np.savez`, then `np.load` and `retriever_from_arrays`);
- query latency: median and p99 of `search(question, TOP_K)` over `--queries` questions
  of the same sets (for hybrid, embedding the question included; its median is also
  given alone);
- one upload in a chat: `KnowledgeBase.add` of a `--upload-kb` text file (default 300 KB,
  the issue's figure) plus the first search, which indexes it (for hybrid, embeds it:
  `embed_s`);
- the baseline, in the same run on the same corpus: the previous implementation
  (rank-bm25's BM25Okapi with Lucene's idf, and the term-overlap loop in Python), which
  indexed each chat's uploads together with the whole corpus again. `ratio` is the
  baseline's figure over ours (above 1: ours is faster or smaller); `same_hits` is the
  share of questions whose TOP_K hits are the same chunks in the same order.

Embedding 50,000 chunks would take hours on two cores (0.2-0.5 s a chunk), so the hybrid
mode embeds `--embed-sample` distinct chunks (default 200), reports the time per chunk and
what the whole corpus would take at that rate (`embed_s_extrapolated`), and gives the other
chunks the sample's vectors in turn: the query latency, load time and memory are those of
a full 50,000-vector index.

Each measurement runs in a forked child process, so that one index's memory or warm
caches do not count for the next.

Run:

    .venv/bin/python -m bench.retrieval                        # 50,000 chunks, 300 questions
    .venv/bin/python -m bench.retrieval --chunks 5000 --queries 50 --no-baseline
    .venv/bin/python -m bench.retrieval --modes hybrid --no-baseline --embed-sample 100

Figures go to bench/results/retrieval.json (`--out PATH` to change).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from models.settings import PROJECT_ROOT, Settings
from rag.chunking import chunk_documents
from rag.documents import Chunk, Document, Hit
from rag.embedding import DEFAULT_EMBEDDER, Embedder, Vectors, embedded_text, text_key
from rag.index import KnowledgeBase, SharedCorpus
from rag.retrieval import (
    RETRIEVERS,
    HybridRetriever,
    Retriever,
    TermRetriever,
    indexed_text,
    retriever_from_arrays,
)
from rag.text import tokenize

DEFAULT_OUT = PROJECT_ROOT / "bench" / "results" / "retrieval.json"
DEFAULT_SETS = [PROJECT_ROOT.parent / "shared" / "eval" / name for name in ("clapnq", "covidqa", "pubmedqa")]


class ReferenceLexicalRetriever:
    """The previous lexical retriever, kept as the reference: one Python loop over every chunk."""

    name = "lexical"

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._terms = [frozenset(tokenize(indexed_text(chunk))) for chunk in self.chunks]
        document_frequency = Counter(term for terms in self._terms for term in terms)
        total = len(self.chunks)
        self._idf = {term: math.log((total + 1) / (count + 0.5)) for term, count in document_frequency.items()}
        self._unseen_idf = math.log((total + 1) / 0.5)

    def search(self, query: str, k: int) -> list[Hit]:
        weights = {term: self._idf.get(term, self._unseen_idf) for term in set(tokenize(query))}
        total = sum(weights.values())
        if not self.chunks or total <= 0:
            return []
        scores = [sum(weights[t] for t in weights if t in terms) / total for terms in self._terms]
        return _ranked(self.chunks, scores, k)


class ReferenceBM25Retriever:
    """The previous BM25 retriever, kept as the reference: rank-bm25 (scores every chunk in
    Python) with Lucene's idf, scores divided by the query's ceiling."""

    name = "bm25"

    def __init__(self, chunks: Sequence[Chunk], k1: float = 1.5, b: float = 0.75) -> None:
        from rank_bm25 import BM25Okapi  # the dev extra: only the reference needs it

        class LuceneIdf(BM25Okapi):
            """Okapi BM25 with Lucene's idf, log(1 + (N - n + 0.5) / (n + 0.5))."""

            def _calc_idf(self, nd: dict[str, int]) -> None:
                for word, freq in nd.items():
                    self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))

        self.chunks = list(chunks)
        self.k1 = k1
        corpus = [tokenize(indexed_text(c)) for c in self.chunks]
        self._bm25 = LuceneIdf(corpus, k1=k1, b=b) if self.chunks else None

    def search(self, query: str, k: int) -> list[Hit]:
        terms = tokenize(query)
        if self._bm25 is None or not terms:
            return []
        raw = self._bm25.get_scores(terms)
        best_idf = math.log(1 + (len(self.chunks) + 0.5) / 0.5)
        ceiling = sum(self._bm25.idf.get(t, best_idf) * (self.k1 + 1) for t in terms)
        scores = np.clip(raw / ceiling, 0.0, 1.0) if ceiling > 0 else raw * 0
        return _ranked(self.chunks, scores.tolist(), k)


def _ranked(chunks: Sequence[Chunk], scores: Sequence[float], k: int) -> list[Hit]:
    """The previous ranking: a Python sort of every positive score; ties keep corpus order."""
    order = sorted((i for i, score in enumerate(scores) if score > 0), key=lambda i: (-scores[i], i))
    return [Hit(chunks[i], float(scores[i]), rank) for rank, i in enumerate(order[:k], start=1)]


# Only ranked with (`search`): they are the previous rankings, not retrievers the app can use.
REFERENCES: dict[str, Callable[[Sequence[Chunk]], ReferenceLexicalRetriever | ReferenceBM25Retriever]] = {
    "lexical": ReferenceLexicalRetriever,
    "bm25": ReferenceBM25Retriever,
}


def load_sets(folders: Sequence[Path]) -> tuple[list[Document], list[str]]:
    """The sets' documents (ids prefixed with the set's name) and their questions, interleaved."""
    documents: list[Document] = []
    questions: list[list[str]] = []
    for folder in folders:
        with (folder / "docs.jsonl").open(encoding="utf-8") as lines:
            for row in map(json.loads, lines):
                documents.append(Document(f"{folder.name}/{row['id']}", row.get("title", ""), folder.name, row["text"]))
        with (folder / "questions.jsonl").open(encoding="utf-8") as lines:
            questions.append([json.loads(line)["question"] for line in lines])
    interleaved = [q for group in itertools.zip_longest(*questions) for q in group if q is not None]
    return documents, interleaved


def repeated(documents: Sequence[Document], chunks_per_document: Sequence[int], target: int) -> list[Document]:
    """The documents, then copies of them with new ids, until they make at least `target` chunks."""
    if not documents or sum(chunks_per_document) <= 0:
        raise ValueError("the sets have no text to index")
    result: list[Document] = []
    total = 0
    for copy in itertools.count():
        for document, chunks in zip(documents, chunks_per_document, strict=True):
            if total >= target:
                return result
            result.append(document if copy == 0 else replace(document, id=f"{document.id}#copy{copy}"))
            total += chunks
    raise AssertionError("unreachable")


def upload_document(documents: Sequence[Document], size_kb: int) -> Document:
    """A text upload of about `size_kb` KB, made of the sets' text (a report a user might attach)."""
    parts: list[str] = []
    size = 0
    for document in itertools.cycle(documents):
        if size >= size_kb * 1000:
            break
        parts.append(f"## {document.title}\n\n{document.text}")
        size += len(parts[-1].encode()) + 2
    return Document("bench-upload", "Uploaded report", "report.md", "\n\n".join(parts))


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _latencies(
    search: Callable[[str, int], list[Hit]], questions: Sequence[str], k: int
) -> tuple[list[float], list[list[str]]]:
    seconds: list[float] = []
    tops: list[list[str]] = []
    for question in questions:
        started = time.perf_counter()
        hits = search(question, k)
        seconds.append(time.perf_counter() - started)
        tops.append([f"{hit.chunk.document.id}:{hit.chunk.position}" for hit in hits])
    return seconds, tops


def _summary(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "median_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * p99,
        "mean_ms": 1000 * statistics.mean(ordered),
    }


class TimedEmbedder:
    """The packaged model, adding up the time spent embedding passages: wall, and the process's
    CPU (the engine runs on one thread of this process; on a shared machine the wall time
    also counts waiting for a core)."""

    def __init__(self, embedder: Embedder = DEFAULT_EMBEDDER) -> None:
        self.embedder = embedder
        self.name, self.dimensions = embedder.name, embedder.dimensions
        self.passages_s = self.passages_cpu_s = 0.0
        self.passages_embedded = 0

    def passages(self, texts: Sequence[str]) -> Vectors:
        started, cpu = time.perf_counter(), time.process_time()
        vectors = self.embedder.passages(texts)
        self.passages_s += time.perf_counter() - started
        self.passages_cpu_s += time.process_time() - cpu
        self.passages_embedded += len(texts)
        return vectors

    def query(self, text: str) -> Vectors:
        return self.embedder.query(text)


def sampled_vectors(chunks: Sequence[Chunk], embedder: TimedEmbedder, sample: int) -> dict[bytes, Vectors]:
    """A vector for every distinct chunk text: `sample` of them embedded (timed by
    `embedder`), the others given those vectors in turn."""
    texts = {text_key(text): text for text in map(embedded_text, chunks)}  # distinct, in corpus order
    # Spread over the corpus: every set's documents, long and short.
    step = max(1, len(texts) // sample)
    vectors = embedder.passages(list(texts.values())[::step][:sample])
    return {key: vectors[index % len(vectors)] for index, key in enumerate(texts)}


def _load_s(retriever: Retriever, mode: str, chunks: Sequence[Chunk], embedder: Embedder) -> float:
    """Writing the index as the persisted index does, then the time to read it back."""
    assert isinstance(retriever, TermRetriever)
    arrays, parameters = retriever.to_arrays()
    contents: dict[str, Any] = dict(arrays)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.npz"
        np.savez(path, **contents)
        started = time.perf_counter()
        with np.load(path, allow_pickle=False) as stored:
            retriever_from_arrays(mode, chunks, stored, parameters, embedder)
        return time.perf_counter() - started


# What a forked child measures. The corpus is read before forking, so each child starts
# with the same memory and cold caches (the stemmer's cache included).
_CORPUS: SharedCorpus | None = None


def measure_ours(
    mode: str, questions: Sequence[str], upload: Document, size: int, overlap: int, k: int, embed_sample: int
) -> dict:
    assert _CORPUS is not None
    chunks = _CORPUS.chunks(size, overlap)  # chunking is not indexing: done before the clock starts
    embedder = TimedEmbedder()
    corpus, embedding = _CORPUS, {}
    if mode == HybridRetriever.name:
        known = sampled_vectors(chunks, embedder, embed_sample)
        per_chunk = embedder.passages_s / max(embedder.passages_embedded, 1)
        embedding = {
            "embedded": embedder.passages_embedded,
            "embed_s_per_chunk": per_chunk,
            "embed_cpu_s_per_chunk": embedder.passages_cpu_s / max(embedder.passages_embedded, 1),
            "embed_s_extrapolated": per_chunk * len(chunks),
        }
    before = _rss()
    started, cpu = time.perf_counter(), time.process_time()
    if mode == HybridRetriever.name:
        # Every vector is known: this is the build without the embedding, reported above.
        retriever: Retriever = HybridRetriever(chunks, embedder, known)
        corpus = SharedCorpus(
            _CORPUS.documents, {(size, overlap): chunks}, {(mode, size, overlap): retriever}, embedder
        )
    else:
        retriever = _CORPUS.retriever(mode, size, overlap)
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    memory = _rss() - before
    load_s = _load_s(retriever, mode, chunks, embedder)
    _latencies(retriever.search, questions[:5], k)  # warm-up
    seconds, tops = _latencies(retriever.search, questions, k)
    if mode == HybridRetriever.name:
        query_embedding = []
        for question in questions:
            started = time.perf_counter()
            embedder.query(question)
            query_embedding.append(time.perf_counter() - started)
        embedding["query_embed_median_ms"] = _summary(query_embedding)["median_ms"]

    knowledge = KnowledgeBase(corpus, size, overlap)
    started = time.perf_counter()
    added = knowledge.add(upload)
    add_s = time.perf_counter() - started
    embedded_before, embedded_cpu_before = embedder.passages_s, embedder.passages_cpu_s
    started = time.perf_counter()
    knowledge.search(questions[0], mode, k)
    first_search_s = time.perf_counter() - started
    with_upload, _ = _latencies(lambda question, k: knowledge.search(question, mode, k), questions, k)
    return {
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "memory_mb": memory / 2**20,
        "load_s": load_s,
        **embedding,
        **_summary(seconds),
        "median_ms_with_upload": _summary(with_upload)["median_ms"],
        "upload": {
            **_upload(added.chunks, add_s, first_search_s),
            "embed_s": embedder.passages_s - embedded_before,
            "embed_cpu_s": embedder.passages_cpu_s - embedded_cpu_before,
        },
        "top": tops,
    }


def measure_reference(mode: str, questions: Sequence[str], upload: Document, size: int, overlap: int, k: int) -> dict:
    assert _CORPUS is not None
    chunks = _CORPUS.chunks(size, overlap)
    before = _rss()
    started, cpu = time.perf_counter(), time.process_time()
    retriever = REFERENCES[mode](chunks)
    build_s, build_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    memory = _rss() - before
    _latencies(retriever.search, questions[:5], k)
    seconds, tops = _latencies(retriever.search, questions, k)
    del retriever
    # The previous KnowledgeBase indexed a chat's uploads together with the whole corpus.
    started = time.perf_counter()
    upload_chunks = chunk_documents([upload], size, overlap)
    add_s = time.perf_counter() - started
    started = time.perf_counter()
    REFERENCES[mode](chunks + upload_chunks).search(questions[0], k)
    first_search_s = time.perf_counter() - started
    return {
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "memory_mb": memory / 2**20,
        **_summary(seconds),
        "upload": _upload(len(upload_chunks), add_s, first_search_s),
        "top": tops,
    }


def _upload(chunks: int, add_s: float, first_search_s: float) -> dict[str, float]:
    return {"chunks": chunks, "add_s": add_s, "first_search_s": first_search_s, "total_s": add_s + first_search_s}


def _child(send: Connection, measure: Callable[..., dict], args: tuple[Any, ...]) -> None:
    try:
        send.send(measure(*args))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the run
        send.send({"error": f"{type(error).__name__}: {error}"})
    finally:
        send.close()


def in_child(measure: Callable[..., dict], *args: Any) -> dict:
    """Run `measure(*args)` in a forked child and return its result."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, measure, args))
    process.start()
    send.close()
    try:
        result: dict = receive.recv()
    except EOFError:
        result = {"error": "the child process died"}
    process.join()
    if "error" in result:
        raise RuntimeError(f"{measure.__name__}: {result['error']}")
    return result


def run(args: argparse.Namespace) -> dict:
    global _CORPUS
    settings = Settings()
    size, overlap, k = args.chunk_size or settings.chunk_size, args.chunk_overlap, settings.top_k
    if overlap is None:
        overlap = settings.chunk_overlap
    started = time.perf_counter()
    documents, questions = load_sets(args.sets)
    per_document = [len(chunk_documents([d], size, overlap)) for d in documents]
    corpus_documents = repeated(documents, per_document, args.chunks)
    _CORPUS = SharedCorpus(corpus_documents)
    chunks = _CORPUS.chunks(size, overlap)
    chunking_s = time.perf_counter() - started
    questions = questions[: args.queries]
    upload = upload_document(documents, args.upload_kb)

    modes: dict[str, dict] = {}
    for mode in args.modes:
        print(f"{mode}: building and querying ours…", file=sys.stderr, flush=True)
        ours = in_child(measure_ours, mode, questions, upload, size, overlap, k, args.embed_sample)
        entry: dict = {"ours": ours, "baseline": None, "ratio": None, "same_hits": None}
        if args.baseline and mode in REFERENCES:  # hybrid has no previous implementation
            print(f"{mode}: building and querying the baseline…", file=sys.stderr, flush=True)
            baseline = in_child(measure_reference, mode, questions, upload, size, overlap, k)
            entry["baseline"] = baseline
            entry["ratio"] = {
                "build": baseline["build_s"] / ours["build_s"],
                "build_cpu": baseline["build_cpu_s"] / ours["build_cpu_s"],
                "memory": baseline["memory_mb"] / ours["memory_mb"] if ours["memory_mb"] > 0 else None,
                "median": baseline["median_ms"] / ours["median_ms"],
                "p99": baseline["p99_ms"] / ours["p99_ms"],
                "upload": baseline["upload"]["total_s"] / ours["upload"]["total_s"],
            }
            same = sum(a == b for a, b in zip(ours["top"], baseline.pop("top"), strict=True))
            entry["same_hits"] = same / max(len(questions), 1)
        ours.pop("top")
        modes[mode] = entry
    return {
        "corpus": {
            "sets": [folder.name for folder in args.sets],
            "documents": len(corpus_documents),
            "distinct_documents": min(len(documents), len(corpus_documents)),
            "chunks": len(chunks),
            "chunk_size": size,
            "chunk_overlap": overlap,
            "setup_s": chunking_s,
        },
        "queries": len(questions),
        "top_k": k,
        "upload_kb": args.upload_kb,
        "modes": modes,
    }


def print_report(result: dict) -> None:
    corpus = result["corpus"]
    print(
        f"{corpus['chunks']:,} chunks ({corpus['documents']:,} documents, {corpus['distinct_documents']:,} distinct, "
        f"from {', '.join(corpus['sets'])}; size {corpus['chunk_size']}, overlap {corpus['chunk_overlap']}); "
        f"{result['queries']} questions, top {result['top_k']}; upload {result['upload_kb']} KB"
    )
    header = (
        f"{'mode':8} {'impl':9} {'build s':>8} {'cpu s':>7} {'memory MB':>10} {'load s':>7} {'median ms':>10} "
        f"{'p99 ms':>8} {'upload s':>9}"
    )
    print(header)
    print("-" * len(header))
    for mode, entry in result["modes"].items():
        for name in ("ours", "baseline"):
            row = entry[name]
            if row is None:
                continue
            load = f"{row['load_s']:7.2f}" if "load_s" in row else f"{'-':>7}"
            print(
                f"{mode:8} {name:9} {row['build_s']:8.2f} {row['build_cpu_s']:7.2f} {row['memory_mb']:10.1f} {load} "
                f"{row['median_ms']:10.2f} "
                f"{row['p99_ms']:8.2f} {row['upload']['total_s']:9.3f}"
            )
        if entry["ratio"]:
            ratio = entry["ratio"]
            memory = f"{ratio['memory']:.2f}" if ratio["memory"] is not None else "-"
            print(
                f"{mode:8} {'ratio':9} {ratio['build']:7.2f}x {ratio['build_cpu']:6.2f}x {memory:>9}x {'':7} "
                f"{ratio['median']:9.1f}x "
                f"{ratio['p99']:7.1f}x {ratio['upload']:8.1f}x   same hits: {entry['same_hits']:.0%}"
            )
    for mode, entry in result["modes"].items():
        ours = entry["ours"]
        upload = ours["upload"]
        embedded = (
            f", of which embedding {upload['embed_s']:.1f} s ({upload['embed_cpu_s']:.1f} s CPU)"
            if upload["embed_s"]
            else ""
        )
        print(
            f"{mode}: one upload ({upload['chunks']} chunks): add {upload['add_s'] * 1000:.0f} ms + first search "
            f"{upload['first_search_s'] * 1000:.0f} ms{embedded}; then a query takes "
            f"{ours['median_ms_with_upload']:.2f} ms (median)"
        )
        if "embed_s_per_chunk" in ours:
            print(
                f"{mode}: embedding {ours['embed_s_per_chunk'] * 1000:.0f} ms a chunk "
                f"({ours['embed_cpu_s_per_chunk'] * 1000:.0f} ms CPU; {ours['embedded']} embedded), "
                f"{ours['embed_s_extrapolated'] / 60:.0f} min for the {corpus['chunks']:,} chunks at that rate "
                f"(not included in build s); a question {ours['query_embed_median_ms']:.1f} ms (median, included "
                f"in the query latency)"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.retrieval", description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000, help="at least this many chunks (default 50,000)")
    parser.add_argument("--queries", type=int, default=300, help="questions timed per mode (default 300)")
    parser.add_argument(
        "--sets", type=Path, nargs="+", default=DEFAULT_SETS, help="set folders (default ../shared/eval's three)"
    )
    parser.add_argument("--modes", default=",".join(RETRIEVERS), help="retrieval modes, comma-separated")
    parser.add_argument("--upload-kb", type=int, default=300, help="size of the uploaded file (default 300 KB)")
    parser.add_argument(
        "--embed-sample", type=int, default=200, help="chunks the hybrid mode really embeds (default 200)"
    )
    parser.add_argument("--chunk-size", type=int, help="default: CHUNK_SIZE")
    parser.add_argument("--chunk-overlap", type=int, help="default: CHUNK_OVERLAP")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the rank-bm25 baseline (the slow part)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    args.modes = args.modes.split(",")
    if unknown := [mode for mode in args.modes if mode not in RETRIEVERS]:
        parser.error(f"unknown mode {', '.join(unknown)}: choose from {', '.join(RETRIEVERS)}")
    if args.chunks < 1 or args.queries < 1 or args.embed_sample < 1:
        parser.error("--chunks, --queries and --embed-sample must be at least 1")
    if missing := [str(folder) for folder in args.sets if not (folder / "docs.jsonl").is_file()]:
        parser.error(f"no docs.jsonl in {', '.join(missing)}: pass set folders such as ../shared/eval/clapnq")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline:
        try:
            import rank_bm25  # noqa: F401
        except ImportError:
            print(
                "error: the baseline needs rank-bm25 (pip install -e '.[dev]'), or pass --no-baseline", file=sys.stderr
            )
            return 2
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    load_before = os.getloadavg()
    started = time.perf_counter()
    result = {
        "command": " ".join(["python -m bench.retrieval", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": stamp,
        **run(args),
    }
    result["duration_s"] = time.perf_counter() - started
    result["environment"] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        # The figures are only as quiet as the machine: other work shows here.
        "load_average_1m_before": load_before[0],
        "load_average_1m_after": os.getloadavg()[0],
    }
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out} ({result['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
