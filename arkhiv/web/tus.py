"""Resumable uploads: a tus 1.0.0 server (https://tus.io/protocols/resumable-upload).

A citizen photographing a monument on a bad phone connection loses it again and again; with tus
the browser (tus-js-client) asks how much arrived and sends only the rest. Extensions: creation,
creation-with-upload, termination and expiration.

Each upload is two files in `ARKHIV_HOME/uploads/tus`: `<id>.bin`, the bytes received, and
`<id>.json`, who uploads what (owner, declared length, metadata, created, expires). The offset
is always the size of `<id>.bin`: after a dropped connection or a crash that is what is really
there. Bytes are appended only while holding an exclusive `flock` on `<id>.bin`, so two PATCH
requests never interleave (the second is answered 423 Locked) and nothing is removed under a
writer. An upload expires 24 hours after its last PATCH; `sweep_expired` removes expired ones.

The page that turns finished uploads into a submission uses `finished_upload` and `discard`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from arkhiv.access.viewers import ANONYMOUS, Forbidden, Unauthorized, Viewer
from arkhiv.archive import Archive
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import Permission

log = logging.getLogger("arkhiv.web.tus")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
UPLOAD_LIFETIME = timedelta(hours=24)
RENEW_EVERY = timedelta(minutes=10)  # how stale an upload's expiry may get while bytes arrive
MAX_UNFINISHED_UPLOADS = 500  # per user: a photo set is hundreds of files, a flood is more
HELD_BYTES_FACTOR = 4  # per user: held bytes at most this many ingest.max_package_bytes
MAX_METADATA_CHARS = 8 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DECIMAL = re.compile(r"[0-9]{1,18}")  # below 2**63, what file offsets can be
# Creating an upload checks the owner's quotas first; one at a time, so that a burst of POSTs
# cannot all pass the same check (per process: several processes may exceed it a little).
_creation_lock = threading.Lock()
_ITEM_METHODS = {"Allow": "HEAD, PATCH, DELETE, OPTIONS"}


class UploadError(ArkhivError):
    """A resumable upload cannot be used as asked."""


class UploadNotFound(UploadError):
    """No such upload for this user (unknown, another user's, expired or removed)."""


class UploadIncomplete(UploadError):
    """The upload has not received all its bytes yet."""


class UploadBusy(UploadError):
    """A request is writing into the upload right now."""


@dataclass(frozen=True)
class FinishedUpload:
    path: Path  # the received bytes; valid until `discard` or expiry
    filename: str  # the client's file name as a bare name, safe to use in a folder
    size: int
    metadata: dict[str, str]


@dataclass(frozen=True)
class _Upload:
    id: str
    folder: Path
    owner: str
    length: int
    metadata: dict[str, str]
    created: datetime
    expires: datetime

    @property
    def data(self) -> Path:
        return self.folder / f"{self.id}.bin"

    @property
    def info(self) -> Path:
        return self.folder / f"{self.id}.json"

    def offset(self) -> int:
        return self.data.stat().st_size

    def expired(self, now: datetime) -> bool:
        return self.expires <= now

    def as_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "length": self.length,
            "metadata": self.metadata,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat(),
        }


def _now() -> datetime:
    return datetime.now(UTC)


def uploads_folder(archive: Archive) -> Path:
    return archive.settings.home / "uploads" / "tus"


def _folder(archive: Archive) -> Path:
    folder = uploads_folder(archive)
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # as the web app makes it
        folder.mkdir(exist_ok=True, mode=0o700)
    return folder


def _load(folder: Path, upload_id: str) -> _Upload | None:
    """The upload, or None when there is none (a malformed id never reaches the disk)."""
    if not _UPLOAD_ID.fullmatch(upload_id):
        return None
    try:
        recorded = json.loads((folder / f"{upload_id}.json").read_text(encoding="utf-8"))
        return _Upload(
            id=upload_id,
            folder=folder,
            owner=str(recorded["owner"]),
            length=int(recorded["length"]),
            metadata={str(k): str(v) for k, v in recorded["metadata"].items()},
            created=datetime.fromisoformat(recorded["created"]),
            expires=datetime.fromisoformat(recorded["expires"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        log.warning("upload %s: its record cannot be read; treated as absent", upload_id)
        return None


def _save_info(upload: _Upload) -> None:
    """Replace the record atomically: a reader sees the old one or the new one, never half."""
    temporary = upload.folder / f"{upload.id}.json.{uuid.uuid4().hex}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(upload.as_json(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, upload.info)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _lock_for_writing(upload: _Upload) -> int:
    """An append-only descriptor of the data file, exclusively locked. UploadBusy when another
    request holds it; UploadNotFound when the upload was removed meanwhile."""
    try:
        fd = os.open(upload.data, os.O_WRONLY | os.O_APPEND)  # never re-creates a removed one
    except FileNotFoundError:
        raise UploadNotFound(f"no upload {upload.id}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UploadBusy(f"upload {upload.id} is being written by another request") from None
    # Removed between our open and our lock: the descriptor is of a file no longer there.
    try:
        current = os.stat(upload.data)
    except FileNotFoundError:
        current = None
    if current is None or current.st_ino != os.fstat(fd).st_ino or not upload.info.exists():
        os.close(fd)
        raise UploadNotFound(f"no upload {upload.id}")
    return fd


def _remove(upload: _Upload) -> None:
    """Remove both files, never under a writer (UploadBusy)."""
    if not upload.data.exists():
        # Its data is gone (a crash, a hand): the record alone must not outlive it.
        upload.info.unlink(missing_ok=True)
        raise UploadNotFound(f"no upload {upload.id}")
    fd = _lock_for_writing(upload)
    try:
        upload.info.unlink(missing_ok=True)  # first: from here on the upload is unknown
        upload.data.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _finish_writing(upload: _Upload, fd: int, wrote: bool) -> _Upload:
    """Make the received bytes durable before their offset is reported, and push the expiry
    back: the upload is alive while bytes keep arriving."""
    os.fsync(fd)
    now = _now()
    # The record is rewritten (and synced) at most every RENEW_EVERY, not for every chunk.
    if not wrote or upload.expires - now > UPLOAD_LIFETIME - RENEW_EVERY:
        return upload
    renewed = replace(upload, expires=now + UPLOAD_LIFETIME)
    _save_info(renewed)
    return renewed


def _bare_name(filename: str) -> str:
    """A client's file name reduced to a name that is safe inside a folder: no folders, no
    control characters, at most 255 bytes (a file name's limit), never . or .."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    name = name.encode("utf-8")[:255].decode("utf-8", errors="ignore")
    return name if name not in ("", ".", "..") else "upload"


def finished_upload(archive: Archive, upload_id: str, owner: str) -> FinishedUpload:
    """A complete upload of `owner`. UploadNotFound if it is unknown, someone else's or
    expired; UploadIncomplete while bytes are missing."""
    folder = uploads_folder(archive)
    upload = _load(folder, upload_id)
    if upload is None or upload.owner != owner:
        raise UploadNotFound(f"no upload {upload_id[:64]!r}")
    if upload.expired(_now()):
        raise UploadNotFound(f"upload {upload_id} has expired")
    try:
        size = upload.offset()
    except FileNotFoundError:
        raise UploadNotFound(f"no upload {upload_id}") from None
    if size != upload.length:
        raise UploadIncomplete(f"upload {upload_id} has {size} of its {upload.length} bytes")
    filename = _bare_name(upload.metadata.get("filename", ""))
    return FinishedUpload(upload.data, filename, size, dict(upload.metadata))


def discard(archive: Archive, upload_id: str) -> bool:
    """Remove an upload (once its bytes are taken); False if there was none. UploadBusy while
    a request is writing into it."""
    upload = _load(uploads_folder(archive), upload_id)
    if upload is None:
        return False
    try:
        _remove(upload)
    except UploadNotFound:
        return False
    return True


def sweep_expired(archive: Archive, now: datetime | None = None) -> int:
    """Remove expired uploads, and files a crash left without their partner; returns how many
    uploads were removed. Uploads being written are left for the next sweep."""
    folder = uploads_folder(archive)
    if not folder.is_dir():
        return 0
    now = now or _now()
    removed = 0
    for info in folder.glob("*.json"):
        upload = _load(folder, info.stem)
        if upload is None:
            if _older_than_a_lifetime(info, now):  # unreadable record: nobody can resume it
                info.unlink(missing_ok=True)
                (folder / f"{info.stem}.bin").unlink(missing_ok=True)
                removed += 1
            continue
        if not upload.expired(now):
            continue
        try:
            _remove(upload)
            removed += 1
        except UploadBusy:
            pass
        except UploadNotFound:
            pass  # removed meanwhile
    # What a crash left: a record half replaced, a data file created just before its record.
    for half_written in folder.glob("*.tmp"):
        if _older_than_a_lifetime(half_written, now):
            half_written.unlink(missing_ok=True)
    for data in folder.glob("*.bin"):
        if not data.with_suffix(".json").exists() and _older_than_a_lifetime(data, now):
            data.unlink(missing_ok=True)
            removed += 1
    return removed


def _older_than_a_lifetime(path: Path, now: datetime) -> bool:
    try:
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return False
    return modified + UPLOAD_LIFETIME <= now


# --- the protocol ------------------------------------------------------------------------------


def _http_date(moment: datetime) -> str:
    """RFC 7231 IMF-fixdate, as Upload-Expires requires."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _effective_method(request: Request) -> str:
    """X-HTTP-Method-Override replaces the method of a POST: some browsers and proxies can send
    nothing but GET and POST."""
    override = request.headers.get("x-http-method-override", "").strip().upper()
    return override if request.method == "POST" and override else request.method


class _TusRoute(APIRoute):
    """Every answer carries Tus-Resumable, errors included (also those of the authentication
    dependency), and a request for another protocol version is refused before anything runs:
    the protocol forbids processing it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            version = request.headers.get("tus-resumable")
            if _effective_method(request) != "OPTIONS" and version != TUS_VERSION:
                detail = f"this server speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION}"
                response: Response = _error(412, detail, {"Tus-Version": TUS_VERSION})
            else:
                try:
                    response = await handle(request)
                except HTTPException as exc:
                    response = _error(exc.status_code, exc.detail, exc.headers)
                except Unauthorized as exc:
                    response = _error(401, str(exc), {"WWW-Authenticate": "Bearer"})
                except Forbidden as exc:
                    response = _error(403, str(exc))
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return tus_handler


def _decimal_header(request: Request, name: str) -> int | None:
    """A non-negative integer header; None when absent, 400 when malformed."""
    text = request.headers.get(name)
    if text is None:
        return None
    if not _DECIMAL.fullmatch(text.strip()):
        raise HTTPException(400, f"{name} must be a non-negative integer")
    return int(text)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs (the value may be left out).
    Values must be UTF-8 text: they are shown and stored as such. ValueError when invalid."""
    if len(header) > MAX_METADATA_CHARS:
        raise ValueError(f"Upload-Metadata is longer than {MAX_METADATA_CHARS} characters")
    metadata: dict[str, str] = {}
    if not header.strip():
        return metadata  # some clients send the header empty when there is nothing to say
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key, encoded = parts[0], parts[1] if len(parts) == 2 else ""
        if len(parts) > 2 or not key or not key.isascii() or not key.isprintable():
            raise ValueError("Upload-Metadata: each pair is a key, a space and a base64 value")
        if key in metadata:
            raise ValueError(f"Upload-Metadata: the key {key!r} is given twice")
        try:
            metadata[key] = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError(
                f"Upload-Metadata: the value of {key!r} is not base64-encoded UTF-8"
            ) from None
    return metadata


def format_metadata(metadata: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key
        for key, value in metadata.items()
    )


def _within_daily_allowance(
    folder: Path, owner: str, length: int, allowance: int, now: datetime
) -> int | None:
    """Record `length` bytes against the owner's day and return None, or return the bytes
    already used when `length` would exceed `allowance` in the last 24 hours. A ledger file per
    owner (name hashed) under an exclusive lock: it outlives restarts and is shared by every
    server process on the archive."""
    ledgers = folder / "ledgers"
    ledgers.mkdir(mode=0o700, exist_ok=True)
    path = ledgers / (hashlib.sha256(owner.encode()).hexdigest()[:32] + ".log")
    since = (now - timedelta(days=1)).timestamp()
    with open(path, "a+", encoding="ascii") as ledger:
        fcntl.flock(ledger, fcntl.LOCK_EX)
        ledger.seek(0)
        recent = []
        for line in ledger:
            at, _, size = line.partition(" ")
            with contextlib.suppress(ValueError):
                if float(at) > since:
                    recent.append((float(at), int(size)))
        used = sum(size for _at, size in recent)
        if used + length > allowance:
            return used
        # Rewritten with the day's entries only, so the ledger stays small.
        ledger.seek(0)
        ledger.truncate()
        for at, size in [*recent, (now.timestamp(), length)]:
            ledger.write(f"{at:.3f} {size}\n")
    return None


def tus_router(
    archive: Archive,
    who: Callable[..., Viewer],
    *,
    prefix: str = "/uploads",
    bytes_per_day: int | None = None,
) -> APIRouter:
    """The tus endpoints: POST `prefix` creates an upload at `prefix/<id>`, which takes HEAD,
    PATCH and DELETE; OPTIONS on either describes the server. `who` is the dependency that says
    who asks (it should answer 401 for anonymous callers); uploads need Permission.SUBMIT.

    Mount it with `app.include_router(tus_router(archive, who))`: the paths carry the prefix
    already. Location headers are built from the request's own path, so an extra prefix given
    to include_router, or a mount, still yields the right URL."""
    router = APIRouter(route_class=_TusRoute)
    prefix = prefix.rstrip("/")

    def server_headers() -> dict[str, str]:
        return {
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Max-Size": str(archive.settings.ingest.max_package_bytes),
        }

    def check_uploader(viewer: Viewer) -> None:
        if viewer.name == ANONYMOUS:  # uploads belong to someone: anonymous ones would be shared
            raise Unauthorized("sign in to upload")
        viewer.require(Permission.SUBMIT, "upload files")

    def owned_upload(upload_id: str, viewer: Viewer) -> _Upload:
        """The caller's upload; another user's is as unknown as one that never existed."""
        upload = _load(_folder(archive), upload_id)
        if upload is None or upload.owner != viewer.name or not upload.data.exists():
            raise HTTPException(404, "no such upload")
        if upload.expired(_now()):
            raise HTTPException(410, "the upload has expired: start a new one")
        return upload

    async def receive_body(request: Request, upload: _Upload, fd: int, start: int) -> int:
        """Append the request body chunk by chunk; returns the new offset. A client that goes
        away mid-body keeps every byte that arrived: it resumes from there."""
        received = 0
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                if start + received + len(chunk) > upload.length:
                    # A client sending more than it declared is confused: keep none of it.
                    await run_in_threadpool(os.ftruncate, fd, start)
                    raise HTTPException(
                        400, f"more data than the Upload-Length of {upload.length} bytes"
                    )
                try:
                    await run_in_threadpool(_write_all, fd, chunk)
                except OSError:
                    log.exception("upload %s: cannot write", upload.id)
                    raise HTTPException(507, "the server cannot store the data now") from None
                received += len(chunk)
        except ClientDisconnect:
            log.info("upload %s: client left after %d bytes; it may resume", upload.id, received)
        return start + received

    async def append(
        request: Request, upload: _Upload, expected_offset: int
    ) -> tuple[int, _Upload]:
        """Lock, check the offset, take the body: the new offset and the upload's renewed record
        (PATCH, and POST with data)."""
        try:
            fd = await run_in_threadpool(_lock_for_writing, upload)
        except UploadBusy:
            raise HTTPException(423, "another request is writing into this upload") from None
        except UploadNotFound:
            raise HTTPException(404, "no such upload") from None
        try:
            offset = os.fstat(fd).st_size
            if expected_offset != offset:
                raise HTTPException(409, f"Upload-Offset must be {offset}, the bytes received")
            declared = _decimal_header(request, "content-length")
            if declared is not None and offset + declared > upload.length:
                raise HTTPException(
                    400, f"more data than the Upload-Length of {upload.length} bytes"
                )
            new_offset = await receive_body(request, upload, fd, offset)
            upload = await run_in_threadpool(_finish_writing, upload, fd, new_offset != offset)
        finally:
            os.close(fd)  # releases the lock
        if new_offset == upload.length and new_offset != offset:
            log.info("upload %s by %s is complete (%d bytes)", upload.id, upload.owner, new_offset)
        return new_offset, upload

    def create_within_quota(
        owner: str, length: int, metadata: dict[str, str], now: datetime
    ) -> _Upload:
        folder = _folder(archive)
        held_cap = archive.settings.ingest.max_package_bytes * HELD_BYTES_FACTOR
        with _creation_lock:
            unfinished, held = 0, 0
            for info in folder.glob("*.json"):
                other = _load(folder, info.stem)
                if other is None or other.owner != owner or other.expired(now):
                    continue
                try:
                    size = other.offset()
                except FileNotFoundError:
                    continue
                unfinished += size < other.length
                # Finished uploads wait on disk for their submission: they count as well.
                held += other.length
            if unfinished >= MAX_UNFINISHED_UPLOADS:
                raise HTTPException(
                    429,
                    f"you have {unfinished} unfinished uploads, the most allowed at once: "
                    "finish or delete some first",
                )
            if held + length > held_cap:
                raise HTTPException(
                    413,
                    f"your uploads would hold {held + length} bytes, more than the {held_cap} "
                    "allowed at once: submit or delete some first",
                )
            if bytes_per_day is not None:
                used = _within_daily_allowance(folder, owner, length, bytes_per_day, now)
                if used is not None:
                    raise HTTPException(
                        429,
                        f"{used} of your {bytes_per_day} bytes a day are used: try again "
                        "tomorrow, or ask the archive to raise web.upload_bytes_per_day",
                    )
            upload = _Upload(
                id=str(uuid.uuid4()),
                folder=folder,
                owner=owner,
                length=length,
                metadata=metadata,
                created=now,
                expires=now + UPLOAD_LIFETIME,
            )
            # The data file first: a record always has its data (sweep_expired removes a data
            # file whose record a crash prevented).
            os.close(os.open(upload.data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _save_info(upload)
        log.info("upload %s created by %s (%d bytes)", upload.id, owner, length)
        return upload

    @router.options(prefix, include_in_schema=False)
    @router.options(prefix + "/{upload_id}", include_in_schema=False)
    def describe_server() -> Response:
        return Response(status_code=204, headers=server_headers())

    @router.post(prefix, include_in_schema=False)
    async def create_upload(request: Request, viewer: Viewer = Depends(who)) -> Response:
        if _effective_method(request) != "POST":
            raise HTTPException(405, "an upload is created with POST", {"Allow": "POST, OPTIONS"})
        check_uploader(viewer)
        if "upload-defer-length" in request.headers:
            raise HTTPException(400, "Upload-Defer-Length is not supported: give Upload-Length")
        length = _decimal_header(request, "upload-length")
        if length is None:
            raise HTTPException(400, "Upload-Length is required")
        limit = archive.settings.ingest.max_package_bytes
        if length > limit:
            detail = f"larger than {limit} bytes (ingest.max_package_bytes)"
            raise HTTPException(413, detail, {"Tus-Max-Size": str(limit)})
        try:
            metadata = parse_metadata(request.headers.get("upload-metadata", ""))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        with_data = _media_type(request) == OFFSET_STREAM
        declared = _decimal_header(request, "content-length")
        if not with_data and (declared or "transfer-encoding" in request.headers):
            raise HTTPException(415, f"data sent with the creation must be {OFFSET_STREAM}")
        if declared is not None and declared > length:
            raise HTTPException(400, f"more data than the Upload-Length of {length} bytes")

        upload = await run_in_threadpool(create_within_quota, viewer.name, length, metadata, _now())
        location = request.url.path.rstrip("/") + "/" + upload.id
        offset = 0
        if with_data:
            try:
                offset, upload = await append(request, upload, expected_offset=0)
            except HTTPException:
                await run_in_threadpool(discard, archive, upload.id)  # its URL was never given
                raise
        return Response(
            status_code=201,
            headers={
                "Location": location,
                "Upload-Offset": str(offset),
                "Upload-Expires": _http_date(upload.expires),
            },
        )

    def head(upload_id: str, viewer: Viewer) -> Response:
        upload = owned_upload(upload_id, viewer)
        try:
            offset = upload.offset()
        except FileNotFoundError:  # deleted this very moment
            raise HTTPException(404, "no such upload") from None
        headers = {
            "Upload-Offset": str(offset),
            "Upload-Length": str(upload.length),
            "Upload-Expires": _http_date(upload.expires),
            "Cache-Control": "no-store",  # an offset from a cache would resend or skip data
        }
        if upload.metadata:
            headers["Upload-Metadata"] = format_metadata(upload.metadata)
        return Response(status_code=200, headers=headers)

    async def patch(request: Request, upload_id: str, viewer: Viewer) -> Response:
        if _media_type(request) != OFFSET_STREAM:
            raise HTTPException(415, f"PATCH data must be sent as {OFFSET_STREAM}")
        expected = _decimal_header(request, "upload-offset")
        if expected is None:
            raise HTTPException(400, "Upload-Offset is required")
        upload = await run_in_threadpool(owned_upload, upload_id, viewer)
        offset, upload = await append(request, upload, expected)
        headers = {"Upload-Offset": str(offset), "Upload-Expires": _http_date(upload.expires)}
        return Response(status_code=204, headers=headers)

    def delete(upload_id: str, viewer: Viewer) -> Response:
        upload = _load(_folder(archive), upload_id)  # an expired one may go as well
        if upload is None or upload.owner != viewer.name:
            raise HTTPException(404, "no such upload")
        try:
            _remove(upload)
        except UploadBusy:
            raise HTTPException(423, "a request is writing into this upload") from None
        except UploadNotFound:
            raise HTTPException(404, "no such upload") from None
        log.info("upload %s deleted by %s", upload.id, viewer.name)
        return Response(status_code=204)

    @router.api_route(
        prefix + "/{upload_id}",
        methods=["HEAD", "PATCH", "DELETE", "POST"],  # POST: with X-HTTP-Method-Override
        include_in_schema=False,
    )
    async def upload_resource(
        request: Request, upload_id: str, viewer: Viewer = Depends(who)
    ) -> Response:
        method = _effective_method(request)
        if method not in ("HEAD", "PATCH", "DELETE"):
            detail = f"{method} is not a tus request for an upload"
            raise HTTPException(405, detail, _ITEM_METHODS)
        check_uploader(viewer)
        if method == "PATCH":
            return await patch(request, upload_id, viewer)
        # Files are read and removed on a worker thread: the event loop carries the uploads.
        answer = head if method == "HEAD" else delete
        return await run_in_threadpool(answer, upload_id, viewer)

    return router
