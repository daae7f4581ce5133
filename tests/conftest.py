"""Shared fixtures: the real SmolLM2 file, an embedded backend, a real llama.cpp server, and Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.embedded import EmbeddedBackend, EmbeddedModel
from models.weights import smollm2_path
from tests.browser import browser, page  # noqa: F401 - one Chromium for every browser test
from tests.fault_behaviours import scripted_server
from tests.servers import llama_cpp_server

# The name Foundry Local gives phi-4-mini: the llama.cpp test server serves
# SmolLM2 under it, so alias matching is tested against a real model listing.
FOUNDRY_STYLE_SLM_ID = "Phi-4-mini-instruct-generic-cpu"


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
