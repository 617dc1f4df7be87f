from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


class StoreError(Exception):
    pass


class KeyNotFound(StoreError, KeyError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    # The store checked the bytes it received against a SHA-256 this process computed over the
    # bytes it sent, and it is known to refuse a mismatch: the copy needs no reading back.
    checksum_confirmed: bool = False


@dataclass(frozen=True)
class StoreHealth:
    reachable: bool
    writable: bool
    free_bytes: int | None
    detail: str = ""


class Store(Protocol):
    """A place that keeps byte streams under '/'-separated keys. Writes are atomic: a key is
    either absent or complete, never half-written."""

    name: str
    # Whether puts can come back checksum_confirmed (then the sender hashes what it sends).
    confirms_checksums: bool

    def put(self, key: str, stream: BinaryIO) -> StoredObject: ...

    def open(self, key: str) -> BinaryIO: ...

    def head(self, key: str) -> StoredObject | None: ...

    def list(self, prefix: str = "") -> Iterator[StoredObject]: ...

    def delete(self, key: str) -> None: ...

    def health(self) -> StoreHealth: ...
