"""Fixity audits: read replicas back from their stores, compare with the inventory's digests,
record each check, and repair what failed from a good copy.

One pass reads each file once and compares its size and its sha512 (OCFL's content digest, the
inventory's fixity of record; a second digest would only slow the pass) with the inventory;
files are spread over `workers` threads (hashlib and store reads release
the GIL, so two threads keep two cores busy). A store's `audit_bandwidth_mb_s` caps the rate at
which it is read (cloud egress costs money).

Per (object, store) one PREMIS fixity-check event records the outcome, in the catalog and in
every store's journal. A replica that is missing, short or mismatching is then replaced from a
replica whose bytes match the inventory (`arkhiv.aip.replication`, which hashes the source while
copying and never copies a bad one on); an object with a file left without any good copy is
*damaged*, and the report names the files. Each repaired replica is audited again at once (a
fixity-check event of its own) and counts as repaired only when that passes.

Before an original is handed out (dissemination), `audited_copy` audits its replicas, cheapest
store first, until one passes, and names that store: nobody downloads a copy nobody checked.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, and_, or_, select, update

from arkhiv.aip.events import PendingEvent
from arkhiv.aip.placement import object_key, write_journal
from arkhiv.aip.preservation import preservation_status, queue_replication
from arkhiv.aip.replication import replicate_object
from arkhiv.archive import Archive
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import files, objects, replicas, stores
from arkhiv.errors import ArkhivError
from arkhiv.fixity.digests import digest_file
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.storage.base import KeyNotFound, Store, StoreError

CHUNK = 1 << 20


@dataclass
class Check:
    object_id: str
    content_path: str
    store: str
    replica_id: int
    size: int
    sha512: str
    outcome: str = ""  # ok, missing, short, mismatch, unreadable
    detail: str = ""
    bytes_read: int = 0


@dataclass
class AuditReport:
    checks: list[Check] = field(default_factory=list)
    repaired: list[dict[str, str]] = field(default_factory=list)  # re-audited after the repair
    rechecks: list[Check] = field(default_factory=list)  # the audits after the repairs
    objects: dict[str, str] = field(default_factory=dict)  # object -> status after the audit
    damaged_files: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.outcome != "ok"]

    @property
    def clean(self) -> bool:
        """Nothing left damaged or at risk, and no replica that could not be read at all."""
        unreadable = any(check.outcome == "unreadable" for check in self.checks)
        return not unreadable and all(status == "preserved" for status in self.objects.values())

    def as_dict(self) -> dict[str, Any]:
        read = sum(check.bytes_read for check in self.checks)
        return {
            "checked": len(self.checks),
            "bytes_read": read,
            "seconds": round(self.seconds, 3),
            "failures": [asdict(check) for check in self.failures],
            "repaired": self.repaired,
            "rechecked": len(self.rechecks),
            "objects": self.objects,
            "damaged_files": self.damaged_files,
            "clean": self.clean,
        }


class _Throttle:
    """At most `rate` bytes a second across the threads reading one store."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.sent = 0

    def take(self, count: int) -> None:
        if not self.rate:
            return
        with self.lock:
            self.sent += count
            ahead = self.sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)

    @classmethod
    def of_store(cls, archive: Archive, name: str) -> _Throttle:
        """The store's `audit_bandwidth_mb_s` cap, shared by everything one audit reads there."""
        cap = archive.settings.store(name).audit_bandwidth_mb_s
        return cls(cap * 1e6 if cap else None)


def _read_local(path, check: Check) -> str:
    """sha512 of a file on a local disk, read into one reused buffer per thread."""
    digest = digest_file(path, ["sha512"])["sha512"]
    check.bytes_read = os.stat(path).st_size
    return digest


def _read_stream(
    store: Store, key: str, check: Check, throttle: _Throttle, sink: BinaryIO | None = None
) -> str:
    sha512 = hashlib.sha512()
    with store.open(key) as stream:
        while chunk := stream.read(CHUNK):
            throttle.take(len(chunk))
            sha512.update(chunk)
            check.bytes_read += len(chunk)
            if sink is not None:
                sink.write(chunk)
    return sha512.hexdigest()


def _verify(
    store: Store, check: Check, *, throttle: _Throttle, copy_to: Path | None = None
) -> Check:
    """Audit one replica (and copy it to `copy_to` on the way). A failure to write the copy is
    ours, not the replica's: it raises CopyFailed instead of counting against the store."""
    key = object_key(check.object_id, check.content_path)
    local_path = getattr(store, "local_path", None)
    sink = _CopySink(copy_to) if copy_to is not None else None
    try:
        if sink is not None:
            digest = _read_stream(store, key, check, throttle, sink)
        elif local_path is not None and not throttle.rate:
            digest = _read_local(local_path(key), check)
        else:
            digest = _read_stream(store, key, check, throttle)
    except (KeyNotFound, FileNotFoundError):
        check.outcome, check.detail = "missing", "not on the store"
        return check
    except (StoreError, OSError) as exc:
        check.outcome, check.detail = "unreadable", str(exc)
        return check
    finally:
        if sink is not None:
            sink.close()
    if check.bytes_read < check.size:
        check.outcome = "short"
        check.detail = f"{check.bytes_read} of {check.size} bytes"
    elif check.bytes_read > check.size or digest != check.sha512:
        check.outcome, check.detail = "mismatch", "sha512 differs from the inventory"
    else:
        check.outcome = "ok"
    return check


class CopyFailed(ArkhivError):
    """The audited copy could not be written where it was asked for (disk full, folder gone)."""


class _CopySink:
    def __init__(self, path: Path) -> None:
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - closed by close(), after the read
        except OSError as exc:
            raise CopyFailed(f"cannot write {path}: {exc}") from exc
        self._path = path

    def write(self, chunk: bytes) -> None:
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise CopyFailed(f"cannot write {self._path}: {exc}") from exc

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as exc:
            raise CopyFailed(f"cannot write {self._path}: {exc}") from exc


def _selection(
    conn: Connection,
    store: str | None,
    object_id: str | None,
    due_before: datetime | None,
    limit: int | None,
    content_path: str | None = None,
) -> list[Check]:
    query = (
        select(
            files.c.object_id,
            files.c.content_path,
            files.c.size,
            files.c.sha512,
            stores.c.name,
            replicas.c.id,
        )
        .join(files, files.c.id == replicas.c.file_id)
        .join(stores, stores.c.id == replicas.c.store_id)
        .join(objects, objects.c.id == files.c.object_id)
        .where(stores.c.active.is_(True), objects.c.head_version > 0)
        # Oldest checks first, never-checked before everything.
        .order_by(replicas.c.last_audit_at.is_not(None), replicas.c.last_audit_at, replicas.c.id)
    )
    if store:
        query = query.where(stores.c.name == store)
    if object_id:
        query = query.where(files.c.object_id == object_id)
    if content_path:
        query = query.where(files.c.content_path == content_path)
    if due_before is not None:
        query = query.where(
            or_(replicas.c.last_audit_at.is_(None), replicas.c.last_audit_at < due_before)
        )
    if limit:
        query = query.limit(limit)
    return [Check(row[0], row[1], row[4], row[5], row[2], row[3]) for row in conn.execute(query)]


def audit(
    archive: Archive,
    *,
    store: str | None = None,
    object_id: str | None = None,
    due_before: datetime | None = None,
    limit: int | None = None,
    workers: int = 2,
    repair: bool = True,
) -> AuditReport:
    """Check replicas (all, or one store's, or one object's; `due_before`: only those not
    audited since), record the outcomes, and repair failures when `repair`."""
    started = time.monotonic()
    with reading(archive.engine) as conn:
        checks = _selection(conn, store, object_id, due_before, limit)
    report = AuditReport()
    by_store: dict[str, list[Check]] = {}
    for check in checks:
        by_store.setdefault(check.store, []).append(check)
    for name, group in by_store.items():
        throttle = _Throttle.of_store(archive, name)
        target = archive.stores[name]
        # Largest first, so that no big file is left for the end while one thread idles.
        group.sort(key=lambda check: -check.size)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit") as pool:
            report.checks += list(pool.map(partial(_verify, target, throttle=throttle), group))
    _record(archive, report.checks)
    touched = sorted({check.object_id for check in report.checks})
    failed_objects = sorted({check.object_id for check in report.failures})
    for failed in failed_objects if repair else ():
        replicate_object(archive, failed, f"audit:{uuid.uuid4()}", strict=False)
    if failed_objects and repair:
        report.rechecks = _recheck(archive, report.failures, workers)
        report.repaired = [
            {"object": check.object_id, "file": check.content_path, "store": check.store}
            for check in report.rechecks
            if check.outcome == "ok"
        ]
    with reading(archive.engine) as conn:
        for touched_object in touched:
            report.objects[touched_object] = catalog_objects.get_object(conn, touched_object)[
                "status"
            ]
        report.damaged_files = _files_without_good_copy(conn, touched)
    report.seconds = time.monotonic() - started
    return report


def _recheck(archive: Archive, failures: list[Check], workers: int) -> list[Check]:
    """Audit again the failed replicas the repair replaced (now verified in the catalog)."""
    wanted = {check.replica_id for check in failures}
    with reading(archive.engine) as conn:
        verified = set(
            conn.execute(
                select(replicas.c.id).where(
                    replicas.c.id.in_(wanted), replicas.c.status == "verified"
                )
            ).scalars()
        )
    again = [
        Check(c.object_id, c.content_path, c.store, c.replica_id, c.size, c.sha512)
        for c in failures
        if c.replica_id in verified
    ]
    throttles = {name: _Throttle.of_store(archive, name) for name in {c.store for c in again}}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="audit") as pool:
        checked = list(
            pool.map(
                lambda check: _verify(
                    archive.stores[check.store], check, throttle=throttles[check.store]
                ),
                again,
            )
        )
    _record(archive, checked)
    return checked


class NoGoodCopy(Exception):
    """Every replica of the file failed its audit: the object is damaged."""


def audited_copy(
    archive: Archive, object_id: str, content_path: str, copy_to: Path | None = None
) -> str:
    """The store holding a replica of the file that passed an audit just now (local stores
    first: no egress). With `copy_to`, the replica is copied there as it is audited, so the
    copy is known good without a second read. Failed replicas are recorded and their repair
    queued; NoGoodCopy when none passes (and nothing is left at `copy_to`)."""
    return audited_copies(archive, object_id, {content_path: copy_to})[content_path]


def audited_copies(
    archive: Archive, object_id: str, wanted: Mapping[str, Path | None]
) -> dict[str, str]:
    """`audited_copy` for many files of one object (content path -> where to copy it, or None):
    the store each came from. The audits are recorded together, one fixity-check event per
    store rather than one per file. NoGoodCopy names the files no replica of which passed."""
    with reading(archive.engine) as conn:
        only = next(iter(wanted)) if len(wanted) == 1 else None
        candidates = _selection(conn, None, object_id, None, None, only)
    candidates.sort(key=lambda c: getattr(archive.stores.get(c.store), "local_path", None) is None)
    by_path: dict[str, list[Check]] = {}
    for check in candidates:
        if check.store in archive.stores:
            by_path.setdefault(check.content_path, []).append(check)
    checked: list[Check] = []
    chosen: dict[str, str] = {}
    try:
        for content_path, copy_to in wanted.items():
            for check in by_path.get(content_path, []):
                throttle = _Throttle.of_store(archive, check.store)
                checked.append(
                    _verify(archive.stores[check.store], check, throttle=throttle, copy_to=copy_to)
                )
                if check.outcome == "ok":
                    chosen[content_path] = check.store
                    break
    finally:
        if checked:
            _record(archive, checked)  # failures queue the object's repair
    failed = [path for path in wanted if path not in chosen]
    for path in failed:
        if wanted[path] is not None:
            wanted[path].unlink(missing_ok=True)
    if failed:
        listed = ", ".join(failed[:10]) + (
            f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        )
        raise NoGoodCopy(f"{object_id}: no replica of {listed} passed its audit")
    return chosen


def _record(archive: Archive, checks: Iterable[Check]) -> None:
    """Replica rows, and one fixity-check event per object and store (catalog and journal)."""
    at = datetime.now(UTC)
    grouped: dict[tuple[str, str], list[Check]] = {}
    for check in checks:
        grouped.setdefault((check.object_id, check.store), []).append(check)
    journal: dict[str, tuple[int, list[dict[str, Any]]]] = {}
    with writing(archive.engine) as conn:
        for (object_id, store_name), group in sorted(grouped.items()):
            for check in group:
                good = check.outcome == "ok"
                values: dict[str, Any] = {
                    "last_audit_at": at,
                    "last_audit_outcome": check.outcome,
                    "last_audit_detail": check.detail,
                }
                if good:
                    values.update(status="verified", verified_at=at)
                elif check.outcome != "unreadable":  # a store that is down proves nothing
                    values["status"] = "missing" if check.outcome == "missing" else "mismatch"
                conn.execute(
                    update(replicas).where(replicas.c.id == check.replica_id).values(**values)
                )
            bad = [c for c in group if c.outcome != "ok"]
            outcome = "success" if not bad else "failure"
            detail = (
                f"{len(group)} file(s) on store {store_name} read back, every digest matched"
                if not bad
                else f"{len(bad)} of {len(group)} file(s) on store {store_name} failed: "
                + "; ".join(f"{c.content_path} {c.outcome}" for c in bad[:20])
            )
            outcome_detail = {
                "store": store_name,
                "files": sorted(c.content_path for c in group if c.outcome == "ok"),
                "failed": {c.content_path: c.outcome for c in bad},
                "bytes": sum(c.bytes_read for c in group),
            }
            head = catalog_objects.get_object(conn, object_id)["head_version"]
            event = PendingEvent(
                str(uuid.uuid4()), EventType.FIXITY_CHECK, at, outcome, detail, outcome_detail
            )
            event.record(conn, object_id, head)
            journal.setdefault(object_id, (head, []))[1].append(event.journal_entry())
        for object_id in {key[0] for key in grouped}:
            status = preservation_status(conn, archive, object_id)
            catalog_objects.set_status(conn, object_id, status)
            if status != "preserved":
                queue_replication(conn, archive, object_id)
    for object_id, (head, entries) in journal.items():
        write_journal(
            list(archive.stores.values()),
            object_id,
            at,
            f"fixity-{uuid.uuid4()}",
            {"version": head, "events": entries},
        )


def _files_without_good_copy(conn: Connection, object_ids: list[str]) -> list[dict[str, str]]:
    if not object_ids:
        return []
    verified = select(replicas.c.file_id).where(replicas.c.status == "verified").scalar_subquery()
    query = (
        select(files.c.object_id, files.c.content_path)
        .where(and_(files.c.object_id.in_(object_ids), files.c.id.not_in(verified)))
        .order_by(files.c.object_id, files.c.content_path)
    )
    return [{"object": row[0], "file": row[1]} for row in conn.execute(query)]


def due_before(interval_days: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=interval_days)
