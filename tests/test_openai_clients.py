"""Real OpenAI clients against a real app server: the `openai` package, unchanged, and `llm`
(simonw's command-line client, from PyPI). The app answers as the assistant: grounded,
checked, cited, and saved to the caller's chat history."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.chainlit_client import ChainlitClient
from tests.fault_behaviours import SCRIPTED_ANSWER
from tests.servers import chainlit_app, clean_environment, local_user_client, scripted_chainlit_app
from tests.test_chainlit_app import answer_message
from tests.test_grounded_chat import DEFAULTS

UPLOAD_QUESTION = "How do I upload a file to a chat?"
# The passage sentence that answers it, in uploads.md.
UPLOAD_FACT = "attach files to a message"


@pytest.fixture(scope="module")
def assistant_url(tmp_path_factory):
    """The app as `make run` starts it: the embedded models, the support check, copy answers."""
    folder = tmp_path_factory.mktemp("openai-clients")
    env = {"MODEL_CACHE_DIR": str(folder / "models"), **DEFAULTS}
    with chainlit_app(folder / "chainlit.log", env) as url:
        yield url


@pytest.fixture(scope="module")
def client(assistant_url) -> openai.OpenAI:
    # Login is off: the app answers callers on this machine, whatever key they send.
    return openai.OpenAI(base_url=f"{assistant_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def streamed(client):
    """The chunks of one streamed answer to the upload question."""
    stream = client.chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": UPLOAD_QUESTION}], stream=True
    )
    return list(stream)


def content_of(chunks) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_the_models_are_the_assistant_in_each_routing(client):
    ids = [model.id for model in client.models.list()]

    assert ids == [
        "knowledge-assistant",
        "knowledge-assistant:off",
        "knowledge-assistant:escalate",
        "knowledge-assistant:draft-refine",
        "knowledge-assistant:always-llm",
    ]


def test_a_streamed_answer_comes_first_then_its_sources(streamed):
    content = content_of(streamed)

    answer, _, sources = content.partition("\n\nSources:\n")
    assert UPLOAD_FACT in answer and answer.startswith("> ")
    assert sources.startswith("- [") and "(uploads.md)" in sources


def test_the_last_chunk_carries_the_sources_timings_and_usage(streamed):
    last = streamed[-1]
    extra = last.model_extra

    assert last.choices[0].finish_reason == "stop"
    cited = [source for source in extra["knowledge_sources"] if source["cited"]]
    assert cited and all(source["document"] == "uploads.md" for source in cited)
    assert UPLOAD_FACT in cited[0]["text"] and cited[0]["heading_path"][0] == "Uploading files"
    assert (
        extra["knowledge_timings"]["answered_by"] == "smollm2-135m (embedded)"
        and extra["knowledge_timings"]["total_s"] > 0
    )
    assert last.usage.prompt_tokens > 0


def test_not_streamed_the_reply_is_the_same(client, streamed):
    response = client.chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": UPLOAD_QUESTION}]
    )

    assert response.choices[0].message.content == content_of(streamed)
    assert response.model_extra["knowledge_sources"] == streamed[-1].model_extra["knowledge_sources"]
    assert response.usage.total_tokens == streamed[-1].usage.total_tokens


def test_a_question_the_documents_do_not_cover_is_told_so(client):
    response = client.chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": "Is there a Slack bot?"}]
    )

    assert response.choices[0].message.content == (
        "The documents never mention Slack, so they do not cover this question."
    )
    assert response.model_extra["knowledge_timings"]["answer_source"] == "out_of_scope"


def test_an_unknown_model_is_a_404_in_openais_shape(client):
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": UPLOAD_QUESTION}])

    assert "knowledge-assistant:always-llm" in refused.value.body["message"]
    assert refused.value.body["code"] == "model_not_found"


async def saved_threads(page: httpx.AsyncClient, named: str) -> list[dict]:
    """The user's chats as the history sidebar lists them, once one is called `named`
    (API turns are written in the background, after the answer)."""
    for _ in range(50):
        listed = (await page.post("/project/threads", json={"pagination": {"first": 20}, "filter": {}})).json()
        if any(thread["name"] == named for thread in listed["data"]):
            return listed["data"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no saved chat is called {named!r}: {[t['name'] for t in listed['data']]}")


async def test_api_conversations_are_in_the_chat_pages_history(assistant_url, streamed):
    async with local_user_client(assistant_url) as page:
        threads = await saved_threads(page, UPLOAD_QUESTION)

    saved = next(thread for thread in threads if thread["name"] == UPLOAD_QUESTION)
    assert json.loads(saved["metadata"])["client"] == "openai-api"  # SQLite's data layer gives it as text


def test_llm_the_command_line_client_gets_the_answer_and_its_sources(assistant_url, tmp_path):
    # llm reaches any OpenAI-compatible server through an entry in its user folder.
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: knowledge-assistant\n  model_name: knowledge-assistant\n  api_base: {assistant_url}/v1\n"
    )
    llm = Path(sys.executable).with_name("llm")

    done = subprocess.run(
        [str(llm), "-m", "knowledge-assistant", UPLOAD_QUESTION],
        env=clean_environment({"LLM_USER_PATH": str(tmp_path)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert UPLOAD_FACT in done.stdout and "Sources:\n- [" in done.stdout and "(uploads.md)" in done.stdout


# --- on the scripted model server: history, and bad input beside a streaming chat


@pytest.fixture(scope="module")
def scripted_app(scripted, tmp_path_factory):
    with scripted_chainlit_app(scripted.url, tmp_path_factory.mktemp("openai-scripted"), ROUTER_MODE="off") as app:
        yield app[0]


async def test_earlier_turns_reach_the_model_and_continue_the_saved_conversation(scripted_app, scripted):
    scripted.play("answer")
    api = openai.AsyncOpenAI(base_url=f"{scripted_app}/v1", api_key="unused", max_retries=0)
    first = [{"role": "user", "content": "Where is the Nightjar launch?"}]
    answered = await api.chat.completions.create(model="knowledge-assistant", messages=first)
    reply = answered.choices[0].message.content
    assert reply.startswith(SCRIPTED_ANSWER)

    follow_up = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And when?"}]
    await api.chat.completions.create(model="knowledge-assistant", messages=follow_up)

    prompt = scripted.requests[-1]["messages"]
    assert {"role": "user", "content": "Where is the Nightjar launch?"} in prompt
    # The earlier reply comes back as the model wrote it, without the Sources block.
    assert {"role": "assistant", "content": SCRIPTED_ANSWER} in prompt
    async with local_user_client(scripted_app) as page:
        threads = await saved_threads(page, "Where is the Nightjar launch?")
        [thread] = [t for t in threads if t["name"] == "Where is the Nightjar launch?"]
        for _ in range(50):  # the second turn is written after the first
            saved = (await page.get(f"/project/thread/{thread['id']}")).json()
            questions = [step["output"] for step in saved["steps"] if step["type"] == "user_message"]
            if len(questions) == 2:
                break
            await asyncio.sleep(0.2)
    assert questions == ["Where is the Nightjar launch?", "And when?"]


BIG = 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b'{"model": "knowledge-assistant", "messages": [', 400, "not valid JSON"),
        (json.dumps({"model": "knowledge-assistant", "messages": []}).encode(), 400, "at least 1 item"),
        (
            json.dumps({"model": "knowledge-assistant", "messages": [{"role": "robot", "content": "Hi?"}]}).encode(),
            400,
            "role must be system, developer, user or assistant",
        ),
        (
            json.dumps({"model": "knowledge-assistant", "messages": [{"role": "user", "content": "x" * BIG}]}).encode(),
            413,
            "cap of 1,024 KiB (API_MAX_REQUEST_KB)",
        ),
        (json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi?"}]}).encode(), 404, "gpt-4o"),
    ],
    ids=["malformed JSON", "no messages", "wrong role", "megabytes", "unknown model"],
)
async def test_bad_input_is_answered_in_openais_shape_while_a_chat_streams_undisturbed(
    scripted_app, scripted, body, status, says
):
    scripted.play("slow")
    chat = ChainlitClient(scripted_app)
    await chat.connect()
    try:
        asking = asyncio.create_task(chat.ask("Where is the Nightjar launch?"))
        await asyncio.sleep(0.6)  # the chat's answer is streaming
        assert not asking.done()
        async with httpx.AsyncClient(base_url=scripted_app, timeout=30) as http:
            refused = await http.post(
                "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
            )
        turn = await asking
    finally:
        await chat.close()

    assert refused.status_code == status
    error = refused.json()["error"]
    assert says in error["message"] and error["type"]
    assert answer_message(turn)["output"].startswith(SCRIPTED_ANSWER)


async def test_a_wrong_method_or_path_under_v1_gets_openais_shape_not_the_chat_page(assistant_url):
    async with httpx.AsyncClient(base_url=assistant_url) as http:
        wrong_method = await http.get("/v1/chat/completions")
        wrong_path = await http.post("/v1/embeddings", json={"input": "hello"})

    assert wrong_method.status_code == 405 and "takes POST" in wrong_method.json()["error"]["message"]
    assert wrong_path.status_code == 404 and "/v1/embeddings" in wrong_path.json()["error"]["message"]


async def test_temperature_and_max_tokens_reach_the_model(scripted_app, scripted):
    scripted.play("answer")
    api = openai.AsyncOpenAI(base_url=f"{scripted_app}/v1", api_key="unused", max_retries=0)

    await api.chat.completions.create(
        model="knowledge-assistant",
        messages=[{"role": "user", "content": "Where is the Nightjar launch?"}],
        temperature=0.35,
        max_tokens=48,
        seed=7,  # an unknown field for this server: ignored
    )

    sent = scripted.requests[-1]
    assert sent["temperature"] == 0.35 and sent["max_tokens"] == 48


def this_machines_other_address() -> str | None:
    """An address of this machine that is not a loopback one (where a route out leaves from)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def test_with_login_off_the_api_answers_this_machine_only(tmp_path):
    address = this_machines_other_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    with chainlit_app(tmp_path / "chainlit.log", {"MODEL_CACHE_DIR": str(tmp_path / "models")}, host="0.0.0.0") as url:
        here = httpx.get(f"{url}/v1/models", timeout=30, trust_env=False)
        # The same server, reached at another of this machine's addresses: the caller is not loopback.
        elsewhere = httpx.get(f"http://{address}:{httpx.URL(url).port}/v1/models", timeout=30, trust_env=False)

    assert here.status_code == 200
    assert elsewhere.status_code == 403 and "only on this machine" in elsewhere.json()["error"]["message"]
