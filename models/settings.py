"""All configuration in one object, read from the environment and `.env`.

Code receives a `Settings` instance; nothing below the app reads the environment.

The configuration reference users read, docs_corpus/configuration.md, is generated from
this class by `python -m models.settings_reference`: a table per group, from each field's
environment names, default, `description` and constraints, with the prose of
models/configuration_template.md around the tables. So every field has a description
written for users, and `json_schema_extra` names its group (the section of that page) and,
where the default is computed on the machine or chosen at start-up, `default_text` says it
in words.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


AnswerStyleName = Literal["compose", "copy", "auto"]
# Embedded models choose a passage sentence (their own sentences are mostly cut by the
# support check); server models write.
DEFAULT_ANSWER_STYLES: dict[str, AnswerStyleName] = {"embedded": "copy", "server": "compose"}


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "local-knowledge-assistant"


POSTGRESQL_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)

    # --- OpenAI-compatible model server (Foundry Local, Ollama, vLLM, llama.cpp server)
    model_server_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MODEL_SERVER_URL", "FOUNDRY_LOCAL_ENDPOINT"),
        description="Base URL of an OpenAI-compatible server (Foundry Local, Ollama, vLLM, llama.cpp server); "
        "empty means embedded models only. Foundry Local's usual address is "
        "`http://localhost:5273/v1`, and `foundry service status` prints it.",
        json_schema_extra={"group": "Model server"},
    )
    model_server_api_key: str = Field(
        default="not-needed",
        validation_alias=AliasChoices("MODEL_SERVER_API_KEY"),
        description="API key sent to the server. Local servers ignore it.",
        json_schema_extra={"group": "Model server"},
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("MODEL_ALIASES"),
        description="JSON map from a catalog name to the server's model id, e.g. "
        '`{"phi-4-mini": "phi4-mini:latest"}`; an entry wins over automatic matching.',
        json_schema_extra={"group": "Model server"},
    )
    server_context_window: int = Field(
        default=8192,
        validation_alias=AliasChoices("SERVER_CONTEXT_WINDOW"),
        description="Context window, in tokens, assumed for every server model when fitting passages and "
        "the conversation into the prompt.",
        json_schema_extra={"group": "Model server"},
    )

    # --- which models answer
    slm_model: str | None = Field(
        default=None,
        validation_alias=AliasChoices("SLM_MODEL"),
        description="The small model that answers first: a catalog key, a plain name, a server model id or an alias.",
        json_schema_extra={
            "group": "Models",
            "default_text": "`smollm2-135m` (embedded) without a server, `phi-4-mini` with one",
        },
    )
    llm_model: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LLM_MODEL"),
        description="The large model the escalation router hands unsure questions to, named the same ways "
        "as `SLM_MODEL`.",
        json_schema_extra={
            "group": "Models",
            "default_text": "`gemma3-270m` (embedded) without a server, `gpt-oss-20b` with one",
        },
    )

    # --- generation defaults
    temperature: float = Field(
        # Greedy decoding: a grounded answer should be the model's most likely reading of the
        # passages, and the same question should get the same answer (see the handbook).
        default=0.0,
        ge=0.0,
        le=2.0,
        validation_alias=AliasChoices("TEMPERATURE"),
        description="Default sampling temperature; 0 (greedy decoding) always gives the same answer to the same "
        "question and passages, higher values vary the wording and invent more.",
        json_schema_extra={"group": "Generation"},
    )
    max_tokens: int = Field(
        default=512,
        ge=1,
        le=8192,
        validation_alias=AliasChoices("MAX_TOKENS"),
        description="Default longest answer, in tokens.",
        json_schema_extra={"group": "Generation"},
    )

    answer_styles: dict[str, AnswerStyleName] = Field(
        default_factory=lambda: dict(DEFAULT_ANSWER_STYLES),
        validation_alias=AliasChoices("ANSWER_STYLES"),
        description="How each model answers, as a JSON map from a model id, or `embedded` or `server` for every "
        "model of that kind, to `compose` (the model writes its answer), `copy` (the model chooses the passage "
        "sentence that answers, shown word for word) or `auto` (it writes, and chooses a sentence when what it "
        "wrote does not pass the support check). A model id wins over its kind. `copy` needs the model's "
        "probabilities of a given text, which only embedded models give: server models in `copy` compose.",
        json_schema_extra={"group": "Generation"},
    )

    # --- timeouts (seconds)
    connect_timeout_s: float = Field(
        default=3.0,
        gt=0,
        validation_alias=AliasChoices("CONNECT_TIMEOUT_S"),
        description="Seconds to open a connection to the model server.",
        json_schema_extra={"group": "Timeouts"},
    )
    first_token_timeout_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("FIRST_TOKEN_TIMEOUT_S"),
        description="Seconds to wait for the server's first streamed data, and for the model list at chat "
        "start; raise it for a server whose models are slow when cold.",
        json_schema_extra={"group": "Timeouts"},
    )
    token_timeout_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=AliasChoices("TOKEN_TIMEOUT_S"),
        description="Seconds allowed between two streamed chunks once the answer has started.",
        json_schema_extra={"group": "Timeouts"},
    )

    # --- embedded models (llama-cpp-python)
    embedded_context_window: int = Field(
        default=4096,
        ge=512,
        validation_alias=AliasChoices("EMBEDDED_CONTEXT_WINDOW"),
        description="Context window (`n_ctx`), in tokens, of each embedded model; a larger one uses more memory.",
        json_schema_extra={"group": "Embedded models"},
    )
    embedded_threads: int = Field(
        # One core stays free for the event loop that every chat shares, and for parsing.
        default_factory=lambda: max(1, (os.cpu_count() or 2) - 1),
        ge=1,
        validation_alias=AliasChoices("EMBEDDED_THREADS"),
        description="CPU threads llama.cpp uses per embedded model; one core stays free for the event loop "
        "every chat shares. On a machine busy with other work, 1 is much faster than 2.",
        json_schema_extra={
            "group": "Embedded models",
            "default_text": "number of CPU cores minus one (at least 1)",
        },
    )
    embedded_repeat_penalty: float = Field(
        default=1.1,
        ge=1.0,
        le=2.0,
        validation_alias=AliasChoices("EMBEDDED_REPEAT_PENALTY"),
        description="Penalty on recently generated tokens (1.0 means none); stops the tiny models repeating "
        "one sentence.",
        json_schema_extra={"group": "Embedded models"},
    )
    model_cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        validation_alias=AliasChoices("MODEL_CACHE_DIR"),
        description="Folder where the Gemma 3 270M model file is assembled, once, on its first use.",
        json_schema_extra={
            "group": "Embedded models",
            "default_text": "`$XDG_CACHE_HOME/local-knowledge-assistant`, else `~/.cache/local-knowledge-assistant`",
        },
    )
    # How many embedded generations decode at once, process-wide; more share the
    # same cores and each slows down (OpenMP threads oversubscribe), so they queue.
    embedded_concurrency: int = Field(
        default=1,
        ge=1,
        validation_alias=AliasChoices("EMBEDDED_CONCURRENCY"),
        description="Embedded generations that decode at the same time, across all chats; more wait their turn.",
        json_schema_extra={"group": "Embedded models"},
    )

    # --- documents and uploads
    corpus_dir: Path = Field(
        default=PROJECT_ROOT / "docs_corpus",
        validation_alias=AliasChoices("CORPUS_DIR"),
        description="Folder of the handbook, the knowledge base every chat shares: every `.md`, `.markdown` and "
        "`.txt` file in it and its subfolders. Indexed into `DATA_DIR` (`corpus-index/`); at start-up only "
        "the files that changed since are read again.",
        json_schema_extra={"group": "Documents and uploads"},
    )
    watch_corpus: bool = Field(
        default=True,
        validation_alias=AliasChoices("WATCH_CORPUS"),
        description="Watch `CORPUS_DIR` while the app runs: a file saved, added or deleted there is re-indexed "
        "within seconds, and new chats and the next question of open chats see it. `false` reads the folder "
        "at start-up only.",
        json_schema_extra={"group": "Documents and uploads"},
    )
    upload_max_mb: float = Field(
        default=20.0,
        gt=0,
        validation_alias=AliasChoices("UPLOAD_MAX_MB"),
        description="Largest uploaded file, in MB; also applied to Chainlit's own upload limit at start-up.",
        json_schema_extra={"group": "Documents and uploads"},
    )
    upload_max_files: int = Field(
        default=10,
        ge=1,
        validation_alias=AliasChoices("UPLOAD_MAX_FILES"),
        description="Most files attached to one message.",
        json_schema_extra={"group": "Documents and uploads"},
    )
    upload_parse_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        validation_alias=AliasChoices("UPLOAD_PARSE_WORKERS"),
        description="Processes that read uploaded files, below the app's CPU priority (about 70 MB each, started "
        "with the app), so that chats keep streaming while a large PDF is read. `0` reads files "
        "in a thread of the app instead, and chats stutter while a large PDF is read.",
        json_schema_extra={"group": "Documents and uploads"},
    )

    # --- retrieval
    retrieval_mode: Literal["bm25", "lexical", "hybrid"] = Field(
        default="bm25",
        validation_alias=AliasChoices("RETRIEVAL_MODE"),
        description="How passages are ranked for a question: `bm25` (Okapi BM25), `lexical` (term overlap) or "
        "`hybrid` (BM25 and the meaning of the words, from the multilingual-e5-small embedding model: "
        "finds passages that use other words; embedding the corpus takes a while the first time).",
        json_schema_extra={"group": "Retrieval"},
    )
    top_k: int = Field(
        # 5 rather than 3: the budget, not the count, bounds what a model reads, and on the handbook
        # set the 400-token excerpts of five chunks hold the fact for 175 answerable questions, of
        # three for 171 (six: 175).
        default=5,
        ge=1,
        le=20,
        validation_alias=AliasChoices("TOP_K"),
        description="Most passages given to the model per answer.",
        json_schema_extra={"group": "Retrieval"},
    )
    chunk_size: int = Field(
        default=1500,
        ge=200,
        le=8000,
        validation_alias=AliasChoices("CHUNK_SIZE"),
        description="Longest chunk (passage), in characters, when documents are cut.",
        json_schema_extra={"group": "Retrieval"},
    )
    chunk_overlap: int = Field(
        default=150,
        ge=0,
        le=2000,
        validation_alias=AliasChoices("CHUNK_OVERLAP"),
        description="Characters of the previous chunk repeated at the start of the next.",
        json_schema_extra={"group": "Retrieval"},
    )
    min_retrieval_score: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("MIN_RETRIEVAL_SCORE"),
        description="Below this best passage score no model answers: the reply says the documents do not cover "
        "the question and lists the nearest passages (a chat setting allows a labelled "
        "general-knowledge answer).",
        json_schema_extra={"group": "Retrieval"},
    )
    embedded_context_budget: int = Field(
        default=400,
        ge=50,
        le=8000,
        validation_alias=AliasChoices("EMBEDDED_CONTEXT_BUDGET"),
        description="Tokens of passages an embedded model reads: the sentences, list items and table rows that "
        "best match the question, with their neighbours (a 135M model answers better from less).",
        json_schema_extra={"group": "Retrieval"},
    )
    server_context_budget: int = Field(
        default=2000,
        ge=50,
        le=64000,
        validation_alias=AliasChoices("SERVER_CONTEXT_BUDGET"),
        description="Tokens of passages a server model reads.",
        json_schema_extra={"group": "Retrieval"},
    )
    model_context_budgets: dict[str, int] = Field(
        # SmolLM2-135M reads a prompt at about 2/3 of Gemma 3 270M's speed (107 against 153
        # tokens/s on one thread): with 2/3 of the budget its first token comes sooner, and
        # Gemma, which answers most questions, still reads the full budget.
        default_factory=lambda: {"smollm2-135m": 280},
        validation_alias=AliasChoices("MODEL_CONTEXT_BUDGETS"),
        description="JSON map from a model id to the tokens of passages that model reads, instead of "
        "`EMBEDDED_CONTEXT_BUDGET` or `SERVER_CONTEXT_BUDGET`. A model reads all that a model with a smaller "
        "budget reads, under the same `[n]`. `{}` gives every model its kind's budget.",
        json_schema_extra={"group": "Retrieval"},
    )
    sentence_meaning_weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("SENTENCE_MEANING_WEIGHT"),
        description="When choosing the sentences a model reads and the sentences quoted, the weight of their "
        "closeness in meaning to the question (by the packaged embedding model) against the question words they "
        "share, among sentences that share at least one. `0` ranks by shared words alone and never loads the "
        "embedding model.",
        json_schema_extra={"group": "Retrieval"},
    )
    embed_corpus_ahead: bool = Field(
        default=True,
        validation_alias=AliasChoices("EMBED_CORPUS_AHEAD"),
        description="Embed every corpus sentence in the background at start-up, once (kept in `MODEL_CACHE_DIR`), "
        "so that first answers come sooner; `false` embeds them when questions first need them.",
        json_schema_extra={"group": "Embedded models"},
    )
    min_sentence_closeness: float = Field(
        # Chosen on clapnq, over the five best chunks (TOP_K): 0.83 tells 29% of its unanswerable
        # questions that the documents do not cover them, against 15% by the score alone, and
        # refuses 4.3% of its answerable ones (1.7%), which still get the closest sentences
        # quoted (0.82: 22% and 2.3%; 0.84: 40% and 6.3%). No answerable handbook question's
        # closest sentence is below 0.837.
        default=0.83,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("MIN_SENTENCE_CLOSENESS"),
        description="Below this closeness in meaning (the embedding model's cosine) between the question and the "
        "closest passage sentence that shares a word with it, the documents do not cover the question, whatever "
        "the passage score; the closest sentences are quoted. Applies when `SENTENCE_MEANING_WEIGHT` is above 0; "
        "`0` turns it off.",
        json_schema_extra={"group": "Retrieval"},
    )
    grounding_guard: Literal["off", "mark", "stop"] = Field(
        default="stop",
        validation_alias=AliasChoices("GROUNDING_GUARD"),
        description="What happens to an answer sentence the passages do not support: `stop` strikes it through "
        "and stops the model, `mark` strikes it through and lets the model go on, `off` shows it "
        "as written (see the grounded answers page).",
        json_schema_extra={"group": "Retrieval"},
    )

    # --- escalation router
    router_mode: Literal["off", "escalate", "draft-refine", "always-llm"] | None = Field(
        default=None,
        validation_alias=AliasChoices("ROUTER_MODE"),
        description='Initial value of "Escalation to the large model" in the chat settings panel: `off`, '
        "`escalate` (the large model answers the same grounded prompt), `draft-refine` (the large "
        "model improves the small model's draft) or `always-llm`. Empty: the mode measured for the "
        "chat's pair of models (`models/routing.json`, see the escalation page), else `escalate`.",
        json_schema_extra={
            "group": "Escalation router",
            "default_text": "the measured mode of the model pair: `off` for the embedded pair, `escalate` for others",
        },
    )
    router_min_answer_tokens: int = Field(
        default=6,
        ge=0,
        validation_alias=AliasChoices("ROUTER_MIN_ANSWER_TOKENS"),
        description="A small-model answer with fewer tokens is escalated.",
        json_schema_extra={"group": "Escalation router"},
    )
    router_min_token_prob: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("ROUTER_MIN_TOKEN_PROB"),
        description="A small-model answer whose 10th-percentile token probability is lower is escalated; "
        "ignored when the backend returns no log-probabilities (Foundry Local).",
        json_schema_extra={"group": "Escalation router"},
    )
    router_min_copy_margin: float = Field(
        default=0.2,
        ge=0.0,
        validation_alias=AliasChoices("ROUTER_MIN_COPY_MARGIN"),
        description="A copy answer (the small model chose a passage sentence) whose choice leads the next "
        "candidate sentence by less is escalated.",
        json_schema_extra={"group": "Escalation router"},
    )
    router_min_retrieval_score: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("ROUTER_MIN_RETRIEVAL_SCORE"),
        description="A question whose best passage scores lower is escalated.",
        json_schema_extra={"group": "Escalation router"},
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
        description="Prices behind the simulated cost in the latency panel: a JSON map from a model id or "
        "short name to `[input, output]` in US dollars per million tokens.",
        json_schema_extra={"group": "Simulated cost"},
    )

    # --- chat UI
    language: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LANGUAGE"),
        description="The language of the app's own words (the welcome, notices, settings, the latency panel), as a "
        "code such as `te` or `en`; empty: the language the browser asks for. A language without a catalog in "
        "`i18n/locale/` shows English.",
        json_schema_extra={"group": "Chat UI", "default_text": "empty (the browser's)"},
    )
    stream_flush_ms: int = Field(
        default=40,
        ge=0,
        validation_alias=AliasChoices("STREAM_FLUSH_MS"),
        description="How often, in milliseconds, streamed text is sent to the browser; the first piece of an "
        "answer is always sent at once.",
        json_schema_extra={"group": "Chat UI"},
    )

    # --- conversation history and login
    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        validation_alias=AliasChoices("DATA_DIR"),
        description="Folder for the chat database `chats.sqlite3` (unless `DATABASE_URL` is set), saved side "
        "elements (`elements/`, unless `ELEMENTS_DIR` is set) and the index of `CORPUS_DIR` (`corpus-index/`, "
        "shared by the app processes that use this folder). Created on first start. The login-cookie secret is "
        "kept in the chat store (here in `auth-secret` only when chats are not saved).",
        json_schema_extra={"group": "Chat history and login"},
    )
    session_timeout_s: int = Field(
        default=120,
        ge=5,
        validation_alias=AliasChoices("SESSION_TIMEOUT_S"),
        description="Seconds a closed tab's session stays in memory in case it reconnects (Chainlit's own "
        "default is an hour); saved chats outlive it.",
        json_schema_extra={"group": "Chat history and login"},
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="Where chats are saved, for a team: `postgresql://user:password@host/database` (PostgreSQL, "
        "shared by every app process). Empty: the SQLite file `chats.sqlite3` in `DATA_DIR`, for one person.",
        json_schema_extra={"group": "Chat history and login", "default_text": "empty (SQLite in DATA_DIR)"},
    )
    elements_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("ELEMENTS_DIR"),
        description="Folder of saved chats' side elements and uploaded files; every app process must reach it "
        "(a shared folder when they run on several machines).",
        json_schema_extra={"group": "Chat history and login", "default_text": "DATA_DIR/elements"},
    )
    elements_s3_bucket: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ELEMENTS_S3_BUCKET"),
        description="Keep saved side elements and uploaded files in this S3 bucket instead of `ELEMENTS_DIR`, "
        "through Chainlit's own S3 client (needs `pip install boto3`; credentials from the usual `AWS_*` "
        "variables). For an S3-compatible store (MinIO, Ceph) also set `ELEMENTS_S3_ENDPOINT_URL`.",
        json_schema_extra={"group": "Chat history and login", "default_text": "empty (a folder)"},
    )
    elements_s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ELEMENTS_S3_ENDPOINT_URL"),
        description="The S3-compatible server of `ELEMENTS_S3_BUCKET`, e.g. `http://minio.internal:9000`.",
        json_schema_extra={"group": "Chat history and login", "default_text": "empty (Amazon S3)"},
    )
    persist_chats: bool = Field(
        default=True,
        validation_alias=AliasChoices("PERSIST_CHATS"),
        description="Save conversations and show the chat history sidebar. `false` keeps nothing once a chat ends.",
        json_schema_extra={"group": "Chat history and login"},
    )
    auth_users_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("AUTH_USERS_FILE"),
        description="Path of a file of `name:hash` lines, one user a line; `#` starts a comment line. "
        "Setting it turns password login on.",
        json_schema_extra={"group": "Chat history and login", "default_text": "empty (no login)"},
    )
    auth_users: str = Field(
        default="",
        validation_alias=AliasChoices("AUTH_USERS"),
        description="The same `name:hash` pairs, comma-separated, in the environment. Setting it also turns login on.",
        json_schema_extra={"group": "Chat history and login"},
    )

    # --- the assistant as an OpenAI-compatible model (web/openai_api.py)
    api_keys_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("API_KEYS_FILE"),
        description="File of the API keys that `python -m web.api_keys` makes and revokes, stored hashed. With "
        "login on, a call to `/v1/chat/completions` needs one of them.",
        json_schema_extra={"group": "OpenAI-compatible API", "default_text": "`DATA_DIR/api-keys.json`"},
    )
    api_max_request_kb: int = Field(
        default=1024,
        ge=1,
        le=1024 * 1024,
        validation_alias=AliasChoices("API_MAX_REQUEST_KB"),
        description="The largest request body `/v1/chat/completions` reads, in KiB; a larger one gets HTTP 413.",
        json_schema_extra={"group": "OpenAI-compatible API"},
    )
    api_max_question_chars: int = Field(
        default=20_000,
        ge=100,
        validation_alias=AliasChoices("API_MAX_QUESTION_CHARS"),
        description="The longest question (the last user message) the API answers, in characters.",
        json_schema_extra={"group": "OpenAI-compatible API"},
    )

    @property
    def chat_store_url(self) -> str:
        """The chat store as an SQLAlchemy URL with its asyncio driver."""
        if not self.database_url:
            return f"sqlite+aiosqlite:///{self.data_dir / 'chats.sqlite3'}"
        return self.database_url

    @property
    def elements_path(self) -> Path:
        return self.elements_dir or self.data_dir / "elements"

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api-keys.json"

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

    @field_validator("database_url", mode="before")
    @classmethod
    def _asyncio_driver(cls, value: object) -> object:
        """`postgresql://…` as PostgreSQL's tools write it, run on asyncpg (the app's driver)."""
        if value is None or not str(value).strip():
            return None
        scheme, separator, rest = str(value).strip().partition("://")
        if not separator or scheme not in POSTGRESQL_SCHEMES | {"sqlite", "sqlite+aiosqlite"}:
            raise ValueError(
                "DATABASE_URL must be postgresql://user:password@host:port/database (or sqlite:///path/file.sqlite3)"
            )
        driver = "postgresql+asyncpg" if scheme in POSTGRESQL_SCHEMES else "sqlite+aiosqlite"
        return f"{driver}://{rest}"
