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
from answering.pipeline import GENERAL_KNOWLEDGE_NOTICE, FinalAnswer, TurnDone, attempts, closest_passages
from answering.router import Decision, Mode
from i18n import N_, localise, translator

# The side element holding `Reply.how` (translated where shown, as its name must appear in the message).
HOW_ELEMENT = N_("How this answer was made")

# Before the quotes when no model answer stands: the reader must know they are not an answer.
# Under an answer cut short by MAX_TOKENS (the chat page's and the API's reply).
MAX_TOKENS_NOTE = N_("*The answer reached the max-tokens limit.*")
QUOTES_LEAD = N_("*No model answer passed the support check; the closest passage says:*")
GENERAL_KNOWLEDGE_HINT = N_(
    "The nearest passages are listed below. To get an answer from the model's general knowledge "
    "anyway, turn on *General-knowledge answers* in the settings."
)
NOTHING = N_("**No model answer could be checked against the documents**, and no passage matched it.")
FROM_THE_DOCUMENTS = N_("*From the documents:*")
# Under an answer the model gave in the user's language: only its numbers, names and identifiers
# could be checked against the passages, which are quoted in their own words under it.
TRANSLATION_NOTE = N_(
    "*Translated by the model: its numbers, names and settings were checked against the documents, "
    "its wording was not. The documents say:*"
)


@dataclass(frozen=True)
class Reply:
    body: str  # Markdown: what the user reads
    how: str = ""  # Markdown: the drafts, their cut sentences, the escalation, the next-best sentences


def reply_for(done: TurnDone, show_drafts: bool = False) -> Reply:
    """The turn's reply: what the user reads first, and what led there, in the language of the
    app's words around the answer (`done.final.language`)."""
    final = body(done.final)
    if show_drafts:
        drafts = _drafts(done)
        answer = translator(done.final.language).gettext("**Answer:** {answer}").format(answer=final)
        final = "\n\n".join([*drafts, answer if drafts else final])
    return Reply(final, how_it_was_made(done))


def body(final: FinalAnswer) -> str:
    """The final answer first: a sentence a model chose, quoted; or what a model wrote, then
    the passage sentence it is drawn from; or the notice and the quotes when no model answer
    stands."""
    _ = translator(final.language).gettext
    if final.source == "out_of_scope":
        return f"{final.text}\n\n{_(GENERAL_KNOWLEDGE_HINT)}"
    if final.source == "quotes":
        return f"{_(QUOTES_LEAD)}\n\n{final.text}"
    if final.source == "none":
        return _(NOTHING)
    if final.source == "general":
        return f"*{_(GENERAL_KNOWLEDGE_NOTICE)}*\n\n{final.text}"
    if final.copied:
        # The documents' own words, chosen by the model: shown as what they are, a quote.
        return "\n\n".join(f"> {sentence}" for sentence in final.text.split("\n\n"))
    if final.translated:
        return "\n\n".join(part for part in (final.text, _(TRANSLATION_NOTE), final.evidence) if part)
    if final.evidence:
        return f"{final.text}\n\n{_(FROM_THE_DOCUMENTS)}\n\n{final.evidence}"
    return final.text


def how_it_was_made(done: TurnDone) -> str:
    """Each model's attempt in order, with what the support check cut and the sentences a
    copying model weighed; the router's verdict; the next-best passage sentences. The app's
    words (and the reasons and errors, `i18n.Message`s) are in `done.final.language`."""
    language = done.final.language
    parts = [attempt_markdown(a, language) for a in attempts(done.slm_answer)]
    if done.slm_answer is not None:
        parts.append(router_line(done.decision, language))
    parts += [attempt_markdown(a, language) for a in attempts(done.llm_answer)]
    if done.final.more:
        more = translator(language).gettext("**Other passage sentences that match the question:**")
        parts.append(more + "\n\n" + "\n\n".join(done.final.more))
    return "\n\n".join(part for part in parts if part)


def _drafts(done: TurnDone) -> list[str]:
    """What the inline view shows before the final answer: every attempt that is not it."""
    final, language = done.answered_by, done.final.language
    shown = [attempt_markdown(a, language) for a in attempts(done.slm_answer) if a is not final]
    if done.decision.escalate:
        shown.append(f"↗️ {router_line(done.decision, language)}")
    shown += [attempt_markdown(a, language) for a in attempts(done.llm_answer) if a is not final]
    return shown


def router_line(decision: Decision, language: str | None = None) -> str:
    if decision.mode is Mode.OFF:
        return ""
    _ = translator(language).gettext
    line = (
        _("Router ({mode}): escalated to the large model: {reasons}.")
        if decision.escalate
        else _("Router ({mode}): kept the small model's answer: {reasons}.")
    )
    return line.format(mode=decision.mode.value, reasons=decision.summary(language))


def attempt_markdown(answer: Answer, language: str | None = None) -> str:
    _ = translator(language).gettext
    model = answer.model.label
    if answer.error is not None:
        error, written = answer.error.text(language), answer.text.strip()
        if written:
            return _("**{model}** failed: {error}. What it had written: {text}").format(
                model=model, error=error, text=written
            )
        return _("**{model}** failed: {error}.").format(model=model, error=error)
    if answer.choice is not None:
        lines = [
            _("**{model}** chose a passage sentence:").format(model=model),
            checked_markdown(answer) or _("*(none)*"),
        ]
        if answer.checked and answer.checked.cuts:
            lines.append(cut_line(answer, language))
        return "\n\n".join([*lines, _weighed(answer.choice, language)])
    lines = [_("**{model}** wrote:").format(model=model), checked_markdown(answer) or _("*(nothing)*")]
    if answer.checked and answer.checked.cuts:
        lines.append(cut_line(answer, language))
    if answer.finish_reason == "length":
        lines.append(_("*It reached the max-tokens limit.*"))
    return "\n\n".join(lines)


def _weighed(choice: Choice, language: str | None = None) -> str:
    _ = translator(language).gettext
    rows = [
        (
            _("{number}. {sentence} (match {match}, question likelihood {likelihood})")
            if candidate.likelihood is not None
            else _("{number}. {sentence} (match {match})")
        ).format(
            number=n,
            sentence=candidate.cited,
            match=f"{candidate.ranking:.2f}",
            likelihood=f"{candidate.likelihood:.2f}" if candidate.likelihood is not None else "",
        )
        for n, candidate in enumerate(choice.candidates, start=1)
    ]
    return _("The sentences it weighed, best first:") + "\n\n" + "\n".join(rows)


def struck(sentence: str) -> str:
    return " ".join(f"~~{line.strip()}~~" for line in sentence.splitlines() if line.strip())


def checked_markdown(answer: Answer) -> str:
    """The answer as checked: what stands, and what was cut, struck through."""
    if answer.checked is None:
        return answer.text.strip()
    return "".join(p if isinstance(p, str) else struck(p.text) + " " for p in answer.checked.parts).strip()


def cut_line(answer: Answer, language: str | None = None) -> str:
    """The note under an attempt with sentences cut: how many, and why the first was."""
    cuts = answer.checked.cuts if answer.checked else []
    if not cuts:
        return ""
    ngettext = translator(language).ngettext
    line = (
        ngettext(
            "*✂️ Cut {count} sentence the documents do not support and the model was stopped: {reason}.*",
            "*✂️ Cut {count} sentences the documents do not support and the model was stopped: {reason}.*",
            len(cuts),
        )
        if answer.finish_reason == "guard"
        else ngettext(
            "*✂️ Cut {count} sentence the documents do not support: {reason}.*",
            "*✂️ Cut {count} sentences the documents do not support: {reason}.*",
            len(cuts),
        )
    )
    return line.format(count=len(cuts), reason=localise(cuts[0].reason, language))


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
    return final.text.split(closest_passages(final.language))[0]
