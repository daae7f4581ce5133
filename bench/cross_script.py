"""What answering a question in another script costs before any model runs.

For every question of the Telugu development sets, the turn's preparation (search, scope checks,
context, the small model's evidence: `answering.pipeline._prepare`, one worker-thread trip) is
timed twice, on the same machine in the same run: as a cross-script question (words written as
the passages' words where they sound alike and glossed where they mean one, passages ranked by
words and meaning, borrowed words the passages never mention looked for, tokens counted
by each model's own tokenizer) and, as the baseline, the way an English question is prepared.
Both are timed from the question to its prepared context, its embedding included: the English
way embeds the question first (`answering.pipeline.run_turn` awaits it before preparing, as
`answering.question_vectors` makes it), the cross-script way once its words are written as the
passages' words, after embedding the words it glosses (`answering.cross_script.glossed`). English
questions of the handbook set are timed on their path too, before and after the check that
sends a question one way or the other.

    .venv/bin/python -m bench.cross_script [--out bench/results/cross-script.json]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from answering.cross_script import is_cross_script
from answering.pipeline import TurnConfig, TurnRequest, _prepare, embed_ahead
from models.catalog import build_catalog
from models.factory import make_backends
from models.settings import Settings
from rag.index import KnowledgeBase, SharedCorpus
from rag.loading import corpus_documents

SETS = ("telugu-handbook", "telugu-pages", "telugu-uncovered")
ROOT = Path(__file__).resolve().parent.parent


def _questions(name: str) -> list[str]:
    with (ROOT / "evaluation" / name / "questions.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line)["question"] for line in lines if line.strip()]


def _ms(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def run() -> dict[str, object]:
    settings = Settings()
    corpus = SharedCorpus(corpus_documents(settings.corpus_dir))
    embed_ahead(settings, corpus.chunks(settings.chunk_size, settings.chunk_overlap))
    knowledge = KnowledgeBase(corpus, settings.chunk_size, settings.chunk_overlap)
    config = TurnConfig.from_settings(settings)
    catalog = build_catalog(settings)
    backends = make_backends(settings)
    closeness = config.meaning.closeness if config.meaning else None

    def prepare(question: str, cross: bool) -> float:
        request = TurnRequest(question, knowledge, catalog.slm, catalog.llm, top_k=settings.top_k)
        first = config.budget(catalog.slm)

        def prepared() -> None:
            if not cross and closeness is not None:
                closeness(question, [])  # the question's vector, as `run_turn` awaits it first
            _prepare(request, question, config, True, first, cross, backends)

        return _ms(prepared)

    prepare("warm-up: ఏ పైథాన్ వెర్షన్ అవసరం?", True)  # loads the tokenizers and sound-alike keys
    telugu = [question for name in SETS for question in _questions(name)]
    cross, plain = [], []
    for question in telugu:
        plain.append(prepare(question, False))
        cross.append(prepare(question, True))
    english = _questions("handbook")
    check = [_ms(functools.partial(is_cross_script, question)) for question in english]
    as_english = [prepare(question, False) for question in english]
    return {
        "questions": {"telugu": len(telugu), "english": len(english)},
        "telugu_prepare_ms": {"cross_script": statistics.median(cross), "as_english": statistics.median(plain)},
        "added_ms_median": statistics.median(c - p for c, p in zip(cross, plain, strict=True)),
        "ratio_of_medians": statistics.median(cross) / statistics.median(plain),
        "english_check_ms_median": statistics.median(check),
        "english_prepare_ms_median": statistics.median(as_english),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cross-script.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    result = run()
    result["load_average_1m"] = {"before": load_before, "after": os.getloadavg()[0]}
    prepare_ms = result["telugu_prepare_ms"]
    assert isinstance(prepare_ms, dict)
    print(
        f"Telugu questions ({result['questions']}): preparing a turn takes {prepare_ms['cross_script']:.1f} ms "
        f"(median) as a cross-script question, {prepare_ms['as_english']:.1f} ms the English way "
        f"(baseline, same run): {result['added_ms_median']:.1f} ms added per question (median of the "
        f"differences), ratio {result['ratio_of_medians']:.2f}."
    )
    print(
        f"English questions: preparing a turn takes {result['english_prepare_ms_median']:.1f} ms (median); the "
        f"check that sends a question one way or the other, {result['english_check_ms_median']:.3f} ms."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
