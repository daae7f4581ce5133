"""A real headless browser for the tests: Debian's Chromium driven by Playwright's async API.

Playwright's own browser download cannot reach its servers from these machines, so the
tests drive the system Chromium (`make system-packages` installs it). `tests/conftest.py` provides
the `browser` and `page` fixtures to every test module; navigate `page` (or a page from
`open_page(browser)`) to the server under test.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Error, Page, Playwright, async_playwright

from tests.servers import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "browser"
VIEWPORT = {"width": 1280, "height": 900}
# The machine is shared with other model runs: a click or a navigation may wait a while.
ACTION_TIMEOUT_MS = 30_000


async def launch_chromium(playwright: Playwright, executable: Path = CHROMIUM) -> Browser:
    """Debian's Chromium, headless. Fails the test (not skips it): `make test` installs Chromium."""
    if not executable.is_file():
        pytest.fail(
            f"Chromium is missing at {executable}: run `make system-packages` (apt-get install chromium)", pytrace=False
        )
    try:
        return await playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
    except Error as error:
        reason = str(error).strip().splitlines()[0]
    pytest.fail(f"Chromium at {executable} did not start: {reason}", pytrace=False)


@contextlib.asynccontextmanager
async def open_page(browser: Browser) -> AsyncIterator[Page]:
    """A page in its own context (cookies, storage), so each page is a new visitor."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def screenshot(page: Page, step: str) -> Path:
    """Saves the whole page as `test-artifacts/browser/<step>.png` and returns the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', step)}.png"
    await page.screenshot(path=path, full_page=True)
    return path


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await launch_chromium(playwright)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with open_page(browser) as new_page:
        yield new_page
