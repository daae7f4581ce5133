"""What the model reads: the parts of the retrieved chunks that carry the question's terms.

Retrieval ranks whole chunks for recall. A 135M model given three whole chunks
reads past the one sentence that answers and copies a neighbour, or invents; so
the prompt gets, within a budget of tokens per model, the sentences, list items
and table rows that share the most (and rarest) terms with the question and, among
those, come closest to it in meaning, with the unit before and after each for
reading, under the chunk's heading path. Every excerpt keeps a number: the model
cites it, and the page shows it with the rest of its chunk around it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from answering.grounding import CITATION, Evidence, exact_terms, is_table_rule, table_cells
from rag.documents import Chunk, Hit
from rag.text import tokenize

# A sentence matches the question nearly as well as the best one at this share of its score.
NEAR_BEST = 0.75
# The most tokens of a unit given whole over the budget (the best unit always is): a table read
# as one sentence, or a paragraph of a script the model's tokenizer spends many tokens on (about
# 60 Telugu letters for SmolLM2), is cut there.
LONGEST_UNIT = 160
# A unit with fewer words ("1.", "|", "make run") is close in meaning to every question: ranked
# by meaning alone (`Meaning.everywhere`), it needs at least this many.
MIN_WORDS = 3
# Between two selected units that are not neighbours in the chunk.
GAP = " … "
# A sentence ends at . ! ? and a space before a capital, a digit or markup; not after a
# list item's own number ("1. Creates ...").
_SENTENCE = re.compile(r"(?<=[.!?])(?<!^\d\.)(?<!^\d\d\.)\s+(?=[A-Z0-9`\"(*])")
# Lines that start a unit of their own: headings, table rows, list items (whose wrapped
# continuation lines join them), quotes.
_STANDALONE = re.compile(r"^(#{1,6}\s|\||[-*+]\s|\d+[.)]\s|>)")
_LIST_ITEM = re.compile(r"^([-*+]\s|\d+[.)]\s)")
_NUMBERED = re.compile(r"^\d+[.)]\s")
_FIRST_NUMBER = re.compile(r"^0*1[.)]\s")


@dataclass(frozen=True)
class Meaning:
    """Closeness in meaning to the question, mixed into the ranking of the units that share a
    term with it. Shared terms alone rank a paraphrase low: "the biggest file I can attach"
    shares only "file" with "Uploads are limited to 20 MB per file". On the handbook set,
    with half the weight on meaning, the 400-token excerpts hold the fact for 170 of 184
    answerable questions instead of 164, and 4 quoted sentences for 167 instead of 161.
    """

    # (question, texts) -> each text's closeness to the question; `rag.embedding.Closeness`.
    closeness: Callable[[str, Sequence[str]], Sequence[float]]
    weight: float = 0.5
    # Rank every unit of at least MIN_WORDS words by meaning, not only those sharing a term with
    # the question: for a question whose words cannot meet the passages' (answering/cross_script.py).
    everywhere: bool = False


def estimate_tokens(text: str) -> int:
    """A deliberately generous token count, for models whose tokenizer the app does not have
    (server models): 3 ASCII characters a token, and a token for every other character.

    Measured with the two tokenizers at hand: English is 3.65 characters a token for SmolLM2
    and 3.84 for Gemma 3; Telugu 2.9 for Gemma 3's 262k-token vocabulary (which, like the
    server models', was trained on many languages) and 0.37 for SmolLM2's English one, which
    is counted exactly (`models.base.TokenCounter`). It errs on the long side so that a prompt
    trimmed with it fits whatever the server's tokenizer.
    """
    ascii_characters = len(text.encode("ascii", "ignore"))
    return ascii_characters // 3 + (len(text) - ascii_characters) + 1


def passage_path(chunk: Chunk) -> tuple[str, ...]:
    """The document's title, then the headings above the chunk."""
    headings = chunk.heading_path
    if headings and headings[0] == chunk.document.title:
        headings = headings[1:]  # a Markdown file's title is usually its first heading too
    return (chunk.document.title, *headings)


def passage_label(chunk: Chunk) -> str:
    return " › ".join(passage_path(chunk))


@dataclass(frozen=True)
class Excerpt:
    """One numbered passage of the prompt: part (or all) of a retrieved chunk."""

    number: int  # [n] in the prompt, the answer and the page
    hit: Hit
    text: str  # exactly what the model reads

    @property
    def label(self) -> str:
        return passage_label(self.hit.chunk)

    @property
    def whole(self) -> bool:
        return self.text == self.hit.chunk.text.strip()


def whole_chunks(hits: Sequence[Hit]) -> list[Excerpt]:
    return [Excerpt(n, hit, hit.chunk.text.strip()) for n, hit in enumerate(hits, start=1)]


def units(text: str) -> list[str]:
    """A chunk's readable units: sentences of its paragraphs (hard-wrapped lines joined),
    list items, table rows, headings and code lines, each whole."""
    found: list[str] = []
    paragraph: list[str] = []

    def close() -> None:
        if paragraph:
            found.extend(_SENTENCE.split(" ".join(paragraph)))
            paragraph.clear()

    code = False
    in_list = False  # the open paragraph is a list item
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            close()
            code = not code
            continue
        # A wrapped line of running text may start "10) is the most…": as in CommonMark, only
        # "1." or "1)" starts a numbered list inside a paragraph.
        continues = paragraph and not in_list and _NUMBERED.match(stripped) and not _FIRST_NUMBER.match(stripped)
        if not stripped:
            close()
            in_list = False
        elif not continues and (code or _STANDALONE.match(stripped)):
            close()
            in_list = bool(not code and _LIST_ITEM.match(stripped))
            if not in_list:
                found.append(stripped)
            else:
                paragraph.append(stripped)  # a list item: its wrapped lines follow
        else:
            paragraph.append(stripped)
    close()
    return [unit for unit in found if unit.strip()]


def table_header(text: str, row: str) -> str | None:
    """The header row of the table in `text` that `row` belongs to; None when `row` is not a
    table row of it, or is the header itself."""
    lines = [line.strip() for line in text.splitlines()]
    wanted = row.strip()
    if not wanted.startswith("|") or wanted not in lines:
        return None
    at = lines.index(wanted)
    top = at
    while top > 0 and lines[top - 1].startswith("|"):
        top -= 1
    if top + 1 < len(lines) and is_table_rule(lines[top + 1]) and top != at and not is_table_rule(wanted):
        return lines[top]
    return None


def readable(unit: str, text: str) -> str:
    """A unit as the reader sees it: a table row with each cell under its column's name
    ("Variable: `TEMPERATURE` · Default: `0.2` · …"), anything else as it is. A value in a
    table means something only with its column."""
    header = table_header(text, unit)
    if header is None:
        return unit.strip()
    names, cells = table_cells(header), table_cells(unit)
    if len(names) != len(cells):
        return unit.strip()
    return " · ".join(f"{name}: {cell}" if name else cell for name, cell in zip(names, cells, strict=True) if cell)


def is_statement(unit: str, text: str) -> bool:
    """Whether a unit can answer on its own: not a heading, a table's separator or header row,
    or a code fence."""
    stripped = unit.strip()
    if stripped.startswith(("#", "```", "~~~")) or is_table_rule(stripped):
        return False
    return not (stripped.startswith("|") and _is_header_row(text, stripped))


def _is_header_row(text: str, row: str) -> bool:
    lines = [line.strip() for line in text.splitlines()]
    at = lines.index(row) if row in lines else -1
    return at >= 0 and at + 1 < len(lines) and is_table_rule(lines[at + 1])


def select_context(
    hits: Sequence[Hit],
    query: str,
    budget_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
    *,
    fill: bool = False,
    meaning: Meaning | None = None,
) -> list[Excerpt]:
    """The units of the hits that best match the query, with their neighbours, within the budget.

    Units are chosen best first (by `ranked_units`: the query terms they contain,
    and with `meaning` their closeness in meaning; among equals, the better-ranked
    chunk first), each with the unit before and after it when the budget allows.
    The best unit is always given, however long. With `fill` (text the user pasted
    on purpose), the units that match no query term fill the rest of the budget, in
    the hits' order. Excerpts keep the hits' order and are numbered from 1.
    """
    return select_contexts(hits, query, [budget_tokens], count_tokens, fill=fill, meaning=meaning)[budget_tokens]


def select_contexts(
    hits: Sequence[Hit],
    query: str,
    budgets: Collection[int],
    count_tokens: Callable[[str], int] | Mapping[int, Callable[[str], int]] = estimate_tokens,
    *,
    fill: bool = False,
    meaning: Meaning | None = None,
) -> dict[int, list[Excerpt]]:
    """`select_context` for several budgets at once (models that read different amounts).

    The largest budget is filled first; each smaller one is then chosen from within
    it, so that a model with more room reads all that one with less reads, and an
    excerpt's number (its place in the largest) means one passage whichever model cites it.
    `count_tokens` may count each budget's tokens its own way (its model's tokenizer).
    """
    split = [units(hit.chunk.text) for hit in hits]
    scored = ranked_units(split, query, [passage_label(hit.chunk) for hit in hits], meaning)
    best = [(h, i) for score, h, i in scored if score > 0 or fill]
    order = best or [(0, 0)] if split and split[0] else []
    headers = [_header_units(text_units) for text_units in split]

    shortened: dict[int, dict[tuple[int, int], str]] = {}  # by budget: the best unit, cut to fit

    def choose(budget: int, within: dict[int, set[int]] | None) -> dict[int, set[int]]:
        chosen: dict[int, set[int]] = {}
        room = budget
        count = count_tokens[budget] if isinstance(count_tokens, Mapping) else count_tokens

        def take(h: int, i: int, force: bool = False) -> bool:
            nonlocal room
            if (
                not 0 <= i < len(split[h])
                or i in chosen.get(h, ())
                or (within is not None and i not in within.get(h, ()))
            ):
                return True
            label = 0 if h in chosen else count(passage_label(hits[h].chunk)) + 4
            cost = count(split[h][i]) + label
            if cost > room and not force:
                return False
            if cost > max(room, LONGEST_UNIT):
                # The best unit is always given, but not one that is no sentence a model can read
                # at once: cut to the budget, or to LONGEST_UNIT when the budget is smaller.
                cut = _cut_to(split[h][i], max(room, LONGEST_UNIT) - label, count)
                shortened.setdefault(budget, {})[h, i] = cut
                cost = count(cut) + label
            room -= cost
            chosen.setdefault(h, set()).add(i)
            return True

        for rank, (h, i) in enumerate(order):
            if not take(h, i, force=rank == 0):
                continue
            # A table row is read under its column names.
            for header in headers[h].get(i, ()):
                take(h, header)
            take(h, i + 1)
            take(h, i - 1)
        return chosen

    largest = choose(max(budgets), None)
    numbers = {h: number for number, h in enumerate(sorted(largest), start=1)}
    selections = {budget: choose(budget, largest) for budget in budgets if budget != max(budgets)}
    selections[max(budgets)] = largest

    def text_of(budget: int, h: int) -> list[str]:
        cut = shortened.get(budget, {})
        return [cut.get((h, i), unit) for i, unit in enumerate(split[h])]

    return {
        budget: [Excerpt(numbers[h], hits[h], _joined(text_of(budget, h), sorted(picked[h]))) for h in sorted(picked)]
        for budget, picked in selections.items()
    }


def _cut_to(unit: str, tokens: int, count: Callable[[str], int]) -> str:
    """The longest start of the unit, cut at a space where there is one, that `count` makes at
    most `tokens` tokens with "…" after it (at least one word)."""
    low, high = 1, len(unit)
    while low < high:  # the longest prefix that fits, by bisection: a few dozen counts at most
        middle = (low + high + 1) // 2
        if count(unit[:middle] + "…") <= tokens:
            low = middle
        else:
            high = middle - 1
    space = unit.rfind(" ", 0, low + 1)
    return unit[: space if space > 0 else low].rstrip() + "…"


def _header_units(text_units: Sequence[str]) -> dict[int, tuple[int, int]]:
    """For each table row among a chunk's units, the indexes of its table's header row and
    separator line."""
    found: dict[int, tuple[int, int]] = {}
    header: tuple[int, int] | None = None
    for i, unit in enumerate(text_units):
        if not unit.startswith("|"):
            header = None
        elif i > 0 and is_table_rule(unit) and text_units[i - 1].startswith("|"):
            header = (i - 1, i)
        elif header is not None:
            found[i] = header
    return found


def ranked_units(
    texts: Sequence[Sequence[str]],
    query: str,
    labels: Sequence[str] | None = None,
    meaning: Meaning | None = None,
) -> list[tuple[float, int, int]]:
    """(score, text index, unit index) of every unit, best first: the summed rarity (among
    these units) of the query terms a unit contains, or its text's label (the heading
    path, which names what every unit under it is about) contains; ties go to the earlier
    text and unit. With `meaning`, a unit that shares a term scores its share of the best
    such score, mixed with its closeness in meaning (as a share of the range among them);
    a unit that shares none still scores 0."""
    headings = [set(tokenize(label)) for label in labels] if labels else [set() for _ in texts]
    terms = [[set(tokenize(unit)) | headings[h] for unit in text_units] for h, text_units in enumerate(texts)]
    wanted = set(tokenize(query))
    frequency = Counter(term for text_terms in terms for unit in text_terms for term in unit & wanted)
    total = sum(len(text_units) for text_units in texts) or 1
    weight = {term: math.log(1 + total / frequency[term]) for term in frequency}
    scored = [
        (sum(weight[t] for t in unit & wanted), h, i)
        for h, text_terms in enumerate(terms)
        for i, unit in enumerate(text_terms)
    ]
    if meaning is not None and meaning.weight > 0:
        scored = _with_meaning(scored, texts, query, labels, meaning)
    return sorted(scored, key=lambda entry: (-entry[0], entry[1], entry[2]))


def _with_meaning(
    scored: list[tuple[float, int, int]],
    texts: Sequence[Sequence[str]],
    query: str,
    labels: Sequence[str] | None,
    meaning: Meaning,
) -> list[tuple[float, int, int]]:
    matching = [
        (h, i) for score, h, i in scored if score > 0 or (meaning.everywhere and len(texts[h][i].split()) >= MIN_WORDS)
    ]
    if not matching:
        return scored
    close = _closeness(texts, query, labels, matching, meaning)
    low, high = min(close), max(close)
    nearness = {unit: (c - low) / (high - low) if high > low else 0.0 for unit, c in zip(matching, close, strict=True)}
    best = max(score for score, _, _ in scored) or 1.0
    return [
        ((1 - meaning.weight) * score / best + meaning.weight * nearness[h, i] if (h, i) in nearness else 0.0, h, i)
        for score, h, i in scored
    ]


def _closeness(
    texts: Sequence[Sequence[str]],
    query: str,
    labels: Sequence[str] | None,
    wanted: Sequence[tuple[int, int]],
    meaning: Meaning,
) -> Sequence[float]:
    return meaning.closeness(query, [_as_embedded(labels[h] if labels else "", texts[h][i]) for h, i in wanted])


def _as_embedded(label: str, unit: str) -> str:
    # The model reads a unit under its heading path, and so does the embedder.
    return f"{label}: {unit}" if label else unit


def embedded_units(chunks: Sequence[Chunk]) -> list[str]:
    """The texts ranking by meaning embeds for these chunks' units, as it embeds them: each
    of the chunk's units under its heading path."""
    return [_as_embedded(passage_label(chunk), unit) for chunk in chunks for unit in units(chunk.text)]


def closest_in_meaning(hits: Sequence[Hit], query: str, meaning: Meaning) -> float:
    """The closeness in meaning to the query of the hits' closest unit among those that share
    a term with it; 0 when none does. Blocking."""
    split = [units(hit.chunk.text) for hit in hits]
    labels = [passage_label(hit.chunk) for hit in hits]
    matching = [(h, i) for score, h, i in ranked_units(split, query, labels) if score > 0]
    return max(_closeness(split, query, labels, matching, meaning), default=0.0)


def _ranked_excerpts(
    excerpts: Sequence[Excerpt], query: str, meaning: Meaning | None = None
) -> tuple[list[list[str]], list[tuple[float, int, int]]]:
    """The excerpts' units, and `ranked_units` over them."""
    split = [units(excerpt.text.replace(GAP, "\n")) for excerpt in excerpts]
    return split, ranked_units(split, query, [excerpt.label for excerpt in excerpts], meaning)


def best_sentences(
    excerpts: Sequence[Excerpt], query: str, count: int, meaning: Meaning | None = None
) -> list[tuple[str, int]]:
    """The `count` units of the excerpts that best match the query, with their excerpt's number.
    A unit ending in a colon comes with the unit after it: "reinstall it with those flags:"
    says nothing without the command that follows. Blocking when `meaning` embeds."""
    split, ranked = _ranked_excerpts(excerpts, query, meaning)
    best: dict[str, int] = {}  # chunks overlap: the same sentence can be in two excerpts
    for score, h, i in ranked:
        if score <= 0 or len(best) == count:
            break
        unit = split[h][i].strip()
        if unit.endswith(":") and i + 1 < len(split[h]):
            unit = f"{unit} {split[h][i + 1].strip()}"
        best.setdefault(unit, excerpts[h].number)
    return list(best.items())


def drawn_from_best(answer: str, question: str, excerpts: Sequence[Excerpt], count: int = 3) -> float:
    """Share of the answer's own words (those the question did not say) found in the passage
    sentences that best match the question (at most `count`, each scoring at least
    NEAR_BEST of the best one's score), each with the sentence after it: whether the answer
    comes from where the question points. 1 when it adds no word, and when the question
    points nowhere (no passage sentence shares a term with it: "Summarise this.")."""
    split, ranked = _ranked_excerpts(excerpts, question)
    if not ranked or ranked[0][0] <= 0:
        return 1.0
    near_units = [
        unit
        for score, h, i in ranked[:count]
        if score > 0 and score >= NEAR_BEST * ranked[0][0]
        for unit in split[h][i : i + 2]
    ]
    # What an answer states exactly (a number, a setting, a command) decides; else its words.
    near = Evidence.of(near_units)
    asked_exactly = Evidence.of([question])
    exact = [term for term in exact_terms(answer) if not asked_exactly.states(term)]
    if exact:
        return sum(near.states(term) for term in exact) / len(exact)
    asked = set(tokenize(question))
    own = [term for term in tokenize(CITATION.sub(" ", answer)) if term not in asked]
    return sum(term in near.terms for term in own) / len(own) if own else 1.0


def _joined(chunk_units: Sequence[str], picked: Sequence[int]) -> str:
    text = ""
    for position, i in enumerate(picked):
        if position:
            previous = chunk_units[picked[position - 1]]
            if picked[position - 1] != i - 1:
                text += GAP
            else:
                text += "\n" if _STANDALONE.match(previous) or _STANDALONE.match(chunk_units[i]) else " "
        text += chunk_units[i].strip()
    return text
