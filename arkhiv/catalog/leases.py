"""Named leases: one holder at a time across every machine sharing the catalog
(e.g. the scheduler's leadership). A lease not renewed before it expires passes to the next
asker."""

from __future__ import annotations

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
