"""Saved chats in a real browser: the history sidebar and a reopened chat after a server restart
(its saved source passage and latency chart open from the stored elements)."""

from __future__ import annotations

from playwright.async_api import expect

from tests.browser import open_page, screenshot
from tests.servers import chainlit_app

ENV = {"MAX_TOKENS": "32", "ROUTER_MODE": "off", "TEMPERATURE": "0", "EMBEDDED_THREADS": "1"}
QUESTION = "What does Foundry Local enable?"
ANSWER_TIMEOUT_MS = 120_000
ASSISTANT_MESSAGES = '[data-step-type="assistant_message"]'


async def test_a_chat_reopens_from_the_history_after_a_restart(tmp_path, browser):
    env = {**ENV, "DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(tmp_path / "models")}
    async with open_page(browser) as page:
        with chainlit_app(tmp_path / "first.log", env) as url:
            await page.goto(url)
            await expect(page.get_by_text("Ask me about your team's documents")).to_be_visible()
            await page.locator("#chat-input").fill(QUESTION)
            await page.locator("#chat-input").press("Enter")
            answer = page.locator(ASSISTANT_MESSAGES).filter(has=page.get_by_role("link", name="Latency breakdown"))
            await expect(answer).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
            answered = await answer.first.inner_text()

        with chainlit_app(tmp_path / "second.log", env) as url:
            await page.goto(url)
            saved = page.get_by_role("link", name=QUESTION)
            await expect(saved).to_be_visible()
            await screenshot(page, "history-sidebar-after-restart")
            await saved.click()

            reopened = page.locator(ASSISTANT_MESSAGES).filter(has=page.get_by_role("link", name="Latency breakdown"))
            await expect(reopened).to_have_count(1)
            assert (await reopened.first.inner_text()).strip() == answered.strip()
            await reopened.first.get_by_role("link", name="[1]").first.click()
            await expect(page.get_by_text("Score:").first).to_be_visible()
            await screenshot(page, "history-reopened-source")

            await reopened.first.get_by_role("link", name="Session latency chart").click()
            await expect(page.locator("#side-view-content .js-plotly-plot .gtitle")).to_have_text("Latency per turn")
            await screenshot(page, "history-reopened-chart")
