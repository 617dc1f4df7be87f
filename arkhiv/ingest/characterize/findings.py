"""What a reader gathers about one file before it becomes a Characterization."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arkhiv.ingest.model import Characterization, GeoLocation


@dataclass(kw_only=True)
class Findings:
    """Properties and problems as a reader finds them; notes do not make a file invalid."""

    path: Path
    tools: list[str]
    props: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    locations: list[GeoLocation] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def fail(self, message: str) -> None:
        self.problems.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def build(self) -> Characterization:
        return Characterization(
            properties=self.props,
            valid=not self.problems,
            problems=self.problems + [f"note: {n}" for n in self.notes],
            locations=self.locations,
            tool="; ".join(dict.fromkeys(self.tools)),
        )
