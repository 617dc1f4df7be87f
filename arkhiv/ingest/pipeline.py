"""OAIS ingest up to a checked submission: a function from a staged bag folder to an
`IngestResult`, with no catalog and no stores involved (the job handler records the result).

Order matters: the virus check runs beside validation and identification (which only read and
sniff bytes) and before any parser (capture metadata, characterization) sees a file; an infected
package is never parsed at all."""

from __future__ import annotations

import hashlib
import platform
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arkhiv import __version__
from arkhiv.ingest.bag import validate_bag
from arkhiv.ingest.capture_metadata import (
    CaptureMetadata,
    precise_location,
    public_metadata,
    read_capture_metadata,
    validate_profile,
)
from arkhiv.ingest.characterize import characterize
from arkhiv.ingest.characterize.images import apply_pillow_limit
from arkhiv.ingest.identify import Identifier, detect_polycam_export
from arkhiv.ingest.model import (
    Characterization,
    Check,
    GeoLocation,
    Identification,
    Outcome,
)
from arkhiv.ingest.virus import scan_tree
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.policies.ingest import IngestPolicy
from arkhiv.policies.resources import ResourceLimits

Progress = Callable[[float, str], None]
ARKHIV_AGENT = ("Arkhiv", __version__)

# Keys of characterization properties that locate a site. They never leave ingest in clear: the
# coordinates themselves are sealed, and extents in a georeferenced frame reveal the place too.
_LOCATING_KEYS = (
    "gps",
    "latitude",
    "longitude",
    "altitude",
    "coordinate",
    "georef",
    "centre",
    "center",
    "position",
    "crs",
    "wkt",
    "offset",
    "bound",
    "bbox",
    "extent",
    "min",
    "max",
)


@dataclass
class StepRecord:
    """One ingest step, recorded as a PREMIS event."""

    event: EventType
    started_at: datetime
    ended_at: datetime
    outcome: str  # success, failure, warning
    detail: str
    software: list[tuple[str, str]] = field(default_factory=list)  # (name, version)

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_type": self.event.uri,
            "label": self.event.label,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "outcome": self.outcome,
            "detail": self.detail,
            "software": [{"name": n, "version": v} for n, v in self.software],
        }


@dataclass
class FileReport:
    path: str  # relative to the bag root, as in the manifest
    size: int
    digests: dict[str, str]
    disk_path: str = ""  # the name on disk, when its Unicode normalization differs (macOS)
    identification: Identification | None = None
    characterization: Characterization | None = None

    @property
    def carries_location(self) -> bool:
        c = self.characterization
        return bool(c and (c.locations or c.properties.get("has_location")))

    def public_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "digests": self.digests,
            "carries_location": self.carries_location,
        }
        if self.identification:
            entry["format"] = asdict(self.identification)
        if self.characterization:
            c = self.characterization
            # Scrubbed for every file, not only those known to be georeferenced: a LAS without
            # a CRS record or a mesh in UTM metres locates the site just as well.
            entry["characterization"] = {
                "valid": c.valid,
                "problems": [mask_numbers(problem) for problem in c.problems],
                "properties": {k: v for k, v in c.properties.items() if not _locating(k)},
                "tool": c.tool,
            }
        return entry


# Numbers precise enough to be a coordinate (3+ decimals, or 5+ digits as in projected metres)
_COORDINATE_LIKE = re.compile(r"-?\d+\.\d{3,}|-?\d{5,}(?:\.\d+)?")

# bag-info.txt labels that describe the package, not people or places; the rest reaches the
# report only through the capture metadata's public view.
_TECHNICAL_BAG_INFO = {
    "bagging-date",
    "payload-oxum",
    "bag-software-agent",
    "bagit-profile-identifier",
    "bag-size",
    "bag-group-identifier",
    "bag-count",
    "external-identifier",
    "internal-sender-identifier",
}


def mask_numbers(text: str) -> str:
    """Reader messages can quote the values they could not parse, coordinates included."""
    return _COORDINATE_LIKE.sub("…", text)


def _locating(key: str) -> bool:
    lowered = key.lower()
    return lowered != "has_location" and any(part in lowered for part in _LOCATING_KEYS)


@dataclass
class IngestResult:
    bag_root: Path
    checks: list[Check] = field(default_factory=list)
    files: list[FileReport] = field(default_factory=list)
    tag_files: dict[str, dict[str, str]] = field(default_factory=dict)
    bag_version: str | None = None
    bag_info: dict[str, list[str]] = field(default_factory=dict)
    metadata: CaptureMetadata | None = None
    locations: list[GeoLocation] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    capture_layout: dict[str, Any] | None = None

    @property
    def accepted(self) -> bool:
        return not any(check.outcome == Outcome.FAIL for check in self.checks)

    @property
    def virus_check_failed(self) -> bool:
        """Infected, or the check itself failed: either way no parser may see the files."""
        return any(c.name == "virus.scan" and c.outcome == Outcome.FAIL for c in self.checks)

    @property
    def payload_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def fingerprint(self) -> str | None:
        """The same payload (paths and contents) gives the same fingerprint, however packaged."""
        if not self.files or any("sha512" not in f.digests for f in self.files):
            return None
        digest = hashlib.sha256()
        for entry in sorted(self.files, key=lambda f: f.path):
            digest.update(f"{entry.path}\0{entry.digests['sha512']}\n".encode())
        return digest.hexdigest()

    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.outcome in (Outcome.FAIL, Outcome.WARN)]

    def summary(self) -> str:
        failures = [c for c in self.checks if c.outcome == Outcome.FAIL]
        warnings = [c for c in self.checks if c.outcome == Outcome.WARN]
        verdict = "accepted" if self.accepted else "rejected"
        lines = [
            f"{verdict}: {len(self.files)} payload files, {self.payload_bytes} bytes, "
            f"{len(failures)} failure(s), {len(warnings)} warning(s), "
            f"{len(self.locations)} precise location(s) sealed"
        ]
        for check in failures + warnings:
            where = f" [{check.path}]" if check.path else ""
            lines.append(f"  {check.outcome.upper()} {check.name}{where}: {check.reason}")
        return "\n".join(lines)

    def report(self) -> dict[str, Any]:
        """The ingest report. Safe to keep with the package: no precise coordinates in it."""
        return {
            "accepted": self.accepted,
            "summary": self.summary(),
            "bag": {
                "version": self.bag_version,
                "bag_info": {
                    label: values
                    for label, values in self.bag_info.items()
                    if label.lower() in _TECHNICAL_BAG_INFO
                },
            },
            "capture_layout": self.capture_layout,
            "metadata": public_metadata(self.metadata) if self.metadata else None,
            "checks": [check.as_dict() for check in self.checks],
            "files": [entry.public_dict() for entry in self.files],
            "locations": [
                {"source": location.source, "kind": location.kind, "sealed": True}
                for location in self.locations
            ],
            "steps": [step.as_dict() for step in self.steps],
            "software": {"arkhiv": __version__, "python": platform.python_version()},
        }


class _Step:
    """Times a step and turns what it found into its PREMIS outcome."""

    def __init__(self, result: IngestResult, event: EventType, software=()) -> None:
        self.result = result
        self.event = event
        self.software = list(software)
        self.checks: list[Check] = []
        self.detail = ""

    def __enter__(self) -> _Step:
        self.started = datetime.now(UTC)
        return self

    def __exit__(self, *_exc) -> None:
        outcomes = {check.outcome for check in self.checks}
        outcome = (
            "failure"
            if Outcome.FAIL in outcomes
            else "warning"
            if Outcome.WARN in outcomes
            else "success"
        )
        self.result.checks.extend(self.checks)
        self.result.steps.append(
            StepRecord(
                self.event,
                self.started,
                datetime.now(UTC),
                outcome,
                self.detail,
                [ARKHIV_AGENT, *self.software],
            )
        )


def run_ingest(
    bag_root: Path,
    policy: IngestPolicy,
    identifier: Identifier,
    *,
    processes: int = 2,
    progress: Progress | None = None,
) -> IngestResult:
    report = progress or (lambda _fraction, _message: None)
    result = IngestResult(bag_root=bag_root)

    # ClamAV keeps one core busy by itself: it runs beside validation and identification, which
    # only read and sniff bytes; characterization, the step that parses files, waits for its
    # verdict, and an infected package is never parsed.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="virus-check") as pool:
        scan_started = datetime.now(UTC)
        scanning = pool.submit(scan_tree, bag_root, policy)
        report(0.02, "validating the bag")
        with _Step(result, EventType.VALIDATION, [("bagit-python", _bagit_version())]) as step:
            bag = validate_bag(bag_root, processes=processes)
            step.checks.extend(bag.checks)
            result.bag_version = bag.version
            result.bag_info = bag.bag_info
            result.tag_files = bag.tag_files
            step.detail = (
                f"BagIt {bag.version}: {len(bag.payload)} payload files, checksums verified"
            )
            step.checks.extend(validate_profile(bag_root))
        with _Step(result, EventType.MESSAGE_DIGEST_CALCULATION) as step:
            for path, digests in sorted(bag.payload.items()):
                disk_path = bag.on_disk.get(path, path)
                size = bag.sizes.get(path)
                if size is None:
                    size = _size(bag_root / disk_path)
                result.files.append(FileReport(path, size, digests, disk_path))
            step.detail = "sha512 and sha256 of every payload file, in the validation's single read"

        report(0.3, "identifying formats")
        with _Step(result, EventType.FORMAT_IDENTIFICATION, [identifier.software]) as step:
            for entry in result.files:
                entry.identification = identifier.identify(bag_root / entry.disk_path)
                if entry.identification.warning:
                    step.checks.append(
                        Check(
                            "format.identification",
                            Outcome.WARN,
                            entry.identification.warning,
                            entry.path,
                        )
                    )
            result.capture_layout = detect_polycam_export(bag_root / "data")
            unidentified = sum(
                1
                for f in result.files
                if not f.identification.puid and not f.identification.mime_type
            )
            step.detail = f"{len(result.files)} files identified, {unidentified} unknown"

        report(0.45, "waiting for the virus check")
        scan = scanning.result()
    with _Step(result, EventType.VIRUS_CHECK) as step:
        step.started = scan_started
        step.software.append(("ClamAV", scan.engine))
        step.checks.extend(scan.checks)
        step.detail = (
            f"{len(scan.infected)} infected, {len(scan.unscannable)} not scannable"
            if not scan.clean
            else "no virus found"
        )
    if result.virus_check_failed:
        return result  # nothing parses an infected package, nor one that could not be scanned

    report(0.5, "reading the capture metadata")
    with _Step(result, EventType.METADATA_EXTRACTION) as step:
        metadata, checks = read_capture_metadata(bag_root, bag.bag_info)
        step.checks.extend(checks)
        result.metadata = metadata
        if metadata is not None:
            located = precise_location(metadata)
            if located is not None:
                result.locations.append(located)
        step.detail = "capture metadata read" if metadata else "no usable capture metadata"

    # Every reader checks what a file declares (points, mesh elements, pixels) against these
    # before decoding: a decompression bomb is refused with the reason, never read.
    limits = policy.resource_limits()
    apply_pillow_limit(limits)
    with _Step(result, EventType.METADATA_EXTRACTION) as step:
        total = max(1, len(result.files))
        for number, entry in enumerate(result.files, 1):
            report(0.6 + 0.38 * number / total, f"characterizing {entry.path}")
            entry.characterization = _characterize_safely(bag_root / entry.disk_path, entry, limits)
            c = entry.characterization
            if c.valid is False:
                problems = [p for p in c.problems if not p.startswith("note:")]
                reason = mask_numbers("; ".join(problems) or "not a valid file of its format")
                step.checks.append(Check("format.validity", Outcome.FAIL, reason, entry.path))
            for location in c.locations:
                location.source = entry.path
                result.locations.append(location)
        step.detail = (
            f"{len(result.files)} files characterized; "
            f"{sum(f.carries_location for f in result.files)} carry location data"
        )
    report(1.0, "checked")
    return result


def _characterize_safely(path: Path, entry: FileReport, limits: ResourceLimits) -> Characterization:
    """A hostile file must not stop the ingest (a reader may fail in ways nobody foresaw):
    it becomes a failure of that file, and is assumed to carry a location."""
    try:
        return characterize(path, entry.identification, limits=limits)
    except Exception as exc:
        return Characterization(
            properties={"has_location": True},
            valid=False,
            problems=[f"{entry.path}: could not be read ({type(exc).__name__})"],
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _bagit_version() -> str:
    from importlib.metadata import version

    return version("bagit")
