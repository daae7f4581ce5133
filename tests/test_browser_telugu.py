"""The chat in a real browser set to Telugu: Debian's Chromium with the locale "te-IN" (its
`navigator.language` and Accept-Language) on a real `chainlit run app.py --headless` server.
The app's own words come from i18n's Telugu catalog, Chainlit's interface from its te.json,
the welcome page from chainlit_te.md. Screenshots go to `test-artifacts/browser/`."""

from __future__ import annotations

from playwright.async_api import expect

from answering.reply import HOW_ELEMENT
from i18n import translator
from tests.browser import ACTION_TIMEOUT_MS, VIEWPORT, screenshot
from tests.servers import chainlit_app
from web.chat import COMMANDS_HELP

# The embedded models copy the passage sentence that answers, as they do by default (the test
# servers' own default is to compose, which is quicker for English).
ENV = {
    "MAX_TOKENS": "32",
    "ROUTER_MODE": "off",
    "TEMPERATURE": "0",
    "EMBEDDED_THREADS": "1",
    "ANSWER_STYLES": '{"embedded": "copy", "server": "compose"}',
}
WELCOME = "మీ బృందం పత్రాల గురించి నన్ను అడగండి"
NO_UPLOADS = "ఈ చాట్‌లో ఇంకా ఏ ఫైలూ అప్‌లోడ్ చేయలేదు."
ASSISTANT_MESSAGES = '[data-step-type="assistant_message"]'
# The first answer loads the models (and assembles Gemma's file in this test's own cache).
ANSWER_TIMEOUT_MS = 180_000


async def test_a_browser_set_to_telugu_gets_the_chat_in_telugu(tmp_path, browser):
    env = {**ENV, "DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(tmp_path / "models")}
    context = await browser.new_context(viewport=VIEWPORT, locale="te-IN")
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        page = await context.new_page()
        with chainlit_app(tmp_path / "chainlit.log", env) as url:
            await page.goto(url)

            welcome = page.locator(ASSISTANT_MESSAGES).filter(has_text=WELCOME)
            await expect(welcome).to_be_visible()
            await expect(welcome).to_contain_text(translator("te").gettext(COMMANDS_HELP).split("`")[0])
            await expect(page.get_by_text("Ask me about your team's documents")).to_have_count(0)
            # Chainlit's own interface, in its Telugu translation.
            await expect(page.locator("#chat-input")).to_have_attribute("placeholder", "మీ సందేశాన్ని ఇక్కడ టైప్ చేయండి...")
            await screenshot(page, "telugu-welcome")

            await page.locator("#chat-input").fill("/uploads")
            await page.locator("#chat-input").press("Enter")
            await expect(page.locator(ASSISTANT_MESSAGES).filter(has_text=NO_UPLOADS)).to_be_visible()
            await expect(page.get_by_text("No files uploaded in this chat yet")).to_have_count(0)
            await screenshot(page, "telugu-uploads-reply")

            # A Telugu question about the English handbook ("On which port does Foundry Local usually
            # listen?"), answered from its passage by the real models; the app's words around it in Telugu.
            await page.locator("#chat-input").fill("Foundry Local సాధారణంగా ఏ పోర్ట్‌లో వింటుంది?")
            await page.locator("#chat-input").press("Enter")
            answer = page.locator(ASSISTANT_MESSAGES).filter(has_text="5273")
            await expect(answer).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
            # Finished: its footer, in Telugu, links "How this answer was made".
            await expect(answer).to_contain_text(translator("te").gettext(HOW_ELEMENT), timeout=ANSWER_TIMEOUT_MS)
            await screenshot(page, "telugu-answer")

            # The welcome page: chainlit_te.md for "te-IN" (web/chainlit_fixes.py).
            await page.locator("#readme-button").click()
            await expect(page.get_by_role("heading", name="నాలెడ్జ్ అసిస్టెంట్")).to_be_visible()
            await screenshot(page, "telugu-readme")
    finally:
        await context.close()
