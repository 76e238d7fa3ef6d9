"""Alembic's environment: always handed a live connection by `ivr.migrate`, never reads an ini file."""

from __future__ import annotations

from alembic import context

from ivr.storage import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
