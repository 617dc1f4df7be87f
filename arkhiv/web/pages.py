"""The server-rendered pages: the public catalogue and object pages, the citizen capture and
museum submission pages, submissions and their reports, requests for researchers, the
preservation officers' dashboard, and sign-in.

Pages read what the API reads, through the same access rules (`object_view`,
`precise_locations`, the roles' permissions): a page never shows what the API would refuse.
Forms carry the CSRF token; uploads go through the tus endpoint (`arkhiv.web.tus`)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
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
from arkhiv.access.viewers import Forbidden, Unauthorized, Viewer, viewer_for_token
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog import events as catalog_events
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog import submissions as catalog_submissions
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import submissions as submissions_table
from arkhiv.errors import ArkhivError
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
from arkhiv.web.tus import UploadError, discard, finished_upload
from arkhiv.web.visits import ANONYMOUS_CSRF_COOKIE, CSRF_FIELD, Visit, check_csrf, visit_of

TUS_PREFIX = "/uploads"
UPLOAD_CHUNK_BYTES = 512 * 1024  # small: a phone on a bad line loses at most this much

_environment = Environment(
    loader=PackageLoader("arkhiv.web", "templates"),
    autoescape=select_autoescape(["html"]),
    extensions=["jinja2.ext.i18n"],
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.install_gettext_callables(i18n.gettext_, i18n.ngettext_, newstyle=True)
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
    sign_in_limit = RateLimiter(settings.web.sign_in_attempts_per_minute, 60)

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
        if visit.new_anonymous_csrf:
            response.set_cookie(ANONYMOUS_CSRF_COOKIE, visit.csrf, **cookie_options(visit.secure))
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
        check_csrf(visit, request, str(form.get(CSRF_FIELD, "")))
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
            if (loc := (entry.get("description") or {}).get("public_location"))
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
        has_model = any(
            f["logical_path"].endswith("derivatives/model/model.glb") for f in document["files"]
        )
        from arkhiv.dissemination.formats import describe_formats

        return render(
            request,
            visit,
            "object.html",
            obj=view,
            record=view["description"],
            files=files,
            has_model=has_model,
            formats=describe_formats() if has_model else [],
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
            for job in archive.queue.list(status=None, limit=500)
            if job.kind == DIP_KIND and job.payload.get("recipient") == visit.viewer.name
        ]
        rows = [
            {
                "job": job,
                "ready": job.status == "done" and dip_path(archive, job.id).is_file(),
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

    @router.post("/capture")
    async def capture_submit(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        form = await request.form()
        check_csrf(visit, request, request.headers.get("X-CSRF-Token") or form.get(CSRF_FIELD))
        try:
            document = _capture_document(form, visit.language)
        except ValidationError as exc:
            return JSONResponse({"detail": _field_errors(exc)}, status_code=422)
        uploads = [str(u) for u in form.getlist("upload")][:10_000]
        return await run_in_threadpool(
            _submit_uploads, archive, visit.viewer, uploads, document, "capture"
        )

    @router.get("/submit", response_class=HTMLResponse)
    def museum_page(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        return render(
            request,
            visit,
            "submit.html",
            **upload_form_context(),
            resubmits=request.query_params.get("resubmit", "")[:64],
        )

    @router.post("/submit")
    async def museum_submit(request: Request):
        visit = signed_in(request, Permission.SUBMIT)
        form = await request.form()
        check_csrf(visit, request, request.headers.get("X-CSRF-Token") or form.get(CSRF_FIELD))
        uploads = [str(u) for u in form.getlist("upload")][:100_000]
        return await run_in_threadpool(_submit_uploads, archive, visit.viewer, uploads, None, "bag")

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

    def new_session(conn, username: str) -> str:
        cookie, _csrf = start_session(
            conn, username, idle=settings.web.session_idle, absolute=settings.web.session_max
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
        wait = max(
            sign_in_limit.hit("address:" + client_key(request)),
            sign_in_limit.hit("user:" + username.lower()) if username else 0,
        )
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
                else:
                    viewer = authenticate(conn, settings.access, username, password)
                cookie = new_session(conn, viewer.name)
        except Unauthorized:
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

    @router.get("/account", response_class=HTMLResponse)
    def account(request: Request):
        visit = signed_in(request)
        grant = settings.access.roles.get(visit.viewer.role)
        return render(
            request,
            visit,
            "account.html",
            permissions=[p.value for p in (grant.permissions if grant else [])],
        )

    @router.post("/account/password", response_class=HTMLResponse)
    async def change_password(request: Request):
        visit = signed_in(request)
        form = await form_of(request, visit)
        current = str(form.get("current", ""))
        new = str(form.get("new", ""))
        grant = settings.access.roles.get(visit.viewer.role)
        permissions = [p.value for p in (grant.permissions if grant else [])]
        if sign_in_limit.hit("user:" + visit.viewer.name.lower()):
            return render(
                request,
                visit,
                "account.html",
                status=429,
                permissions=permissions,
                error=_("Too many attempts. Try again in a minute."),
            )
        try:
            with writing(archive.engine) as conn:
                authenticate(conn, settings.access, visit.viewer.name, current)
                set_password(conn, visit.viewer.name, new)
                cookie = new_session(conn, visit.viewer.name)
        except Unauthorized:
            return render(
                request,
                visit,
                "account.html",
                status=401,
                permissions=permissions,
                error=_("The current password is wrong."),
            )
        except ArkhivError as exc:
            return render(
                request, visit, "account.html", status=422, permissions=permissions, error=str(exc)
            )
        return with_session(RedirectResponse("/account?changed=1", status_code=303), visit, cookie)

    return router


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
        version=__version__,
        path=request.url.path,
        **context,
    )


def install_page_errors(app, archive: Archive) -> None:
    """Pages answer errors with pages; the API keeps its JSON answers."""
    from fastapi.exception_handlers import http_exception_handler

    def is_page(request: Request) -> bool:
        path = request.url.path
        return not (
            path.startswith(
                ("/api/", "/oai", "/iiif", TUS_PREFIX, "/health", "/docs", "/openapi", "/static")
            )
        )

    def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        visit = visit_of(archive, request)
        page = render_page(archive, request, visit, "error.html", status=status, message=message)
        return HTMLResponse(page, status_code=status, headers={"Cache-Control": "no-store"})

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired):
        if wants_json_request(request):
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={_quote(target)}", status_code=303)

    previous_forbidden = app.exception_handlers.get(Forbidden)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden):
        if is_page(request) and not wants_json_request(request):
            return error_page(request, 403, str(exc))
        return await previous_forbidden(request, exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if is_page(request) and not wants_json_request(request):
            return error_page(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _not_found(request: Request, exc: StarletteHTTPException):
        if is_page(request) and not wants_json_request(request):
            return error_page(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)


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
    latitude, longitude = text("latitude"), text("longitude")
    if latitude and longitude:
        coordinates: dict[str, Any] = {
            "latitude": float(latitude),
            "longitude": float(longitude),
            "method": "device-gps",
        }
        if text("accuracy_m"):
            coordinates["accuracy_m"] = float(text("accuracy_m"))
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
    CaptureMetadata.model_validate(document)
    return document


def _field_errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


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
    kind: str,
) -> JSONResponse:
    """Turn finished uploads into one submission. For a capture (`capture_document` given):
    the photos or the Polycam export and the metadata from the form, bagged by Arkhiv. For a
    museum: one zipped bag, or the files of a bag folder with their relative paths."""
    if not upload_ids:
        return JSONResponse({"detail": _("No files were uploaded.")}, status_code=422)
    try:
        uploads = [finished_upload(archive, upload_id, viewer.name) for upload_id in upload_ids]
    except UploadError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    assembly = archive.settings.home / "uploads" / "assembly" / str(uuid.uuid4())
    assembly.mkdir(parents=True, mode=0o700)
    try:
        single_archive = len(uploads) == 1 and uploads[0].filename.lower().endswith(
            (".zip", ".tar", ".tar.gz", ".tgz")
        )
        if single_archive and capture_document is None:
            source = uploads[0].path  # a zipped bag: ingest unpacks and checks it
            name = uploads[0].filename
            plain = False
        else:
            root = assembly / "package"
            if single_archive:
                # A Polycam (or other app's) export: unpacked safely, then described.
                root = receive(uploads[0].path, assembly / "unpacked", archive.settings.ingest)
            else:
                root.mkdir()
                relative = [
                    _safe_relative(str(u.metadata.get("relativePath") or u.filename))
                    for u in uploads
                ]
                if any(path is None for path in relative):
                    return JSONResponse(
                        {"detail": _("A file name or folder is not allowed.")}, status_code=422
                    )
                relative = _without_common_folder(relative)
                if len(set(relative)) != len(relative):
                    return JSONResponse(
                        {"detail": _("Two files have the same name.")}, status_code=422
                    )
                for upload, path in zip(uploads, relative, strict=True):
                    target = root / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(upload.path, target)  # same file system: no second copy
            if capture_document is not None:
                (root / METADATA_FILE).write_text(
                    json.dumps(capture_document, ensure_ascii=False, indent=2), "utf-8"
                )
            source = root
            name = (
                f"{kind} {datetime.now(UTC):%Y-%m-%d %H:%M}" if capture_document else "bag folder"
            )
            plain = capture_document is not None
        submission_id, job_id, problems = receive_submission(
            archive, source, viewer.name, plain=plain, source_name=name
        )
    except IntakeError as exc:
        return JSONResponse({"detail": "; ".join(exc.problems)}, status_code=422)
    finally:
        shutil.rmtree(assembly, ignore_errors=True)
        for upload_id in upload_ids:
            discard(archive, upload_id)
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


def _without_common_folder(paths: list[Path]) -> list[Path]:
    """A bag folder picked in the browser arrives as 'folder/bagit.txt', 'folder/data/…'."""
    firsts = {path.parts[0] for path in paths}
    if len(firsts) == 1 and all(len(path.parts) > 1 for path in paths):
        return [Path(*path.parts[1:]) for path in paths]
    return paths
