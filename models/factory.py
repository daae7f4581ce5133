"""The model backends and the catalog, built from the settings: the app and every tool start here."""

from __future__ import annotations

from collections.abc import Mapping

from models.base import Backend, BackendError
from models.catalog import EMBEDDED_LLM, EMBEDDED_SLM, Catalog, build_catalog
from models.embedded import EmbeddedBackend, EmbeddedModel
from models.openai_compat import OpenAICompatBackend
from models.settings import Settings
from models.weights import gemma3_path, smollm2_path


def make_backends(settings: Settings) -> dict[str, Backend]:
    """The embedded backend always; the server backend when an endpoint is configured."""
    backends: dict[str, Backend] = {
        "embedded": EmbeddedBackend(
            [
                EmbeddedModel(EMBEDDED_SLM, smollm2_path, "chat_template"),
                # Gemma 3 270M from PyPI is the pretrained model: it answers best
                # when the prompt is a document that the answer completes.
                EmbeddedModel(EMBEDDED_LLM, lambda: gemma3_path(settings.model_cache_dir), "completion"),
            ],
            context_window=settings.embedded_context_window,
            threads=settings.embedded_threads,
            repeat_penalty=settings.embedded_repeat_penalty,
            concurrency=settings.embedded_concurrency,
        )
    }
    if settings.model_server_url:
        backends["server"] = OpenAICompatBackend(
            settings.model_server_url,
            settings.model_server_api_key,
            connect_timeout_s=settings.connect_timeout_s,
            first_token_timeout_s=settings.first_token_timeout_s,
            token_timeout_s=settings.token_timeout_s,
        )
    return backends


async def load_catalog(settings: Settings, backends: Mapping[str, Backend]) -> Catalog:
    server = backends.get("server")
    if server is None:
        return build_catalog(settings)
    try:
        return build_catalog(settings, await server.list_models())
    except BackendError as error:
        return build_catalog(settings, [], server_error=error)
