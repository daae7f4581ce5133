"""The real app on its default grounding settings: the embedded model at temperature 0, the
guard in `stop` mode, and questions the documents do not cover answered as such."""

from __future__ import annotations

import pytest

from tests.chainlit_client import ChainlitClient
from tests.servers import chainlit_app
from tests.test_chainlit_app import NIGHTJAR, answer_message

DEFAULTS = {"GROUNDING_GUARD": "stop", "MIN_RETRIEVAL_SCORE": "0.2"}


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


async def test_an_answer_from_the_passage_that_holds_the_fact_is_kept_unmarked(chat):
    file_id = await chat.upload("nightjar.md", NIGHTJAR, "text/markdown")
    await chat.ask("", file_ids=(file_id,))

    turn = await chat.ask("When does Project Nightjar launch?")

    answer = answer_message(turn)["output"]
    assert "march" in answer.lower()
    assert "~~" not in answer and "✂️" not in answer
    assert "*smollm2-135m (embedded)*" in answer


async def test_an_invented_number_is_struck_through_and_the_passages_are_quoted(chat):
    turn = await chat.ask("What's the default sampling temperature?")

    answer = answer_message(turn)["output"]
    assert "~~" in answer
    assert "✂️ Cut 1 sentence the documents do not support" in answer
    assert "No model answer could be checked against the documents" in answer
    assert "`TEMPERATURE` | `0.2`" in answer


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
