"""An object's standing under the preservation policy, and the catch-up that restores it.
Light on imports: audits and replication use it without the metadata builders."""

from __future__ import annotations

from sqlalchemy import Connection

from arkhiv.archive import Archive
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.queue import enqueue


def object_lease(object_id: str) -> str:
    """The lease every writer of one object holds (a new version, a catch-up, a repair), renewed
    while it works (`catalog.leases.holding`), so a killed writer frees it within a lease."""
    return f"object:{object_id}"


REPLICATE_KIND = "aip.replicate"


def queue_replication(conn: Connection, archive: Archive, object_id: str) -> None:
    """Queue the catch-up of an object short of its copies (once while one is queued)."""
    enqueue(
        conn,
        "replicate",
        REPLICATE_KIND,
        {"object": object_id},
        unique_key=f"{REPLICATE_KIND}:{object_id}",
        max_attempts=archive.settings.jobs.max_attempts,
    )


def preservation_status(conn: Connection, archive: Archive, object_id: str) -> str:
    """The object's state under the preservation policy, from its replicas in the catalog."""
    copies: dict[str, list[str]] = {path: [] for path in catalog_objects.file_ids(conn, object_id)}
    for row in catalog_objects.replicas_of(conn, object_id):
        if row["status"] == "verified":
            copies[row["content_path"]].append(row["region"])
    return archive.settings.preservation.status_of(copies)
