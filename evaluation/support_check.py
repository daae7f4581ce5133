"""How well the support check agrees with a person: precision and recall on labelled sentences.

    .venv/bin/python -m evaluation.support_check evaluation/handbook/support_labels.jsonl [--sweep]

Each line of the file is one answer sentence written by a model, the passages it was
given, and a person's verdict: {"sentence", "passages": [...], "code": bool,
"supported": bool}. The check (`answering.grounding.check_sentence`) is scored on
finding the unsupported sentences: precision (of the sentences it cuts, the share a
person also finds unsupported) and recall (of the sentences a person finds
unsupported, the share it cuts). `--sweep` shows both for other content-word shares.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from answering import grounding
from answering.grounding import Evidence, check_sentence


def scores(rows: Sequence[dict]) -> dict[str, float | int | None]:
    """Precision and recall of the check at finding unsupported sentences."""
    cut = [
        not check_sentence(
            row["sentence"], Evidence.of(row["passages"], row.get("question", "")), code=row.get("code", False)
        ).supported
        for row in rows
    ]
    unsupported = [not row["supported"] for row in rows]
    both = sum(c and u for c, u in zip(cut, unsupported, strict=False))
    return {
        "sentences": len(rows),
        "unsupported_by_label": sum(unsupported),
        "cut_by_check": sum(cut),
        "precision": both / sum(cut) if any(cut) else None,
        "recall": both / sum(unsupported) if any(unsupported) else None,
        "agreement": sum(c == u for c, u in zip(cut, unsupported, strict=False)) / len(rows) if rows else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Precision and recall of the support check on labelled sentences.")
    parser.add_argument("labels", type=Path)
    parser.add_argument("--sweep", action="store_true", help="also try other MIN_CONTENT_SHARE values")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    print(json.dumps({"min_content_share": grounding.MIN_CONTENT_SHARE, **scores(rows)}))
    if args.sweep:
        default = grounding.MIN_CONTENT_SHARE
        try:
            for share in (0.5, 0.6, 0.67, 0.75, 0.8, 0.9):
                grounding.MIN_CONTENT_SHARE = share
                print(json.dumps({"min_content_share": share, **scores(rows)}))
        finally:
            grounding.MIN_CONTENT_SHARE = default
    return 0


if __name__ == "__main__":
    sys.exit(main())
