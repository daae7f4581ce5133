"""Which model answers: settings, the server's model list, and the seed aliases."""

from __future__ import annotations

import pytest

from models.base import BackendError
from models.catalog import build_catalog, match_server_model
from models.settings import Settings


@pytest.fixture(autouse=True)
def no_developer_environment(monkeypatch, tmp_path):
    for name in ("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT", "SLM_MODEL", "LLM_MODEL", "MODEL_ALIASES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the project


@pytest.mark.parametrize(
    ("server_models", "expected"),
    [
        (["Phi-4-mini-reasoning-generic-cpu", "Phi-4-mini-instruct-generic-cpu"], "Phi-4-mini-instruct-generic-cpu"),
        (["phi4-mini:latest", "gpt-oss:20b"], "phi4-mini:latest"),
        (["microsoft/Phi-4-mini-instruct", "openai/gpt-oss-20b"], "microsoft/Phi-4-mini-instruct"),
        (["phi-4-mini"], "phi-4-mini"),
        (["llama-3.2-1b"], None),
    ],
)
def test_phi_4_mini_alias_finds_each_servers_name(server_models, expected):
    assert match_server_model("phi-4-mini", server_models) == expected


@pytest.mark.parametrize("server_name", ["gpt-oss-20b-generic-cpu", "gpt-oss:20b", "openai/gpt-oss-20b"])
def test_gpt_oss_alias_finds_each_servers_name(server_name):
    assert match_server_model("gpt-oss-20b", ["phi4-mini:latest", server_name]) == server_name


def test_an_explicit_alias_wins_over_matching():
    overrides = {"phi-4-mini": "my-phi"}
    assert match_server_model("phi-4-mini", ["my-phi", "phi-4-mini"], overrides) == "my-phi"


def test_foundry_local_endpoint_is_honoured_and_gets_the_v1_path(monkeypatch):
    monkeypatch.setenv("FOUNDRY_LOCAL_ENDPOINT", "http://localhost:5273")
    assert Settings().model_server_url == "http://localhost:5273/v1"


def test_model_server_url_keeps_an_explicit_path(monkeypatch):
    monkeypatch.setenv("MODEL_SERVER_URL", "http://gpu-box:8000/v1/")
    assert Settings().model_server_url == "http://gpu-box:8000/v1"


def test_settings_are_read_from_a_dotenv_file(tmp_path):
    (tmp_path / ".env").write_text("MAX_TOKENS=77\nSLM_MODEL=gemma3-270m\n")
    settings = Settings()
    assert (settings.max_tokens, settings.slm_model) == (77, "gemma3-270m")


def test_without_a_server_the_embedded_pair_is_the_default():
    catalog = build_catalog(Settings())

    assert (catalog.slm.key, catalog.llm.key) == ("embedded:smollm2-135m", "embedded:gemma3-270m")
    assert catalog.notices == []


def test_with_a_server_the_seed_models_are_the_default():
    settings = Settings(model_server_url="http://localhost:5273")
    catalog = build_catalog(settings, ["Phi-4-mini-instruct-generic-cpu", "gpt-oss-20b-generic-cpu"])

    assert catalog.slm.key == "server:Phi-4-mini-instruct-generic-cpu"
    assert catalog.llm.key == "server:gpt-oss-20b-generic-cpu"
    assert "embedded:smollm2-135m" in catalog.models


def test_an_unreachable_server_leaves_the_embedded_models_with_a_notice():
    settings = Settings(model_server_url="http://localhost:5273")
    error = BackendError("Could not connect to the model server", "http://localhost:5273/v1")

    catalog = build_catalog(settings, [], server_error=error)

    assert catalog.slm.backend == "embedded"
    assert catalog.notices == [f"{error} Using the embedded models for now."]


def test_a_configured_embedded_model_is_found_by_its_short_name():
    catalog = build_catalog(Settings(slm_model="gemma3-270m"))
    assert catalog.slm.key == "embedded:gemma3-270m"


def test_an_unknown_configured_model_falls_back_with_a_notice():
    catalog = build_catalog(Settings(slm_model="no-such-model"))

    assert catalog.slm.key == "embedded:smollm2-135m"
    assert "no-such-model" in catalog.notices[0]
