import os

import pytest

from arkhiv.security.sealing import ArchiveKey, Sealed, SealingError


def test_seal_and_unseal_round_trip(tmp_path):
    key = ArchiveKey.load_or_create(tmp_path / "keys" / "archive.key")
    assert (tmp_path / "keys" / "archive.key").stat().st_mode & 0o777 == 0o600
    location = {"latitude": 50.4501, "longitude": 30.5234, "kind": "exif-gps"}
    sealed = key.seal(location, "submission-1:data/a.jpg")
    assert b"50.4501" not in sealed.ciphertext
    assert key.unseal(sealed, "submission-1:data/a.jpg") == location
    # the same value sealed twice gives different ciphertexts (fresh nonce)
    assert key.seal(location, "x").ciphertext != key.seal(location, "x").ciphertext


def test_context_and_tampering_are_detected(tmp_path):
    key = ArchiveKey.load_or_create(tmp_path / "archive.key")
    sealed = key.seal({"latitude": 1.0}, "submission-1:data/a.jpg")
    with pytest.raises(SealingError, match="altered"):
        key.unseal(sealed, "submission-2:data/a.jpg")
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(SealingError, match="altered"):
        key.unseal(Sealed(sealed.key_id, sealed.nonce, flipped), "submission-1:data/a.jpg")


def test_another_key_cannot_unseal(tmp_path):
    first = ArchiveKey.load_or_create(tmp_path / "one.key")
    second = ArchiveKey.load_or_create(tmp_path / "two.key")
    assert first.key_id != second.key_id
    with pytest.raises(SealingError, match="not with this key"):
        second.unseal(first.seal({"a": 1}, "c"), "c")


def test_existing_key_is_kept_and_loose_permissions_refused(tmp_path):
    path = tmp_path / "archive.key"
    first = ArchiveKey.load_or_create(path)
    assert ArchiveKey.load_or_create(path).key_id == first.key_id
    os.chmod(path, 0o644)
    with pytest.raises(SealingError, match="readable by others"):
        ArchiveKey.load(path)
    with pytest.raises(SealingError, match="missing"):
        ArchiveKey.load(tmp_path / "gone.key")
