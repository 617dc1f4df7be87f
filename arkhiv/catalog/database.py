"""Engines and transactions for both catalogs: embedded SQLite (WAL, foreign keys) and
PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, func, make_url, select
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from arkhiv.errors import CatalogUnavailable, ConfigError

_BEGIN_OPTION = "arkhiv_sqlite_begin"


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def create_catalog_engine(url: str, echo: bool = False) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"catalog.url: not a database URL: {url!r}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"catalog.url: unsupported database {parsed.get_backend_name()!r} "
            "(use sqlite:/// or postgresql+psycopg://)"
        )
    try:
        if parsed.get_backend_name() == "sqlite":
            _private_sqlite_file(parsed.database)
            engine = create_engine(parsed, echo=echo, connect_args={"timeout": 60})
            _configure_sqlite(engine)
        else:
            engine = create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=5)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"catalog.url: the driver for {parsed.drivername!r} is not installed ({exc}); "
            "install arkhiv[postgres] for PostgreSQL"
        ) from None
    return engine


def _private_sqlite_file(database: str | None) -> None:
    """The catalog holds password and session hashes: its file is its owner's alone. SQLite
    gives its -wal and -shm files the database file's mode, so making it first is enough."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    try:
        if not path.exists():
            if path.parent.is_dir():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if each.exists() and each.stat().st_mode & 0o077:
                    each.chmod(0o600)
    except OSError:
        pass  # SQLite's own error, when it opens the file, says what is wrong


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control from pysqlite so that BEGIN IMMEDIATE is possible.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=60000")
        _switch_to_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that reads and then writes
        # fails with SQLITE_BUSY instead of waiting when another writer got there first.
        conn.exec_driver_sql("BEGIN " + conn.get_execution_options().get(_BEGIN_OPTION, ""))


def _switch_to_wal(cursor, patience_s: float = 60.0) -> None:
    # Two connections converting a new catalog at once both hold a shared lock and both want
    # an exclusive one; SQLite answers one of them "database is locked" at once, without
    # waiting on the busy timeout, so that one tries again.
    deadline = time.monotonic() + patience_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with _connect(engine) as conn:
        conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    with _connect(engine) as conn, conn.begin():
        yield conn


@contextmanager
def _connect(engine: Engine) -> Iterator[Connection]:
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise CatalogUnavailable(
            f"cannot open the catalog {redact(str(engine.url))}: {reason}"
        ) from None
    with conn:
        yield conn


def now(conn: Connection) -> datetime:
    """The catalog's clock: on PostgreSQL the server's, so that leases held by workers on
    different machines are compared on one clock."""
    if conn.dialect.name == "postgresql":
        return conn.execute(select(func.now())).scalar_one().astimezone(UTC)
    return datetime.now(UTC)
