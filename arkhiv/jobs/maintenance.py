"""The archive's own housekeeping jobs."""

from __future__ import annotations

from datetime import timedelta

from arkhiv.jobs.registry import JobContext, PeriodicTask, job_handler, periodic

periodic(PeriodicTask("prune-jobs", timedelta(days=1), "maintenance", "jobs.prune"))


@job_handler("jobs.prune")
def prune_jobs(ctx: JobContext) -> dict[str, int]:
    retention = timedelta(days=ctx.archive.settings.jobs.retention_days)
    return {"pruned": ctx.queue.prune(retention)}
