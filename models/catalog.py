"""Which models exist, which backend serves each, and which are the SLM and the LLM."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from models.base import BackendError
from models.settings import Settings

EMBEDDED_SLM = "smollm2-135m"
EMBEDDED_LLM = "gemma3-270m"
# The models the product is designed around when a server is configured.
SERVER_SLM = "phi-4-mini"
SERVER_LLM = "gpt-oss-20b"

# Words that name a different model of the same family, so that the alias
# "phi-4-mini" never lands on "phi-4-mini-reasoning".
_VARIANT_WORDS = ("reasoning", "flash", "vision", "multimodal", "audio", "embed")


@dataclass(frozen=True)
class ModelSpec:
    key: str  # unique across backends, used in the chat settings: "embedded:smollm2-135m"
    backend: str  # the `Backend.name` that serves it
    model: str  # the id that backend knows it by
    context_window: int

    @property
    def label(self) -> str:
        where = "embedded" if self.backend == "embedded" else "server"
        return f"{self.model} ({where})"


@dataclass
class Catalog:
    models: dict[str, ModelSpec]
    slm: ModelSpec
    llm: ModelSpec
    # Why server models are missing, or why a configured model was replaced.
    notices: list[str] = field(default_factory=list)

    @property
    def embedded_fallback(self) -> ModelSpec:
        return self.models[f"embedded:{EMBEDDED_SLM}"]

    def get(self, key: str | None) -> ModelSpec | None:
        return self.models.get(key) if key else None


def match_server_model(
    wanted: str, server_models: Sequence[str], overrides: Mapping[str, str] | None = None
) -> str | None:
    """The server's id for a model asked for by a catalog name or alias.

    Servers name the same model differently (Foundry Local
    "Phi-4-mini-instruct-generic-cpu", Ollama "phi4-mini:latest", vLLM
    "microsoft/Phi-4-mini-instruct"): an explicit override wins, then an exact
    id, then the shortest id that contains the alias once punctuation and case
    are ignored and that does not name a variant of the family.
    """
    if overrides and wanted in overrides:
        return overrides[wanted]
    if wanted in server_models:
        return wanted
    needle = _squash(wanted)
    candidates = [
        model_id
        for model_id in server_models
        if needle in _squash(model_id)
        and not any(word in model_id.lower() and word not in wanted.lower() for word in _VARIANT_WORDS)
    ]
    return min(candidates, key=len, default=None)


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def build_catalog(
    settings: Settings,
    server_models: Sequence[str] | None = None,
    server_error: BackendError | None = None,
) -> Catalog:
    """The catalog for these settings and, when a server is configured, its model list.

    `server_models` is what the server listed (None when no server is configured);
    `server_error` says why listing failed, in which case only embedded models are offered.
    """
    models = {
        spec.key: spec
        for spec in (
            ModelSpec(f"embedded:{name}", "embedded", name, settings.embedded_context_window)
            for name in (EMBEDDED_SLM, EMBEDDED_LLM)
        )
    }
    for model_id in server_models or ():
        models[f"server:{model_id}"] = ModelSpec(
            f"server:{model_id}", "server", model_id, settings.server_context_window
        )

    notices: list[str] = []
    if server_error is not None:
        notices.append(f"{server_error} Using the embedded models for now.")

    def choose(configured: str | None, server_default: str, embedded_default: str, role: str) -> ModelSpec:
        embedded = models[f"embedded:{embedded_default}"]
        wanted = configured or (server_default if server_models is not None else embedded_default)
        if server_models is not None and wanted in settings.model_aliases:
            wanted = settings.model_aliases[wanted]
        for key in (wanted, f"embedded:{wanted}", f"server:{wanted}"):
            if key in models:
                return models[key]
        if server_models:
            matched = match_server_model(wanted, server_models, settings.model_aliases)
            if matched:
                return models.get(f"server:{matched}") or ModelSpec(
                    f"server:{matched}", "server", matched, settings.server_context_window
                )
        if server_models is not None and server_error is None:
            notices.append(
                f"The {role} model {wanted!r} is not on the server at {settings.model_server_url}; "
                f"using {embedded.label}. Set {role}_MODEL or MODEL_ALIASES to one of: "
                f"{', '.join(server_models) or '(the server lists no models)'}."
            )
        elif configured and server_models is None:
            notices.append(f"The {role} model {wanted!r} is unknown; using {embedded.label}.")
        return embedded

    slm = choose(settings.slm_model, SERVER_SLM, EMBEDDED_SLM, "SLM")
    llm = choose(settings.llm_model, SERVER_LLM, EMBEDDED_LLM, "LLM")
    for spec in (slm, llm):
        models.setdefault(spec.key, spec)
    return Catalog(models, slm, llm, notices)
