"""Named leases: one holder at a time across every machine sharing the catalog
(e.g. the scheduler's leadership). A lease not renewed before it expires passes to the next
asker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from arkhiv.catalog.database import now, reading, writing
from arkhiv.catalog.tables import leases


def acquire(conn: Connection, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease inside the caller's write transaction; True when `holder`
    holds it afterwards."""
    at = now(conn)
    expires = at + timedelta(seconds=seconds)
    renewed = conn.execute(
        update(leases)
        .where(leases.c.name == name)
        .where((leases.c.holder == holder) | (leases.c.expires_at < at))
        .values(holder=holder, expires_at=expires)
    )
    if renewed.rowcount == 1:
        return True
    if conn.execute(select(leases.c.name).where(leases.c.name == name)).first():
        return False
    try:
        with conn.begin_nested():
            conn.execute(
                insert(leases).values(name=name, holder=holder, acquired_at=at, expires_at=expires)
            )
    except IntegrityError:  # another machine created it between our two statements
        return False
    return True


def release(engine: Engine, name: str, holder: str) -> None:
    with writing(engine) as conn:
        conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))


def holder(engine: Engine, name: str) -> str | None:
    with reading(engine) as conn:
        row = conn.execute(select(leases).where(leases.c.name == name)).first()
        return row.holder if row and row.expires_at > now(conn) else None


class LeaseLost(Exception):
    """Another holder took the lease (ours expired unrenewed)."""


@contextmanager
def holding(engine: Engine, name: str, holder: str, seconds: float) -> Iterator[threading.Event]:
    """Hold the lease for the block, renewed every third of `seconds` by a thread, released at
    the end. A holder that dies stops renewing, so the lease passes on after `seconds`, not
    never. Yields an Event set if the lease was lost meanwhile (check it before committing).
    Raises LeaseLost when someone else holds it."""
    with writing(engine) as conn:
        if not acquire(conn, name, holder, seconds):
            raise LeaseLost(f"{name} is held by another worker")
    lost = threading.Event()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            try:
                with writing(engine) as conn:
                    if not acquire(conn, name, holder, seconds):
                        lost.set()
                        return
            except Exception:  # a catalog hiccup: try again at the next beat
                continue

    thread = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()
        release(engine, name, holder)
