"""Real processes for the tests: a llama.cpp OpenAI-compatible server and a Chainlit app server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx

from deploy.processes import free_port
from deploy.team import Team, app_command, make_app_root, team

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Variables that would point the app at a developer's own server or models.
_APP_VARIABLES = (
    "MODEL_SERVER_URL",
    "FOUNDRY_LOCAL_ENDPOINT",
    "MODEL_SERVER_API_KEY",
    "MODEL_ALIASES",
    "SLM_MODEL",
    "LLM_MODEL",
    "TEMPERATURE",
    "MAX_TOKENS",
    "DATA_DIR",
    "DATABASE_URL",
    "ELEMENTS_DIR",
    "ELEMENTS_S3_BUCKET",
    "ELEMENTS_S3_ENDPOINT_URL",
    "PERSIST_CHATS",
    "AUTH_USERS",
    "AUTH_USERS_FILE",
    "CHAINLIT_AUTH_SECRET",
    "API_KEYS_FILE",
)


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _APP_VARIABLES}
    # Chainlit's --ci mode (switched on by CI=true) overwrites OPENAI_API_KEY.
    env.pop("CI", None)
    env.update(extra or {})
    return env


def run_command(
    module: str, args: list[str], env: Mapping[str, str] | None = None, timeout_s: float = 180
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the project root, in a clean environment, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        env=clean_environment(env),
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout_s,
    )


def wait_until_up(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(command: list[str], ready_url: str, log: Path, env: Mapping[str, str], cwd: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd)
        try:
            wait_until_up(ready_url, process, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def llama_cpp_server(model_file: Path, log: Path, alias: str | None = None) -> Iterator[str]:
    """`python -m llama_cpp.server` on a GGUF file; yields its /v1 base URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    if alias:
        command += ["--model_alias", alias]
    base = f"http://127.0.0.1:{port}/v1"
    with running(command, f"{base}/models", log, clean_environment(), PROJECT_ROOT):
        yield base


def app_root_of(log: Path) -> Path:
    """The Chainlit app root of the server `chainlit_app` logs to `log`."""
    return log.parent / f"chainlit-root-{log.stem}"


# Every answer as the model wrote it: no support check, no scope check, and the embedded
# models writing (not choosing a passage sentence), so that answers stream for a while.
AS_WRITTEN = {
    "GROUNDING_GUARD": "off",
    "MIN_RETRIEVAL_SCORE": "0",
    "ANSWER_STYLES": '{"embedded": "compose", "server": "compose"}',
}


@contextlib.asynccontextmanager
async def local_user_client(url: str, timeout_s: float = 120) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app at `url`, logged in as the local user, as its pages are."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        (await client.post("/auth/header")).raise_for_status()
        yield client


@contextlib.contextmanager
def chainlit_app(
    log: Path, env: Mapping[str, str] | None = None, watch: bool = False, host: str = "127.0.0.1"
) -> Iterator[str]:
    """`chainlit run app.py --headless` (with `-w` if `watch`: it reloads app.py when a .py
    file in its app root changes) listening on `host`; yields its base URL on 127.0.0.1.

    Each server gets its own app root (`make_app_root`).
    """
    app_root = make_app_root(app_root_of(log))
    port = free_port()
    # host 0.0.0.0: every address of this machine, as an app served to a network is
    command = app_command(port, host, watch)
    base = f"http://127.0.0.1:{port}"
    # A fresh chat database per server unless the test brings one (to restart on it).
    # Tests about streaming, faults and sessions see every answer as the model wrote it;
    # the grounding tests (test_grounded_chat.py) turn the guard, the scope check and copy
    # answers on.
    # Embedding the handbook ahead (a minute of one core) would only compete with what they test.
    env = {
        "CHAINLIT_APP_ROOT": str(app_root),
        "DATA_DIR": str(app_root / "data"),
        "EMBED_CORPUS_AHEAD": "false",
        **AS_WRITTEN,
        **(env or {}),
    }
    with running(command, base, log, clean_environment(env), PROJECT_ROOT):
        yield base


@contextlib.contextmanager
def scripted_chainlit_app(model_server_url: str, folder: Path, **settings: str) -> Iterator[tuple[str, Path]]:
    """The app on the scripted model server, its data under `folder`; yields its URL and app root."""
    env = {
        "MODEL_CACHE_DIR": str(folder / "models"),
        "DATA_DIR": str(folder / "data"),
        "MODEL_SERVER_URL": model_server_url,
        "SLM_MODEL": "scripted",
        "LLM_MODEL": "scripted",
        "MAX_TOKENS": "64",
        **settings,
    }
    log = folder / "chainlit.log"
    with chainlit_app(log, env) as url:
        yield url, app_root_of(log)


@contextlib.contextmanager
def team_app(
    folder: Path, database_url: str, env: Mapping[str, str] | None = None, processes: int = 2
) -> Iterator[Team]:
    """The team set-up of `make team` (deploy/team.py): `processes` app processes on one PostgreSQL
    database, sharing DATA_DIR, behind nginx; with the tests' defaults of `chainlit_app`."""
    env = {
        "DATA_DIR": str(folder / "data"),
        "DATABASE_URL": database_url,
        "EMBED_CORPUS_AHEAD": "false",
        **AS_WRITTEN,
        **(env or {}),
    }
    with team(folder, processes, clean_environment(env)) as running:
        yield running
