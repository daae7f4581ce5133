"""The chat store's database: created and migrated at start-up, the same on SQLite and PostgreSQL,
and one login secret for every process that uses it."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import chainlit as cl
import pytest
from alembic import command
from alembic.config import Config
from chainlit.context import init_http_context
from pydantic import ValidationError
from sqlalchemy import create_engine, event

from deploy.postgres import LocalPostgres
from models.settings import Settings
from tests.servers import free_port
from web.chat_store import ChatDataLayer, LocalFileStorage
from web.store_schema import MIGRATIONS, ChatStoreError, prepare_store, sqlite_url

HEAD = "0002"


def asyncpg_url(server: LocalPostgres, database: str) -> str:
    return Settings(DATABASE_URL=server.create_database(database)).chat_store_url


def migrate_sqlite_to(database: Path, revision: str) -> None:
    """Bring a SQLite file to `revision` with Alembic's own command (synchronous driver)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with create_engine(f"sqlite:///{database}").begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_a_postgresql_url_as_its_tools_write_it_runs_on_asyncpg():
    assert Settings(DATABASE_URL="postgresql://app:pw@db:5432/chats").chat_store_url == (
        "postgresql+asyncpg://app:pw@db:5432/chats"
    )
    assert Settings(DATABASE_URL="postgres://db/chats").chat_store_url == "postgresql+asyncpg://db/chats"


def test_without_a_database_url_chats_go_to_sqlite_in_the_data_folder(tmp_path):
    assert Settings(DATA_DIR=str(tmp_path)).chat_store_url == sqlite_url(tmp_path / "chats.sqlite3")


def test_a_database_url_of_another_kind_is_refused_with_the_form_to_use():
    with pytest.raises(ValidationError, match="postgresql://user:password@host"):
        Settings(DATABASE_URL="mysql://db/chats")


def test_a_new_sqlite_store_gets_every_table(tmp_path):
    database = tmp_path / "data" / "chats.sqlite3"

    prepare_store(sqlite_url(database))

    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        [(version,)] = connection.execute("SELECT version_num FROM alembic_version")
    assert {"users", "threads", "steps", "elements", "feedbacks", "app_secrets", "api_conversations"} <= tables
    assert version == HEAD


def test_a_store_made_before_migrations_keeps_its_chats(tmp_path):
    database = tmp_path / "chats.sqlite3"
    migrate_sqlite_to(database, "0001")
    with sqlite3.connect(database) as connection:  # as earlier versions left it: no version table
        connection.execute("DROP TABLE alembic_version")
        connection.execute("""INSERT INTO threads ("id", "name") VALUES ('t1', 'An old chat')""")

    prepare_store(sqlite_url(database))

    with sqlite3.connect(database) as connection:
        assert connection.execute('SELECT "name" FROM threads').fetchall() == [("An old chat",)]
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_the_login_secret_is_kept_in_the_store(tmp_path):
    url = sqlite_url(tmp_path / "chats.sqlite3")

    assert prepare_store(url) == prepare_store(url)


def test_a_login_secret_kept_by_an_earlier_version_is_adopted(tmp_path):
    old = tmp_path / "auth-secret"
    old.write_text("the secret users' cookies were signed with\n")

    assert prepare_store(sqlite_url(tmp_path / "chats.sqlite3"), old) == "the secret users' cookies were signed with"


def test_processes_starting_together_on_postgresql_migrate_once_and_share_one_secret(postgres):
    url = asyncpg_url(postgres, "started_together")

    with ThreadPoolExecutor(4) as starting:
        secrets = set(starting.map(lambda _: prepare_store(url), range(4)))

    assert len(secrets) == 1
    assert postgres.sql("SELECT version_num FROM alembic_version", "started_together").split() == [HEAD]


def test_postgresql_gets_the_same_tables_as_sqlite(postgres, tmp_path):
    url = asyncpg_url(postgres, "same_tables")
    prepare_store(url)
    prepare_store(sqlite_url(tmp_path / "chats.sqlite3"))

    listed = "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
    on_postgresql = {tuple(line.split("|")) for line in postgres.sql(listed, "same_tables").splitlines()}
    with sqlite3.connect(tmp_path / "chats.sqlite3") as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        on_sqlite = {(table, row[1]) for table in tables for row in connection.execute(f'PRAGMA table_info("{table}")')}
    assert on_postgresql == on_sqlite


def test_an_unreachable_postgresql_is_explained_without_its_password(postgres):
    closed_port = free_port()
    url = f"postgresql+asyncpg://app:hunter2@127.0.0.1:{closed_port}/chats"

    with pytest.raises(ChatStoreError) as refused:
        prepare_store(url)

    message = str(refused.value)
    assert "hunter2" not in message
    assert f"127.0.0.1:{closed_port}/chats" in message and "DATABASE_URL" in message


async def test_an_attachment_saved_before_its_chat_is_kept_on_postgresql(postgres, tmp_path):
    # Chainlit saves a first message's attachments while another task creates the chat.
    url = asyncpg_url(postgres, "attachment_first")
    prepare_store(url)
    store = ChatDataLayer(url, LocalFileStorage(tmp_path / "elements"))
    init_http_context(thread_id="a-new-chat")
    attachment = cl.Text(name="notes.md", content="The launch is in March.", for_id="its-message")

    await store.create_element(attachment)

    assert postgres.sql('SELECT "name", "threadId" FROM elements', "attachment_first").split() == [
        "notes.md|a-new-chat"
    ]
    await store.engine.dispose()


async def test_a_sqlite_store_writes_ahead_to_a_log(tmp_path):
    url = sqlite_url(tmp_path / "chats.sqlite3")
    prepare_store(url)
    store = ChatDataLayer(url, LocalFileStorage(tmp_path / "elements"))

    await store.update_thread("a-chat")
    await store.engine.dispose()

    with sqlite3.connect(tmp_path / "chats.sqlite3") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def owned_chat(store: ChatDataLayer, thread_id: str) -> None:
    user = await store.create_user(cl.User(identifier="alice"))
    assert user is not None
    await store.update_thread(thread_id, name="A chat", user_id=user.id)


async def test_the_side_elements_of_one_answer_are_saved_in_one_transaction(tmp_path):
    url = sqlite_url(tmp_path / "chats.sqlite3")
    prepare_store(url)
    storage = LocalFileStorage(tmp_path / "elements")
    store = ChatDataLayer(url, storage)
    init_http_context(thread_id="a-chat")
    await owned_chat(store, "a-chat")
    transactions = []
    event.listen(store.engine.sync_engine, "begin", transactions.append)
    passages = [cl.Text(name=f"[{n}]", content=f"Passage {n}.", for_id="the-answer") for n in range(1, 9)]

    await asyncio.gather(*(store.create_element(passage) for passage in passages))

    assert len(transactions) == 1
    rows = await store.execute_sql('SELECT "name", "objectKey" FROM elements ORDER BY "name"', {})
    assert [row["name"] for row in rows] == [f"[{n}]" for n in range(1, 9)]
    first = storage.stored(rows[0]["objectKey"])
    assert first is not None and first.path.read_text() == "Passage 1."
    await store.engine.dispose()


async def test_a_chats_owner_is_read_from_the_database_at_most_once_per_process(tmp_path):
    url = sqlite_url(tmp_path / "chats.sqlite3")
    prepare_store(url)
    naming = ChatDataLayer(url, LocalFileStorage(tmp_path / "elements"))
    await owned_chat(naming, "a-chat")
    other = ChatDataLayer(url, LocalFileStorage(tmp_path / "elements"))
    init_http_context(thread_id="a-chat")
    owner_reads = {naming: 0, other: 0}
    for store in owner_reads:

        def count(*args: object, store: ChatDataLayer = store) -> None:
            owner_reads[store] += 'SELECT "userId" FROM threads' in str(args[2])

        event.listen(store.engine.sync_engine, "before_cursor_execute", count)

    for store in owner_reads:
        for answer in range(3):
            await store.create_element(cl.Text(name="timings", content="1.2 s", for_id=f"answer-{answer}"))

    assert owner_reads == {naming: 0, other: 1}  # the process that named the chat knows its owner
    for store in owner_reads:
        await store.engine.dispose()


async def test_waiting_for_a_chats_saves_covers_writes_begun_in_tasks_nobody_waits_for(tmp_path):
    url = sqlite_url(tmp_path / "chats.sqlite3")
    prepare_store(url)
    store = ChatDataLayer(url, LocalFileStorage(tmp_path / "elements"))
    init_http_context(thread_id="a-chat")
    await owned_chat(store, "a-chat")
    # As Chainlit saves each message: in a task of its own, never awaited.
    writes = [
        asyncio.create_task(
            store.create_step(
                {
                    "id": f"answer-{n}",
                    "threadId": "a-chat",
                    "name": "Assistant",
                    "type": "assistant_message",
                    "output": f"Answer {n}.",
                    "createdAt": f"2026-12-07T10:00:0{n}Z",
                    "streaming": False,
                    "waitForAnswer": False,
                    "isError": False,
                }
            )
        )
        for n in range(5)
    ]

    await store.saved("a-chat")

    assert all(write.done() for write in writes)
    rows = await store.execute_sql('SELECT "output" FROM steps ORDER BY "createdAt"', {})
    assert [row["output"] for row in rows] == [f"Answer {n}." for n in range(5)]
    await store.engine.dispose()
