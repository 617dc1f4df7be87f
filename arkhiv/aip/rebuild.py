"""`arkhiv rebuild-catalog`: the catalog is an index; the AIPs on the stores are the truth.

From the stores alone (one listing each) it restores, per object: the object and its
description (head version's description.json), every version (OCFL inventory: time, message,
user; the sha512 of each version's inventory), every content file with its digests (manifest
and fixity block) and format (each version's METS and PREMIS), the submission it came from and
its sealed locations (the archived ingest report and sealed-locations.json), every PREMIS event
(each version's premis.xml plus the stores' event journals), and the replicas: a file counts as
verified on a store when it is there at its size and the last replication or fixity check of it
there found it good; one the last audit found bad (mismatch, missing) stays so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select

from arkhiv.aip import description as descriptions
from arkhiv.aip.archiving import (
    METS_PATH,
    PREMIS_PATH,
    REPORT_PATH,
    SEALED_PATH,
    SOFTWARE_ADDRESS,
    SUBMISSION_RECORD,
    metadata_format,
    role_of,
)
from arkhiv.aip.ocfl import INVENTORY, SIDECAR, Inventory, OcflError, parse_sidecar
from arkhiv.aip.placement import (
    PlacementError,
    checked_inventory_at,
    journal_entries,
    object_roots,
    read_bytes,
)
from arkhiv.aip.preservation import preservation_status
from arkhiv.archive import Archive
from arkhiv.catalog import events as catalog_events
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import writing
from arkhiv.catalog.tables import objects, sealed_locations, submissions
from arkhiv.errors import ArkhivError
from arkhiv.metadata.mets import read_file_locations
from arkhiv.metadata.premis import read_agents, read_events, read_formats
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.storage.base import Store, StoreError

VERIFYING_EVENTS = {EventType.REPLICATION.uri, EventType.FIXITY_CHECK.uri}


@dataclass
class Holding:
    """One store's copy of one object."""

    store: str
    root: str  # the object root's key
    sizes: dict[str, int]  # object-relative path -> size
    inventory: Inventory


@dataclass(frozen=True)
class Verification:
    """A replication or fixity check on one store: the files a version added (`version`) or
    the files named were found good; those in `failed` were not (path -> outcome)."""

    store: str
    at: datetime
    version: int | None
    files: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()


@dataclass
class RebuildReport:
    objects: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"objects": self.objects, "problems": self.problems}


def rebuild_catalog(archive: Archive) -> RebuildReport:
    """Fill an empty catalog from the stores. ArkhivError if the catalog already has objects."""
    with writing(archive.engine) as conn:
        if conn.execute(select(func.count()).select_from(objects)).scalar():
            raise ArkhivError(
                "the catalog already holds objects; rebuild-catalog fills an empty one "
                "(move the old catalog aside first)"
            )
    report = RebuildReport()
    holdings: dict[str, list[Holding]] = {}
    journal: dict[str, dict[str, tuple[int | None, dict]]] = {}
    for store in archive.stores.values():
        try:
            roots = object_roots(store)
        except (StoreError, OSError) as exc:
            report.problems.append(f"{store.name}: cannot list: {exc}")
            continue
        for root, sizes in sorted(roots.items()):
            try:
                inventory = checked_inventory_at(store, root)
            except (StoreError, OSError, OcflError, PlacementError) as exc:
                report.problems.append(f"{store.name}:{root}: {exc}")
                continue
            holdings.setdefault(inventory.id, []).append(
                Holding(store.name, root, sizes, inventory)
            )
        try:
            for entry in journal_entries(store):
                for event in entry.get("events", []):
                    journal.setdefault(entry["object"], {})[event["id"]] = (
                        entry.get("version"),
                        event,
                    )
        except (StoreError, OSError, ValueError) as exc:
            report.problems.append(f"{store.name}: journal unreadable: {exc}")
    for object_id in sorted(holdings):
        try:
            _restore_object(archive, object_id, holdings[object_id], journal.get(object_id, {}))
            report.objects.append(object_id)
        except (StoreError, OSError, OcflError, PlacementError, ValueError, KeyError) as exc:
            report.problems.append(f"{object_id}: not restored: {type(exc).__name__}: {exc}")
    return report


class _Reader:
    """Reads an object's files from the stores holding its head, trying each in turn."""

    def __init__(self, stores: Mapping[str, Store], holdings: list[Holding]) -> None:
        self.stores = stores
        self.holdings = holdings

    def read(self, relative: str) -> bytes:
        problems = []
        for holding in self.holdings:
            if relative not in holding.sizes:
                continue
            try:
                return read_bytes(self.stores[holding.store], f"{holding.root}/{relative}")
            except (StoreError, OSError, PlacementError) as exc:
                problems.append(f"{holding.store}: {exc}")
        raise PlacementError(f"{relative}: no store could give it ({'; '.join(problems)})")

    def version_inventory_sha512(self, number: int) -> str:
        sidecar = self.read(f"v{number}/{SIDECAR}")
        digest = parse_sidecar(sidecar)
        if hashlib.sha512(self.read(f"v{number}/{INVENTORY}")).hexdigest() != digest:
            raise OcflError(f"v{number}/{INVENTORY} does not match its sidecar")
        return digest


def _restore_object(
    archive: Archive,
    object_id: str,
    holdings: list[Holding],
    journaled: Mapping[str, tuple[int | None, dict]],
) -> None:
    head = max(holding.inventory.head for holding in holdings)
    current = [holding for holding in holdings if holding.inventory.head == head]
    inventory = current[0].inventory
    reader = _Reader(archive.stores, current)

    def content(number: int, logical: str) -> bytes:
        digest = inventory.versions[number].logical_files()[logical]
        return reader.read(inventory.content_path_of(digest))

    record = descriptions.from_bytes(content(head, descriptions.FILE_NAME))
    formats: dict[str, tuple[Any, str | None]] = {}  # content path -> (Format, mime)
    events: dict[str, tuple[int, Any, dict[str, Any]]] = {}  # id -> (version, Event, agents)
    for number in sorted(inventory.versions):
        premis = content(number, PREMIS_PATH)
        locations = read_file_locations(content(number, METS_PATH))
        by_id = read_formats(premis)
        for identifier, (content_path, mime) in locations.items():
            if content_path not in formats and identifier in by_id:
                formats[content_path] = (by_id[identifier], mime)
        agents = read_agents(premis)
        for event in read_events(premis):
            if event.id not in events:
                events[event.id] = (number, event, agents)

    first = inventory.versions[1]
    submission_record = None
    report_document = None
    if REPORT_PATH in first.logical_files():
        report_document = json.loads(content(1, REPORT_PATH))
        submission_record = report_document.pop(SUBMISSION_RECORD, None)
    sealed = json.loads(content(1, SEALED_PATH)) if SEALED_PATH in first.logical_files() else []

    digests_by_path = inventory.digests_by_content_path()
    with writing(archive.engine) as conn:
        catalog_objects.create_object(conn, object_id, record, first.created)
        if submission_record is not None:
            _restore_submission(conn, object_id, submission_record, report_document)
        for number in sorted(inventory.versions):
            version = inventory.versions[number]
            software = version.user.address == SOFTWARE_ADDRESS
            user_agent = catalog_events.ensure_agent(
                conn,
                "software" if software else "person",
                version.user.name,
                identifier=version.user.address,
            )
            version_row = catalog_objects.add_version(
                conn,
                object_id,
                number,
                version.message,
                user_agent,
                version.created,
                reader.version_inventory_sha512(number),
            )
            state = version.logical_files()
            for logical, digest in sorted(state.items()):
                content_path = inventory.content_path_of(digest)
                if content_path.startswith(f"v{number}/"):
                    _restore_file(
                        conn,
                        object_id,
                        digests_by_path[content_path],
                        content_path,
                        logical,
                        formats,
                        current,
                        version.created,
                    )
            ids = catalog_objects.file_ids(conn, object_id)
            catalog_objects.add_version_files(
                conn,
                version_row,
                {path: ids[inventory.content_path_of(digest)] for path, digest in state.items()},
            )
        catalog_objects.set_head(
            conn,
            object_id,
            expected_head=0,
            head=head,
            description=record,
            at=inventory.versions[head].created,
        )
        verified = _restore_events(conn, object_id, events, journaled, submission_record)
        _restore_replicas(conn, object_id, holdings, verified)
        for row in sealed:
            conn.execute(
                insert(sealed_locations).values(
                    submission_id=row["submission"],
                    object_id=object_id,
                    source_path=row["source"],
                    kind=row["kind"],
                    key_id=row["key_id"],
                    nonce=base64.b64decode(row["nonce"]),
                    ciphertext=base64.b64decode(row["ciphertext"]),
                    created_at=datetime.fromisoformat(row["created_at"]),
                )
            )
        catalog_objects.set_status(conn, object_id, preservation_status(conn, archive, object_id))


def _restore_submission(
    conn: Connection, object_id: str, record: Mapping[str, Any], report: Mapping[str, Any]
) -> None:
    files = report.get("files", [])
    conn.execute(
        insert(submissions).values(
            id=record["id"],
            status="archived",
            source_name=record["source_name"],
            submitted_by=record["submitted_by"],
            received_at=datetime.fromisoformat(record["received_at"]),
            finished_at=datetime.fromisoformat(record["finished_at"])
            if record.get("finished_at")
            else None,
            file_count=len(files),
            payload_bytes=sum(entry.get("size", 0) for entry in files),
            payload_fingerprint=record.get("payload_fingerprint"),
            summary=report.get("summary", ""),
            report=dict(report),
            public_location=report.get("public_location"),
            object_id=object_id,
        )
    )


def _restore_file(
    conn: Connection,
    object_id: str,
    digests: Mapping[str, str],
    content_path: str,
    logical: str,
    formats: Mapping[str, tuple[Any, str | None]],
    holdings: list[Holding],
    created: datetime,
) -> None:
    known = formats.get(content_path)
    if known is not None:
        fmt, mime = known
    else:
        fmt = metadata_format(logical)
        mime = fmt.mime_type
    size = next(h.sizes[content_path] for h in holdings if content_path in h.sizes)
    catalog_objects.add_file(
        conn,
        object_id,
        content_path=content_path,
        size=size,
        sha512=digests["sha512"],
        sha256=digests.get("sha256"),
        fixity={k: v for k, v in digests.items() if k not in ("sha512", "sha256")},
        puid=fmt.puid,
        mime_type=mime,
        format_name=fmt.name,
        format_version=fmt.version,
        format_basis=fmt.basis,
        role=role_of(logical),
        created_at=created,
    )


def _restore_events(
    conn: Connection,
    object_id: str,
    from_premis: Mapping[str, tuple[int, Any, dict[str, Any]]],
    journaled: Mapping[str, tuple[int | None, dict]],
    submission_record: Mapping[str, Any] | None,
) -> list[Verification]:
    """Insert every event; returns the verifications they record, in time order."""
    ingest_events = set(submission_record.get("events", [])) if submission_record else set()
    submission_id = submission_record["id"] if submission_record else None
    merged: dict[str, dict[str, Any]] = {}
    for event_id, (number, event, agents) in from_premis.items():
        detail = json.loads(event.outcome_detail) if event.outcome_detail else None
        merged[event_id] = {
            "type": event.type_uri,
            "occurred_at": event.date_time,
            "outcome": event.outcome,
            "detail": event.detail,
            "outcome_detail": detail,
            "version": (detail or {}).get("version", number),
            "agents": [
                {
                    "type": agents[agent].type,
                    "name": agents[agent].name,
                    "version": agents[agent].version,
                    "role": role,
                }
                for agent, role in event.agents
                if agent in agents
            ],
        }
    for event_id, (number, event) in journaled.items():
        merged[event_id] = {
            "type": event["type"],
            "occurred_at": datetime.fromisoformat(event["occurred_at"]),
            "outcome": event["outcome"],
            "detail": event["detail"],
            "outcome_detail": event.get("outcome_detail"),
            "version": number,
            "agents": event.get("agents", []),
        }
    verified: list[Verification] = []
    for event_id, event in sorted(merged.items(), key=lambda item: item[1]["occurred_at"]):
        agents = [
            (
                catalog_events.ensure_agent(conn, agent["type"], agent["name"], agent["version"]),
                agent["role"],
            )
            for agent in event["agents"]
        ]
        catalog_events.record_event(
            conn,
            event["type"],
            event["outcome"],
            event["detail"],
            occurred_at=event["occurred_at"],
            event_id=event_id,
            object_id=object_id,
            submission_id=submission_id if event_id in ingest_events else None,
            version_number=event["version"],
            outcome_detail=event["outcome_detail"],
            agents_by_role=agents,
        )
        detail = event["outcome_detail"] or {}
        # A failed version placement proves nothing; a failed catch-up or audit still names the
        # files it found good, and an audit the ones it found bad.
        if (
            event["type"] in VERIFYING_EVENTS
            and "store" in detail
            and (event["outcome"] == "success" or "files" in detail)
        ):
            verified.append(
                Verification(
                    detail["store"],
                    event["occurred_at"],
                    detail.get("version") if "files" not in detail else None,
                    tuple(detail.get("files", ())),
                    tuple(sorted((detail.get("failed") or {}).items())),
                )
            )
    return verified


def _restore_replicas(
    conn: Connection,
    object_id: str,
    holdings: list[Holding],
    verifications: list[Verification],
) -> None:
    store_ids = catalog_objects.store_ids(conn)
    held = {holding.store: holding for holding in holdings}
    files = catalog_objects.files_of(conn, object_id)
    # (store, content path) -> (when, status) of the last check
    latest: dict[tuple[str, str], tuple[datetime, str]] = {}
    for check in verifications:  # in time order: later ones win
        for content_path in files:
            if content_path in check.files or (
                check.version is not None and content_path.startswith(f"v{check.version}/")
            ):
                latest[(check.store, content_path)] = (check.at, "verified")
        for content_path, outcome in check.failed:
            if outcome != "unreadable":  # a store that was down proves nothing about its copy
                status = "missing" if outcome == "missing" else "mismatch"
                latest[(check.store, content_path)] = (check.at, status)
    stores_named = {check.store for check in verifications} | set(held)
    for store in sorted(stores_named):
        if store not in store_ids:
            continue  # a store no longer configured
        holding = held.get(store)
        for content_path, row in files.items():
            present = holding is not None and holding.sizes.get(content_path) == row["size"]
            when, last = latest.get((store, content_path), (None, "missing"))
            # A copy found good but no longer there at its size is missing now; a bad one stays bad.
            status = last if present or last != "verified" else "missing"
            catalog_objects.set_replica(
                conn, row["id"], store_ids[store], status, when if status == "verified" else None
            )
