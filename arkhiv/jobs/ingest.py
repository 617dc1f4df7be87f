"""Submissions from intake to a recorded outcome: receive a package into staging and queue it;
the `ingest.submission` job runs the ingest pipeline and records the result in the catalog in
one transaction (PREMIS events, sealed locations, coarse public location). Rejected packages
move to quarantine with their report; nothing of them enters the archive.

Crash safety: the outcome is committed first and the files are moved after, so a retried job
finds a recorded outcome and only completes the move. Two workers holding the same job (one
presumed dead) cannot both record it: the outcome is written only if the submission is still
`ingesting`, and the loser's transaction rolls back."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from arkhiv.aip.description import from_public_metadata
from arkhiv.archive import Archive
from arkhiv.catalog import events, submissions
from arkhiv.catalog.database import now, reading, writing
from arkhiv.catalog.objects import create_object
from arkhiv.catalog.queue import enqueue
from arkhiv.errors import ArkhivError
from arkhiv.identifiers import mint
from arkhiv.ingest.bagging import make_bag
from arkhiv.ingest.capture_metadata import MAX_METADATA_BYTES, METADATA_FILE
from arkhiv.ingest.identify import Identifier
from arkhiv.ingest.model import Check, GeoLocation, IntakeError, Outcome
from arkhiv.ingest.pipeline import ARKHIV_AGENT, IngestResult, run_ingest
from arkhiv.ingest.unpack import receive
from arkhiv.jobs.registry import JobContext, PermanentJobError, job_handler
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.policies.location import coarsen

QUEUE = "ingest"
KIND = "ingest.submission"
ARCHIVE_KIND = "aip.archive_submission"  # handled in arkhiv.jobs.archiving
REPORT_NAME = "ingest-report.json"


class AlreadyRecorded(Exception):
    """Another worker recorded this submission's outcome first."""


def receive_submission(
    archive: Archive,
    source: Path,
    submitted_by: str = "",
    *,
    plain: bool = False,
    source_name: str | None = None,
) -> tuple[str, int | None, list[str]]:
    """Stage a package and queue its ingest. Returns (submission id, job id, intake problems);
    a package that cannot even be unpacked safely gets no job and its problems are recorded.
    `plain`: the package is a folder (or archive) of files, not a bag; Arkhiv bags it, taking a
    top-level capture-metadata.json as its capture metadata."""
    submission_id = str(uuid.uuid4())
    staging = archive.staging_dir / submission_id
    staging.mkdir(parents=True, mode=0o700)
    name = source_name or source.name
    with writing(archive.engine) as conn:
        submissions.create(conn, submission_id, name, submitted_by, str(staging))
        _event(
            conn, submission_id, EventType.INGESTION_START, "success", f"package {name!r} received"
        )
    try:
        bag_root = receive(source, staging / "package", archive.settings.ingest)
        if plain:
            bag_root = _bag_in_staging(bag_root, staging, archive)
    except IntakeError as exc:
        # Messages name the source path: show the name the submitter knows, not server paths.
        problems = [p.replace(str(source), name) for p in exc.problems]
        _refuse_at_intake(archive, submission_id, staging, problems)
        return submission_id, None, problems
    except Exception as exc:
        _refuse_at_intake(
            archive, submission_id, staging, [f"{name}: intake failed ({type(exc).__name__})"]
        )
        raise ArkhivError(f"submission {submission_id}: intake failed: {exc}") from exc
    with writing(archive.engine) as conn:
        _event(conn, submission_id, EventType.UNPACKING, "success", "unpacked into staging")
        submissions.update_fields(conn, submission_id, staging_path=str(bag_root))
        job_id = _queue_submission_job(conn, archive, KIND, submission_id)
    return submission_id, job_id, []


def _refuse_at_intake(
    archive: Archive, submission_id: str, staging: Path, problems: list[str]
) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    checks = [Check("intake", Outcome.FAIL, problem) for problem in problems]
    summary = "rejected at intake: " + "; ".join(problems)
    report = {
        "accepted": False,
        "summary": summary,
        "checks": [check.as_dict() for check in checks],
    }
    with writing(archive.engine) as conn:
        _event(conn, submission_id, EventType.UNPACKING, "failure", "; ".join(problems))
        _event(conn, submission_id, EventType.INGESTION_END, "failure", "rejected at intake")
        submissions.finish(
            conn, submission_id, "rejected", report=report, summary=summary, staging_path=None
        )


@job_handler(KIND)
def ingest_submission(ctx: JobContext) -> dict[str, Any]:
    return process_submission(ctx.archive, ctx.payload["submission"], ctx.progress, ctx)


def process_submission(
    archive: Archive, submission_id: str, progress=None, ctx: JobContext | None = None
) -> dict[str, Any]:
    with reading(archive.engine) as conn:
        row = submissions.get(conn, submission_id)
    if row is None:
        raise PermanentJobError(f"no submission {submission_id}")
    if row["status"] not in ("received", "ingesting"):
        _settle_files(archive, row)  # recorded before a crash: finish moving its files
        return {"submission": submission_id, "status": row["status"]}
    bag_root = Path(row["staging_path"])
    if not bag_root.is_dir():
        raise PermanentJobError(f"staging for {submission_id} is gone")
    with writing(archive.engine) as conn:
        submissions.update_fields(conn, submission_id, status="ingesting")

    result = run_ingest(bag_root, archive.settings.ingest, shared_identifier(), progress=progress)
    fingerprint = result.fingerprint()
    public_location = _public_location(archive, result)
    if ctx is not None and ctx.lease_lost.is_set():
        return {"submission": submission_id, "status": "lease lost; another worker records it"}
    key = archive.key
    try:
        with writing(archive.engine) as conn:
            # Checked here, serialized per payload, so two copies submitted at once are not
            # both accepted.
            if fingerprint and result.accepted:
                submissions.lock_fingerprint(conn, fingerprint)
                _check_duplicate(result, submissions.holders_of(conn, fingerprint, submission_id))
            report = result.report()
            report["submission"] = submission_id
            report["public_location"] = public_location
            status = "accepted" if result.accepted else "rejected"
            values: dict[str, Any] = {
                "report": report,
                "summary": result.summary(),
                "payload_fingerprint": fingerprint,
                "file_count": len(result.files),
                "payload_bytes": result.payload_bytes,
                "public_location": public_location,
            }
            if status == "rejected":
                values["quarantine_path"] = str(archive.quarantine_dir / submission_id)
                values["staging_path"] = None
            # First, so that the row is locked and a second recorder stops here.
            if not submissions.finish_from(conn, submission_id, "ingesting", status, **values):
                raise AlreadyRecorded(f"submission {submission_id} was recorded by another worker")
            if status == "accepted":
                object_id, archive_job = _open_object(archive, conn, submission_id, report)
            for step in result.steps:
                agents = [
                    (events.ensure_agent(conn, "software", name, version), "executing program")
                    for name, version in step.software
                ]
                events.record_event(
                    conn,
                    step.event.uri,
                    step.outcome,
                    step.detail,
                    occurred_at=step.ended_at,
                    submission_id=submission_id,
                    agents_by_role=agents,
                )
            for location in result.locations:
                sealed = key.seal(
                    _location_document(location), seal_context(submission_id, location)
                )
                submissions.add_sealed_location(
                    conn,
                    submission_id,
                    location.source,
                    location.kind,
                    sealed.key_id,
                    sealed.nonce,
                    sealed.ciphertext,
                )
            if result.locations:
                _event(
                    conn,
                    submission_id,
                    EventType.ENCRYPTION,
                    "success",
                    f"{len(result.locations)} precise location(s) sealed with AES-256-GCM "
                    f"under key {key.key_id}",
                )
            if status == "rejected":
                _event(
                    conn,
                    submission_id,
                    EventType.QUARANTINE,
                    "success",
                    "rejected package moved to quarantine",
                )
            _event(
                conn,
                submission_id,
                EventType.INGESTION_END,
                "success" if result.accepted else "failure",
                result.summary().splitlines()[0],
            )
    except AlreadyRecorded:
        return {"submission": submission_id, "status": "recorded elsewhere"}
    with reading(archive.engine) as conn:
        _settle_files(archive, submissions.get(conn, submission_id), result)
    outcome = {"submission": submission_id, "status": status, "summary": result.summary()}
    if status == "accepted":
        outcome.update(object=object_id, archive_job=archive_job)
    return outcome


def _open_object(
    archive: Archive, conn, submission_id: str, report: dict[str, Any]
) -> tuple[str, int]:
    """Name the object an accepted package becomes and queue the writing of its v1. The
    identifier is minted here, once, so that a retried archiving job writes the same object."""
    naming = archive.settings.identifiers
    object_id = mint(naming.naan, naming.shoulder)
    record = from_public_metadata(report.get("metadata"), report.get("public_location"))
    create_object(conn, object_id, record, now(conn))
    submissions.update_fields(conn, submission_id, object_id=object_id)
    return object_id, _queue_submission_job(conn, archive, ARCHIVE_KIND, submission_id)


def _queue_submission_job(conn, archive: Archive, kind: str, submission_id: str) -> int:
    """Queue one step of a submission, once (a second request while it is queued is a no-op)."""
    job_id, _ = enqueue(
        conn,
        QUEUE,
        kind,
        {"submission": submission_id},
        unique_key=f"{kind}:{submission_id}",
        max_attempts=archive.settings.jobs.max_attempts,
    )
    return job_id


def _check_duplicate(result: IngestResult, earlier: list[dict[str, Any]]) -> None:
    if not earlier:
        return
    held = ", ".join(
        e["id"] + (f" (object {e['object_id']})" if e["object_id"] else "") for e in earlier
    )
    result.checks.append(
        Check(
            "duplicate",
            Outcome.FAIL,
            f"the same payload is already in the archive: submission {held}",
            detail={"submissions": [e["id"] for e in earlier]},
        )
    )


def seal_context(submission_id: str, location: GeoLocation) -> str:
    """What a sealed location is bound to: moving a ciphertext to another row fails to open."""
    return seal_context_of(submission_id, location.source, location.kind)


def seal_context_of(submission_id: str, source: str, kind: str) -> str:
    return f"{submission_id}:{source}:{kind}"


def _settle_files(
    archive: Archive, row: dict[str, Any], result: IngestResult | None = None
) -> None:
    """Put a recorded submission's files where the catalog says: a rejected package into
    quarantine, and the report beside the package."""
    staged = archive.staging_dir / row["id"]
    place = staged
    if row["status"] == "rejected" and row["quarantine_path"]:
        place = Path(row["quarantine_path"])
        if staged.is_dir() and not place.exists():
            place.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.move(str(staged), str(place))
            place.chmod(0o700)
    if not place.is_dir() or row.get("report") is None:
        return
    (place / REPORT_NAME).write_text(json.dumps(row["report"], indent=2, ensure_ascii=False))
    summary = result.summary() if result is not None else row["summary"]
    (place / "ingest-report.txt").write_text(summary + "\n")


def _bag_in_staging(files: Path, staging: Path, archive: Archive) -> Path:
    """Turn an unpacked plain upload into a bag beside it, then drop the plain copy."""
    if (files / "bagit.txt").exists():
        raise IntakeError([f"{files.name}: already a bag (bagit.txt found); submit it as a bag"])
    capture_metadata = None
    metadata_file = files / METADATA_FILE
    if metadata_file.is_file():
        if metadata_file.stat().st_size > MAX_METADATA_BYTES:
            raise IntakeError([f"{METADATA_FILE}: larger than {MAX_METADATA_BYTES} bytes"])
        try:
            capture_metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IntakeError([f"{METADATA_FILE}: not valid JSON ({exc})"]) from None
        metadata_file.unlink()  # it becomes the bag's tag file, not part of the payload
    bag_root = make_bag(
        files,
        staging / "bag" / "package",
        policy=archive.settings.ingest,
        capture_metadata=capture_metadata,
    )
    shutil.rmtree(staging / "package")
    return bag_root


def _public_location(archive: Archive, result: IngestResult) -> dict[str, Any] | None:
    """The coarse cell for the public, from the best precise location found."""
    if not result.locations:
        return None
    ranked = sorted(result.locations, key=lambda loc: loc.kind != "capture-metadata")
    best = ranked[0]
    if best.crs and best.crs not in ("EPSG:4326", "WGS84"):
        return None
    country = None
    if result.metadata is not None:
        country = getattr(result.metadata.object, "country", None)
    return coarsen(best.latitude, best.longitude, archive.settings.location, country).as_dict()


def _location_document(location: GeoLocation) -> dict[str, Any]:
    return {
        "latitude": location.latitude,
        "longitude": location.longitude,
        "altitude": location.altitude,
        "kind": location.kind,
        "crs": location.crs,
        "source": location.source,
    }


def _event(conn, submission_id: str, event: EventType, outcome: str, detail: str) -> None:
    agent = events.ensure_agent(conn, "software", *ARKHIV_AGENT)
    events.record_event(
        conn,
        event.uri,
        outcome,
        detail,
        submission_id=submission_id,
        agents_by_role=[(agent, "executing program")],
    )


_IDENTIFIER: Identifier | None = None


def shared_identifier() -> Identifier:
    """Loading PRONOM signatures takes a while; a worker loads them once."""
    global _IDENTIFIER
    if _IDENTIFIER is None:
        _IDENTIFIER = Identifier()
    return _IDENTIFIER


def purge(archive: Archive, submission_id: str) -> None:
    with reading(archive.engine) as conn:
        row = submissions.get(conn, submission_id)
    if row is None:
        raise ArkhivError(f"no submission {submission_id}")
    if row["status"] != "rejected":
        raise ArkhivError(f"submission {submission_id} is {row['status']}, not in quarantine")
    if row["quarantine_path"]:
        try:
            shutil.rmtree(row["quarantine_path"])
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ArkhivError(f"cannot purge submission {submission_id}: {exc}") from None
    with writing(archive.engine) as conn:
        _event(
            conn,
            submission_id,
            EventType.DELETION,
            "success",
            "quarantined package purged; its report stays in the catalog",
        )
        submissions.update_fields(conn, submission_id, status="purged", quarantine_path=None)
