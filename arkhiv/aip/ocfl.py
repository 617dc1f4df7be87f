"""OCFL 1.1 objects: inventories, the storage layout, and new versions built in staging.

Everything here works on local folders; `arkhiv.aip.placement` hands the result to the stores.

- Content addressing: sha512, as OCFL recommends. Other digests (sha256, and whatever the
  submitter's bag manifests used) go in the inventory's `fixity` block, so a bag's own checksums
  can still be checked against the archived bytes decades later.
- Storage layout: the registered extension 0003-hash-and-id-n-tuple-storage-layout. An object
  lives under three 3-character tuples of the sha256 of its identifier, in a folder named after
  the identifier itself (percent-encoded), so a person browsing a store sees which ARK a folder
  holds without any software.
- A new version stores only content whose sha512 the object does not hold yet: an unchanged
  file of any size is stored once, however many versions carry it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from arkhiv.fixity.digests import digest_file, digest_length

SPEC_VERSION = "1.1"
INVENTORY_TYPE = "https://ocfl.io/1.1/spec/#inventory"
OBJECT_DECLARATION = "0=ocfl_object_1.1"
ROOT_DECLARATION = "0=ocfl_1.1"
INVENTORY = "inventory.json"
DIGEST_ALGORITHM = "sha512"
SIDECAR = f"{INVENTORY}.{DIGEST_ALGORITHM}"
CONTENT_DIRECTORY = "content"
LAYOUT_EXTENSION = "0003-hash-and-id-n-tuple-storage-layout"
LAYOUT_CONFIG = {
    "extensionName": LAYOUT_EXTENSION,
    "digestAlgorithm": "sha256",
    "tupleSize": 3,
    "numberOfTuples": 3,
}
# Fixity algorithms OCFL names in its 0001-digest-algorithms extension.
FIXITY_ALGORITHMS = {
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "blake2b-512",
    "blake2b-160",
    "blake2b-256",
    "blake2b-384",
    "sha512/256",
    "size",
    "crc32",
}
_ENCODED_LIMIT = 100


class OcflError(Exception):
    pass


def _encode(identifier: str) -> str:
    safe = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    return "".join(chr(b) if b in safe else f"%{b:02x}" for b in identifier.encode("utf-8"))


def object_path(identifier: str) -> str:
    """The object's folder under the storage root (extension 0003): three 3-character tuples
    of sha256(id), then the percent-encoded id (truncated to 100 characters plus the whole
    digest when longer)."""
    digest = hashlib.sha256(identifier.encode("utf-8")).hexdigest()
    tuples = [digest[i : i + 3] for i in range(0, 9, 3)]
    encoded = _encode(identifier)
    if len(encoded) > _ENCODED_LIMIT:
        encoded = f"{encoded[:_ENCODED_LIMIT]}-{digest}"
    return "/".join([*tuples, encoded])


def storage_root_files() -> dict[str, bytes]:
    """The files that make a folder (or a key prefix) an OCFL 1.1 storage root."""
    layout = {
        "extension": LAYOUT_EXTENSION,
        "description": "Hashed n-tuple directory layout with the object id as the last "
        "directory name (OCFL community extension 0003); object ids are Arkhiv ARKs",
    }
    return {
        ROOT_DECLARATION: b"ocfl_1.1\n",
        "ocfl_layout.json": _json(layout),
        f"extensions/{LAYOUT_EXTENSION}/config.json": _json(LAYOUT_CONFIG),
    }


def _json(document: Any) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def version_name(number: int) -> str:
    return f"v{number}"  # never zero-padded: padding caps the number of versions


def version_number(name: str) -> int:
    if not name.startswith("v") or not name[1:].isdigit() or name[1] == "0":
        raise OcflError(f"{name!r} is not a version name like v1")
    return int(name[1:])


def iso_created(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise OcflError("a version's creation time needs a time zone")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def check_logical_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise OcflError(f"invalid logical path {path!r}")


@dataclass(frozen=True)
class User:
    name: str
    address: str  # a URI: mailto:, https:, ...


@dataclass
class VersionRecord:
    created: datetime
    message: str
    user: User
    state: dict[str, list[str]]  # sha512 -> logical paths

    def logical_files(self) -> dict[str, str]:
        """logical path -> sha512."""
        return {path: digest for digest, paths in self.state.items() for path in paths}


@dataclass
class Inventory:
    id: str
    head: int = 0
    manifest: dict[str, list[str]] = field(default_factory=dict)  # sha512 -> content paths
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    fixity: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # alg -> digest -> paths

    def to_json(self) -> bytes:
        document: dict[str, Any] = {
            "id": self.id,
            "type": INVENTORY_TYPE,
            "digestAlgorithm": DIGEST_ALGORITHM,
            "head": version_name(self.head),
            "manifest": {d: sorted(p) for d, p in sorted(self.manifest.items())},
            "versions": {
                version_name(number): {
                    "created": iso_created(record.created),
                    "message": record.message,
                    "user": {"name": record.user.name, "address": record.user.address},
                    "state": {d: sorted(p) for d, p in sorted(record.state.items())},
                }
                for number, record in sorted(self.versions.items())
            },
        }
        if self.fixity:
            document["fixity"] = {
                algorithm: {d: sorted(p) for d, p in sorted(block.items())}
                for algorithm, block in sorted(self.fixity.items())
            }
        return _json(document)

    @classmethod
    def from_json(cls, data: bytes) -> Inventory:
        """Parse an inventory Arkhiv can read back (OcflError otherwise). This is not a full
        validator: the tests hold every object to ocfl-py's."""
        try:
            document = json.loads(data)
            if document.get("type") != INVENTORY_TYPE:
                raise OcflError(f"not an OCFL 1.1 inventory (type {document.get('type')!r})")
            if document.get("digestAlgorithm") != DIGEST_ALGORITHM:
                raise OcflError("Arkhiv objects use sha512 content addressing")
            if document.get("contentDirectory", CONTENT_DIRECTORY) != CONTENT_DIRECTORY:
                raise OcflError("unexpected contentDirectory")
            versions = {}
            for name, record in document["versions"].items():
                user = record.get("user") or {}
                versions[version_number(name)] = VersionRecord(
                    created=datetime.fromisoformat(record["created"].replace("Z", "+00:00")),
                    message=record.get("message", ""),
                    user=User(user.get("name", ""), user.get("address", "")),
                    state={d: list(p) for d, p in record["state"].items()},
                )
            inventory = cls(
                id=document["id"],
                head=version_number(document["head"]),
                manifest={d: list(p) for d, p in document["manifest"].items()},
                versions=versions,
                fixity={
                    algorithm: {d: list(p) for d, p in block.items()}
                    for algorithm, block in document.get("fixity", {}).items()
                },
            )
        except OcflError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OcflError(f"unreadable inventory: {type(exc).__name__}: {exc}") from None
        if sorted(inventory.versions) != list(range(1, inventory.head + 1)):
            raise OcflError("inventory versions are not v1..head")
        return inventory

    def content_path_of(self, digest: str) -> str:
        return sorted(self.manifest[digest])[0]

    def digests_by_content_path(self) -> dict[str, dict[str, str]]:
        """content path -> every digest the inventory knows for it (sha512 and fixity), from one
        pass over the manifest and the fixity block."""
        found: dict[str, dict[str, str]] = {}
        for digest, paths in self.manifest.items():
            for path in paths:
                found.setdefault(path, {})[DIGEST_ALGORITHM] = digest
        for algorithm, block in self.fixity.items():
            for digest, paths in block.items():
                for path in paths:
                    found.setdefault(path, {})[algorithm] = digest
        return found


@dataclass(frozen=True)
class SourceFile:
    """A file to carry into a version: where its bytes are now and the digests already known
    (at least sha512 saves reading it again)."""

    path: Path
    digests: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NewContent:
    content_path: str  # e.g. "v2/content/metadata/mets.xml"
    local_path: Path  # the staged copy
    size: int
    digests: dict[str, str]


@dataclass
class StagedVersion:
    """A version ready to place: its folder in staging mirrors the object root (the new version
    folder, the root inventory and sidecar, and for v1 the object declaration)."""

    object_id: str
    number: int
    root: Path
    inventory: Inventory
    inventory_bytes: bytes
    new_content: list[NewContent]

    @property
    def inventory_sha512(self) -> str:
        return hashlib.sha512(self.inventory_bytes).hexdigest()

    def control_files(self) -> list[str]:
        """Object-relative paths written after the content, in order; the root inventory last,
        so that a store shows the new head only when everything it names is there."""
        version = version_name(self.number)
        files = [f"{version}/{INVENTORY}", f"{version}/{SIDECAR}"]
        if self.number == 1:
            files.append(OBJECT_DECLARATION)
        return [*files, SIDECAR, INVENTORY]


def sidecar_text(inventory_bytes: bytes) -> bytes:
    return f"{hashlib.sha512(inventory_bytes).hexdigest()}  {INVENTORY}\n".encode()


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)  # staging and the package share a file system: no copy
    except OSError:
        shutil.copyfile(source, target)


def stage_version(
    workdir: Path,
    object_id: str,
    prior: Inventory | None,
    files: Mapping[str, SourceFile],
    *,
    carried: Mapping[str, str] | None = None,
    created: datetime,
    message: str,
    user: User,
    fixity_algorithms: tuple[str, ...] = ("sha256",),
) -> StagedVersion:
    """Build the next version of `object_id` in `workdir` (which must not exist yet).

    The new version's logical state is `files` (logical path -> source) plus `carried` (logical
    path -> sha512 of content the object already holds, e.g. the files an edit leaves alone).
    Content the object already holds is referenced, never stored again. Digests missing from a
    SourceFile are computed, all in one read of that file."""
    if workdir.exists():
        raise OcflError(f"{workdir} exists; a version is built in a fresh folder")
    if prior is not None and prior.id != object_id:
        raise OcflError(f"inventory is for {prior.id}, not {object_id}")
    carried = dict(carried or {})
    if not files and not carried:
        raise OcflError("a version needs at least one file")
    for logical, digest in carried.items():
        if prior is None or digest not in prior.manifest:
            raise OcflError(f"{logical}: carried content {digest[:16]}... is not in the object")
    inventory = Inventory(object_id) if prior is None else _copy(prior)
    number = inventory.head + 1
    version_dir = version_name(number)
    workdir.mkdir(parents=True)
    state: dict[str, list[str]] = {}
    new_content: list[NewContent] = []
    by_digest: dict[str, str] = {}  # sha512 -> content path added in this version
    for logical in sorted(files):
        check_logical_path(logical)
        source = files[logical]
        wanted = {DIGEST_ALGORITHM, *fixity_algorithms}
        digests = {k: v.lower() for k, v in source.digests.items()}
        missing = wanted - digests.keys()
        if missing:
            digests.update(digest_file(source.path, sorted(missing)))
        _check_digests(logical, digests)
        digest = digests[DIGEST_ALGORITHM]
        state.setdefault(digest, []).append(logical)
        if digest in inventory.manifest or digest in by_digest:
            continue
        content_path = f"{version_dir}/{CONTENT_DIRECTORY}/{logical}"
        target = workdir / PurePosixPath(content_path)
        _link_or_copy(source.path, target)
        size = target.stat().st_size
        by_digest[digest] = content_path
        inventory.manifest[digest] = [content_path]
        for algorithm, value in digests.items():
            if algorithm != DIGEST_ALGORITHM and algorithm in FIXITY_ALGORITHMS:
                inventory.fixity.setdefault(algorithm, {}).setdefault(value, []).append(
                    content_path
                )
        new_content.append(NewContent(content_path, target, size, digests))
    for logical, digest in sorted(carried.items()):
        check_logical_path(logical)
        if logical in files:
            raise OcflError(f"{logical}: both carried and new")
        state.setdefault(digest, []).append(logical)
    inventory.head = number
    inventory.versions[number] = VersionRecord(created, message, user, state)
    data = inventory.to_json()
    sidecar = sidecar_text(data)
    for place in (workdir / version_dir, workdir):
        place.mkdir(parents=True, exist_ok=True)
        (place / INVENTORY).write_bytes(data)
        (place / SIDECAR).write_bytes(sidecar)
    if number == 1:
        (workdir / OBJECT_DECLARATION).write_bytes(b"ocfl_object_1.1\n")
    return StagedVersion(object_id, number, workdir, inventory, data, new_content)


def _check_digests(logical: str, digests: Mapping[str, str]) -> None:
    for algorithm, value in digests.items():
        try:
            length = digest_length(algorithm)
        except ValueError:
            continue  # kept as given; only OCFL's own names reach the fixity block
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise OcflError(f"{logical}: {algorithm} digest {value!r} is malformed")


def _copy(inventory: Inventory) -> Inventory:
    return Inventory.from_json(inventory.to_json())


def parse_sidecar(data: bytes) -> str:
    parts = data.decode("ascii", "replace").split()
    if len(parts) != 2 or parts[1] != INVENTORY:
        raise OcflError("malformed inventory sidecar")
    return parts[0].lower()
