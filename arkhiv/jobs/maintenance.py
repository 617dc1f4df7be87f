"""The archive's own housekeeping jobs."""

from __future__ import annotations

from datetime import timedelta

from arkhiv.jobs.registry import JobContext, PeriodicTask, job_handler, periodic
from arkhiv.storage import LocalStore

periodic(PeriodicTask("prune-jobs", timedelta(days=1), "maintenance", "jobs.prune"))


@job_handler("jobs.prune")
def prune_jobs(ctx: JobContext) -> dict[str, int]:
    """Finished jobs past retention, and partial writes that writers killed a day ago left in
    local stores' incoming folders."""
    retention = timedelta(days=ctx.archive.settings.jobs.retention_days)
    debris = 0
    for store in ctx.archive.stores.values():
        if isinstance(store, LocalStore):
            debris += store.clean_incoming(older_than_seconds=86400)
    return {"pruned": ctx.queue.prune(retention), "partial_writes_removed": debris}
