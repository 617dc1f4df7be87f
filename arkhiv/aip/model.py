"""What an archived object holds, as the metadata builders (METS, PREMIS, CIDOC-CRM) see it.

Plain data, built by the AIP step from the catalog and the ingest result; the builders in
arkhiv/metadata are pure functions of it. Precise locations are absent on purpose: the public
documents carry `public_location` only, and a restricted graph takes the precise one explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from arkhiv.policies.location import CoarseLocation

FileRole = Literal["original", "derivative", "metadata"]


@dataclass(frozen=True)
class Agent:
    id: str  # stable within the AIP, e.g. "agent-arkhiv-0.1.0"
    type: Literal["software", "organization", "person"]
    name: str  # a person by pseudonym when they asked for one
    version: str = ""  # software only
    note: str = ""


@dataclass(frozen=True)
class Format:
    puid: str | None  # PRONOM PUID
    mime_type: str | None
    name: str | None
    version: str | None = None
    basis: str = ""


@dataclass(frozen=True)
class FileEntry:
    id: str  # stable within the object, e.g. "file-0001"
    logical_path: str  # path in the version's logical state, e.g. "data/photos/01.jpg"
    content_path: str  # where the bytes live in the OCFL object, e.g. "v1/content/data/..."
    size: int
    digests: dict[str, str]  # algorithm -> hex; always sha512, usually sha256 and the bag's
    format: Format
    role: FileRole
    original_name: str | None = None  # as submitted, when it differs from the logical path
    created: datetime | None = None


@dataclass(frozen=True)
class Event:
    id: str  # a UUID
    type_uri: str  # http://id.loc.gov/vocabulary/preservation/eventType/...
    type_label: str  # e.g. "virus check"
    date_time: datetime
    outcome: Literal["success", "failure", "warning"]
    detail: str = ""
    agents: tuple[tuple[str, str], ...] = ()  # (agent id, role: "executing program", ...)
    objects: tuple[str, ...] = ()  # file ids the event concerns (empty: the whole object)
    outcome_detail: str = ""  # machine-readable detail (JSON text), e.g. the store replicated to


@dataclass(frozen=True)
class Derivation:
    """A derivative made from sources (a reconstruction, a format conversion)."""

    derivative: str  # file id
    sources: tuple[str, ...]  # file ids
    kind: Literal["reconstruction", "conversion"]
    software: str | None = None  # agent id
    parameters: dict[str, Any] = field(default_factory=dict)
    event: str | None = None  # event id


@dataclass(frozen=True)
class Capture:
    mode: str  # photos, lidar-depth, point-cloud, mesh
    captured_at: str | None  # as given (ISO 8601 or a date)
    device: str | None = None  # "Apple iPhone 13 Pro"
    app: str | None = None  # "Polycam 3.4.2"
    contributor: str | None = None  # agent id of the person (by pseudonym when asked)
    organization: str | None = None  # agent id


@dataclass(frozen=True)
class Version:
    number: int  # 1, 2, ...
    created: datetime
    message: str
    agent: str  # agent id of who made it


@dataclass(frozen=True)
class ObjectDescription:
    id: str  # Arkhiv's persistent identifier, e.g. "ark:/99999/a1b2c3"
    title: str
    object_type: str  # building, monument, sculpture, museum-object, ...
    description: str = ""
    period: str | None = None  # "late 18th century"
    condition: str | None = None  # intact, damaged, destroyed, unknown
    condition_note: str | None = None
    license: str | None = None  # SPDX id, e.g. CC-BY-4.0
    rights_holder: str | None = None
    permission: str | None = None  # the scanning-permission statement
    public_location: CoarseLocation | None = None  # what the public may see
    place_name: str | None = None  # as the submitter named it, e.g. "Zhytomyr Oblast"
    capture: Capture | None = None
    versions: tuple[Version, ...] = ()
    files: tuple[FileEntry, ...] = ()
    events: tuple[Event, ...] = ()
    agents: tuple[Agent, ...] = ()
    derivations: tuple[Derivation, ...] = ()
