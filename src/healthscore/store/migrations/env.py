"""Alembic environment of the operational store.

`healthscore.store.database.upgrade_schema` runs the migrations on a connection that it
passes in ``config.attributes["connection"]``, inside a transaction it holds, so no
alembic.ini is needed. For developer commands such as
``alembic revision --autogenerate``, set ``sqlalchemy.url`` in a local alembic.ini
whose ``script_location`` points at this folder.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from healthscore.store.schema import VERSION_TABLE, metadata


def run_migrations(connection: Connection) -> None:
    """Apply the pending migrations on `connection`."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_config() -> None:
    """Run on the given connection, or connect to ``sqlalchemy.url`` of the config."""
    if context.is_offline_mode():
        raise RuntimeError(
            "offline (--sql) migrations are not supported; run them against a database"
        )
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database for the migrations; set sqlalchemy.url in alembic.ini or open "
            "the store with healthscore.store.StateStore.open"
        )
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


run_from_config()
