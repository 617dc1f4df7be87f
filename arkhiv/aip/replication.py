"""Replication catch-up: copy what a store lacks of an object from stores holding good copies,
until every file has verified replicas meeting the preservation policy.

A store lacks something when the catalog has no verified replica of a file there (it was down
when the version was written, or was emptied since). Each file is copied from a store whose
replica is verified and counted only once verified on the target against the inventory (see
`placement.put_verified`); a copy that does not match means the source was bad, and the next
source is tried (a bad copy is never counted). The OCFL control files follow the content, the
root inventory last, so the target shows the object complete only when it is.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arkhiv.aip.events import PendingEvent
from arkhiv.aip.ocfl import (
    INVENTORY,
    OBJECT_DECLARATION,
    SIDECAR,
    OcflError,
    version_name,
)
from arkhiv.aip.placement import (
    PlacementError,
    ensure_storage_root,
    object_key,
    put_verified,
    read_bytes,
    read_inventory,
    stored_problem,
    write_journal,
)
from arkhiv.aip.preservation import object_lease, preservation_status
from arkhiv.archive import Archive
from arkhiv.catalog import leases
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading, writing
from arkhiv.errors import ArkhivError
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.storage.base import Store, StoreError


class ReplicationIncomplete(ArkhivError):
    """The object still falls short of the policy; the job is retried with back-off."""


@dataclass
class StoreOutcome:
    store: str
    copied: list[str] = field(default_factory=list)
    problem: str | None = None


def replicate_object(
    archive: Archive, object_id: str, holder: str, *, strict: bool = True
) -> dict[str, Any]:
    """Bring every store's copy of the object up to the catalog's head. Returns what was done;
    when `strict`, raises ReplicationIncomplete if the policy is still not met afterwards."""
    try:
        with leases.holding(
            archive.engine, object_lease(object_id), holder, archive.settings.jobs.lease_seconds
        ):
            outcomes, status = _replicate(archive, object_id)
    except leases.LeaseLost:
        raise ReplicationIncomplete(f"{object_id} is being changed by another worker") from None
    report = {
        "object": object_id,
        "status": status,
        "stores": {o.store: {"copied": len(o.copied), "problem": o.problem} for o in outcomes},
    }
    if strict and status != "preserved":
        problems = "; ".join(f"{o.store}: {o.problem}" for o in outcomes if o.problem)
        raise ReplicationIncomplete(
            f"{object_id} is still {status}: {problems or 'too few copies'}"
        )
    return report


def _replicate(archive: Archive, object_id: str) -> tuple[list[StoreOutcome], str]:
    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
        if row is None:
            raise ArkhivError(f"no object {object_id}")
        files = catalog_objects.files_of(conn, object_id)
        replicas = catalog_objects.replicas_of(conn, object_id)
    head = row["head_version"]
    verified: dict[str, set[str]] = {}
    for replica in replicas:
        if replica["status"] == "verified":
            verified.setdefault(replica["store"], set()).add(replica["content_path"])
    outcomes = []
    for name, store in archive.stores.items():
        lacking = sorted(set(files) - verified.get(name, set()))
        if not lacking:
            continue
        outcome = StoreOutcome(name)
        sources = [archive.stores[other] for other in verified if other != name]
        try:
            _catch_up(object_id, head, files, lacking, store, sources, verified, outcome)
        except (StoreError, OSError, OcflError, PlacementError) as exc:
            outcome.problem = outcome.problem or str(exc)
        outcomes.append(outcome)
        _record(archive, object_id, head, outcome)
    with writing(archive.engine) as conn:
        status = preservation_status(conn, archive, object_id)
        catalog_objects.set_status(conn, object_id, status)
    return outcomes, status


def _catch_up(
    object_id: str,
    head: int,
    files: dict[str, dict[str, Any]],
    lacking: list[str],
    target: Store,
    sources: list[Store],
    verified: dict[str, set[str]],
    outcome: StoreOutcome,
) -> None:
    if not sources:
        outcome.problem = "no store holds a verified copy to copy from"
        return
    ensure_storage_root(target)
    for content_path in lacking:
        expected = files[content_path]
        key = object_key(object_id, content_path)
        if _matches(target, key, expected):  # there after all (a crash before the catalog knew)
            outcome.copied.append(content_path)
            continue
        for source in _holding(sources, verified, content_path):
            try:
                with source.open(key) as stream:
                    problem = put_verified(target, key, stream, expected, expected["size"])
            except (StoreError, OSError):
                continue
            if problem is None:
                outcome.copied.append(content_path)
                break
        else:
            outcome.problem = f"{content_path}: no good source could be copied"
            return
    current = read_inventory(target, object_id)
    held = current.head if current else 0
    if held >= head:
        return
    source = _source_of_head(sources, object_id, head)
    control = []
    for number in range(held + 1, head + 1):
        version = version_name(number)
        control += [f"{version}/{INVENTORY}", f"{version}/{SIDECAR}"]
    if held == 0:
        control.append(OBJECT_DECLARATION)
    control += [SIDECAR, INVENTORY]  # the root inventory last
    for relative in control:
        data = read_bytes(source, object_key(object_id, relative))
        target.put(object_key(object_id, relative), io.BytesIO(data))


def _holding(sources: list[Store], verified: dict[str, set[str]], path: str) -> Iterator[Store]:
    return (source for source in sources if path in verified.get(source.name, set()))


def _matches(store: Store, key: str, expected: dict[str, Any]) -> bool:
    try:
        found = store.head(key)
    except (StoreError, OSError):
        return False
    if found is None or found.size != expected["size"]:
        return False
    return stored_problem(store, key, expected, expected["size"]) is None


def _source_of_head(sources: list[Store], object_id: str, head: int) -> Store:
    for source in sources:
        try:
            inventory = read_inventory(source, object_id)
        except (StoreError, OSError, OcflError, PlacementError):
            continue
        if inventory is not None and inventory.head == head:
            return source
    raise PlacementError(f"no store holds v{head} of {object_id} to copy its inventories from")


def _record(archive: Archive, object_id: str, head: int, outcome: StoreOutcome) -> None:
    """The catalog's replicas and a PREMIS replication event (also in every store's journal)."""
    at = datetime.now(UTC)
    success = outcome.problem is None
    event = PendingEvent(
        str(uuid.uuid4()),
        EventType.REPLICATION,
        at,
        "success" if success else "failure",
        f"store {outcome.store} brought up to v{head}: {len(outcome.copied)} file(s) copied from "
        "verified replicas, each verified against the inventory on arrival"
        if success
        else f"store {outcome.store} not brought up to v{head}: {outcome.problem}",
        {"store": outcome.store, "files": outcome.copied},
    )
    with writing(archive.engine) as conn:
        store_ids = catalog_objects.store_ids(conn)
        ids = catalog_objects.file_ids(conn, object_id)
        for content_path in outcome.copied:
            catalog_objects.set_replica(
                conn, ids[content_path], store_ids[outcome.store], "verified", at
            )
        event.record(conn, object_id, head)
    write_journal(
        list(archive.stores.values()),
        object_id,
        at,
        event.id,
        {"version": head, "events": [event.journal_entry()]},
    )
