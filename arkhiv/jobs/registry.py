"""Which function runs each job kind, and which periodic tasks the scheduler enqueues.

Handlers register with `@job_handler("kind")` in modules that the worker imports: Arkhiv's own
(`BUILTIN_MODULES`) and those listed in the `jobs.plugins` setting."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from arkhiv.errors import ConfigError

if TYPE_CHECKING:
    from arkhiv.archive import Archive
    from arkhiv.catalog.queue import Job, JobQueue

QUEUES = ("ingest", "reconstruct", "replicate", "audit", "derive", "maintenance")
BUILTIN_MODULES = (
    "arkhiv.jobs.maintenance",
    "arkhiv.jobs.ingest",
    "arkhiv.jobs.archiving",
    "arkhiv.jobs.fixity",
    "arkhiv.jobs.reconstruction",
    "arkhiv.jobs.dissemination",
)


class PermanentJobError(Exception):
    """Raised by a handler when retrying cannot help (bad input): the job goes dead at once."""


def error_signature(exc: BaseException) -> str:
    """The first line of what an attempt is recorded as having failed with (the job's errors
    keep it, then its traceback): the same error on the same input reads the same."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message.splitlines()[0] if message else ''}".rstrip(": ")


@dataclass
class JobContext:
    """What a handler gets: its job, the archive, and ways to report progress and notice that
    its lease was lost (another worker may then be running the same job)."""

    job: Job
    archive: Archive
    queue: JobQueue
    owner: str
    lease_seconds: float
    lease_lost: threading.Event = field(default_factory=threading.Event)
    _last_report: float = 0.0
    _pending: tuple[float | None, str | None] = (None, None)

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1); written at most once a second, the rest on heartbeats."""
        self._pending = (fraction, message)
        if time.monotonic() - self._last_report >= 1.0:
            self.beat()

    def beat(self) -> bool:
        fraction, message = self._pending
        held = self.queue.heartbeat(self.job.id, self.owner, self.lease_seconds, fraction, message)
        self._last_report = time.monotonic()
        if not held:
            self.lease_lost.set()
        return held


Handler = Callable[[JobContext], Any]


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    interval: timedelta
    queue: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)


_handlers: dict[str, Handler] = {}
_periodic: dict[str, PeriodicTask] = {}
_loaded: set[str] = set()


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        _handlers[kind] = function
        return function

    return register


def periodic(task: PeriodicTask) -> PeriodicTask:
    _periodic[task.name] = task
    return task


def load(plugins: Iterable[str] = ()) -> None:
    for module in (*BUILTIN_MODULES, *plugins):
        if module in _loaded:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"jobs.plugins: cannot import {module!r}: {exc}") from None
        _loaded.add(module)


def lookup(kind: str) -> Handler | None:
    return _handlers.get(kind)


def periodic_tasks() -> list[PeriodicTask]:
    return sorted(_periodic.values(), key=lambda task: task.name)
