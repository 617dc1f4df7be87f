"""The worker loop: claim a job, run its handler while a heartbeat thread keeps the lease,
record the outcome. Any number of workers on any machines may share one catalog."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Sequence

from arkhiv.archive import Archive
from arkhiv.catalog.queue import Job
from arkhiv.jobs import registry
from arkhiv.jobs.registry import JobContext, PermanentJobError, error_signature

log = logging.getLogger("arkhiv.worker")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        archive: Archive,
        queues: Sequence[str] | None = None,
        *,
        burst: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.archive = archive
        self.queue = archive.queue
        self.queues = list(queues) if queues else None
        self.burst = burst
        self.stop = stop or threading.Event()
        self.owner = worker_id()
        self.settings = archive.settings.jobs
        self.processed = 0
        self._heart = _Heartbeat(self.settings.heartbeat_interval)
        registry.load(self.settings.plugins)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT finish the current job, then exit; a second signal exits at once."""

        def request_stop(signum, _frame) -> None:
            log.info("signal %s: stopping after the current job", signum)
            self.stop.set()
            signal.signal(signum, signal.SIG_DFL)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        # From here a stop request is graceful: what operators (and tests) wait for.
        log.info("worker %s ready (queues: %s)", self.owner, ", ".join(self.queues or ["all"]))

    def run(self) -> int:
        """Work until stopped (or, in burst mode, until the queues hold nothing to finish).
        Returns the number of jobs this worker ran."""
        try:
            self._loop()
        finally:
            self._heart.close()
        return self.processed

    def _loop(self) -> None:
        reap_every = max(1.0, self.settings.lease_seconds / 2)
        last_reap = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_reap >= reap_every:
                self.queue.reap_abandoned()
                last_reap = time.monotonic()
            job = self.queue.claim(self.queues, self.owner, self.settings.lease_seconds)
            if job is None:
                if self.burst and self.queue.outstanding(self.queues) == 0:
                    break
                self.stop.wait(self.settings.poll_interval_seconds)
                continue
            self.execute(job)

    def execute(self, job: Job) -> None:
        self.processed += 1
        handler = registry.lookup(job.kind)
        if handler is None:
            self.queue.fail(
                job.id, self.owner, f"no handler for job kind {job.kind!r}", retryable=False
            )
            return
        ctx = JobContext(job, self.archive, self.queue, self.owner, self.settings.lease_seconds)
        self._heart.watch(ctx)
        log.info("job %s (%s) attempt %s started", job.id, job.kind, job.attempts)
        try:
            result = handler(ctx)
        except PermanentJobError as exc:
            outcome = self.queue.fail(job.id, self.owner, str(exc), retryable=False)
        except Exception as exc:
            outcome = self.queue.fail(job.id, self.owner, _describe(exc))
        else:
            outcome = "done" if self.queue.complete(job.id, self.owner, result) else None
        finally:
            self._heart.watch(None)
        if outcome is None:
            log.warning("job %s: lease lost before it finished; another worker owns it", job.id)
        else:
            log.info("job %s (%s) -> %s", job.id, job.kind, outcome)


class _Heartbeat:
    """One thread per worker that renews the lease of the job being run, so a job that runs
    for hours keeps it and a worker that dies loses it."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.lock = threading.Lock()
        self.current: JobContext | None = None
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def watch(self, ctx: JobContext | None) -> None:
        with self.lock:
            self.current = ctx
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self.thread.start()

    def close(self) -> None:
        self.closed.set()
        if self.thread is not None:
            self.thread.join()

    def _run(self) -> None:
        while not self.closed.wait(self.interval):
            with self.lock:
                ctx = self.current
                if ctx is None or ctx.lease_lost.is_set():
                    continue
                try:
                    ctx.beat()
                except Exception:  # a heartbeat that fails once is retried on the next beat
                    log.exception("job %s: heartbeat failed", ctx.job.id)


def _describe(exc: BaseException) -> str:
    frames = traceback.format_exception(exc, limit=-8)
    return f"{error_signature(exc)}\n" + "".join(frames[-8:])
