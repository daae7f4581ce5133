"""The reply as the user reads it: the answer first, and how it was made set apart."""

from __future__ import annotations

from answering.attempts import Answer
from answering.copying import Candidate, Choice
from answering.grounding import Cut, GuardedText
from answering.pipeline import FinalAnswer, TurnDone
from answering.reply import HOW_ELEMENT, QUOTES_LEAD, reply_for, without_struck
from answering.router import Decision, Mode, Reason
from answering.timings import PhaseTimings
from models.catalog import ModelSpec

SMALL = ModelSpec("embedded:small", "embedded", "small", 4096)
LARGE = ModelSpec("embedded:large", "embedded", "large", 4096)
CUT = Cut("It listens on port 9431.", "the passages never state 9431")
ESCALATED = Decision(Mode.ESCALATE, True, (Reason("unsupported_share", 1.0, 0.0, "1 of 1 sentences are cut"),))


def answer(model: ModelSpec, *parts: str | Cut, choice: Choice | None = None) -> Answer:
    text = "".join(part if isinstance(part, str) else part.text for part in parts)
    return Answer(
        model,
        text,
        "guard" if choice is None else "stop",
        None,
        0.1,
        0.5,
        checked=GuardedText(list(parts)),
        choice=choice,
    )


def turn(final: FinalAnswer, small: Answer | None, large: Answer | None, decision: Decision = ESCALATED) -> TurnDone:
    return TurnDone(PhaseTimings(), small, large, decision, final)


DRAFT = answer(SMALL, CUT)
CHOSEN = Choice(
    (Candidate("Foundry Local usually listens on port 5273.", 1, 0.9, -2.0), Candidate("Set it.", 1, 0.4, -5.0))
)
COPY = answer(LARGE, "Foundry Local usually listens on port 5273. [1]", choice=CHOSEN)


def test_the_reply_starts_with_the_answer_and_the_draft_is_in_how_it_was_made():
    done = turn(FinalAnswer(COPY.text, "llm", (CUT,), copied=True), DRAFT, COPY)

    reply = reply_for(done)

    assert reply.body == "> Foundry Local usually listens on port 5273. [1]"  # the documents' words, quoted
    assert "~~It listens on port 9431.~~" in reply.how and "✂️ Cut 1 sentence" in reply.how
    assert "Router (escalate): escalated to the large model: 1 of 1 sentences are cut." in reply.how
    assert "**large (embedded)** chose a passage sentence" in reply.how
    assert "1. Foundry Local usually listens on port 5273. [1] (match 0.90, question likelihood -2.00)" in reply.how
    assert HOW_ELEMENT == "How this answer was made"


def test_show_drafts_puts_the_drafts_before_the_answer():
    done = turn(FinalAnswer(COPY.text, "llm", (CUT,), copied=True), DRAFT, COPY)

    body = reply_for(done, show_drafts=True).body

    draft, final = body.split("**Answer:** ")
    assert "~~It listens on port 9431.~~" in draft and "↗️ Router (escalate)" in draft
    assert final == "> Foundry Local usually listens on port 5273. [1]"
    assert "9431" not in without_struck(body).split("✂️")[0]


def test_a_written_answer_comes_with_the_sentence_it_is_drawn_from():
    written = answer(SMALL, "Its usual port is 5273 [1].")
    evidence = "> Foundry Local usually listens on port 5273. [1]"
    done = turn(FinalAnswer(written.text, "slm", evidence=evidence), written, None, Decision(Mode.OFF, False))

    assert reply_for(done).body == f"Its usual port is 5273 [1].\n\n*From the documents:*\n\n{evidence}"


def test_quotes_say_first_that_no_model_answer_stands():
    quote = "> **Foundry Local** usually **listens** on **port** 5273. [1]"
    done = turn(FinalAnswer(quote, "quotes", (CUT,), more=("> Set it. [1]",)), DRAFT, None)

    reply = reply_for(done)

    assert reply.body == f"{QUOTES_LEAD}\n\n{quote}"
    assert "**Other passage sentences that match the question:**\n\n> Set it. [1]" in reply.how


def test_struck_through_text_is_not_what_a_reader_takes_as_said():
    assert without_struck("Kept. ~~Cut 9431.~~ Kept too. ~~Also cut.~~") == "Kept.  Kept too. "
