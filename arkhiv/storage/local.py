"""A store on a local (or mounted) file system."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from arkhiv.storage.base import KeyNotFound, StoredObject, StoreError, StoreHealth

CHUNK = 1 << 20
INCOMING = ".incoming"  # partial writes; never a key


def check_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}")
    return path


class LocalStore:
    confirms_checksums = False  # a file system keeps no checksum: copies are read back

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = Path(root)

    def ensure(self) -> None:
        # Originals as submitted carry names and locations: the store is its owner's alone,
        # and so are the folders made to hold it.
        missing = [self.root, *(p for p in self.root.parents if not p.exists())]
        for folder in reversed(missing):
            folder.mkdir(exist_ok=True, mode=0o700)
        self.root.chmod(0o700)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).parts)

    def local_path(self, key: str) -> Path:
        """Where the key's bytes are on disk: readers that can use a file name (readinto into
        one reused buffer) go faster than through a stream."""
        return self._path(key)

    def put(self, key: str, stream: BinaryIO) -> StoredObject:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write in the store's own incoming folder (same file system) and rename: readers never
        # see a partial file, and a writer killed mid-way leaves its debris outside the keys,
        # never inside an OCFL object where a validator would take it for undeclared content.
        incoming = self.root / INCOMING
        incoming.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=incoming, prefix="put-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return StoredObject(key, size)

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError:
            raise KeyNotFound(key) from None

    def head(self, key: str) -> StoredObject | None:
        try:
            return StoredObject(key, self._path(key).stat().st_size)
        except FileNotFoundError:
            return None

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        for directory, dirs, names in os.walk(self.root):
            if directory == str(self.root) and INCOMING in dirs:
                dirs.remove(INCOMING)
            dirs.sort()
            for name in sorted(names):
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield StoredObject(key, path.stat().st_size)

    def clean_incoming(self, older_than_seconds: float) -> int:
        """Remove partial writes left by writers that died; returns how many."""
        import time

        removed = 0
        cutoff = time.time() - older_than_seconds
        for path in (self.root / INCOMING).glob("put-*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            raise KeyNotFound(key) from None

    def health(self) -> StoreHealth:
        if not self.root.is_dir():
            return StoreHealth(False, False, None, f"{self.root} does not exist")
        writable = os.access(self.root, os.W_OK | os.X_OK)
        free = shutil.disk_usage(self.root).free
        return StoreHealth(True, writable, free, "" if writable else "not writable")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
