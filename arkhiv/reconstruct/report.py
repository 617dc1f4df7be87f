"""What a reconstruction did: its stages with their timings and figures, the software that ran,
the parameters, and, when it could not produce a model, why."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from arkhiv.errors import ArkhivError


class ReconstructionFailed(ArkhivError):
    """The input cannot become a model (too few images, no overlap, featureless, empty cloud):
    an answer, not a crash. `reason` is for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Told the name of each stage as it starts (a job turns that into visible progress).
stage_listener: ContextVar[Callable[[str], None] | None] = ContextVar(
    "stage_listener", default=None
)


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReconstructionReport:
    pipeline: str
    parameters: dict[str, Any]
    stages: list[Stage] = field(default_factory=list)
    software: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    failure: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        stage = Stage(name)
        listener = stage_listener.get()
        if listener is not None:
            listener(name)
        started = time.perf_counter()
        try:
            yield stage
        finally:
            stage.seconds = round(time.perf_counter() - started, 3)
            self.stages.append(stage)

    def failed(self, failure: ReconstructionFailed) -> ReconstructionFailed:
        """Record why the pipeline stopped and attach this report to the failure (for the
        caller's history), as `except ReconstructionFailed as f: raise report.failed(f)`."""
        self.failure = failure.reason
        failure.report = self  # type: ignore[attr-defined]
        return failure

    def figures(self, stage_name: str) -> dict[str, Any]:
        for stage in self.stages:
            if stage.name == stage_name:
                return stage.figures
        raise KeyError(stage_name)

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["software"] = {"python": platform.python_version(), **self.software}
        document["seconds"] = round(sum(stage.seconds for stage in self.stages), 3)
        return document
