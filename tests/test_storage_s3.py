"""The S3 store against a real S3 protocol server (moto, started on loopback by conftest), with
several buckets standing for stores in different regions."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from arkhiv.storage.base import KeyNotFound, StoreError
from arkhiv.storage.s3 import S3Store
from tests.conftest import S3_CREDENTIALS

PART = 5 << 20


def _store(endpoint: str, bucket: str, **options) -> S3Store:
    return S3Store(
        "s3-eu",
        bucket,
        "arkhiv/site",
        endpoint_url=endpoint,
        region_name="eu-central-1",
        part_size=PART,
        **S3_CREDENTIALS,
        **options,
    )


@pytest.fixture
def store(s3_endpoint, s3_bucket):
    return _store(s3_endpoint, s3_bucket("eu-central-1"))


@pytest.fixture
def checking_store(checking_s3_endpoint, checking_s3_bucket):
    return _store(checking_s3_endpoint, checking_s3_bucket("eu-central-1"))


class Chunked(io.RawIOBase):
    """A stream that hands out at most 64 KiB per read (as a socket would) and counts reads."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), 64 << 10, len(self.data) - self.position)
        buffer[:size] = self.data[self.position : self.position + size]
        self.position += size
        return size


def test_put_get_head_list_delete_small_and_multipart(store, s3_bucket):
    small = b"inventory"
    large = os.urandom(2 * PART + 12345)  # three parts, the last one short
    assert store.put("ark-1/inventory.json", io.BytesIO(small)).size == len(small)
    assert store.put("ark-1/v1/content/scan.ply", Chunked(large)).size == len(large)
    with store.open("ark-1/v1/content/scan.ply") as handle:
        digest = hashlib.sha512()
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.digest() == hashlib.sha512(large).digest()
    assert store.head("ark-1/v1/content/scan.ply").size == len(large)
    assert store.head("ark-1/missing") is None
    store.put("ark-2/inventory.json", io.BytesIO(b"{}"))
    assert [(o.key, o.size) for o in store.list("ark-1/")] == [
        ("ark-1/inventory.json", len(small)),
        ("ark-1/v1/content/scan.ply", len(large)),
    ]
    # Keys live under the store's prefix in the bucket.
    listed = s3_bucket.client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert all(item["Key"].startswith("arkhiv/site/") for item in listed)
    store.delete("ark-1/inventory.json")
    with pytest.raises(KeyNotFound):
        store.delete("ark-1/inventory.json")
    with pytest.raises(KeyNotFound):
        store.open("nothing")
    assert store.health().reachable


class Exploding(io.RawIOBase):
    def __init__(self) -> None:
        self.sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.sent > PART + 1:
            raise OSError("connection reset")
        size = min(len(buffer), 1 << 20)
        buffer[:size] = b"y" * size
        self.sent += size
        return size


def test_an_interrupted_upload_leaves_the_old_object_and_no_parts(store, s3_bucket):
    store.put("obj/file", io.BytesIO(b"old"))
    with pytest.raises(OSError, match="connection reset"):
        store.put("obj/file", Exploding())
    with store.open("obj/file") as handle:
        assert handle.read() == b"old"
    pending = s3_bucket.client.list_multipart_uploads(Bucket=store.bucket)
    assert pending.get("Uploads", []) == []


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a/./b"])
def test_keys_are_checked_as_on_local_stores(store, key):
    with pytest.raises(StoreError):
        store.put(key, io.BytesIO(b"x"))


def test_an_unreachable_service_is_a_store_error_not_a_crash():
    store = S3Store(
        "s3-down",
        "arkhiv-nowhere",
        endpoint_url="http://127.0.0.1:9",  # the discard port: nothing answers
        region_name="us-east-1",
        max_attempts=1,
        **S3_CREDENTIALS,
    )
    health = store.health()
    assert not health.reachable and "s3-down" in health.detail
    with pytest.raises(StoreError, match="s3-down"):
        store.put("a/b", io.BytesIO(b"x"))
    with pytest.raises(StoreError):
        list(store.list(""))


# --- checksums confirmed by the service -------------------------------------------------------


def test_a_service_that_only_echoes_checksums_is_not_trusted(store):
    assert store.confirms_checksums is False  # moto echoes the value it was sent, unchecked
    assert not store.put("small", io.BytesIO(b"x")).checksum_confirmed
    assert not store.put("large", io.BytesIO(os.urandom(PART + 1))).checksum_confirmed
    assert list(store.list(".arkhiv/")) == []  # the probe left nothing


def test_a_service_that_checks_checksums_confirms_small_and_multipart_puts(
    checking_store, checking_s3_endpoint
):
    assert checking_store.confirms_checksums is True
    assert checking_store.put("small", io.BytesIO(b"inventory")).checksum_confirmed
    large = os.urandom(2 * PART + 1)
    assert checking_store.put("large", Chunked(large)).checksum_confirmed
    with checking_store.open("large") as handle:
        assert handle.read() == large
    assert list(checking_store.list(".arkhiv/")) == []
    untrusting = _store(checking_s3_endpoint, checking_store.bucket, trust_checksums=False)
    assert untrusting.confirms_checksums is False
    assert not untrusting.put("small", io.BytesIO(b"inventory")).checksum_confirmed


@pytest.mark.parametrize("operation", ["PutObject", "UploadPart"])
def test_bytes_garbled_on_the_way_are_refused_and_nothing_is_left(
    checking_store, checking_s3_bucket, operation
):
    def garble(request, **_):  # after the checksum was computed from the bytes read
        body = request.body
        data = body if isinstance(body, bytes) else body.read()
        request.body = bytes([data[0] ^ 1]) + data[1:]

    checking_store.client.meta.events.register(f"before-send.s3.{operation}", garble)
    data = os.urandom(PART + 1 if operation == "UploadPart" else 1000)
    with pytest.raises(StoreError, match="BadDigest"):
        checking_store.put("garbled", io.BytesIO(data))
    assert checking_store.head("garbled") is None
    pending = checking_s3_bucket.client.list_multipart_uploads(Bucket=checking_store.bucket)
    assert pending.get("Uploads", []) == []
