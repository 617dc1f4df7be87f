"""Who is asking: users, their roles and API tokens.

A request without a token is the access policy's anonymous role (public). A token is shown once
when it is issued; the catalog keeps only its SHA-256, so a copy of the catalog opens nothing.
Tokens can expire and be revoked; a disabled user's tokens stop working with it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, insert, or_, select, update

from arkhiv.catalog import audit_log
from arkhiv.catalog.database import now
from arkhiv.catalog.tables import api_tokens, users
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import AccessPolicy, Permission

TOKEN_PREFIX = "arkhiv_"
ANONYMOUS = "anonymous"
TOUCH_EVERY = timedelta(minutes=15)
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class Unauthorized(ArkhivError):
    """The credentials given are not valid (unknown, expired or revoked token)."""


class Forbidden(ArkhivError):
    """Valid credentials whose role does not allow this."""


@dataclass(frozen=True)
class Viewer:
    name: str  # the username, or "anonymous"
    role: str
    policy: AccessPolicy

    def may(self, permission: Permission) -> bool:
        return self.policy.allows(self.role, permission)

    def require(self, permission: Permission, what: str) -> None:
        if not self.may(permission):
            raise Forbidden(f"the {self.role} role may not {what}")


def anonymous(policy: AccessPolicy) -> Viewer:
    return Viewer(ANONYMOUS, policy.anonymous_role, policy)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(
    conn: Connection, policy: AccessPolicy, username: str, role: str, display_name: str = ""
) -> int:
    if not USERNAME.match(username) or username == ANONYMOUS:
        raise ArkhivError(f"{username!r} is not a user name (letters, digits, . _ @ -)")
    if role not in policy.roles:
        raise ArkhivError(f"no role {role!r}; the roles are {', '.join(sorted(policy.roles))}")
    if conn.execute(select(users.c.id).where(users.c.username == username)).first():
        raise ArkhivError(f"user {username} exists already")
    return conn.execute(
        insert(users)
        .values(username=username, role=role, display_name=display_name, created_at=now(conn))
        .returning(users.c.id)
    ).scalar_one()


def issue_token(
    conn: Connection,
    username: str,
    name: str = "",
    valid_for: timedelta | None = None,
    *,
    actor: str = "",
) -> tuple[int, str]:
    """(token id, the token): the token is not stored and cannot be shown again. `actor` is
    who made it, for the audit log (default: the user)."""
    user = conn.execute(select(users).where(users.c.username == username)).first()
    if user is None:
        raise ArkhivError(f"no user {username}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    at = now(conn)
    token_id = conn.execute(
        insert(api_tokens)
        .values(
            user_id=user.id,
            name=name,
            token_hash=_hash(token),
            created_at=at,
            expires_at=at + valid_for if valid_for else None,
        )
        .returning(api_tokens.c.id)
    ).scalar_one()
    audit_log.append(conn, actor or username, "token.issued", str(token_id), {"name": name})
    return token_id, token


def revoke_token(
    conn: Connection, token_id: int, owner: str | None = None, *, actor: str = ""
) -> bool:
    """Revoke a token still valid; with `owner`, only that user's (False for anyone else's,
    which is not told apart from no token at all). `actor` is who did it, for the audit log
    (default: the owner)."""
    query = update(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
    if owner is not None:
        query = query.where(
            api_tokens.c.user_id
            == select(users.c.id).where(users.c.username == owner).scalar_subquery()
        )
    revoked = conn.execute(query.values(revoked_at=now(conn))).rowcount > 0
    if revoked:
        audit_log.append(conn, actor or owner or "", "token.revoked", str(token_id), {})
    return revoked


def revoke_all_tokens(conn: Connection, username: str, *, actor: str = "") -> int:
    """Revoke every token of a user still valid (a password changed after a suspected leak);
    returns how many. `actor` is who did it, for the audit log (default: the user)."""
    user_ids = select(users.c.id).where(users.c.username == username).scalar_subquery()
    revoked = conn.execute(
        update(api_tokens)
        .where(api_tokens.c.user_id == user_ids, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now(conn))
    ).rowcount
    if revoked:
        audit_log.append(
            conn, actor or username, "token.revoked-all", username, {"tokens": revoked}
        )
    return revoked


def tokens_of(conn: Connection, username: str) -> list[dict]:
    """A user's tokens, newest first, as they may be shown: never the token itself (the
    catalog does not have it)."""
    query = (
        select(
            api_tokens.c.id,
            api_tokens.c.name,
            api_tokens.c.created_at,
            api_tokens.c.expires_at,
            api_tokens.c.last_used_at,
            api_tokens.c.revoked_at,
        )
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(users.c.username == username)
        .order_by(api_tokens.c.id.desc())
    )
    at = now(conn)
    return [
        {
            **row._mapping,
            "valid": row.revoked_at is None and (row.expires_at is None or row.expires_at > at),
        }
        for row in conn.execute(query)
    ]


def viewer_for_token(conn: Connection, policy: AccessPolicy, token: str | None) -> Viewer:
    """The viewer a token stands for; anonymous without one; Unauthorized for a bad one (an
    invalid token is never quietly treated as anonymous: the caller meant to be someone)."""
    if not token:
        return anonymous(policy)
    row = conn.execute(
        select(api_tokens, users.c.username, users.c.role, users.c.disabled)
        .join(users, users.c.id == api_tokens.c.user_id)
        .where(api_tokens.c.token_hash == _hash(token))
    ).first()
    at: datetime = now(conn)
    if row is None or row.revoked_at is not None or row.disabled:
        raise Unauthorized("the token is not valid")
    if row.expires_at is not None and row.expires_at <= at:
        raise Unauthorized("the token has expired")
    if row.role not in policy.roles:
        raise Unauthorized(f"the token's role {row.role!r} is no longer in the access policy")
    return Viewer(row.username, row.role, policy)


def token_id(conn: Connection, token: str) -> int | None:
    return conn.execute(
        select(api_tokens.c.id).where(api_tokens.c.token_hash == _hash(token))
    ).scalar()


def touch_due(conn: Connection, token: str) -> bool:
    """Whether the token's last use should be recorded (see `touch`): read first, so that most
    requests write nothing."""
    last = conn.execute(
        select(api_tokens.c.last_used_at).where(api_tokens.c.token_hash == _hash(token))
    ).scalar()
    return last is None or last < now(conn) - TOUCH_EVERY


def touch(conn: Connection, token: str) -> None:
    """Record when a token was last used, to the quarter hour: a write per request would
    queue every reader behind SQLite's one writer."""
    at = now(conn)
    conn.execute(
        update(api_tokens)
        .where(
            api_tokens.c.token_hash == _hash(token),
            or_(
                api_tokens.c.last_used_at.is_(None),
                api_tokens.c.last_used_at < at - TOUCH_EVERY,
            ),
        )
        .values(last_used_at=at)
    )
