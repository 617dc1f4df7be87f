"""The stores known to the catalog, kept in step with the configuration."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, insert, select, update

from arkhiv.catalog.database import now
from arkhiv.catalog.tables import stores
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
