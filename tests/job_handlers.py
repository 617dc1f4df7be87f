"""Job handlers used by the tests (loaded through the `jobs.plugins` setting)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from arkhiv.jobs import JobContext, PermanentJobError, job_handler


def _log(path: str, line: str) -> None:
    # O_APPEND writes of one short line are atomic, so several processes can share the file.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job_handler("test.record")
def record(ctx: JobContext) -> dict:
    _log(ctx.payload["log"], f"start {ctx.job.id} {os.getpid()} {ctx.attempt}")
    _log(ctx.payload["log"], f"end {ctx.job.id} {os.getpid()} {ctx.attempt}")
    return {"pid": os.getpid()}


@job_handler("test.stall-first-attempt")
def stall_first_attempt(ctx: JobContext) -> dict:
    """Announces itself and then hangs on its first attempt, so a test can kill its worker."""
    _log(ctx.payload["log"], f"start {ctx.job.id} {os.getpid()} {ctx.attempt}")
    if ctx.attempt == 1:
        Path(ctx.payload["marker"]).write_text(str(os.getpid()))
        time.sleep(600)
    _log(ctx.payload["log"], f"end {ctx.job.id} {os.getpid()} {ctx.attempt}")
    return {"pid": os.getpid()}


@job_handler("test.fail")
def always_fail(ctx: JobContext) -> None:
    raise RuntimeError(f"scanner offline (attempt {ctx.attempt})")


@job_handler("test.reject")
def reject(ctx: JobContext) -> None:
    raise PermanentJobError("the package is not a bag")


@job_handler("test.progress")
def report_progress(ctx: JobContext) -> str:
    for step in range(1, 5):
        ctx.progress(step / 4, f"step {step} of 4")
        time.sleep(0.4)
    return "ok"
