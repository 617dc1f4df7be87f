"""The server-rendered pages: the public catalogue and object pages, the citizen capture and
museum submission pages, submissions and their reports, requests for researchers, the
preservation officers' dashboard, and sign-in.

Pages read what the API reads, through the same access rules (`object_view`,
`precise_locations`, the roles' permissions): a page never shows what the API would refuse.
Forms carry the CSRF token; uploads go through the tus endpoint (`arkhiv.web.tus`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError
from sqlalchemy import select

from arkhiv import __version__
from arkhiv.access.accounts import authenticate, end_session, set_password, start_session
from arkhiv.access.disclosure import object_view, precise_locations
from arkhiv.access.viewers import (
    Forbidden,
    Unauthorized,
    Viewer,
    anonymous,
    issue_token,
    revoke_all_tokens,
    revoke_token,
    token_id,
    tokens_of,
    viewer_for_token,
)
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog import events as catalog_events
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog import submissions as catalog_submissions
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import submissions as submissions_table
from arkhiv.errors import ArkhivError, CatalogUnavailable
from arkhiv.identifiers import IdentifierError, normalize
from arkhiv.ingest.capture_metadata import (
    METADATA_FILE,
    CaptureMetadata,
    CaptureMode,
    ConditionStatus,
    License,
    ObjectType,
    PublishAs,
)
from arkhiv.ingest.unpack import IntakeError, receive
from arkhiv.jobs.dissemination import DIP_KIND, dip_path, queue_dip
from arkhiv.jobs.ingest import receive_submission
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.policies.access import Permission
from arkhiv.web import i18n
from arkhiv.web.security import RateLimiter, client_key, cookie_name, cookie_options
from arkhiv.web.tus import FinishedUpload, UploadError, discard, finished_upload
from arkhiv.web.visits import CSRF_FIELD, Visit, anonymous_csrf_cookie, check_csrf, visit_of

TUS_PREFIX = "/uploads"
UPLOAD_CHUNK_BYTES = 512 * 1024  # small: a phone on a bad line loses at most this much
BAG_CHUNK_BYTES = 4 << 20  # museums' lines are better; fewer requests for a large bag
MAX_FILES_PER_SUBMISSION = 20_000  # a bag folder sent file by file

_environment = Environment(
    loader=PackageLoader("arkhiv.web", "templates"),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.install_gettext_callables(i18n.gettext_, i18n.ngettext_, newstyle=True)
# A value from the catalogue (a type, a state) in the visitor's language. A filter, not `_()`:
# newstyle gettext marks its result safe, and a value must be escaped like any other text.
_environment.filters["label"] = lambda value: i18n.gettext_(str(value))
_ = i18n.gettext_


def environment() -> Environment:
    return _environment


class SignInRequired(Exception):
    """A page for signed-in users, asked for by a visitor who is not."""


def _object_types() -> list[str]:
    return [member.value for member in ObjectType]


def _ark(text: str) -> str:
    try:
        return normalize(text)
    except IdentifierError:
        raise HTTPException(404, "no such object") from None


def pages_router(archive: Archive) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    settings = archive.settings
    sign_in_failures = RateLimiter(settings.web.sign_in_attempts_per_minute, 60)
    name_failures = RateLimiter(settings.web.sign_in_attempts_per_minute * 10, 60)

    def render(
        request: Request, visit: Visit, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        page = render_page(archive, request, visit, template, **context)
        response = HTMLResponse(page, status_code=status)
        finish(response, visit, request)
        return response

    def finish(response: Response, visit: Visit, request: Request) -> None:
        # Pages change with the visitor; caches in between must not keep them.
        response.headers["Cache-Control"] = "no-store"
        response.headers.update(page_headers(settings.web.map_tiles_url))
        if visit.new_anonymous_csrf:
            response.set_cookie(
                anonymous_csrf_cookie(visit.secure), visit.csrf, **cookie_options(visit.secure)
            )
        if request.query_params.get("lang") in i18n.LANGUAGES:
            response.set_cookie(
                i18n.COOKIE,
                visit.language,
                max_age=365 * 24 * 3600,
                **{**cookie_options(visit.secure), "httponly": False},
            )

    def visit_for(request: Request) -> Visit:
        return visit_of(archive, request)

    def signed_in(request: Request, permission: Permission | None = None) -> Visit:
        visit = visit_for(request)
        if not visit.signed_in:
            raise SignInRequired()
        if permission is not None:
            visit.viewer.require(permission, "use this page")
        return visit

    async def form_of(request: Request, visit: Visit) -> dict[str, Any]:
        form = await request.form()
        check_csrf(visit, request, form.get(CSRF_FIELD))
        return form

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    # --- the public catalogue ------------------------------------------------------------

    @router.get("/", response_class=HTMLResponse)
    def catalogue(
        request: Request,
        q: str = "",
        type: str = "",
        country: str = "",
        date_from: str = "",
        date_to: str = "",
        bbox: str = "",
        page: int = 1,
    ):
        visit = visit_for(request)
        per_page = 24
        page = max(1, min(page, 10_000))
        filters = {
            "text": q.strip()[:200] or None,
            "object_type": type if type in _object_types() else None,
            "country": country.upper() if len(country) == 2 and country.isalpha() else None,
            "dated_from": date_from if _is_date_filter(date_from) else None,
            "dated_to": date_to if _is_date_filter(date_to) else None,
            "bbox": _map_area(bbox),
        }
        with reading(archive.engine) as conn:
            found = catalog_objects.search_objects(
                conn,
                include_withdrawn=visit.viewer.may(Permission.MANAGE_PRESERVATION),
                limit=per_page + 1,
                offset=(page - 1) * per_page,
                **filters,
            )
        more = len(found) > per_page
        found = found[:per_page]
        cells = [
            {
                "title": entry["title"],
                "href": f"/objects/{entry['id']}",
                **{k: loc[k] for k in ("south", "west", "north", "east")},
            }
            for entry in found
            if (loc := entry.get("public_location"))
        ]
        return render(
            request,
            visit,
            "catalogue.html",
            results=found,
            cells=cells,
            more=more,
            page=page,
            query={
                "q": q,
                "type": type,
                "country": country,
                "date_from": date_from,
                "date_to": date_to,
                "bbox": bbox if filters["bbox"] else "",
            },
            object_types=_object_types(),
            tiles=settings.web.map_tiles_url,
            tiles_attribution=settings.web.map_tiles_attribution,
        )

    def object_page(request: Request, visit: Visit, object_id: str, **extra: Any) -> HTMLResponse:
        identifier = _ark(object_id)
        with reading(archive.engine) as conn:
            document = object_document(conn, identifier)
        officer = visit.viewer.may(Permission.MANAGE_PRESERVATION)
        if document is None or (document["status"] == "withdrawn" and not officer):
            return render(request, visit, "missing.html", status=404, identifier=identifier)
        view = object_view(document, visit.viewer)
        files = view["files"]
        from arkhiv.access.exports import MASTER, available_formats

        paths = [f["logical_path"] for f in document["files"]]
        has_model = MASTER in paths

        return render(
            request,
            visit,
            "object.html",
            obj=view,
            record=view["description"],
            files=files,
            has_model=has_model,
            formats=available_formats(paths),
            citation=_citation(view, settings),
            resolver=settings.identifiers.resolver,
            lod_level=request.query_params.get("level", ""),
            **extra,
        )

    @router.get("/objects/{object_id:ark}", response_class=HTMLResponse)
    def show_object(request: Request, object_id: str):
        return object_page(request, visit_for(request), object_id)

    @router.post("/objects/{object_id:ark}/location", response_class=HTMLResponse)
    async def reveal_location(request: Request, object_id: str):
        visit = signed_in(request, Permission.PRECISE_LOCATION)
        form = await form_of(request, visit)
        purpose = str(form.get("purpose", "")).strip()[:500]
        if not purpose:
            return object_page(
                request, visit, object_id, location_error=_("Say why you need the location.")
            )
        identifier = _ark(object_id)
        with reading(archive.engine) as conn:
            row = catalog_objects.get_object(conn, identifier)
        if row is None or row["status"] == "withdrawn":
            raise HTTPException(404, "no such object")  # and nothing written to the log
        found = await run_in_threadpool(
            precise_locations, archive, visit.viewer, identifier, purpose
        )
        return object_page(request, visit, object_id, precise=found, purpose=purpose)

    @router.post("/objects/{object_id:ark}/dips")
    async def request_dip(request: Request, object_id: str):
        from arkhiv.dissemination.formats import FORMATS

        visit = signed_in(request, Permission.REQUEST_DIPS)
        form = await form_of(request, visit)
        formats = [fmt for fmt in form.getlist("format") if fmt in FORMATS][:20]
        originals = form.get("originals") == "yes"
        if originals:
            visit.viewer.require(Permission.DOWNLOAD_ORIGINALS, "receive originals")
        if not formats:
            return object_page(
                request, visit, object_id, dip_error=_("Choose at least one format.")
            )
        identifier = _ark(object_id)
        with reading(archive.engine) as conn:
            if catalog_objects.get_object(conn, identifier) is None:
                raise HTTPException(404, "no such object")
        with writing(archive.engine) as conn:
            queue_dip(conn, archive, visit.viewer, identifier, formats, originals)
        return RedirectResponse("/requests", status_code=303)

    # --- requests (researchers, partners) ----------------------------------------------------

    @router.get("/requests", response_class=HTMLResponse)
    def requests_page(request: Request):
        visit = signed_in(request, Permission.REQUEST_DIPS)
        jobs = [
            job
            for job in archive.queue.list(kind=DIP_KIND, limit=5000)
            if job.payload.get("recipient") == visit.viewer.name
        ]
        rows = [
            {
                "job": job,
                "ready": job.status == "done" and dip_path(archive, job.id).is_file(),
                "removed": (
                    f"{settings.server.dip_retention_days:g}"
                    if job.status == "done" and (job.result or {}).get("removed_at")
                    else ""
                ),
                "error": (job.last_error or "").splitlines()[0] if job.status == "dead" else "",
            }
            for job in jobs
        ]
        return render(request, visit, "requests.html", rows=rows)

    # --- capture and submission ----------------------------------------------------------

    def upload_form_context() -> dict[str, Any]:
        return {
            "upload_endpoint": TUS_PREFIX + "/",
            "chunk_bytes": UPLOAD_CHUNK_BYTES,
            "object_types": _object_types(),
            "licenses": [member.value for member in License if member != License.OTHER],
            "conditions": [member.value for member in ConditionStatus],
            "today": date.today().isoformat(),
        }

    @router.get("/capture", response_class=HTMLResponse)
    def capture_page(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        return render(request, visit, "capture.html", **upload_form_context())

    async def upload_form(request: Request, visit: Visit):
        # A bag folder is thousands of files, each an upload id: more fields than the default.
        form = await request.form(max_fields=MAX_FILES_PER_SUBMISSION + 100, max_files=0)
        check_csrf(visit, request, request.headers.get("X-CSRF-Token") or form.get(CSRF_FIELD))
        return form

    async def submit_uploads(visit: Visit, form, capture_document: dict[str, Any] | None):
        if form.get("check_only"):  # the page asks before sending any file
            return JSONResponse({"ok": True})
        return await run_in_threadpool(
            _submit_uploads,
            archive,
            visit.viewer,
            _upload_ids(form),
            capture_document,
            str(form.get("submission_key", "")),
        )

    @router.post("/capture")
    async def capture_submit(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        form = await upload_form(request, visit)
        try:
            document = _capture_document(form, visit.language)
        except FormProblems as exc:
            return JSONResponse(
                {"detail": "; ".join(exc.fields.values()), "fields": exc.fields},
                status_code=422,
            )
        return await submit_uploads(visit, form, document)

    @router.get("/submit", response_class=HTMLResponse)
    def museum_page(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        return render(
            request,
            visit,
            "submit.html",
            **{**upload_form_context(), "chunk_bytes": BAG_CHUNK_BYTES},
            resubmits=request.query_params.get("resubmit", "")[:64],
        )

    @router.post("/submit")
    async def museum_submit(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        form = await upload_form(request, visit)
        return await submit_uploads(visit, form, None)

    @router.get("/submissions", response_class=HTMLResponse)
    def my_submissions(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        with reading(archive.engine) as conn:
            rows = [
                dict(row._mapping)
                for row in conn.execute(
                    select(
                        submissions_table.c.id,
                        submissions_table.c.source_name,
                        submissions_table.c.status,
                        submissions_table.c.summary,
                        submissions_table.c.object_id,
                        submissions_table.c.received_at,
                    )
                    .where(submissions_table.c.submitted_by == visit.viewer.name)
                    .order_by(submissions_table.c.received_at.desc())
                    .limit(500)
                )
            ]
            object_ids = sorted({row["object_id"] for row in rows if row["object_id"]})
            objects = [
                found
                for object_id in object_ids
                if (found := catalog_objects.get_object(conn, object_id)) is not None
            ]
        return render(request, visit, "submissions.html", rows=rows, objects=objects)

    @router.get("/submissions/{submission_id}", response_class=HTMLResponse)
    def submission_page(request: Request, submission_id: str):
        visit = signed_in(request)
        with reading(archive.engine) as conn:
            row = catalog_submissions.get(conn, submission_id[:64])
        officer = visit.viewer.may(Permission.MANAGE_PRESERVATION)
        if row is None or not (row["submitted_by"] == visit.viewer.name or officer):
            return render(request, visit, "missing.html", status=404, identifier=submission_id)
        report = row.get("report") or {}
        checks = report.get("checks") or []
        problems_by_file: dict[str, list[dict[str, Any]]] = {}
        general: list[dict[str, Any]] = []
        for check in checks:
            if check.get("outcome") in ("pass", "success", "ok"):
                continue
            if check.get("path"):
                problems_by_file.setdefault(check["path"], []).append(check)
            else:
                general.append(check)
        pending = row["status"] in ("received", "ingesting")
        return render(
            request,
            visit,
            "submission.html",
            submission=row,
            report=report,
            files=report.get("files") or [],
            problems_by_file=problems_by_file,
            general=general,
            pending=pending,
        )

    # --- the preservation officers' dashboard ---------------------------------------------

    @router.get("/officer", response_class=HTMLResponse)
    def dashboard(request: Request):
        from arkhiv.fixity.report import fixity_report

        visit = signed_in(request, Permission.MANAGE_PRESERVATION)
        with reading(archive.engine) as conn:
            report = fixity_report(conn, archive)
        status = archive.status()
        jobs = archive.queue.list(limit=30)
        return render(
            request,
            visit,
            "officer.html",
            report=report,
            archive_status=status,
            jobs=jobs,
            repairs=list(reversed(report["repairs"]))[:30],
        )

    @router.get("/officer/objects/{object_id:ark}", response_class=HTMLResponse)
    def object_history(request: Request, object_id: str):
        visit = signed_in(request, Permission.MANAGE_PRESERVATION)
        identifier = _ark(object_id)
        with reading(archive.engine) as conn:
            document = object_document(conn, identifier)
            history = catalog_events.events_for_object(conn, identifier)
        if document is None:
            return render(request, visit, "missing.html", status=404, identifier=identifier)
        return render(
            request,
            visit,
            "history.html",
            obj=document,
            history=sorted(
                ({**e, "label": _event_label(e["event_type"])} for e in history),
                key=lambda e: e["occurred_at"],
                reverse=True,
            ),
        )

    @router.get("/officer/reports/fixity.{fmt}")
    def fixity_download(request: Request, fmt: str):
        from arkhiv.fixity.report import fixity_report, to_csv, to_html

        signed_in(request, Permission.MANAGE_PRESERVATION)
        with reading(archive.engine) as conn:
            report = fixity_report(conn, archive)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        makers: dict[str, tuple[Callable[[dict[str, Any]], str], str]] = {
            "json": (lambda r: json.dumps(r, indent=2, default=str), "application/json"),
            "csv": (to_csv, "text/csv; charset=utf-8"),
            "html": (to_html, "text/html; charset=utf-8"),
        }
        if fmt not in makers:
            raise HTTPException(404, "formats: json, csv, html")
        make, media_type = makers[fmt]
        return Response(
            make(report),
            media_type=media_type,
            headers={
                "Content-Disposition": f'attachment; filename="fixity-{stamp}.{fmt}"',
                "Cache-Control": "no-store",
            },
        )

    # --- accounts ----------------------------------------------------------------------------

    def new_session(conn, username: str, token: int | None = None) -> str:
        cookie, _csrf = start_session(
            conn,
            username,
            idle=settings.web.session_idle,
            absolute=settings.web.session_max,
            token_id=token,
        )
        return cookie

    def with_session(response: Response, visit: Visit, cookie: str) -> Response:
        response.set_cookie(
            cookie_name(visit.secure),
            cookie,
            max_age=int(settings.web.session_max.total_seconds()),
            **cookie_options(visit.secure),
        )
        return response

    @router.get("/signin", response_class=HTMLResponse)
    def sign_in_page(request: Request, next: str = "/"):
        visit = visit_for(request)
        return render(request, visit, "signin.html", next=_local(next))

    @router.post("/signin", response_class=HTMLResponse)
    async def sign_in(request: Request):
        visit = visit_for(request)
        form = await form_of(request, visit)
        username = str(form.get("username", "")).strip()[:128]
        password = str(form.get("password", ""))
        token = str(form.get("token", "")).strip()
        target = _local(str(form.get("next", "/")))
        # Failures count, per address and per name at that address; a name alone gets a far
        # higher ceiling, so that nobody can lock a user out by failing in their name.
        address = client_key(request)
        keys = [(sign_in_failures, "address:" + address)]
        if username:
            keys += [
                (sign_in_failures, f"user:{username.lower()}@{address}"),
                (name_failures, "user:" + username.lower()),
            ]
        wait = max(limiter.retry_after(key) for limiter, key in keys)
        if wait:
            page = render(
                request,
                visit,
                "signin.html",
                status=429,
                next=target,
                username=username,
                error=_("Too many attempts. Try again in a minute."),
            )
            page.headers["Retry-After"] = str(int(wait) + 1)
            return page
        try:
            with writing(archive.engine) as conn:
                if token:
                    viewer = viewer_for_token(conn, settings.access, token)
                    cookie = new_session(conn, viewer.name, token_id(conn, token))
                else:
                    viewer = authenticate(conn, settings.access, username, password)
                    cookie = new_session(conn, viewer.name)
        except Unauthorized:
            for limiter, key in keys:
                limiter.hit(key)
            return render(
                request,
                visit,
                "signin.html",
                status=401,
                next=target,
                username=username,
                error=_("Wrong user name, password or token."),
            )
        return with_session(RedirectResponse(target, status_code=303), visit, cookie)

    @router.post("/signout")
    async def sign_out(request: Request):
        visit = visit_for(request)
        await form_of(request, visit)
        cookie = request.cookies.get(cookie_name(visit.secure))
        if cookie:
            with writing(archive.engine) as conn:
                end_session(conn, cookie)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(cookie_name(visit.secure), **_deletion(visit))
        return response

    def account_page(request: Request, visit: Visit, status: int = 200, **extra: Any):
        grant = settings.access.roles.get(visit.viewer.role)
        with reading(archive.engine) as conn:
            tokens = tokens_of(conn, visit.viewer.name)
        return render(
            request,
            visit,
            "account.html",
            status=status,
            permissions=[p.value for p in (grant.permissions if grant else [])],
            tokens=tokens,
            **extra,
        )

    @router.get("/account", response_class=HTMLResponse)
    def account(request: Request):
        return account_page(request, signed_in(request))

    @router.post("/account/tokens", response_class=HTMLResponse)
    async def new_token(request: Request):
        """A token for the API, shown on this one answer (the catalog keeps only its hash)."""
        visit = signed_in(request)
        form = await form_of(request, visit)
        if not visit.with_password:
            raise Forbidden("tokens are made by a person signed in with a password")
        name = str(form.get("name", "")).strip()[:128]
        days = _whole_number(str(form.get("days", "")))
        if days is None or not 1 <= days <= 3650:
            return account_page(
                request, visit, 422, token_error=_("Give a number of days from 1 to 3650.")
            )
        with writing(archive.engine) as conn:
            _made_id, token = issue_token(conn, visit.viewer.name, name, timedelta(days=days))
        return account_page(request, visit, new_token=token)

    @router.post("/account/tokens/{number}/revoke")
    async def revoke_own_token(request: Request, number: int):
        visit = signed_in(request)
        await form_of(request, visit)
        with writing(archive.engine) as conn:
            revoke_token(conn, number, owner=visit.viewer.name)
        return RedirectResponse("/account?revoked=1", status_code=303)

    @router.post("/account/password", response_class=HTMLResponse)
    async def change_password(request: Request):
        visit = signed_in(request)
        form = await form_of(request, visit)
        if not visit.with_password:
            raise Forbidden("a password is changed by a person signed in with it, not by a token")
        current = str(form.get("current", ""))
        new = str(form.get("new", ""))
        also_tokens = form.get("revoke_tokens") == "yes"
        if sign_in_failures.retry_after(f"password:{visit.viewer.name}"):
            return account_page(
                request, visit, 429, error=_("Too many attempts. Try again in a minute.")
            )
        try:
            with writing(archive.engine) as conn:
                authenticate(conn, settings.access, visit.viewer.name, current)
                set_password(conn, visit.viewer.name, new)
                if also_tokens:
                    revoke_all_tokens(conn, visit.viewer.name)
                cookie = new_session(conn, visit.viewer.name)
        except Unauthorized:
            sign_in_failures.hit(f"password:{visit.viewer.name}")
            return account_page(request, visit, 401, error=_("The current password is wrong."))
        except ArkhivError as exc:
            return account_page(request, visit, 422, error=str(exc))
        done = "/account?changed=1" + ("&tokens_revoked=1" if also_tokens else "")
        return with_session(RedirectResponse(done, status_code=303), visit, cookie)

    return router


def page_headers(tiles_url: str) -> dict[str, str]:
    """No framing (the forms cannot be clicked through a disguise), scripts from this site only;
    images may also come from the map's tile server. WebAssembly (the mesh decoders) and blob:
    workers and images are what the 3D viewer needs."""
    tiles = ""
    if tiles_url.startswith(("https://", "http://")):
        tiles = " " + "/".join(tiles_url.split("/")[:3])
    policy = (
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
        f"img-src 'self' data: blob:{tiles}; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


def render_page(
    archive: Archive, request: Request, visit: Visit, template: str, **context: Any
) -> str:
    i18n.current_language.set(visit.language)  # in this thread: the template's gettext reads it
    return _environment.get_template(template).render(
        request=request,
        visit=visit,
        who=visit.viewer,
        may=lambda name: visit.viewer.may(Permission(name)),
        csrf_field=CSRF_FIELD,
        languages=i18n.LANGUAGES,
        language=visit.language,
        archive_name=archive.settings.server.name,
        public_cell_km=f"{archive.settings.location.public_precision_km:g}",
        version=__version__,
        path=request.url.path,
        **context,
    )


def install_page_errors(app, archive: Archive) -> None:
    """Pages answer errors with pages; the API keeps its JSON answers."""
    from fastapi.exception_handlers import (
        http_exception_handler,
        request_validation_exception_handler,
    )
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    def is_page(request: Request) -> bool:
        path = request.url.path
        return not (
            path.startswith(
                ("/api/", "/oai", "/iiif", TUS_PREFIX, "/health", "/docs", "/openapi", "/static")
            )
        )

    def visit_of_or_none(request: Request) -> Visit | None:
        try:
            return visit_of(archive, request)
        except Exception:  # the catalog itself may be what failed
            return None

    def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        visit = visit_of_or_none(request) or Visit(
            anonymous(archive.settings.access), "", False, i18n.DEFAULT, False
        )
        page = render_page(archive, request, visit, "error.html", status=status, message=message)
        headers = {"Cache-Control": "no-store", **page_headers(archive.settings.web.map_tiles_url)}
        return HTMLResponse(page, status_code=status, headers=headers)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired):
        if wants_json_request(request):
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={_quote(target)}", status_code=303)

    # (status, what the page says) per error; None: the exception's own. The API's answers
    # stay as they were registered (JSON).
    page_errors: dict[type[Exception], tuple[int | None, Callable[[], str] | None]] = {
        Forbidden: (403, None),
        Unauthorized: (401, None),
        CatalogUnavailable: (503, lambda: _("The archive's catalog cannot be reached. Try later.")),
        ArkhivError: (422, None),
        RequestValidationError: (422, lambda: _("A value in the address is not valid.")),
        HTTPException: (None, None),
        StarletteHTTPException: (None, None),
    }
    api_defaults = {
        RequestValidationError: request_validation_exception_handler,
        HTTPException: http_exception_handler,
        StarletteHTTPException: http_exception_handler,
    }

    def page_aware(kind: type[Exception], status: int | None, message: Callable[[], str] | None):
        api_handler = app.exception_handlers.get(kind) or api_defaults[kind]

        async def handler(request: Request, exc: Exception):
            if is_page(request) and not wants_json_request(request):
                code = status or getattr(exc, "status_code", 500)
                visit_of_or_none(request)  # the visitor's language for the message
                text = message() if message else str(getattr(exc, "detail", None) or exc)
                return error_page(request, code, text)
            return await api_handler(request, exc)

        return handler

    for kind, (status, message) in page_errors.items():
        app.add_exception_handler(kind, page_aware(kind, status, message))


def wants_json_request(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


# --- helpers ---------------------------------------------------------------------------------


def _quote(target: str) -> str:
    from urllib.parse import quote

    return quote(target, safe="/")


def _local(target: str) -> str:
    """Only paths on this site: an open redirect after sign-in helps phishing."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:2000]


def _deletion(visit: Visit) -> dict[str, Any]:
    options = cookie_options(visit.secure)
    return {
        "path": options["path"],
        "secure": options["secure"],
        "httponly": True,
        "samesite": options["samesite"],
    }


def _event_label(uri: str) -> str:
    code = uri.rsplit("/", 1)[-1]
    try:
        return EventType(code).label
    except ValueError:
        return code


def _whole_number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 9 else None


def _map_area(text: str) -> tuple[float, float, float, float] | None:
    """The map area a visitor searched (the map's bounds, set by the page's script); a
    mangled one is ignored rather than refused: the page still answers."""
    try:
        return catalog_objects.parse_bbox(text[:100])
    except ValueError:
        return None


def _is_date_filter(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"\d{4}(-\d{2}){0,2}", value))


def _citation(view: dict[str, Any], settings) -> dict[str, str]:
    record = view["description"]
    credit = record.get("contributor") or ""
    year = str(view.get("created_at") or "")[:4]
    url = settings.identifiers.resolver.rstrip("/") + "/" + view["id"]
    parts = [
        p
        for p in (credit, f"“{view['title']}”", "3D capture", settings.server.name, year, url)
        if p
    ]
    return {"text": ". ".join(parts) + ".", "url": url}


def _capture_document(form, language: str) -> dict[str, Any]:
    """capture-metadata.json from the capture form, checked by the same model ingest uses."""

    def text(name: str) -> str | None:
        value = str(form.get(name, "")).strip()
        return value or None

    def number(name: str) -> float | None:
        value = text(name)
        if value is None:
            return None
        try:
            found = float(value)
        except ValueError:
            found = math.nan
        if not math.isfinite(found):
            # The value is not repeated: it may be a position.
            raise FormProblems({name: _("The position is not a number.")})
        return found

    heritage: dict[str, Any] = {
        "title": text("title"),
        "type": text("object_type"),
        "place_name": text("place_name"),
        "country": (text("country") or "").upper(),
    }
    for name in ("description", "type_detail", "inventory_number"):
        if text(name):
            heritage[name] = text(name)
    if text("period"):
        heritage["date"] = {"period": text("period")}
    if text("condition"):
        heritage["condition"] = {"status": text("condition")}
        if text("condition_note"):
            heritage["condition"]["note"] = text("condition_note")
    latitude, longitude = number("latitude"), number("longitude")
    if latitude is not None and longitude is not None:
        coordinates: dict[str, Any] = {
            "latitude": latitude,
            "longitude": longitude,
            "method": "device-gps",
        }
        if number("accuracy_m") is not None:
            coordinates["accuracy_m"] = number("accuracy_m")
        heritage["coordinates"] = coordinates
    publish_as = text("publish_as") or PublishAs.PSEUDONYM.value
    contributor: dict[str, Any] = {"publish_as": publish_as}
    for name in ("name", "pseudonym", "email", "organization"):
        if text(f"contributor_{name}"):
            contributor[name] = text(f"contributor_{name}")
    document = {
        "schema_version": "1.0",
        "language": language,
        "object": heritage,
        "capture": {
            "mode": text("capture_mode") or CaptureMode.PHOTOS.value,
            "captured_at": text("captured_at") or date.today().isoformat(),
        },
        "contributor": contributor,
        "rights": {"license": text("license")},
        "permission": {
            "statement": text("permission_statement"),
            "granted_by": text("permission_granted_by"),
        },
    }
    try:
        CaptureMetadata.model_validate(document)
    except ValidationError as exc:
        raise FormProblems(_form_fields(exc)) from None
    return document


class FormProblems(Exception):
    """What is wrong with a form, by the name of the field it concerns."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(fields.values()))
        self.fields = fields


# Where each part of capture-metadata.json comes from on the capture form.
FORM_FIELDS = {
    ("object", "title"): "title",
    ("object", "type"): "object_type",
    ("object", "place_name"): "place_name",
    ("object", "country"): "country",
    ("object", "description"): "description",
    ("object", "condition"): "condition",
    ("object", "coordinates"): "latitude",
    ("capture", "captured_at"): "captured_at",
    ("capture", "mode"): "capture_mode",
    ("contributor",): "contributor_pseudonym",
    ("rights",): "license",
    ("permission", "statement"): "permission_statement",
    ("permission", "granted_by"): "permission_granted_by",
}


def _form_fields(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in exc.errors():
        location = tuple(str(part) for part in error["loc"])
        field = next(
            (
                name
                for prefix, name in sorted(FORM_FIELDS.items(), key=lambda i: -len(i[0]))
                if location[: len(prefix)] == prefix
            ),
            "title",
        )
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing" or error.get("input") in (None, ""):
            message = _("This field is required.")
        fields.setdefault(field, message)
    return fields


def _upload_ids(form) -> list[str]:
    return [value for value in form.getlist("upload") if isinstance(value, str)][
        :MAX_FILES_PER_SUBMISSION
    ]


def _safe_relative(path: str) -> Path | None:
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if (
        not parts
        or len(parts) > 32
        or any(part == ".." or not part.isprintable() or len(part) > 255 for part in parts)
    ):
        return None
    return Path(*parts)


def _submit_uploads(
    archive: Archive,
    viewer: Viewer,
    upload_ids: list[str],
    capture_document: dict[str, Any] | None,
    submission_key: str,
) -> JSONResponse:
    """Turn finished uploads into one submission. For a capture (`capture_document` given):
    the photos or the Polycam export and the metadata from the form, bagged by Arkhiv. For a
    museum: one zipped bag, or the files of a bag folder with their relative paths.

    `submission_key` (the page's own, per form) makes a resent form safe: the first request
    claims the key, a second one made while the first runs is refused (409), and one made
    after it gets the same submission. The uploads stay until the submission exists, so a
    request that fails can be sent again."""
    if not upload_ids:
        return JSONResponse({"detail": _("No files were uploaded.")}, status_code=422)
    claim = (
        _claims(archive)
        / hashlib.sha256(f"{viewer.name}\n{submission_key or uuid.uuid4()}".encode()).hexdigest()[
            :40
        ]
    )
    try:
        claim.mkdir()
    except FileExistsError:
        made = claim / "submission"
        if made.is_file():
            return _submitted(made.read_text("ascii"), None, [])
        return JSONResponse({"detail": _("This form is being submitted already.")}, status_code=409)
    assembly = archive.settings.home / "uploads" / "assembly" / str(uuid.uuid4())
    assembly.mkdir(parents=True, mode=0o700)
    done = False
    try:
        uploads = [finished_upload(archive, upload_id, viewer.name) for upload_id in upload_ids]
        single_archive = len(uploads) == 1 and uploads[0].filename.lower().endswith(
            (".zip", ".tar", ".tar.gz", ".tgz")
        )
        if single_archive and capture_document is None:
            source, name, plain = uploads[0].path, uploads[0].filename, False
        else:
            if single_archive:
                # A Polycam (or other app's) export: unpacked safely, then described.
                try:
                    root = receive(uploads[0].path, assembly / "unpacked", archive.settings.ingest)
                except IntakeError as exc:
                    problems = [
                        p.replace(str(uploads[0].path), uploads[0].filename) for p in exc.problems
                    ]
                    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)
            else:
                root = assembly / "package"
                refused = _place(uploads, root)
                if refused:
                    return JSONResponse({"detail": refused}, status_code=422)
            if capture_document is not None:
                (root / METADATA_FILE).write_text(
                    json.dumps(capture_document, ensure_ascii=False, indent=2), "utf-8"
                )
            source, plain = root, capture_document is not None
            kind = "capture" if plain else "bag folder"
            name = f"{kind} {datetime.now(UTC):%Y-%m-%d %H:%M}"
        submission_id, job_id, problems = receive_submission(
            archive, source, viewer.name, plain=plain, source_name=name
        )
        (claim / "submission").write_text(submission_id, "ascii")
        done = True
    except UploadError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    finally:
        shutil.rmtree(assembly, ignore_errors=True)
        if done:
            for upload_id in upload_ids:
                discard(archive, upload_id)
        else:
            shutil.rmtree(claim, ignore_errors=True)
    return _submitted(submission_id, job_id, problems)


def _submitted(submission_id: str, job_id: int | None, problems: list[str]) -> JSONResponse:
    # Refused at intake or not, the submission has a page with its report.
    return JSONResponse(
        {
            "submission": submission_id,
            "job": job_id,
            "problems": problems,
            "href": f"/submissions/{submission_id}",
        },
        status_code=202,
    )


def _place(uploads: list[FinishedUpload], root: Path) -> str | None:
    """Put the uploaded files at their relative paths under `root` (hard links: no copy, and
    the uploads stay whole if the submission fails). A reason when the paths are not usable."""
    relative = [_safe_relative(str(u.metadata.get("relativePath") or u.filename)) for u in uploads]
    if any(path is None for path in relative):
        return _("A file name or folder is not allowed.")
    relative = _without_common_folder(relative)
    if len(set(relative)) != len(relative):
        return _("Two files have the same name.")
    folders = {parent for path in relative for parent in path.parents}
    if any(path in folders for path in relative):
        return _("A file has the same name as a folder.")
    root.mkdir()
    for upload, path in zip(uploads, relative, strict=True):
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(upload.path, target)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(upload.path, target)
    return None


def _claims(archive: Archive) -> Path:
    folder = archive.settings.home / "uploads" / "claims"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def sweep_assemblies(archive: Archive, older_than_s: float = 24 * 3600) -> int:
    """Folders a crash left while files were put together into a package (they may hold a
    capture's metadata, coordinates included) and old submission claims: removed after a day."""
    removed = 0
    cutoff = time.time() - older_than_s
    for parent in ("assembly", "claims"):
        folder = archive.settings.home / "uploads" / parent
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
    return removed


def _without_common_folder(paths: list[Path]) -> list[Path]:
    """A bag folder picked in the browser arrives as 'folder/bagit.txt', 'folder/data/…'."""
    firsts = {path.parts[0] for path in paths}
    if len(firsts) == 1 and all(len(path.parts) > 1 for path in paths):
        return [Path(*path.parts[1:]) for path in paths]
    return paths
