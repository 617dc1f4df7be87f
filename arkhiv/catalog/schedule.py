"""When each periodic task last ran and runs next, so that a new scheduler leader carries on
where the last one stopped instead of starting every interval again."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert, select, update

from arkhiv.catalog.tables import schedule


def next_run(conn: Connection, task: str) -> datetime | None:
    return conn.execute(select(schedule.c.next_run_at).where(schedule.c.task == task)).scalar()


def record_run(
    conn: Connection, task: str, ran_at: datetime, next_run_at: datetime, job_id: int | None
) -> None:
    values = {"next_run_at": next_run_at, "last_run_at": ran_at, "last_job_id": job_id}
    if conn.execute(update(schedule).where(schedule.c.task == task).values(values)).rowcount == 0:
        conn.execute(insert(schedule).values(task=task, **values))
