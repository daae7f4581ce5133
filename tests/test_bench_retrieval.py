"""`python -m bench.retrieval` on a tiny set the test writes: it runs, prints a table and writes its JSON."""

from __future__ import annotations

import json

from bench import retrieval

TOPICS = ["kettles", "printers", "trains", "budgets", "laptops", "rotas", "courses", "monitors"]


def _write_set(folder):
    folder.mkdir()
    docs = [
        {"id": f"d{i}", "title": topic.title(), "text": f"Notes about {topic}. " * 30 + f"The {topic} policy changed."}
        for i, topic in enumerate(TOPICS)
    ]
    questions = [
        {"id": f"q{i}", "question": f"What changed in the {topic} policy?", "answers": [], "gold_doc_ids": [f"d{i}"]}
        for i, topic in enumerate(TOPICS)
    ]
    (folder / "docs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in docs))
    (folder / "questions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in questions))


def test_the_benchmark_reports_every_mode_against_the_baseline(tmp_path, capsys):
    _write_set(tmp_path / "tiny")
    out = tmp_path / "retrieval.json"

    sizes = ["--chunks", "30", "--queries", "6", "--upload-kb", "3", "--embed-sample", "3"]
    code = retrieval.main(["--sets", str(tmp_path / "tiny"), *sizes, "--out", str(out)])

    assert code == 0
    result = json.loads(out.read_text())
    corpus = result["corpus"]
    assert corpus["chunks"] >= 30 and corpus["distinct_documents"] == len(TOPICS)
    assert corpus["documents"] > len(TOPICS)  # repeated with new ids to reach the size asked
    assert result["queries"] == 6
    assert set(result["modes"]) == {"lexical", "bm25", "hybrid"}
    hybrid = result["modes"].pop("hybrid")
    # The hybrid mode has no previous implementation; its embedding is timed apart.
    assert hybrid["baseline"] is None and hybrid["ours"]["median_ms"] > 0 and hybrid["ours"]["load_s"] > 0
    assert hybrid["ours"]["embed_s_per_chunk"] > 0 and hybrid["ours"]["upload"]["embed_s"] > 0
    for entry in result["modes"].values():
        assert entry["ours"]["load_s"] > 0
        for side in ("ours", "baseline"):
            figures = entry[side]
            assert figures["build_s"] > 0 and figures["median_ms"] > 0 and figures["p99_ms"] >= figures["median_ms"]
            assert figures["build_cpu_s"] > 0 and "memory_mb" in figures
            assert figures["upload"]["chunks"] >= 1 and figures["upload"]["total_s"] > 0
        assert set(entry["ratio"]) == {"build", "build_cpu", "memory", "median", "p99", "upload"}
        # The same scores as the previous implementation: the same hits for every question.
        assert entry["same_hits"] == 1.0
    assert result["environment"]["cpus"] >= 1
    printed = capsys.readouterr().out
    assert "baseline" in printed and "ratio" in printed and f"wrote {out}" in printed


def test_without_the_baseline_only_our_figures_are_reported(tmp_path):
    _write_set(tmp_path / "tiny")
    out = tmp_path / "retrieval.json"

    small = ["--chunks", "10", "--queries", "2", "--upload-kb", "1"]
    code = retrieval.main(
        ["--sets", str(tmp_path / "tiny"), *small, "--modes", "bm25", "--no-baseline", "--out", str(out)]
    )

    assert code == 0
    entry = json.loads(out.read_text())["modes"]["bm25"]
    assert entry["baseline"] is None and entry["ratio"] is None and entry["ours"]["median_ms"] > 0
