"""What an API client reads of a turn: only text that stands, the reply's form, its sources, and
the request's checks. The turns run the real pipeline on fake models (tests/fakes.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from answering.grounding import GuardMode
from answering.pipeline import Retrieved, TurnDone
from answering.router import Mode
from models.base import ChatMessage
from models.settings import Settings
from tests.fakes import CopyingBackend, ScriptedBackend
from tests.test_copy_answers import turn as copy_turn
from tests.test_pipeline import done, turn
from web.openai_api import (
    SET_ASIDE,
    SOURCES_HEADING,
    ApiError,
    ApiHistory,
    ApiReply,
    Callers,
    ReplyStream,
    history_of,
    parse_request,
    routing_of,
)


def reply_to(events: list, mode: Mode = Mode.OFF) -> ApiReply:
    """The finished turn as the API gives it, with the passages the chat would show."""
    [retrieved] = [event for event in events if isinstance(event, Retrieved)]
    return ApiReply.of(done(events), retrieved.shown, mode)


def read(events: list, mode: Mode, checked: bool = True) -> tuple[str, str]:
    """(content, reasoning) as a streaming client reads them, the reply's rest included."""
    stream = ReplyStream(mode, checked=checked)
    content, reasoning = "", ""
    for event in events:
        if isinstance(event, TurnDone):
            content += stream.finish(reply_to(events, mode).text)
        else:
            more, thought = stream.feed(event)
            content, reasoning = content + more, reasoning + thought
    return content, reasoning


async def test_supported_sentences_stream_and_the_reply_ends_with_its_sources():
    backend = ScriptedBackend({"small": ["Foundry Local ", "usually listens ", "on port 5273 [1]. ", "It is local."]})
    events = await turn(backend, Mode.OFF)

    content, reasoning = read(events, Mode.OFF)

    assert content.startswith("Foundry Local usually listens on port 5273 [1].")
    assert content.endswith(SOURCES_HEADING + "- [1] Foundry Local (foundry.md)")
    assert reasoning == ""


async def test_the_first_sentence_is_sent_before_the_model_has_finished():
    backend = ScriptedBackend({"small": ["Foundry Local usually listens on port 5273 [1]. ", "It ", "is ", "local."]})
    events = await turn(backend, Mode.OFF)
    stream = ReplyStream(Mode.OFF)

    sent_before_the_answer_ended = []
    for event in events[: next(i for i, e in enumerate(events) if type(e).__name__ == "Answer")]:
        sent_before_the_answer_ended.append(stream.feed(event)[0])

    assert "".join(sent_before_the_answer_ended).startswith("Foundry Local usually listens on port 5273 [1].")


async def test_a_cut_sentence_is_never_sent_and_a_note_says_one_was_cut():
    backend = ScriptedBackend(
        {"small": ["Foundry Local usually listens on port 5273 [1]. ", "It also listens on port 8001. ", "More."]}
    )
    events = await turn(backend, Mode.OFF)

    content, _ = read(events, Mode.OFF)

    assert "8001" not in content
    assert content.startswith("Foundry Local usually listens on port 5273 [1].")
    assert "*1 sentence the documents do not support was cut and the model stopped there.*" in content


async def test_a_draft_the_router_may_replace_is_reasoning_and_only_the_large_answer_is_content():
    backend = ScriptedBackend(
        {
            "small": ["It listens on port 8001."],
            "large": ["Foundry Local ", "usually listens on port 5273 [1]."],
        }
    )
    events = await turn(backend, Mode.ESCALATE)

    content, reasoning = read(events, Mode.ESCALATE)

    assert content.startswith("Foundry Local usually listens on port 5273 [1].")
    assert "8001" not in content
    assert "It listens on port 8001" not in reasoning  # cut: not even in the draft, only why
    assert "a sentence was cut: the passages never state 8001" in reasoning and "Escalated to large" in reasoning


async def test_a_draft_that_stands_is_sent_once_the_router_keeps_it():
    backend = ScriptedBackend({"small": ["Foundry Local usually listens on port 5273 [1]."], "large": ["Unused."]})
    events = await turn(backend, Mode.ESCALATE)

    content, reasoning = read(events, Mode.ESCALATE)

    assert content.startswith("Foundry Local usually listens on port 5273 [1].")
    assert reasoning == "Foundry Local usually listens on port 5273 [1]."
    assert "start large" not in backend.log


async def test_supported_sentences_that_do_not_answer_are_set_aside_before_the_quotes():
    # Supported, but it only restates the question: the turn ends in quotes.
    backend = ScriptedBackend({"small": ["Foundry Local listens."]})
    events = await turn(backend, Mode.OFF)
    assert done(events).final.source == "quotes"

    content, _ = read(events, Mode.OFF)

    assert content.startswith("Foundry Local listens.\n\n" + SET_ASIDE)
    assert "*No model answer passed the support check; the closest passage says:*" in content
    assert "5273" in content


async def test_with_the_guard_off_tokens_are_sent_as_they_come():
    backend = ScriptedBackend({"small": ["Foundry ", "Local ", "listens on port 8001"]})
    events = await turn(backend, Mode.OFF, guard=GuardMode.OFF)
    stream = ReplyStream(Mode.OFF, checked=False)

    pieces = [stream.feed(event)[0] for event in events if not isinstance(event, TurnDone)]

    assert [piece for piece in pieces if piece] == ["Foundry ", "Local ", "listens on port 8001"]


async def test_an_out_of_scope_question_gets_the_notice_without_the_chats_settings_hint():
    events = await turn(ScriptedBackend({}), Mode.OFF, question="Is there a Slack bot?")

    content, _ = read(events, Mode.OFF)

    assert content == "The documents never mention Slack, so they do not cover this question."


async def test_the_sources_field_has_each_passage_and_says_which_the_reply_cites():
    backend = ScriptedBackend({"small": ["Foundry Local usually listens on port 5273 [1]."]})
    events = await turn(backend, Mode.OFF)

    [source, *_] = reply_to(events).extra["knowledge_sources"]

    assert source["number"] == 1 and source["document"] == "foundry.md" and source["cited"]
    assert source["heading_path"] == ["Foundry Local"]
    assert "5273" in source["text"] and 0 < source["score"] <= 1


def request_body(**fields) -> bytes:
    return json.dumps(
        {"model": "knowledge-assistant", "messages": [{"role": "user", "content": "Hi?"}], **fields}
    ).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (request_body(messages=[]), "messages: List should have at least 1 item"),
        (request_body(messages=[{"role": "wizard", "content": "Hi?"}]), "role must be system, developer, user"),
        (request_body(messages=[{"role": "assistant", "content": "Hi."}]), "last message must be the user's question"),
        (request_body(temperature=9), "temperature"),
        (request_body(messages=[{"role": "user", "content": "x" * 101}]), "at most 100 (API_MAX_QUESTION_CHARS)"),
    ],
)
def test_a_bad_request_is_refused_with_what_is_wrong(body, says):
    with pytest.raises(ApiError) as refused:
        parse_request(body, max_question_chars=100)

    assert refused.value.status == 400 and says in refused.value.message


def test_unknown_fields_are_ignored_and_text_parts_are_joined():
    body = request_body(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Which"}, {"type": "text", "text": "port?"}]}],
        logit_bias={"1": 2},
        n=1,
    )

    asked = parse_request(body, max_question_chars=100)

    assert asked.messages[-1].text == "Which\nport?"


def test_each_model_id_names_a_routing_and_an_unknown_one_is_a_404():
    assert routing_of("knowledge-assistant") is None
    assert routing_of("knowledge-assistant:always-llm") is Mode.ALWAYS_LLM
    with pytest.raises(ApiError) as refused:
        routing_of("gpt-4o")
    assert refused.value.status == 404 and refused.value.code == "model_not_found"


def test_history_keeps_the_turns_without_system_messages_or_sources():
    asked = parse_request(
        json.dumps(
            {
                "model": "knowledge-assistant",
                "messages": [
                    {"role": "system", "content": "You are helpful."},
                    {"role": "user", "content": "Which port?"},
                    {"role": "assistant", "content": "Port 5273 [1]." + SOURCES_HEADING + "- [1] Foundry Local (f.md)"},
                    {"role": "user", "content": "And the endpoint?"},
                ],
            }
        ).encode(),
        max_question_chars=100,
    )

    assert history_of(asked.messages[:-1]) == (
        ChatMessage("user", "Which port?"),
        ChatMessage("assistant", "Port 5273 [1]."),
    )


def test_a_conversation_is_known_by_its_user_and_its_words():
    turns = [ChatMessage("user", "Which port?"), ChatMessage("assistant", "Port  5273.")]

    same = ApiHistory.fingerprint("alice", [ChatMessage("user", "Which port?"), ChatMessage("assistant", "Port 5273.")])

    assert ApiHistory.fingerprint("alice", turns) == same
    assert ApiHistory.fingerprint("bob", turns) != same


def caller_at(host: str) -> Request:
    return Request(
        {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "client": (host, 50000)}
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_with_login_off_a_caller_on_this_machine_is_the_local_user(tmp_path, host):
    callers = Callers(SimpleNamespace(settings=Settings(data_dir=tmp_path), users=None))  # type: ignore[arg-type]

    assert callers.user_of(caller_at(host)) == "local"


def test_with_login_off_a_caller_from_elsewhere_is_refused(tmp_path):
    callers = Callers(SimpleNamespace(settings=Settings(data_dir=tmp_path), users=None))  # type: ignore[arg-type]

    with pytest.raises(ApiError) as refused:
        callers.user_of(caller_at("192.0.2.7"))

    assert refused.value.status == 403 and "only on this machine" in refused.value.message


async def test_a_chosen_sentence_that_the_router_may_replace_is_reasoning_until_it_stands():
    backend = CopyingBackend({}, {"small": "5273"})
    events = await copy_turn(backend, mode=Mode.ESCALATE, question="On which port does Foundry Local listen?")
    assert done(events).final.source == "slm"

    content, reasoning = read(events, Mode.ESCALATE)

    assert reasoning == "Foundry Local usually listens on port 5273. [1]"
    assert content.startswith("> Foundry Local usually listens on port 5273. [1]")


async def test_an_out_of_scope_reply_lists_the_nearest_passages_it_quotes():
    events = await turn(ScriptedBackend({}), Mode.ESCALATE, question="Which port does the Foundry Local agent pick?")
    assert done(events).final.source == "out_of_scope"

    reply = reply_to(events, Mode.ESCALATE)

    assert "[1]" in reply.text and reply.text.endswith(SOURCES_HEADING + "- [1] Foundry Local (foundry.md)")
    assert reply.extra["knowledge_sources"][0]["cited"]
    assert reply.extra["knowledge_timings"]["router"]["mode"] == "escalate"  # as asked


async def test_a_question_about_something_never_mentioned_lists_no_sources():
    events = await turn(ScriptedBackend({}), Mode.OFF, question="Does the Slack bot use port 5273?")
    assert done(events).final.source == "out_of_scope" and events[0].hits  # a passage was found, not quoted

    reply = reply_to(events)

    assert SOURCES_HEADING not in reply.text
    assert not any(source["cited"] for source in reply.extra["knowledge_sources"])
