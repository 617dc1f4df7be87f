"""Streaming multi-digests against hashlib, one algorithm at a time."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from arkhiv.fixity.digests import (
    DEFAULT_CHUNK,
    digest_file,
    digest_files,
    digest_length,
    empty_digest,
    is_supported,
)

# BagIt name -> hashlib's computation of the same function.
REFERENCE = {
    "md5": lambda data: hashlib.md5(data).hexdigest(),
    "sha1": lambda data: hashlib.sha1(data).hexdigest(),
    "sha224": lambda data: hashlib.sha224(data).hexdigest(),
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),
    "sha384": lambda data: hashlib.sha384(data).hexdigest(),
    "sha512": lambda data: hashlib.sha512(data).hexdigest(),
    "sha3-256": lambda data: hashlib.sha3_256(data).hexdigest(),
    "sha3-512": lambda data: hashlib.sha3_512(data).hexdigest(),
    "blake2b-512": lambda data: hashlib.blake2b(data).hexdigest(),
    "blake2b-256": lambda data: hashlib.blake2b(data, digest_size=32).hexdigest(),
    "blake2b-160": lambda data: hashlib.blake2b(data, digest_size=20).hexdigest(),
    "blake2s-256": lambda data: hashlib.blake2s(data).hexdigest(),
}
SMALL_CHUNK = 4096


def _write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (0, SMALL_CHUNK),
        (1, SMALL_CHUNK),
        (SMALL_CHUNK, SMALL_CHUNK),  # exactly one chunk
        (SMALL_CHUNK - 1, SMALL_CHUNK),
        (SMALL_CHUNK + 1, SMALL_CHUNK),
        (5 * SMALL_CHUNK + 17, SMALL_CHUNK),  # several chunks and a partial one
        (DEFAULT_CHUNK, DEFAULT_CHUNK),
        (3 * DEFAULT_CHUNK + 1, DEFAULT_CHUNK),
    ],
)
def test_every_algorithm_matches_hashlib(tmp_path, size, chunk) -> None:
    data = _write(tmp_path / "file", size)
    result = digest_file(tmp_path / "file", REFERENCE, chunk=chunk)
    assert result == {name: reference(data) for name, reference in REFERENCE.items()}


def test_result_is_keyed_by_the_requested_names(tmp_path) -> None:
    data = _write(tmp_path / "file", 100)
    result = digest_file(tmp_path / "file", ["SHA-256", "sha3_256", "blake2b", "md5", "md5"])
    assert result == {
        "SHA-256": hashlib.sha256(data).hexdigest(),
        "sha3_256": hashlib.sha3_256(data).hexdigest(),
        "blake2b": hashlib.blake2b(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


def test_lengths_and_empty_digests() -> None:
    assert digest_length("sha512") == 128
    assert digest_length("md5") == 32
    assert digest_length("blake2b-160") == 40
    assert empty_digest("sha256") == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("name", ["whirlpool", "blake2b-513", "blake2s-512", "sha3-100", "", "md"])
def test_unknown_algorithm_is_refused_before_any_read(tmp_path, name) -> None:
    assert not is_supported(name)
    with pytest.raises(ValueError):
        digest_file(tmp_path / "does-not-exist", ["sha256", name])
    with pytest.raises(ValueError):
        list(digest_files([tmp_path / "does-not-exist"], [name]))


def test_no_algorithm_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError):
        digest_file(tmp_path / "file", [])


def test_unreadable_files_are_reported_not_raised(tmp_path) -> None:
    good = tmp_path / "good"
    data = _write(good, 10_000)
    missing = tmp_path / "missing"
    directory = tmp_path / "directory"
    directory.mkdir()
    paths = [good, missing, directory]
    if os.geteuid() != 0:  # root reads files whatever their mode
        unreadable = tmp_path / "unreadable"
        _write(unreadable, 10)
        unreadable.chmod(0)
        paths.append(unreadable)
    with pytest.raises(OSError):
        digest_file(missing, ["sha256"])
    for processes in (1, 2):
        results = dict(digest_files(paths, ["sha256"], processes=processes))
        assert set(results) == set(paths)
        assert results[good] == {"sha256": hashlib.sha256(data).hexdigest()}
        assert isinstance(results[missing], FileNotFoundError)
        assert isinstance(results[directory], IsADirectoryError)
        for path in paths[3:]:
            assert isinstance(results[path], PermissionError)


@pytest.mark.parametrize("processes", [1, 2, 4])
def test_pool_returns_every_file_once(tmp_path, processes) -> None:
    expected = {}
    for number in range(60):
        path = tmp_path / f"file-{number:02d}"
        data = _write(path, (number * 7919) % 300_000)
        expected[path] = {
            "md5": hashlib.md5(data).hexdigest(),
            "sha512": hashlib.sha512(data).hexdigest(),
        }
    results = list(digest_files(list(expected), ["md5", "sha512"], processes=processes))
    assert len(results) == len(expected)
    assert dict(results) == expected


def test_memory_stays_flat_whatever_the_file_size(tmp_path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as stream:
        for _ in range(48):
            stream.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        digest_file(big, ["sha512", "sha256", "md5"])
        _current, single_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        results = dict(digest_files([big, big.with_name("missing")], ["sha256"], processes=2))
        _current, pool_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(results[big], dict)
    assert single_peak < 2 * DEFAULT_CHUNK  # one 1 MiB buffer, not 48 MiB
    assert pool_peak < 4 * DEFAULT_CHUNK


def test_stopping_early_does_not_hang(tmp_path) -> None:
    paths = []
    for number in range(20):
        paths.append(tmp_path / f"f{number}")
        _write(paths[-1], 50_000)
    results = digest_files(paths, ["sha256"], processes=2)
    first = next(results)
    results.close()  # the pool shuts down with at most a few files in flight
    assert first[0] in paths
