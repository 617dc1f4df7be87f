"""The durable job queue, kept in the catalog.

States: queued -> running -> done, or back to queued with a back-off delay after a failure, or
dead after `max_attempts`. A running job belongs to the worker holding its lease; a worker renews
the lease with heartbeats, and a job whose lease ran out (its worker died) is claimed again.
On PostgreSQL claims use `FOR UPDATE SKIP LOCKED`, so workers never wait on each other; on SQLite
the claim is one statement inside a `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from arkhiv.catalog.database import now, reading, writing
from arkhiv.catalog.tables import jobs

MAX_KEPT_ERRORS = 20
ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class Job:
    id: int
    queue: str
    kind: str
    payload: dict[str, Any]
    unique_key: str | None
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    heartbeat_at: datetime | None
    progress: float | None
    progress_message: str | None
    last_error: str | None
    errors: list[dict[str, Any]]
    result: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row) -> Job:
        return cls(**row._mapping)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base_seconds: float = 30.0
    backoff_max_seconds: float = 6 * 3600.0

    def delay(self, attempts: int) -> float:
        """Exponential back-off after the n-th failed attempt, with up to 25% jitter so that
        jobs that failed together do not retry together."""
        nominal = min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempts - 1))
        return nominal * (1 + random.random() / 4)


def enqueue(
    conn: Connection,
    queue: str,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    unique_key: str | None = None,
    priority: int = 0,
    max_attempts: int = 5,
    run_after: datetime | None = None,
) -> tuple[int, bool]:
    """Queue a job inside the caller's transaction (so it commits with the work that caused it).

    Returns (job id, created). With a `unique_key` already queued or running, nothing is added
    and the existing job's id comes back with created=False.
    """
    at = now(conn)
    values = {
        "queue": queue,
        "kind": kind,
        "payload": payload or {},
        "unique_key": unique_key,
        "status": "queued",
        "priority": priority,
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or at,
        "errors": [],
        "created_at": at,
    }
    if unique_key is None:
        return conn.execute(insert(jobs).values(values).returning(jobs.c.id)).scalar_one(), True
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(jobs)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=[jobs.c.unique_key], index_where=jobs.c.status.in_(ACTIVE_STATES)
        )
        .returning(jobs.c.id)
    )
    job_id = conn.execute(statement).scalar_one_or_none()
    if job_id is not None:
        return job_id, True
    existing = conn.execute(
        select(jobs.c.id).where(jobs.c.unique_key == unique_key, jobs.c.status.in_(ACTIVE_STATES))
    ).scalar_one()
    return existing, False


class JobQueue:
    """Queue operations, each in its own short transaction."""

    def __init__(self, engine: Engine, retry: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()

    def enqueue(self, queue: str, kind: str, payload: dict[str, Any] | None = None, **kw) -> int:
        kw.setdefault("max_attempts", self.retry.max_attempts)
        with writing(self.engine) as conn:
            return enqueue(conn, queue, kind, payload, **kw)[0]

    def claim(self, queues: Sequence[str] | None, owner: str, lease_seconds: float) -> Job | None:
        """Take the most urgent due job (or one whose worker lost its lease) and lease it."""
        params: dict[str, Any] = {"owner": owner}
        if queues:
            params["queues"] = list(queues)
        with writing(self.engine) as conn:
            at = now(conn)
            params.update(at=at, expires=at + timedelta(seconds=lease_seconds))
            row = conn.execute(_CLAIM[bool(queues)], params).first()
            return Job.from_row(row) if row else None

    def claim_job(self, job_id: int, owner: str, lease_seconds: float) -> Job | None:
        """Lease one particular job if it is due (e.g. `arkhiv submit --wait` running its own
        ingest); None when it is running elsewhere, finished or backing off."""
        with writing(self.engine) as conn:
            at = now(conn)
            row = conn.execute(
                _CLAIM_ONE,
                {
                    "job_id": job_id,
                    "owner": owner,
                    "at": at,
                    "expires": at + timedelta(seconds=lease_seconds),
                },
            ).first()
            return Job.from_row(row) if row else None

    def heartbeat(
        self,
        job_id: int,
        owner: str,
        lease_seconds: float,
        progress: float | None = None,
        message: str | None = None,
    ) -> bool:
        """Extend the lease; False when this worker no longer holds the job."""
        if progress is not None:
            progress = max(0.0, min(1.0, progress))
        with writing(self.engine) as conn:
            at = now(conn)
            result = conn.execute(
                _HEARTBEAT,
                {
                    "job_id": job_id,
                    "owner": owner,
                    "at": at,
                    "expires": at + timedelta(seconds=lease_seconds),
                    "progress": progress,
                    "message": message,
                },
            )
            return result.rowcount == 1

    def complete(self, job_id: int, owner: str, result: Any = None) -> bool:
        """Mark done; False (and nothing changed) when the lease was lost meanwhile."""
        with writing(self.engine) as conn:
            changed = conn.execute(
                _COMPLETE, {"job_id": job_id, "owner": owner, "result": result, "at": now(conn)}
            )
            return changed.rowcount == 1

    def fail(self, job_id: int, owner: str, error: str, *, retryable: bool = True) -> str | None:
        """Record a failed attempt. Returns the new state ('queued' for a retry, or 'dead'),
        or None when the lease was lost meanwhile."""
        with writing(self.engine) as conn:
            row = conn.execute(
                select(jobs.c.attempts, jobs.c.max_attempts, jobs.c.errors)
                .where(*_HELD)
                .with_for_update(),
                {"job_id": job_id, "owner": owner},
            ).first()
            if row is None:
                return None
            at = now(conn)
            errors = [
                *row.errors,
                {"attempt": row.attempts, "at": at.isoformat(), "worker": owner, "error": error},
            ][-MAX_KEPT_ERRORS:]
            values: dict[str, Any] = {
                "last_error": error,
                "errors": errors,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if retryable and row.attempts < row.max_attempts:
                values.update(
                    status="queued",
                    run_after=at + timedelta(seconds=self.retry.delay(row.attempts)),
                )
            else:
                values.update(status="dead", finished_at=at)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(values))
            return values["status"]

    def reap_abandoned(self) -> int:
        """Jobs whose worker vanished on their last allowed attempt go dead, error kept."""
        with writing(self.engine) as conn:
            at = now(conn)
            return conn.execute(
                update(jobs)
                .where(
                    jobs.c.status == "running",
                    jobs.c.lease_expires_at < at,
                    jobs.c.attempts >= jobs.c.max_attempts,
                )
                .values(
                    status="dead",
                    finished_at=at,
                    last_error="worker lost its lease (crashed or killed) on the last attempt",
                    lease_owner=None,
                    lease_expires_at=None,
                )
            ).rowcount

    def requeue(self, job_id: int) -> bool:
        """Give a dead job a fresh set of attempts (an operator's decision)."""
        with writing(self.engine) as conn:
            return (
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.status == "dead")
                    .values(status="queued", attempts=0, run_after=now(conn), finished_at=None)
                ).rowcount
                == 1
            )

    def prune(self, older_than: timedelta) -> int:
        """Forget finished jobs; dead ones stay until an operator looks at them."""
        with writing(self.engine) as conn:
            cutoff = now(conn) - older_than
            return conn.execute(
                delete(jobs).where(jobs.c.status == "done", jobs.c.finished_at < cutoff)
            ).rowcount

    def amend_result(self, job_id: int, changes: dict[str, Any]) -> bool:
        """Add `changes` to a finished job's result (what became of its output later, say);
        False when there is no such finished job."""
        with writing(self.engine) as conn:
            row = conn.execute(
                select(jobs.c.result).where(jobs.c.id == job_id, jobs.c.status == "done")
            ).first()
            if row is None:
                return False
            result = dict(row.result) if isinstance(row.result, dict) else {}
            result.update(changes)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(result=result))
            return True

    def get(self, job_id: int) -> Job | None:
        with reading(self.engine) as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            return Job.from_row(row) if row else None

    def list(
        self,
        queue: str | None = None,
        status: str | None = None,
        limit: int = 50,
        kind: str | None = None,
    ) -> list[Job]:
        query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if queue:
            query = query.where(jobs.c.queue == queue)
        if kind:
            query = query.where(jobs.c.kind == kind)
        if status:
            query = query.where(jobs.c.status == status)
        with reading(self.engine) as conn:
            return [Job.from_row(row) for row in conn.execute(query)]

    def of_object(self, object_id: str, limit: int = 10) -> list[Job]:
        """The latest jobs about one object (those keyed `kind:object`), newest first."""
        query = (
            select(jobs)
            .where(jobs.c.unique_key.like(f"%:{object_id}"))
            .order_by(jobs.c.id.desc())
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return [Job.from_row(row) for row in conn.execute(query)]

    def depth(self) -> dict[str, dict[str, int]]:
        """{queue: {state: count}} for every queue that holds jobs."""
        query = select(jobs.c.queue, jobs.c.status, func.count()).group_by(
            jobs.c.queue, jobs.c.status
        )
        out: dict[str, dict[str, int]] = {}
        with reading(self.engine) as conn:
            for queue, status, count in conn.execute(query):
                out.setdefault(queue, {})[status] = count
        return out

    def outstanding(self, queues: Sequence[str] | None) -> int:
        """Jobs still to finish: queued (due or backing off) or running."""
        query = select(func.count()).where(jobs.c.status.in_(ACTIVE_STATES))
        if queues:
            query = query.where(jobs.c.queue.in_(list(queues)))
        with reading(self.engine) as conn:
            return conn.execute(query).scalar_one()


# The hot statements are built once: constructing a statement costs more than running it.


def _claim_statement(by_queue: bool = False, by_id: bool = False):
    at = bindparam("at", type_=jobs.c.run_after.type)
    due = or_(
        and_(jobs.c.status == "queued", jobs.c.run_after <= at),
        and_(
            jobs.c.status == "running",
            jobs.c.lease_expires_at < at,
            jobs.c.attempts < jobs.c.max_attempts,
        ),
    )
    candidate = select(jobs.c.id).where(due)
    if by_queue:
        candidate = candidate.where(jobs.c.queue.in_(bindparam("queues", expanding=True)))
    if by_id:
        candidate = candidate.where(jobs.c.id == bindparam("job_id"))
    candidate = (
        candidate.order_by(jobs.c.priority.desc(), jobs.c.run_after, jobs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return (
        update(jobs)
        .where(jobs.c.id == candidate.scalar_subquery())
        .values(
            status="running",
            attempts=jobs.c.attempts + 1,
            lease_owner=bindparam("owner"),
            lease_expires_at=bindparam("expires", type_=jobs.c.lease_expires_at.type),
            heartbeat_at=at,
            started_at=at,
            progress=None,
            progress_message=None,
        )
        .returning(*jobs.c)
    )


_CLAIM = {False: _claim_statement(), True: _claim_statement(by_queue=True)}
_CLAIM_ONE = _claim_statement(by_id=True)
_HELD = (
    jobs.c.id == bindparam("job_id"),
    jobs.c.status == "running",
    jobs.c.lease_owner == bindparam("owner"),
)
_HEARTBEAT = (
    update(jobs)
    .where(*_HELD)
    .values(
        lease_expires_at=bindparam("expires", type_=jobs.c.lease_expires_at.type),
        heartbeat_at=bindparam("at", type_=jobs.c.heartbeat_at.type),
        progress=func.coalesce(bindparam("progress", type_=jobs.c.progress.type), jobs.c.progress),
        progress_message=func.coalesce(
            bindparam("message", type_=jobs.c.progress_message.type), jobs.c.progress_message
        ),
    )
)
_COMPLETE = (
    update(jobs)
    .where(*_HELD)
    .values(
        status="done",
        result=bindparam("result", type_=jobs.c.result.type),
        progress=1.0,
        finished_at=bindparam("at", type_=jobs.c.finished_at.type),
        lease_owner=None,
        lease_expires_at=None,
    )
)
