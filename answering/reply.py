"""The reply as the user reads it: the answer first, and how it was made set apart.

The chat shows `Reply.body` as the turn's message and `Reply.how` in one collapsed element,
"How this answer was made" (web/turn_view.py); the evaluation counts the words of `body` and
where the fact first appears in it (evaluation/answers.py). Both call `reply_for`, so what is
measured is what is shown. With `show_drafts` (the chat setting "Show drafts in the reply",
for a class watching the small and the large model side by side) the drafts come first in
the body, their cut sentences struck through, and the final answer after them.
"""

from __future__ import annotations

from dataclasses import dataclass

from answering.attempts import Answer
from answering.copying import Choice
from answering.pipeline import CLOSEST_PASSAGES, GENERAL_KNOWLEDGE_NOTICE, FinalAnswer, TurnDone, attempts
from answering.router import Decision, Mode

HOW_ELEMENT = "How this answer was made"

# Before the quotes when no model answer stands: the reader must know they are not an answer.
# Under an answer cut short by MAX_TOKENS (the chat page's and the API's reply).
MAX_TOKENS_NOTE = "*The answer reached the max-tokens limit.*"
QUOTES_LEAD = "*No model answer passed the support check; the closest passage says:*"
GENERAL_KNOWLEDGE_HINT = (
    "The nearest passages are listed below. To get an answer from the model's general knowledge "
    "anyway, turn on *General-knowledge answers* in the settings."
)
NOTHING = "**No model answer could be checked against the documents**, and no passage matched it."


@dataclass(frozen=True)
class Reply:
    body: str  # Markdown: what the user reads
    how: str = ""  # Markdown: the drafts, their cut sentences, the escalation, the next-best sentences


def reply_for(done: TurnDone, show_drafts: bool = False) -> Reply:
    """The turn's reply: what the user reads first, and what led there."""
    final = body(done.final)
    if show_drafts:
        drafts = _drafts(done)
        final = "\n\n".join([*drafts, f"**Answer:** {final}" if drafts else final])
    return Reply(final, how_it_was_made(done))


def body(final: FinalAnswer) -> str:
    """The final answer first: a sentence a model chose, quoted; or what a model wrote, then
    the passage sentence it is drawn from; or the notice and the quotes when no model answer
    stands."""
    if final.source == "out_of_scope":
        return f"{final.text}\n\n{GENERAL_KNOWLEDGE_HINT}"
    if final.source == "quotes":
        return f"{QUOTES_LEAD}\n\n{final.text}"
    if final.source == "none":
        return NOTHING
    if final.source == "general":
        return f"*{GENERAL_KNOWLEDGE_NOTICE}*\n\n{final.text}"
    if final.copied:
        # The documents' own words, chosen by the model: shown as what they are, a quote.
        return "\n\n".join(f"> {sentence}" for sentence in final.text.split("\n\n"))
    if final.evidence:
        return f"{final.text}\n\n*From the documents:*\n\n{final.evidence}"
    return final.text


def how_it_was_made(done: TurnDone) -> str:
    """Each model's attempt in order, with what the support check cut and the sentences a
    copying model weighed; the router's verdict; the next-best passage sentences."""
    parts = [attempt_markdown(a) for a in attempts(done.slm_answer)]
    if done.slm_answer is not None:
        parts.append(router_line(done.decision))
    parts += [attempt_markdown(a) for a in attempts(done.llm_answer)]
    if done.final.more:
        parts.append("**Other passage sentences that match the question:**\n\n" + "\n\n".join(done.final.more))
    return "\n\n".join(part for part in parts if part)


def _drafts(done: TurnDone) -> list[str]:
    """What the inline view shows before the final answer: every attempt that is not it."""
    final = done.answered_by
    shown = [attempt_markdown(a) for a in attempts(done.slm_answer) if a is not final]
    if done.decision.escalate:
        shown.append(f"↗️ {router_line(done.decision)}")
    shown += [attempt_markdown(a) for a in attempts(done.llm_answer) if a is not final]
    return shown


def router_line(decision: Decision) -> str:
    if decision.mode is Mode.OFF:
        return ""
    verdict = "escalated to the large model" if decision.escalate else "kept the small model's answer"
    return f"Router ({decision.mode.value}): {verdict}: {decision.summary()}."


def attempt_markdown(answer: Answer) -> str:
    label = f"**{answer.model.label}**"
    if answer.error is not None:
        partial = f" What it had written: {answer.text.strip()}" if answer.text.strip() else ""
        return f"{label} failed: {answer.error}.{partial}"
    if answer.choice is not None:
        lines = [f"{label} chose a passage sentence:", checked_markdown(answer) or "*(none)*"]
        if answer.checked and answer.checked.cuts:
            lines.append(cut_line(answer))
        return "\n\n".join([*lines, _weighed(answer.choice)])
    lines = [f"{label} wrote:", checked_markdown(answer) or "*(nothing)*"]
    if answer.checked and answer.checked.cuts:
        lines.append(cut_line(answer))
    if answer.finish_reason == "length":
        lines.append("*It reached the max-tokens limit.*")
    return "\n\n".join(lines)


def _weighed(choice: Choice) -> str:
    rows = [
        f"{n}. {candidate.cited} (match {candidate.ranking:.2f}"
        + (f", question likelihood {candidate.likelihood:.2f}" if candidate.likelihood is not None else "")
        + ")"
        for n, candidate in enumerate(choice.candidates, start=1)
    ]
    return "The sentences it weighed, best first:\n\n" + "\n".join(rows)


def struck(sentence: str) -> str:
    return " ".join(f"~~{line.strip()}~~" for line in sentence.splitlines() if line.strip())


def checked_markdown(answer: Answer) -> str:
    """The answer as checked: what stands, and what was cut, struck through."""
    if answer.checked is None:
        return answer.text.strip()
    return "".join(p if isinstance(p, str) else struck(p.text) + " " for p in answer.checked.parts).strip()


def cut_line(answer: Answer) -> str:
    cuts = answer.checked.cuts if answer.checked else []
    if not cuts:
        return ""
    what = "1 sentence" if len(cuts) == 1 else f"{len(cuts)} sentences"
    stopped = " and the model was stopped" if answer.finish_reason == "guard" else ""
    return f"*✂️ Cut {what} the documents do not support{stopped}: {cuts[0].reason}.*"


def without_struck(markdown: str) -> str:
    """Markdown without its struck-through text (`~~…~~`): what a reader takes as said."""
    out, at = [], 0
    while (start := markdown.find("~~", at)) >= 0 and (end := markdown.find("~~", start + 2)) >= 0:
        out.append(markdown[at:start])
        at = end + 2
    out.append(markdown[at:])
    return "".join(out)


def model_words(final: FinalAnswer) -> str:
    """What a model wrote or chose in its final answer: not the passages quoted under an
    abstention, nor the evidence."""
    return final.text.split(CLOSEST_PASSAGES)[0]
