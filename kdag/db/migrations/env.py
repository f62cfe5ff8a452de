"""Alembic's entry point: migrate the connection that `kdag.db.migrate` hands us."""

from alembic import context

from kdag.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through kdag.db.migrate(engine)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
