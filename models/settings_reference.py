"""The configuration reference, docs_corpus/configuration.md, generated from `Settings`.

The page is models/configuration_template.md with each `{{ table: GROUP }}` line replaced by
a `| Variable | Default | Meaning |` table of the fields in that group, in the order the
class declares them. The prose lives in the template, not in docs_corpus/, because every
file there is indexed for the assistant.

    .venv/bin/python -m models.settings_reference           # rewrite the page
    .venv/bin/python -m models.settings_reference --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from models.settings import PROJECT_ROOT, Settings

TEMPLATE = Path(__file__).with_name("configuration_template.md")
PAGE = PROJECT_ROOT / "docs_corpus" / "configuration.md"
COMMAND = ".venv/bin/python -m models.settings_reference"

_PLACEHOLDER = re.compile(r"^\{\{ table: (?P<group>[^}]+?) \}\}$", re.MULTILINE)


def reference_markdown() -> str:
    """The whole configuration page; raises ValueError when a field has no place in it."""
    template = TEMPLATE.read_text(encoding="utf-8")
    groups: dict[str, list[tuple[str, FieldInfo]]] = {}
    for name, field in Settings.model_fields.items():
        groups.setdefault(_extra(field).get("group", ""), []).append((name, field))

    placed = _PLACEHOLDER.findall(template)
    problems = [f"no group: {', '.join(name for name, _ in groups[''])}"] if "" in groups else []
    problems += [f"group {g!r} has no table in the template" for g in groups if g and g not in placed]
    problems += [f"table {g!r} has no fields" for g in placed if g not in groups]
    problems += [f"table {g!r} appears twice" for g in set(placed) if placed.count(g) > 1]
    if problems:
        raise ValueError(f"{TEMPLATE.name} and Settings disagree: " + "; ".join(problems))

    return _PLACEHOLDER.sub(lambda match: _table(groups[match["group"]]), template)


def _table(fields: list[tuple[str, FieldInfo]]) -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in fields:
        cells = (_variables(name, field), _default(field), _meaning(field))
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


def _variables(name: str, field: FieldInfo) -> str:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    else:
        names = [alias if isinstance(alias, str) else name.upper()]
    return " or ".join(f"`{variable}`" for variable in names)


def _default(field: FieldInfo) -> str:
    extra = _extra(field)
    if "default_text" in extra:
        return str(extra["default_text"])
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict):
        return f"`{json.dumps(value)}`"
    if isinstance(value, Path) and value.is_relative_to(PROJECT_ROOT):
        return f"`{value.relative_to(PROJECT_ROOT).as_posix()}` in the project root"
    return f"`{value}`"


def _meaning(field: FieldInfo) -> str:
    meaning = (field.description or "").strip()
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    # A description that already explains every choice is not followed by the bare list.
    if choices and not all(f"`{choice}`" in meaning for choice in choices):
        listed = [f"`{choice}`" for choice in choices]
        meaning += f" Allowed: {', '.join(listed[:-1])} or {listed[-1]}."
    allowed = _range(field)
    if allowed:
        meaning += f" Allowed: {allowed}."
    return meaning


def _range(field: FieldInfo) -> str:
    bounds = {
        kind: getattr(constraint, kind)
        for constraint in field.metadata
        for kind in ("gt", "ge", "lt", "le")
        if getattr(constraint, kind, None) is not None
    }
    if "ge" in bounds and "le" in bounds:
        return f"{bounds['ge']} to {bounds['le']}"
    words = {"gt": "above {}", "ge": "{} or more", "lt": "below {}", "le": "at most {}"}
    return ", ".join(words[kind].format(value) for kind, value in bounds.items())


def _extra(field: FieldInfo) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.settings_reference", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date; write nothing")
    args = parser.parse_args(argv)

    text = reference_markdown()
    current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else None
    page = PAGE.relative_to(PROJECT_ROOT)
    if current == text:
        print(f"{page} is up to date")
        return 0
    if args.check:
        print(f"{page} is out of date; regenerate it with: {COMMAND}", file=sys.stderr)
        return 1
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
