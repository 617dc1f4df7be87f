import io

import pytest

from arkhiv.storage import LocalStore
from arkhiv.storage.base import KeyNotFound, StoreError


def test_put_get_head_list_delete(tmp_path):
    store = LocalStore("site-a", tmp_path / "a")
    store.ensure()
    payload = b"x" * (3 * 1024 * 1024 + 17)
    stored = store.put("ark-1/v1/content/scan.ply", io.BytesIO(payload))
    assert stored.size == len(payload)
    with store.open("ark-1/v1/content/scan.ply") as handle:
        assert handle.read() == payload
    assert store.head("ark-1/v1/content/scan.ply").size == len(payload)
    assert store.head("ark-1/missing") is None
    store.put("ark-1/inventory.json", io.BytesIO(b"{}"))
    store.put("ark-2/inventory.json", io.BytesIO(b"{}"))
    assert [o.key for o in store.list("ark-1/")] == [
        "ark-1/inventory.json",
        "ark-1/v1/content/scan.ply",
    ]
    store.delete("ark-1/inventory.json")
    with pytest.raises(KeyNotFound):
        store.delete("ark-1/inventory.json")
    with pytest.raises(KeyNotFound):
        store.open("nothing")
    health = store.health()
    assert health.reachable and health.writable and health.free_bytes > 0


class Exploding(io.RawIOBase):
    def __init__(self):
        self.sent = 0

    def readinto(self, buffer):
        if self.sent > 2 * 1024 * 1024:
            raise OSError("connection reset")
        buffer[: len(buffer)] = b"y" * len(buffer)
        self.sent += len(buffer)
        return len(buffer)


def test_interrupted_write_leaves_no_key_and_no_debris(tmp_path):
    store = LocalStore("site-a", tmp_path)
    store.put("obj/file", io.BytesIO(b"old"))
    with pytest.raises(OSError):
        store.put("obj/file", io.BufferedReader(Exploding()))
    assert store.open("obj/file").read() == b"old"
    assert [path.name for path in (tmp_path / "obj").iterdir()] == ["file"]
    assert list((tmp_path / ".incoming").iterdir()) == []  # the partial write was removed
    assert [item.key for item in store.list()] == ["obj/file"]


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../outside", "a/../../b", "a//b", "a/./b"])
def test_keys_cannot_escape_the_store(tmp_path, key):
    with pytest.raises(StoreError):
        LocalStore("s", tmp_path).put(key, io.BytesIO(b"x"))


def test_health_of_a_missing_root(tmp_path):
    health = LocalStore("s", tmp_path / "gone").health()
    assert not health.reachable
    assert "does not exist" in health.detail
