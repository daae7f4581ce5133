"""One turn, once: the chat and every evaluation tool run this and nothing else.

    TurnRequest ─► retrieve ─► out of scope (weak match, or a name no passage mentions)?
      ─► select context for the budget
      ─► small model, checked sentence by sentence as it streams
      ─► route (length, token confidence, retrieval score, support)
      ─► large model when routed, checked the same way
      ─► the best supported answer, or quotes from the passages when none is
    ─► events: Retrieved, Notice, AttemptStart, TokenEvent, SentenceKept or SentenceCut,
       Answer, Routed, TurnDone (last, with the phase timings and the final answer)

See docs/architecture.md for where each step lives.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from answering.attempts import Answer, AttemptStart, stream_answer
from answering.confidence import Signals, collect_signals
from answering.context import (
    Excerpt,
    Meaning,
    best_sentences,
    closest_in_meaning,
    drawn_from_best,
    embedded_units,
    estimate_tokens,
    select_contexts,
    whole_chunks,
)
from answering.copying import MIN_QUESTION_LIKELIHOOD, Choice, candidates, choose, quoted
from answering.cross_script import SCORE_FACTOR as CROSS_SCRIPT_SCORE_FACTOR
from answering.cross_script import SENTENCE_MEANING_WEIGHT as CROSS_SCRIPT_MEANING_WEIGHT
from answering.cross_script import (
    Passages,
    as_searched,
    fused_hits,
    glossary_terms,
    is_cross_script,
    mostly_foreign,
    unknown_names,
)
from answering.grounding import (
    AnswerGuard,
    Cut,
    Evidence,
    GuardedText,
    GuardMode,
    lacks_asked_number,
    names,
    opens_with_abstention,
    restates_question,
)
from answering.prompt import (
    GENERAL_PROMPT,
    IN_THE_QUESTIONS_LANGUAGE,
    build_messages,
    refine_messages,
    retrieval_query,
)
from answering.question_vectors import EmbedsQuestions, question_vectors
from answering.router import (
    COPY_LIKELIHOOD,
    DRAWN_FROM_BEST,
    EMPTY_ANSWER,
    NO_NUMBER,
    RESTATES_QUESTION,
    UNREADABLE,
    UNSUPPORTED_SHARE,
    Decision,
    Mode,
    Reason,
    Thresholds,
    decide,
)
from answering.timings import PhaseTimings
from answering.translation_check import TranslationGuard
from i18n import N_, Message, translator
from models.base import (
    Backend,
    BackendError,
    ChatMessage,
    GenerationParams,
    LikelihoodScorer,
    TokenCounter,
    TokenEvent,
    Usage,
)
from models.catalog import ModelSpec
from models.routing import PairRouting, load_routing, pair_key
from models.settings import Settings
from rag.documents import Chunk, Hit
from rag.embedding import Closeness

# compose: the model writes its answer; copy: it chooses the passage sentence that answers
# (answering.copying); auto: it writes, and chooses when what it wrote does not stand.
AnswerStyle = Literal["compose", "copy", "auto"]


class Searchable(Protocol):
    """A knowledge base: the shared corpus and a chat's uploads, or pasted text."""

    def search(self, query: str, mode: str, k: int) -> list[Hit]: ...

    def mentions(self, word: str, mode: str) -> bool:
        """Whether any passage holds the word (a name the question asks about)."""
        ...


@dataclass(frozen=True)
class TurnRequest:
    """Everything one answer depends on, chosen by the chat (or a tool) before it starts."""

    question: str
    knowledge: Searchable
    slm: ModelSpec
    llm: ModelSpec
    fallback: ModelSpec | None = None  # answers when a server model fails
    history: tuple[ChatMessage, ...] = ()
    params: GenerationParams = GenerationParams()
    router_mode: Mode = Mode.ESCALATE
    retrieval_mode: str = "bm25"
    top_k: int = 3
    guard: GuardMode = GuardMode.STOP
    # Answer from the model's own knowledge when the documents do not cover the question.
    general_knowledge: bool = False
    # How every model of this turn answers; None: each model's style from the settings.
    answer_style: AnswerStyle | None = None
    # The knowledge is text the user gave for this question (the /compare page's context box,
    # `evaluation.compare --context-file`): it is never out of scope, and as much of it as the
    # budget holds is given, the sentences that best match the question first.
    given_context: bool = False
    # The user's language (a tag such as "te"): the app's own words in the reply are in it.
    language: str | None = None
    # A server model answers in the language of the question rather than the passages', checked
    # on what can be checked across languages (answering/translation_check.py), marked as a translation.
    answer_in_language: bool = False


@dataclass(frozen=True)
class TurnConfig:
    """The pipeline's thresholds and budgets, read once from the settings."""

    thresholds: Thresholds = Thresholds()
    # Below this best retrieval score the documents do not cover the question.
    min_retrieval_score: float = 0.3
    # Tokens of passages each kind of model reads, and budgets of their own for some models.
    embedded_context_budget: int = 400
    server_context_budget: int = 2000
    model_context_budgets: Mapping[str, int] = field(default_factory=dict)
    # Closeness in meaning mixed into choosing the sentences read and quoted; None: terms only.
    meaning: Meaning | None = None
    # With `meaning`: below this closeness of the closest passage sentence, the documents do
    # not cover the question either.
    min_closeness: float = 0.0
    # How each model answers: by model id, else by backend kind ("embedded", "server"); else compose.
    answer_styles: Mapping[str, AnswerStyle] = field(default_factory=dict)
    # The routing `evaluation.router` measured for a pair (models/routing.json), by pair key.
    pairs: Mapping[str, PairRouting] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TurnConfig:
        return cls(
            Thresholds(
                settings.router_min_answer_tokens,
                settings.router_min_token_prob,
                settings.router_min_retrieval_score,
                settings.router_min_copy_margin,
            ),
            settings.min_retrieval_score,
            settings.embedded_context_budget,
            settings.server_context_budget,
            dict(settings.model_context_budgets),
            Meaning(_SHARED_CLOSENESS, settings.sentence_meaning_weight) if settings.sentence_meaning_weight else None,
            settings.min_sentence_closeness,
            dict(settings.answer_styles),
            load_routing(),
        )

    def min_score(self, cross: bool) -> float:
        """The best retrieval score below which the documents do not cover a question: a
        cross-script question's fused score (answering/cross_script.py) has its own scale."""
        return self.min_retrieval_score * (CROSS_SCRIPT_SCORE_FACTOR if cross else 1.0)

    def thresholds_for(self, slm: ModelSpec, llm: ModelSpec) -> Thresholds:
        """The pair's measured thresholds, else the settings' (`ROUTER_MIN_*`)."""
        measured = self.pairs.get(pair_key(slm.key, llm.key))
        return replace(self.thresholds, **measured.thresholds) if measured else self.thresholds  # type: ignore[arg-type]

    def router_mode_for(self, slm: ModelSpec, llm: ModelSpec) -> Mode:
        """The escalation mode a chat with this pair starts in when ROUTER_MODE is not set."""
        measured = self.pairs.get(pair_key(slm.key, llm.key))
        return Mode(measured.mode) if measured else Mode.ESCALATE

    def style(self, spec: ModelSpec) -> AnswerStyle:
        return self.answer_styles.get(spec.model, self.answer_styles.get(spec.backend, "compose"))

    def budget(self, spec: ModelSpec) -> int:
        default = self.embedded_context_budget if spec.backend == "embedded" else self.server_context_budget
        return self.model_context_budgets.get(spec.model, default)

    def with_budget(self, budget: int) -> TurnConfig:
        """This configuration with every model reading `budget` tokens of passages."""
        return replace(self, embedded_context_budget=budget, server_context_budget=budget, model_context_budgets={})


# One cache of sentence vectors for every chat and tool of the process.
_SHARED_CLOSENESS = Closeness()

# Where `embed_ahead` keeps the corpus's sentence vectors, under MODEL_CACHE_DIR: a cache of
# what the packaged model made of a text (by its hash), which any process may share.
SENTENCE_VECTORS = "sentence-vectors.npz"
# Sentences embedded between two saves: a stopped app loses at most this much work.
_SAVE_EVERY = 64


def embed_ahead(settings: Settings, chunks: Sequence[Chunk], stop: threading.Event | None = None) -> int:
    """Embed the sentences of `chunks` that ranking by meaning compares with questions before
    any question asks, so that a first question about them does not wait for it (about 60 ms a
    sentence on one core: a minute for the handbook), and the passages' Latin words, which the
    words of a question in another script are glossed with (answering/cross_script.py; about
    8 ms a word, 12 s for the handbook). They are kept in MODEL_CACHE_DIR, so a
    restart embeds only sentences it has not seen. Returns how many were embedded; blocking;
    `stop` ends it between batches."""
    if not settings.sentence_meaning_weight:
        return 0
    store = settings.model_cache_dir / SENTENCE_VECTORS
    texts = [*embedded_units(chunks), *glossary_terms(chunks)]
    _SHARED_CLOSENESS.load(store)
    made = 0
    for start in range(0, len(texts), _SAVE_EVERY):
        if stop is not None and stop.is_set():
            break
        if fresh := _SHARED_CLOSENESS.embed_ahead(texts[start : start + _SAVE_EVERY]):
            made += fresh
            _SHARED_CLOSENESS.save(store, texts[: start + _SAVE_EVERY])
    return made


def embed_upload_ahead(config: TurnConfig, chunks: Sequence[Chunk]) -> int:
    """Embed an upload's sentences before a question needs them: a question in another script
    ranks every passage sentence by meaning (answering/cross_script.py), and would otherwise
    embed a new upload's all at once, about 60 ms a sentence. Kept in memory only (an upload is
    one chat's own), a batch at a time; blocking. How many were embedded."""
    if config.meaning is None or not isinstance(config.meaning.closeness, Closeness):
        return 0
    return config.meaning.closeness.embed_ahead([*embedded_units(chunks), *glossary_terms(chunks)])


# Out of scope but above this share of MIN_RETRIEVAL_SCORE, the closest sentences are
# quoted, as they may answer in other words: 1.7% of clapnq's answerable questions and 4% of
# the handbook set's score below 0.20, and none of either below 0.5 x 0.20.
NEAR_MISS_SHARE = 0.5

# --- events -------------------------------------------------------------------------


@dataclass(frozen=True)
class Retrieved:
    """The hits found, and the numbered excerpts of them that the models will read."""

    hits: list[Hit]
    excerpts: list[Excerpt]

    @property
    def best_score(self) -> float:
        return self.hits[0].score if self.hits else 0.0

    @property
    def shown(self) -> list[Excerpt]:
        """The passages shown beside the reply, whose [n] it cites: out of scope, when no
        model read anything, the nearest chunks whole."""
        return self.excerpts or whole_chunks(self.hits)


NoticeKind = Literal["out_of_scope", "general_knowledge", "unsupported"]


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    text: str


@dataclass(frozen=True)
class SentenceKept:
    """The guard let a sentence of the answer streaming from `model` through: a client that
    must never show an unchecked sentence (the OpenAI-compatible API) may send it now."""

    model: ModelSpec
    text: str


@dataclass(frozen=True)
class SentenceCut:
    """The guard took a sentence back from the answer streaming from `model`."""

    model: ModelSpec
    cut: Cut
    stopped: bool  # the model was stopped


@dataclass(frozen=True)
class Routed:
    """The router's verdict on the small model's answer."""

    decision: Decision
    signals: Signals | None  # None when the small model was skipped (always-llm)
    llm: ModelSpec


Source = Literal["slm", "llm", "quotes", "out_of_scope", "general", "none"]


@dataclass(frozen=True)
class FinalAnswer:
    """What the user is left with: supported text, where it came from, and what was cut."""

    text: str
    source: Source
    cuts: tuple[Cut, ...] = ()
    # Under a written answer: the passage sentence it is drawn from, quoted with its [n],
    # so that the reader checks the claim against the documents' own words.
    evidence: str = ""
    copied: bool = False  # a model's choice of a passage sentence, shown word for word
    # Under quotes: the next-best passage sentences, for "How this answer was made".
    more: tuple[str, ...] = ()
    # The model answered in the user's language, not the passages': checked on numbers, names and
    # identifiers only, and marked as a translation (`TurnRequest.answer_in_language`).
    translated: bool = False
    language: str | None = None  # of the app's words around the answer (`TurnRequest.language`)


@dataclass(frozen=True)
class TurnDone:
    timings: PhaseTimings
    slm_answer: Answer | None
    llm_answer: Answer | None
    decision: Decision
    final: FinalAnswer = FinalAnswer("", "none")
    excerpts: tuple[Excerpt, ...] = ()
    # The question as passages were ranked and answers checked: a cross-script question with its
    # words written as the passages' words where they sound alike (answering/cross_script.py).
    question: str = ""

    @property
    def answered_by(self) -> Answer | None:
        """The model answer the final answer is, if it is one."""
        return {"slm": self.slm_answer, "llm": self.llm_answer}.get(self.final.source)

    @property
    def attempts(self) -> list[Answer]:
        """Every answer of the turn, in order (each after what its model wrote first)."""
        return attempts(self.slm_answer, self.llm_answer)


TurnEvent = Retrieved | Notice | AttemptStart | TokenEvent | SentenceKept | SentenceCut | Answer | Routed | TurnDone

# A weakly supported small answer escalates: more than this share of its sentences cut.
MAX_UNSUPPORTED_SHARE = 0.0
# When no model answer stands, the passage sentence most likely to answer is quoted, and the
# next one too when it matches the question nearly as well (at least this share of the first's
# score); the next few go to "How this answer was made" (chosen on the handbook set).
SECOND_QUOTE_SHARE = 0.8
MORE_QUOTES = 3
GENERAL_KNOWLEDGE_NOTICE = N_(
    "The documents do not cover this question; this answer is from the model's general knowledge, "
    "not from the documents."
)
# Between a model's "the documents do not cover this" and the passage sentences quoted under it.
CLOSEST_PASSAGES = N_("The closest passages say:")
UNSUPPORTED_NOTICE = N_(
    "No model answer could be checked against the documents; here is what the closest passages say."
)


def closest_passages(language: str | None) -> str:
    """The separator before the passage sentences quoted under a model's abstention."""
    return f"\n\n{translator(language).gettext(CLOSEST_PASSAGES)}\n\n"


# Share of a model answer's own words that must come from the passage sentences that best
# match the question (chosen on the handbook set): a supported sentence from elsewhere in
# the passages usually answers another question.
MIN_DRAWN_FROM_BEST = 0.85


@dataclass
class _Reading:
    """The excerpts one model reads, and the evidence its answer is checked against."""

    excerpts: list[Excerpt]
    # Made when a model reading these excerpts answers (`_Turn.evidence`): a turn whose large
    # model or fallback does not answer never needs theirs.
    evidence: Evidence | None = None

    def evidence_for(self, question: str) -> Evidence:
        """The evidence, made now if it is not made yet; blocking (it tokenises the excerpts)."""
        if self.evidence is None:
            self.evidence = Evidence.of((f"{e.label}\n{e.text}" for e in self.excerpts), question)
        return self.evidence


@dataclass
class _Turn:
    request: TurnRequest
    config: TurnConfig
    backends: Mapping[str, Backend]
    started: float = field(default_factory=time.perf_counter)
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    # The most that any model of the turn reads: shown beside the answer, and quoted from.
    excerpts: list[Excerpt] = field(default_factory=list)
    readings: dict[int, _Reading] = field(default_factory=dict)  # by context budget
    # The question as passages are ranked and answers checked for it, and the ranking by
    # meaning: for a cross-script question, its words written as the passages' words
    # where they sound alike, and every sentence ranked by meaning (answering/cross_script.py).
    question: str = ""
    meaning: Meaning | None = None
    # A question mostly in another script than the passages' (answering/cross_script.py).
    cross: bool = False

    def __post_init__(self) -> None:
        self.question = self.question or self.request.question
        self.meaning = self.meaning or self.config.meaning

    @property
    def min_score(self) -> float:
        """Below this best retrieval score the documents do not cover the question."""
        return self.config.min_score(self.cross)

    def translating(self, model: ModelSpec) -> bool:
        """Whether the model answers in the question's language (server models only: the embedded
        ones answer in the passages', and copy them)."""
        return self.request.answer_in_language and model.backend != "embedded"

    def guard(self, model: ModelSpec, evidence: Evidence) -> AnswerGuard:
        """The check of the model's answer: a translated one on what can be checked across languages."""
        if self.translating(model):
            return TranslationGuard(evidence, self.request.guard)
        return AnswerGuard(evidence, self.request.guard)

    def reading(self, model: ModelSpec) -> _Reading:
        return self.readings[self.config.budget(model)]

    async def evidence(self, reading: _Reading) -> Evidence:
        """What an answer from these excerpts is checked against, made off the loop if need be."""
        if reading.evidence is not None:
            return reading.evidence
        return await asyncio.to_thread(reading.evidence_for, self.question)


async def run_turn(
    request: TurnRequest, backends: Mapping[str, Backend], config: TurnConfig = TurnConfig()
) -> AsyncGenerator[TurnEvent, None]:
    """Answer one question; see the module's docstring for the events, in order."""
    turn = _Turn(request, config, backends)
    query = retrieval_query(request.question, request.history)
    # Out of scope: nothing matches well, or the question names something no passage mentions
    # ("Is there a Slack bot?"). Pasted text is never out of scope, and with a threshold of 0
    # a model answers every question.
    scoped = not request.given_context and config.min_retrieval_score > 0
    cross = (
        not request.given_context
        and config.meaning is not None
        and isinstance(request.knowledge, Passages)
        and is_cross_script(request.question)
    )
    turn.cross = cross
    if not cross:
        # The question's vector, for choosing context by meaning, made together with the questions
        # other chats ask meanwhile (at once when it is kept already). A cross-script question is
        # embedded as it is searched, once its words are written as the passages' words.
        await _embed_question(query, config.meaning)
    first = _checked_budget(turn, request.llm if request.router_mode is Mode.ALWAYS_LLM else request.slm)
    # Search, scope checks, context and the first model's evidence block (BM25 over a big
    # corpus, tokenising, ranking by meaning), and every chat shares this event loop: they go
    # to a worker thread, in one trip. Under load each trip waits for a thread and then for
    # the loop, so three trips cost a first token about three times that wait.
    prepared = await asyncio.to_thread(_prepare, request, query, config, scoped, first, cross, backends)
    hits, best = prepared.hits, prepared.best
    turn.question, turn.meaning = prepared.question or request.question, prepared.meaning or config.meaning
    turn.timings.retrieval_s = prepared.search_s
    turn.timings.prep_s = time.perf_counter() - turn.started - prepared.search_s
    if prepared.out_of_scope:
        yield Retrieved(hits, [])
        async for event in _out_of_scope(turn, hits, best, prepared.unknown, prepared.closest):
            yield event
        return
    turn.readings = prepared.readings
    turn.excerpts = turn.readings[max(turn.readings)].excerpts
    yield Retrieved(hits, turn.excerpts)

    def messages_for(spec: ModelSpec) -> list[ChatMessage]:
        excerpts, window, count = turn.reading(spec).excerpts, spec.context_window, token_counter(backends, spec)
        messages = build_messages(request.question, request.history, excerpts, window, request.params.max_tokens, count)
        if turn.translating(spec):
            system = messages[0]
            messages[0] = replace(system, content=f"{IN_THE_QUESTIONS_LANGUAGE}\n\n{system.content}")
        return messages

    slm_answer: Answer | None = None
    signals: Signals | None = None
    mode = request.router_mode
    thresholds = config.thresholds_for(request.slm, request.llm)
    if mode is Mode.ALWAYS_LLM:
        decision = decide(Signals(answer_tokens=0, retrieval_score=best, abstained=False), mode, thresholds)
    elif prepared.unreadable is not None:
        # The small model's tokenizer hardly knows the question's script, so the large model answers.
        decision = Decision(mode, escalate=True, reasons=(prepared.unreadable,))
    else:
        async for event in _answer(turn, request.slm, messages_for, request.params.with_logprobs(), request.fallback):
            if isinstance(event, Answer):
                slm_answer = event
            yield event
        routed_at = time.perf_counter()
        if slm_answer is None or slm_answer.error:
            # The small model failed outright; its fallback already answered or explained.
            decision = Decision(mode, escalate=False)
        else:
            signals = collect_signals(
                slm_answer.checked.kept if slm_answer.checked else slm_answer.text,
                _completion_tokens(slm_answer),
                slm_answer.logprobs,
                best,
            )
            if slm_answer.choice is not None:
                signals = replace(signals, copy_margin=slm_answer.choice.margin)
            decision = _with_support(decide(signals, mode, thresholds), slm_answer, turn)
        turn.timings.router_s = time.perf_counter() - routed_at
        if slm_answer is not None:
            turn.timings.slm_ttft_s = slm_answer.ttft_s or 0.0
            turn.timings.slm_generation_s = slm_answer.generation_s

    llm_answer: Answer | None = None
    yield Routed(decision, signals, request.llm)
    if decision.escalate:
        draft = slm_answer.checked.kept if slm_answer and slm_answer.checked and mode is Mode.DRAFT_REFINE else ""

        def llm_messages(spec: ModelSpec) -> list[ChatMessage]:
            if not draft:
                return messages_for(spec)
            return refine_messages(request.question, turn.reading(spec).excerpts, draft)

        # If the large model fails, the small answer stands; with no small answer
        # (always-llm), the embedded fallback answers instead.
        fallback = request.fallback if slm_answer is None else None
        async for event in _answer(turn, request.llm, llm_messages, request.params, fallback):
            if isinstance(event, Answer):
                llm_answer = event
                turn.timings.llm_ttft_s = event.ttft_s or 0.0
                turn.timings.llm_generation_s = event.generation_s
            yield event

    final = replace(await asyncio.to_thread(_final, turn, slm_answer, llm_answer, decision), language=request.language)
    if final.source == "quotes":
        yield Notice("unsupported", translator(request.language).gettext(UNSUPPORTED_NOTICE))
    turn.timings.total_s = time.perf_counter() - turn.started
    yield TurnDone(turn.timings, slm_answer, llm_answer, decision, final, tuple(turn.excerpts), turn.question)


def token_counter(backends: Mapping[str, Backend], model: ModelSpec) -> Callable[[str], int]:
    """How the model's tokens are counted: by its own tokenizer when its backend has one
    (`TokenCounter`: the embedded models), else by a generous estimate. Blocking.

    A model's own count is taken as at least a token for 3 characters: the budgets were chosen
    on English counted that way (the embedded models' tokenizers make 3.7-3.8 characters a
    token of it), so an English passage reads what it did, and the model's own count only ever
    adds, where a script costs it more (SmolLM2: 2.7 tokens a Telugu letter)."""
    backend = backends.get(model.backend)
    if isinstance(backend, TokenCounter):
        own = functools.partial(backend.count_tokens, model.model)
        return lambda text: max(own(text), len(text) // 3 + 1)
    return estimate_tokens


def _most_of(counters: Sequence[Callable[[str], int]]) -> Callable[[str], int]:
    if len(counters) == 1:
        return counters[0]
    return lambda text: max(count(text) for count in counters)


def _checked_budget(turn: _Turn, model: ModelSpec) -> int:
    """The budget of the excerpts the model's first answer is checked against: its own, or the
    largest when it copies (`_copied_answer` chooses among the most the turn retrieved)."""
    style = turn.request.answer_style or turn.config.style(model)
    models = [m for m in (turn.request.slm, turn.request.llm, turn.request.fallback) if m is not None]
    if style == "copy" and isinstance(turn.backends.get(model.backend), LikelihoodScorer):
        return max(turn.config.budget(m) for m in models)
    return turn.config.budget(model)


async def _embed_question(query: str, meaning: Meaning | None) -> None:
    """The question embedded ahead of choosing context by meaning, with other chats' questions
    (`answering.question_vectors`), off the loop; nothing to do without ranking by meaning."""
    if meaning is not None and meaning.weight > 0 and isinstance(meaning.closeness, EmbedsQuestions):
        await question_vectors(meaning.closeness).embed(query)


@dataclass(frozen=True)
class _Prepared:
    """What a turn found before any model answers (`_prepare`)."""

    hits: list[Hit]
    search_s: float
    unknown: list[str] = field(default_factory=list)  # names in the question no passage mentions
    closest: float | None = None  # closeness in meaning of the closest passage sentence, when checked
    # What each model reads, by budget; empty when the documents do not cover the question.
    readings: dict[int, _Reading] = field(default_factory=dict)
    # For a cross-script question: the question as ranked, and the ranking by meaning (see `_Turn`).
    question: str = ""
    meaning: Meaning | None = None
    # Why the small model cannot read the question, when it cannot (`_unreadable`).
    unreadable: Reason | None = None

    @property
    def best(self) -> float:
        return self.hits[0].score if self.hits else 0.0

    @property
    def out_of_scope(self) -> bool:
        return not self.readings


def _prepare(
    request: TurnRequest,
    query: str,
    config: TurnConfig,
    scoped: bool,
    first: int,
    cross: bool = False,
    backends: Mapping[str, Backend] | None = None,
) -> _Prepared:
    """Search; the scope checks (`scoped`): the best score, the names the question asks about
    and, with `config.meaning`, closeness in meaning; then what each model reads (by budget),
    with the evidence of the first model to answer (budget `first`) made. A `cross`-script
    question is searched by words and meaning together (answering/cross_script.py). Blocking."""
    searched = time.perf_counter()
    question, meaning = request.question, config.meaning
    also: tuple[str, ...] = ()  # other forms of the query searched by words (`fused_hits`)
    if cross and meaning is not None and isinstance(request.knowledge, Passages):
        mode = request.retrieval_mode
        written, every = as_searched(question, request.knowledge, mode, meaning)
        # The search query is the question itself unless a follow-up adds the previous one.
        if query != question:
            query, every = as_searched(query, request.knowledge, mode, meaning)
        else:
            query = written
        question, also = written, (every,)
        meaning = replace(meaning, weight=CROSS_SCRIPT_MEANING_WEIGHT, everywhere=True)
    hits, unknown = _search(request, query, scoped, meaning if cross else None, also)
    search_s = time.perf_counter() - searched
    best = hits[0].score if hits else 0.0
    weak = (best < config.min_score(cross) or bool(unknown)) and not request.given_context
    # With nothing found, a general-knowledge answer (when asked for) beats a prompt without passages.
    nothing = not hits and request.general_knowledge
    if weak or nothing:
        return _Prepared(hits, search_s, unknown, question=question, meaning=meaning)
    # A question can share words with the passages and still ask about something else
    # ("Can I export a chat as a PDF?" against the upload page). A cross-script question's
    # score has its closeness in meaning in it already.
    if scoped and hits and meaning and config.min_closeness > 0 and not cross:
        closest = closest_in_meaning(hits, query, meaning)
        if closest < config.min_closeness:
            return _Prepared(hits, search_s, unknown, closest)
    else:
        closest = None
    models = [m for m in (request.slm, request.llm, request.fallback) if m is not None]
    # A small model may read less than the large one (it reads more slowly); the large one
    # reads all of that and more, under the same [n].
    budgets = {config.budget(m) for m in models}
    # Each budget in its model's tokens; models sharing a budget, in the most any of them counts.
    counters: dict[int, list[Callable[[str], int]]] = {}
    for m in models:
        counters.setdefault(config.budget(m), []).append(token_counter(backends or {}, m))
    for count in (count for found in counters.values() for count in found):
        count("")  # loads a tokenizer here, off the loop, where building a prompt will count with it
    counts = {budget: _most_of(found) for budget, found in counters.items()}
    selections = select_contexts(hits, query, budgets, counts, fill=request.given_context, meaning=meaning)
    readings = {budget: _Reading(excerpts) for budget, excerpts in selections.items()}
    readings[first].evidence_for(question)
    unreadable = _unreadable(request, backends or {}) if cross else None
    return _Prepared(hits, search_s, unknown, closest, readings, question, meaning, unreadable)


# A model reads a question in its tokenizer's script when it spends at most this many tokens a
# character on it. SmolLM2's English vocabulary spends 2.7 on Telugu (Gemma 3's, 0.35): it
# reads the question as bytes, finds every passage unlikely under it, and scoring its copy
# answer took 3-7 s a question.
MAX_TOKENS_PER_CHARACTER = 1.0


def _unreadable(request: TurnRequest, backends: Mapping[str, Backend]) -> Reason | None:
    """Why the small model cannot read the question, when the large one can; else None. Blocking."""
    question = request.question.strip()
    if not question:
        return None
    small, large = (token_counter(backends, m)(question) / len(question) for m in (request.slm, request.llm))
    if small <= MAX_TOKENS_PER_CHARACTER or large > MAX_TOKENS_PER_CHARACTER:
        return None
    return Reason(
        "unreadable",
        small,
        MAX_TOKENS_PER_CHARACTER,
        Message(UNREADABLE, ratio=small),
    )


def _search(
    request: TurnRequest, query: str, scoped: bool, meaning: Meaning | None = None, also: Sequence[str] = ()
) -> tuple[list[Hit], list[str]]:
    """The hits for the query (by words, or those of a form in `also`, and, with `meaning`, by
    meaning too), and (`scoped`) the names in the question that no passage mentions. Blocking."""
    knowledge = request.knowledge
    if meaning is not None and isinstance(knowledge, Passages):
        hits = fused_hits(query, knowledge, request.retrieval_mode, request.top_k, meaning, also)
    else:
        hits = knowledge.search(query, request.retrieval_mode, request.top_k)
    if not scoped:
        return hits, []
    mode = request.retrieval_mode
    unknown = [name for name in names(request.question) if not knowledge.mentions(name, mode)]
    if meaning is not None and isinstance(knowledge, Passages):
        unknown += unknown_names(request.question, knowledge, mode)
    return hits, unknown


async def _out_of_scope(
    turn: _Turn, hits: list[Hit], best: float, unknown: Sequence[str], closest: float | None = None
) -> AsyncIterator[TurnEvent]:
    """The documents do not cover the question: say so, or answer from general knowledge if asked."""
    request = turn.request
    nothing = Decision(Mode.OFF, escalate=False)
    if not request.general_knowledge:
        # A near miss may still hold the answer in other words: its closest sentences are
        # quoted, as what the documents say, not as an answer.
        near = best >= NEAR_MISS_SHARE * turn.min_score
        quotes = (
            await asyncio.to_thread(quote_passages, turn.question, whole_chunks(hits), turn.meaning, turn.cross)
            if near
            else Quotes(())
        )
        _ = translator(request.language).gettext
        if unknown:
            text = _("The documents never mention {names}, so they do not cover this question.").format(
                names=_listed(unknown, _("or"))
            )
        elif closest is not None:
            text = _(
                "The documents do not seem to cover this question (no passage sentence comes close to it in "
                "meaning: {closeness}, below {threshold})."
            ).format(closeness=_below(closest), threshold=f"{turn.config.min_closeness:.2f}")
        else:
            text = (
                _(
                    "The documents do not seem to cover this question (the best passage matched with score "
                    "{score}, below {threshold})."
                )
                if quotes
                else _(
                    "The documents do not cover this question (the best passage matched with score {score}, "
                    "below {threshold})."
                )
            ).format(score=_below(best), threshold=f"{turn.min_score:.2f}")
        if quotes:
            text += " " + _("The closest they come:") + f"\n\n{quotes.text}"
        yield Notice("out_of_scope", text)
        turn.timings.total_s = time.perf_counter() - turn.started
        yield TurnDone(
            turn.timings,
            None,
            None,
            nothing,
            FinalAnswer(text, "out_of_scope", more=quotes.more, language=request.language),
        )
        return
    yield Notice("general_knowledge", translator(request.language).gettext(GENERAL_KNOWLEDGE_NOTICE))
    messages = [ChatMessage("system", GENERAL_PROMPT), *request.history, ChatMessage("user", request.question)]
    answer: Answer | None = None
    async for event in stream_answer(request.llm, lambda _: messages, request.params, turn.backends, request.fallback):
        answer = event if isinstance(event, Answer) else answer
        yield event
    turn.timings.total_s = time.perf_counter() - turn.started
    text = answer.text.strip() if answer and not answer.error else ""
    yield TurnDone(turn.timings, None, answer, nothing, FinalAnswer(text, "general", language=request.language))


async def _answer(
    turn: _Turn,
    model: ModelSpec,
    messages_for: Callable[[ModelSpec], list[ChatMessage]],
    params: GenerationParams,
    fallback: ModelSpec | None,
) -> AsyncIterator[TurnEvent]:
    """One model's answer in its style (`TurnConfig.style`); a failed server model's fallback
    answers in its own. Ends with the `Answer` that stands for this model."""
    style = turn.request.answer_style or turn.config.style(model)
    scorer = turn.backends.get(model.backend)
    if style == "copy" and isinstance(scorer, LikelihoodScorer):
        async for event in _copied_answer(turn, model, scorer):
            yield event
        return
    composed: Answer | None = None
    async for event in _checked_answer(turn, model, messages_for, params):
        composed = event if isinstance(event, Answer) else composed
        yield event
    if composed is None:
        return
    if composed.error is not None and fallback is not None and fallback.key != model.key:
        yield AttemptStart(fallback, replacing=composed.error)
        async for event in _answer(turn, fallback, messages_for, params, None):
            if not isinstance(event, AttemptStart) or event.replacing is not None:
                yield event
        return
    # auto: what the model wrote does not stand, so it chooses a passage sentence instead.
    if style == "auto" and isinstance(scorer, LikelihoodScorer) and _usable(composed, turn) is None:
        async for event in _copied_answer(turn, model, scorer, after=composed):
            yield event


async def _copied_answer(
    turn: _Turn, model: ModelSpec, scorer: LikelihoodScorer, after: Answer | None = None
) -> AsyncIterator[TurnEvent]:
    """The model's choice of the passage sentence that answers, streamed word by word and
    checked like any answer (`answering.copying`). `after`: the answer it wrote first (auto)."""
    yield AttemptStart(model, copying=True)
    started = time.perf_counter()
    # The model reads only the candidates, so they come from the most the turn retrieved.
    reading = turn.readings[max(turn.readings)]
    evidence = await turn.evidence(reading)
    found = await asyncio.to_thread(candidates, reading.excerpts, turn.question, turn.meaning, cross=turn.cross)
    try:
        # The question as the user asked it: the model reads the user's language (`_unreadable`).
        choice = await choose(scorer, model.model, turn.request.question, found)
    except BackendError as error:
        yield Answer(model, "", "error", None, None, time.perf_counter() - started, error)
        return
    text = choice.answer
    first_token = time.perf_counter()
    guard = AnswerGuard(evidence, turn.request.guard)
    judged = 0
    for piece in re.findall(r"\S+\s*", text):
        yield TokenEvent(piece)
        guard.feed(piece)
        for verdict in _verdicts(guard, model, judged):
            yield verdict
        judged = guard.result.sentences
    guard.finish()
    for verdict in _verdicts(guard, model, judged):
        yield verdict
    yield Answer(
        model,
        text,
        "stop",
        Usage(choice.tokens_read, 0),
        first_token - started,
        time.perf_counter() - started,
        checked=guard.result,
        choice=choice,
        written=after,
    )


async def _checked_answer(
    turn: _Turn,
    model: ModelSpec,
    messages_for: Callable[[ModelSpec], list[ChatMessage]],
    params: GenerationParams,
) -> AsyncIterator[TurnEvent]:
    """One model's answer with the guard reading along; the answer comes back with `.checked`."""
    guard = turn.guard(model, await turn.evidence(turn.reading(model)))
    current = model
    attempt = stream_answer(model, messages_for, params, turn.backends, None)
    started = first_token = None
    answered = False
    judged = 0  # sentences the guard has judged so far
    parts: list[str] = []
    logprobs: list[float | None] = []
    try:
        async for event in attempt:
            if isinstance(event, AttemptStart):
                current = event.model
                guard = turn.guard(current, await turn.evidence(turn.reading(current)))
                judged = 0
                started, first_token, parts, logprobs = time.perf_counter(), None, [], []
                yield event
            elif isinstance(event, TokenEvent):
                first_token = first_token or time.perf_counter()
                parts.append(event.text)
                logprobs.append(event.logprob)
                yield event
                guard.feed(event.text)
                for verdict in _verdicts(guard, current, judged):
                    yield verdict
                judged = guard.result.sentences
                if guard.stopped:
                    break
            elif isinstance(event, Answer):
                if not event.error:
                    guard.finish()
                    for verdict in _verdicts(guard, current, judged):
                        yield verdict
                answered = True
                yield replace(event, checked=guard.result, logprobs=tuple(logprobs))
    finally:
        await attempt.aclose()
    if not answered:
        now = time.perf_counter()
        text = "".join(parts)
        started = started or now
        usage = Usage(sum(estimate_tokens(m.content) for m in messages_for(current)), len(parts), estimated=True)
        yield Answer(
            current,
            text,
            "guard",
            usage,
            (first_token - started) if first_token else None,
            now - started,
            checked=guard.result,
            logprobs=tuple(logprobs),
        )


def _verdicts(guard: AnswerGuard, model: ModelSpec, judged: int) -> list[SentenceKept | SentenceCut]:
    """The guard's verdicts on the sentences after the first `judged`, in order."""
    return [
        SentenceKept(model, part) if isinstance(part, str) else SentenceCut(model, part, guard.stopped)
        for part in guard.result.parts[judged:]
    ]


def _completion_tokens(answer: Answer) -> int:
    return answer.usage.completion_tokens if answer.usage else len(answer.logprobs)


def _with_support(decision: Decision, answer: Answer, turn: _Turn) -> Decision:
    """Support as a routing signal: an answer with sentences cut, one that only restates the
    question, or one taken from passages the question does not point to, escalates."""
    checked = answer.checked
    if decision.mode is Mode.OFF or turn.request.guard is GuardMode.OFF or checked is None or not checked.sentences:
        return decision  # with the guard off, answers are taken as the model wrote them
    share = len(checked.cuts) / checked.sentences
    if share > MAX_UNSUPPORTED_SHARE or not checked.kept:
        reason = Reason(
            "unsupported_share",
            share,
            MAX_UNSUPPORTED_SHARE,
            Message(UNSUPPORTED_SHARE, cut=len(checked.cuts), total=checked.sentences)
            if checked.cuts
            else Message(EMPTY_ANSWER),
        )
    elif (problem := _not_an_answer(checked.kept, turn, answer.model, answer.choice)) is not None:
        reason = problem
    else:
        return decision
    return replace(decision, escalate=True, reasons=(*decision.reasons, reason))


def _not_an_answer(text: str, turn: _Turn, model: ModelSpec, choice: Choice | None = None) -> Reason | None:
    """Why supported text still does not answer the question, or None. A copied sentence
    (`choice`) is one of the passage sentences that best match the question by construction,
    and stands only if the model finds the question likely enough under it."""
    if opens_with_abstention(text) or turn.translating(model):
        # A translated answer's words cannot be compared with the passages': its check is all there is.
        return None
    question = turn.question
    likelihood = choice.chosen.levelled if choice and choice.candidates else None
    if likelihood is not None and likelihood < MIN_QUESTION_LIKELIHOOD:
        return Reason(
            "copy_likelihood",
            likelihood,
            MIN_QUESTION_LIKELIHOOD,
            Message(COPY_LIKELIHOOD, likelihood=likelihood, minimum=MIN_QUESTION_LIKELIHOOD),
        )
    if restates_question(text, question):
        return Reason("restates_question", 1.0, 0.0, Message(RESTATES_QUESTION))
    if lacks_asked_number(text, question):
        return Reason("no_number", 1.0, 0.0, Message(NO_NUMBER))
    drawn = 1.0 if choice else drawn_from_best(text, question, turn.reading(model).excerpts)
    if drawn < MIN_DRAWN_FROM_BEST:
        return Reason(
            "drawn_from_best",
            drawn,
            MIN_DRAWN_FROM_BEST,
            Message(DRAWN_FROM_BEST, share=drawn),
        )
    return None


def _usable(answer: Answer | None, turn: _Turn) -> GuardedText | None:
    """The answer's supported text, if it answers the question."""
    if answer is None or answer.error or answer.checked is None or not answer.checked.kept:
        return None
    if turn.request.guard is GuardMode.OFF:  # shown as the model wrote it
        return answer.checked
    return answer.checked if _not_an_answer(answer.checked.kept, turn, answer.model, answer.choice) is None else None


def _final(turn: _Turn, slm: Answer | None, llm: Answer | None, decision: Decision) -> FinalAnswer:
    """The large model's supported answer, else the small one's, else quotes from the passages.

    A small answer the router sent on stands only if the large model failed outright:
    when the large model answered but not from the passages, the router's doubt about
    the small one holds too. A model that says the documents do not cover the question,
    when retrieval found relevant passages, gets the closest sentences quoted under it.
    Blocking (quoting ranks by meaning).
    """
    question, meaning = turn.question, turn.meaning
    small_stands = not decision.escalate or llm is None or llm.error is not None
    cuts = tuple(cut for answer in attempts(slm, llm) if answer.checked for cut in answer.checked.cuts)
    for answer, source in ((llm, "llm"), *([(slm, "slm")] if small_stands else [])):
        checked = _usable(answer, turn)
        if answer is not None and checked is not None:
            text = checked.kept
            if opens_with_abstention(text):
                if quotes := quote_passages(question, turn.excerpts, meaning, turn.cross):
                    text += closest_passages(turn.request.language) + quotes.text
                return FinalAnswer(text, source, cuts)  # type: ignore[arg-type]
            if turn.translating(answer.model):
                # Quoted for the question, in the passages' own words: the answer's words are another language's.
                evidence = quote_evidence(question, turn.excerpts, always=True)
                return FinalAnswer(text, source, cuts, evidence, translated=True)  # type: ignore[arg-type]
            evidence = "" if answer.copied else quote_evidence(text, turn.excerpts)
            return FinalAnswer(text, source, cuts, evidence, copied=answer.copied)  # type: ignore[arg-type]
    quotes = quote_passages(question, turn.excerpts, meaning, turn.cross)
    return FinalAnswer(quotes.text, "quotes", cuts, more=quotes.more) if quotes else FinalAnswer("", "none", cuts)


def attempts(*answers: Answer | None) -> list[Answer]:
    """The answers of a turn, each with what its model wrote first (auto style), in order."""
    found: list[Answer] = []
    for answer in answers:
        if answer is not None:
            found += [*attempts(answer.written), answer]
    return found


def _below(value: float) -> str:
    """A value under a threshold, cut (not rounded) to two decimals: never "0.83, below 0.83"."""
    return f"{math.floor(value * 100 + 1e-9) / 100:.2f}"


def _listed(words: Sequence[str], or_: str = "or") -> str:
    """ "Slack", "Slack or Teams", "SAML, Okta or Entra"."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {or_} {words[-1]}"


def quote_evidence(answer: str, excerpts: Sequence[Excerpt], always: bool = False) -> str:
    """The excerpt sentence that an answer's words point to most, quoted with its [n]; empty
    when the answer already says it word for word (unless `always`)."""
    flat = " ".join(answer.split()).lower()
    return "\n\n".join(
        f"> {unit.strip()} [{number}]"
        for unit, number in best_sentences(excerpts, answer, 1)
        if always or " ".join(unit.split()).lower().strip(" .") not in flat
    )


@dataclass(frozen=True)
class Quotes:
    """Passage sentences quoted for the question: those shown, and the next few."""

    shown: tuple[str, ...]
    more: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "\n\n".join(self.shown)

    def __bool__(self) -> bool:
        return bool(self.shown)


def quote_passages(
    question: str,
    excerpts: Sequence[Excerpt],
    meaning: Meaning | None = None,
    cross: bool = False,
) -> Quotes:
    """The passage sentence most likely to answer the question, and a second one when it
    matches nearly as well, quoted with their [n] and the question's words in bold; ranked as
    copy answers' candidates are (`answering.copying.candidates`). A `cross`-script question
    whose first sentence is in the Latin script gets the second always: ranked by meaning across
    languages, the first is less sure (on the Telugu handbook set 43 questions of 58 show the
    fact instead of 41). Blocking when `meaning` embeds."""
    found = candidates(excerpts, question, meaning, count=2 + MORE_QUOTES)
    if not found:
        return Quotes(())
    share = 0.0 if cross and not mostly_foreign(found[0].text) else SECOND_QUOTE_SHARE
    shown = found[:1] + [c for c in found[1:2] if c.ranking >= share * found[0].ranking]
    return Quotes(tuple(quoted(c, question) for c in shown), tuple(quoted(c) for c in found[len(shown) :]))
