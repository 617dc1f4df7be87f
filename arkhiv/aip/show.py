"""`arkhiv show ID`: one object as the catalog knows it — versions, the head version's files with
formats and digests, every PREMIS event, and where each copy is.

The document holds only what the AIPs on the stores also hold, so a catalog rebuilt from the
stores shows the same document (tests compare them byte for byte). Catalog row numbers, and the
times of audits that happen outside versions, stay out.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection

from arkhiv.catalog import events as catalog_events
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.tables import sealed_locations, submissions
from arkhiv.metadata.premis_vocabulary import label_of


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


def object_document(conn: Connection, object_id: str) -> dict[str, Any] | None:
    row = catalog_objects.get_object(conn, object_id)
    if row is None:
        return None
    versions = catalog_objects.versions_of(conn, object_id)
    head = catalog_objects.version_state(conn, object_id, row["head_version"])
    replica_rows = catalog_objects.replicas_of(conn, object_id)
    by_file: dict[str, dict[str, str]] = {}
    per_store: dict[str, dict[str, Any]] = {}
    for replica in replica_rows:
        by_file.setdefault(replica["content_path"], {})[replica["store"]] = replica["status"]
        summary = per_store.setdefault(
            replica["store"], {"region": replica["region"], "files": 0, "by_status": {}}
        )
        summary["files"] += 1
        summary["by_status"][replica["status"]] = summary["by_status"].get(replica["status"], 0) + 1
    files = [
        {
            "logical_path": logical,
            "content_path": file["content_path"],
            "role": file["role"],
            "size": file["size"],
            "digests": {
                "sha512": file["sha512"],
                **({"sha256": file["sha256"]} if file["sha256"] else {}),
                **(file["fixity"] or {}),
            },
            "format": {
                "puid": file["puid"],
                "mime_type": file["mime_type"],
                "name": file["format_name"],
                "version": file["format_version"],
                "basis": file["format_basis"],
            },
            "replicas": by_file.get(file["content_path"], {}),
        }
        for logical, file in head.items()
    ]
    events = [
        {
            "id": event["id"],
            "type": event["event_type"],
            "label": label_of(event["event_type"]),
            "occurred_at": _iso(event["occurred_at"]),
            "outcome": event["outcome"],
            "detail": event["detail"],
            "version": event["version_number"],
            "agents": event["agents"],
        }
        for event in catalog_events.events_for_object(conn, object_id)
    ]
    submission = conn.execute(
        submissions.select().where(submissions.c.object_id == object_id)
    ).first()
    sealed = conn.execute(
        sealed_locations.select().where(sealed_locations.c.object_id == object_id)
    ).all()
    return {
        "id": row["id"],
        "title": row["title"],
        "object_type": row["object_type"],
        "status": row["status"],
        "head_version": row["head_version"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        # Sorted: JSON columns do not keep key order on every database.
        "description": json.loads(json.dumps(row["description"], sort_keys=True)),
        "submission": submission.id if submission else None,
        "sealed_locations": [
            {"source": s.source_path, "kind": s.kind, "key_id": s.key_id}
            for s in sorted(sealed, key=lambda s: (s.source_path, s.kind))
        ],
        "versions": [
            {
                "number": version["number"],
                "created_at": _iso(version["created_at"]),
                "message": version["message"],
                "user": {"name": version["user_name"], "address": version["user_address"]},
                "inventory_sha512": version["inventory_sha512"],
            }
            for version in versions
        ],
        "files": files,
        "stores": per_store,
        "events": events,
    }
