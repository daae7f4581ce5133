"""The chat store's database: which one, bringing its tables up to date, and the shared login secret.

One schema on SQLite (one person, a file in DATA_DIR) and PostgreSQL (a team, `DATABASE_URL`):
Chainlit's SQLAlchemy data layer tables and the app's own, created and changed by the Alembic
migrations in `web/migrations/versions`. Every start runs them; on PostgreSQL under an advisory
lock, so that processes starting together migrate once and the others wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from i18n import N_, Message

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: the lock that start-up migrations take on PostgreSQL.
MIGRATION_LOCK = 727_271
LOGIN_SECRET = "chainlit-auth"

T = TypeVar("T")


class ChatStoreError(RuntimeError):
    """The chat database cannot be used; the message says which one and what to do."""


def sqlite_url(database: Path) -> str:
    return f"sqlite+aiosqlite:///{database}"


def shown_url(url: str) -> str:
    """`url` fit for a message or a log: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable DATABASE_URL)"


def is_postgresql(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def prepare_store(url: str, old_secret_file: Path | None = None) -> str:
    """Bring the chat store at `url` up to date and return the login secret kept in it.

    Blocking (start-up only). The first process to start makes the secret, or adopts the one
    an earlier version kept in `old_secret_file`, so that signed-in users stay signed in.
    """
    adopted = old_secret_file.read_text().strip() if old_secret_file and old_secret_file.is_file() else None
    return _in_own_loop(_prepare(url, adopted or secrets.token_urlsafe(48)))


async def _prepare(url: str, candidate_secret: str) -> str:
    if not is_postgresql(url):
        Path(make_url(url).database or "").parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            if is_postgresql(url):
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            await connection.run_sync(_upgrade)
            return await _login_secret(connection, candidate_secret)
    except (OSError, SQLAlchemyError) as error:
        raise ChatStoreError(
            Message(
                N_(
                    "The chat store {store} cannot be used ({error}). Chats will not be saved this time. Check "
                    "DATABASE_URL (or, without it, that DATA_DIR is a writable folder and chats.sqlite3 a SQLite "
                    "database: move it aside to start afresh), or set PERSIST_CHATS=false."
                ),
                store=shown_url(url),
                error=f"{error.__class__.__name__}: {error}",
            )
        ) from error
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    # Alembic announces each of its plugins at INFO as it imports them; the migrations it runs
    # are worth the log, the plugins are not.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def _login_secret(connection: AsyncConnection, candidate: str) -> str:
    await connection.execute(
        text("INSERT INTO app_secrets (name, value) VALUES (:name, :value) ON CONFLICT (name) DO NOTHING"),
        {"name": LOGIN_SECRET, "value": candidate},
    )
    stored = await connection.execute(text("SELECT value FROM app_secrets WHERE name = :name"), {"name": LOGIN_SECRET})
    return str(stored.scalar_one())


def _in_own_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to the end from synchronous code, even inside a running event loop
    (`chainlit run -w` builds the assistant again inside the server's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chat-store-setup") as pool:
        return pool.submit(asyncio.run, work).result()
