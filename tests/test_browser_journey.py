"""The user's journey in a real browser: Debian's Chromium on the app as a team runs it, two
`chainlit run app.py --headless` processes on PostgreSQL behind nginx (deploy/team.py).

Each test opens a new page (a new chat session) in one browser, and saves a screenshot of
each step under `test-artifacts/browser/`.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.async_api import Locator, Page, expect

from answering.timings import PhaseTimings
from deploy.team import Team
from tests.browser import screenshot
from tests.servers import PROJECT_ROOT, team_app
from web.turn_view import SAVE_PARTIAL_EVERY_S

MAX_TOKENS = 32
# Embedded answers share two cores with whatever else runs: be patient.
ANSWER_TIMEOUT_MS = 120_000
WELCOME = "Ask me about your team's documents"
STOPPED = "Stopped: the answer above is partial."
ASSISTANT_MESSAGES = '[data-step-type="assistant_message"]'


@pytest.fixture(scope="module")
def team(tmp_path_factory, postgres) -> Iterator[Team]:
    """The app as a team runs it (`make team`): two processes on PostgreSQL, behind nginx."""
    folder = tmp_path_factory.mktemp("browser-app")
    # One decoding thread: on a shared machine two threads per model oversubscribe the
    # cores and decoding slows to a crawl; short answers keep the journey quick.
    env = {
        "MODEL_CACHE_DIR": str(folder / "models"),
        "MAX_TOKENS": str(MAX_TOKENS),
        "ROUTER_MODE": "off",
        "TEMPERATURE": "0",
        "EMBEDDED_THREADS": "1",
    }
    with team_app(folder, postgres.create_database("browser_journey"), env) as running:
        yield running


@pytest.fixture(scope="module")
def app_url(team: Team) -> str:
    return team.url


@dataclass
class ChatPage:
    """The chat as a user sees it: the composer, the answers, the side panel and the settings."""

    page: Page

    async def open(self, url: str) -> None:
        await self.page.goto(url)
        await expect(self.page.get_by_text(WELCOME)).to_be_visible()

    async def send(self, question: str) -> None:
        """Types a question and presses Enter, recording how the answer's text grows."""
        await self.record_answer_text(before=await self.page.locator(ASSISTANT_MESSAGES).count())
        await self.page.locator("#chat-input").fill(question)
        # The send button stays disabled until attached files are uploaded.
        await expect(self.page.locator("#chat-submit")).to_be_enabled(timeout=ANSWER_TIMEOUT_MS)
        await self.page.locator("#chat-input").press("Enter")

    async def ask(self, question: str) -> Locator:
        """Sends a question and waits for its finished answer (the one with a latency breakdown)."""
        finished = self.finished_answers()
        count = await finished.count()
        await self.send(question)
        await expect(finished).to_have_count(count + 1, timeout=ANSWER_TIMEOUT_MS)
        return finished.nth(count)

    def finished_answers(self) -> Locator:
        return self.page.locator(ASSISTANT_MESSAGES).filter(has=self.page.get_by_role("link", name="Latency breakdown"))

    async def attach(self, name: str, content: bytes, mime: str) -> None:
        """Picks a file through the page's own file input, as the paperclip button does."""
        await self.page.locator("#upload-button-input").set_input_files(
            {"name": name, "mimeType": mime, "buffer": content}
        )
        await expect(self.page.locator("#message-composer").get_by_text(name)).to_be_visible()

    async def record_answer_text(self, before: int) -> None:
        """Records every distinct text of the newest assistant message from now on, in the page."""
        await self.page.evaluate(
            """(before) => {
                window.__answerTexts = [];
                const record = () => {
                    const messages = document.querySelectorAll('[data-step-type="assistant_message"]');
                    if (messages.length <= before) return;
                    const text = messages[messages.length - 1].querySelector('.message-content')?.textContent ?? '';
                    if (text && text !== window.__answerTexts.at(-1)) window.__answerTexts.push(text);
                };
                window.__answerObserver?.disconnect();
                window.__answerObserver = new MutationObserver(record);
                window.__answerObserver.observe(document.body, {subtree: true, childList: true, characterData: true});
            }""",
            before,
        )

    async def answer_texts(self) -> list[str]:
        return await self.page.evaluate("window.__answerTexts")

    async def wait_for_answer_texts(self, count: int) -> None:
        await self.page.wait_for_function(f"window.__answerTexts.length >= {count}", timeout=ANSWER_TIMEOUT_MS)

    async def open_side_panel(self, message: Locator, link: str) -> Locator:
        """Clicks a side element's link in a message; returns the side panel's content."""
        # The answer's own text may name the element too (a citation, or a sentence quoting
        # the handbook): every occurrence is a link, and the footer's is the last.
        await message.get_by_role("link", name=link, exact=True).last.click()
        await expect(self.page.locator("#side-view-title")).to_have_text(link)
        await self.page.wait_for_timeout(400)  # the panel slides in: let screenshots show it
        return self.page.locator("#side-view-content")

    async def change_settings(
        self,
        small_model: str | None = None,
        max_tokens_to_the_top: bool = False,
        screenshot_as: str | None = None,
        **choices: str,
    ) -> None:
        """Picks options in the settings panel: the small model, and any select by its label
        (`choices`: {label: option})."""
        await self.page.locator("#chat-settings-open-modal").click()
        dialog = self.page.get_by_role("dialog", name="Settings panel")
        if small_model:
            choices["Small model (answers first)"] = small_model
        for label, option in choices.items():
            await dialog.get_by_role("combobox", name=label).click()
            await self.page.get_by_role("option", name=option, exact=True).click()
            await expect(dialog.get_by_role("combobox", name=label)).to_have_text(option)
        if max_tokens_to_the_top:
            await dialog.locator("#max_tokens").get_by_role("slider").press("End")
        if screenshot_as:
            await screenshot(self.page, screenshot_as)
        await dialog.get_by_role("button", name="Confirm").click()
        await expect(dialog).to_be_hidden()


@pytest.fixture
async def chat(page, app_url) -> ChatPage:
    chat_page = ChatPage(page)
    await chat_page.open(app_url)
    return chat_page


def seconds(cell: str) -> float:
    """'1.23 s' -> 1.23; a dash (a phase that did not happen) -> 0."""
    match = re.fullmatch(r"([\d.]+) s", cell.strip())
    return float(match.group(1)) if match else 0.0


async def tables_in(panel: Locator) -> list[list[list[str]]]:
    """Every table in a panel, as rows of cell texts (header row first)."""
    return await panel.evaluate(
        """(panel) => [...panel.querySelectorAll('table')].map(
            (table) => [...table.rows].map((row) => [...row.cells].map((cell) => cell.textContent.trim())))"""
    )


async def test_an_answer_streams_in_and_opens_its_cited_passage_and_latency_breakdown(chat):
    await screenshot(chat.page, "01-welcome")

    await chat.send("How do I open the latency panel?")
    await chat.wait_for_answer_texts(1)
    await screenshot(chat.page, "02-answer-streaming")
    answer = chat.finished_answers().last
    await expect(answer).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    await screenshot(chat.page, "03-answer-finished")

    texts = await chat.answer_texts()
    partial = [text for text in texts if "Latency breakdown" not in text]
    assert len(partial) >= 2, f"the answer did not stream in: {texts}"
    assert len(partial[-1]) > len(partial[0])
    assert "smollm2-135m (embedded)" in await answer.text_content()
    # The side panel waits for a click (Chainlit would open it with every element).
    await expect(chat.page.locator("#side-view-content")).to_have_count(0)

    passage = await chat.open_side_panel(answer, "[1]")
    await screenshot(chat.page, "04-cited-passage")
    panel_text = await passage.text_content()
    assert panel_text.count("Document:") == 1, "the panel should show the clicked passage only"
    source = re.search(r"Document: .+? \((\S+\.md)\)", panel_text)
    assert source, panel_text
    # The first quote is what the model read; the whole chunk follows it.
    quoted = (await passage.locator("blockquote").first.inner_text()).splitlines()[0].strip()

    # Hard-wrapped lines of the page are joined into sentences in what the model read.
    def words(text: str) -> str:
        return " ".join(text.replace("`", "").split())

    page = words((PROJECT_ROOT / "docs_corpus" / source.group(1)).read_text())
    assert quoted and words(quoted.split("…")[0]) in page
    assert re.search(r"Score: 0\.\d\d \(bm25, rank 1\)", panel_text)

    breakdown = await chat.open_side_panel(answer, "Latency breakdown")
    await screenshot(chat.page, "05-latency-breakdown")
    phases_table, models_table = await tables_in(breakdown)
    phases = {name: seconds(time) for name, time in phases_table[1:]}
    total = phases.pop("Total")
    assert phases["SLM generation"] > 0 and total > 0
    assert sum(phases.values()) <= total + 0.05  # each figure is rounded to 0.01 s
    assert phases["LLM generation"] == 0  # escalation is off: the large model never ran
    [(model, tokens, rate, cost)] = models_table[1:]
    tokens_in, tokens_out = (int(number) for number in tokens.split(" / "))
    assert model == "smollm2-135m (embedded)"
    assert tokens_in > 0 and 0 < tokens_out <= MAX_TOKENS
    assert float(rate) > 0 and cost.startswith("$")
    await expect(breakdown).to_contain_text("Router (off): kept the small model's answer")

    chart = await chat.open_side_panel(answer, "Session latency chart")
    await expect(chart.locator(".js-plotly-plot .gtitle")).to_have_text("Latency per turn")
    await expect(chart.locator(".js-plotly-plot .legendtext")).to_have_count(len(PhaseTimings.PHASES))
    await screenshot(chat.page, "05b-latency-chart")


async def test_the_small_model_chosen_in_the_settings_writes_the_next_answer(chat):
    await chat.change_settings(small_model="gemma3-270m (embedded)", screenshot_as="06-settings-dialog")

    answer = await chat.ask("What does Foundry Local enable?")

    await screenshot(chat.page, "07-answer-from-gemma")
    await expect(answer).to_contain_text("gemma3-270m (embedded) · Latency breakdown")


async def test_the_reply_starts_with_the_answer_and_opens_how_it_was_made(chat):
    await chat.change_settings(
        **{
            "How the models answer": "Choose the passage sentence that answers (copy)",
            "Escalation to the large model": "escalate",
        }
    )

    answer = await chat.ask("On which port does Foundry Local usually listen?")

    content = (await answer.locator(".message-content").inner_text()).strip()
    first_line = content.splitlines()[0]
    assert "5273" in first_line and "[" in first_line, content  # the answer first, with its [n]
    assert "~~" not in content and "Escalated" not in content
    how = await chat.open_side_panel(answer, "How this answer was made")
    await screenshot(chat.page, "12-reply-and-how-it-was-made")
    await expect(how).to_contain_text("smollm2-135m (embedded) chose a passage sentence")
    await expect(how).to_contain_text("The sentences it weighed, best first")
    await expect(how).to_contain_text("Router (escalate)")


HERON = b"""# Project Heron

## Launch

Project Heron launches on the ninth of March from the Zorblax test range.
"""


async def test_a_file_attached_in_the_page_answers_the_question_sent_with_it(chat):
    await chat.attach("heron.md", HERON, "text/markdown")
    await screenshot(chat.page, "08-file-attached")

    answer = await chat.ask("When does Project Heron launch?")

    await screenshot(chat.page, "09-answer-from-file")
    await expect(chat.page.get_by_text("Added heron.md (Project Heron): 1 chunk")).to_be_visible()
    assert "march" in (await answer.text_content()).lower()
    passage = await chat.open_side_panel(answer, "[1]")
    await expect(passage).to_contain_text("Document: Project Heron (heron.md)")
    await expect(passage).to_contain_text("Project Heron launches on the ninth of March")


async def test_the_stop_button_keeps_the_partial_answer_marked_stopped(chat):
    await chat.change_settings(max_tokens_to_the_top=True)

    await chat.send("Explain how escalation to the large model works, with every reason and threshold.")
    # A low-score notice may come first: wait for it and two batches of the model's text.
    await chat.wait_for_answer_texts(3)
    await chat.page.locator("#stop-button").click()

    stopped = chat.page.locator(ASSISTANT_MESSAGES).filter(has_text=STOPPED)
    await expect(stopped).to_have_count(1)
    await screenshot(chat.page, "10-stopped")
    partial = re.sub(r"The documents do not seem to cover.*?with care\.", "", await stopped.text_content())
    assert partial.replace(STOPPED, "").strip(), "nothing of the answer was kept"
    await expect(stopped.get_by_role("link", name="Latency breakdown")).to_have_count(0)
    await expect(chat.page.locator("#chat-submit")).to_be_visible()


HOSTILE_MARKUP = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
HOSTILE = f"""# Pelican probe

## Sample

The Pelican probe sample holds {HOSTILE_MARKUP} and <b>bold?</b> markup.
""".encode()


async def test_html_and_script_in_a_document_are_shown_as_text(chat):
    await chat.attach("pelican.md", HOSTILE, "text/markdown")
    answer = await chat.ask("What does the Pelican probe sample hold?")

    passage = await chat.open_side_panel(answer, "[1]")
    await screenshot(chat.page, "11-markup-shown-as-text")
    await expect(passage).to_contain_text("Document: Pelican probe (pelican.md)")
    await expect(passage).to_contain_text(HOSTILE_MARKUP)
    await expect(passage).to_contain_text("<b>bold?</b>")
    assert await chat.page.evaluate("typeof window.__pwned") == "undefined"
    injected = await chat.page.evaluate(
        """() => ({
            scripts: [...document.querySelectorAll('script')].filter((s) => s.textContent.includes('__pwned')).length,
            onerror: document.querySelectorAll('[onerror]').length,
            bold: [...document.querySelectorAll('b')].filter((b) => b.textContent.includes('bold?')).length,
        })"""
    )
    assert injected == {"scripts": 0, "onerror": 0, "bold": 0}


async def test_the_page_asks_nothing_of_other_hosts(page, app_url):
    """Local-first: opening the chat loads nothing from the internet (no web fonts, no CDN)."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    await ChatPage(page).open(app_url)
    await page.wait_for_load_state("networkidle")

    assert requested and all(url.startswith(app_url) for url in requested), requested


async def test_a_page_whose_process_dies_mid_answer_reopens_its_chat_on_the_other(chat, team):
    await chat.change_settings(max_tokens_to_the_top=True)
    await chat.send("Explain how escalation to the large model works, with every reason and threshold.")
    await chat.wait_for_answer_texts(3)
    await asyncio.sleep(SAVE_PARTIAL_EVERY_S + 1)  # saved once while streaming
    # Every request of this browser carries its cookie, so nginx sent all of them to one process.
    last_request = (team.logs / "nginx-access.log").read_text().splitlines()[-1]
    serving = next(app for app in team.processes if last_request.endswith(f":{app.port}"))
    serving.stop(signal.SIGKILL)
    try:
        # The page reconnects through nginx by itself, to the other process, which reopens the chat.
        cut = chat.page.locator(ASSISTANT_MESSAGES).filter(has_text="Cut off: this chat's connection closed")
        await expect(cut).to_have_count(1, timeout=ANSWER_TIMEOUT_MS)
        await expect(chat.page.get_by_role("main").get_by_text("Explain how escalation to the large")).to_be_visible()
        await screenshot(chat.page, "13-reopened-after-its-process-died")

        answer = await chat.ask("What does Foundry Local enable?")
        await expect(answer).to_contain_text("Sources:")
    finally:
        team.restart(serving)
