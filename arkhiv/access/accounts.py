"""Signing in to the web pages: passwords and server-side sessions.

Passwords are kept as Argon2id hashes (argon2-cffi's defaults, raised automatically when those
defaults rise: a stored hash with weaker parameters is replaced at the next good sign-in).

A session is a random cookie value; the catalog keeps only its SHA-256, like API tokens, so a copy
of the catalog signs nobody in. A session ends when the user signs out, after `idle` without a
request, after `absolute` in any case, when the user is disabled or changes password, or when the
user's role leaves the access policy. Each session carries its own CSRF token for forms.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from datetime import datetime, timedelta
from functools import cache
from typing import NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, delete, insert, or_, select, update

from arkhiv.access.viewers import Unauthorized, Viewer
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import now
from arkhiv.catalog.tables import api_tokens, users, web_sessions
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import AccessPolicy

MIN_PASSWORD_LENGTH = 10
# Argon2 itself takes any length; the cap keeps a sign-in form from being used to make the server
# hash megabytes.
MAX_PASSWORD_LENGTH = 1024
SIGN_IN_REFUSED = "wrong user name or password"
# last_seen_at is written at most this often: a write per page view would queue every reader
# behind SQLite's one writer, and idle timeouts are counted in minutes anyway.
SESSION_TOUCH_EVERY = timedelta(minutes=1)

_hasher = PasswordHasher()


class PasswordRejected(ArkhivError):
    """A new password that does not meet the rules (too short, too long, the user name)."""


def _normalized(password: str) -> str:
    # The same password typed on two keyboards may arrive composed or decomposed.
    return unicodedata.normalize("NFKC", password)


@cache
def _dummy_hash() -> str:
    # Verified against when there is no real hash, so that an unknown user name costs as much
    # time as a known one and the answer's timing does not tell which names exist.
    return _hasher.hash(secrets.token_urlsafe(32))


def _user_row(conn: Connection, username: str):
    return conn.execute(select(users).where(users.c.username == username)).first()


def _existing_user(conn: Connection, username: str):
    user = _user_row(conn, username)
    if user is None:
        raise ArkhivError(f"no user {username}")
    return user


def check_new_password(username: str, password: str) -> None:
    """Raise PasswordRejected with the reason when `password` may not be set for `username`."""
    password = _normalized(password)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected(
            f"the password is too long: use at most {MAX_PASSWORD_LENGTH} characters"
        )
    if password.casefold() == _normalized(username).casefold():
        raise PasswordRejected("the password may not be the user name")


def set_password(conn: Connection, username: str, password: str, *, actor: str = "") -> int:
    """Store a new password for an existing user and end all of that user's sessions (whoever
    knew the old password is signed out). Returns how many sessions were ended. `actor` is who
    made the change, for the audit log (default: the user)."""
    check_new_password(username, password)
    user = _existing_user(conn, username)
    conn.execute(
        update(users)
        .where(users.c.id == user.id)
        .values(password_hash=_hasher.hash(_normalized(password)))
    )
    ended = end_all_sessions(conn, username)
    audit_log.append(
        conn, actor or username, "account.password-set", username, {"sessions_ended": ended}
    )
    return ended


def set_disabled(conn: Connection, username: str, disabled: bool, *, actor: str = "") -> int:
    """Disable (or enable again) a user. Disabling ends the user's sessions at once; API tokens
    already stop working for a disabled user. Returns how many sessions were ended."""
    user = _existing_user(conn, username)
    conn.execute(update(users).where(users.c.id == user.id).values(disabled=disabled))
    ended = end_all_sessions(conn, username) if disabled else 0
    action = "account.disabled" if disabled else "account.enabled"
    audit_log.append(conn, actor or username, action, username, {"sessions_ended": ended})
    return ended


def set_role(
    conn: Connection, policy: AccessPolicy, username: str, role: str, *, actor: str = ""
) -> str:
    """Give a user another role; returns the old one. It applies to the user's next request,
    whatever opened it (token or session): neither remembers the role it was opened with."""
    if role not in policy.roles:
        raise ArkhivError(f"no role {role!r}; the roles are {', '.join(sorted(policy.roles))}")
    user = _existing_user(conn, username)
    conn.execute(update(users).where(users.c.id == user.id).values(role=role))
    audit_log.append(
        conn, actor or username, "account.role-set", username, {"from": user.role, "to": role}
    )
    return user.role


def authenticate(conn: Connection, policy: AccessPolicy, username: str, password: str) -> Viewer:
    """The viewer for a user name and password, or Unauthorized with one message whatever was
    wrong, so that a sign-in form does not tell which user names exist.

    Give a write transaction: a hash made with weaker parameters than today's is replaced."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Unauthorized(SIGN_IN_REFUSED)
    password = _normalized(password)
    user = _user_row(conn, username)
    stored = user.password_hash if user is not None else None
    try:
        _hasher.verify(stored or _dummy_hash(), password)
        matched = stored is not None
    except (VerificationError, InvalidHashError):
        matched = False
    if not matched or user.disabled or user.role not in policy.roles:
        raise Unauthorized(SIGN_IN_REFUSED)
    if _hasher.check_needs_rehash(stored):
        conn.execute(
            update(users).where(users.c.id == user.id).values(password_hash=_hasher.hash(password))
        )
    return Viewer(user.username, user.role, policy)


class OpenSession(NamedTuple):
    viewer: Viewer
    csrf: str
    # Opened by signing in with an API token, not a password: such a session may not make
    # tokens nor change the password, or a leaked token could outlive its revocation.
    by_token: bool


def _session_hash(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode()).hexdigest()


def start_session(
    conn: Connection,
    username: str,
    *,
    idle: timedelta,
    absolute: timedelta,
    token_id: int | None = None,
) -> tuple[str, str]:
    """Open a session for a user who has just signed in: (cookie value, CSRF token). The cookie
    value is not stored and cannot be recovered. The session lasts `absolute` at most, and no
    longer than the API token it was opened with (`token_id`), if any. `idle`
    is only checked for sense here: `session_viewer` applies it on every request, so that a
    changed setting applies to sessions already open."""
    if idle <= timedelta(0) or absolute <= timedelta(0):
        raise ArkhivError("session lifetimes must be positive")
    user = _existing_user(conn, username)
    if user.disabled:
        raise Unauthorized(SIGN_IN_REFUSED)
    cookie_value = secrets.token_urlsafe(32)
    csrf_token = secrets.token_urlsafe(32)
    at = now(conn)
    conn.execute(
        insert(web_sessions).values(
            session_hash=_session_hash(cookie_value),
            user_id=user.id,
            csrf_token=csrf_token,
            created_at=at,
            last_seen_at=at,
            expires_at=at + absolute,
            token_id=token_id,
        )
    )
    audit_log.append(conn, username, "account.signed-in", username)
    return cookie_value, csrf_token


def session_viewer(
    conn: Connection, policy: AccessPolicy, cookie_value: str | None, *, idle: timedelta
) -> OpenSession | None:
    """The open session of a session cookie (viewer, CSRF token, whether a token opened it), or
    None when the session is
    unknown, ended, expired (idle or absolute), its user disabled or its role no longer in the
    policy. Reads only: record the request with `session_touch_due` and `touch_session`."""
    if not cookie_value:
        return None
    row = conn.execute(
        select(
            web_sessions,
            users.c.username,
            users.c.role,
            users.c.disabled,
            api_tokens.c.revoked_at.label("token_revoked_at"),
            api_tokens.c.expires_at.label("token_expires_at"),
        )
        .join(users, users.c.id == web_sessions.c.user_id)
        .outerjoin(api_tokens, api_tokens.c.id == web_sessions.c.token_id)
        .where(web_sessions.c.session_hash == _session_hash(cookie_value))
    ).first()
    if row is None or row.revoked_at is not None or row.disabled:
        return None
    at: datetime = now(conn)
    if row.expires_at <= at or row.last_seen_at + idle <= at:
        return None
    if row.token_id is not None and (
        row.token_revoked_at is not None
        or (row.token_expires_at is not None and row.token_expires_at <= at)
    ):
        return None
    if row.role not in policy.roles:
        return None
    return OpenSession(
        Viewer(row.username, row.role, policy), row.csrf_token, row.token_id is not None
    )


def session_touch_due(conn: Connection, cookie_value: str) -> bool:
    """Whether this request should be recorded as the session's last activity: checked in the
    read transaction so that most requests write nothing."""
    last = conn.execute(
        select(web_sessions.c.last_seen_at).where(
            web_sessions.c.session_hash == _session_hash(cookie_value)
        )
    ).scalar()
    return last is not None and last < now(conn) - SESSION_TOUCH_EVERY


def touch_session(conn: Connection, cookie_value: str) -> None:
    """Record activity on a session (keeps it from idling out), at most once a minute."""
    at = now(conn)
    conn.execute(
        update(web_sessions)
        .where(
            web_sessions.c.session_hash == _session_hash(cookie_value),
            web_sessions.c.revoked_at.is_(None),
            web_sessions.c.last_seen_at < at - SESSION_TOUCH_EVERY,
        )
        .values(last_seen_at=at)
    )


def end_session(conn: Connection, cookie_value: str) -> bool:
    """Sign out: True when a session still open was ended."""
    result = conn.execute(
        update(web_sessions)
        .where(
            web_sessions.c.session_hash == _session_hash(cookie_value),
            web_sessions.c.revoked_at.is_(None),
        )
        .values(revoked_at=now(conn))
    )
    return result.rowcount > 0


def end_all_sessions(conn: Connection, username: str) -> int:
    """End every open session of a user (password changed, user disabled, "sign out
    everywhere"); returns how many were open."""
    user_ids = select(users.c.id).where(users.c.username == username).scalar_subquery()
    result = conn.execute(
        update(web_sessions)
        .where(web_sessions.c.user_id == user_ids, web_sessions.c.revoked_at.is_(None))
        .values(revoked_at=now(conn))
    )
    return result.rowcount


def prune_sessions(conn: Connection, *, idle: timedelta) -> int:
    """Delete sessions that can no longer be used (ended, expired or idle); returns how many."""
    at = now(conn)
    result = conn.execute(
        delete(web_sessions).where(
            or_(
                web_sessions.c.revoked_at.is_not(None),
                web_sessions.c.expires_at <= at,
                web_sessions.c.last_seen_at <= at - idle,
            )
        )
    )
    return result.rowcount
