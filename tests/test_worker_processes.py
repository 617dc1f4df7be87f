"""The queue under real concurrency: worker processes competing for jobs, one of them killed."""

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from arkhiv.catalog.database import writing
from arkhiv.catalog.queue import enqueue
from tests.conftest import worker_processes

JOBS = 1000
WORKERS = 4


@pytest.mark.slow
def test_four_workers_drain_1000_jobs_exactly_once_despite_a_sigkill(
    archive, archive_env, tmp_path
):
    log = tmp_path / "executions.log"
    marker = tmp_path / "stalled.pid"
    with writing(archive.engine) as conn:
        # Claimed first (priority), hangs on attempt 1 until its worker is killed.
        stalled_id, _ = enqueue(
            conn,
            "test",
            "test.stall-first-attempt",
            {"log": str(log), "marker": str(marker)},
            priority=10,
            max_attempts=3,
        )
        ids = [
            enqueue(conn, "test", "test.record", {"log": str(log)}, max_attempts=3)[0]
            for _ in range(JOBS)
        ]

    burst = ["--burst", "--queue", "test"]
    with worker_processes(WORKERS, burst, archive_env, tmp_path) as (workers, logs):
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "the stalling job never started"
            time.sleep(0.05)
        killed_pid = int(marker.read_text())
        assert killed_pid in {w.pid for w in workers}
        os.kill(killed_pid, signal.SIGKILL)
        for worker in workers:
            worker.wait(timeout=60)
    codes = {w.pid: w.returncode for w in workers}
    assert codes.pop(killed_pid) == -signal.SIGKILL
    assert set(codes.values()) == {0}, [log_file.read_text()[-2000:] for log_file in logs]

    queue = archive.queue
    finished = [queue.get(job_id) for job_id in ids]
    assert all(job.status == "done" and job.attempts == 1 for job in finished)

    stalled = queue.get(stalled_id)
    assert stalled.status == "done"
    assert stalled.attempts == 2
    assert stalled.result["pid"] != killed_pid

    lines = [line.split() for line in Path(log).read_text().splitlines()]
    ends = Counter(int(job) for kind, job, _pid, _attempt in lines if kind == "end")
    assert set(ends) == {*ids, stalled_id}
    assert set(ends.values()) == {1}, "a job finished more than once"
    stalled_starts = [
        (int(pid), int(a))
        for kind, job, pid, a in lines
        if int(job) == stalled_id and kind == "start"
    ]
    assert stalled_starts[0] == (killed_pid, 1)
    assert stalled_starts[1][0] != killed_pid and stalled_starts[1][1] == 2

    by_worker = Counter(job.result["pid"] for job in finished)
    survivors = {w.pid for w in workers} - {killed_pid}
    assert set(by_worker) <= survivors | {killed_pid}
    assert len(set(by_worker) & survivors) >= 2, f"work was not shared: {by_worker}"
    assert queue.outstanding(["test"]) == 0
