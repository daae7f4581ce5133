"""The /compare page's in-browser runner: its routes on the real app, and SmolLM2 running in a real Chromium.

The browser tests ask the page for one thread (`/compare?threads=1`): the machine has two
cores and other test processes, and WebAssembly threads that wait on a busy core spin
instead of sleeping, which makes a two-thread run far slower than a one-thread one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from models.base import ChatMessage
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM
from models.settings import Settings
from models.weights import smollm2_path
from tests.browser import ACTION_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, VIEWPORT, screenshot
from tests.fakes import ScriptedBackend
from tests.in_process import app_in_process
from tests.servers import chainlit_app, local_user_client
from web.accounts import hash_password
from web.browser_runner import ASSETS, MODEL_ROUTE, missing_assets

# The support check on, as in the app's defaults: the check endpoint is compared with the server's.
ENV = {"MAX_TOKENS": "24", "ROUTER_MODE": "off", "TEMPERATURE": "0", "GROUNDING_GUARD": "stop"}
NOTE = "The Zorblax depot opens at 07:15 on weekdays and closes at noon on Saturdays."
QUESTION = "When does the Zorblax depot open on weekdays?"
IDEAS = "List 5 creative IoT edge AI ideas."
# A run in the page: load, prompt, generation; the machine is shared with other model runs.
RUN_TIMEOUT_MS = 150_000
ASSETS_URL = "/compare/browser/assets/"


@pytest.fixture(scope="module", autouse=True)
def runner_installed():
    # `make test` installs the npm packages first: missing ones are a broken set-up, not a skip.
    if missing := missing_assets():
        pytest.fail(f"The in-browser runner's files are missing ({', '.join(missing)}): run `make install`.")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser-runner")
    with chainlit_app(folder / "chainlit.log", {**ENV, "MODEL_CACHE_DIR": str(folder / "models")}) as url:
        yield url


@pytest.fixture
async def http(app_url):
    async with local_user_client(app_url) as client:
        yield client


@pytest.fixture(scope="module")
def model_sha256() -> str:
    return hashlib.sha256(smollm2_path().read_bytes()).hexdigest()


# --- the routes ----------------------------------------------------------------------


async def test_the_model_file_has_its_checksum_as_etag_ranges_and_304(http, model_sha256):
    setup = (await http.get("/compare/browser/setup")).json()
    assert setup["installed"] and setup["model"]["sha256"] == model_sha256
    etag = f'"{model_sha256}"'

    head = await http.head(MODEL_ROUTE)
    assert head.status_code == 200 and head.headers["etag"] == etag
    assert int(head.headers["content-length"]) == smollm2_path().stat().st_size == setup["model"]["size"]
    assert head.headers["accept-ranges"] == "bytes" and "no-cache" in head.headers["cache-control"]

    part = await http.get(MODEL_ROUTE, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == b"GGUF"
    assert part.headers["content-range"] == f"bytes 0-3/{setup['model']['size']}"
    resumed = await http.get(MODEL_ROUTE, headers={"Range": "bytes=-8", "If-Range": etag})
    assert resumed.status_code == 206 and resumed.content == smollm2_path().read_bytes()[-8:]

    unchanged = await http.get(MODEL_ROUTE, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    other = await http.get(MODEL_ROUTE, headers={"If-None-Match": '"0000"', "Range": "bytes=0-0"})
    assert other.status_code == 206


async def test_the_page_and_its_files_are_cross_origin_isolated_and_the_chat_is_not(http):
    setup = (await http.get("/compare/browser/setup")).json()
    paths = ["/compare", "/compare/browser-runner.js", MODEL_ROUTE, *setup["assets"].values()]
    for path in paths:
        response = await http.head(path) if path == MODEL_ROUTE else await http.get(path)
        assert response.status_code == 200, path
        assert response.headers["cross-origin-opener-policy"] == "same-origin", path
        assert response.headers["cross-origin-embedder-policy"] == "require-corp", path
    assert (await http.get(setup["assets"]["wllama.wasm"])).headers["content-type"] == "application/wasm"
    chat = await http.get("/")
    assert "cross-origin-embedder-policy" not in chat.headers


async def test_the_rendered_prompt_is_the_server_models_prompt(http, embedded):
    body = {"prompt": QUESTION, "context": NOTE, "temperature": 0.3, "max_tokens": 40}
    rendered = (await http.post("/compare/browser/prompt", json={**body, "models": ["slm"]})).json()

    # The GGUF's template over the same messages, as the embedded backend renders them.
    messages = [ChatMessage(m["role"], m["content"]) for m in rendered["messages"]]
    expected = embedded.load(EMBEDDED_SLM).format(messages)
    assert rendered["prompt"] == expected.text and rendered["sampling"]["stop"] == list(expected.stop)
    assert NOTE in rendered["prompt"] and rendered["prompt"].rstrip().endswith("assistant")
    sampling = rendered["sampling"]
    assert sampling["temperature"] == 0.3 and sampling["max_tokens"] == 40 and sampling["repeat_penalty"] > 1
    assert rendered["n_ctx"] == Settings().embedded_context_window

    # The server's SmolLM2 reads exactly this prompt: the same number of tokens. (Without context:
    # an answer the support check stops early has its token counts estimated, not counted.)
    general = {"prompt": "Write a haiku about the sea.", "max_tokens": 8}
    rendered = (await http.post("/compare/browser/prompt", json=general)).json()
    async with http.stream("POST", "/compare/stream", json={**general, "models": ["slm"]}) as stream:
        events = [json.loads(line) async for line in stream.aiter_lines() if line]
    [server] = [event["result"] for event in events if event["event"] == "done"]
    llama = embedded.load(EMBEDDED_SLM).llama
    assert not server["tokens_estimated"]
    assert len(llama.tokenize(rendered["prompt"].encode(), add_bos=True, special=True)) == server["prompt_tokens"]


async def test_the_browsers_answer_is_checked_as_the_servers_is(http):
    body = {"prompt": QUESTION, "context": NOTE, "temperature": 0, "max_tokens": 40}
    async with http.stream("POST", "/compare/stream", json={**body, "models": ["slm"]}) as stream:
        events = [json.loads(line) async for line in stream.aiter_lines() if line]
    [server] = [event["result"] for event in events if event["event"] == "done"]

    timings = {"ttft_s": 0.5, "total_s": 2.5, "load_s": 3.0, "prompt_tokens": 80, "completion_tokens": 21}
    checked = await http.post("/compare/browser/check", json={**body, "answer": server["text"], **timings})
    row = checked.json()

    assert checked.status_code == 200, row
    assert (row["final"], row["source"], row["cuts"]) == (server["final"], server["source"], server["cuts"])
    assert row["key"] == "browser:smollm2-135m" and row["model"] == "smollm2-135m (in this browser)"
    assert row["ttft_s"] == 0.5 and row["total_s"] == 2.5 and row["tokens_per_s"] == pytest.approx(20 / 2.0)
    made_up = await http.post(
        "/compare/browser/check", json={**body, "answer": "The depot opens at 09:30 on Sundays.", **timings}
    )
    assert made_up.json()["cuts"] and made_up.json()["source"] != "slm"


async def test_the_runner_refuses_bad_input_with_a_message(http):
    empty = await http.post("/compare/browser/prompt", json={"prompt": "  "})
    assert empty.status_code == 400 and "Type a prompt first" in empty.json()["detail"]
    unknown = await http.post("/compare/browser/prompt", json={"prompt": "hi", "models": ["nope"]})
    assert unknown.status_code == 404 and "'nope'" in unknown.json()["detail"]
    # Only the files the runner lists are served from node_modules.
    assert (await http.get("/compare/browser/assets/%2E%2E/package.json")).status_code == 404
    assert (await http.get("/compare/browser/assets/index.js")).status_code == 404


async def test_login_protects_the_model_and_the_runner(tmp_path):
    users = f"alice:{hash_password('alice long password')}"
    with chainlit_app(tmp_path / "chainlit.log", {**ENV, "AUTH_USERS": users}) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for method, path in [
                ("GET", MODEL_ROUTE),
                ("HEAD", MODEL_ROUTE),
                ("GET", "/compare/browser/setup"),
                ("GET", "/compare/browser/assets/wllama.js"),
                ("POST", "/compare/browser/prompt"),
                ("POST", "/compare/browser/check"),
            ]:
                response = await client.request(method, path, json={"prompt": "hi"} if method == "POST" else None)
                assert response.status_code == 401, (method, path)
            await client.post("/login", data={"username": "alice", "password": "alice long password"})
            assert (await client.head(MODEL_ROUTE)).status_code == 200


# --- the page in Chromium ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def visitor(browser: Browser) -> AsyncIterator[tuple[Page, list[str]]]:
    """A new visitor's tab, and every URL it requests (blob: workers included)."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    try:
        yield await context.new_page(), requested
    finally:
        await context.close()


async def start_in_browser(page: Page, url: str, preset: str = IDEAS, max_tokens: int = 40) -> None:
    """Opens /compare, runs the preset in this browser only, and waits until the model is loaded
    (the page then says where it runs and how it was loaded)."""
    await page.goto(f"{url}/compare?threads=1")
    await expect(page.locator("#browser-status")).to_contain_text("Ready")
    await page.get_by_role("button", name=preset).click()
    await expect(page.locator("#prompt")).to_have_value(preset)
    await page.uncheck("#use-slm")
    await page.uncheck("#use-llm")
    await page.check("#use-browser")
    await page.fill("#max-tokens", str(max_tokens))
    await page.click("#run")
    await expect(page.locator("#browser-status")).to_contain_text("Ran on", timeout=RUN_TIMEOUT_MS)


async def run_in_browser(page: Page, url: str, preset: str = IDEAS, max_tokens: int = 40) -> list[str]:
    """`start_in_browser`, then the run to its end; returns the run's table row."""
    await start_in_browser(page, url, preset, max_tokens)
    await expect(page.locator("#chart")).to_have_attribute("data-points", "1", timeout=RUN_TIMEOUT_MS)
    return await page.locator("#runs tbody tr").first.locator("td").all_text_contents()


async def test_the_model_runs_in_the_page_and_a_second_visit_uses_the_cache(app_url, browser):
    async with visitor(browser) as (page, requested):
        answer = page.locator(".answer pre").first
        row = await run_in_browser(page, app_url, max_tokens=28)
        await screenshot(page, "browser-runner-first-visit")

        tokens = int(await answer.get_attribute("data-tokens") or 0)
        assert tokens >= 20, await answer.text_content()
        assert row[1] == "smollm2-135m (in this browser)"
        assert all(cell.endswith(" s") for cell in (row[2], row[3], row[7])) and row[5] != "–"
        assert row[8] == "WebAssembly, 1 thread"
        await expect(page.locator(".answer .stats").first).to_contain_text("downloaded")
        await expect(page.locator("#error")).to_be_hidden()

        # The next visit (same browser, new page load) takes the model from cache storage.
        await start_in_browser(page, app_url, max_tokens=8)
        await expect(page.locator("#browser-status")).to_contain_text("from this browser's cache")
        assert [url for url in requested if MODEL_ROUTE in url] == [f"{app_url}{MODEL_ROUTE}"]
        # Nothing from another host: the page, the library, its WebAssembly and the model are the app's.
        assert [url for url in requested if not url.startswith((app_url, "blob:", "data:"))] == []
        assert {ASSETS_URL + "wllama.wasm", ASSETS_URL + "wllama.js"} <= {u.removeprefix(app_url) for u in requested}


@pytest.fixture(scope="module")
async def webgpu_browser() -> AsyncIterator[Browser]:
    """Chromium with its software WebGPU adapter (SwiftShader), the GPU process on."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run `make system-packages`", pytrace=False)
    args = [arg for arg in CHROMIUM_ARGS if arg != "--disable-gpu"] + ["--enable-unsafe-webgpu"]
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_webgpu_is_tried_and_a_failure_falls_back_to_webassembly_visibly(app_url, webgpu_browser):
    async with visitor(webgpu_browser) as (page, _):
        # A WebGPU device that cannot be created, as with a broken driver (this page only).
        await page.add_init_script(
            "GPUAdapter.prototype.requestDevice = () => Promise.reject(new Error('device lost at creation'))"
        )
        await start_in_browser(page, app_url, max_tokens=4)
        status = page.locator("#browser-status")
        await expect(status).to_contain_text("WebGPU failed: device lost at creation")
        await expect(status).to_contain_text("Ran on WebAssembly, 1 thread")
        await expect(status).to_contain_text("so it runs on WebAssembly")
        await screenshot(page, "browser-runner-webgpu-fallback")

        # Chromium's software adapter as it is (a new page of the same browser: the model is cached).
        # SwiftShader has no shader-f16, and llama.cpp's WebGPU backend takes no layer on it here.
        page = await page.context.new_page()
        await start_in_browser(page, app_url, max_tokens=4)
        status = page.locator("#browser-status")
        if "Ran on WebGPU" not in (await status.text_content() or ""):
            await expect(status).to_contain_text("WebGPU (google swiftshader) took no layer")
            await expect(status).to_contain_text("Ran on WebAssembly, 1 thread")


# --- failures in words -------------------------------------------------------------------


async def test_a_model_that_fails_its_checksum_is_refused_in_words(app_url, browser):
    async with visitor(browser) as (page, _):

        async def wrong_checksum(route):
            response = await route.fetch()
            if response.status != 200:  # the page signs in and asks again
                await route.fulfill(response=response)
                return
            setup = await response.json()
            setup["model"]["sha256"] = "0" * 64
            await route.fulfill(response=response, json=setup)

        await page.route("**/compare/browser/setup", wrong_checksum)
        await page.goto(f"{app_url}/compare?threads=1")
        await page.fill("#prompt", "hello")
        await page.check("#use-browser")
        await page.uncheck("#use-llm")
        await page.fill("#max-tokens", "4")
        await page.click("#run")

        stats = page.locator(".answer .stats").last
        await expect(stats).to_contain_text("failed its checksum", timeout=RUN_TIMEOUT_MS)
        # The server model still answered.
        await expect(page.locator("#chart")).to_have_attribute("data-points", "1")


async def test_a_cut_download_is_said_in_words(app_url, browser):
    async with visitor(browser) as (page, _):
        await page.route(f"**{MODEL_ROUTE}*", lambda route: route.abort("connectionreset"))
        await page.goto(f"{app_url}/compare?threads=1")
        await page.fill("#prompt", "hello")
        await page.uncheck("#use-slm")
        await page.uncheck("#use-llm")
        await page.check("#use-browser")
        await page.click("#run")

        await expect(page.locator(".answer .stats")).to_contain_text("The model download was cut at 0 of 94 MB")
        await expect(page.locator("#run")).to_be_enabled()


async def test_without_npm_the_page_says_how_to_install_the_runner(tmp_path, browser, monkeypatch):
    # What a machine without npm has: no node_modules. The app must still run.
    monkeypatch.setitem(ASSETS, "wllama.js", tmp_path / "missing" / "index.js")
    models = ScriptedBackend({EMBEDDED_SLM: ["Hello."], EMBEDDED_LLM: ["Hello."]})
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=tmp_path / "models")
    with app_in_process(settings, {"embedded": models}) as app:
        async with visitor(browser) as (page, _):
            await page.goto(f"{app.url}/compare")
            await expect(page.locator("#browser-status")).to_contain_text("run `make install`")
            await expect(page.locator("#use-browser")).to_be_disabled()
            await page.fill("#prompt", "hello")
            await page.uncheck("#use-llm")
            await page.click("#run")
            await expect(page.locator("#chart")).to_have_attribute("data-points", "1")
