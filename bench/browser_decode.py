"""Decode rate of SmolLM2-135M in the browser (the /compare page's runner, wllama) against the embedded backend.

One run of each, on the same machine, for the same prompt, one after the other:

- browser:  a real app server (`chainlit run app.py`), Debian's Chromium (headless, through
            Playwright) on /compare with only "In this browser" ticked; the page loads the
            model from the app, runs the prompt the app rendered, and the figures are the
            page's own (its table row) plus llama.cpp's count inside the page;
- embedded: `EmbeddedBackend.stream_chat` in this process, on the same messages (the ones
            the app's /compare/browser/prompt built for the page), as the app runs it.

Both decode greedily (temperature 0) with the same thread count (the settings'
EMBEDDED_THREADS unless `--threads`; the page is asked for it with `/compare?threads=N`).
For each side:

    TTFT        = first token's arrival - request
    decode rate = (tokens - 1) / (last token's arrival - first token's arrival)

the server rows' tokens/s, and bench.decode's decode rate. The page's model load
(download, checksum, start of llama.cpp) is reported apart and is not in either figure.

Run:

    .venv/bin/python -m bench.browser_decode                  # 200 tokens, EMBEDDED_THREADS
    .venv/bin/python -m bench.browser_decode --threads 1 --max-tokens 100

Figures go to bench/results/browser_decode.json (`--json PATH` to change). Exit code 0,
or 2 when the in-browser runner is not installed (`make install`) or Chromium is missing
(`make browser`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
from playwright.async_api import async_playwright

from bench.decode import MIN_TOKENS_FOR_RATE, timed_stream
from models.base import ChatMessage, GenerationParams
from models.catalog import EMBEDDED_SLM
from models.embedded import EmbeddedBackend
from models.factory import make_backends
from models.settings import PROJECT_ROOT, Settings
from models.weights import smollm2_path
from tests.servers import chainlit_app
from web.browser_runner import missing_assets

# Debian's Chromium, headless, with the flags of the browser tests (tests/browser.py, which
# this module does not import: mypy would then check the test helpers too).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"]
DEFAULT_JSON = PROJECT_ROOT / "bench" / "results" / "browser_decode.json"
# The page's second preset: SmolLM2 writes a long list, so the answer reaches max_tokens.
PROMPT = "List 5 creative IoT edge AI ideas."
# Download, checksum and start of llama.cpp in the page, then the answer, on a shared machine.
PAGE_TIMEOUT_MS = 600_000


async def browser_run(url: str, threads: int, max_tokens: int) -> dict[str, Any]:
    """The page's own run: its table row, where it ran, and llama.cpp's count inside the page."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = await chromium.new_page()
            await page.goto(f"{url}/compare?threads={threads}")
            await page.wait_for_function("document.getElementById('browser-status').textContent.startsWith('Ready')")
            await page.fill("#prompt", PROMPT)
            await page.uncheck("#use-slm")
            await page.uncheck("#use-llm")
            await page.check("#use-browser")
            await page.fill("#max-tokens", str(max_tokens))
            await page.fill("#temperature", "0")
            await page.click("#run")
            await page.wait_for_function(
                "document.getElementById('chart').dataset.points === '1'"
                " || document.querySelector('.answer .stats')?.textContent.startsWith('⚠️')",
                timeout=PAGE_TIMEOUT_MS,
            )
            stats = await page.text_content(".answer .stats") or ""
            if stats.startswith("⚠️"):
                raise RuntimeError(f"the in-browser run failed: {stats}")
            cells = await page.locator("#runs tbody tr").first.locator("td").all_text_contents()
            timings = await page.evaluate("window.browserRunner.timings()")
            text = await page.text_content(".answer pre") or ""
            hardware = await page.evaluate("navigator.hardwareConcurrency")
        finally:
            await chromium.close()
    completion = int(cells[4].split("/")[1])
    ttft, total = float(cells[2].removesuffix(" s")), float(cells[3].removesuffix(" s"))
    return {
        "where": cells[8],
        "load_s": float(cells[7].removesuffix(" s")),
        "tokens": completion,
        "ttft_s": ttft,
        "total_s": total,
        # The page's table gives seconds to 2 decimals; the rate is recomputed from them.
        "decode_tok_s": (completion - 1) / (total - ttft) if completion >= MIN_TOKENS_FOR_RATE else None,
        "llama_cpp_decode_tok_s": timings.get("predicted_per_second") if timings else None,
        "llama_cpp_prompt_tok_s": timings.get("prompt_per_second") if timings else None,
        "browser_hardware_concurrency": hardware,
        "text": text,
    }


async def embedded_run(settings: Settings, messages: list[ChatMessage], max_tokens: int) -> dict[str, Any]:
    backend = make_backends(settings)["embedded"]
    assert isinstance(backend, EmbeddedBackend)
    await asyncio.to_thread(backend.load, EMBEDDED_SLM)  # outside the timing, as the page's load is
    stream = await timed_stream(backend, messages, GenerationParams(max_tokens=max_tokens, temperature=0))
    await backend.aclose()
    return {
        "tokens": stream.tokens,
        "ttft_s": None if stream.first_at is None else stream.first_at - stream.started,
        "total_s": (stream.last_at or stream.started) - stream.started,
        "decode_tok_s": stream.decode_tok_s,
        "text": "".join(stream.pieces),
    }


async def measure(settings: Settings, threads: int, max_tokens: int, folder: Path) -> dict[str, Any]:
    env = {"MODEL_CACHE_DIR": str(settings.model_cache_dir), "EMBEDDED_THREADS": str(threads)}
    with chainlit_app(folder / "chainlit.log", env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            await client.post("/auth/header")
            body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
            rendered = (await client.post("/compare/browser/prompt", json=body)).json()
        print(f"browser: Chromium on {url}/compare?threads={threads} …", flush=True)
        browser = await browser_run(url, threads, max_tokens)
    messages = [ChatMessage(m["role"], m["content"]) for m in rendered["messages"]]
    print("embedded: EmbeddedBackend in this process …", flush=True)
    embedded = await embedded_run(settings.model_copy(update={"embedded_threads": threads}), messages, max_tokens)
    return {"browser": browser, "embedded": embedded, "messages": rendered["messages"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_decode", description=__doc__.split("\n")[0])
    settings = Settings()
    parser.add_argument("--max-tokens", type=int, default=200, help="answer length cap (default 200)")
    parser.add_argument(
        "--threads", type=int, default=settings.embedded_threads, help="threads of each side (default EMBEDDED_THREADS)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output file (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if missing := missing_assets():
        print(f"error: the in-browser runner is missing {', '.join(missing)}: run `make install`", file=sys.stderr)
        return 2
    if not CHROMIUM.is_file():
        print(f"error: Chromium is missing at {CHROMIUM}: run `make browser`", file=sys.stderr)
        return 2

    print(f"SmolLM2-135M ({smollm2_path().name}), threads={args.threads}, max_tokens={args.max_tokens}")
    with tempfile.TemporaryDirectory(prefix="browser-decode-") as folder:
        result = asyncio.run(measure(settings, args.threads, args.max_tokens, Path(folder)))
    browser, embedded = result["browser"], result["embedded"]
    ratio = (
        browser["decode_tok_s"] / embedded["decode_tok_s"]
        if browser["decode_tok_s"] and embedded["decode_tok_s"]
        else None
    )

    def num(value: float | None, fmt: str = ".1f") -> str:
        return "n/a" if value is None else format(value, fmt)

    print(f"\n{'side':<10} {'decode tok/s':>12} {'TTFT s':>8} {'tokens':>7}  ran on")
    for side, run, where in (("browser", browser, browser["where"]), ("embedded", embedded, "llama-cpp-python")):
        print(f"{side:<10} {num(run['decode_tok_s']):>12} {num(run['ttft_s'], '.2f'):>8} {run['tokens']:>7}  {where}")
    print(
        f"\nbrowser / embedded decode rate: {num(ratio, '.3f')} "
        f"({args.threads} thread{'s' if args.threads != 1 else ''} each; llama.cpp in the page counted "
        f"{num(browser['llama_cpp_decode_tok_s'])} tok/s; the page's model load took {browser['load_s']:.2f} s)"
    )
    if browser["text"].strip() != embedded["text"].strip():
        # Greedy decoding of one prompt by one model should give one answer; the two llama.cpp
        # builds (versions, kernels) may still differ in the last bits of their arithmetic.
        print("note: the two sides did not write the same text")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model_file": str(smollm2_path()),
                "prompt": PROMPT,
                "threads": args.threads,
                "max_tokens": args.max_tokens,
                "ratio_browser_to_embedded": ratio,
                **result,
                "environment": {
                    "llama_cpp_python": llama_cpp.__version__,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                    "load_average": os.getloadavg(),
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
