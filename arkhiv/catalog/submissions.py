"""Submissions and their sealed locations in the catalog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, text, update

from arkhiv.catalog.database import now
from arkhiv.catalog.tables import sealed_locations, submissions

# A package counts as already in the archive once accepted (the AIP step archives it).
HELD_STATES = ("accepted", "archived")


def create(
    conn: Connection, submission_id: str, source_name: str, submitted_by: str, staging_path: str
) -> None:
    conn.execute(
        insert(submissions).values(
            id=submission_id,
            status="received",
            source_name=source_name,
            submitted_by=submitted_by,
            received_at=now(conn),
            staging_path=staging_path,
        )
    )


def update_fields(conn: Connection, submission_id: str, **values: Any) -> None:
    conn.execute(update(submissions).where(submissions.c.id == submission_id).values(**values))


def finish(conn: Connection, submission_id: str, status: str, **values: Any) -> None:
    update_fields(conn, submission_id, status=status, finished_at=now(conn), **values)


def finish_from(
    conn: Connection, submission_id: str, expected: str, status: str, **values: Any
) -> bool:
    """Record the outcome only if the submission is still in state `expected` (a second worker
    that ran the same job finds it changed and records nothing)."""
    changed = conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.status == expected)
        .values(status=status, finished_at=now(conn), **values)
    )
    return changed.rowcount == 1


def advance(
    conn: Connection, submission_id: str, expected: str, status: str, **values: Any
) -> bool:
    """Like finish_from, for a step after the outcome (accepted -> archived): the time the
    outcome was decided stays."""
    changed = conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.status == expected)
        .values(status=status, **values)
    )
    return changed.rowcount == 1


def get(conn: Connection, submission_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(submissions).where(submissions.c.id == submission_id)).first()
    return dict(row._mapping) if row else None


def find(conn: Connection, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(submissions).order_by(submissions.c.received_at.desc()).limit(limit)
    if status:
        query = query.where(submissions.c.status == status)
    return [dict(row._mapping) for row in conn.execute(query)]


def lock_fingerprint(conn: Connection, fingerprint: str) -> None:
    """Serialize recorders of the same payload until the transaction ends (SQLite's
    BEGIN IMMEDIATE already serializes every writer)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:fingerprint, 0))"),
            {"fingerprint": fingerprint},
        )


def holders_of(conn: Connection, fingerprint: str, other_than: str) -> list[dict[str, Any]]:
    """Earlier submissions with the same payload that the archive holds."""
    query = select(submissions.c.id, submissions.c.object_id, submissions.c.status).where(
        submissions.c.payload_fingerprint == fingerprint,
        submissions.c.status.in_(HELD_STATES),
        submissions.c.id != other_than,
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def add_sealed_location(
    conn: Connection,
    submission_id: str,
    source_path: str,
    kind: str,
    key_id: str,
    nonce: bytes,
    ciphertext: bytes,
) -> None:
    conn.execute(
        insert(sealed_locations).values(
            submission_id=submission_id,
            source_path=source_path,
            kind=kind,
            key_id=key_id,
            nonce=nonce,
            ciphertext=ciphertext,
            created_at=now(conn),
        )
    )


def sealed_locations_of(conn: Connection, submission_id: str) -> list[dict[str, Any]]:
    query = (
        select(sealed_locations)
        .where(sealed_locations.c.submission_id == submission_id)
        .order_by(sealed_locations.c.id)
    )
    return [dict(row._mapping) for row in conn.execute(query)]
