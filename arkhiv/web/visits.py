"""Who a request comes from, for the API and the pages alike: an API token (Authorization:
Bearer), a browser signed in with the session cookie, or nobody (the anonymous role).

A browser's cookie is sent with every request, also with ones another site makes it send, so
every state-changing request authenticated by cookie must also carry the CSRF token: the
session's own once signed in, or, before that (the sign-in form), a random one held in a
cookie and repeated in the form (double submit)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from starlette.requests import Request

from arkhiv.access.accounts import session_touch_due, session_viewer, touch_session
from arkhiv.access.viewers import Forbidden, Viewer, anonymous, viewer_for_token
from arkhiv.archive import Archive
from arkhiv.catalog.database import reading, writing
from arkhiv.web import i18n
from arkhiv.web.i18n import COOKIE as LANGUAGE_COOKIE
from arkhiv.web.i18n import choose
from arkhiv.web.security import cookie_name, cookies_secure, csrf_matches

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
ANONYMOUS_CSRF_COOKIE = "arkhiv_csrf"


def anonymous_csrf_cookie(secure: bool) -> str:
    # Over https, __Host-: no sibling subdomain nor plain-http page can plant a known token.
    return "__Host-" + ANONYMOUS_CSRF_COOKIE if secure else ANONYMOUS_CSRF_COOKIE


@dataclass(frozen=True)
class Visit:
    viewer: Viewer
    csrf: str
    by_session: bool  # signed in with the cookie (not a token): forms need the CSRF token
    language: str
    secure: bool  # the cookies this answer sets are Secure
    new_anonymous_csrf: bool = False  # the answer must set the anonymous CSRF cookie
    # A session opened by signing in with an API token: it may not make tokens nor change the
    # password (a leaked token must not be able to outlive its revocation).
    by_token: bool = False

    @property
    def signed_in(self) -> bool:
        return self.viewer.name != anonymous(self.viewer.policy).name

    @property
    def with_password(self) -> bool:
        """Signed in with a password (not a token): what making tokens and changing the
        password need."""
        return self.signed_in and self.by_session and not self.by_token


def is_secure(archive: Archive, request: Request) -> bool:
    return cookies_secure(request, archive.settings.web.secure_cookies)


def visit_of(archive: Archive, request: Request) -> Visit:
    """Cached on the request: the API dependency and the page handlers ask the same question."""
    found = getattr(request.state, "arkhiv_visit", None)
    if found is None:
        found = _identify(archive, request)
        request.state.arkhiv_visit = found
    # Here, in the thread that handles the request: messages made before the page is rendered
    # (a refused sign-in, a form's errors) are then in the visitor's language too.
    i18n.current_language.set(found.language)
    return found


def _identify(archive: Archive, request: Request) -> Visit:
    policy = archive.settings.access
    secure = is_secure(archive, request)
    language = choose(
        request.query_params.get("lang"),
        request.cookies.get(LANGUAGE_COOKIE),
        request.headers.get("accept-language"),
    )
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        with reading(archive.engine) as conn:
            viewer = viewer_for_token(conn, policy, token.strip())
        return Visit(viewer, "", False, language, secure, by_token=True)
    cookie = request.cookies.get(cookie_name(secure))
    if cookie:
        with reading(archive.engine) as conn:
            found = session_viewer(conn, policy, cookie, idle=archive.settings.web.session_idle)
            due = found is not None and session_touch_due(conn, cookie)
        if due:
            # A write only now and then: SQLite has one writer, and a read comes first.
            with writing(archive.engine) as conn:
                touch_session(conn, cookie)
        if found is not None:
            return Visit(found.viewer, found.csrf, True, language, secure, by_token=found.by_token)
    csrf = request.cookies.get(anonymous_csrf_cookie(secure))
    fresh = not csrf
    return Visit(
        anonymous(policy), csrf or secrets.token_urlsafe(32), True, language, secure, fresh
    )


def check_csrf(
    visit: Visit, request: Request, submitted: object = None, *, even_if_safe: bool = False
) -> None:
    """Refuse a state-changing request authenticated by cookie without the right token (from
    the form field, or the X-CSRF-Token header that the pages' scripts send). `even_if_safe`:
    a GET that has an effect all the same (a disclosure written to the audit log)."""
    if not visit.by_session or (request.method in SAFE_METHODS and not even_if_safe):
        return
    given = submitted if submitted is not None else request.headers.get(CSRF_HEADER)
    if not isinstance(given, str) or not csrf_matches(visit.csrf, given):
        raise Forbidden("the form has expired or did not come from this site: reload the page")
