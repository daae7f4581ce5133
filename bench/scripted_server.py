"""A fast, scripted OpenAI-compatible server: the model backend of the load benchmark.

It answers every chat completion with the same words after a fixed time to first token
and at a fixed token rate, so that what the load benchmark measures is the app, not a
model. It lists two models ("scripted-slm", "scripted-llm"), streams with the usage in
the final chunk (as `stream_options.include_usage` asks), and remembers the last request
body so that the benchmark can replay exactly what the app sent.

Run on its own (it prints its /v1 base URL once it listens):

    .venv/bin/python -m bench.scripted_server --ttft-ms 50 --tokens 40 --tok-s 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass

from aiohttp import web

SLM_ID = "scripted-slm"
LLM_ID = "scripted-llm"
# Every answer starts with this word: the benchmark's clients find the backend's first
# token by it, whatever the app streams before it (e.g. a low-retrieval-score notice).
FIRST_WORD = "Scripted"


@dataclass(frozen=True)
class Script:
    ttft_s: float = 0.05
    tokens: int = 40
    tokens_per_s: float = 200.0

    def words(self) -> list[str]:
        return [f"{FIRST_WORD} "] + [f"word{number} " for number in range(1, self.tokens)]


SCRIPT = web.AppKey("script", Script)
LAST_REQUEST = web.AppKey("last_request", dict)


def _chunk(model: str, delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {
        "id": "scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


async def _models(request: web.Request) -> web.Response:
    models = [{"id": name, "object": "model", "created": 0, "owned_by": "bench"} for name in (SLM_ID, LLM_ID)]
    return web.json_response({"object": "list", "data": models})


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[LAST_REQUEST].clear()
    request.app[LAST_REQUEST].update(body)
    script = request.app[SCRIPT]
    model = body.get("model", SLM_ID)
    words = script.words()[: max(1, int(body.get("max_tokens") or script.tokens))]
    prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
    await asyncio.sleep(script.ttft_s)
    if not body.get("stream"):
        return web.json_response(
            {
                "id": "scripted",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(words),
                    "total_tokens": prompt_tokens + len(words),
                },
            }
        )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    # Paced against the clock, not by sleeping a fixed gap per token, so that a busy
    # server does not drift slower than the rate it was asked for.
    started = time.perf_counter()
    for number, word in enumerate(words):
        due = started + number / script.tokens_per_s
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        await response.write(
            _chunk(model, {"role": "assistant", "content": word} if number == 0 else {"content": word})
        )
    await response.write(_chunk(model, {}, finish="stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        await response.write(_chunk(model, {}, usage=usage))
    await response.write(b"data: [DONE]\n\n")
    return response


async def _last_request(request: web.Request) -> web.Response:
    return web.json_response(request.app[LAST_REQUEST])


def make_app(script: Script) -> web.Application:
    app = web.Application()
    app[SCRIPT] = script
    app[LAST_REQUEST] = {}
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/bench/last-request", _last_request)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scripted_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--ttft-ms", type=float, default=50, help="time to first token, ms (default 50)")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per answer (default 40)")
    parser.add_argument("--tok-s", type=float, default=200, help="tokens per second after the first (default 200)")
    args = parser.parse_args(argv)
    script = Script(args.ttft_ms / 1000, args.tokens, args.tok_s)
    print(f"scripted OpenAI-compatible server on http://{args.host}:{args.port}/v1", flush=True)
    web.run_app(make_app(script), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
