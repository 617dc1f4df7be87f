"""Writing AIPs: an accepted submission becomes v1 of an OCFL object; edits and derivatives
become later versions. One function does both (`write_version`):

1. build the version once in staging: the new content, then the metadata documents generated
   from the object as it will be (description.json, METS with PREMIS, CIDOC-CRM as JSON-LD and
   Turtle), then the OCFL inventory;
2. hand its files to every store, each read back and verified;
3. write the replication events to every store's journal;
4. commit the catalog in one transaction: version, files, replicas, events, the new head.

A retry after a crash reuses the staged version (same bytes, same event identifiers), so the
stores end up with one version, not two. Concurrent writers of one object are serialized by a
lease, and the head moves only from the version the writer started from.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import unicodedata
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection

from arkhiv import __version__
from arkhiv.aip import description as descriptions
from arkhiv.aip.events import PendingEvent
from arkhiv.aip.model import (
    Agent,
    Capture,
    Derivation,
    Event,
    FileEntry,
    Format,
    ObjectDescription,
    Version,
)
from arkhiv.aip.ocfl import (
    DIGEST_ALGORITHM,
    FIXITY_ALGORITHMS,
    INVENTORY,
    Inventory,
    NewContent,
    OcflError,
    SourceFile,
    StagedVersion,
    User,
    stage_version,
)
from arkhiv.aip.placement import (
    Placement,
    PlacementError,
    place_version,
    read_inventory,
    write_journal,
)
from arkhiv.aip.preservation import (
    object_lease,
    preservation_status,
    queue_replication,
)
from arkhiv.archive import Archive
from arkhiv.catalog import events as catalog_events
from arkhiv.catalog import leases
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading, writing
from arkhiv.errors import ArkhivError
from arkhiv.fixity.digests import digest_file
from arkhiv.metadata.crm import crm_graph, crm_jsonld, crm_turtle
from arkhiv.metadata.mets import mets_bytes
from arkhiv.metadata.premis import premis_document, serialize
from arkhiv.metadata.premis_vocabulary import EventType, label_of
from arkhiv.policies.location import CoarseLocation
from arkhiv.storage.base import StoreError

PACKAGE = "package"
DERIVATIVES = "derivatives"
METADATA = "metadata"
METS_PATH = "metadata/mets.xml"
PREMIS_PATH = "metadata/premis.xml"
CRM_JSONLD_PATH = "metadata/crm.jsonld"
CRM_TURTLE_PATH = "metadata/crm.ttl"
REPORT_PATH = "metadata/ingest-report.json"
# The description record's list of derivatives made in the archive and what they came from
# (logical paths), carried from version to version; METS, PREMIS and CRM are generated from it.
DERIVATIONS = "derivations"
SEALED_PATH = "metadata/sealed-locations.json"
SUBMISSION_RECORD = "submission_record"  # in the archived ingest report
# Rewritten for every version from the object's state; never carried over.
GENERATED = (METS_PATH, PREMIS_PATH, CRM_JSONLD_PATH, CRM_TURTLE_PATH, descriptions.FILE_NAME)
SOFTWARE_ADDRESS = "https://arkhiv.org/software"
USER_BASE = "https://arkhiv.org/id/user/"
_WRITTEN_BY_ARKHIV = "written by Arkhiv"
METADATA_FORMATS = {
    ".xml": Format("fmt/101", "application/xml", "Extensible Markup Language", "1.0"),
    ".json": Format("fmt/817", "application/json", "JSON Data Interchange Format"),
    ".jsonld": Format("fmt/880", "application/ld+json", "JSON-LD"),
    ".ttl": Format("fmt/874", "text/turtle", "Turtle"),
}


class ArchivingError(ArkhivError):
    pass


class ConcurrentChange(ArchivingError):
    """Another writer changed the object first."""


def role_of(logical_path: str) -> str:
    top = logical_path.split("/", 1)[0]
    return {PACKAGE: "original", DERIVATIVES: "derivative"}.get(top, "metadata")


def file_id(logical_path: str) -> str:
    """The file's identifier in METS and PREMIS: stable for a logical path across versions."""
    return "file-" + hashlib.sha256(logical_path.encode()).hexdigest()[:16]


def agent_id(agent_type: str, name: str, version: str = "") -> str:
    digest = hashlib.sha256(f"{agent_type}\0{name}\0{version}".encode()).hexdigest()
    return "agent-" + digest[:12]


def metadata_format(logical_path: str) -> Format:
    suffix = Path(logical_path).suffix.lower()
    base = METADATA_FORMATS.get(suffix, Format(None, None, None))
    return Format(base.puid, base.mime_type, base.name, base.version, _WRITTEN_BY_ARKHIV)


def user_for(name: str | None) -> tuple[str, User]:
    """(agent type, OCFL user) for whoever makes a version; Arkhiv itself when nobody is named."""
    if name:
        return "person", User(name, USER_BASE + quote(name, safe=""))
    return "software", User(f"Arkhiv {__version__}", SOFTWARE_ADDRESS)


@dataclass
class NewFile:
    logical_path: str
    source: Path
    digests: dict[str, str]
    format: Format


@dataclass
class VersionPlan:
    """Everything that decides a version's bytes; kept in staging so that a retry rebuilds
    nothing and writes the same version."""

    object_id: str
    number: int
    created: datetime
    message: str
    user_type: str
    user: User
    record: dict[str, Any]
    carried: dict[str, str]  # logical path -> sha512 of content the object holds already
    new_files: list[NewFile]
    events: list[PendingEvent]
    submission_id: str | None = None

    def to_json(self) -> str:
        document = asdict(self)
        document["created"] = self.created.isoformat()
        for item in document["new_files"]:
            item["source"] = str(item["source"])
        for item in document["events"]:
            item["occurred_at"] = item["occurred_at"].isoformat()
            item["type"] = str(item["type"])
        return json.dumps(document, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VersionPlan:
        document = json.loads(text)
        document["created"] = datetime.fromisoformat(document["created"])
        document["user"] = User(**document["user"])
        document["new_files"] = [
            NewFile(
                item["logical_path"],
                Path(item["source"]),
                item["digests"],
                Format(**item["format"]),
            )
            for item in document["new_files"]
        ]
        document["events"] = [
            PendingEvent(
                item["id"],
                EventType(item["type"]),
                datetime.fromisoformat(item["occurred_at"]),
                item["outcome"],
                item["detail"],
                item["outcome_detail"],
                item.get("software", []),
            )
            for item in document["events"]
        ]
        return cls(**document)


# --- the object as the metadata builders see it ---------------------------------------------


def _format_of(row: Mapping[str, Any]) -> Format:
    return Format(
        row.get("puid"),
        row.get("mime_type"),
        row.get("format_name"),
        row.get("format_version"),
        row.get("format_basis") or "",
    )


def _coarse(record: Mapping[str, Any]) -> CoarseLocation | None:
    location = record.get("public_location")
    return CoarseLocation(**location) if location else None


def object_description(
    conn: Connection, plan: VersionPlan, new_content: Mapping[str, str]
) -> ObjectDescription:
    """The object as it will be once `plan` is its head. `new_content`: logical path -> content
    path for the plan's new files."""
    record = plan.record
    rows = catalog_objects.files_of(conn, plan.object_id)
    by_digest = {row["sha512"]: row for row in rows.values()}
    file_entries: list[FileEntry] = []
    for logical, digest in sorted(plan.carried.items()):
        row = by_digest[digest]
        file_entries.append(
            FileEntry(
                id=file_id(logical),
                logical_path=logical,
                content_path=row["content_path"],
                size=row["size"],
                digests=_digests_of(row),
                format=_format_of(row),
                role=role_of(logical),
                created=row["created_at"],
            )
        )
    stored_once = {  # digest -> where this version stores those bytes
        new.digests[DIGEST_ALGORITHM]: new_content[new.logical_path]
        for new in plan.new_files
        if new.logical_path in new_content
    }
    for new in plan.new_files:
        content_path = new_content.get(new.logical_path)
        if content_path is None:  # the same bytes as another new file, or as older content
            digest = new.digests[DIGEST_ALGORITHM]
            content_path = stored_once.get(digest) or by_digest[digest]["content_path"]
        file_entries.append(
            FileEntry(
                id=file_id(new.logical_path),
                logical_path=new.logical_path,
                content_path=content_path,
                size=new.source.stat().st_size,
                digests=dict(new.digests),
                format=new.format,
                role=role_of(new.logical_path),
                created=plan.created,
            )
        )
    file_entries.sort(key=lambda entry: entry.logical_path)

    agents: dict[str, Agent] = {}

    def agent(agent_type: str, name: str, version: str = "") -> str:
        key = agent_id(agent_type, name, version)
        agents.setdefault(key, Agent(key, agent_type, name, version))
        return key

    known_files = {entry.logical_path: entry.id for entry in file_entries}
    events: list[Event] = []
    rows_of_events = catalog_events.events_for_object(conn, plan.object_id)
    if plan.submission_id:
        rows_of_events += catalog_events.events_for_submission(conn, plan.submission_id)
    seen = set()
    for row in rows_of_events:
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        events.append(
            Event(
                id=row["id"],
                type_uri=row["event_type"],
                type_label=label_of(row["event_type"]),
                date_time=row["occurred_at"],
                outcome=row["outcome"],
                detail=row["detail"],
                agents=tuple(
                    (agent(a["type"], a["name"], a["version"]), a["role"]) for a in row["agents"]
                ),
                objects=_linked_files(row["outcome_detail"], known_files),
                outcome_detail=_detail_text(row["outcome_detail"]),
            )
        )
    for pending in plan.events:
        events.append(
            Event(
                id=pending.id,
                type_uri=pending.type.uri,
                type_label=pending.type.label,
                date_time=pending.occurred_at,
                outcome=pending.outcome,
                detail=pending.detail,
                agents=tuple(
                    (agent("software", name, version), "executing program")
                    for name, version in pending.programs()
                ),
                objects=_linked_files(pending.outcome_detail, known_files),
                outcome_detail=_detail_text(pending.outcome_detail),
            )
        )
    events.sort(key=lambda event: (event.date_time, event.id))

    versions = [
        Version(
            row["number"],
            row["created_at"],
            row["message"],
            agent(row["user_type"] or "person", row["user_name"] or "unknown"),
        )
        for row in catalog_objects.versions_of(conn, plan.object_id)
    ]
    versions.append(
        Version(plan.number, plan.created, plan.message, agent(plan.user_type, plan.user.name))
    )
    capture_record = record.get("capture") or {}
    contributor = agent("person", record["contributor"]) if record.get("contributor") else None
    organization = (
        agent("organization", record["organization"]) if record.get("organization") else None
    )
    capture = None
    if capture_record.get("mode"):
        capture = Capture(
            mode=capture_record["mode"],
            captured_at=capture_record.get("captured_at"),
            device=capture_record.get("device"),
            app=capture_record.get("app"),
            contributor=contributor,
            organization=organization,
        )
    derivations = tuple(
        Derivation(
            derivative=known_files[item["derivative"]],
            sources=tuple(known_files[source] for source in item["sources"]),
            kind=item["kind"],
            software=agent("software", *item["software"]) if item.get("software") else None,
            parameters=item.get("parameters") or {},
            event=item.get("event"),
        )
        for item in record.get(DERIVATIONS, [])
        # A later version may have dropped a file; its derivation stays in the record.
        if item["derivative"] in known_files and set(item["sources"]) <= set(known_files)
    )
    return ObjectDescription(
        id=plan.object_id,
        title=record.get("title") or "",
        object_type=record.get("object_type") or "other",
        description=record.get("description") or "",
        period=record.get("period"),
        condition=record.get("condition"),
        condition_note=record.get("condition_note"),
        license=record.get("license"),
        rights_holder=record.get("rights_holder"),
        permission=record.get("permission"),
        public_location=_coarse(record),
        place_name=record.get("place_name"),
        capture=capture,
        versions=tuple(versions),
        files=tuple(file_entries),
        events=tuple(events),
        agents=tuple(agents.values()),
        derivations=derivations,
    )


def _linked_files(outcome_detail: Any, known_files: Mapping[str, str]) -> tuple[str, ...]:
    """File ids an event names in its outcome detail ("linked_files": logical paths by role,
    e.g. sources and outputs of a reconstruction)."""
    linked = outcome_detail.get("linked_files") if isinstance(outcome_detail, dict) else None
    if not linked:
        return ()
    paths = [path for group in linked.values() for path in group]
    return tuple(dict.fromkeys(known_files[path] for path in paths if path in known_files))


def _digests_of(row: Mapping[str, Any]) -> dict[str, str]:
    digests = {"sha512": row["sha512"]}
    if row.get("sha256"):
        digests["sha256"] = row["sha256"]
    digests.update(row.get("fixity") or {})
    return digests


def _detail_text(detail: Any) -> str:
    if detail in (None, "", {}):
        return ""
    return json.dumps(detail, sort_keys=True, ensure_ascii=False)


def write_metadata_documents(obj: ObjectDescription, folder: Path) -> dict[str, Path]:
    """METS (with PREMIS inside), PREMIS alone, and the CIDOC-CRM graph as JSON-LD and Turtle."""
    folder.mkdir(parents=True, exist_ok=True)
    premis = premis_document(obj)
    graph = crm_graph(obj)
    documents = {
        METS_PATH: mets_bytes(obj, premis),
        PREMIS_PATH: serialize(premis),
        CRM_JSONLD_PATH: (
            json.dumps(crm_jsonld(graph), indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        ).encode(),
        CRM_TURTLE_PATH: crm_turtle(graph),
    }
    written = {}
    for logical, data in documents.items():
        target = folder / Path(logical).name
        target.write_bytes(data)
        written[logical] = target
    return written


# --- writing a version ------------------------------------------------------------------------


@dataclass
class VersionResult:
    object_id: str
    number: int
    status: str
    placements: list[Placement]

    def as_dict(self) -> dict[str, Any]:
        return {
            "object": self.object_id,
            "version": self.number,
            "status": self.status,
            "stores": {
                p.store: "verified" if p.complete else f"failed: {p.problem}"
                for p in self.placements
            },
        }


def prior_inventory(archive: Archive, object_id: str, head: int) -> Inventory | None:
    """The object's inventory at `head`, from the first store holding exactly that head."""
    if head == 0:
        return None
    problems = []
    for store in archive.stores.values():
        try:
            inventory = read_inventory(store, object_id)
        except (StoreError, OSError, OcflError, PlacementError) as exc:
            problems.append(f"{store.name}: {exc}")
            continue
        if inventory is not None and inventory.head == head:
            return inventory
        problems.append(f"{store.name}: holds v{inventory.head if inventory else 0}")
    raise ArchivingError(f"no store holds v{head} of {object_id} readable: " + "; ".join(problems))


def _stage(archive: Archive, plan: VersionPlan, workdir: Path) -> StagedVersion:
    """Build (or, after a crash, reuse) the staged version of `plan`."""
    with reading(archive.engine) as conn:
        head = catalog_objects.get_object(conn, plan.object_id)["head_version"]
    prior = prior_inventory(archive, plan.object_id, head)
    known = set(prior.manifest) if prior else set()
    number = plan.number
    new_content = {}
    seen: set[str] = set()
    for new in sorted(plan.new_files, key=lambda item: item.logical_path):
        digest = new.digests[DIGEST_ALGORITHM]
        if digest not in known and digest not in seen:
            new_content[new.logical_path] = f"v{number}/content/{new.logical_path}"
            seen.add(digest)
    with reading(archive.engine) as conn:
        obj = object_description(conn, plan, new_content)
    generated = write_metadata_documents(obj, workdir / "generated")
    description_file = workdir / "generated" / "description.json"
    description_file.write_bytes(descriptions.to_bytes(plan.record))
    generated[descriptions.FILE_NAME] = description_file
    files: dict[str, SourceFile] = {
        new.logical_path: SourceFile(new.source, new.digests) for new in plan.new_files
    }
    for logical, path in generated.items():
        files[logical] = SourceFile(path)
    carried = {path: digest for path, digest in plan.carried.items() if path not in files}
    return stage_version(
        workdir / "object",
        plan.object_id,
        prior,
        files,
        carried=carried,
        created=plan.created,
        message=plan.message,
        user=plan.user,
        fixity_algorithms=tuple(archive.settings.preservation.digest_algorithms),
    )


def write_version(
    archive: Archive,
    object_id: str,
    make_plan: Callable[[Path], VersionPlan],
    workdir: Path,
    *,
    lease_holder: str,
    on_commit: Callable[[Connection, VersionPlan], None] | None = None,
) -> VersionResult:
    """Plan, stage, place and commit one version (see the module's description).

    `make_plan(inputs_folder)` decides the version; after a crash the saved plan is used
    instead, so a retry writes the very same version. `on_commit(conn, plan)` runs inside the
    catalog transaction, for the caller's own records."""
    try:
        with leases.holding(
            archive.engine,
            object_lease(object_id),
            lease_holder,
            archive.settings.jobs.lease_seconds,
        ) as lost:
            plan = _load_or_make_plan(workdir, make_plan)
            staged = _load_or_stage(archive, plan, workdir / "build")
            # Stores are independent: writing them at once overlaps one's I/O with another's
            # read-back hashing.
            stores = list(archive.stores.values())
            with ThreadPoolExecutor(max_workers=len(stores), thread_name_prefix="place") as pool:
                placements = list(pool.map(partial(place_version, staged), stores))
            if not any(p.complete for p in placements):
                raise ArchivingError(
                    f"{plan.object_id} v{plan.number} could not be written to any store: "
                    + "; ".join(f"{p.store}: {p.problem}" for p in placements)
                )
            replication = _replication_events(plan, staged, placements)
            journal_entry = {
                "version": plan.number,
                "events": [event.journal_entry() for event in replication],
            }
            write_journal(
                list(archive.stores.values()),
                plan.object_id,
                plan.created,
                f"v{plan.number}-replication",
                journal_entry,
            )
            if lost.is_set():
                raise ConcurrentChange(f"{object_id}: the object's lease was lost; not committing")
            with writing(archive.engine) as conn:
                status = _commit(conn, archive, plan, staged, placements, replication)
                if on_commit is not None:
                    on_commit(conn, plan)
    except leases.LeaseLost:
        raise ConcurrentChange(f"{object_id} is being changed by another worker") from None
    shutil.rmtree(workdir, ignore_errors=True)
    return VersionResult(plan.object_id, plan.number, status, placements)


def _load_or_make_plan(workdir: Path, make_plan: Callable[[Path], VersionPlan]) -> VersionPlan:
    saved = workdir / "plan.json"
    if saved.exists():
        try:
            return VersionPlan.from_json(saved.read_text())
        except (ValueError, KeyError, TypeError):
            pass  # written only part-way before a crash: plan again
    shutil.rmtree(workdir, ignore_errors=True)
    inputs = workdir / "inputs"
    inputs.mkdir(parents=True)
    plan = make_plan(inputs)
    temporary = saved.with_suffix(".part")
    temporary.write_text(plan.to_json())
    temporary.replace(saved)
    return plan


def _load_or_stage(archive: Archive, plan: VersionPlan, workdir: Path) -> StagedVersion:
    marker = workdir / "staged.json"
    if marker.exists():
        saved = json.loads(marker.read_text())
        staged = _staged_from_disk(workdir / "object", plan, saved)
        if staged is not None:
            return staged
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    staged = _stage(archive, plan, workdir)
    marker.write_text(
        json.dumps(
            {
                "inventory_sha512": staged.inventory_sha512,
                "new_content": [
                    {"content_path": c.content_path, "size": c.size, "digests": c.digests}
                    for c in staged.new_content
                ],
            }
        )
    )
    return staged


def _staged_from_disk(root: Path, plan: VersionPlan, saved: dict) -> StagedVersion | None:
    try:
        data = (root / INVENTORY).read_bytes()
    except OSError:
        return None
    if hashlib.sha512(data).hexdigest() != saved["inventory_sha512"]:
        return None
    inventory = Inventory.from_json(data)
    content = [
        NewContent(item["content_path"], root / item["content_path"], item["size"], item["digests"])
        for item in saved["new_content"]
    ]
    if not all(item.local_path.is_file() for item in content):
        return None
    return StagedVersion(plan.object_id, plan.number, root, inventory, data, content)


def replication_event_id(object_id: str, number: int, store: str) -> str:
    """The same placement gives the same event identifier, however often it is retried."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"arkhiv:{object_id}:v{number}:replication:{store}"))


def _replication_events(
    plan: VersionPlan, staged: StagedVersion, placements: list[Placement]
) -> list[PendingEvent]:
    size = sum(content.size for content in staged.new_content)
    count = len(staged.new_content)
    events = []
    at = datetime.now(UTC)
    for placement in placements:
        if placement.complete:
            detail = (
                f"v{plan.number} written to store {placement.store}: {count} new content "
                f"file(s), {size} bytes, each verified against the inventory (read back, or "
                "confirmed by the store's SHA-256)"
            )
            outcome = "success"
        else:
            detail = f"v{plan.number} not written to store {placement.store}: {placement.problem}"
            outcome = "failure"
        events.append(
            PendingEvent(
                replication_event_id(plan.object_id, plan.number, placement.store),
                EventType.REPLICATION,
                at,
                outcome,
                detail,
                {"store": placement.store, "version": plan.number},
            )
        )
    return events


def _commit(
    conn: Connection,
    archive: Archive,
    plan: VersionPlan,
    staged: StagedVersion,
    placements: list[Placement],
    replication: list[PendingEvent],
) -> str:
    if not catalog_objects.set_head(
        conn,
        plan.object_id,
        expected_head=plan.number - 1,
        head=plan.number,
        description=plan.record,
        at=plan.created,
    ):
        raise ConcurrentChange(f"{plan.object_id} moved past v{plan.number - 1} meanwhile")
    user_agent = catalog_events.ensure_agent(
        conn, plan.user_type, plan.user.name, identifier=plan.user.address
    )
    version_id = catalog_objects.add_version(
        conn,
        plan.object_id,
        plan.number,
        plan.message,
        user_agent,
        plan.created,
        staged.inventory_sha512,
    )
    formats = {new.logical_path: new.format for new in plan.new_files}
    inventory = staged.inventory
    state = inventory.versions[plan.number].logical_files()
    existing = catalog_objects.file_ids(conn, plan.object_id)
    first_path: dict[str, str] = {}  # sha512 -> the first logical path holding it
    for path, digest in sorted(state.items()):
        first_path.setdefault(digest, path)
    by_content = {}
    for content in staged.new_content:
        logical = first_path[content.digests[DIGEST_ALGORITHM]]
        fmt = formats.get(logical) or metadata_format(logical)
        # As the inventory records them: sha512 and the algorithms OCFL names for fixity.
        digests = {
            algorithm: value
            for algorithm, value in content.digests.items()
            if algorithm == DIGEST_ALGORITHM or algorithm in FIXITY_ALGORITHMS
        }
        by_content[content.content_path] = catalog_objects.add_file(
            conn,
            plan.object_id,
            content_path=content.content_path,
            size=content.size,
            sha512=digests["sha512"],
            sha256=digests.get("sha256"),
            fixity={k: v for k, v in digests.items() if k not in ("sha512", "sha256")},
            puid=fmt.puid,
            mime_type=fmt.mime_type,
            format_name=fmt.name,
            format_version=fmt.version,
            format_basis=fmt.basis,
            role=role_of(logical),
            created_at=plan.created,
        )
    existing.update(by_content)
    catalog_objects.add_version_files(
        conn,
        version_id,
        {path: existing[inventory.content_path_of(digest)] for path, digest in state.items()},
    )
    store_ids = catalog_objects.store_ids(conn)
    by_store = {event.outcome_detail["store"]: event for event in replication}
    for placement in placements:
        event = by_store[placement.store]
        for file_row in by_content.values():
            catalog_objects.set_replica(
                conn,
                file_row,
                store_ids[placement.store],
                "verified" if placement.complete else "missing",
                event.occurred_at if placement.complete else None,
            )
    if plan.submission_id:
        catalog_events.link_to_object(conn, plan.submission_id, plan.object_id, plan.number)
    for event in [*plan.events, *replication]:
        event.record(conn, plan.object_id, plan.number)
    status = preservation_status(conn, archive, plan.object_id)
    catalog_objects.set_status(conn, plan.object_id, status)
    if status != "preserved":
        queue_replication(conn, archive, plan.object_id)
    return status


# --- v1 from an accepted submission -----------------------------------------------------------


def _disk_path(bag_root: Path, manifest_path: str) -> Path:
    """The file on disk for a manifest path (macOS may have written the other Unicode form)."""
    for form in (None, "NFC", "NFD"):
        candidate = bag_root / (
            manifest_path if form is None else unicodedata.normalize(form, manifest_path)
        )
        if candidate.is_file():
            return candidate
    raise ArchivingError(f"{manifest_path}: in the report but not in staging")


def _format_from_report(entry: Mapping[str, Any]) -> Format:
    found = entry.get("format") or {}
    return Format(
        found.get("puid"),
        found.get("mime_type"),
        found.get("format_name"),
        found.get("format_version"),
        found.get("basis") or "",
    )


def plan_first_version(
    archive: Archive,
    submission: Mapping[str, Any],
    sealed: list[Mapping[str, Any]],
    inputs: Path,
) -> VersionPlan:
    """v1 of the object an accepted submission becomes: the package as received (payload and
    tag files), its ingest report, its sealed locations (ciphertext only) and the metadata."""
    bag_root = Path(submission["staging_path"])
    report = submission["report"] or {}
    payload = {entry["path"]: entry for entry in report.get("files", [])}
    new_files: list[NewFile] = []
    for path in sorted(bag_root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(bag_root).as_posix()
        entry = payload.get(relative) or payload.get(unicodedata.normalize("NFC", relative))
        if entry is not None:
            source = _disk_path(bag_root, entry["path"])
            new_files.append(
                NewFile(
                    f"{PACKAGE}/{entry['path']}",
                    source,
                    {k.lower(): v.lower() for k, v in entry["digests"].items()},
                    _format_from_report(entry),
                )
            )
        else:  # a tag file: bagit.txt, bag-info.txt, manifests, capture-metadata.json
            fmt = (
                metadata_format(relative)
                if relative.endswith(".json")
                else Format("x-fmt/111", "text/plain", "Plain Text File", None, "BagIt tag file")
            )
            new_files.append(NewFile(f"{PACKAGE}/{relative}", path, {}, fmt))
    report_file = inputs / "ingest-report.json"
    with reading(archive.engine) as conn:
        ingest_events = catalog_events.events_for_submission(conn, submission["id"])
    document = dict(report)
    # How the submission was received, for a catalog rebuilt from the stores.
    document[SUBMISSION_RECORD] = {
        "events": [event["id"] for event in ingest_events],
        "id": submission["id"],
        "source_name": submission["source_name"],
        "submitted_by": submission["submitted_by"],
        "received_at": submission["received_at"].isoformat(),
        "finished_at": submission["finished_at"].isoformat() if submission["finished_at"] else None,
        "payload_fingerprint": submission["payload_fingerprint"],
    }
    report_file.write_bytes(
        (json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()
    )
    new_files.append(NewFile(REPORT_PATH, report_file, {}, metadata_format(REPORT_PATH)))
    if sealed:
        sealed_file = inputs / "sealed-locations.json"
        sealed_file.write_bytes(sealed_locations_bytes(sealed))
        new_files.append(NewFile(SEALED_PATH, sealed_file, {}, metadata_format(SEALED_PATH)))
    for new in new_files:
        if DIGEST_ALGORITHM not in new.digests:
            new.digests.update(
                digest_file(new.source, archive.settings.preservation.digest_algorithms)
            )
    record = descriptions.from_public_metadata(
        report.get("metadata"), submission.get("public_location")
    )
    user_type, user = user_for(submission["submitted_by"] or None)
    created = datetime.now(UTC)
    count = sum(1 for new in new_files if new.logical_path.startswith(PACKAGE + "/"))
    size = sum(new.source.stat().st_size for new in new_files)
    events = [
        PendingEvent(
            str(uuid.uuid4()),
            EventType.INFORMATION_PACKAGE_CREATION,
            created,
            "success",
            f"OCFL object v1 built from submission {submission['id']}: the package as "
            f"received ({count} files) with its ingest report and metadata, {size} bytes",
        )
    ]
    return VersionPlan(
        object_id=submission["object_id"],
        number=1,
        created=created,
        message=f"Ingest of submission {submission['id']} ({submission['source_name']})",
        user_type=user_type,
        user=user,
        record=record,
        carried={},
        new_files=new_files,
        events=events,
        submission_id=submission["id"],
    )


def sealed_locations_bytes(sealed: list[Mapping[str, Any]]) -> bytes:
    """The sealed (AES-256-GCM) precise locations: ciphertext only, useless without the archive
    key, kept in the AIP so that a rebuilt catalog still has them."""
    document = [
        {
            "submission": row["submission_id"],
            "source": row["source_path"],
            "kind": row["kind"],
            "key_id": row["key_id"],
            "nonce": base64.b64encode(row["nonce"]).decode(),
            "ciphertext": base64.b64encode(row["ciphertext"]).decode(),
            "created_at": row["created_at"].isoformat(),
        }
        for row in sealed
    ]
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
