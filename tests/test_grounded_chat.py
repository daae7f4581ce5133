"""The real app on its default answer settings: the embedded model choosing the passage sentence
that answers, at temperature 0, the guard in `stop` mode, and questions the documents do not
cover answered as such."""

from __future__ import annotations

import pytest

from tests.chainlit_client import ChainlitClient
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR, answer_message

DEFAULTS = {"GROUNDING_GUARD": "stop", "MIN_RETRIEVAL_SCORE": "0.2", "ANSWER_STYLES": '{"embedded": "copy"}'}


@pytest.fixture(scope="module")
def grounded_app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grounded")
    env = {"MODEL_CACHE_DIR": str(folder / "models"), "MAX_TOKENS": "64", "ROUTER_MODE": "off", **DEFAULTS}
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture
async def chat(grounded_app_url):
    client = ChainlitClient(grounded_app_url)
    await client.connect()
    await client.change_settings({"temperature": 0})
    yield client
    await client.close()


def outputs(turn) -> str:
    return "\n".join(message.get("output", "") for message in turn.messages)


async def test_the_small_model_answers_with_the_passage_sentence_that_holds_the_fact(chat):
    file_id = await chat.upload("nightjar.md", NIGHTJAR, "text/markdown")
    await chat.ask("", file_ids=(file_id,))

    turn = await chat.ask("When does Project Nightjar launch?")

    answer = answer_message(turn)["output"]
    # Copied word for word, first in the reply, with its [n]: nothing to cut.
    assert answer.startswith("> Project Nightjar launches on the ninth of March from the Zorblax test range. [")
    assert "~~" not in answer and "✂️" not in answer
    assert "*smollm2-135m (embedded)*" in answer
    how = await how_it_was_made(chat, turn)
    assert "**smollm2-135m (embedded)** chose a passage sentence" in how and "question likelihood" in how


async def test_a_written_answer_with_an_invented_number_is_cut_and_the_reply_quotes_the_passage(chat):
    await chat.change_settings({"temperature": 0, "answer_style": "compose"})

    turn = await chat.ask("What's the default sampling temperature?")

    answer = answer_message(turn)["output"]
    assert answer.startswith("*No model answer passed the support check")
    assert "`TEMPERATURE`" in answer and "~~" not in answer
    how = await how_it_was_made(chat, turn)
    assert "~~" in how and "✂️ Cut 1 sentence the documents do not support" in how


async def how_it_was_made(chat: ChainlitClient, turn) -> str:
    final_id = answer_message(turn)["id"]
    [element] = [e for e in turn.named("element") if e["forId"] == final_id and e["name"] == "How this answer was made"]
    return await chat.element_text(element)


async def test_a_question_the_documents_do_not_cover_gets_no_model_answer(chat):
    turn = await chat.ask("Who won the 2018 football world cup?")

    assert turn.named("stream_start") == []  # no model wrote anything
    text = outputs(turn)
    assert "The documents do not cover this question" in text
    assert "General-knowledge answers" in text


async def test_a_general_knowledge_answer_is_given_when_asked_and_labelled(chat):
    await chat.change_settings({"temperature": 0, "general_knowledge": True})

    turn = await chat.ask("Who won the 2018 football world cup?")

    assert turn.named("stream_start")
    assert "not from the documents" in answer_message(turn)["output"]
