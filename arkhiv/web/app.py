"""The FastAPI application that `arkhiv serve` runs."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as FastApiPath
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor

from arkhiv import __version__
from arkhiv.access import iiif, oai
from arkhiv.access.dips import check_recipient, release_dip
from arkhiv.access.disclosure import object_view, precise_locations
from arkhiv.access.exports import LEVELS, export_object, print_replica, web_level
from arkhiv.access.files import NotFound, prepare_download
from arkhiv.access.viewers import (
    ANONYMOUS,
    Forbidden,
    Unauthorized,
    Viewer,
    anonymous,
    issue_token,
    revoke_token,
    tokens_of,
    touch,
    touch_due,
    viewer_for_token,
)
from arkhiv.aip.archiving import ConcurrentChange
from arkhiv.aip.description import DescriptionError
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog import events, submissions
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading, writing
from arkhiv.dissemination.formats import FORMATS
from arkhiv.errors import ArkhivError, CatalogUnavailable, ConfigError
from arkhiv.identifiers import IdentifierError, normalize
from arkhiv.jobs.archiving import describe_object
from arkhiv.jobs.dissemination import DIP_KIND, dip_path, queue_dip
from arkhiv.jobs.ingest import receive_submission
from arkhiv.jobs.scheduler import Scheduler
from arkhiv.jobs.worker import Worker
from arkhiv.policies.access import Permission
from arkhiv.web.limits import BodyLimit
from arkhiv.web.pages import TUS_PREFIX, install_page_errors, pages_router, sweep_assemblies
from arkhiv.web.security import RateLimiter
from arkhiv.web.tus import sweep_expired, tus_router
from arkhiv.web.visits import check_csrf, visit_of

STATIC = Path(__file__).with_name("static")

log = logging.getLogger("arkhiv.web")


# Job and token numbers as the catalog stores them (a 64-bit integer): larger ones are none.
JobNumber = Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]
# Named in the OpenAPI document, so that clients (and schemathesis) know the choices.
ExportName = Literal[tuple(FORMATS)]
LevelName = Literal[LEVELS]


class TokenRequest(BaseModel):
    name: str = Field("", max_length=128, description="what the token is for")
    days: int | None = Field(
        90, ge=1, le=3650, description="valid for this many days; null: until revoked"
    )


class DipRequest(BaseModel):
    formats: list[str] = Field(default_factory=lambda: ["glb", "obj", "ply", "stl"], max_length=20)
    originals: bool = False


class ArkConvertor(Convertor):
    """An ARK in a path, in its usual or older (ark:/) form: it has one slash of its own (two
    in the older form), so routes can go on after it."""

    regex = r"ark:/?[0-9]+/[0-9A-Za-z]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("ark", ArkConvertor())


def create_app(archive: Archive, *, embedded_worker: bool | None = None) -> FastAPI:
    """`embedded_worker` (default: the `server.embedded_worker` setting) runs jobs and the
    scheduler inside the server, for the one-machine archive."""
    if embedded_worker is None:
        embedded_worker = archive.settings.server.embedded_worker

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        remove_stale_uploads(archive.settings.home / "uploads")
        sweeper = asyncio.create_task(_sweep_uploads(archive))
        background = _Background(archive, embedded_worker)
        background.start()
        try:
            yield
        finally:
            sweeper.cancel()
            background.stop()

    app = FastAPI(
        title="Arkhiv",
        version=__version__,
        description="Preservation archive for 3D cultural heritage.",
        lifespan=lifespan,
    )
    app.state.archive = archive
    app.add_middleware(
        BodyLimit,
        limit=archive.settings.server.max_body_bytes,
        larger_limit=archive.settings.server.max_form_bytes,
        unbounded=_streams_to_disk,
        larger=_submission_form,
    )

    @app.exception_handler(CatalogUnavailable)
    async def _catalog_down(_request: Request, exc: CatalogUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ConfigError)
    async def _misconfigured(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    @app.exception_handler(NotFound)
    async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Forbidden)
    async def _forbidden(_request: Request, exc: Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(ArkhivError)
    async def _archive_error(_request: Request, exc: ArkhivError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, _exc: DataError) -> JSONResponse:
        # A value the database cannot even compare (a NUL character in a query, a number
        # beyond its integers): the request is wrong, the server is fine.
        return JSONResponse({"detail": "a value in the request is not valid"}, status_code=422)

    bearer = HTTPBearer(auto_error=False, description="An API token (`arkhiv tokens create`)")

    def viewer(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Viewer:
        """Who is asking: the token's user, the signed-in browser's (whose state-changing
        requests must carry the CSRF token), or the anonymous role."""
        token = credentials.credentials if credentials else None
        if not token:
            visit = visit_of(archive, request)
            check_csrf(visit, request)
            return visit.viewer
        with reading(archive.engine) as conn:
            found = viewer_for_token(conn, archive.settings.access, token)
            due = touch_due(conn, token)
        if due:
            with writing(archive.engine) as conn:
                touch(conn, token)
        return found

    upload_starts = RateLimiter(archive.settings.web.uploads_per_hour, 3600)

    def uploader(request: Request, who: Viewer = Depends(viewer)) -> Viewer:
        """The tus endpoint's caller; starting uploads is rate-limited per user."""
        if who.name == ANONYMOUS:
            raise Unauthorized("sign in to upload")
        # Every POST to the collection creates an upload, whatever a method override says.
        if request.method == "POST" and request.url.path.rstrip("/") == TUS_PREFIX:
            wait = upload_starts.hit(who.name)
            if wait:
                raise HTTPException(
                    429,
                    "too many uploads started; try again later",
                    headers={"Retry-After": str(int(wait) + 1), "Tus-Resumable": "1.0.0"},
                )
        return who

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(
        tus_router(
            archive,
            uploader,
            prefix=TUS_PREFIX,
            bytes_per_day=archive.settings.web.upload_bytes_per_day,
        )
    )
    app.include_router(pages_router(archive))
    install_page_errors(app, archive)

    @app.get("/health", summary="Liveness and catalog reachability")
    def health() -> JSONResponse:
        try:
            archive.check_catalog()
        except CatalogUnavailable as exc:
            return JSONResponse({"status": "unavailable", "catalog": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "catalog": "ok", "version": __version__})

    def someone(who: Viewer = Depends(viewer)) -> Viewer:
        if who.name == ANONYMOUS:
            raise Unauthorized("sign in or give a token")
        return who

    @app.get("/api/v1/tokens", summary="Your API tokens (never the tokens themselves)")
    def list_tokens(who: Viewer = Depends(someone)) -> list[dict[str, Any]]:
        with reading(archive.engine) as conn:
            return jsonable_encoder(tokens_of(conn, who.name))

    @app.post(
        "/api/v1/tokens",
        status_code=201,
        summary="A new API token for yourself, shown once. Only a person signed in with a "
        "password (the session cookie, with the CSRF token) can make one: a token cannot make "
        "more tokens, so a leaked one cannot outlive its revocation",
        responses={403: {"description": "asked with a token rather than a signed-in session"}},
    )
    def create_token(
        request: Request,
        body: TokenRequest,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
        who: Viewer = Depends(someone),
    ) -> dict[str, Any]:
        # Neither a token nor a page session opened with one: a leaked token must not be able
        # to make another that outlives its revocation.
        if credentials is not None or not visit_of(archive, request).with_password:
            raise Forbidden("tokens are made by a person signed in with a password, not by a token")
        valid_for = timedelta(days=body.days) if body.days else None
        with writing(archive.engine) as conn:
            token_id, token = issue_token(conn, who.name, body.name, valid_for)
            made = next(entry for entry in tokens_of(conn, who.name) if entry["id"] == token_id)
        return jsonable_encoder({**made, "token": token})

    @app.delete(
        "/api/v1/tokens/{token_id}",
        status_code=204,
        summary="Revoke one of your tokens at once (administrators: anyone's)",
        responses={404: {"description": "no such token of yours still valid"}},
    )
    def delete_token(token_id: JobNumber, who: Viewer = Depends(someone)) -> Response:
        owner = None if who.may(Permission.ADMINISTER) else who.name
        with writing(archive.engine) as conn:
            if not revoke_token(conn, token_id, owner, actor=who.name):
                raise NotFound(f"no valid token {token_id} of yours")
        return Response(status_code=204)

    @app.get("/api/v1/status", summary="Catalog, stores, job queues, object counts and policy")
    def status(who: Viewer = Depends(viewer)) -> dict[str, Any]:
        # Store locations, buckets and health details are the officers' business.
        who.require(Permission.MANAGE_PRESERVATION, "see the archive's status")
        return archive.status()

    async def oai_pmh(request: Request) -> Response:
        arguments = request.query_params.multi_items()
        if request.method == "POST":
            arguments = (await request.form()).multi_items()
        repeated = len({key for key, _ in arguments}) != len(arguments)
        base = str(request.base_url).rstrip("/")
        repository = oai.Repository(
            archive.settings.server.name,
            base + "/oai",
            archive.settings.server.admin_email,
            archive.settings.identifiers.resolver,
            base + "/objects/{ark}",
            archive.settings.server.oai_page_size,
        )
        given = {key: str(value) for key, value in arguments}
        with reading(archive.engine) as conn:
            body = await run_in_threadpool(oai.respond, conn, repository, given, repeated)
        return Response(body, media_type="text/xml; charset=utf-8")

    for method in ("GET", "POST"):  # the protocol allows both (POST: a form)
        app.add_api_route(
            "/oai",
            oai_pmh,
            methods=[method],
            name=f"oai_{method.lower()}",
            operation_id=f"oai_pmh_{method.lower()}",
            summary="OAI-PMH 2.0: oai_dc and EDM records of the public catalogue",
            response_class=Response,
            responses={200: {"content": {"text/xml": {}}}},
        )

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
        request: Request,
        filename: str = "upload",
        plain: bool = False,
        who: Viewer = Depends(viewer),
    ) -> JSONResponse:
        who.require(Permission.SUBMIT, "submit packages")
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
                who.name,
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
    def submission(submission_id: str, who: Viewer = Depends(viewer)) -> dict[str, Any]:
        with reading(archive.engine) as conn:
            row = submissions.get(conn, submission_id)
            mine = row is not None and row["submitted_by"] == who.name
            if row is None or not (mine or who.may(Permission.MANAGE_PRESERVATION)):
                raise HTTPException(404, f"no submission {submission_id}")
            row["events"] = events.events_for_submission(conn, submission_id)
        for private in ("staging_path", "quarantine_path"):
            row.pop(private, None)
        return jsonable_encoder(row)

    def _visible(document: dict[str, Any], who: Viewer) -> bool:
        """Withdrawn objects are the officers' only."""
        return document["status"] != "withdrawn" or who.may(Permission.MANAGE_PRESERVATION)

    def _identifier(text: str) -> str:
        try:
            return normalize(text)
        except IdentifierError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get(
        "/api/v1/objects",
        summary="Search archived objects by text, type, country, map area and dating; most "
        "recently changed first",
    )
    def list_objects(
        q: str | None = Query(None, max_length=200, description="words in the title or record"),
        object_type: str | None = Query(None, alias="type", max_length=64),
        country: str | None = Query(None, pattern="^[A-Za-z]{2}$", description="ISO 3166"),
        dated_from: str | None = Query(None, alias="from", pattern=r"^\d{4}(-\d{2}){0,2}$"),
        dated_to: str | None = Query(None, alias="to", pattern=r"^\d{4}(-\d{2}){0,2}$"),
        bbox: str | None = Query(
            None,
            max_length=100,
            description="a map area, west,south,east,north in degrees: objects whose public "
            "grid cell meets it",
        ),
        status: str | None = Query(None, max_length=32),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0, le=1_000_000),
        who: Viewer = Depends(viewer),
    ) -> list[dict[str, Any]]:
        try:
            bounds = catalog_objects.parse_bbox(bbox)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        with reading(archive.engine) as conn:
            found = catalog_objects.search_objects(
                conn,
                include_withdrawn=who.may(Permission.MANAGE_PRESERVATION),
                text=q,
                object_type=object_type,
                country=country,
                dated_from=dated_from,
                dated_to=dated_to,
                bbox=bounds,
                status=status,
                limit=limit,
                offset=offset,
            )
        return jsonable_encoder(found)

    @app.get("/api/v1/formats", summary="The formats models can be exported to")
    def formats() -> list[dict[str, Any]]:
        from arkhiv.dissemination.formats import describe_formats

        return describe_formats()

    @app.get(
        "/api/v1/objects/{object_id:ark}/export/{fmt}",
        summary="The object's model in a format (made from the glTF master, then cached); "
        "formats with textures beside the model come as a ZIP",
        response_class=FileResponse,
        responses={
            403: {"description": "the role may not download access copies"},
            404: {"description": "no such object, or no model"},
            422: {"description": "unknown format, or one that cannot hold this model"},
        },
    )
    def export_model(object_id: str, fmt: ExportName, who: Viewer = Depends(viewer)):
        identifier = _identifier(object_id)
        made = export_object(archive, who, identifier, fmt)
        return FileResponse(made.path, media_type=made.media_type, filename=made.filename)

    @app.get(
        "/api/v1/objects/{object_id:ark}/lod/{level}",
        summary="A level of detail of the model for web viewers: thumb (<200 KB), low "
        "(~150k faces, 1k textures), medium (~500k, 2k), high (the master's detail, 4k); "
        "compression none, draco (KHR_draco_mesh_compression) or meshopt "
        "(EXT_meshopt_compression)",
        response_class=FileResponse,
        responses={403: {"description": "not for this role"}, 404: {"description": "no model"}},
    )
    def web_level_of_detail(
        object_id: str,
        level: LevelName,
        compression: Literal["none", "draco", "meshopt"] = "none",
        who: Viewer = Depends(viewer),
    ):
        identifier = _identifier(object_id)
        made = web_level(archive, who, identifier, level, compression)
        return FileResponse(made.path, media_type=made.media_type, filename=made.filename)

    @app.get(
        "/api/v1/objects/{object_id:ark}/print",
        summary="A print-ready replica: watertight and manifold, scaled to size_mm along an "
        "axis, on the build plate (Z up); STL or 3MF. The repair report is in the "
        "X-Arkhiv-Print-Report header (JSON)",
        response_class=FileResponse,
        responses={
            404: {"description": "no model"},
            422: {"description": "cannot be printed (an open surface: give solidify_mm)"},
        },
    )
    def print_ready_replica(
        object_id: str,
        size_mm: float = Query(..., ge=1, le=5000),
        fmt: str = Query("stl", alias="format", pattern="^(stl|3mf)$"),
        axis: str = Query("longest", pattern="^(longest|x|y|z)$"),
        solidify_mm: float | None = Query(None, ge=0.2, le=50),
        who: Viewer = Depends(viewer),
    ):
        identifier = _identifier(object_id)
        made, report = print_replica(archive, who, identifier, size_mm, fmt, axis, solidify_mm)
        summary = {k: v for k, v in report.items() if k not in ("files", "master")}
        return FileResponse(
            made.path,
            media_type=made.media_type,
            filename=made.filename,
            headers={"X-Arkhiv-Print-Report": json.dumps(summary, separators=(",", ":"))},
        )

    @app.post(
        "/api/v1/objects/{object_id:ark}/dips",
        status_code=202,
        summary="Ask for a dissemination package (BagIt zip: formats, public metadata, README, "
        "METS); it is prepared as a job: poll the returned URL, then download",
        responses={403: {"description": "the role may not request DIPs (or originals)"}},
    )
    def request_dip(
        object_id: str, request: DipRequest, who: Viewer = Depends(viewer)
    ) -> dict[str, Any]:
        from arkhiv.dissemination.formats import FORMATS

        identifier = _identifier(object_id)
        who.require(Permission.REQUEST_DIPS, "request dissemination packages")
        if request.originals:
            who.require(Permission.DOWNLOAD_ORIGINALS, "receive originals")
        unknown = [fmt for fmt in request.formats if fmt not in FORMATS]
        if unknown or not request.formats:
            raise HTTPException(422, f"formats: choose from {', '.join(FORMATS)}")
        with reading(archive.engine) as conn:
            if catalog_objects.get_object(conn, identifier) is None:
                raise HTTPException(404, f"no object {identifier}")
        with writing(archive.engine) as conn:
            job_id = queue_dip(conn, archive, who, identifier, request.formats, request.originals)
        return {"job": job_id, "status": f"/api/v1/dips/{job_id}"}

    def _dip_job(job_id: int, who: Viewer):
        """A DIP request is its recipient's alone (officers see jobs with `arkhiv jobs`):
        anyone else learns not even that it exists."""
        job = archive.queue.get(job_id)
        if job is None or job.kind != DIP_KIND or job.payload.get("recipient") != who.name:
            raise HTTPException(404, f"no DIP request {job_id}")
        who.require(Permission.REQUEST_DIPS, "receive dissemination packages")  # still?
        return job

    @app.get("/api/v1/dips/{job_id}", summary="Where a DIP request stands")
    def dip_status(job_id: JobNumber, who: Viewer = Depends(viewer)) -> dict[str, Any]:
        job = _dip_job(job_id, who)
        answer = {
            "job": job.id,
            "object": job.payload["object"],
            "formats": job.payload["formats"],
            "status": job.status,
            "progress": job.progress,
            "error": (job.last_error or "").splitlines()[0] if job.status == "dead" else None,
        }
        if job.status == "done":
            result = job.result or {}
            try:
                check_recipient(who, job.payload, result)
            except Forbidden as refused:  # not even the names of what it holds
                answer["refused"] = str(refused)
                return answer
            if result.get("removed_at"):
                answer["removed"] = {"at": result["removed_at"], "why": result["removed_because"]}
            else:
                answer["download"] = f"/api/v1/dips/{job.id}/download"
            answer["result"] = job.result
        return answer

    @app.get(
        "/api/v1/dips/{job_id}/download",
        summary="The prepared DIP (a BagIt zip)",
        response_class=FileResponse,
        responses={
            403: {"description": "the role no longer holds what the package's contents need"},
            409: {"description": "not ready yet"},
            410: {"description": "removed after server.dip_retention_days: ask again"},
        },
    )
    def dip_download(job_id: JobNumber, who: Viewer = Depends(viewer)):
        job = _dip_job(job_id, who)
        if job.status != "done":
            raise HTTPException(409, f"DIP request {job_id} is {job.status}")
        result = job.result or {}
        path = dip_path(archive, job.id)
        if result.get("removed_at") or not path.is_file():
            raise HTTPException(
                410,
                f"DIP {job_id} was removed on {result.get('removed_at', 'an earlier day')[:10]}: "
                "packages are kept for server.dip_retention_days; ask for it again",
            )
        release_dip(archive, who, job.id, job.payload, result)
        return FileResponse(path, media_type="application/zip", filename=f"dip-{job.id}.zip")

    @app.get(
        "/iiif/{object_id:ark}/manifest",
        summary="IIIF Presentation 3 manifest of an object's 3D model",
        responses={404: {"description": "no such object, or no model yet"}},
    )
    def iiif_manifest(object_id: str, request: Request) -> JSONResponse:
        identifier = _identifier(object_id)
        with reading(archive.engine) as conn:
            document = object_document(conn, identifier)
        public_viewer = anonymous(archive.settings.access)
        if document is None or not _visible(document, public_viewer):
            raise HTTPException(404, f"no object {identifier}")
        public = object_view(document, public_viewer)
        found = iiif.manifest(
            public,
            str(request.base_url).rstrip("/"),
            archive.settings.server.name,
            archive.settings.identifiers.resolver,
        )
        if found is None:
            raise HTTPException(404, f"{identifier} has no 3D model yet")
        return JSONResponse(
            found,
            media_type='application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"',
            headers={"Access-Control-Allow-Origin": "*"},  # viewers load manifests cross-site
        )

    @app.get(
        "/api/v1/objects/{object_id:ark}/files/{logical_path:path}",
        summary="A file of the object's head version, as the caller's role may have it "
        "(HTTP Range supported; pictures without metadata for roles without precise_location)",
        response_class=FileResponse,
        responses={
            206: {"description": "the requested range"},
            401: {"description": "the token is not valid"},
            403: {"description": "the role may not have this file"},
            404: {"description": "no such object or file"},
        },
    )
    def object_file(object_id: str, logical_path: str, who: Viewer = Depends(viewer)):
        identifier = _identifier(object_id)
        download = prepare_download(archive, who, identifier, logical_path)
        cleanup = (
            BackgroundTask(shutil.rmtree, download.temporary, ignore_errors=True)
            if download.temporary
            else None
        )
        return FileResponse(
            download.path,
            media_type=download.media_type,
            filename=download.filename,
            background=cleanup,
        )

    @app.get(
        "/api/v1/objects/{object_id:path}/location",
        summary="Where the object is: the public grid cell, and the precise capture locations "
        "for roles allowed to see them (each such request is written to the audit log)",
        responses={
            401: {"description": "the token is not valid"},
            403: {"description": "precise=true for a role without precise_location"},
            404: {"description": "no such object"},
        },
    )
    def object_location(
        request: Request,
        object_id: str,
        precise: bool = False,
        purpose: str = Query("", max_length=500, description="why (required with precise)"),
        who: Viewer = Depends(viewer),
    ) -> dict[str, Any]:
        if precise:
            # A disclosure is written to the audit log: not something another site may make a
            # signed-in partner's browser do with a link.
            check_csrf(visit_of(archive, request), request, even_if_safe=True)
        identifier = _identifier(object_id)
        with reading(archive.engine) as conn:
            row = catalog_objects.get_object(conn, identifier)
        if row is None or not _visible(row, who):
            raise HTTPException(404, f"no object {identifier}")
        answer: dict[str, Any] = {
            "object": identifier,
            "public_location": (row["description"] or {}).get("public_location"),
        }
        if precise:
            if not purpose.strip():
                who.require(Permission.PRECISE_LOCATION, "see precise locations")
                raise HTTPException(422, "purpose: say why the precise location is needed")
            answer["precise_locations"] = precise_locations(archive, who, identifier, purpose)
        return answer

    # After the routes under it: a path parameter would swallow their suffixes.
    @app.get(
        "/api/v1/objects/{object_id:path}",
        summary="An object: versions, files, formats, digests, events, copies",
    )
    def show_object(object_id: str, who: Viewer = Depends(viewer)) -> dict[str, Any]:
        identifier = _identifier(object_id)
        with reading(archive.engine) as conn:
            document = object_document(conn, identifier)
        if document is None or not _visible(document, who):
            raise HTTPException(404, f"no object {identifier}")
        return object_view(document, who)

    @app.patch(
        "/api/v1/objects/{object_id:path}/description",
        summary="Edit the description: a new version with a metadata-modification event",
    )
    async def edit_description(
        object_id: str, request: Request, who: Viewer = Depends(viewer)
    ) -> dict[str, Any]:
        identifier = _identifier(object_id)
        who.require(Permission.MANAGE_PRESERVATION, "edit descriptions")
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, 'the body must be JSON: {"set": {field: value}}') from None
        edits = body.get("set") if isinstance(body, dict) else None
        if not isinstance(edits, dict) or not edits:
            raise HTTPException(400, 'give the fields to change as {"set": {field: value}}')
        if not all(isinstance(v, str) for v in edits.values()):
            raise HTTPException(400, "every value must be a string (empty clears the field)")
        with reading(archive.engine) as conn:
            if catalog_objects.get_object(conn, identifier) is None:
                raise HTTPException(404, f"no object {identifier}")
        try:
            result, changes = await run_in_threadpool(
                describe_object, archive, identifier, edits, who.name
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


def _streams_to_disk(method: str, path: str) -> bool:
    """Routes that write their bodies to disk under the ingest limits, not into memory."""
    if path == TUS_PREFIX or path.startswith(TUS_PREFIX + "/"):
        return True
    return method == "POST" and path.rstrip("/") == "/api/v1/submissions"


def _submission_form(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/") in ("/capture", "/submit")


async def _sweep_uploads(archive: Archive, every_s: float = 3600) -> None:
    """Resumable uploads nobody finished: removed once they expire (a day after their last
    byte), so that abandoned phones' photos do not fill the disk."""
    while True:
        try:
            await run_in_threadpool(sweep_expired, archive)
            await run_in_threadpool(sweep_assemblies, archive)
        except Exception:  # never let a sweep take the server down; the next one tries again
            log.exception("sweeping expired uploads failed")
        await asyncio.sleep(every_s)


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
