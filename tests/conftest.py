"""Shared fixtures: the real SmolLM2 file, an embedded backend, a real llama.cpp server, Chromium,
and a real PostgreSQL server for the chat store."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.postgres import LocalPostgres, local_postgres
from models.embedded import EmbeddedBackend, EmbeddedModel
from models.weights import smollm2_path
from tests.browser import browser, page  # noqa: F401 - one Chromium for every browser test
from tests.fault_behaviours import scripted_server
from tests.servers import free_port, llama_cpp_server, make_app_root
from web.accounts import hash_password

# The users of the login tests (`accounts`).
ALICE = ("alice", "alice's long password")
BOB = ("bob", "bob's long password")

# The name Foundry Local gives phi-4-mini: the llama.cpp test server serves
# SmolLM2 under it, so alias matching is tested against a real model listing.
FOUNDRY_STYLE_SLM_ID = "Phi-4-mini-instruct-generic-cpu"


def pytest_configure(config: pytest.Config) -> None:
    """This test process's own Chainlit app root, set before any test module imports Chainlit
    (which fixes it at import): the in-process app (tests/in_process.py) keeps its uploads under
    `<app root>/.files`, and an app run from the project folder (`make run` in another
    terminal) deletes the project's `.files` when it stops."""
    app_root = make_app_root(Path(tempfile.mkdtemp(prefix="tests-app-root-")))
    os.environ["CHAINLIT_APP_ROOT"] = str(app_root)
    config.add_cleanup(lambda: shutil.rmtree(app_root, ignore_errors=True))


@pytest.fixture(scope="session")
def smollm2_file() -> Path:
    return smollm2_path()


@pytest.fixture(scope="session")
def embedded(smollm2_file: Path) -> EmbeddedBackend:
    return EmbeddedBackend([EmbeddedModel("smollm2-135m", lambda: smollm2_file)], context_window=2048, threads=2)


@pytest.fixture(scope="session")
def llama_server(smollm2_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real OpenAI-compatible server process (llama-cpp-python's) on SmolLM2."""
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_cpp_server(smollm2_file, log, alias=FOUNDRY_STYLE_SLM_ID) as base_url:
        yield base_url


@pytest.fixture(scope="module")
async def scripted():
    """A scripted OpenAI-compatible server for fault tests: each request takes the next behaviour."""
    async with scripted_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL server (Debian's, installed by `make test`) for the whole run."""
    # Under /tmp, not pytest's private folder: as root the server runs as `nobody`, who must reach it.
    folder = Path(tempfile.mkdtemp(prefix="tests-postgres-"))
    folder.chmod(0o755)
    try:
        with local_postgres(folder / "cluster", free_port()) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_databases = itertools.count(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def chat_store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The app's chat-store settings, once per store: SQLite in DATA_DIR (the default) and a new
    database on the tests' PostgreSQL server."""
    if request.param == "sqlite":
        return {}
    server: LocalPostgres = request.getfixturevalue("postgres")
    return {"DATABASE_URL": server.create_database(f"chats_{next(_databases)}")}


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Login on for ALICE and BOB: the user list and where API keys are kept."""
    folder = tmp_path_factory.mktemp("accounts")
    users = ",".join(f"{name}:{hash_password(password)}" for name, password in (ALICE, BOB))
    return {"AUTH_USERS": users, "API_KEYS_FILE": str(folder / "api-keys.json")}
