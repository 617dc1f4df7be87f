"""The audit log's hash chain: each entry's hash covers its content and the previous entry's
hash, so removing, reordering or editing any entry breaks every hash after it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64


def entry_hash(
    prev_hash: str, at: datetime, actor: str, action: str, target: str, detail: Mapping[str, Any]
) -> str:
    canonical = json.dumps(
        {
            "prev": prev_hash,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def first_break(entries: Iterable[Mapping[str, Any]]) -> int | None:
    """The sequence number of the first entry that does not follow from the ones before it."""
    prev = GENESIS
    for entry in entries:
        expected = entry_hash(
            prev, entry["at"], entry["actor"], entry["action"], entry["target"], entry["detail"]
        )
        if entry["prev_hash"] != prev or entry["entry_hash"] != expected:
            return entry["seq"]
        prev = entry["entry_hash"]
    return None
