"""Jobs that write AIP versions: v1 of an accepted submission (`aip.archive_submission`) and a
metadata edit (`arkhiv describe`, run directly rather than queued: it is small and the user
waits for it)."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from arkhiv.aip import description as descriptions
from arkhiv.aip.archiving import (
    GENERATED,
    PendingEvent,
    VersionPlan,
    VersionResult,
    plan_first_version,
    user_for,
    write_version,
)
from arkhiv.aip.preservation import REPLICATE_KIND, queue_replication
from arkhiv.aip.replication import replicate_object
from arkhiv.archive import Archive
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog import submissions
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import sealed_locations
from arkhiv.errors import ArkhivError
from arkhiv.jobs.ingest import ARCHIVE_KIND
from arkhiv.jobs.reconstruction import needs_model, queue_reconstruction
from arkhiv.jobs.registry import JobContext, PeriodicTask, PermanentJobError, job_handler, periodic
from arkhiv.metadata.premis_vocabulary import EventType

SWEEP_KIND = "aip.replication_sweep"


periodic(PeriodicTask("replication-sweep", timedelta(hours=1), "replicate", SWEEP_KIND))


@job_handler(REPLICATE_KIND)
def replicate_job(ctx: JobContext) -> dict[str, Any]:
    return replicate_object(ctx.archive, ctx.payload["object"], ctx.owner)


@job_handler(SWEEP_KIND)
def replication_sweep(ctx: JobContext) -> dict[str, Any]:
    """Queue a catch-up for every object short of its copies (those whose jobs died too)."""
    with writing(ctx.archive.engine) as conn:
        at_risk = [row["id"] for row in catalog_objects.list_objects(conn, "at_risk", 100000)]
        for object_id in at_risk:
            queue_replication(conn, ctx.archive, object_id)
    return {"queued": len(at_risk)}


@job_handler(ARCHIVE_KIND)
def archive_submission_job(ctx: JobContext) -> dict[str, Any]:
    return archive_submission(ctx.archive, ctx.payload["submission"], ctx.owner)


def archive_submission(archive: Archive, submission_id: str, holder: str) -> dict[str, Any]:
    """Write v1 of the object an accepted submission becomes, then clear its staging."""
    with reading(archive.engine) as conn:
        row = submissions.get(conn, submission_id)
        sealed = submissions.sealed_locations_of(conn, submission_id) if row else []
    if row is None:
        raise PermanentJobError(f"no submission {submission_id}")
    staging = archive.staging_dir / submission_id
    if row["status"] == "archived":  # committed before a crash: only the clean-up is left
        shutil.rmtree(staging, ignore_errors=True)
        return {"submission": submission_id, "object": row["object_id"], "status": "archived"}
    if row["status"] != "accepted" or not row["object_id"]:
        raise PermanentJobError(f"submission {submission_id} is {row['status']}, not accepted")
    if not row["staging_path"] or not Path(row["staging_path"]).is_dir():
        raise PermanentJobError(f"the staged package of {submission_id} is gone")

    def record_archived(conn, plan: VersionPlan) -> None:
        if not submissions.advance(conn, submission_id, "accepted", "archived", staging_path=None):
            raise ArkhivError(f"submission {submission_id} was archived by another worker")
        conn.execute(
            update(sealed_locations)
            .where(sealed_locations.c.submission_id == submission_id)
            .values(object_id=plan.object_id)
        )
        if archive.settings.reconstruction.on_ingest and needs_model(
            [new.logical_path for new in plan.new_files]
        ):
            queue_reconstruction(conn, archive, plan.object_id)

    result = write_version(
        archive,
        row["object_id"],
        lambda inputs: plan_first_version(archive, row, sealed, inputs),
        staging / "aip",
        lease_holder=holder,
        on_commit=record_archived,
    )
    shutil.rmtree(staging, ignore_errors=True)
    return {"submission": submission_id, **result.as_dict()}


def describe_object(
    archive: Archive, object_id: str, edits: dict[str, str], user: str | None
) -> tuple[VersionResult | None, dict[str, tuple[Any, Any]]]:
    """Apply metadata edits as a new version with a PREMIS metadata-modification event.
    Returns (the new version, or None when nothing changed; the changes)."""
    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
        if row is None:
            raise ArkhivError(f"no object {object_id}")
        if row["head_version"] == 0:
            raise ArkhivError(f"{object_id} is still being archived ({row['status']})")
        head = catalog_objects.version_state(conn, object_id, row["head_version"])
    record, changes = descriptions.apply_edits(row["description"] or {}, edits)
    if not changes:
        return None, {}

    def plan(_inputs: Path) -> VersionPlan:
        created = datetime.now(UTC)
        user_type, ocfl_user = user_for(user)
        listed = ", ".join(f"{name}" for name in sorted(changes))
        return VersionPlan(
            object_id=object_id,
            number=row["head_version"] + 1,
            created=created,
            message=f"Description edited: {listed}",
            user_type=user_type,
            user=ocfl_user,
            record=record,
            carried={path: file["sha512"] for path, file in head.items() if path not in GENERATED},
            new_files=[],
            events=[
                PendingEvent(
                    str(uuid.uuid4()),
                    EventType.METADATA_MODIFICATION,
                    created,
                    "success",
                    f"description edited by {ocfl_user.name}: {listed}",
                    {
                        "changes": {
                            name: {"from": old, "to": new}
                            for name, (old, new) in sorted(changes.items())
                        }
                    },
                )
            ],
        )

    workdir = archive.staging_dir / f"describe-{object_id.replace(':', '_').replace('/', '_')}"
    if (workdir / "plan.json").exists():
        # An edit interrupted after it was planned: finish it first, then plan this one on top.
        write_version(archive, object_id, _no_new_plan, workdir, lease_holder=_holder())
        return describe_object(archive, object_id, edits, user)
    result = write_version(archive, object_id, plan, workdir, lease_holder=_holder())
    return result, changes


def _holder() -> str:
    return f"describe:{uuid.uuid4()}"


def _no_new_plan(_inputs: Path) -> VersionPlan:
    raise ArkhivError("the interrupted edit's plan is unreadable; remove it from staging")
