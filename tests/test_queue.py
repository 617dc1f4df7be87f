import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from arkhiv.catalog.database import writing
from arkhiv.catalog.queue import JobQueue, RetryPolicy, enqueue
from arkhiv.catalog.tables import jobs


@pytest.fixture
def queue(archive):
    return JobQueue(archive.engine, RetryPolicy(max_attempts=3, backoff_base_seconds=10))


def shift(archive, job_id, column, delta):
    """Move one of a job's timestamps, as if time had passed."""
    with writing(archive.engine) as conn:
        value = conn.execute(select(jobs.c[column]).where(jobs.c.id == job_id)).scalar_one()
        conn.execute(update(jobs).where(jobs.c.id == job_id).values({column: value + delta}))


def expire_lease(archive, job_id):
    shift(archive, job_id, "lease_expires_at", -timedelta(hours=1))


def make_due(archive, job_id):
    shift(archive, job_id, "run_after", -timedelta(days=1))


def test_enqueue_claim_complete(queue):
    job_id = queue.enqueue("ingest", "ingest.bag", {"path": "/staging/1"})
    job = queue.claim(["ingest"], "w1", 60)
    assert job.id == job_id
    assert job.status == "running"
    assert job.attempts == 1
    assert job.payload == {"path": "/staging/1"}
    assert job.lease_owner == "w1"
    assert (job.lease_expires_at - job.started_at).total_seconds() == pytest.approx(60)
    assert queue.claim(["ingest"], "w2", 60) is None
    assert queue.complete(job_id, "w1", {"object": "ark:/1/a"})
    done = queue.get(job_id)
    assert done.status == "done"
    assert done.result == {"object": "ark:/1/a"}
    assert done.finished_at is not None
    assert queue.depth() == {"ingest": {"done": 1}}


def test_claim_respects_queues_priority_and_order(queue):
    low = queue.enqueue("audit", "audit.replica")
    other_queue = queue.enqueue("reconstruct", "reconstruct.photos")
    high = queue.enqueue("audit", "audit.replica", priority=5)
    later = queue.enqueue("audit", "audit.replica")
    claimed = [queue.claim(["audit"], "w", 60).id for _ in range(3)]
    assert claimed == [high, low, later]
    assert queue.claim(["audit"], "w", 60) is None
    assert queue.claim(None, "w", 60).id == other_queue


def test_unique_key_prevents_double_queueing(archive, queue):
    first = queue.enqueue("replicate", "replicate.object", unique_key="replicate:ark:/1/a")
    again = queue.enqueue("replicate", "replicate.object", unique_key="replicate:ark:/1/a")
    assert again == first
    with writing(archive.engine) as conn:
        assert enqueue(conn, "replicate", "replicate.object", unique_key="replicate:ark:/1/a") == (
            first,
            False,
        )
    claimed = queue.claim(None, "w", 60)
    # still running: a second one is refused
    assert queue.enqueue("replicate", "replicate.object", unique_key="replicate:ark:/1/a") == first
    queue.complete(claimed.id, "w")
    # finished: the same work may be queued again
    fresh = queue.enqueue("replicate", "replicate.object", unique_key="replicate:ark:/1/a")
    assert fresh != first
    assert queue.outstanding(None) == 1


def test_failure_retries_with_exponential_backoff_then_dies(archive, queue):
    job_id = queue.enqueue("audit", "audit.replica", max_attempts=3)
    for attempt in (1, 2, 3):
        job = queue.claim(None, "w", 60)
        assert (job.id, job.attempts) == (job_id, attempt)
        state = queue.fail(job_id, "w", f"disk error {attempt}")
        failed = queue.get(job_id)
        assert failed.last_error == f"disk error {attempt}"
        if attempt < 3:
            assert state == "queued"
            delay = (failed.run_after - job.started_at).total_seconds()
            nominal = 10 * 2 ** (attempt - 1)
            assert nominal <= delay <= nominal * 1.25 + 1
            assert queue.claim(None, "w", 60) is None  # backing off
            make_due(archive, job_id)
        else:
            assert state == "dead"
    dead = queue.get(job_id)
    assert dead.status == "dead"
    assert dead.attempts == 3
    assert [e["error"] for e in dead.errors] == ["disk error 1", "disk error 2", "disk error 3"]
    assert [e["attempt"] for e in dead.errors] == [1, 2, 3]
    assert queue.claim(None, "w", 60) is None
    assert queue.outstanding(None) == 0


def test_permanent_failure_dies_at_once(queue):
    job_id = queue.enqueue("ingest", "ingest.bag")
    queue.claim(None, "w", 60)
    assert queue.fail(job_id, "w", "not a bag", retryable=False) == "dead"
    assert queue.get(job_id).attempts == 1


def test_lost_lease_is_claimed_again_and_the_old_owner_cannot_finish(archive, queue):
    job_id = queue.enqueue("reconstruct", "reconstruct.photos")
    queue.claim(None, "dead-worker", 60)
    assert queue.claim(None, "w2", 60) is None
    expire_lease(archive, job_id)
    reclaimed = queue.claim(None, "w2", 60)
    assert (reclaimed.id, reclaimed.attempts, reclaimed.lease_owner) == (job_id, 2, "w2")
    assert not queue.heartbeat(job_id, "dead-worker", 60)
    assert not queue.complete(job_id, "dead-worker")
    assert queue.fail(job_id, "dead-worker", "late") is None
    assert queue.complete(job_id, "w2")
    assert queue.get(job_id).status == "done"


def test_heartbeat_extends_lease_and_records_progress(queue):
    job_id = queue.enqueue("derive", "derive.formats")
    job = queue.claim(None, "w", 2)
    time.sleep(0.05)
    assert queue.heartbeat(job_id, "w", 600, 0.5, "3 of 6 formats")
    beat = queue.get(job_id)
    assert beat.lease_expires_at > job.lease_expires_at + timedelta(seconds=500)
    assert (beat.progress, beat.progress_message) == (0.5, "3 of 6 formats")


def test_abandoned_last_attempt_is_reaped_dead(archive, queue):
    job_id = queue.enqueue("reconstruct", "reconstruct.photos", max_attempts=1)
    queue.claim(None, "crashed", 60)
    assert queue.reap_abandoned() == 0
    expire_lease(archive, job_id)
    assert queue.claim(None, "w2", 60) is None  # no attempts left: not claimed again
    assert queue.reap_abandoned() == 1
    dead = queue.get(job_id)
    assert dead.status == "dead"
    assert "lost its lease" in dead.last_error


def test_requeue_dead_job_and_prune_done(archive, queue):
    dead_id = queue.enqueue("ingest", "ingest.bag", max_attempts=1)
    queue.claim(None, "w", 60)
    queue.fail(dead_id, "w", "boom")
    assert queue.requeue(dead_id)
    assert not queue.requeue(dead_id)  # no longer dead
    assert queue.get(dead_id).status == "queued"

    done_id = queue.claim(None, "w", 60).id
    queue.complete(done_id, "w")
    assert queue.prune(timedelta(days=1)) == 0
    shift(archive, done_id, "finished_at", -timedelta(days=2))
    assert queue.prune(timedelta(days=1)) == 1
    assert queue.get(done_id) is None


def test_retry_policy_delays():
    policy = RetryPolicy(max_attempts=10, backoff_base_seconds=30, backoff_max_seconds=300)
    for attempt, nominal in [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (9, 300)]:
        delay = policy.delay(attempt)
        assert nominal <= delay <= nominal * 1.25
