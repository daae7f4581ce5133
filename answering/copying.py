"""Copy answers: a model chooses the passage sentence that answers, and the reply gives it word
for word.

Small models copy far better than they compose: on the handbook set the embedded models'
own sentences are cut by the support check in most answers (docs/evaluation.md). A copied
sentence is supported by construction; what the model decides is *which* sentence answers.

The candidates are the passage units that best match the question (`ranked_units`: shared
terms and closeness in meaning), each scored first by that ranking, less a little for a
lower-ranked passage, and less when the question asks for a number the unit does not give.
The model then reads each of the best few alone and says how likely the question is under
it (the mean log-probability of the question's tokens, "query likelihood"): a unit that
answers the question is one the question could have been written from. The choice mixes
both. Chosen on the handbook set (`evaluation.answers`): the model's likelihood alone picks
a sentence holding the fact about as often as the ranking alone, and together they pick it
more often than either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from answering.context import Excerpt, Meaning, is_statement, ranked_units, readable, units
from answering.cross_script import mostly_foreign
from answering.grounding import CITATION, asks_for_name, asks_for_number, gives_a_name, states_a_number
from models.base import ChatMessage, LikelihoodScorer
from rag.text import tokenize

# How many of the ranking's best units the model reads and chooses among. On the handbook
# set the fact is in the best three for 92% of the questions whose passages hold it.
CANDIDATES = 3
# What a lower-ranked passage costs a unit, per rank; a unit without a number when the
# question asks how many, how long or which port; and one without a name when it asks which
# setting, command or file.
RANK_PENALTY = 0.04
NO_NUMBER_PENALTY = 0.3
NO_NAME_PENALTY = 0.3
# Weight of the model's mean log-probability of the question (about -1 to -6) against the
# ranking's score (0 to 1).
LIKELIHOOD_WEIGHT = 0.12
# When the model's choice leads the next candidate by less than this, the reply gives both,
# best first: one or two sentences. On the handbook set the fact is then in the reply for
# 151 of 184 answerable questions instead of 138, for a second sentence in two answers of five.
SECOND_SENTENCE_MARGIN = 0.2
# Below this mean log-probability of the question under the sentence it chose, the model
# itself doubts that the sentence answers: it is not given as the answer, and the closest
# passages are quoted instead. On the handbook set the two unanswerable questions that got a
# copy answer scored -4.26 and -4.30; 13% of the copies that hold the fact score lower too,
# and are quoted instead, which still shows the fact. It holds for Telugu too: on
# evaluation/telugu-pages, Gemma 3's copies that hold the fact score -4.14 or above.
MIN_QUESTION_LIKELIHOOD = -4.25
# A question is less likely under a sentence in another script than under one in its own that
# answers it as well. Under Telugu questions, Gemma 3's mean log-probability is 1.6 and 1.2
# lower under the English sentences holding the fact than under the Telugu ones holding it
# (evaluation/telugu-handbook, telugu-pages: medians), and 1.2 and 0.7 lower under those that
# do not; this is the median of the four. Unlevelled, Telugu overview sentences outscored the
# English one giving the fact, and English ones fell under MIN_QUESTION_LIKELIHOOD: 10 of 58
# Telugu handbook questions got a model's choice, 30 levelled. A cross-script question's
# candidates in the Latin script get this much back, in the choice and at that threshold.
OTHER_SCRIPT_LIKELIHOOD = 1.2
# The instruction under which the model reads a candidate.
QUESTION_PROMPT = "Write a question that the passage answers."

_GAP = " … "


@dataclass(frozen=True)
class Candidate:
    """A passage unit that may answer the question, as the reader sees it."""

    text: str  # a table row under its column names; a unit ending in a colon with what follows
    number: int  # its excerpt's [n]
    ranking: float  # the ranking's score, with the penalties
    likelihood: float | None = None  # the model's mean log-probability of the question under it
    other_script: bool = False  # in another script than the question's: levelled by OTHER_SCRIPT_LIKELIHOOD

    @property
    def levelled(self) -> float | None:
        """The likelihood as weighed: with OTHER_SCRIPT_LIKELIHOOD for a sentence in another script."""
        if self.likelihood is None:
            return None
        return self.likelihood + (OTHER_SCRIPT_LIKELIHOOD if self.other_script else 0.0)

    @property
    def score(self) -> float:
        return self.ranking + LIKELIHOOD_WEIGHT * (self.levelled or 0.0)

    @property
    def cited(self) -> str:
        return f"{self.text} [{self.number}]"


@dataclass(frozen=True)
class Choice:
    """The candidates, best first, after a model chose."""

    candidates: tuple[Candidate, ...]
    tokens_read: int = 0  # by the model, to score the candidates

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]

    @property
    def answer(self) -> str:
        """The reply's answer: the chosen sentence with its [n], and the next one under it when
        the model hesitated between them."""
        if not self.candidates:
            return ""
        shown = self.candidates[: 2 if self.margin < SECOND_SENTENCE_MARGIN else 1]
        return "\n\n".join(candidate.cited for candidate in shown)

    @property
    def margin(self) -> float:
        """How far the chosen candidate leads the next one: the router's copy confidence."""
        if len(self.candidates) < 2:
            return 1.0
        return self.candidates[0].score - self.candidates[1].score


def candidates(
    excerpts: Sequence[Excerpt],
    question: str,
    meaning: Meaning | None = None,
    count: int = CANDIDATES,
    cross: bool = False,
) -> list[Candidate]:
    """The `count` units of the excerpts that best answer the question by the ranking, best
    first; each unit once. A `cross`-script question's units in the Latin script are marked
    `other_script`. Blocking when `meaning` embeds."""
    split = [units(excerpt.text.replace(_GAP, "\n")) for excerpt in excerpts]
    ranked = ranked_units(split, question, [excerpt.label for excerpt in excerpts], meaning)
    asks_number, asks_name = asks_for_number(question), asks_for_name(question)
    found: dict[str, Candidate] = {}
    for score, h, i in ranked:
        if score <= 0:
            break
        chunk_text = excerpts[h].hit.chunk.text
        unit = split[h][i].strip()
        if not is_statement(unit, chunk_text):
            continue
        text = readable(unit, chunk_text)
        if text.endswith(":") and i + 1 < len(split[h]):
            # "checks, in order:" says nothing without what follows.
            text = f"{text} {readable(split[h][i + 1], chunk_text)}"
        penalty = RANK_PENALTY * (excerpts[h].hit.rank - 1)
        if asks_number and not states_a_number(text):
            penalty += NO_NUMBER_PENALTY
        if asks_name and not gives_a_name(text):
            penalty += NO_NAME_PENALTY
        other_script = cross and not mostly_foreign(text)
        candidate = Candidate(text, excerpts[h].number, score - penalty, other_script=other_script)
        if text not in found:
            found[text] = candidate
    return sorted(found.values(), key=lambda c: -c.ranking)[:count]


def conversation(candidate: Candidate) -> list[ChatMessage]:
    """What the model reads to score the question under one candidate: the instruction first,
    so that the candidates' prompts share it and the model reads it once."""
    return [
        ChatMessage("system", QUESTION_PROMPT),
        ChatMessage("user", f"Passage: {CITATION.sub('', candidate.text).strip()}"),
    ]


async def choose(scorer: LikelihoodScorer, model: str, question: str, found: Sequence[Candidate]) -> Choice:
    """The model's choice among the candidates (see the module's docstring)."""
    if not found:
        return Choice(())
    likelihoods = await scorer.reply_likelihoods(model, [conversation(c) for c in found], question)
    scored = [replace(c, likelihood=likelihood.mean) for c, likelihood in zip(found, likelihoods, strict=True)]
    read = sum(likelihood.prompt_tokens + likelihood.tokens for likelihood in likelihoods)
    return Choice(tuple(sorted(scored, key=lambda c: -c.score)), read)


# Bold marks only words outside code, links and [n] markers.
_PROTECTED = re.compile(r"`[^`]*`|\[\d+(?:\s*,\s*\d+)*\]|https?://\S+|\*\*")
_WORD = re.compile(r"[^\W_][\w'’-]*")


def emphasised(text: str, question: str) -> str:
    """The text with the question's words in bold, so that a reader sees at once why it was
    quoted; code, links and [n] markers are left as they are."""
    wanted = set(tokenize(question))
    if not wanted:
        return text

    def bold(plain: str) -> str:
        return _WORD.sub(lambda m: f"**{m.group()}**" if set(tokenize(m.group())) & wanted else m.group(), plain)

    out, at = [], 0
    for protected in _PROTECTED.finditer(text):
        out += [bold(text[at : protected.start()]), protected.group()]
        at = protected.end()
    out.append(bold(text[at:]))
    # "**Foundry** **Local**" reads better as "**Foundry Local**".
    return re.sub(r"\*\*(\s+)\*\*", r"\1", "".join(out))


def quoted(candidate: Candidate, question: str = "") -> str:
    """A candidate as a Markdown quote with its [n], the question's words in bold."""
    text = emphasised(candidate.text, question) if question else candidate.text
    return f"> {text} [{candidate.number}]"
