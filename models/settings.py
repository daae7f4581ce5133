"""All configuration in one object, read from the environment and `.env`.

Every field is documented in the README's configuration table; keep the two in step.
Code receives a `Settings` instance; nothing below the app reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "local-knowledge-assistant"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    # --- OpenAI-compatible model server (Foundry Local, Ollama, vLLM, llama.cpp server)
    model_server_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT"),
        description="Base URL of an OpenAI-compatible server; empty means embedded models only.",
    )
    model_server_api_key: str = Field(
        default="not-needed", validation_alias=AliasChoices("MODEL_SERVER_API_KEY")
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("MODEL_ALIASES"),
        description='JSON map from catalog name to server model id, e.g. {"phi-4-mini": "phi4-mini:latest"}.',
    )
    server_context_window: int = Field(
        default=8192, validation_alias=AliasChoices("SERVER_CONTEXT_WINDOW")
    )

    # --- which models answer
    slm_model: str | None = Field(default=None, validation_alias=AliasChoices("SLM_MODEL"))
    llm_model: str | None = Field(default=None, validation_alias=AliasChoices("LLM_MODEL"))

    # --- generation defaults
    temperature: float = Field(default=0.2, ge=0.0, le=2.0, validation_alias=AliasChoices("TEMPERATURE"))
    max_tokens: int = Field(default=512, ge=1, le=8192, validation_alias=AliasChoices("MAX_TOKENS"))

    # --- timeouts (seconds)
    connect_timeout_s: float = Field(default=3.0, gt=0, validation_alias=AliasChoices("CONNECT_TIMEOUT_S"))
    first_token_timeout_s: float = Field(
        default=60.0, gt=0, validation_alias=AliasChoices("FIRST_TOKEN_TIMEOUT_S")
    )
    token_timeout_s: float = Field(default=30.0, gt=0, validation_alias=AliasChoices("TOKEN_TIMEOUT_S"))

    # --- embedded models (llama-cpp-python)
    embedded_context_window: int = Field(
        default=4096, ge=512, validation_alias=AliasChoices("EMBEDDED_CONTEXT_WINDOW")
    )
    embedded_threads: int = Field(
        # One core stays free for the event loop that every chat shares, and for parsing.
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1),
        ge=1,
        validation_alias=AliasChoices("EMBEDDED_THREADS"),
    )
    embedded_repeat_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, validation_alias=AliasChoices("EMBEDDED_REPEAT_PENALTY")
    )
    model_cache_dir: Path = Field(
        default_factory=_default_cache_dir, validation_alias=AliasChoices("MODEL_CACHE_DIR")
    )

    # --- documents, retrieval and uploads
    corpus_dir: Path = Field(
        default=PROJECT_ROOT / "docs_corpus", validation_alias=AliasChoices("CORPUS_DIR")
    )
    retrieval_mode: Literal["bm25", "lexical"] = Field(
        default="bm25", validation_alias=AliasChoices("RETRIEVAL_MODE")
    )
    top_k: int = Field(default=3, ge=1, le=20, validation_alias=AliasChoices("TOP_K"))
    chunk_size: int = Field(default=1500, ge=200, le=8000, validation_alias=AliasChoices("CHUNK_SIZE"))
    chunk_overlap: int = Field(default=150, ge=0, le=2000, validation_alias=AliasChoices("CHUNK_OVERLAP"))
    min_retrieval_score: float = Field(
        default=0.2, ge=0.0, le=1.0, validation_alias=AliasChoices("MIN_RETRIEVAL_SCORE"),
        description="Below this best-hit score the answer says the documents do not seem to cover the question.",
    )
    embedded_context_budget: int = Field(
        default=400, ge=50, le=8000, validation_alias=AliasChoices("EMBEDDED_CONTEXT_BUDGET"),
        description="Tokens of passages an embedded model reads: the sentences that best match the question, "
                    "with their neighbours (a 135M model answers better from less).",
    )
    server_context_budget: int = Field(
        default=2000, ge=50, le=64000, validation_alias=AliasChoices("SERVER_CONTEXT_BUDGET"),
        description="Tokens of passages a server model reads.",
    )
    grounding_guard: Literal["off", "mark", "stop"] = Field(
        default="stop", validation_alias=AliasChoices("GROUNDING_GUARD"),
        description="What happens to an answer sentence the passages do not support: `stop` cuts it and stops "
                    "the model, `mark` strikes it through and lets the model go on, `off` shows it as written.",
    )
    upload_max_mb: float = Field(default=20.0, gt=0, validation_alias=AliasChoices("UPLOAD_MAX_MB"))
    upload_max_files: int = Field(default=10, ge=1, validation_alias=AliasChoices("UPLOAD_MAX_FILES"))
    upload_parse_workers: int = Field(
        default=1, ge=0, le=16, validation_alias=AliasChoices("UPLOAD_PARSE_WORKERS"),
        description="Processes that read uploaded files (PDF text extraction is pure Python and would "
                    "hold the interpreter lock from every chat); 0 reads them in a thread of the app.",
    )

    # --- escalation router
    router_mode: Literal["off", "escalate", "draft-refine", "always-llm"] = Field(
        default="escalate", validation_alias=AliasChoices("ROUTER_MODE")
    )
    router_min_answer_tokens: int = Field(default=6, ge=0, validation_alias=AliasChoices("ROUTER_MIN_ANSWER_TOKENS"))
    router_min_token_prob: float = Field(
        default=0.10, ge=0.0, le=1.0, validation_alias=AliasChoices("ROUTER_MIN_TOKEN_PROB")
    )
    router_min_retrieval_score: float = Field(
        default=0.3, ge=0.0, le=1.0, validation_alias=AliasChoices("ROUTER_MIN_RETRIEVAL_SCORE")
    )

    # --- simulated cloud cost: USD per million input and output tokens, by model or alias
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "smollm2-135m": (0.02, 0.05),
            "gemma3-270m": (0.03, 0.10),
            "phi-4-mini": (0.08, 0.30),
            "gpt-oss-20b": (0.10, 0.50),
        },
        validation_alias=AliasChoices("MODEL_PRICES"),
    )

    # --- chat UI
    stream_flush_ms: int = Field(default=40, ge=0, validation_alias=AliasChoices("STREAM_FLUSH_MS"))
    # How many embedded generations decode at once, process-wide; more share the
    # same cores and each slows down (OpenMP threads oversubscribe), so they queue.
    embedded_concurrency: int = Field(default=1, ge=1, validation_alias=AliasChoices("EMBEDDED_CONCURRENCY"))

    session_timeout_s: int = Field(
        default=120, ge=5, validation_alias=AliasChoices("SESSION_TIMEOUT_S"),
        description="How long a closed tab's session is kept in memory for a reconnect; saved chats outlive it.",
    )

    # --- conversation history and login
    data_dir: Path = Field(
        default=PROJECT_ROOT / "data", validation_alias=AliasChoices("DATA_DIR"),
        description="Where the chat database, stored side elements and the login secret live.",
    )
    persist_chats: bool = Field(default=True, validation_alias=AliasChoices("PERSIST_CHATS"))
    auth_users_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("AUTH_USERS_FILE"),
        description="A file of `name:password-hash` lines; setting it (or AUTH_USERS) turns login on.",
    )
    auth_users: str = Field(
        default="", validation_alias=AliasChoices("AUTH_USERS"),
        description="Comma-separated `name:password-hash` pairs; setting it (or AUTH_USERS_FILE) turns login on.",
    )

    @property
    def chat_database(self) -> Path:
        return self.data_dir / "chats.sqlite3"

    @property
    def login_required(self) -> bool:
        return bool(self.auth_users_file or self.auth_users.strip())

    @field_validator("model_server_url", mode="before")
    @classmethod
    def _normalise_server_url(cls, value: object) -> object:
        """Accept `http://host:port` as well as `http://host:port/v1`.

        Foundry Local prints its endpoint without the `/v1` path the OpenAI API lives under.
        """
        if value is None or not str(value).strip():
            return None
        parts = urlsplit(str(value).strip())
        path = parts.path.rstrip("/")
        if not path:
            path = "/v1"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
