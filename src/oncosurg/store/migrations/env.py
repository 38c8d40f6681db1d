"""Alembic environment: runs on the connection handed over by :func:`oncosurg.store.engine.upgrade`."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from oncosurg.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # command-line alembic use
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
