"""Alembic migrations, applied by `arkhiv init`, `arkhiv db upgrade` and at every start-up.

Several processes may start at once (a fleet of workers), so upgrades run under a lock:
a PostgreSQL advisory lock, or a file lock beside the SQLite catalog."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from arkhiv.catalog.database import _connect

MIGRATIONS = Path(__file__).with_name("migrations")
_ADVISORY_LOCK_ID = 0x61726B68  # "arkh"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@cache  # the scripts ship with the code: the head cannot change while the process runs
def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with _connect(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    with _connect(engine) as conn, _migration_lock(conn):
        command.upgrade(alembic_config(conn), revision)
        if conn.in_transaction():
            conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    with _connect(engine) as conn, _migration_lock(conn):
        command.downgrade(alembic_config(conn), revision)
        if conn.in_transaction():
            conn.commit()


def ensure_current(engine: Engine) -> bool:
    """Upgrade to head if needed; True when migrations ran."""
    if current_revision(engine) == head_revision():
        return False
    upgrade(engine)
    return True


@contextmanager
def _migration_lock(conn: Connection) -> Iterator[None]:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
        conn.commit()
        try:
            yield
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
            conn.commit()
        return
    database = conn.engine.url.database
    if not database or database == ":memory:":
        yield
        return
    lock_fd = os.open(database + ".migrate-lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(lock_fd, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
