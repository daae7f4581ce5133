"""Alembic's entry point for the chat store: run by `web.store_schema.upgrade`, which passes the
connection in (there is no alembic.ini; the app's settings say where the database is)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
