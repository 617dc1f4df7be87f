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


@pytest.fixture
def store(s3_endpoint, s3_bucket):
    return S3Store(
        "s3-eu",
        s3_bucket("eu-central-1"),
        "arkhiv/site",
        endpoint_url=s3_endpoint,
        region_name="eu-central-1",
        part_size=PART,
        **S3_CREDENTIALS,
    )


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
