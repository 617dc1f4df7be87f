"""The FastAPI application that `arkhiv serve` runs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse

from arkhiv import __version__
from arkhiv.aip.archiving import ConcurrentChange
from arkhiv.aip.description import DescriptionError
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog import events, submissions
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading
from arkhiv.errors import ArkhivError, CatalogUnavailable, ConfigError
from arkhiv.identifiers import IdentifierError, normalize
from arkhiv.jobs.archiving import describe_object
from arkhiv.jobs.ingest import receive_submission
from arkhiv.jobs.scheduler import Scheduler
from arkhiv.jobs.worker import Worker

log = logging.getLogger("arkhiv.web")


def create_app(archive: Archive, *, embedded_worker: bool | None = None) -> FastAPI:
    """`embedded_worker` (default: the `server.embedded_worker` setting) runs jobs and the
    scheduler inside the server, for the one-machine archive."""
    if embedded_worker is None:
        embedded_worker = archive.settings.server.embedded_worker

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        remove_stale_uploads(archive.settings.home / "uploads")
        background = _Background(archive, embedded_worker)
        background.start()
        try:
            yield
        finally:
            background.stop()

    app = FastAPI(
        title="Arkhiv",
        version=__version__,
        description="Preservation archive for 3D cultural heritage.",
        lifespan=lifespan,
    )
    app.state.archive = archive

    @app.exception_handler(CatalogUnavailable)
    async def _catalog_down(_request: Request, exc: CatalogUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ConfigError)
    async def _misconfigured(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(ArkhivError)
    async def _archive_error(_request: Request, exc: ArkhivError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/api/v1/status")

    @app.get("/health", summary="Liveness and catalog reachability")
    def health() -> JSONResponse:
        try:
            archive.check_catalog()
        except CatalogUnavailable as exc:
            return JSONResponse({"status": "unavailable", "catalog": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "catalog": "ok", "version": __version__})

    @app.get("/api/v1/status", summary="Catalog, stores, job queues, object counts and policy")
    def status() -> dict[str, Any]:
        return archive.status()

    @app.post(
        "/api/v1/submissions",
        status_code=202,
        summary="Submit a package (request body: a zip, tar or tar.gz)",
        description="The body streams to disk (never held in memory) and is checked by an "
        "ingest job; poll the returned URL for the outcome. `plain=true`: the archive holds "
        "plain files (photos, a Polycam export) that Arkhiv bags first.",
        responses={
            413: {"description": "larger than ingest.max_package_bytes"},
            422: {"description": "refused at intake (unsafe or broken archive)"},
        },
    )
    async def submit(
        request: Request, filename: str = "upload", plain: bool = False
    ) -> JSONResponse:
        limit = archive.settings.ingest.max_package_bytes
        uploads = archive.settings.home / "uploads"
        uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        upload = uploads / f"{uuid.uuid4()}.part"
        try:
            received = 0
            with upload.open("wb") as handle:
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > limit:
                        detail = f"package larger than {limit} bytes (ingest.max_package_bytes)"
                        return JSONResponse({"detail": detail}, status_code=413)
                    await run_in_threadpool(handle.write, chunk)  # the event loop stays free
            if received == 0:
                return JSONResponse({"detail": "empty request body"}, status_code=400)
            submission_id, job_id, problems = await run_in_threadpool(
                receive_submission,
                archive,
                upload,
                "api",
                plain=plain,
                source_name=_display_name(filename),
            )
        finally:
            upload.unlink(missing_ok=True)
        location = f"/api/v1/submissions/{submission_id}"
        if problems:
            return JSONResponse(
                {"id": submission_id, "status": "rejected", "problems": problems},
                status_code=422,
                headers={"Location": location},
            )
        return JSONResponse(
            {"id": submission_id, "status": "received", "job": job_id, "href": location},
            status_code=202,
            headers={"Location": location},
        )

    @app.get("/api/v1/submissions/{submission_id}", summary="A submission's outcome and report")
    def submission(submission_id: str) -> dict[str, Any]:
        with reading(archive.engine) as conn:
            row = submissions.get(conn, submission_id)
            if row is None:
                raise HTTPException(404, f"no submission {submission_id}")
            row["events"] = events.events_for_submission(conn, submission_id)
        for private in ("staging_path", "quarantine_path"):
            row.pop(private, None)
        return jsonable_encoder(row)

    def _identifier(text: str) -> str:
        try:
            return normalize(text)
        except IdentifierError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/v1/objects", summary="Archived objects, most recently changed first")
    def list_objects(status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with reading(archive.engine) as conn:
            return jsonable_encoder(catalog_objects.list_objects(conn, status, min(limit, 1000)))

    @app.get(
        "/api/v1/objects/{object_id:path}",
        summary="An object: versions, files, formats, digests, events, copies",
    )
    def show_object(object_id: str) -> dict[str, Any]:
        identifier = _identifier(object_id)
        with reading(archive.engine) as conn:
            document = object_document(conn, identifier)
        if document is None:
            raise HTTPException(404, f"no object {identifier}")
        return document

    @app.patch(
        "/api/v1/objects/{object_id:path}/description",
        summary="Edit the description: a new version with a metadata-modification event",
    )
    async def edit_description(object_id: str, request: Request) -> dict[str, Any]:
        identifier = _identifier(object_id)
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, 'the body must be JSON: {"set": {field: value}}') from None
        edits = body.get("set") if isinstance(body, dict) else None
        if not isinstance(edits, dict) or not edits:
            raise HTTPException(400, 'give the fields to change as {"set": {field: value}}')
        if not all(isinstance(v, str) for v in edits.values()):
            raise HTTPException(400, "every value must be a string (empty clears the field)")
        user = body.get("user") if isinstance(body.get("user"), str) else None
        with reading(archive.engine) as conn:
            if catalog_objects.get_object(conn, identifier) is None:
                raise HTTPException(404, f"no object {identifier}")
        try:
            result, changes = await run_in_threadpool(
                describe_object, archive, identifier, edits, user or "api"
            )
        except DescriptionError as exc:
            raise HTTPException(422, str(exc)) from None
        except ConcurrentChange as exc:
            raise HTTPException(409, str(exc)) from None
        return {
            "object": identifier,
            "changed": {name: {"from": old, "to": new} for name, (old, new) in changes.items()},
            "version": result.as_dict() if result else None,
        }

    return app


class _Background:
    """The embedded worker and scheduler, on threads beside the server."""

    def __init__(self, archive: Archive, enabled: bool) -> None:
        self.archive = archive
        self.enabled = enabled
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.scheduler: Scheduler | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        worker = Worker(self.archive, stop=self.stop_event)
        self.thread = threading.Thread(target=worker.run, name="embedded-worker", daemon=True)
        self.thread.start()
        if self.archive.settings.scheduler.enabled:
            self.scheduler = Scheduler(self.archive)
            self.scheduler.start()
        log.info("embedded worker %s started", worker.owner)

    def stop(self) -> None:
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=30)


def _display_name(filename: str) -> str:
    """The submitter's file name as a label: no folders, no control characters, bounded."""
    name = Path(filename.replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())[:255]
    return name or "upload"


STALE_UPLOAD_SECONDS = 24 * 3600


def remove_stale_uploads(uploads: Path, now: float | None = None) -> int:
    """Uploads a crashed server left half-received. Only old ones: another server sharing this
    archive may be receiving into the same folder right now."""
    if not uploads.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - STALE_UPLOAD_SECONDS
    removed = 0
    for part in uploads.glob("*.part"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed
