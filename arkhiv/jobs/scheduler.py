"""Periodic work. APScheduler ticks in every process that runs a scheduler (`arkhiv serve`,
`arkhiv worker`); on each tick only the holder of the catalog's `scheduler` lease enqueues, so a
fleet of machines enqueues each periodic job once. The schedule's state is in the catalog, so a new
leader carries on where the old one stopped."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from arkhiv.archive import Archive
from arkhiv.catalog import leases, schedule
from arkhiv.catalog.database import now, writing
from arkhiv.catalog.queue import enqueue
from arkhiv.jobs import registry
from arkhiv.jobs.registry import PeriodicTask
from arkhiv.jobs.worker import worker_id

log = logging.getLogger("arkhiv.scheduler")
LEASE_NAME = "scheduler"


class Scheduler:
    def __init__(
        self,
        archive: Archive,
        holder: str | None = None,
        tasks: Sequence[PeriodicTask] | None = None,
    ) -> None:
        self.archive = archive
        self.holder = holder or worker_id()
        self.settings = archive.settings.scheduler
        registry.load(archive.settings.jobs.plugins)
        self.tasks = list(tasks) if tasks is not None else registry.periodic_tasks()
        self._background: BackgroundScheduler | None = None

    def tick(self) -> list[int]:
        """Enqueue every due task if this process leads; returns the ids of new jobs."""
        created = []
        with writing(self.archive.engine) as conn:
            if not leases.acquire(conn, LEASE_NAME, self.holder, self.settings.lease_seconds):
                return []
            at = now(conn)
            for task in self.tasks:
                due = schedule.next_run(conn, task.name)
                if due is not None and due > at:
                    continue
                job_id, new = enqueue(
                    conn,
                    task.queue,
                    task.kind,
                    task.payload,
                    unique_key=f"periodic:{task.name}",
                    max_attempts=self.archive.settings.jobs.max_attempts,
                )
                schedule.record_run(conn, task.name, at, at + task.interval, job_id)
                if new:
                    created.append(job_id)
        return created

    def start(self) -> None:
        self._background = BackgroundScheduler(timezone="UTC")
        self._background.add_job(
            self._safe_tick,
            "interval",
            seconds=self.settings.tick_seconds,
            id="arkhiv-tick",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        self._background.start()

    def shutdown(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None
        try:
            leases.release(self.archive.engine, LEASE_NAME, self.holder)
        except Exception:
            log.exception("could not release the scheduler lease; it expires by itself")

    def _safe_tick(self) -> None:
        try:
            created = self.tick()
        except Exception:  # the next tick tries again; one bad tick must not stop the schedule
            log.exception("scheduler tick failed")
            return
        if created:
            log.info("scheduler enqueued jobs %s", created)
