import itertools
import threading
import time

from arkhiv.jobs.worker import Worker


def test_burst_worker_runs_jobs_until_drained(archive, tmp_path):
    log = tmp_path / "log"
    ids = [archive.queue.enqueue("ingest", "test.record", {"log": str(log)}) for _ in range(5)]
    assert Worker(archive, ["ingest"], burst=True).run() == 5
    for job_id in ids:
        job = archive.queue.get(job_id)
        assert job.status == "done"
        assert job.progress == 1.0
    assert sum(line.startswith("end ") for line in log.read_text().splitlines()) == 5


def test_worker_takes_only_its_queues(archive, tmp_path):
    log = str(tmp_path / "log")
    mine = archive.queue.enqueue("reconstruct", "test.record", {"log": log})
    other = archive.queue.enqueue("audit", "test.record", {"log": log})
    worker = Worker(archive, ["reconstruct"], burst=True)
    assert worker.run() == 1
    assert archive.queue.get(mine).status == "done"
    assert archive.queue.get(other).status == "queued"


def test_failing_job_retries_with_backoff_then_ends_dead_with_errors_kept(archive):
    job_id = archive.queue.enqueue("audit", "test.fail")  # max_attempts 3, back-off 0.2 s
    started = time.monotonic()
    Worker(archive, burst=True).run()
    elapsed = time.monotonic() - started
    job = archive.queue.get(job_id)
    assert job.status == "dead"
    assert job.attempts == 3
    assert job.last_error.startswith("RuntimeError: scanner offline (attempt 3)")
    assert "Traceback" in job.last_error or "job_handlers.py" in job.last_error
    assert [entry["attempt"] for entry in job.errors] == [1, 2, 3]
    assert all("scanner offline" in entry["error"] for entry in job.errors)
    assert elapsed >= 0.2 + 0.4  # two back-offs: 0.2 s then 0.4 s
    from datetime import datetime

    moments = [datetime.fromisoformat(entry["at"]) for entry in job.errors]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(moments)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4


def test_permanent_error_and_unknown_kind_die_at_once(archive):
    rejected = archive.queue.enqueue("ingest", "test.reject")
    unknown = archive.queue.enqueue("ingest", "no.such.kind")
    Worker(archive, burst=True).run()
    job = archive.queue.get(rejected)
    assert (job.status, job.attempts, job.last_error) == ("dead", 1, "the package is not a bag")
    job = archive.queue.get(unknown)
    assert (job.status, job.attempts) == ("dead", 1)
    assert "no handler for job kind 'no.such.kind'" in job.last_error


def test_progress_is_visible_while_a_job_runs(archive):
    job_id = archive.queue.enqueue("reconstruct", "test.progress")
    worker = Worker(archive, burst=True)
    thread = threading.Thread(target=worker.run)
    thread.start()
    seen = set()
    while thread.is_alive():
        job = archive.queue.get(job_id)
        if job.status == "running" and job.progress is not None:
            seen.add((job.progress, job.progress_message))
        time.sleep(0.05)
    thread.join()
    assert seen, "no progress was ever visible"
    assert all(0 < fraction <= 1 and message.startswith("step ") for fraction, message in seen)
    assert archive.queue.get(job_id).status == "done"


def test_stop_event_ends_an_idle_worker(archive):
    stop = threading.Event()
    worker = Worker(archive, stop=stop)
    thread = threading.Thread(target=worker.run)
    thread.start()
    time.sleep(0.2)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
