"""What a submission must say about itself, and whether the bag is made the way Arkhiv takes it.

Two sources describe a capture: the tag file `capture-metadata.json` at the bag root (checked
against `arkhiv/schemas/capture-metadata.schema.json`), or, for museums whose tools only write
bag-info.txt, Dublin Core and `Arkhiv-*` labels there (`BAG_INFO_FIELDS`). Both become the same
`CaptureMetadata`. `validate_profile` checks the bag against Arkhiv's BagIt profile
(`arkhiv/schemas/arkhiv-bagit-profile.json`) with the bagit_profile library.

Precise coordinates may be in either source. No message written here repeats them, so reports
stay free of them; `precise_location` hands them to the sealing step and `public_metadata` gives
the view without them."""

from __future__ import annotations

import codecs
import copy
import datetime as dt
import functools
import json
import math
import mimetypes
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import bagit
import bagit_profile
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as ModelError

from arkhiv.ingest.bag import without_quoted_line
from arkhiv.ingest.model import Check, GeoLocation, Outcome

METADATA_FILE = "capture-metadata.json"
BAG_INFO_FILE = "bag-info.txt"
SCHEMA_FILE = "capture-metadata.schema.json"
PROFILE_FILE = "arkhiv-bagit-profile.json"
SCHEMA_ID = "https://arkhiv.org/schemas/capture-metadata/1.0"
PROFILE_ID = "https://arkhiv.org/schemas/bagit-profile/1.0"
SCHEMA_VERSION = "1.0"
MAX_METADATA_BYTES = 1024 * 1024  # a description is a few KiB; anything bigger is a mistake

# The same patterns as in the schema (a test keeps them equal).
EDTF_PATTERN = (
    r"^-?([0-9]{1,4}|[0-9]{2}XX|[0-9]{3}X)(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01]))?)?[?~%]?$"
)
CAPTURED_AT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


# --- the packaged schema and profile -----------------------------------------------------------


@functools.cache
def _schema_document() -> dict[str, Any]:
    return json.loads(resources.files("arkhiv.schemas").joinpath(SCHEMA_FILE).read_text("utf-8"))


@functools.cache
def _profile_document() -> dict[str, Any]:
    return json.loads(resources.files("arkhiv.schemas").joinpath(PROFILE_FILE).read_text("utf-8"))


def load_schema() -> dict[str, Any]:
    """The capture-metadata JSON Schema (a copy: callers may change it)."""
    return copy.deepcopy(_schema_document())


def load_profile() -> dict[str, Any]:
    """Arkhiv's BagIt profile (a copy: bagit_profile fills in defaults in the dict it is given)."""
    return copy.deepcopy(_profile_document())


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(
        _schema_document(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


COUNTRY_CODES: frozenset[str] = frozenset(
    _schema_document()["properties"]["object"]["properties"]["country"]["enum"]
)


# --- the model ---------------------------------------------------------------------------------


class ObjectType(StrEnum):
    BUILDING = "building"
    RELIGIOUS_BUILDING = "religious-building"
    MONUMENT = "monument"
    MEMORIAL = "memorial"
    SCULPTURE = "sculpture"
    ARCHITECTURAL_ELEMENT = "architectural-element"
    INTERIOR = "interior"
    MUSEUM_OBJECT = "museum-object"
    ARCHAEOLOGICAL_SITE = "archaeological-site"
    ARCHAEOLOGICAL_FIND = "archaeological-find"
    LANDSCAPE = "landscape"
    OTHER = "other"


class CoordinateMethod(StrEnum):
    DEVICE_GPS = "device-gps"
    SURVEY = "survey"
    MAP = "map"
    ESTIMATED = "estimated"


class ConditionStatus(StrEnum):
    INTACT = "intact"
    DAMAGED = "damaged"
    DESTROYED = "destroyed"
    UNKNOWN = "unknown"


class CaptureMode(StrEnum):
    PHOTOS = "photos"
    LIDAR_DEPTH = "lidar-depth"
    POINT_CLOUD = "point-cloud"
    MESH = "mesh"


class PublishAs(StrEnum):
    NAME = "name"
    PSEUDONYM = "pseudonym"
    ANONYMOUS = "anonymous"


class License(StrEnum):
    CC0 = "CC0-1.0"
    CC_BY = "CC-BY-4.0"
    CC_BY_SA = "CC-BY-SA-4.0"
    CC_BY_NC = "CC-BY-NC-4.0"
    CC_BY_NC_SA = "CC-BY-NC-SA-4.0"
    OTHER = "other"


def _text(max_length: int, **kwargs: Any) -> Any:
    return Field(min_length=1, max_length=max_length, **kwargs)


class _Strict(BaseModel):
    # Unknown fields are refused as in the schema: a misspelt field must not vanish silently.
    model_config = ConfigDict(extra="forbid")


class Coordinates(_Strict):
    """WGS84. Sealed at ingest; never shown in clear to roles without precise_location."""

    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    altitude: float | None = Field(None, ge=-11000, le=9000)
    accuracy_m: float | None = Field(None, ge=0, le=100000)
    method: CoordinateMethod | None = None


class Dating(_Strict):
    period: str | None = _text(500, default=None)
    start: str | None = Field(None, pattern=EDTF_PATTERN)
    end: str | None = Field(None, pattern=EDTF_PATTERN)

    @model_validator(mode="after")
    def _something(self) -> Dating:
        if self.period is None and self.start is None and self.end is None:
            raise ValueError("give at least one of period, start, end")
        return self


class Condition(_Strict):
    status: ConditionStatus
    note: str | None = Field(None, max_length=20000)


class HeritageObject(_Strict):
    title: str = _text(500)
    type: ObjectType
    type_detail: str | None = _text(500, default=None)
    description: str | None = Field(None, max_length=20000)
    inventory_number: str | None = _text(200, default=None)
    place_name: str = _text(500)
    country: str
    coordinates: Coordinates | None = None
    date: Dating | None = None
    condition: Condition | None = None

    @field_validator("country")
    @classmethod
    def _iso_country(cls, value: str) -> str:
        if value not in COUNTRY_CODES:
            raise ValueError("not an ISO 3166-1 alpha-2 country code")
        return value

    @model_validator(mode="after")
    def _other_needs_words(self) -> HeritageObject:
        if self.type == ObjectType.OTHER and not self.type_detail:
            raise ValueError('type_detail is required when type is "other"')
        return self


class Device(_Strict):
    make: str | None = _text(200, default=None)
    model: str | None = _text(200, default=None)

    @model_validator(mode="after")
    def _something(self) -> Device:
        if self.make is None and self.model is None:
            raise ValueError("give make or model")
        return self


class App(_Strict):
    name: str = _text(200)
    version: str | None = _text(100, default=None)


def parse_captured_at(value: str) -> dt.date | dt.datetime:
    """A capture time as given: a date, or a date and time (naive when no offset was given)."""
    if not re.fullmatch(CAPTURED_AT_PATTERN, value):
        raise ValueError("not a date or a date and time like 2024-05-18T09:42:00+03:00")
    try:
        return dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("not a real date or time") from None


class Capture(_Strict):
    mode: CaptureMode
    device: Device | None = None
    app: App | None = None
    # Kept as written: "2024-05-18" must not turn into midnight of that day.
    captured_at: str

    @field_validator("captured_at")
    @classmethod
    def _real_time(cls, value: str) -> str:
        parse_captured_at(value)
        return value


class Contributor(_Strict):
    name: str | None = _text(300, default=None)
    pseudonym: str | None = _text(300, default=None)
    publish_as: PublishAs
    organization: str | None = _text(300, default=None)
    email: str | None = Field(None, max_length=320, pattern=EMAIL_PATTERN)

    @model_validator(mode="after")
    def _credit_possible(self) -> Contributor:
        if self.name is None and self.pseudonym is None:
            raise ValueError("name or pseudonym is required")
        if self.publish_as == PublishAs.NAME and self.name is None:
            raise ValueError('name is required when publish_as is "name"')
        if self.publish_as == PublishAs.PSEUDONYM and self.pseudonym is None:
            raise ValueError('pseudonym is required when publish_as is "pseudonym"')
        return self


class Rights(_Strict):
    license: License
    license_text: str | None = _text(50000, default=None)
    holder: str | None = _text(300, default=None)

    @model_validator(mode="after")
    def _other_needs_terms(self) -> Rights:
        if self.license == License.OTHER and not self.license_text:
            raise ValueError('license_text is required when license is "other"')
        return self


class Permission(_Strict):
    statement: str = _text(20000)
    granted_by: str = _text(500)
    granted_on: dt.date | None = None


class CaptureMetadata(_Strict):
    """The content of capture-metadata.json (schema https://arkhiv.org/schemas/capture-metadata/1.0),
    however it reached Arkhiv."""

    schema_version: Literal["1.0"]
    language: str | None = Field(None, pattern=LANGUAGE_PATTERN)
    object: HeritageObject
    capture: Capture
    contributor: Contributor
    rights: Rights
    permission: Permission


# --- problems, and how each source words them ---------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    path: tuple[str, ...]  # field path in the JSON document
    message: str
    alternatives: tuple[str, ...] = ()  # for "one of these fields is required"
    outcome: Outcome = Outcome.FAIL


# Values at these paths are never repeated in a message: reports must not carry a location or
# the identity of someone who asked not to be named.
_QUIET_PATHS = (("object", "coordinates"), ("contributor",), ("permission", "granted_by"))
_VALUE_KEYWORDS = {"enum", "const", "type", "pattern", "format", "minLength", "maxLength"}
_TYPE_WORDS = {
    "string": "text (a JSON string)",
    "number": "a number",
    "integer": "a whole number",
    "object": "an object ({...})",
    "array": "a list ([...])",
    "boolean": "true or false",
}


def _quiet(path: tuple[str, ...]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in _QUIET_PATHS)


def _shown(value: Any, path: tuple[str, ...]) -> str:
    return "" if _quiet(path) else f"{json.dumps(value, ensure_ascii=False)[:80]} "


def _examples(schema: Mapping[str, Any]) -> str:
    examples = schema.get("examples")
    return f" (e.g. {', '.join(map(str, examples))})" if examples else ""


def _schema_problems(errors: Iterable[ValidationError]) -> list[_Problem]:
    problems: list[_Problem] = []
    seen: set[tuple[tuple[str, ...], str]] = set()
    valued: set[tuple[str, ...]] = set()

    def add(problem: _Problem) -> None:
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            problems.append(problem)

    def visit(error: ValidationError) -> None:
        path = tuple(str(part) for part in error.absolute_path)
        keyword, value, schema = error.validator, error.validator_value, error.schema
        if keyword in _VALUE_KEYWORDS:
            if path in valued:  # one complaint per value (pattern and format both fail "17 May")
                return
            valued.add(path)
        if keyword == "required":
            schema_path = list(error.absolute_schema_path)
            when = (
                f" {schema['description']}"
                if len(schema_path) >= 2 and schema_path[-2] == "then" and "description" in schema
                else ""
            )
            for name in value:
                if isinstance(error.instance, dict) and name not in error.instance:
                    add(_Problem((*path, name), f"required{when}"))
        elif keyword == "additionalProperties":
            known = schema.get("properties", {})
            for name in sorted(error.instance):
                if name not in known:
                    add(_Problem((*path, str(name)), "not a field of this schema (misspelt?)"))
        elif keyword in ("anyOf", "oneOf"):
            if all(set(branch) == {"required"} for branch in value):
                names = tuple(name for branch in value for name in branch["required"])
                add(_Problem(path, "", alternatives=names))
            elif error.context:
                visit(best_match(error.context))
        elif keyword == "enum":
            if len(value) <= 12:
                allowed = f"use one of: {', '.join(map(str, value))}"
            else:
                allowed = f"not an allowed value{_examples(schema)}"
            add(_Problem(path, f"{_shown(error.instance, path)}is not allowed; {allowed}".strip()))
        elif keyword == "const":
            add(_Problem(path, f"must be {json.dumps(value)}"))
        elif keyword == "type":
            words = " or ".join(
                _TYPE_WORDS.get(t, t) for t in ([value] if isinstance(value, str) else value)
            )
            add(_Problem(path, f"must be {words}"))
        elif keyword == "minimum":
            add(_Problem(path, f"must be at least {value}"))
        elif keyword == "maximum":
            add(_Problem(path, f"must be at most {value}"))
        elif keyword == "exclusiveMinimum":
            add(_Problem(path, f"must be more than {value}"))
        elif keyword == "exclusiveMaximum":
            add(_Problem(path, f"must be less than {value}"))
        elif keyword == "minLength":
            add(_Problem(path, "must not be empty" if value == 1 else f"needs {value}+ characters"))
        elif keyword == "maxLength":
            add(_Problem(path, f"is too long (at most {value} characters)"))
        elif keyword == "minProperties":
            names = ", ".join(schema.get("properties", {}))
            add(_Problem(path, f"must not be empty: give at least one of {names}"))
        elif keyword == "pattern":
            shown = _shown(error.instance, path)
            add(_Problem(path, f"{shown}is not in the expected form{_examples(schema)}"))
        elif keyword == "format":
            shown = _shown(error.instance, path)
            add(_Problem(path, f"{shown}is not a valid {value}{_examples(schema)}"))
        else:  # a keyword this schema does not use today; jsonschema's own words, value withheld
            add(_Problem(path, f"fails the schema's {keyword!r} rule"))

    for error in errors:
        visit(error)
    return sorted(problems, key=_reading_order)


@functools.cache
def _field_positions() -> dict[tuple[str, ...], int]:
    positions: dict[tuple[str, ...], int] = {}

    def walk(schema: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, child in schema.get("properties", {}).items():
            positions[(*prefix, name)] = len(positions)
            walk(child, (*prefix, name))

    walk(_schema_document(), ())
    return positions


def _reading_order(problem: _Problem) -> tuple[int, ...]:
    """Problems in the order the fields appear in the schema (and the documentation)."""
    positions = _field_positions()
    return tuple(
        positions.get(problem.path[: i + 1], len(positions)) for i in range(len(problem.path))
    )


def _model_problems(exc: ModelError) -> list[_Problem]:
    """pydantic only sees documents the schema accepted, so this catches what a pattern cannot
    (2024-02-30) and any drift between schema and model."""
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(_Problem(path, message))
    return problems


def _json_reason(problem: _Problem) -> str:
    where = ".".join(problem.path) or "(document)"
    if problem.alternatives:
        return f"{METADATA_FILE}: {where}: {' or '.join(problem.alternatives)} is required"
    return f"{METADATA_FILE}: {where}: {problem.message}"


# --- capture-metadata.json ---------------------------------------------------------------------


class _Unreadable(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:  # json keeps the last silently; the submitter meant one of them
            raise _Unreadable(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def _reject_constant(name: str) -> Any:
    raise _Unreadable(f"{name} is not a JSON number")


def _load_json(path: Path) -> Any:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise _Unreadable("is a symbolic link; put the file itself in the bag")
    if not stat.S_ISREG(info.st_mode):
        raise _Unreadable("is not a regular file")
    with path.open("rb") as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise _Unreadable(
            f"is larger than {MAX_METADATA_BYTES // 1024} KiB; it should hold a description, "
            "not data (captures go under data/)"
        )
    data = data.removeprefix(codecs.BOM_UTF8)  # some editors write one; it means UTF-8 anyway
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _Unreadable(
            f"line {line}, column {column}: not UTF-8 text; save it as UTF-8"
        ) from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise _Unreadable(f"line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # "[[[[...": a hostile file must not take the worker down
        raise _Unreadable("is nested too deeply to be capture metadata") from None


def check_capture_document(
    document: Any,
) -> tuple[CaptureMetadata | None, list[Check]]:
    """Check an already parsed capture-metadata.json document (e.g. from the upload form):
    every schema problem at once, then the checks the schema cannot express."""
    problems = _schema_problems(_validator().iter_errors(document))
    if problems:
        return None, [
            Check("capture-metadata.schema", Outcome.FAIL, _json_reason(p), METADATA_FILE)
            for p in problems
        ]
    return _to_model(document, "capture-metadata.schema", METADATA_FILE, _json_reason)


# --- the checks a schema cannot express ---------------------------------------------------------


_EDTF_PARTS = re.compile(r"(-?)([0-9]{1,4}|[0-9]{2}XX|[0-9]{3}X)(?:-([0-9]{2})(?:-([0-9]{2}))?)?")


def _edtf_bound(value: str, *, latest: bool) -> tuple[int, int, int] | None:
    """The earliest (or latest) day an EDTF-style value can mean, as (year, month, day)."""
    match = _EDTF_PARTS.match(value)
    if match is None:
        return None
    sign, year, month, day = match.groups()
    low, high = int(year.replace("X", "0")), int(year.replace("X", "9"))
    if sign:
        low, high = -high, -low
    return (
        high if latest else low,
        int(month) if month else (12 if latest else 1),
        int(day) if day else (31 if latest else 1),
    )


def _consistency_problems(
    metadata: CaptureMetadata, today: dt.date | None = None
) -> list[_Problem]:
    problems = []
    today = today or dt.datetime.now(dt.UTC).date()
    dating = metadata.object.date
    if dating and dating.start and dating.end:
        earliest = _edtf_bound(dating.start, latest=False)
        latest = _edtf_bound(dating.end, latest=True)
        if earliest and latest and earliest > latest:
            problems.append(_Problem(("object", "date", "end"), "is before start"))
    captured = parse_captured_at(metadata.capture.captured_at)
    captured_day = captured.date() if isinstance(captured, dt.datetime) else captured
    # A day's slack: a time with no offset is local time, up to 14 hours ahead of UTC.
    if captured_day > today + dt.timedelta(days=1):
        problems.append(
            _Problem(
                ("capture", "captured_at"),
                "is in the future; check the device's clock",
                outcome=Outcome.WARN,
            )
        )
    granted = metadata.permission.granted_on
    if granted and granted > today + dt.timedelta(days=1):
        problems.append(
            _Problem(("permission", "granted_on"), "is in the future", outcome=Outcome.WARN)
        )
    where = metadata.object.coordinates
    if where and where.latitude == 0 and where.longitude == 0:
        problems.append(
            _Problem(
                ("object", "coordinates"),
                "0, 0 is in the open sea: probably a device without a GPS fix; leave "
                "coordinates out when they are unknown",
                outcome=Outcome.WARN,
            )
        )
    return problems


# --- bag-info.txt (Dublin Core and Arkhiv labels) ------------------------------------------------


@dataclass(frozen=True)
class BagInfoField:
    label: str
    path: tuple[str, ...]
    kind: Literal["text", "number", "paragraphs", "license"] = "text"
    standard: bool = False  # a BagIt reserved label describing the sender, not the capture


BAG_INFO_FIELDS: tuple[BagInfoField, ...] = (
    BagInfoField("DC-Language", ("language",)),
    BagInfoField("DC-Title", ("object", "title")),
    BagInfoField("DC-Type", ("object", "type")),
    BagInfoField("Arkhiv-Type-Detail", ("object", "type_detail")),
    BagInfoField("DC-Description", ("object", "description"), "paragraphs"),
    BagInfoField("DC-Identifier", ("object", "inventory_number")),
    BagInfoField("DC-Coverage-Spatial", ("object", "place_name")),
    BagInfoField("Arkhiv-Country", ("object", "country")),
    BagInfoField("Arkhiv-Latitude", ("object", "coordinates", "latitude"), "number"),
    BagInfoField("Arkhiv-Longitude", ("object", "coordinates", "longitude"), "number"),
    BagInfoField("Arkhiv-Altitude", ("object", "coordinates", "altitude"), "number"),
    BagInfoField("Arkhiv-Coordinate-Accuracy", ("object", "coordinates", "accuracy_m"), "number"),
    BagInfoField("Arkhiv-Coordinate-Method", ("object", "coordinates", "method")),
    BagInfoField("DC-Coverage-Temporal", ("object", "date", "period")),
    BagInfoField("Arkhiv-Date-Start", ("object", "date", "start")),
    BagInfoField("Arkhiv-Date-End", ("object", "date", "end")),
    BagInfoField("Arkhiv-Condition", ("object", "condition", "status")),
    BagInfoField("Arkhiv-Condition-Note", ("object", "condition", "note")),
    BagInfoField("Arkhiv-Capture-Mode", ("capture", "mode")),
    BagInfoField("Arkhiv-Device-Make", ("capture", "device", "make")),
    BagInfoField("Arkhiv-Device-Model", ("capture", "device", "model")),
    BagInfoField("Arkhiv-App-Name", ("capture", "app", "name")),
    BagInfoField("Arkhiv-App-Version", ("capture", "app", "version")),
    BagInfoField("DC-Date", ("capture", "captured_at")),
    BagInfoField("DC-Creator", ("contributor", "name")),
    BagInfoField("Arkhiv-Pseudonym", ("contributor", "pseudonym")),
    BagInfoField("Arkhiv-Publish-As", ("contributor", "publish_as")),
    BagInfoField("Source-Organization", ("contributor", "organization"), standard=True),
    BagInfoField("Contact-Email", ("contributor", "email"), standard=True),
    BagInfoField("DC-Rights", ("rights", "license"), "license"),
    BagInfoField("DC-RightsHolder", ("rights", "holder")),
    BagInfoField("Arkhiv-Permission-Statement", ("permission", "statement")),
    BagInfoField("Arkhiv-Permission-Granted-By", ("permission", "granted_by")),
    BagInfoField("Arkhiv-Permission-Date", ("permission", "granted_on")),
)
# Contact-Name is who to call about the bag; it names the contributor only without DC-Creator.
FALLBACK_NAME_LABEL = "Contact-Name"

_LABEL_OF_PATH = {f.path: f.label for f in BAG_INFO_FIELDS} | {
    ("rights", "license_text"): "DC-Rights"
}
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_CC_URL = re.compile(
    r"https?://creativecommons\.org/(?:licenses/(by|by-sa|by-nc|by-nc-sa)/4\.0"
    r"|publicdomain/(zero)/1\.0)(?:/.*)?",
    re.IGNORECASE,
)
_LICENSES = {
    license.value.lower(): license.value for license in License if license != License.OTHER
}


def _labels(bag_info: Mapping[str, Any]) -> dict[str, list[str]]:
    """Labels without case (as bagit_profile is asked to compare them), values stripped, blanks
    dropped."""
    found: dict[str, list[str]] = {}
    for label, values in bag_info.items():
        items = [values] if isinstance(values, str) else list(values)
        found.setdefault(label.strip().lower(), []).extend(
            str(v).strip() for v in items if str(v).strip()
        )
    return found


def _license_fields(value: str) -> dict[str, str]:
    if url := _CC_URL.fullmatch(value):
        kind = url.group(1) or url.group(2)
        return {"license": "CC0-1.0" if kind == "zero" else f"CC-{kind.upper()}-4.0"}
    if value.lower() in _LICENSES:  # SPDX identifiers compare without case
        return {"license": _LICENSES[value.lower()]}
    if re.fullmatch(r"CC[\w.+-]*", value, re.IGNORECASE):
        return {"license": value}  # looks like an identifier, so the schema names the allowed ones
    return {"license": "other", "license_text": value}  # DC-Rights is free text by definition


def _put(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        document = document.setdefault(part, {})
    document[path[-1]] = value


def _get(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _document_from_bag_info(
    labels: dict[str, list[str]],
) -> tuple[dict[str, Any], list[_Problem], dict[str, tuple[tuple[str, ...], Any]]]:
    """The JSON document bag-info.txt amounts to, the values that could not be read, and each
    label's contribution (for comparing with capture-metadata.json)."""
    # The five sections always exist, so that a missing label is named rather than its section.
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **{section: {} for section in ("object", "capture", "contributor", "rights", "permission")},
    }
    problems: list[_Problem] = []
    given: dict[str, tuple[tuple[str, ...], Any]] = {}
    for field in BAG_INFO_FIELDS:
        label, values = field.label, labels.get(field.label.lower())
        if not values and field.path == ("contributor", "name"):
            label, values = FALLBACK_NAME_LABEL, labels.get(FALLBACK_NAME_LABEL.lower())
        if not values:
            continue
        value: Any = values[0]  # a repeated single-valued label is reported by validate_profile
        if field.kind == "paragraphs":
            value = "\n\n".join(values)
        elif field.kind == "number":
            if not _NUMBER.fullmatch(value):
                problems.append(_Problem(field.path, "is not a decimal number (like 50.4501)"))
                continue
            value = float(value)
        if field.kind == "license":
            for key, part in _license_fields(value).items():
                _put(document, ("rights", key), part)
        else:
            _put(document, field.path, value)
        given[label] = (field.path, value)
    return document, problems, given


def _where(problem: _Problem) -> str:
    if problem.alternatives:
        return " or ".join(_label((*problem.path, name)) for name in problem.alternatives)
    return _label(problem.path)


def _bag_info_reason(problem: _Problem) -> str:
    if problem.alternatives:
        return f"{BAG_INFO_FILE}: {_where(problem)}: one of them is required"
    return f"{BAG_INFO_FILE}: {_where(problem)}: {problem.message}"


def _label(path: tuple[str, ...]) -> str:
    if path in _LABEL_OF_PATH:
        return _LABEL_OF_PATH[path]
    # A section-wide problem (coordinates, date): name the labels that make up that section.
    inside = [label for p, label in _LABEL_OF_PATH.items() if p[: len(path)] == path and path]
    return "/".join(dict.fromkeys(inside)) if inside else ".".join(path) or "(bag-info.txt)"


def metadata_from_bag_info(
    bag_info: Mapping[str, Any],
) -> tuple[CaptureMetadata | None, list[Check]]:
    """Map Dublin Core and Arkhiv labels in bag-info.txt to the capture metadata, listing every
    missing or invalid label at once."""
    document, problems, _given = _document_from_bag_info(_labels(bag_info))
    unreadable = {p.path for p in problems}
    problems += [
        p
        for p in _schema_problems(_validator().iter_errors(document))
        if p.path not in unreadable  # "not a number" already said; "required" would repeat it
    ]
    if problems:
        return None, [
            Check("capture-metadata.bag-info", Outcome.FAIL, _bag_info_reason(p), BAG_INFO_FILE)
            for p in sorted(problems, key=_reading_order)
        ]
    return _to_model(document, "capture-metadata.bag-info", BAG_INFO_FILE, _bag_info_reason)


def _day(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _same(path: tuple[str, ...], a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if path == ("capture", "captured_at") and isinstance(a, str) and isinstance(b, str):
        try:
            first, second = parse_captured_at(a), parse_captured_at(b)
        except ValueError:
            return a == b
        if type(first) is not type(second):  # a date agrees with any time on that day
            return _day(first) == _day(second)
        return first == second
    return str(a).strip() == str(b).strip()


def _conflicts(json_document: Any, bag_info: Mapping[str, Any]) -> list[Check]:
    """Labels in bag-info.txt that say something else than capture-metadata.json (which wins)."""
    labels = _labels(bag_info)
    dc_document, _problems, given = _document_from_bag_info(labels)
    checks = []
    for field in BAG_INFO_FIELDS:
        if field.standard or field.label not in given:
            continue
        paths = (
            [("rights", "license"), ("rights", "license_text")]
            if field.kind == "license"
            else [field.path]
        )
        differs = [
            p
            for p in paths
            if not _same(p, _get(dc_document, p), _get(json_document, p))
            and not (_get(dc_document, p) is None and _get(json_document, p) is None)
        ]
        if not differs:
            continue
        path = differs[0]
        theirs, ours = _get(dc_document, path), _get(json_document, path)
        if ours is None:
            reason = f"{field.label} is given but {METADATA_FILE} has no {'.'.join(path)}"
        elif _quiet(path):
            reason = f"{field.label} differs from {METADATA_FILE} {'.'.join(path)}"
        else:
            reason = (
                f"{field.label} {json.dumps(theirs, ensure_ascii=False)} differs from "
                f"{METADATA_FILE} {'.'.join(path)} {json.dumps(ours, ensure_ascii=False)}"
            )
        checks.append(
            Check(
                "capture-metadata.conflict",
                Outcome.WARN,
                f"{BAG_INFO_FILE}: {reason}; {METADATA_FILE} is used",
                BAG_INFO_FILE,
                {"label": field.label, "field": ".".join(path)},
            )
        )
    return checks


# --- the step -----------------------------------------------------------------------------------


def read_capture_metadata(
    bag_dir: Path, bag_info: Mapping[str, Any]
) -> tuple[CaptureMetadata | None, list[Check]]:
    """The capture metadata of the bag at `bag_dir`: capture-metadata.json when present (then
    labels in bag-info.txt that disagree are a WARN), else the Dublin Core mapping of `bag_info`
    (bag-info.txt as label -> values). None when it is missing or invalid; the checks say why."""
    path = Path(bag_dir) / METADATA_FILE
    try:
        document = _load_json(path)
    except FileNotFoundError:
        document = None
        present = False
    except _Unreadable as exc:
        reason = f"{METADATA_FILE}: {exc}"
        return None, [Check("capture-metadata.file", Outcome.FAIL, reason, METADATA_FILE)]
    except OSError as exc:
        reason = f"{METADATA_FILE}: cannot be read: {exc.strerror or exc}"
        return None, [Check("capture-metadata.file", Outcome.FAIL, reason, METADATA_FILE)]
    else:
        present = True

    if present:
        metadata, checks = check_capture_document(document)
        if metadata is not None:
            checks += _conflicts(document, bag_info)
            checks.append(
                Check(
                    "capture-metadata.read",
                    Outcome.PASS,
                    f"{METADATA_FILE} is valid against {SCHEMA_ID}",
                    METADATA_FILE,
                )
            )
        return metadata, checks

    labels = _labels(bag_info)
    if not any(f.label.lower() in labels for f in BAG_INFO_FIELDS if not f.standard):
        return None, [
            Check(
                "capture-metadata.missing",
                Outcome.FAIL,
                f"the bag says nothing about its capture: add {METADATA_FILE} at the bag root, "
                f"or Dublin Core and Arkhiv labels to {BAG_INFO_FILE} (docs/submission-format.md)",
                None,
                {"required_labels": _required_labels()},
            )
        ]
    metadata, checks = metadata_from_bag_info(bag_info)
    if metadata is not None:
        checks.append(
            Check(
                "capture-metadata.read",
                Outcome.PASS,
                f"mapped from Dublin Core and Arkhiv labels in {BAG_INFO_FILE}",
                BAG_INFO_FILE,
            )
        )
    return metadata, checks


def _required_labels() -> list[str]:
    """The labels an otherwise empty bag-info.txt would be asked for."""
    document, _problems, _given = _document_from_bag_info({})
    return [_where(p) for p in _schema_problems(_validator().iter_errors(document))]


def precise_location(meta: CaptureMetadata) -> GeoLocation | None:
    """The object's precise position for sealing, or None when the submission gave none."""
    where = meta.object.coordinates
    if where is None:
        return None
    return GeoLocation(
        latitude=where.latitude,
        longitude=where.longitude,
        altitude=where.altitude,
        source="capture-metadata",
        kind="capture-metadata",
    )


def public_metadata(meta: CaptureMetadata) -> dict[str, Any]:
    """What anyone may see: no coordinates, no e-mail, no permission-giver, and the contributor
    credited only as publish_as says."""
    document = meta.model_dump(mode="json", exclude_none=True)
    document["object"].pop("coordinates", None)
    contributor = document["contributor"]
    contributor.pop("email", None)
    credit = meta.contributor.publish_as
    if credit != PublishAs.NAME:
        contributor.pop("name", None)
        # A holder given as the real name would undo the pseudonym.
        if meta.rights.holder is not None and meta.rights.holder == meta.contributor.name:
            document["rights"].pop("holder", None)
    if credit != PublishAs.PSEUDONYM:
        contributor.pop("pseudonym", None)
    if credit == PublishAs.ANONYMOUS:
        contributor.pop("organization", None)
    document["permission"].pop("granted_by", None)
    return document


# --- the BagIt profile --------------------------------------------------------------------------


class _CollectingProfile(bagit_profile.Profile):
    """bagit_profile stops each rule at its first violation by raising; collecting instead lets
    one report list every violation (the library's rules go on after a failure)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.violations: list[str] = []
        # The profile is given, not fetched: ingest never depends on the network.
        super().__init__(PROFILE_ID, profile=document, ignore_baginfo_tag_case=True)

    def _fail(self, msg: str) -> None:
        self.violations.append(str(msg))

    def _warn(self, msg: str) -> None:
        self.violations.append(str(msg))


# (library rule, check name, file it concerns)
_PROFILE_RULES = (
    ("validate_bag_info", "profile.bag-info", BAG_INFO_FILE),
    ("validate_manifests_required", "profile.manifests", None),
    ("validate_payload_manifests_allowed", "profile.manifests", None),
    ("validate_tag_manifests_required", "profile.tag-manifests", None),
    ("validate_tag_manifests_allowed", "profile.tag-manifests", None),
    ("validate_tag_files_required", "profile.tag-files", None),
    ("validate_tag_files_allowed", "profile.tag-files", None),
    ("validate_allow_fetch", "profile.fetch", "fetch.txt"),
    ("validate_accept_bagit_version", "profile.bagit-version", "bagit.txt"),
)
_PROFILE_TAG = "bagit-profile-identifier"


def _tidy(message: str, bag_path: str) -> str:
    # The library starts each message with the bag's absolute path, which says nothing here.
    message = message.removeprefix(f"{bag_path}: ").replace(bag_path + "/", "")
    return message.replace("Fetch.txt", "fetch.txt")


def validate_profile(bag_dir: Path, *, package: Path | None = None) -> list[Check]:
    """Check the bag at `bag_dir` against Arkhiv's BagIt profile: one FAIL per violation, a WARN
    when bag-info.txt does not name the profile, a PASS when it conforms. `package`, the zip or
    tar the bag came in, is checked against the accepted serializations too."""
    document = load_profile()
    try:
        profile = _CollectingProfile(document)
    except (KeyError, TypeError, ValueError, bagit_profile.ProfileValidationError) as exc:
        return [Check("profile.definition", Outcome.FAIL, f"Arkhiv's profile is broken: {exc}")]
    if profile.violations:
        reason = "Arkhiv's profile is broken: " + "; ".join(profile.violations)
        return [Check("profile.definition", Outcome.FAIL, reason)]

    checks: list[Check] = []
    if package is not None:
        try:
            profile.validate_serialization(str(package))
        except OSError as exc:
            reason = f"{package.name}: cannot be checked: {exc}"
            checks.append(Check("profile.serialization", Outcome.FAIL, reason))
        # The library's own message for a refused type is worded for another case; say it plainly.
        if profile.violations:
            kind = mimetypes.guess_type(package.name)[0] or "a file of unknown type"
            reason = f"{package.name}: {kind} is not an accepted package; send zip, tar or tar.gz"
            checks.append(Check("profile.serialization", Outcome.FAIL, reason))
            profile.violations.clear()

    try:
        bag = bagit.Bag(str(bag_dir))
    except (bagit.BagError, OSError, ValueError) as exc:
        reason = f"not a readable bag: {without_quoted_line(exc)}"
        return [*checks, Check("profile.bag", Outcome.FAIL, reason)]

    # The profiles specification wants the profile named in bag-info.txt; a bag that does not is
    # still checked against Arkhiv's profile (it is the only one Arkhiv takes), so it is a WARN.
    declared = [
        value
        for label, values in bag.info.items()
        if label.lower() == _PROFILE_TAG
        for value in ([values] if isinstance(values, str) else values)
    ]
    if PROFILE_ID not in declared:
        said = f"names {', '.join(declared)}" if declared else "has no BagIt-Profile-Identifier"
        checks.append(
            Check(
                "profile.identifier",
                Outcome.WARN,
                f"{BAG_INFO_FILE} {said}; checked against Arkhiv's profile anyway "
                f"(add 'BagIt-Profile-Identifier: {PROFILE_ID}')",
                BAG_INFO_FILE,
            )
        )
    bag.info = {k: v for k, v in bag.info.items() if k.lower() != _PROFILE_TAG}
    bag.info["BagIt-Profile-Identifier"] = PROFILE_ID

    allowed_tags = document.get("Tag-Files-Allowed", ["*"])
    for rule, name, path in _PROFILE_RULES:
        profile.violations.clear()
        try:
            getattr(profile, rule)(bag)
        except (KeyError, OSError, bagit_profile.ProfileValidationError) as exc:
            profile.violations.append(f"could not be checked: {exc}")
        for message in profile.violations:
            reason = _tidy(message, bag.path)
            if rule == "validate_tag_files_allowed":
                reason += (
                    f" Only {', '.join(allowed_tags)} may sit beside data/; put the rest in data/."
                )
            where = (
                re.search(r"tag file '([^']+)'", reason) if name == "profile.tag-files" else None
            )
            checks.append(Check(name, Outcome.FAIL, reason, where.group(1) if where else path))

    # Profiles can only require every listed algorithm; Arkhiv needs one strong one of several.
    strong = document.get("Arkhiv-Manifests-Required-One-Of", [])
    present = sorted(
        Path(f).name.removeprefix("manifest-").removesuffix(".txt") for f in bag.manifest_files()
    )
    if strong and not set(strong) & set(present):
        checks.append(
            Check(
                "profile.manifests",
                Outcome.FAIL,
                f"no {' or '.join(strong)} payload manifest (found: {', '.join(present) or 'none'})"
                f"; md5 and sha1 no longer prove that nobody altered the payload: "
                f"add manifest-{strong[0]}.txt",
            )
        )

    if not any(c.outcome == Outcome.FAIL for c in checks):
        info = document["BagIt-Profile-Info"]
        reason = f"conforms to {info['BagIt-Profile-Identifier']} (version {info['Version']})"
        checks.append(Check("profile.conformance", Outcome.PASS, reason))
    return checks


def _to_model(
    document: Any, check_name: str, file_name: str, reason: Callable[[Any], str]
) -> tuple[CaptureMetadata | None, list[Check]]:
    """The model of a document that passed its schema, with the consistency checks that a
    schema cannot express (period order, dates in the future)."""
    try:
        metadata = CaptureMetadata.model_validate(document)
    except ModelError as exc:
        return None, [
            Check(check_name, Outcome.FAIL, reason(p), file_name) for p in _model_problems(exc)
        ]
    checks = [
        Check("capture-metadata.consistency", p.outcome, reason(p), file_name)
        for p in _consistency_problems(metadata)
    ]
    return metadata, checks
