"""The descriptive record of an archived object: what the object is, as the public may read it.

Built at ingest from the capture metadata's public view (no coordinates, no e-mail, the
contributor credited only as they asked), archived in every version as
`metadata/description.json`, and changed only by `arkhiv describe` (a new version). METS, PREMIS
and the CIDOC-CRM graph are generated from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from arkhiv.ingest.capture_metadata import (
    COUNTRY_CODES,
    EDTF_PATTERN,
    ConditionStatus,
    License,
    ObjectType,
)

SCHEMA = "https://arkhiv.org/schemas/description/1.0"
FILE_NAME = "metadata/description.json"


class DescriptionError(ValueError):
    pass


def _text(limit: int) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        if not value:
            raise DescriptionError("must not be empty")
        if len(value) > limit:
            raise DescriptionError(f"longer than {limit} characters")
        return value

    return check


def _choice(options: type) -> Callable[[str], str]:
    allowed = [member.value for member in options]

    def check(value: str) -> str:
        if value not in allowed:
            raise DescriptionError(f"must be one of {', '.join(allowed)}")
        return value

    return check


def _country(value: str) -> str:
    value = value.strip().upper()
    if value not in COUNTRY_CODES:
        raise DescriptionError("not an ISO 3166-1 alpha-2 country code")
    return value


def _edtf(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(EDTF_PATTERN, value):
        raise DescriptionError("not an EDTF date such as 1780, 1780-05 or 178X")
    return value


# Fields `arkhiv describe --set` may change, with their checks. Locations, the capture, the
# contributor and the permission are the submission's record and are not edited here.
EDITABLE: dict[str, Callable[[str], str]] = {
    "title": _text(500),
    "object_type": _choice(ObjectType),
    "type_detail": _text(500),
    "description": _text(20000),
    "inventory_number": _text(200),
    "place_name": _text(500),
    "country": _country,
    "period": _text(500),
    "date_start": _edtf,
    "date_end": _edtf,
    "condition": _choice(ConditionStatus),
    "condition_note": _text(20000),
    "license": _choice(License),
    "license_text": _text(50000),
    "rights_holder": _text(300),
}


def from_public_metadata(
    metadata: Mapping[str, Any] | None, public_location: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The record from the ingest report's public metadata (see
    `arkhiv.ingest.capture_metadata.public_metadata`)."""
    metadata = metadata or {}
    heritage = metadata.get("object", {})
    dating = heritage.get("date") or {}
    condition = heritage.get("condition") or {}
    capture = metadata.get("capture") or {}
    device = capture.get("device") or {}
    app = capture.get("app") or {}
    contributor = metadata.get("contributor") or {}
    rights = metadata.get("rights") or {}
    permission = metadata.get("permission") or {}
    record = {
        "schema": SCHEMA,
        "title": heritage.get("title") or "Untitled capture",
        "object_type": heritage.get("type") or "other",
        "type_detail": heritage.get("type_detail"),
        "description": heritage.get("description"),
        "inventory_number": heritage.get("inventory_number"),
        "place_name": heritage.get("place_name"),
        "country": heritage.get("country"),
        "period": dating.get("period"),
        "date_start": dating.get("start"),
        "date_end": dating.get("end"),
        "condition": condition.get("status"),
        "condition_note": condition.get("note"),
        "license": rights.get("license"),
        "license_text": rights.get("license_text"),
        "rights_holder": rights.get("holder"),
        "permission": permission.get("statement"),
        "language": metadata.get("language"),
        "capture": {
            "mode": capture.get("mode"),
            "captured_at": capture.get("captured_at"),
            "device": " ".join(filter(None, (device.get("make"), device.get("model")))) or None,
            "app": " ".join(filter(None, (app.get("name"), app.get("version")))) or None,
        },
        # Credited as the contributor asked: a name, a pseudonym, or nobody.
        "contributor": contributor.get("name") or contributor.get("pseudonym"),
        "organization": contributor.get("organization"),
        "public_location": dict(public_location) if public_location else None,
    }
    return record


def apply_edits(record: Mapping[str, Any], edits: Mapping[str, str]) -> tuple[dict, dict]:
    """The record with `edits` (field -> text; an empty text clears an optional field) applied,
    and {field: (old, new)} for what changed. DescriptionError names every bad field."""
    updated = dict(record)
    problems = []
    changes: dict[str, tuple[Any, Any]] = {}
    for name, raw in edits.items():
        check = EDITABLE.get(name)
        if check is None:
            problems.append(f"{name}: not an editable field (editable: {', '.join(EDITABLE)})")
            continue
        if raw.strip() == "":
            if name in ("title", "object_type"):
                problems.append(f"{name}: required, cannot be cleared")
                continue
            value = None
        else:
            try:
                value = check(raw)
            except DescriptionError as exc:
                problems.append(f"{name}: {exc}")
                continue
        if updated.get(name) != value:
            changes[name] = (updated.get(name), value)
            updated[name] = value
    if updated.get("object_type") == "other" and not updated.get("type_detail"):
        problems.append('type_detail: required when object_type is "other"')
    if problems:
        raise DescriptionError("; ".join(problems))
    return updated, changes


def to_bytes(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def from_bytes(data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DescriptionError(f"{FILE_NAME}: not JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise DescriptionError(f"{FILE_NAME}: not an Arkhiv description record")
    return record
