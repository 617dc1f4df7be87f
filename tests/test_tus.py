"""The tus 1.0.0 upload server (arkhiv/web/tus.py): every protocol rule through FastAPI's test
client, then an independent client (tuspy) and a really cut connection against uvicorn."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi import FastAPI, Request
from starlette.testclient import TestClient

from arkhiv.access.viewers import Unauthorized, Viewer
from arkhiv.errors import ArkhivError
from arkhiv.web import tus
from arkhiv.web.tus import (
    UploadBusy,
    UploadIncomplete,
    UploadNotFound,
    discard,
    finished_upload,
    sweep_expired,
    tus_router,
    uploads_folder,
)

pytestmark = pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = {"Content-Type": "application/offset+octet-stream"}
OLENA = {**TUS, "X-Test-User": "olena"}  # a museum: may submit
PETRO = {**TUS, "X-Test-User": "petro"}  # another museum


def tus_app(archive) -> FastAPI:
    """The router on its own, with a `who` that believes the test's headers."""

    def who(request: Request) -> Viewer:
        name = request.headers.get("x-test-user")
        if not name:
            raise Unauthorized("sign in to upload")
        role = request.headers.get("x-test-role", "museum")
        return Viewer(name, role, archive.settings.access)

    app = FastAPI()
    app.include_router(tus_router(archive, who))
    return app


@pytest.fixture
def client(archive) -> Iterator[TestClient]:
    with TestClient(tus_app(archive)) as test_client:
        yield test_client


def encoded(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def create(client: TestClient, length: int, headers=OLENA, **extra: str) -> str:
    response = client.post("/uploads", headers={**headers, "Upload-Length": str(length), **extra})
    assert response.status_code == 201, response.text
    return response.headers["location"]


def patch(client, location, offset: int, data: bytes, headers=OLENA, **extra: str):
    return client.patch(
        location,
        content=data,
        headers={**headers, **OFFSET_STREAM, "Upload-Offset": str(offset), **extra},
    )


def offset_of(client, location, headers=OLENA) -> int:
    response = client.head(location, headers=headers)
    assert response.status_code == 200, response.status_code
    return int(response.headers["upload-offset"])


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def test_options_describe_the_server_to_anyone(archive, client):
    for path in ("/uploads", "/uploads/00000000-0000-4000-8000-000000000000"):
        response = client.options(path)  # no Tus-Resumable, no user: it is discovery
        assert response.status_code == 204
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-resumable"] == "1.0.0"
        extensions = set(response.headers["tus-extension"].split(","))
        assert extensions == {"creation", "creation-with-upload", "termination", "expiration"}
        assert int(response.headers["tus-max-size"]) == archive.settings.ingest.max_package_bytes


def test_requests_of_another_protocol_version_are_not_processed(archive, client):
    location = create(client, 10)
    without = {"X-Test-User": "olena"}
    answers = [
        client.post("/uploads", headers={**without, "Upload-Length": "5"}),
        client.post("/uploads", headers={**without, "Upload-Length": "5", "Tus-Resumable": "0.2"}),
        client.head(location, headers=without),
        client.patch(location, content=b"abc", headers={**without, "Upload-Offset": "0"}),
        client.delete(location, headers=without),
        client.post("/uploads", headers={"Upload-Length": "5"}),  # before asking who it is
    ]
    for response in answers:
        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-resumable"] == "1.0.0"
    assert offset_of(client, location) == 0  # neither written nor deleted
    assert len(list(uploads_folder(archive).glob("*.json"))) == 1


def test_an_upload_created_resumed_and_finished(archive, client):
    photo = os.urandom(100_000)
    metadata = {"filename": "Hauptportal Westseite, Südflügel.jpg", "filetype": "image/jpeg"}
    before = datetime.now(UTC)
    created = client.post(
        "/uploads",
        headers={**OLENA, "Upload-Length": str(len(photo)), "Upload-Metadata": encoded(metadata)},
    )
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    assert location.startswith("/uploads/") and len(upload_id(location)) == 36
    assert created.headers["upload-offset"] == "0"
    assert created.headers["tus-resumable"] == "1.0.0"
    expires = parsedate_to_datetime(created.headers["upload-expires"])
    assert created.headers["upload-expires"].endswith(" GMT")
    assert timedelta(hours=23) < expires - before <= timedelta(hours=24, seconds=5)

    head = client.head(location, headers=OLENA)
    assert head.status_code == 200
    assert head.headers["upload-offset"] == "0"
    assert head.headers["upload-length"] == str(len(photo))
    assert head.headers["cache-control"] == "no-store"
    assert tus.parse_metadata(head.headers["upload-metadata"]) == metadata
    assert head.headers["tus-resumable"] == "1.0.0"

    first = patch(client, location, 0, photo[:30_000])
    assert first.status_code == 204, first.text
    assert first.headers["upload-offset"] == "30000"
    assert parsedate_to_datetime(first.headers["upload-expires"]) >= expires
    assert offset_of(client, location) == 30_000
    with pytest.raises(UploadIncomplete, match="30000 of its 100000 bytes"):
        finished_upload(archive, upload_id(location), "olena")
    second = patch(client, location, 30_000, photo[30_000:])
    assert second.status_code == 204
    assert second.headers["upload-offset"] == str(len(photo))
    assert patch(client, location, len(photo), b"").status_code == 204  # nothing left to send

    finished = finished_upload(archive, upload_id(location), "olena")
    assert finished.path.read_bytes() == photo
    assert finished.size == len(photo)
    assert finished.filename == "Hauptportal Westseite, Südflügel.jpg"
    assert finished.metadata == metadata
    assert discard(archive, upload_id(location)) is True
    assert client.head(location, headers=OLENA).status_code == 404
    assert discard(archive, upload_id(location)) is False
    assert list(uploads_folder(archive).iterdir()) == []


def test_locations_follow_where_the_router_is_mounted(archive):
    app = FastAPI()
    app.include_router(
        tus_router(archive, lambda: Viewer("olena", "museum", archive.settings.access)),
        prefix="/api/v1",
    )
    outer = FastAPI()
    outer.mount("/arkhiv", app)
    with TestClient(outer) as client:
        created = client.post("/arkhiv/api/v1/uploads", headers={**TUS, "Upload-Length": "1"})
        assert created.status_code == 201
        location = created.headers["location"]
        assert location.startswith("/arkhiv/api/v1/uploads/")
        assert offset_of(client, location) == 0


def test_storage_is_private_and_described(archive, client):
    location = create(client, 3, **{"Upload-Metadata": encoded({"filename": "a.jpg"})})
    folder = uploads_folder(archive)
    assert folder == archive.settings.home / "uploads" / "tus"
    assert folder.stat().st_mode & 0o777 == 0o700
    data, info = folder / f"{upload_id(location)}.bin", folder / f"{upload_id(location)}.json"
    assert data.stat().st_size == 0 and data.stat().st_mode & 0o077 == 0
    record = json.loads(info.read_text())
    assert record["owner"] == "olena" and record["length"] == 3
    assert record["metadata"] == {"filename": "a.jpg"}
    created, expires = (datetime.fromisoformat(record[k]) for k in ("created", "expires"))
    assert expires - created == timedelta(hours=24)


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({}, 400, "Upload-Length is required"),
        ({"Upload-Defer-Length": "1"}, 400, "Upload-Defer-Length is not supported"),
        ({"Upload-Length": "-1"}, 400, "non-negative integer"),
        ({"Upload-Length": "12abc"}, 400, "non-negative integer"),
        ({"Upload-Length": str(2**70)}, 400, "non-negative integer"),
        ({"Upload-Length": "10", "Upload-Metadata": "filename !!!"}, 400, "base64"),
        ({"Upload-Length": "10", "Upload-Metadata": "a YQ==,a Yg=="}, 400, "twice"),
        ({"Upload-Length": "10", "Upload-Metadata": "a YQ== Yg=="}, 400, "key, a space"),
        ({"Upload-Length": "10", "Upload-Metadata": "a YQ==,,b Yg=="}, 400, "key, a space"),
        ({"Upload-Length": "10", "Upload-Metadata": "a /w=="}, 400, "UTF-8"),  # byte 0xff
        ({"Upload-Length": "10", "Upload-Metadata": "x" * 9000}, 400, "longer than"),
    ],
)
def test_creation_refuses_what_it_cannot_honour(archive, client, headers, status, words):
    response = client.post("/uploads", headers={**OLENA, **headers})
    assert response.status_code == status
    assert words in response.json()["detail"]
    assert response.headers["tus-resumable"] == "1.0.0"
    assert not list(uploads_folder(archive).glob("*.json"))


def test_creation_accepts_empty_and_valueless_metadata(client):
    bare = create(client, 5, **{"Upload-Metadata": ""})  # tuspy sends it empty
    assert "upload-metadata" not in client.head(bare, headers=OLENA).headers
    flagged = create(client, 5, **{"Upload-Metadata": "is_confidential,filename YS5qcGc="})
    echoed = client.head(flagged, headers=OLENA).headers["upload-metadata"]
    assert tus.parse_metadata(echoed) == {"is_confidential": "", "filename": "a.jpg"}


def test_an_empty_file_is_finished_when_created(archive, client):
    location = create(client, 0, **{"Upload-Metadata": encoded({"filename": "empty.txt"})})
    finished = finished_upload(archive, upload_id(location), "olena")
    assert finished.size == 0 and finished.filename == "empty.txt"


def test_too_large_an_upload_is_refused(archive, client):
    archive.settings.ingest.max_package_bytes = 1000
    response = client.post("/uploads", headers={**OLENA, "Upload-Length": "1001"})
    assert response.status_code == 413
    assert response.headers["tus-max-size"] == "1000"
    assert "ingest.max_package_bytes" in response.json()["detail"]
    assert create(client, 1000)


def test_who_may_upload_and_see_uploads(archive, client):
    nobody = client.post("/uploads", headers={**TUS, "Upload-Length": "1"})
    assert nobody.status_code == 401  # said by the `who` dependency
    assert nobody.headers["tus-resumable"] == "1.0.0"
    public = {**TUS, "X-Test-User": "maria", "X-Test-Role": "public"}
    refused = client.post("/uploads", headers={**public, "Upload-Length": "1"})
    assert refused.status_code == 403
    assert "may not upload" in refused.json()["detail"]
    assert refused.headers["tus-resumable"] == "1.0.0"
    anonymous = client.post("/uploads", headers={**TUS, "X-Test-User": "anonymous"})
    assert anonymous.status_code == 401

    location = create(client, 10)
    assert client.head(location, headers=PETRO).status_code == 404  # not even that it exists
    assert patch(client, location, 0, b"abc", headers=PETRO).status_code == 404
    assert client.delete(location, headers=PETRO).status_code == 404
    withdrawn = {**OLENA, "X-Test-Role": "public"}  # her museum role was taken away meanwhile
    assert client.head(location, headers=withdrawn).status_code == 403
    assert offset_of(client, location) == 0
    with pytest.raises(UploadNotFound):
        finished_upload(archive, upload_id(location), "petro")


def test_patch_rules(archive, client):
    location = create(client, 10)
    untyped = {**OLENA, "Upload-Offset": "0"}
    assert client.patch(location, content=b"abc", headers=untyped).status_code == 415
    octet = {**OLENA, "Content-Type": "application/octet-stream", "Upload-Offset": "0"}
    assert client.patch(location, content=b"abc", headers=octet).status_code == 415
    no_offset = client.patch(location, content=b"abc", headers={**OLENA, **OFFSET_STREAM})
    assert no_offset.status_code == 400
    assert patch(client, location, "x", b"abc").status_code == 400  # type: ignore[arg-type]
    assert patch(client, location, 0, b"abcd").headers["upload-offset"] == "4"
    for wrong in (0, 3, 5):
        conflict = patch(client, location, wrong, b"e")
        assert conflict.status_code == 409
        assert "must be 4" in conflict.json()["detail"]
    too_much = patch(client, location, 4, b"efghijk")  # 11 bytes in all, 10 declared
    assert too_much.status_code == 400
    assert "Upload-Length" in too_much.json()["detail"]
    assert offset_of(client, location) == 4

    # Sent without a Content-Length (chunked), the excess shows only while it arrives.
    def chunks() -> Iterator[bytes]:
        yield b"efg"
        yield b"hijk"

    chunked = patch(client, location, 4, chunks())  # type: ignore[arg-type]
    assert chunked.status_code == 400
    assert offset_of(client, location) == 4  # nothing of it kept
    assert (uploads_folder(archive) / f"{upload_id(location)}.bin").read_bytes() == b"abcd"
    assert patch(client, location, 4, b"efghij").headers["upload-offset"] == "10"

    missing = "/uploads/00000000-0000-4000-8000-000000000000"
    assert patch(client, missing, 0, b"a").status_code == 404
    assert client.head(missing, headers=OLENA).status_code == 404
    assert client.head("/uploads/..%2F..%2Farkhiv.toml", headers=OLENA).status_code == 404
    assert client.head("/uploads/not-an-id", headers=OLENA).status_code == 404
    assert client.head(location + "%0A", headers=OLENA).status_code == 404


def test_creation_with_upload(archive, client):
    data = b"first bytes of a photo"
    response = client.post(
        "/uploads",
        content=data[:10],
        headers={**OLENA, **OFFSET_STREAM, "Upload-Length": str(len(data))},
    )
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == "10"
    location = response.headers["location"]
    assert offset_of(client, location) == 10
    assert patch(client, location, 10, data[10:]).status_code == 204
    assert finished_upload(archive, upload_id(location), "olena").path.read_bytes() == data

    too_much = client.post(
        "/uploads", content=b"x" * 20, headers={**OLENA, **OFFSET_STREAM, "Upload-Length": "5"}
    )
    assert too_much.status_code == 400
    untyped = client.post(
        "/uploads", content=b"x" * 5, headers={**OLENA, "Upload-Length": "5"}
    )  # data, but not said to be upload data
    assert untyped.status_code == 415
    assert len(list(uploads_folder(archive).glob("*.json"))) == 1


def test_termination(archive, client):
    location = create(client, 10)
    assert patch(client, location, 0, b"abc").status_code == 204
    deleted = client.delete(location, headers=OLENA)
    assert deleted.status_code == 204
    assert deleted.headers["tus-resumable"] == "1.0.0"
    assert client.head(location, headers=OLENA).status_code == 404
    assert patch(client, location, 3, b"d").status_code == 404
    assert client.delete(location, headers=OLENA).status_code == 404
    assert list(uploads_folder(archive).iterdir()) == []


def test_method_override_for_clients_that_can_only_post(archive, client):
    location = create(client, 6)

    def post_as(method: str, data: bytes = b"", **headers: str):
        override = {**OLENA, "X-HTTP-Method-Override": method, **headers}
        return client.post(location, content=data, headers=override)

    patched = post_as("PATCH", b"abc", **OFFSET_STREAM, **{"Upload-Offset": "0"})
    assert patched.status_code == 204 and patched.headers["upload-offset"] == "3"
    head = post_as("HEAD")
    assert head.status_code == 200 and head.headers["upload-offset"] == "3"
    assert post_as("GET").status_code == 405
    assert client.post(location, headers=OLENA).status_code == 405  # a plain POST
    assert post_as("DELETE").status_code == 204
    assert client.head(location, headers=OLENA).status_code == 404


def test_uploads_expire_a_day_after_their_last_patch(archive, client, monkeypatch):
    start = datetime.now(UTC)
    stale, active = create(client, 10), create(client, 10)
    monkeypatch.setattr(tus, "_now", lambda: start + timedelta(hours=20))
    renewed = patch(client, active, 0, b"abc")
    assert parsedate_to_datetime(renewed.headers["upload-expires"]) > start + timedelta(hours=43)

    monkeypatch.setattr(tus, "_now", lambda: start + timedelta(hours=25))
    gone = client.head(stale, headers=OLENA)
    assert gone.status_code == 410
    assert patch(client, stale, 0, b"abc").status_code == 410
    assert offset_of(client, active) == 3  # still alive: it was written to 5 hours ago
    assert sweep_expired(archive) == 1
    assert client.head(stale, headers=OLENA).status_code == 404
    assert offset_of(client, active) == 3
    assert sweep_expired(archive, now=start + timedelta(hours=45)) == 1
    assert list(uploads_folder(archive).iterdir()) == []


def test_an_expired_upload_can_still_be_deleted(client, monkeypatch):
    location = create(client, 10)
    later = datetime.now(UTC) + timedelta(days=2)
    monkeypatch.setattr(tus, "_now", lambda: later)
    assert client.delete(location, headers=OLENA).status_code == 204


def test_sweep_removes_what_a_crash_left(archive, client):
    assert sweep_expired(archive) == 0  # no uploads yet, not even their folder
    folder = uploads_folder(archive)
    keep = create(client, 10)
    orphan, half_written = folder / "0123.bin", folder / f"{upload_id(keep)}.json.x.tmp"
    unreadable = folder / "11111111-1111-4111-8111-111111111111.json"
    for leftover in (orphan, half_written, unreadable):
        leftover.write_bytes(b"{")
    assert sweep_expired(archive) == 0  # too recent: a request may be creating them right now
    long_ago = time.time() - 25 * 3600
    for leftover in (orphan, half_written, unreadable):
        os.utime(leftover, (long_ago, long_ago))
    assert sweep_expired(archive) == 2  # the orphan and the unreadable record
    assert {path.name for path in folder.iterdir()} == {
        f"{upload_id(keep)}.bin",
        f"{upload_id(keep)}.json",
    }


def test_a_locked_upload_is_neither_written_nor_removed(archive, client, monkeypatch):
    location = create(client, 10)
    data = uploads_folder(archive) / f"{upload_id(location)}.bin"
    with data.open("rb") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another PATCH, as it were
        locked = patch(client, location, 0, b"abc")
        assert locked.status_code == 423
        assert locked.headers["tus-resumable"] == "1.0.0"
        assert client.delete(location, headers=OLENA).status_code == 423
        with pytest.raises(UploadBusy):
            discard(archive, upload_id(location))
        monkeypatch.setattr(tus, "_now", lambda: datetime.now(UTC) + timedelta(days=2))
        assert sweep_expired(archive) == 0
        monkeypatch.undo()
        assert offset_of(client, location) == 0
    assert patch(client, location, 0, b"abc").status_code == 204


def test_quotas_per_user(archive, client, monkeypatch):
    monkeypatch.setattr(tus, "MAX_UNFINISHED_UPLOADS", 3)
    archive.settings.ingest.max_package_bytes = 1000  # 4000 held at most
    first, _second, _third = create(client, 10), create(client, 10), create(client, 10)
    refused = client.post("/uploads", headers={**OLENA, "Upload-Length": "10"})
    assert refused.status_code == 429
    assert "3 unfinished uploads" in refused.json()["detail"]
    assert create(client, 10, headers=PETRO)  # someone else's quota
    assert patch(client, first, 0, b"x" * 10).status_code == 204  # finished: no longer counts
    assert create(client, 970)  # 10 + 10 + 10 + 970: 1000 bytes held

    monkeypatch.setattr(tus, "MAX_UNFINISHED_UPLOADS", 500)
    assert create(client, 1000) and create(client, 1000) and create(client, 1000)  # 4000
    too_much = client.post("/uploads", headers={**OLENA, "Upload-Length": "1"})
    assert too_much.status_code == 413
    assert "would hold 4001 bytes" in too_much.json()["detail"]
    assert client.delete(first, headers=OLENA).status_code == 204  # finished ones count too
    assert create(client, 10)


def test_finished_upload_refuses_clearly(archive, client):
    for unknown in ("00000000-0000-4000-8000-000000000000", "../../arkhiv.toml", ""):
        with pytest.raises(UploadNotFound, match="no upload"):
            finished_upload(archive, unknown, "olena")
    location = create(client, 4)
    with pytest.raises(UploadNotFound):
        finished_upload(archive, upload_id(location), "petro")
    with pytest.raises(UploadIncomplete) as raised:
        finished_upload(archive, upload_id(location), "olena")
    assert isinstance(raised.value, ArkhivError)
    assert str(archive.settings.home) not in str(raised.value)
    assert discard(archive, "../../arkhiv.toml") is False
    assert (archive.settings.home / "arkhiv.toml").exists()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("IMG_0001.JPG", "IMG_0001.JPG"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\olena\\Pictures\\portal.jpg", "portal.jpg"),
        ("/absolute/path/side.heic", "side.heic"),
        ("bad\x00na\nme\x1b.jpg", "badname.jpg"),
        ("..", "upload"),
        ("a/..", "upload"),
        (".\x00.", "upload"),
        ("", "upload"),
        ("é" * 200 + ".jpg", "é" * 127),  # 255 bytes at most, never half a character
    ],
)
def test_file_names_are_bare_names(archive, client, given, kept):
    location = create(client, 0, **{"Upload-Metadata": encoded({"filename": given})})
    assert finished_upload(archive, upload_id(location), "olena").filename == kept


def test_no_upload_filename_means_a_neutral_name(archive, client):
    location = create(client, 0)
    assert finished_upload(archive, upload_id(location), "olena").filename == "upload"


def test_error_bodies_do_not_show_server_paths(archive, client):
    home = str(archive.settings.home)
    location = create(client, 3)
    responses = [
        client.post("/uploads", headers={**OLENA, "Upload-Length": "x"}),
        client.post("/uploads", headers={**OLENA, "Upload-Length": str(10**15)}),
        patch(client, location, 1, b"a"),
        patch(client, location, 0, b"abcd"),
        patch(client, "/uploads/00000000-0000-4000-8000-000000000000", 0, b"a"),
        client.patch(location, content=b"a", headers=OLENA),
        client.post("/uploads"),
    ]
    for response in responses:
        assert response.status_code >= 400
        assert home not in response.text and "/tus" not in response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"]


# --- against a real server ---------------------------------------------------------------------


@pytest.fixture
def server(archive) -> Iterator[str]:
    """The router in uvicorn on a free loopback port, in a thread of this process."""
    import uvicorn

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(tus_app(archive), log_level="warning", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(
        target=uvicorn_server.run, kwargs={"sockets": [listening]}, daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=30)
        listening.close()


def wait_for_offset(base: str, location: str, expected: int) -> int:
    """The offset once it reaches `expected`, or whatever it is after 10 seconds."""
    deadline = time.monotonic() + 10
    while True:
        offset = int(httpx.head(base + location, headers=OLENA).headers["upload-offset"])
        if offset >= expected or time.monotonic() > deadline:
            return offset
        time.sleep(0.02)


def settled_offset(base: str, location: str) -> int:
    """The offset once the server has noticed a cut connection and wound its request up: an
    empty PATCH at the offset HEAD reports succeeds only when no request holds the upload any
    more (else 423) and nothing arrived since the HEAD (else 409), as tus clients find out."""
    deadline = time.monotonic() + 10
    while True:
        offset = int(httpx.head(base + location, headers=OLENA).headers["upload-offset"])
        headers = {**OLENA, **OFFSET_STREAM, "Upload-Offset": str(offset)}
        probe = httpx.patch(base + location, content=b"", headers=headers)
        if probe.status_code == 204:
            return offset
        assert probe.status_code in (409, 423), probe.text
        assert time.monotonic() < deadline, "the cut request never ended"
        time.sleep(0.05)


def patch_rest(base: str, location: str, offset: int, data: bytes) -> httpx.Response:
    headers = {**OLENA, **OFFSET_STREAM, "Upload-Offset": str(offset)}
    return httpx.patch(base + location, content=data[offset:], headers=headers, timeout=30)


def raw_patch_headers(base: str, location: str, offset: int, length: int) -> bytes:
    host = base.removeprefix("http://")
    return (
        f"PATCH {location} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
        f"X-Test-User: olena\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def test_tuspy_uploads_a_photo_in_small_chunks_and_resumes(archive, server, corpora):
    from tusclient.client import TusClient

    photo = corpora / "photogrammetry" / "opensfm-berlin" / "images" / "01.jpg"
    tus_client = TusClient(server + "/uploads", headers={"X-Test-User": "olena"})
    uploader = tus_client.uploader(
        file_path=str(photo), chunk_size=64 * 1024, metadata={"filename": photo.name}
    )
    uploader.upload(stop_at=500 * 1024)  # the phone loses its connection here
    assert 500 * 1024 <= uploader.offset < photo.stat().st_size

    resumed = tus_client.uploader(file_path=str(photo), url=uploader.url, chunk_size=64 * 1024)
    assert resumed.offset == uploader.offset  # asked the server with HEAD
    resumed.upload()

    finished = finished_upload(archive, uploader.url.rsplit("/", 1)[1], "olena")
    assert finished.filename == "01.jpg"
    assert finished.size == photo.stat().st_size
    assert sha256(finished.path) == sha256(photo)


def test_a_cut_connection_keeps_every_byte_that_arrived(archive, server):
    data = os.urandom(1024 * 1024 + 12345)
    created = httpx.post(server + "/uploads", headers={**OLENA, "Upload-Length": str(len(data))})
    location = created.headers["location"]

    with connect(server) as cut:
        cut.sendall(raw_patch_headers(server, location, 0, 1024 * 1024))
        cut.sendall(data[: 300 * 1024])
        # uvicorn drops what it has read but not yet handed on when the connection goes (its
        # 64 KiB buffer): wait until the application has every byte, then cut.
        assert wait_for_offset(server, location, 300 * 1024) == 300 * 1024
    # ... and the train enters a tunnel.

    assert settled_offset(server, location) == 300 * 1024
    assert int(httpx.head(server + location, headers=OLENA).headers["upload-offset"]) == 300 * 1024
    rest = patch_rest(server, location, 300 * 1024, data)
    assert rest.status_code == 204, rest.text
    assert int(rest.headers["upload-offset"]) == len(data)
    finished = finished_upload(archive, upload_id(location), "olena")
    assert sha256(finished.path) == hashlib.sha256(data).hexdigest()


def test_a_connection_cut_at_once_resumes_from_what_was_kept(archive, server):
    data = os.urandom(1024 * 1024)
    created = httpx.post(server + "/uploads", headers={**OLENA, "Upload-Length": str(len(data))})
    location = created.headers["location"]

    with connect(server) as cut:
        cut.sendall(raw_patch_headers(server, location, 0, len(data)))
        cut.sendall(data[: 300 * 1024])  # closed the moment the bytes are out

    assert wait_for_offset(server, location, 1) > 0
    kept = settled_offset(server, location)
    assert 0 < kept <= 300 * 1024
    on_disk = uploads_folder(archive) / f"{upload_id(location)}.bin"
    assert on_disk.read_bytes() == data[:kept]  # what the offset says, and nothing else
    rest = patch_rest(server, location, kept, data)
    assert rest.status_code == 204, rest.text
    assert sha256(finished_upload(archive, upload_id(location), "olena").path) == (
        hashlib.sha256(data).hexdigest()
    )


def test_two_patches_at_once_do_not_interleave(archive, server):
    data = os.urandom(1024 * 1024)
    location = httpx.post(
        server + "/uploads", headers={**OLENA, "Upload-Length": str(len(data))}
    ).headers["location"]

    with connect(server) as slow:
        slow.sendall(raw_patch_headers(server, location, 0, len(data)))
        slow.sendall(data[: 100 * 1024])
        assert wait_for_offset(server, location, 100 * 1024) == 100 * 1024
        second = httpx.patch(
            server + location,
            content=b"z" * 10,
            headers={**OLENA, **OFFSET_STREAM, "Upload-Offset": str(100 * 1024)},
        )
        assert second.status_code == 423
        assert second.headers["tus-resumable"] == "1.0.0"
        assert httpx.delete(server + location, headers=OLENA).status_code == 423
        slow.sendall(data[100 * 1024 :])
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += slow.recv(4096)
    assert answer.startswith(b"HTTP/1.1 204")
    assert f"upload-offset: {len(data)}".encode() in answer.lower()
    finished = finished_upload(archive, upload_id(location), "olena")
    assert finished.path.read_bytes() == data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
