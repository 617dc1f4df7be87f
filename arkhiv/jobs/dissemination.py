"""The `dip.prepare` job: a dissemination package asked for through the API is made in the
background (exports of a large model take a while) into `HOME/dips/<job>.zip`, then downloaded
by whoever asked for it (`access.dips.release_dip`). Packages are removed
`server.dip_retention_days` after they were made (hourly `dip.expire`); the job's result then
says when, and a new request rebuilds it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from arkhiv.access.viewers import Viewer
from arkhiv.archive import Archive
from arkhiv.catalog.queue import enqueue
from arkhiv.errors import ArkhivError
from arkhiv.jobs.registry import JobContext, PeriodicTask, PermanentJobError, job_handler, periodic

DIP_KIND = "dip.prepare"
DIP_QUEUE = "derive"
EXPIRE_KIND = "dip.expire"

periodic(PeriodicTask("expire-dips", timedelta(hours=1), "maintenance", EXPIRE_KIND))


def queue_dip(
    conn, archive: Archive, viewer: Viewer, object_id: str, formats: list[str], originals: bool
) -> int:
    job_id, _created = enqueue(
        conn,
        DIP_QUEUE,
        DIP_KIND,
        {
            "object": object_id,
            "formats": formats,
            "originals": originals,
            "recipient": viewer.name,
            "role": viewer.role,
        },
        max_attempts=archive.settings.jobs.max_attempts,
    )
    return job_id


def dip_path(archive: Archive, job_id: int) -> Path:
    return archive.settings.home / "dips" / f"{job_id}.zip"


def expire_dips(archive: Archive, now: float | None = None) -> list[int]:
    """Remove prepared packages older than `server.dip_retention_days` (and any whose job is
    gone), noting on each job when and why; returns the jobs whose package was removed."""
    folder = archive.settings.home / "dips"
    if not folder.is_dir():
        return []
    days = archive.settings.server.dip_retention_days
    cutoff = (now if now is not None else time.time()) - days * 86400
    removed = []
    for partial in folder.glob("*.partial"):  # a build killed half-way
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink(missing_ok=True)
        except OSError:
            continue
    for path in folder.glob("*.zip"):
        try:
            job_id = int(path.stem)
            made = path.stat().st_mtime
        except (ValueError, OSError):
            continue
        job = archive.queue.get(job_id)
        if made >= cutoff and job is not None:
            continue
        path.unlink(missing_ok=True)
        removed.append(job_id)
        if job is not None:
            archive.queue.amend_result(
                job_id,
                {
                    "removed_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "removed_because": f"packages are kept {days:g} days after they are made; "
                    "ask again and it is rebuilt",
                },
            )
    return sorted(removed)


@job_handler(EXPIRE_KIND)
def expire_prepared_dips(ctx: JobContext) -> dict[str, Any]:
    return {"removed": expire_dips(ctx.archive)}


@job_handler(DIP_KIND)
def prepare_dip(ctx: JobContext) -> dict[str, Any]:
    from sqlalchemy import select

    from arkhiv.access.dips import build_dip
    from arkhiv.access.viewers import Forbidden
    from arkhiv.catalog.database import reading
    from arkhiv.catalog.tables import users

    payload = ctx.payload
    # The recipient's role as it is now, not as it was when they asked: a partner downgraded
    # meanwhile gets what a researcher gets.
    with reading(ctx.archive.engine) as conn:
        account = conn.execute(
            select(users.c.role, users.c.disabled).where(users.c.username == payload["recipient"])
        ).first()
    if account is None or account.disabled:
        raise PermanentJobError(f"the account of {payload['recipient']} is gone or disabled")
    viewer = Viewer(payload["recipient"], account.role, ctx.archive.settings.access)
    output = dip_path(ctx.archive, ctx.job.id)
    output.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        result = build_dip(
            ctx.archive,
            viewer,
            payload["object"],
            output,
            tuple(payload["formats"]),
            payload["originals"],
        )
    except (Forbidden, ArkhivError) as exc:  # bad request or no model: retrying cannot help
        raise PermanentJobError(str(exc)) from exc
    document = result.as_dict()
    document.pop("path")
    return document
