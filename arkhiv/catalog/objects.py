"""Archived objects in the catalog: objects, versions, files, replicas."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from arkhiv.catalog.tables import (
    agents,
    files,
    objects,
    replicas,
    stores,
    version_files,
    versions,
)


def count_by_status(conn: Connection) -> dict[str, int]:
    query = select(objects.c.status, func.count()).group_by(objects.c.status)
    return {status: count for status, count in conn.execute(query)}


def create_object(
    conn: Connection,
    object_id: str,
    description: dict[str, Any],
    at: datetime,
    status: str = "ingesting",
) -> None:
    conn.execute(
        insert(objects).values(
            id=object_id,
            title=description.get("title") or "",
            object_type=description.get("object_type") or "",
            status=status,
            head_version=0,
            description=description,
            created_at=at,
            updated_at=at,
        )
    )


def get_object(conn: Connection, object_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(objects).where(objects.c.id == object_id)).first()
    return dict(row._mapping) if row else None


# The public record's text fields a search looks in (not its provenance entries, which name
# the capture's files).
SEARCHED_FIELDS = (
    "description",
    "type_detail",
    "place_name",
    "period",
    "inventory_number",
    "contributor",
    "organization",
    "condition_note",
)
SUMMARY = (
    objects.c.id,
    objects.c.title,
    objects.c.object_type,
    objects.c.status,
    objects.c.head_version,
    objects.c.updated_at,
)


def list_objects(conn: Connection, status: str | None = None, limit: int = 100) -> list[dict]:
    query = select(*SUMMARY).order_by(objects.c.updated_at.desc(), objects.c.id).limit(limit)
    if status:
        query = query.where(objects.c.status == status)
    return [dict(row._mapping) for row in conn.execute(query)]


def search_objects(
    conn: Connection,
    *,
    text: str | None = None,
    object_type: str | None = None,
    country: str | None = None,
    dated_from: str | None = None,
    dated_to: str | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    status: str | None = None,
    include_withdrawn: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict]:
    """Archived objects (with a version) matching every filter given, most recently changed
    first. `text` is looked for in the title and the record's text fields (case does not
    matter); `dated_from`/`dated_to` (years or ISO dates) keep objects whose dating overlaps
    them (compared as text: years of four digits, CE; a year or month as an upper bound
    includes all of it). `bbox` (west, south, east, north in degrees; west > east crosses the
    antimeridian) keeps objects whose public grid cell meets the box: a region on the map."""
    record = objects.c.description
    start = record["date_start"].as_string()
    end = func.coalesce(record["date_end"].as_string(), start)
    query = (
        select(
            *SUMMARY,
            record["country"].as_string().label("country"),
            record["place_name"].as_string().label("place_name"),
            record["period"].as_string().label("period"),
            start.label("date_start"),
            record["date_end"].as_string().label("date_end"),
            record["public_location"].label("public_location"),  # the coarse cell only
        )
        .where(objects.c.head_version > 0)
        .order_by(objects.c.updated_at.desc(), objects.c.id)
        .limit(limit)
        .offset(offset)
    )
    if text:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        fields = [record[name].as_string() for name in SEARCHED_FIELDS]
        query = query.where(
            or_(
                objects.c.title.ilike(pattern, escape="\\"),
                *(field.ilike(pattern, escape="\\") for field in fields),
            )
        )
    if object_type:
        query = query.where(objects.c.object_type == object_type)
    if country:
        query = query.where(record["country"].as_string() == country.upper())
    if dated_from:
        query = query.where(end >= dated_from)
    if dated_to:
        query = query.where(start <= _end_of(dated_to))
    if bbox:
        west, south, east, north = bbox
        cell = {
            side: record[("public_location", side)].as_float()
            for side in ("south", "north", "west", "east")
        }
        query = query.where(cell["south"] <= north, cell["north"] >= south)
        if west <= east:
            query = query.where(cell["west"] <= east, cell["east"] >= west)
        else:
            query = query.where(or_(cell["west"] <= east, cell["east"] >= west))
    if status:
        query = query.where(objects.c.status == status)
    if not include_withdrawn:
        query = query.where(objects.c.status != "withdrawn")
    return [dict(row._mapping) for row in conn.execute(query)]


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """ "west,south,east,north" in degrees (as maps give their bounds); ValueError says what is
    wrong. Longitudes beyond ±180 (a map panned round the world) are wrapped."""
    if not text:
        return None
    parts = text.split(",")
    try:
        west, south, east, north = (float(part) for part in parts)
    except ValueError:
        raise ValueError("bbox: give four numbers, west,south,east,north in degrees") from None
    if not all(math.isfinite(value) for value in (west, south, east, north)):
        raise ValueError("bbox: the numbers must be finite")
    if not (-90 <= south <= north <= 90):
        raise ValueError("bbox: latitudes must be -90..90 with south <= north")
    if east - west >= 360:
        return (-180.0, south, 180.0, north)
    return (_wrap(west), south, _wrap(east), north)


def _wrap(longitude: float) -> float:
    wrapped = (longitude + 180) % 360 - 180
    return 180.0 if wrapped == -180 and longitude > 0 else wrapped


def _end_of(bound: str) -> str:
    """The last day a year ("1900") or month ("1900-05") bound stands for, so that an object
    dated within it is not left out ("1900-05-01" sorts after "1900")."""
    if len(bound) == 4:
        return bound + "-12-31"
    if len(bound) == 7:
        return bound + "-31"
    return bound


def set_head(
    conn: Connection,
    object_id: str,
    *,
    expected_head: int,
    head: int,
    description: dict[str, Any],
    at: datetime,
) -> bool:
    """Move the head from `expected_head` to `head`; False when another writer moved it. The
    object's creation time is its first version's."""
    created = {"created_at": at} if head == 1 else {}
    changed = conn.execute(
        update(objects)
        .where(objects.c.id == object_id, objects.c.head_version == expected_head)
        .values(
            **created,
            head_version=head,
            description=description,
            title=description.get("title") or "",
            object_type=description.get("object_type") or "",
            updated_at=at,
        )
    )
    return changed.rowcount == 1


def set_status(conn: Connection, object_id: str, status: str) -> None:
    conn.execute(update(objects).where(objects.c.id == object_id).values(status=status))


def add_version(
    conn: Connection,
    object_id: str,
    number: int,
    message: str,
    agent_id: int,
    created_at: datetime,
    inventory_sha512: str,
) -> int:
    return conn.execute(
        insert(versions)
        .values(
            object_id=object_id,
            number=number,
            message=message,
            agent_id=agent_id,
            created_at=created_at,
            inventory_sha512=inventory_sha512,
        )
        .returning(versions.c.id)
    ).scalar_one()


def add_file(conn: Connection, object_id: str, **values: Any) -> int:
    return conn.execute(
        insert(files).values(object_id=object_id, **values).returning(files.c.id)
    ).scalar_one()


def file_ids(conn: Connection, object_id: str) -> dict[str, int]:
    """content path -> file id."""
    query = select(files.c.content_path, files.c.id).where(files.c.object_id == object_id)
    return dict(conn.execute(query).all())


def files_of(conn: Connection, object_id: str) -> dict[str, dict[str, Any]]:
    """content path -> file row, for every content file of the object."""
    query = select(files).where(files.c.object_id == object_id)
    return {row.content_path: dict(row._mapping) for row in conn.execute(query)}


def add_version_files(conn: Connection, version_id: int, state: dict[str, int]) -> None:
    if state:
        conn.execute(
            insert(version_files),
            [{"version_id": version_id, "logical_path": p, "file_id": f} for p, f in state.items()],
        )


def versions_of(conn: Connection, object_id: str) -> list[dict[str, Any]]:
    query = (
        select(
            versions,
            agents.c.agent_type.label("user_type"),
            agents.c.name.label("user_name"),
            agents.c.identifier.label("user_address"),
        )
        .join(agents, agents.c.id == versions.c.agent_id, isouter=True)
        .where(versions.c.object_id == object_id)
        .order_by(versions.c.number)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def version_state(conn: Connection, object_id: str, number: int) -> dict[str, dict[str, Any]]:
    """logical path -> file row in one version."""
    query = (
        select(version_files.c.logical_path, files)
        .join(files, files.c.id == version_files.c.file_id)
        .join(versions, versions.c.id == version_files.c.version_id)
        .where(versions.c.object_id == object_id, versions.c.number == number)
        .order_by(version_files.c.logical_path)
    )
    return {row.logical_path: dict(row._mapping) for row in conn.execute(query)}


def store_ids(conn: Connection) -> dict[str, int]:
    return dict(conn.execute(select(stores.c.name, stores.c.id)).all())


def set_replica(
    conn: Connection,
    file_id: int,
    store_id: int,
    status: str,
    verified_at: datetime | None,
) -> None:
    found = conn.execute(
        select(replicas.c.id).where(replicas.c.file_id == file_id, replicas.c.store_id == store_id)
    ).scalar()
    values = {"status": status}
    if verified_at is not None:
        values["verified_at"] = verified_at
    if found is None:
        conn.execute(
            insert(replicas).values(
                file_id=file_id, store_id=store_id, verified_at=verified_at, status=status
            )
        )
    else:
        conn.execute(update(replicas).where(replicas.c.id == found).values(**values))


def replicas_of(conn: Connection, object_id: str) -> list[dict[str, Any]]:
    """One row per replica of the object's files: content path, store, region, status."""
    query = (
        select(
            files.c.content_path,
            stores.c.name.label("store"),
            stores.c.region,
            replicas.c.status,
            replicas.c.verified_at,
            replicas.c.last_audit_at,
        )
        .join(files, files.c.id == replicas.c.file_id)
        .join(stores, stores.c.id == replicas.c.store_id)
        .where(files.c.object_id == object_id)
        .order_by(files.c.content_path, stores.c.name)
    )
    return [dict(row._mapping) for row in conn.execute(query)]
