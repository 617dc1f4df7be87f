"""The append-only audit log: who saw or did what (precise-location disclosures, sign-ins,
policy changes). Database triggers refuse UPDATE and DELETE; the hash chain shows tampering
done around them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, text

from arkhiv.catalog.database import now, reading
from arkhiv.catalog.tables import audit_log
from arkhiv.security.audit_chain import GENESIS, entry_hash, first_break

_CHAIN_LOCK_ID = 0x61756474  # "audt": one appender at a time keeps the chain linear


def append(
    conn: Connection,
    actor: str,
    action: str,
    target: str = "",
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append inside the caller's (write) transaction; returns the entry's sequence number."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _CHAIN_LOCK_ID})
    prev = conn.execute(
        select(audit_log.c.entry_hash).order_by(audit_log.c.seq.desc()).limit(1)
    ).scalar()
    at = now(conn)
    detail = dict(detail or {})
    digest = entry_hash(prev or GENESIS, at, actor, action, target, detail)
    return conn.execute(
        insert(audit_log)
        .values(
            at=at,
            actor=actor,
            action=action,
            target=target,
            detail=detail,
            prev_hash=prev or GENESIS,
            entry_hash=digest,
        )
        .returning(audit_log.c.seq)
    ).scalar_one()


def entries(conn: Connection, batch: int = 1000) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        rows = conn.execute(
            select(audit_log).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield dict(row._mapping)
        last = rows[-1].seq


def verify(engine: Engine) -> int | None:
    """None when the chain is intact, else the sequence number of the first bad entry."""
    with reading(engine) as conn:
        return first_break(entries(conn))
