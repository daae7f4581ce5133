"""Does an answer stay inside its passages? The one support check, sentence by sentence.

A sentence is supported when every exact term it states (numbers, identifiers,
setting names, paths, commands, quoted strings) occurs in the passages the model
was given, and most of its other content words do too. An abstention ("the
documents do not cover it") claims nothing and is always supported.

`check_sentence` is a pure function; `AnswerGuard` applies it while an answer
streams, sentence by sentence, and also watches for an answer that starts
repeating itself. The evaluation tools use the same functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

from i18n import N_, Message
from rag.text import fold, tokenize

# Citation markers such as [1] or [1, 2]: they refer to passages, they claim nothing.
CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")

# Share of a sentence's content words that must occur in the passages (chosen on the
# handbook development set, evaluation/handbook: see docs/evaluation.md).
MIN_CONTENT_SHARE = 0.67
# Share of them that must occur together, in one passage sentence or two neighbouring ones:
# a sentence assembled from words scattered over the passages says something they do not.
MIN_LOCAL_SHARE = 0.55
# A sentence with fewer content words than this is judged by its exact terms alone:
# "Yes, it does [1]." claims too little to measure.
MIN_CONTENT_WORDS = 3

# An answer with a smaller share of words the question did not already say only restates
# it ("The server's context window."): no answer at all (chosen on the handbook set).
MIN_NEW_INFORMATION = 0.5

# An answer repeats itself when a run of this many words occurs twice.
LOOP_NGRAM = 8

# Share of a sentence's content words that must occur in one passage sentence holding the
# exact terms it states: "use `/uploads` to take a file out" names a real command with
# real words, but the passage says `/uploads` lists files (chosen on the handbook labels).
MIN_ANCHORED_SHARE = 0.7
# A fragment answer ("`LLM_MODEL`", "Yes.") claims what the question asks: the passage
# sentence holding its exact term must share this much of the question's content words.
# On the 180 handbook labels 0.7 finds 74% of the unsupported sentences (0.4: 70%) at the
# same precision; on the handbook set's answers it cuts 4 wrong bare answers ("BM25" as the
# embedding model) and 2 right ones, which become quotes.
MIN_ASKED_SHARE = 0.7

# A setting or command in an answer must come from a passage sentence under a heading that
# shares a word with the question, or holding this share of the question's words (chosen on
# the handbook labels: it cuts none that a person marked supported).
MIN_TOPIC_SHARE = 0.8

# Counts written as words state a number as exactly as digits do ("counted twice"). "One"
# is left out: it is mostly a pronoun ("the one that answers").
_COUNTS = "zero one two three four five six seven eight nine ten eleven twelve".split()
NUMBER_WORDS = {
    **{word: str(value) for value, word in enumerate(_COUNTS) if word != "one"},
    "twice": "2",
    "thrice": "3",
    "hundred": "100",
    "thousand": "1000",
}

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,:]\d+)*(?![\w])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+>]|\d+[.)])\s+")
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_QUOTED = re.compile(r"[\"“«„]([^\"“”«»„\n]{2,80})[\"”»]")
# Identifiers: snake_case and SETTING_NAMES, paths, dotted names, flags, URLs, file names,
# and words that mix letters and digits (phi-4-mini, bm25).
_IDENTIFIER = re.compile(
    r"(?:https?://\S+)"
    r"|(?:(?<![\w-])--?[a-z][\w-]*)"
    r"|(?:[\w.~-]*/[\w./~-]+)"
    r"|(?:\w+(?:[._]\w+)+)"
    r"|(?:\w*[a-z]\w*\d\w*|\w*\d\w*[a-z]\w*)(?:-\w+)*",
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s+")
_EVIDENCE_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+| … ")
# Scripts written without spaces: their words are compared as character pairs.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _normal(text: str) -> str:
    return _SPACES.sub(" ", fold(text)).strip()


def _terms(text: str) -> list[str]:
    """Content words (the retrievers' stemmed tokens); unspaced scripts as character pairs;
    numbers as one word each ("1,000" is 1000)."""
    terms: list[str] = []
    for token in tokenize(_NUMBER.sub(lambda number: _canonical_number(number.group()), text)):
        if len(token) > 2 and _UNSPACED.search(token):
            terms.extend(token[i : i + 2] for i in range(len(token) - 1))
        else:
            terms.append(token)
    return terms


@dataclass(frozen=True)
class Evidence:
    """The passages one model was given, and the question it was asked, prepared once
    for checking many sentences."""

    text: str  # folded, single-spaced
    numbers: frozenset[str]
    terms: frozenset[str]
    # The terms of each passage sentence together with the next one's.
    windows: tuple[frozenset[str], ...] = ()
    # Each passage sentence, folded, with its terms and numbers.
    sentences: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()
    asked: frozenset[str] = frozenset()  # the question's terms
    # The terms of the names the question asks about ("Ollama", "SmolLM2"), and of the first
    # line of each sentence's passage: its label, "Models and backends › Ollama".
    asked_names: frozenset[str] = frozenset()
    headings: tuple[frozenset[str], ...] = ()
    question: str = ""  # folded, single-spaced
    # Each table row read under its header, cell by cell.
    rows: tuple[tuple[_Cell, ...], ...] = ()

    @classmethod
    def of(cls, passages: Iterable[str], question: str = "") -> Evidence:
        passages = list(passages)
        joined = "\n".join(passages)
        windows: list[frozenset[str]] = []
        sentences: list[tuple[str, frozenset[str], frozenset[str]]] = []
        headings: list[frozenset[str]] = []
        for passage in passages:
            split = [s for s in _EVIDENCE_SENTENCE.split(passage) if s.strip()]
            facts = [_sentence_facts(s) for s in split]
            terms = [found for _, found, _ in facts]
            windows += [a | b for a, b in zip(terms, [*terms[1:], frozenset()], strict=False)]
            sentences += facts
            headings += [_sentence_facts(passage.lstrip().partition("\n")[0])[1]] * len(split)
        return cls(
            _normal(joined),
            _numbers(joined),
            frozenset(_terms(joined)),
            tuple(windows),
            tuple(sentences),
            frozenset(_terms(question)),
            frozenset(term for name in names(question) for term in _terms(name)),
            tuple(headings),
            _normal(question),
            tuple(row for passage in passages for row in _table_rows(passage)),
        )

    def states(self, term: str) -> bool:
        """Whether an exact term (a number, an identifier, a quoted string) occurs here."""
        return _states(term, self.text, self.numbers)

    def local_share(self, terms: Sequence[str]) -> float:
        """The largest share of `terms` found in one window of the passages."""
        if not terms:
            return 1.0
        return max((sum(term in window for term in terms) / len(terms) for window in self.windows), default=0.0)

    def polarity_of_best_match(self) -> bool | None:
        """Whether the passage sentence sharing most of the question's terms is negative
        ("is the pretrained model, not the instruction-tuned one"); None when none shares any."""
        if not self.asked:
            return None
        matches = ((len(self.asked & found), bool(_NEGATION.search(text))) for text, found, _ in self.sentences)
        shared, negative = max(matches, default=(0, False))
        return negative if shared > 0 else None

    def anchored_share(self, exact: Sequence[str], terms: Iterable[str], *, besides: bool = False) -> float:
        """The largest share of `terms` found in one passage sentence that holds every exact
        term (`besides`: said by it besides the exact terms themselves); 1 when there is no
        exact term, or no term to find."""
        terms = list(terms)
        if not exact or not terms:
            return 1.0
        holding = [
            set(_terms(_without([_normal(term.strip('`"')) for term in exact], text))) if besides else found
            for text, found, numbers in self.sentences
            if all(_states(term, text, numbers) for term in exact)
        ]
        return max((sum(term in found for term in terms) / len(terms) for found in holding), default=0.0)

    def misplaced_value(self, sentence: str) -> str | None:
        """Why a number the sentence gives from a table is not the answer, or None. A value in a
        table belongs to its column and its row: "2.0 (default)" names the Default column while
        2.0 is in another one; "512" answers a question about the temperature from the
        `MAX_TOKENS` row."""
        text = CITATION.sub(" ", sentence)
        said = set(_terms(text))
        numbers = _numbers(text) - _numbers(self.question)
        for number in sorted(numbers):
            rows = [row for row in self.rows if any(number in cell.numbers for cell in row)]
            if not rows or any(number in found for _, _, found in self.sentences if not _in_table(found, rows)):
                continue
            if self.asked and not any(_row_terms(row) & self.asked for row in rows):
                return Message(
                    N_("the passages give {number} in a table row about something else than the question"),
                    number=number,
                )
            for row in rows:
                named = [cell for cell in row if cell.name_terms and cell.name_terms <= said and cell.numbers]
                holding = [cell for cell in row if number in cell.numbers]
                if named and not any(cell in named for cell in holding) and not any(c.numbers & numbers for c in named):
                    return Message(
                        N_("the passages give {number} as the {column}, not the {named}"),
                        number=number,
                        column=holding[0].name,
                        named=named[0].name,
                    )
        return None

    def about_what_was_asked(self, named: Sequence[str]) -> bool:
        """Whether a passage sentence holding every named term (a setting, a command) is about
        what the question asks: under a heading that shares a word with the question, or itself
        holding most of the question's words. `ROUTER_MODE=off` does not turn off saving chats
        because the sentence giving it is about escalation."""
        named = [term for term in named if _SETTING_OR_COMMAND.search(term)]
        if not named or not self.asked:
            return True
        return any(
            _shares_a_word(heading, self.asked) or len(found & self.asked) >= MIN_TOPIC_SHARE * len(self.asked)
            for (text, found, numbers), heading in zip(self.sentences, self.headings, strict=True)
            if all(_states(term, text, numbers) for term in named)
        )

    def names_what_was_asked(self, exact: Sequence[str]) -> bool:
        """Whether a passage sentence holding every exact term names, in itself or its heading,
        each thing the question names that the passages mention: `vllm.internal:8000` is not
        Ollama's address because the sentence giving it is about vLLM."""
        mentioned = [name for name in self.asked_names if name in self.terms]
        if not exact or not mentioned:
            return True
        return any(
            all(name in found or name in heading for name in mentioned)
            for (text, found, numbers), heading in zip(self.sentences, self.headings, strict=True)
            if all(_states(term, text, numbers) for term in exact)
        )


_TABLE_RULE = re.compile(r"^\|?[\s:|-]*-[\s:|-]*$")


def is_table_rule(line: str) -> bool:
    """A table's separator line, `|---|---|`: it says nothing."""
    return bool(_TABLE_RULE.match(line.strip()))


def table_cells(row: str) -> list[str]:
    """The cells of a Markdown table row, stripped."""
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


@dataclass(frozen=True)
class _Cell:
    name: str  # its column's name, as the header writes it
    name_terms: frozenset[str]
    terms: frozenset[str]
    numbers: frozenset[str]


def _table_rows(passage: str) -> list[tuple[_Cell, ...]]:
    """The passage's table rows that come under a header row, cell by cell."""
    rows = []
    header: list[str] | None = None
    lines = [line.strip() for line in passage.replace(" … ", "\n").splitlines()]
    for previous, line in zip(["", *lines], lines, strict=False):
        if not line.startswith("|"):
            header = None
        elif is_table_rule(line) and previous.startswith("|"):
            header = table_cells(previous)
        elif header is not None and not is_table_rule(line):
            cells = table_cells(line)
            if len(cells) == len(header):
                rows.append(
                    tuple(
                        _Cell(name, frozenset(_terms(name)), frozenset(_terms(cell)), _numbers(cell))
                        for name, cell in zip(header, cells, strict=True)
                    )
                )
    return rows


def _row_terms(row: tuple[_Cell, ...]) -> frozenset[str]:
    """What a row is about: its cells' terms, without its columns' names."""
    return frozenset().union(*(cell.terms for cell in row)) - frozenset().union(*(cell.name_terms for cell in row))


def _in_table(numbers: frozenset[str], rows: Sequence[tuple[_Cell, ...]]) -> bool:
    """Whether a passage sentence's numbers are those of one of these table rows (the row itself)."""
    return any(numbers <= frozenset().union(*(cell.numbers for cell in row)) for row in rows)


# What names a setting or a command: code, a SETTING_NAME, an assignment, a path or a flag.
_SETTING_OR_COMMAND = re.compile(r"^`|[A-Z]{2,}_[A-Z]|=|/|^--?[a-z]")


def _shares_a_word(these: frozenset[str], those: frozenset[str]) -> bool:
    """Whether two sets of stemmed terms share a word; a stem that begins the other counts
    ("log" and "login")."""
    return any(
        a == b or (min(len(a), len(b)) >= 3 and (a.startswith(b) or b.startswith(a))) for a in these for b in those
    )


def names(question: str) -> list[str]:
    """What an English question names: "Does Ollama work with SmolLM2?" names Ollama and
    SmolLM2. Other languages name nothing here: German, for one, capitalises every noun."""
    if not _ENGLISH.search(question):
        return []
    return list(dict.fromkeys(_NAME.findall(question.strip())))


# Words that mark a question as English.
_ENGLISH = re.compile(
    r"\b(?:the|is|are|does|do|did|can|could|should|will|would|how|what|which|where|when|why|who|there|of|with)\b",
    re.IGNORECASE,
)


# What a question names: a capitalised word not at its start ("Ollama", "Foundry Local"), or
# one that mixes cases or letters and digits ("vLLM", "SmolLM2").
_NAME = re.compile(r"(?<!^)(?<![.?!]\s)\b(?:[A-Z][\w-]*[A-Za-z0-9]|[a-z]+[A-Z0-9][\w-]*)")

_NEGATION = re.compile(r"\b(?:not|no|never|cannot|without)\b|n't\b", re.IGNORECASE)
_YES_OR_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def _without(terms: Sequence[str], text: str) -> str:
    """`text` with the exact terms taken out, quoted or not: what it says besides them."""
    for term in terms:
        text = text.replace(term, " ").replace(term.strip('`"'), " ")
    return text


# Passage sentences whose facts `_sentence_facts` keeps: the same sentences come back question
# after question, in every turn's evidence, and need working out only once.
SENTENCES_KEPT = 4096  # a few MB at most


@lru_cache(maxsize=SENTENCES_KEPT)
def _sentence_facts(sentence: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """A passage sentence folded and single-spaced, its terms and its numbers."""
    return _normal(sentence), frozenset(_terms(sentence)), _numbers(sentence)


def _numbers(text: str) -> frozenset[str]:
    return frozenset(_canonical_number(n) for n in _NUMBER.findall(text))


def _states(term: str, text: str, numbers: frozenset[str]) -> bool:
    """Whether folded `text`, whose numbers are `numbers`, states an exact term."""
    inner = term.strip('`"')
    if _NUMBER.fullmatch(inner):
        return _canonical_number(inner) in numbers
    if inner.lower() in NUMBER_WORDS:
        return NUMBER_WORDS[inner.lower()] in numbers or f" {inner.lower()} " in f" {text} "
    return _normal(inner) in text


def _canonical_number(number: str) -> str:
    """1,000 is 1000 and 3.0 is 3: a table's `3.0` and an answer's "3 seconds" agree."""
    number = number.replace(",", "")
    if re.fullmatch(r"\d+\.\d+", number):
        number = number.rstrip("0").rstrip(".")
    return number


@dataclass(frozen=True)
class Verdict:
    supported: bool
    reason: str = ""  # for the user, when not supported: an i18n.Message (English as a str)
    missing: tuple[str, ...] = ()  # exact terms the passages never state
    content_share: float = 1.0


def never_state(missing: Sequence[str]) -> Message:
    """The reason for a sentence stating terms the passages never state (the first three)."""
    return Message(N_("the passages never state {terms}"), terms=", ".join(missing[:3]))


def exact_terms(sentence: str) -> list[str]:
    """What a sentence states exactly: numbers, identifiers, paths, commands, quoted strings."""
    text = _LIST_MARKER.sub("", CITATION.sub(" ", sentence))
    found = [f"`{m}`" for m in _BACKTICKED.findall(text)]
    found += [f'"{m}"' for m in _QUOTED.findall(text)]
    bare = _QUOTED.sub(" ", _BACKTICKED.sub(" ", text))
    found += [m.rstrip(".,:;") for m in _IDENTIFIER.findall(bare)]
    found += _NUMBER.findall(bare)
    found += [word for word in words(bare) if word in NUMBER_WORDS]
    return list(dict.fromkeys(term for term in found if term.strip('`"')))


def is_abstention(answer: str) -> bool:
    """Whether the answer says it cannot answer from the passages."""
    return bool(_ABSTENTION.search(answer))


def opens_with_abstention(answer: str) -> bool:
    """Whether an answer starts by saying that the passages do not answer the question; a
    claim before such a sentence makes the answer a claim ("X. This is not stated in the text")."""
    first = next((sentence.text for sentence in split_sentences(answer) if words(sentence.text)), "")
    return is_abstention(first)


_ABSTENTION = re.compile(
    r"\b("
    r"(do|does|did)( not|n't) (cover|contain|mention|say|provide|include|specify)"
    r"|not (covered|mentioned|specified|stated|provided|available) in"
    r"|no (information|mention|details?) (about|on|of|regarding)"
    r"|(cannot|can't|can not|unable to) (answer|find|determine|tell)"
    r"|(i )?(do not|don't) know"
    r"|there is no (information|answer)"
    r")\b",
    re.IGNORECASE,
)


def check_sentence(sentence: str, evidence: Evidence, *, code: bool = False) -> Verdict:
    """Whether one sentence (or one line of a code block, `code=True`) is supported."""
    if code:
        # An excerpt marks text left out with " … ", and a model may copy the mark.
        pieces = [piece for piece in map(_normal, sentence.split("…")) if piece]
        if all(piece in evidence.text for piece in pieces):
            return Verdict(True)
        return Verdict(False, Message(N_("this command is not in the passages")), (sentence.strip(),))
    if is_abstention(sentence):
        return Verdict(True)
    missing = tuple(term for term in exact_terms(sentence) if not evidence.states(term))
    terms = _terms(CITATION.sub(" ", sentence))
    share = sum(term in evidence.terms for term in terms) / len(terms) if terms else 1.0
    if missing:
        return Verdict(False, never_state(missing), missing, share)
    if (misplaced := evidence.misplaced_value(sentence)) is not None:
        return Verdict(False, misplaced, (), share)
    if len(terms) >= MIN_CONTENT_WORDS and share < MIN_CONTENT_SHARE:
        reason = Message(N_("most of it is not in the passages ({share:.0%} of its words are)"), share=share)
        return Verdict(False, reason, (), share)
    if len(terms) >= MIN_CONTENT_WORDS and evidence.local_share(terms) < MIN_LOCAL_SHARE:
        reason = Message(N_("no passage says it: its words are scattered over different passages"))
        return Verdict(False, reason, (), share)
    exact = exact_terms(sentence)
    # Numbers are left out here: a table row holds one with few words around it.
    named = [term for term in exact if not _NUMBER.fullmatch(term.strip('`"'))]
    if len(terms) >= MIN_CONTENT_WORDS and evidence.anchored_share(named, terms) < MIN_ANCHORED_SHARE:
        return Verdict(False, Message(N_("the passages say something else about {term}"), term=named[0]), (), share)
    if not evidence.names_what_was_asked(exact) or not evidence.about_what_was_asked(named):
        about = exact[0] if not evidence.names_what_was_asked(exact) else named[0]
        reason = Message(N_("the passage that gives {term} is about something else"), term=about)
        return Verdict(False, reason, (), share)
    # A "Yes" or "No" claims the polarity of the passage that answers, whatever follows it.
    opening = _YES_OR_NO.match(sentence)
    # What the sentence says beyond its exact terms: too little, and it means what the question asks.
    if not opening and len(_terms(_without(exact, CITATION.sub(" ", sentence)))) >= MIN_CONTENT_WORDS:
        return Verdict(True, content_share=share)
    # "135M." to "How much does SmolLM2-135M read?" gives back what the question says.
    if not opening and exact and evidence.question and new_information(sentence, evidence.question) == 0:
        return Verdict(False, Message(N_("it only repeats what the question says")), (), share)
    says_no = opening[1].lower() == "no" if opening else bool(_NEGATION.search(sentence))
    if says_no or opening:
        negative = evidence.polarity_of_best_match()
        if negative is not None and negative != says_no:
            reason = (
                Message(N_("the passage that answers this question says no"))
                if negative
                else Message(N_("the passage that answers this question says yes"))
            )
            return Verdict(False, reason, (), share)
    if evidence.anchored_share(named, evidence.asked, besides=True) < MIN_ASKED_SHARE:
        reason = Message(N_("the passages do not give {term} as the answer to this question"), term=named[0])
        return Verdict(False, reason, (), share)
    return Verdict(True, content_share=share)


# --- sentences ----------------------------------------------------------------------

# A sentence ends at . ! ? followed by a space, at a CJK full stop, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[。！？])|\n")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_NUMBER = re.compile(r"\s*\d+[.)] +")


@dataclass(frozen=True)
class Sentence:
    text: str  # as written, with the whitespace that followed it
    code: bool = False  # a line inside a fenced code block
    fence: bool = False  # a fence line itself (```bash)


def split_sentences(text: str) -> list[Sentence]:
    """The answer cut into checkable units; joining their texts gives the answer back."""
    splitter = SentenceSplitter()
    return [*splitter.feed(text), *splitter.finish()]


class SentenceSplitter:
    """Finds finished sentences in streamed text; a sentence is finished when what follows it is seen."""

    def __init__(self) -> None:
        self._pending = ""
        self._in_code = False

    def feed(self, text: str) -> list[Sentence]:
        self._pending += text
        done: list[Sentence] = []
        start = 0
        while match := _SENTENCE_END.search(self._pending, start):
            if match.end() == len(self._pending) and not match.group().endswith("\n"):
                break  # "2." might be "2.5": wait for the next piece
            if _LIST_NUMBER.fullmatch(self._pending[: match.end()]):
                start = match.end()  # "1. " opens a list item: its sentence goes on
                continue
            piece, self._pending = self._pending[: match.end()], self._pending[match.end() :]
            done.append(self._unit(piece))
            start = 0
        return done

    def finish(self) -> list[Sentence]:
        piece, self._pending = self._pending, ""
        return [self._unit(piece)] if piece else []

    @property
    def pending(self) -> str:
        return self._pending

    def _unit(self, piece: str) -> Sentence:
        if _FENCE.match(piece):
            self._in_code = not self._in_code
            return Sentence(piece, fence=True)
        return Sentence(piece, code=self._in_code)


# --- loops --------------------------------------------------------------------------

# Letters and digits, with the vowel signs and viramas of the Indic scripts (not \w: "రెండు"
# is one word, not three) and the zero-width (non-)joiners inside their words ("పోర్ట్‌లో").
_WORD = re.compile(r"(?:[^\W_]|[\u0900-\u0dff\u200c\u200d])+")


def words(text: str) -> list[str]:
    return _WORD.findall(CITATION.sub(" ", text).lower())


def first_repeat(found: Sequence[str], n: int = LOOP_NGRAM) -> int | None:
    """Index of the word where a run of `n` words first occurs for the second time, or None."""
    seen: set[tuple[str, ...]] = set()
    for i in range(len(found) - n + 1):
        gram = tuple(found[i : i + n])
        if gram in seen:
            return i + n - 1
        seen.add(gram)
    return None


def is_repetitive(answer: str) -> bool:
    """Whether an answer repeats a run of LOOP_NGRAM words: a model in a loop."""
    return first_repeat(words(answer)) is not None


# --- the guard while an answer streams ---------------------------------------------


class GuardMode(str, Enum):
    OFF = "off"  # show the answer as the model wrote it
    MARK = "mark"  # mark unsupported sentences as cut, let the model go on
    STOP = "stop"  # cut the first unsupported sentence and stop the model


# The reason for cutting a sentence that a model in a loop said again.
REPEATING = N_("the answer started repeating itself")


@dataclass(frozen=True)
class Cut:
    """A sentence taken back from the answer, and why."""

    text: str
    reason: str  # for the user: an i18n.Message (English as a str), said in the chat's language where shown
    loop: bool = False


@dataclass
class GuardedText:
    """An answer split into what stands and what was cut, in order."""

    parts: list[str | Cut] = field(default_factory=list)

    @property
    def kept(self) -> str:
        return "".join(part for part in self.parts if isinstance(part, str)).strip()

    @property
    def cuts(self) -> list[Cut]:
        return [part for part in self.parts if isinstance(part, Cut)]

    @property
    def sentences(self) -> int:
        return len(self.parts)


class AnswerGuard:
    """Checks an answer as it streams. `feed` returns the sentences cut by this piece of
    text; `stopped` says that the model should stop (always after a loop; in `stop` mode
    after any cut). Per token it only appends text and looks for a sentence end."""

    def __init__(self, evidence: Evidence, mode: GuardMode = GuardMode.STOP) -> None:
        self.evidence = evidence
        self.mode = mode
        self.result = GuardedText()
        self.stopped = False
        self._splitter = SentenceSplitter()
        self._words: list[str] = []
        self._grams: set[tuple[str, ...]] = set()
        self._sentences: set[tuple[str, ...]] = set()

    def feed(self, text: str) -> list[Cut]:
        if self.stopped:
            return []
        return self._judge(self._splitter.feed(text))

    def finish(self) -> list[Cut]:
        """Judge the last, unfinished sentence (the model has stopped)."""
        if self.stopped:
            return []
        return self._judge(self._splitter.finish())

    def _judge(self, sentences: list[Sentence]) -> list[Cut]:
        cuts = []
        for sentence in sentences:
            if self.stopped:
                break
            cut = self._cut(sentence)
            if cut is None or self.mode is GuardMode.OFF:
                self.result.parts.append(sentence.text)
                continue
            self.result.parts.append(cut)
            cuts.append(cut)
            self.stopped = cut.loop or self.mode is GuardMode.STOP
        return cuts

    def _cut(self, sentence: Sentence) -> Cut | None:
        if sentence.fence or not sentence.text.strip():
            return None
        if self._repeats(words(sentence.text)):
            return Cut(sentence.text, Message(REPEATING), loop=True)
        verdict = check_sentence(sentence.text, self.evidence, code=sentence.code)
        return None if verdict.supported else Cut(sentence.text, verdict.reason)

    def _repeats(self, new_words: list[str]) -> bool:
        """A run of LOOP_NGRAM words seen before, or a sentence of 3 words or more said again."""
        said_again = len(new_words) >= 3 and tuple(new_words) in self._sentences
        self._sentences.add(tuple(new_words))
        self._words.extend(new_words)
        start = max(0, len(self._words) - len(new_words) - LOOP_NGRAM + 1)
        repeated = False
        for i in range(start, len(self._words) - LOOP_NGRAM + 1):
            gram = tuple(self._words[i : i + LOOP_NGRAM])
            repeated = repeated or gram in self._grams
            self._grams.add(gram)
        return repeated or said_again


def guard_text(answer: str, evidence: Evidence, mode: GuardMode = GuardMode.MARK) -> GuardedText:
    """The guard's verdict on a finished answer (as if it had streamed)."""
    guard = AnswerGuard(evidence, mode)
    guard.feed(answer)
    guard.finish()
    return guard.result


def support_share(answer: str, passages: Sequence[str]) -> float:
    """Share of the answer's content words (stop words and citation markers left out)
    that occur in at least one passage; 0 for an answer with no content word."""
    claimed = _terms(CITATION.sub(" ", answer))
    if not claimed:
        return 0.0
    known = Evidence.of(passages).terms
    return sum(term in known for term in claimed) / len(claimed)


# Questions that ask for a quantity or a port, which only a number answers.
_ASKS_FOR_NUMBER = re.compile(
    r"\b(?:how (?:many|much|long|often|big|large|small|short|fast|far|old|high|low|soon)|(?:what|which) port)\b"
    # Telugu: how many, how much (ఎంతసేపు, how long, and the other words it begins), which port.
    r"|(?<![\u0c00-\u0c7f])(?:ఎన్ని|ఎంత|ఏ\s+పోర్ట్)",
    re.IGNORECASE,
)
# Telugu number words, one to ten, a hundred and a thousand, as `states_a_number` reads them.
_TELUGU_NUMBER_WORDS = frozenset("ఒకటి రెండు మూడు నాలుగు ఐదు ఆరు ఏడు ఎనిమిది తొమ్మిది పది వంద వెయ్యి".split())


def asks_for_number(question: str) -> bool:
    """Whether the question asks how many, how long, which port…: only a number answers it."""
    return bool(_ASKS_FOR_NUMBER.search(question))


def states_a_number(text: str) -> bool:
    """Whether the text states a number, in digits or as a word ("twice"); [n] markers do not count."""
    # A list item's number ("6. The chat shows…") states nothing.
    text = "\n".join(_LIST_MARKER.sub("", line) for line in CITATION.sub(" ", text).splitlines())
    return bool(_NUMBER.search(text)) or any(
        word in NUMBER_WORDS or word in _TELUGU_NUMBER_WORDS for word in words(text)
    )


# "Which setting…?", "What command…?": only a name answers it. After "which" or Telugu "ఏ",
# with up to two words between ("which Ollama setting"); a cross-script question is ranked
# with its words in the passages' English ("ఏ సెట్టింగ్" as "ఏ setting").
_NAMED_THINGS = (
    r"(?:settings?|variables?|options?|flags?|commands?|files?|folders?|director(?:y|ies)|parameters?|endpoints?"
    r"|సెట్టింగ్|వేరియబుల్|ఆదేశ|కమాండ్|ఫైల్|ఫ్లాగ్|ఫోల్డర్)"
)
_ASKS_FOR_NAME = re.compile(
    rf"\b(?:which|what)\s+(?:[\w-]+\s+){{0,2}}?{_NAMED_THINGS}"
    rf"|(?<![\u0c00-\u0c7f])ఏ\s+{_NAMED_THINGS}",
    re.IGNORECASE,
)
# A name as the handbook writes one: in backticks, or in capitals with underscores. Quoted
# text is not one: an interface label ("Escalated to") answers no "which setting".
_A_NAME = re.compile(r"`[^`]+`|\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")


def asks_for_name(question: str) -> bool:
    """Whether the question asks which setting, command, file…: only a name answers it."""
    return bool(_ASKS_FOR_NAME.search(question))


def gives_a_name(text: str) -> bool:
    """Whether the text names a setting, command or file (`_A_NAME`)."""
    return bool(_A_NAME.search(text))


def lacks_asked_number(answer: str, question: str) -> bool:
    """Whether the question asks how many, how long or which port, and the answer states no
    number ("up to `CHUNK_OVERLAP` characters" for "How many characters…?")."""
    return asks_for_number(question) and not states_a_number(answer)


def restates_question(answer: str, question: str) -> bool:
    return new_information(answer, question) < MIN_NEW_INFORMATION


def new_information(answer: str, question: str) -> float:
    """Share of the answer's content words that the question did not already say; 1 for an
    answer with no content word ("Yes.", "2.") or an exact term of its own."""
    said = _terms(CITATION.sub(" ", answer))
    asked = set(_terms(question))
    if not said or any(_normal(term.strip('`"')) not in _normal(question) for term in exact_terms(answer)):
        return 1.0
    if _YES_OR_NO.match(answer):
        return 1.0  # "Yes, the app reloads by itself": the first word answers, the rest may repeat the question
    return sum(term not in asked for term in said) / len(said)
