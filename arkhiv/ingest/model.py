"""What ingest learns about a submission. Each step is a function that takes a folder (or a file)
and returns these records; the pipeline collects them into one report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"  # the package is rejected
    WARN = "warn"  # accepted, with something a curator should know
    SKIP = "skip"  # the check could not run (say why in the reason)


class IntakeError(Exception):
    """The package cannot be taken in at all (unsafe or broken archive, limits exceeded).
    `problems` lists every reason found, each naming the path it concerns."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Check:
    """One check of one step, e.g. ("bag.checksum", FAIL, "sha256 mismatch", "data/a.jpg")."""

    name: str
    outcome: Outcome
    reason: str = ""
    path: str | None = None  # relative to the bag root, when the check concerns one file
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Identification:
    puid: str | None  # PRONOM PUID, e.g. "fmt/645"; None when PRONOM has none
    mime_type: str | None
    format_name: str | None
    format_version: str | None = None
    basis: str = ""  # how it was identified: signature, extension, container, arkhiv sniffer
    tool: str = ""  # e.g. "fido 1.6.1 (PRONOM v109)" or "arkhiv sniffer"
    warning: str | None = None  # e.g. extension contradicts content


@dataclass
class GeoLocation:
    """A precise location found in a file or in the capture metadata. Never shown in clear to
    roles without the precise_location permission."""

    latitude: float
    longitude: float
    altitude: float | None = None
    source: str = ""  # file path relative to the bag root, or "capture-metadata"
    kind: str = ""  # exif-gps, xmp-gps, capture-metadata, las-crs, e57-georef, ...
    crs: str | None = None  # for projected coordinates, e.g. "EPSG:32635"


@dataclass
class Characterization:
    properties: dict[str, Any] = field(default_factory=dict)  # width, vertices, points, ...
    valid: bool | None = None  # None: not a format we validate
    problems: list[str] = field(default_factory=list)  # why invalid, or warnings
    locations: list[GeoLocation] = field(default_factory=list)
    tool: str = ""
