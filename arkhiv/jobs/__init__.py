"""Follow-up work: handlers by job kind, the worker loop, and the periodic scheduler.
The queue itself lives in the catalog (`arkhiv.catalog.queue`)."""

from arkhiv.jobs.registry import JobContext, PeriodicTask, PermanentJobError, job_handler, periodic

__all__ = ["JobContext", "PeriodicTask", "PermanentJobError", "job_handler", "periodic"]
