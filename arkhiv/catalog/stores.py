"""The stores known to the catalog, kept in step with the configuration."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select, update

from arkhiv.catalog.database import now
from arkhiv.catalog.tables import files, replicas, stores
from arkhiv.config import LocalStoreSettings, StoreSettings


def store_location(store: StoreSettings) -> str:
    if isinstance(store, LocalStoreSettings):
        return str(store.path)
    return f"s3://{store.bucket}/{store.prefix}".rstrip("/")


def sync_stores(conn: Connection, configured: Sequence[StoreSettings]) -> None:
    """Add new stores, update changed labels, mark stores gone from the configuration inactive
    (their replica rows stay: a store is never forgotten while it may hold copies)."""
    at = now(conn)
    existing = {row.name: row for row in conn.execute(select(stores))}
    for store in configured:
        values = {
            "kind": store.kind,
            "location": store_location(store),
            "region": store.region,
            "jurisdiction": store.jurisdiction,
            "active": True,
        }
        row = existing.get(store.name)
        if row is None:
            conn.execute(
                insert(stores).values(name=store.name, created_at=at, updated_at=at, **values)
            )
        elif any(getattr(row, key) != value for key, value in values.items()):
            conn.execute(
                update(stores).where(stores.c.name == store.name).values(updated_at=at, **values)
            )
    gone = set(existing) - {store.name for store in configured}
    if gone:
        conn.execute(
            update(stores)
            .where(stores.c.name.in_(sorted(gone)), stores.c.active.is_(True))
            .values(active=False, updated_at=at)
        )


def list_stores(conn: Connection) -> list[dict]:
    return [dict(row._mapping) for row in conn.execute(select(stores).order_by(stores.c.name))]


def replica_summary(conn: Connection) -> dict[str, dict]:
    """Per store: replicas by status, bytes held, and the oldest and latest audit."""
    rows = conn.execute(
        select(
            stores.c.name,
            replicas.c.status,
            func.count(),
            func.coalesce(func.sum(files.c.size), 0),
            func.min(replicas.c.last_audit_at),
            func.max(replicas.c.last_audit_at),
            func.count(replicas.c.last_audit_at),
        )
        .join(replicas, replicas.c.store_id == stores.c.id)
        .join(files, files.c.id == replicas.c.file_id)
        .group_by(stores.c.name, replicas.c.status)
    )
    summary: dict[str, dict] = {}
    for name, status, count, size, oldest, latest, audited in rows:
        entry = summary.setdefault(name, empty_holdings())
        entry["replicas"] += count
        entry["bytes"] += int(size)
        entry["by_status"][status] = count
        entry["never_audited"] += count - audited
        if oldest is not None and (entry["oldest_audit"] is None or oldest < entry["oldest_audit"]):
            entry["oldest_audit"] = oldest
        if latest is not None and (entry["latest_audit"] is None or latest > entry["latest_audit"]):
            entry["latest_audit"] = latest
    return summary


def empty_holdings() -> dict:
    return {
        "replicas": 0,
        "bytes": 0,
        "by_status": {},
        "never_audited": 0,
        "oldest_audit": None,
        "latest_audit": None,
    }
