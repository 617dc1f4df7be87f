"""The rolling audit: every hour each store gets an `fixity.audit` job for its share of the
replicas due, so that every replica is re-verified within its interval and the reading is spread
evenly over the days instead of one big pass."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.queue import enqueue
from arkhiv.catalog.tables import replicas, stores
from arkhiv.fixity.audit import audit, due_before
from arkhiv.jobs.registry import JobContext, PeriodicTask, job_handler, periodic

AUDIT_KIND = "fixity.audit"
SWEEP_KIND = "fixity.audit_sweep"
SWEEP_EVERY = timedelta(hours=1)

periodic(PeriodicTask("audit-sweep", SWEEP_EVERY, "audit", SWEEP_KIND))


def store_interval_days(archive, name: str) -> float:
    store = archive.settings.store(name)
    return store.audit_interval_days or archive.settings.preservation.audit_interval_days


@job_handler(SWEEP_KIND)
def audit_sweep(ctx: JobContext) -> dict[str, Any]:
    """Queue each store's share for this hour: its replicas divided by the sweeps in its
    interval (rounded up), oldest checks first."""
    archive = ctx.archive
    queued = {}
    with reading(archive.engine) as conn:
        counts = dict(
            conn.execute(
                select(stores.c.name, func.count(replicas.c.id))
                .join(replicas, replicas.c.store_id == stores.c.id)
                .where(stores.c.active.is_(True))
                .group_by(stores.c.name)
            ).all()
        )
    with writing(archive.engine) as conn:
        for name, count in sorted(counts.items()):
            if name not in archive.stores:
                continue
            sweeps = store_interval_days(archive, name) * timedelta(days=1) / SWEEP_EVERY
            share = math.ceil(count / max(sweeps, 1))
            enqueue(
                conn,
                "audit",
                AUDIT_KIND,
                {"store": name, "limit": share},
                unique_key=f"{AUDIT_KIND}:{name}",
                max_attempts=archive.settings.jobs.max_attempts,
            )
            queued[name] = share
    return {"queued": queued}


@job_handler(AUDIT_KIND)
def audit_job(ctx: JobContext) -> dict[str, Any]:
    """Audit up to `limit` of a store's replicas, the longest unchecked first, and repair."""
    name = ctx.payload["store"]
    interval = store_interval_days(ctx.archive, name)
    # A replica checked within the last sweeps' worth of its interval is not due yet.
    report = audit(
        ctx.archive,
        store=name,
        limit=ctx.payload.get("limit"),
        due_before=due_before(interval / 2),
    )
    result = report.as_dict()
    result.pop("failures")
    result["failed"] = len(report.failures)
    return result
