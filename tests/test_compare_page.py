"""The comparison page: its streaming endpoint on the real app, and the page in a real Chromium."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.async_api import expect

from tests.browser import open_page, screenshot
from tests.fault_server import fault_server
from tests.servers import chainlit_app, local_user_client

ENV = {"MAX_TOKENS": "24", "ROUTER_MODE": "off", "TEMPERATURE": "0"}
NOTE = "The Zorblax depot opens at 07:15 on weekdays and closes at noon on Saturdays."


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    with chainlit_app(folder / "chainlit.log", {**ENV, "MODEL_CACHE_DIR": str(folder / "models")}) as url:
        yield url


@pytest.fixture
async def http(app_url):
    async with local_user_client(app_url) as client:
        yield client


async def compare(http: httpx.AsyncClient, **body) -> list[dict]:
    async with http.stream("POST", "/compare/stream", json=body) as response:
        assert response.status_code == 200, await response.aread()
        return [json.loads(line) async for line in response.aiter_lines() if line]


def results(events: list[dict]) -> dict[str, dict]:
    return {event["key"]: event["result"] for event in events if event["event"] == "done"}


async def test_both_models_stream_one_after_the_other(http):
    events = await compare(http, prompt="What is the capital of France?", models=["slm", "llm"])

    kinds = [event["event"] for event in events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    keys = [event["key"] for event in events if event["event"] == "start"]
    assert keys == ["embedded:smollm2-135m", "embedded:gemma3-270m"]
    for key in keys:
        tokens = [event["text"] for event in events if event["event"] == "token" and event["key"] == key]
        result = results(events)[key]
        assert "".join(tokens) == result["text"] and result["text"]
        assert result["error"] is None
        assert 0 < result["ttft_s"] <= result["total_s"]
        assert result["completion_tokens"] >= 1 and result["cost_usd"] > 0
        # No context: each model's turn is a general-knowledge answer, labelled so, with nothing to cut.
        assert result["source"] == "general" and result["cuts"] == [] and result["final"] == result["text"].strip()
    # One model at a time: the second starts after the first is done.
    assert kinds.index("done") < max(i for i, event in enumerate(events) if event["event"] == "start")


async def test_pasted_context_is_given_to_the_model_as_a_passage(http):
    question = "When does the Zorblax depot open on weekdays?"
    bare = results(await compare(http, prompt=question, models=["slm"]))["embedded:smollm2-135m"]
    grounded = results(await compare(http, prompt=question, models=["slm"], context=NOTE))["embedded:smollm2-135m"]

    assert grounded["prompt_tokens"] > bare["prompt_tokens"] + 15
    assert "07:15" in grounded["text"] or "7:15" in grounded["text"]
    # The answer was checked against the note: what the chat would keep of it, and why the rest was cut.
    assert grounded["source"] in ("slm", "quotes", "none")
    assert all(cut["reason"] for cut in grounded["cuts"])
    assert grounded["final"] or grounded["source"] == "none"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "   ", "models": ["slm"]}, "Type a prompt first"),
        ({"prompt": "x" * 20_001, "models": ["slm"]}, "Too much input"),
        ({"prompt": "hi", "models": "slm", "max_tokens": "lots"}, "Send JSON"),
    ],
)
async def test_bad_input_is_refused_with_a_message(http, body, message):
    response = await http.post("/compare/stream", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_a_missing_model_is_named_with_the_available_ones(http):
    response = await http.post("/compare/stream", json={"prompt": "hi", "models": ["no-such-model"]})

    assert response.status_code == 404
    assert "'no-such-model'" in response.json()["error"]
    assert "embedded:smollm2-135m" in response.json()["error"]


async def test_a_server_model_that_fails_mid_answer_keeps_its_partial_text(tmp_path):
    async with fault_server("cut") as server_url:
        env = {**ENV, "MODEL_SERVER_URL": server_url, "SLM_MODEL": "scripted", "TOKEN_TIMEOUT_S": "2"}
        with chainlit_app(tmp_path / "chainlit.log", env) as url:
            async with local_user_client(url, timeout_s=60) as client:
                events = await compare(client, prompt="hi", models=["slm", "embedded:smollm2-135m"])

    failed, embedded = results(events)["server:scripted"], results(events)["embedded:smollm2-135m"]
    assert failed["text"] == "The answer is " and "model server" in failed["error"]
    assert embedded["error"] is None and embedded["text"]


async def test_the_page_streams_answers_and_charts_each_run(app_url, browser):
    async with open_page(browser) as page:
        await page.goto(f"{app_url}/compare")
        await expect(page.locator("#slm option")).to_have_count(2)
        await page.fill("#prompt", "Write a short poem about the sea.")
        await page.uncheck("#use-llm")
        await page.fill("#max-tokens", "48")
        await page.click("#run")

        answer = page.locator(".answer pre").first
        await expect(answer).not_to_be_empty(timeout=60_000)
        first_seen = await answer.text_content()
        await screenshot(page, "compare-streaming")
        await expect(page.locator("#chart")).to_have_attribute("data-points", "1", timeout=120_000)
        final = await answer.text_content()
        await screenshot(page, "compare-done")

        assert len(final) > len(first_seen) > 0  # it grew while we watched: streamed, not all at once
        await expect(page.locator(".answer .check").first).to_contain_text("General knowledge")
        row = await page.locator("#runs tbody tr").first.locator("td").all_text_contents()
        assert row[1] == "smollm2-135m (embedded)" and row[2].endswith(" s") and row[5] != "–"
        await expect(page.locator("#error")).to_be_hidden()


async def test_the_page_says_when_a_model_is_missing(app_url, browser):
    async with open_page(browser) as page:
        await page.goto(f"{app_url}/compare")
        await expect(page.locator("#slm option")).to_have_count(2)
        # A model removed from the server between loading the page and pressing Run.
        await page.evaluate("document.getElementById('slm').add(new Option('gone', 'server:gone', true, true))")
        await page.fill("#prompt", "hello")
        await page.click("#run")

        await expect(page.locator("#error")).to_contain_text("Unknown model 'server:gone'")


async def test_the_page_says_when_the_app_is_down(tmp_path, browser):
    async with open_page(browser) as page:
        with chainlit_app(tmp_path / "chainlit.log", ENV) as url:
            await page.goto(f"{url}/compare")
            await expect(page.locator("#slm option")).to_have_count(2)
        await page.fill("#prompt", "hello")
        await page.click("#run")

        await expect(page.locator("#error")).to_contain_text("Cannot reach the assistant")
        await screenshot(page, "compare-app-down")
