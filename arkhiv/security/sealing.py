"""Sealing secrets (precise site locations) with AES-256-GCM under the archive's key.

The key lives in a file in ARKHIV_HOME (`keys/archive.key`, mode 0600), never in the catalog, so a
copy of the catalog alone reveals no location. Each sealed value is bound to its context
(associated data, e.g. the submission and file it came from) so a ciphertext cannot be moved to
another record unnoticed. Keys carry an id so that they can be rotated."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SealingError(Exception):
    pass


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


class ArchiveKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SealingError(f"an archive key has {KEY_BYTES} bytes, this one {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"arkhiv-key-id:" + key).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> ArchiveKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: two processes initializing at once must not write two different keys
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(KEY_BYTES))
                    handle.flush()
                    os.fsync(handle.fileno())
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> ArchiveKey:
        try:
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise SealingError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
            return cls(path.read_bytes())
        except FileNotFoundError:
            raise SealingError(f"archive key {path} is missing") from None

    def seal(self, value: Any, context: str) -> Sealed:
        plaintext = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        nonce = secrets.token_bytes(NONCE_BYTES)
        return Sealed(self.key_id, nonce, self._aead.encrypt(nonce, plaintext, context.encode()))

    def unseal(self, sealed: Sealed, context: str) -> Any:
        if sealed.key_id != self.key_id:
            raise SealingError(f"sealed with key {sealed.key_id}, not with this key {self.key_id}")
        try:
            plaintext = self._aead.decrypt(sealed.nonce, sealed.ciphertext, context.encode())
        except InvalidTag:
            raise SealingError("ciphertext or its context was altered") from None
        return json.loads(plaintext)
