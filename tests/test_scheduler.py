import signal
import time
from datetime import timedelta

from sqlalchemy import func, select, update

from arkhiv.catalog import leases
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import jobs
from arkhiv.catalog.tables import leases as leases_table
from arkhiv.catalog.tables import schedule as schedule_table
from arkhiv.jobs.registry import PeriodicTask
from arkhiv.jobs.scheduler import LEASE_NAME, Scheduler
from arkhiv.jobs.worker import Worker
from tests.conftest import worker_processes

HOURLY = [
    PeriodicTask("hourly-audit", timedelta(hours=1), "audit", "test.record", {"log": "/dev/null"})
]


def shift(archive, table, column, delta):
    with writing(archive.engine) as conn:
        for row in conn.execute(select(table)).all():
            key = next(iter(table.primary_key.columns))
            conn.execute(
                update(table)
                .where(key == getattr(row, key.name))
                .values({column: getattr(row, column) + delta})
            )


def test_only_the_lease_holder_enqueues_and_a_successor_carries_on(archive):
    first = Scheduler(archive, holder="machine-1", tasks=HOURLY)
    second = Scheduler(archive, holder="machine-2", tasks=HOURLY)
    created = first.tick()
    assert len(created) == 1
    assert second.tick() == []  # not the leader
    assert first.tick() == []  # leader, but the task is not due again for an hour
    assert leases.holder(archive.engine, LEASE_NAME) == "machine-1"

    # machine-1 goes silent; its lease runs out and machine-2 takes over
    shift(archive, leases_table, "expires_at", -timedelta(hours=1))
    assert second.tick() == []  # leads now, and knows the task already ran
    assert leases.holder(archive.engine, LEASE_NAME) == "machine-2"
    assert first.tick() == []

    Worker(archive, burst=True).run()
    shift(archive, schedule_table, "next_run_at", -timedelta(hours=1))
    again = second.tick()
    assert len(again) == 1 and again != created
    assert first.tick() == []


def test_a_due_task_is_not_queued_twice_while_its_job_waits(archive):
    scheduler = Scheduler(archive, holder="m", tasks=HOURLY)
    assert len(scheduler.tick()) == 1
    shift(archive, schedule_table, "next_run_at", -timedelta(hours=2))
    assert scheduler.tick() == []  # the earlier job is still queued
    assert archive.queue.outstanding(["audit"]) == 1


def test_background_scheduler_ticks_and_releases_its_lease(archive, monkeypatch):
    archive.settings.scheduler.tick_seconds = 0.1
    scheduler = Scheduler(archive, holder="bg")
    assert any(task.kind == "jobs.prune" for task in scheduler.tasks)
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while not archive.queue.list(queue="maintenance"):
            assert time.monotonic() < deadline, "the scheduler never enqueued"
            time.sleep(0.05)
    finally:
        scheduler.shutdown()
    assert leases.holder(archive.engine, LEASE_NAME) is None
    Worker(archive, ["maintenance"], burst=True).run()
    (job,) = archive.queue.list(queue="maintenance", kind="jobs.prune")
    assert job.status == "done"
    assert job.result == {"pruned": 0, "partial_writes_removed": 0}


def test_two_worker_processes_enqueue_periodic_work_once(archive, archive_env, tmp_path):
    env = {**archive_env, "ARKHIV_SCHEDULER__TICK_SECONDS": "0.2"}
    args = ["--scheduler", "--queue", "maintenance"]
    with worker_processes(2, args, env, tmp_path) as (workers, logs):
        # Both must be able to stop gracefully before they are asked to: a loaded machine can
        # take longer than any fixed wait to start Python.
        deadline = time.monotonic() + 60
        while not all("ready" in log.read_text() for log in logs):
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            time.sleep(0.1)
        time.sleep(2)  # several scheduler ticks each
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    assert [w.returncode for w in workers] == [0, 0], [f.read_text() for f in logs]
    with reading(archive.engine) as conn:
        count = conn.execute(select(func.count()).where(jobs.c.kind == "jobs.prune")).scalar_one()
    assert count == 1
