"""Placing staged OCFL versions on the stores, and reading objects back from them.

Every store holds an OCFL storage root under the key prefix `ocfl/` and, beside it, the event
journal under `journal/`: the PREMIS events that happen after a version was written
(replication, fixity checks, repairs) and so are in no version's premis.xml yet. Together they
let `arkhiv rebuild-catalog` restore everything from the stores alone.

Write order on each store: the new content files, each verified (a replica counts only when
verified); then the version inventory and its sidecar;
for v1 the object declaration; the root inventory last. A crash part-way leaves the store's root
inventory at the previous head, so no reader takes a half-written version for complete, and a
retry puts the same bytes again.

A copy is verified when its bytes, read back from the store, match the inventory's sha256 (from
its fixity block; sha512 where it has none): for bytes just written, as sure a check as sha512
and three times cheaper here. A store that confirms checksums itself (S3 with a SHA-256 per part)
needs no reading back: the bytes sent are hashed on the way and the service vouches that it holds
exactly those.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from arkhiv.aip.ocfl import (
    INVENTORY,
    OBJECT_DECLARATION,
    SIDECAR,
    Inventory,
    OcflError,
    StagedVersion,
    object_path,
    parse_sidecar,
    storage_root_files,
)
from arkhiv.storage.base import Store, StoreError

OCFL_PREFIX = "ocfl"
JOURNAL_PREFIX = "journal"
CHUNK = 1 << 20


class PlacementError(Exception):
    """A store could not take the version; the store is left as it was or partly written
    (never with the new head visible)."""


def object_key(object_id: str, relative: str = "") -> str:
    base = f"{OCFL_PREFIX}/{object_path(object_id)}"
    return f"{base}/{relative}" if relative else base


class HashingReader:
    """Passes a stream through, hashing what passes."""

    def __init__(self, stream: BinaryIO, algorithm: str) -> None:
        self.stream = stream
        self.digest = hashlib.new(algorithm)
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def verification_digest(digests: Mapping[str, Any]) -> tuple[str, str]:
    """(algorithm, value) a written copy is checked against: sha256 when known, else sha512."""
    if digests.get("sha256"):
        return "sha256", digests["sha256"]
    return "sha512", digests["sha512"]


def put_verified(
    store: Store, key: str, stream: BinaryIO, digests: Mapping[str, Any], size: int
) -> str | None:
    """Put one content file and verify the copy; None when it counts, else what is wrong.
    Store errors propagate."""
    if store.confirms_checksums:
        algorithm, expected = verification_digest(digests)
        reader = HashingReader(stream, algorithm)
        stored = store.put(key, reader)  # type: ignore[arg-type]
        if (reader.digest.hexdigest(), reader.size) != (expected, size):
            return "the bytes sent do not match the inventory"
        if stored.checksum_confirmed:
            return None
    else:
        store.put(key, stream)
    return stored_problem(store, key, digests, size)


def stored_problem(store: Store, key: str, digests: Mapping[str, Any], size: int) -> str | None:
    """None when the store's copy, read back, matches the inventory; else what is wrong."""
    algorithm, expected = verification_digest(digests)
    digest = hashlib.new(algorithm)
    found = 0
    try:
        with store.open(key) as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                found += len(chunk)
    except (StoreError, OSError) as exc:
        return f"cannot read back: {exc}"
    if (digest.hexdigest(), found) != (expected, size):
        return "read back differs from the inventory"
    return None


def read_bytes(store: Store, key: str, limit: int = 256 << 20) -> bytes:
    with store.open(key) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise PlacementError(f"{store.name}:{key} is larger than {limit} bytes")
    return data


def ensure_storage_root(store: Store) -> None:
    for relative, data in storage_root_files().items():
        key = f"{OCFL_PREFIX}/{relative}"
        if store.head(key) is None:
            store.put(key, io.BytesIO(data))


def read_inventory(store: Store, object_id: str) -> Inventory | None:
    """The store's root inventory of the object, checked against its sidecar; None when the
    store does not hold the object."""
    key = object_key(object_id, INVENTORY)
    if store.head(key) is None:
        return None
    return checked_inventory_at(store, object_key(object_id))


def checked_inventory_at(store: Store, root_key: str) -> Inventory:
    """The inventory of the object rooted at `root_key`, checked against its sidecar."""
    data = read_bytes(store, f"{root_key}/{INVENTORY}")
    expected = parse_sidecar(read_bytes(store, f"{root_key}/{SIDECAR}", 4096))
    if hashlib.sha512(data).hexdigest() != expected:
        raise OcflError(f"{store.name}:{root_key}: inventory does not match its sidecar")
    return Inventory.from_json(data)


@dataclass
class Placement:
    store: str
    verified: list[str] = field(default_factory=list)  # content paths read back and matching
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.problem is None


def place_version(staged: StagedVersion, store: Store) -> Placement:
    """Write the staged version to one store, verifying every content file by reading it back.
    Returns what was verified; `problem` says why the version is not (fully) there."""
    result = Placement(store.name)
    try:
        ensure_storage_root(store)
        current = read_inventory(store, staged.object_id)
    except (StoreError, OSError, OcflError, PlacementError) as exc:
        result.problem = f"cannot read the store: {exc}"
        return result
    held = current.head if current else 0
    if held >= staged.number:
        if current is not None and current.to_json() == staged.inventory_bytes:
            # Placed by an earlier attempt; check the content is really there.
            return _verify_content(staged, store, result)
        result.problem = (
            f"the store already holds v{held} of {staged.object_id}, different from this one"
        )
        return result
    if held != staged.number - 1:
        result.problem = (
            f"the store holds v{held} of {staged.object_id}; v{staged.number - 1} must be "
            "copied there first (replication catches up)"
        )
        return result
    try:
        for content in staged.new_content:
            key = object_key(staged.object_id, content.content_path)
            with content.local_path.open("rb") as stream:
                problem = put_verified(store, key, stream, content.digests, content.size)
            if problem:
                result.problem = f"{content.content_path}: {problem}"
                return result
            result.verified.append(content.content_path)
        for relative in staged.control_files():
            with (staged.root / relative).open("rb") as stream:
                store.put(object_key(staged.object_id, relative), stream)
    except (StoreError, OSError) as exc:
        result.problem = f"write failed: {exc}"
    return result


def _verify_content(staged: StagedVersion, store: Store, result: Placement) -> Placement:
    for content in staged.new_content:
        key = object_key(staged.object_id, content.content_path)
        problem = stored_problem(store, key, content.digests, content.size)
        if problem:
            result.problem = f"{content.content_path}: {problem}"
            return result
        result.verified.append(content.content_path)
    return result


# --- the event journal ---------------------------------------------------------------------


def journal_key(object_id: str, occurred_at: datetime, entry_id: str) -> str:
    stamp = occurred_at.strftime("%Y%m%dT%H%M%S%fZ")
    return f"{JOURNAL_PREFIX}/{object_path(object_id)}/{stamp}-{entry_id}.json"


def write_journal(
    stores: list[Store], object_id: str, occurred_at: datetime, entry_id: str, entry: dict
) -> list[str]:
    """Put one journal entry on every store that takes it; returns the stores that failed
    (the catalog still has the events; the next version's premis.xml carries them too)."""
    data = json.dumps({"object": object_id, **entry}, indent=2, sort_keys=True).encode()
    key = journal_key(object_id, occurred_at, entry_id)
    failed = []
    for store in stores:
        try:
            store.put(key, io.BytesIO(data))
        except (StoreError, OSError):
            failed.append(store.name)
    return failed


def journal_entries(store: Store) -> Iterator[dict[str, Any]]:
    for item in store.list(f"{JOURNAL_PREFIX}/"):
        if item.key.endswith(".json"):
            yield json.loads(read_bytes(store, item.key, 64 << 20))


# --- finding objects on a store ------------------------------------------------------------


def object_roots(store: Store) -> dict[str, dict[str, int]]:
    """{object root key: {object-relative path: size}} for every object on the store, from one
    listing."""
    sizes = {item.key: item.size for item in store.list(f"{OCFL_PREFIX}/")}
    roots = {key.rpartition("/")[0]: {} for key in sizes if key.endswith("/" + OBJECT_DECLARATION)}
    for key, size in sizes.items():
        directory = key.rpartition("/")[0]
        while directory and directory not in roots:
            directory = directory.rpartition("/")[0]
        if directory:
            roots[directory][key[len(directory) + 1 :]] = size
    return roots
