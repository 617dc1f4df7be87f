"""Web sign-in: passwords, server-side sessions, the 0004 migration and the request guards.
Catalog tests run on SQLite and PostgreSQL; time is moved by editing rows, never by sleeping."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import inspect, select, update
from starlette.requests import Request

from arkhiv.access.accounts import (
    SIGN_IN_REFUSED,
    PasswordRejected,
    authenticate,
    end_all_sessions,
    end_session,
    prune_sessions,
    session_touch_due,
    session_viewer,
    set_disabled,
    set_password,
    start_session,
    touch_session,
)
from arkhiv.access.viewers import Unauthorized, create_user
from arkhiv.catalog import migrate
from arkhiv.catalog.database import create_catalog_engine, reading, writing
from arkhiv.catalog.tables import metadata, users, web_sessions
from arkhiv.config import WebSettings
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import AccessPolicy
from arkhiv.web.security import (
    RateLimiter,
    client_key,
    cookie_name,
    cookie_options,
    cookies_secure,
    csrf_matches,
)
from tests.conftest import arkhiv_command, subprocess_env

PASSWORD = "correct horse battery staple"
IDLE = timedelta(hours=2)
ABSOLUTE = timedelta(days=7)


def _add(conn, policy, username, role="researcher", password: str | None = PASSWORD) -> None:
    create_user(conn, policy, username, role)
    if password is not None:
        set_password(conn, username, password)


def _stored_hash(archive, username: str) -> str | None:
    with reading(archive.engine) as conn:
        return conn.execute(
            select(users.c.password_hash).where(users.c.username == username)
        ).scalar_one()


def _move_session(archive, cookie: str, **back: timedelta) -> None:
    """Make a session look older: each column named goes back by the given time."""
    cookie_hash = hashlib.sha256(cookie.encode()).hexdigest()
    with writing(archive.engine) as conn:
        row = conn.execute(
            select(web_sessions).where(web_sessions.c.session_hash == cookie_hash)
        ).one()
        conn.execute(
            update(web_sessions)
            .where(web_sessions.c.id == row.id)
            .values({column: getattr(row, column) - amount for column, amount in back.items()})
        )


# Passwords ------------------------------------------------------------------------------------


def test_passwords_are_kept_as_argon2id_hashes_only(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        cookie, _csrf = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
    stored = _stored_hash(archive, "olena")
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, PASSWORD)
    # Neither the password nor the session cookie is anywhere in the catalog.
    with reading(archive.engine) as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                assert PASSWORD not in repr(row), table.name
                assert cookie not in repr(row), table.name


def test_every_refused_sign_in_reads_the_same(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena", "partner")
        _add(conn, policy, "tokens-only", password=None)
        _add(conn, policy, "gone")
        set_disabled(conn, "gone", True)
        viewer = authenticate(conn, policy, "olena", PASSWORD)
    assert (viewer.name, viewer.role) == ("olena", "partner")

    attempts = [
        ("olena", PASSWORD + "!"),
        ("olena", ""),
        ("olena", "x" * 5000),
        ("nobody", PASSWORD),
        ("tokens-only", PASSWORD),
        ("tokens-only", ""),
        ("gone", PASSWORD),
    ]
    for username, password in attempts:
        with writing(archive.engine) as conn, pytest.raises(Unauthorized) as refused:
            authenticate(conn, policy, username, password)
        assert str(refused.value) == SIGN_IN_REFUSED, (username, password)

    without_partners = AccessPolicy(
        roles={name: grant for name, grant in policy.roles.items() if name != "partner"}
    )
    with writing(archive.engine) as conn, pytest.raises(Unauthorized, match=SIGN_IN_REFUSED):
        authenticate(conn, without_partners, "olena", PASSWORD)


def test_weak_passwords_are_refused_with_the_reason(archive):
    policy = archive.settings.access
    refusals = [
        ("short pw", "too short"),
        ("x" * 1025, "too long"),
        ("Olena.Koval", "may not be the user name"),
    ]
    with writing(archive.engine) as conn:
        create_user(conn, policy, "olena.koval", "researcher")
    for password, reason in refusals:
        with writing(archive.engine) as conn, pytest.raises(PasswordRejected, match=reason):
            set_password(conn, "olena.koval", password)
    assert _stored_hash(archive, "olena.koval") is None
    with writing(archive.engine) as conn, pytest.raises(ArkhivError, match="no user nobody"):
        set_password(conn, "nobody", PASSWORD)
    with writing(archive.engine) as conn:
        set_password(conn, "olena.koval", "x" * 1024)  # the longest allowed


def test_a_hash_with_weaker_parameters_is_replaced_at_sign_in(archive):
    policy = archive.settings.access
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    with writing(archive.engine) as conn:
        create_user(conn, policy, "olena", "researcher")
        conn.execute(update(users).where(users.c.username == "olena").values(password_hash=weak))
        authenticate(conn, policy, "olena", PASSWORD)
    stronger = _stored_hash(archive, "olena")
    assert stronger != weak and not PasswordHasher().check_needs_rehash(stronger)
    with writing(archive.engine) as conn:
        assert authenticate(conn, policy, "olena", PASSWORD).name == "olena"


# Sessions -------------------------------------------------------------------------------------


def test_sessions_end_after_idle_time_and_after_their_lifetime(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        cookie, csrf = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
        other_cookie, other_csrf = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
    assert len(cookie) >= 43 and cookie != other_cookie and csrf != other_csrf

    with reading(archive.engine) as conn:
        viewer, session_csrf, _by_token = session_viewer(conn, policy, cookie, idle=IDLE)
        assert (viewer.name, viewer.role, session_csrf) == ("olena", "researcher", csrf)
        assert session_viewer(conn, policy, "not-a-session", idle=IDLE) is None
        assert session_viewer(conn, policy, None, idle=IDLE) is None
        assert session_viewer(conn, policy, "", idle=IDLE) is None

    _move_session(archive, cookie, last_seen_at=IDLE + timedelta(seconds=1))
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is None
        # A longer idle setting applies to sessions already open.
        assert session_viewer(conn, policy, cookie, idle=IDLE * 2) is not None

    # Active all along, but past its lifetime:
    _move_session(
        archive, other_cookie, created_at=ABSOLUTE, expires_at=ABSOLUTE - timedelta(seconds=1)
    )
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, other_cookie, idle=IDLE) is not None
    _move_session(archive, other_cookie, expires_at=timedelta(seconds=2))
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, other_cookie, idle=IDLE) is None

    with writing(archive.engine) as conn:
        assert prune_sessions(conn, idle=IDLE) == 2
        assert conn.execute(select(web_sessions)).all() == []


def test_activity_is_recorded_at_most_once_a_minute(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        cookie, _csrf = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
    with reading(archive.engine) as conn:
        assert not session_touch_due(conn, cookie)
        assert not session_touch_due(conn, "not-a-session")

    _move_session(archive, cookie, last_seen_at=IDLE - timedelta(minutes=1))
    with reading(archive.engine) as conn:
        assert session_touch_due(conn, cookie)
    with writing(archive.engine) as conn:
        touch_session(conn, cookie)
    with reading(archive.engine) as conn:
        assert not session_touch_due(conn, cookie)
    # Touched, the session survives what would otherwise have idled it out.
    _move_session(archive, cookie, last_seen_at=timedelta(minutes=90))
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is not None


def test_signing_out_here_or_everywhere(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        _add(conn, policy, "mykola")
        laptop, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
        phone, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
        tablet, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
        theirs, _ = start_session(conn, "mykola", idle=IDLE, absolute=ABSOLUTE)

    with writing(archive.engine) as conn:
        assert end_session(conn, laptop) is True
        assert end_session(conn, laptop) is False
        assert end_session(conn, "not-a-session") is False
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, laptop, idle=IDLE) is None
        assert session_viewer(conn, policy, phone, idle=IDLE) is not None

    with writing(archive.engine) as conn:
        assert end_all_sessions(conn, "olena") == 2
        assert end_all_sessions(conn, "nobody") == 0
        touch_session(conn, phone)  # an ended session is not revived by activity
    with reading(archive.engine) as conn:
        for cookie in (laptop, phone, tablet):
            assert session_viewer(conn, policy, cookie, idle=IDLE) is None
        assert session_viewer(conn, policy, theirs, idle=IDLE)[0].name == "mykola"


def test_a_password_change_ends_every_session_of_that_user(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        cookies = [start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)[0] for _ in "ab"]
    with writing(archive.engine) as conn:
        assert set_password(conn, "olena", "a new and longer passphrase") == 2
    with writing(archive.engine) as conn:
        for cookie in cookies:
            assert session_viewer(conn, policy, cookie, idle=IDLE) is None
        with pytest.raises(Unauthorized):
            authenticate(conn, policy, "olena", PASSWORD)
        authenticate(conn, policy, "olena", "a new and longer passphrase")


def test_disabled_users_and_vanished_roles_have_no_session(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena", "partner")
        cookie, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)

    without_partners = AccessPolicy(
        roles={name: grant for name, grant in policy.roles.items() if name != "partner"}
    )
    with reading(archive.engine) as conn:
        assert session_viewer(conn, without_partners, cookie, idle=IDLE) is None

    # Disabled behind the archive's back (no sessions ended): still no way in.
    with writing(archive.engine) as conn:
        conn.execute(update(users).where(users.c.username == "olena").values(disabled=True))
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is None
    with writing(archive.engine) as conn, pytest.raises(Unauthorized, match=SIGN_IN_REFUSED):
        start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)

    # Disabled properly, the sessions end for good: enabling again does not revive them.
    with writing(archive.engine) as conn:
        conn.execute(update(users).where(users.c.username == "olena").values(disabled=False))
        assert set_disabled(conn, "olena", True) == 1
        set_disabled(conn, "olena", False)
    with reading(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is None


def test_deleting_a_user_deletes_their_sessions(archive):
    policy = archive.settings.access
    with writing(archive.engine) as conn:
        _add(conn, policy, "olena")
        start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
    with writing(archive.engine) as conn:
        conn.execute(users.delete().where(users.c.username == "olena"))
        assert conn.execute(select(web_sessions)).all() == []


# The 0004 migration ---------------------------------------------------------------------------


def test_the_web_sessions_migration_goes_down_and_up_again(catalog_url):
    engine = create_catalog_engine(catalog_url)
    try:
        migrate.upgrade(engine, "0004")
        assert "web_sessions" in inspect(engine).get_table_names()
        migrate.downgrade(engine, "0003")
        assert migrate.current_revision(engine) == "0003"
        tables = set(inspect(engine).get_table_names())
        assert "web_sessions" not in tables and "users" in tables
        migrate.upgrade(engine)
        assert "web_sessions" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


# Rate limits, CSRF, cookies -------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_the_limit_then_says_how_long_to_wait():
    clock = _Clock()
    limiter = RateLimiter(3, 60, clock=clock)
    for _ in range(3):
        clock.now += 1
        assert limiter.hit("203.0.113.7") == 0
    wait = limiter.hit("203.0.113.7")
    assert 0 < wait <= 60
    assert wait == pytest.approx(58)  # the first hit leaves the window in 58 s
    assert limiter.hit("198.51.100.1") == 0  # other keys are counted apart

    clock.now += wait - 0.5
    assert limiter.hit("203.0.113.7") > 0  # refused attempts do not extend the wait
    clock.now += 0.5
    assert limiter.hit("203.0.113.7") == 0  # one slot freed as the first hit left the window
    assert limiter.hit("203.0.113.7") > 0


def test_rate_limiter_forgets_idle_keys_and_caps_its_memory():
    clock = _Clock()
    limiter = RateLimiter(2, 10, max_keys=100, clock=clock)
    for n in range(50):
        limiter.hit(f"user-{n}")
    assert len(limiter) == 50
    clock.now += 11
    limiter.hit("late")
    assert len(limiter) == 1
    for n in range(500):
        limiter.hit(f"flood-{n}")
    assert len(limiter) == 100


def test_rate_limiter_counts_exactly_under_threads():
    limiter = RateLimiter(50, 3600)
    allowed = []

    def attempt():
        for _ in range(20):
            allowed.append(limiter.hit("shared") == 0)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 50


def test_rate_limiter_refuses_nonsense_limits():
    with pytest.raises(ValueError):
        RateLimiter(0, 60)
    with pytest.raises(ValueError):
        RateLimiter(5, 0)


def test_csrf_tokens_must_match_exactly():
    assert csrf_matches("abc123", "abc123")
    assert not csrf_matches("abc123", "abc124")
    assert not csrf_matches("abc123", None)
    assert not csrf_matches("abc123", "")
    assert not csrf_matches("", "")
    assert not csrf_matches("abc123", "abc123é")  # not ASCII: no TypeError either


def _request(scheme: str = "http", client: tuple[str, int] | None = ("203.0.113.7", 5000)):
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": "/",
            "query_string": b"",
            "headers": [(b"host", b"archive.example.org")],
            "server": ("archive.example.org", 443 if scheme == "https" else 80),
            "client": client,
        }
    )


def test_session_cookie_name_and_attributes():
    assert cookie_name(secure=True) == "__Host-arkhiv_session"
    assert cookie_name(secure=False) == "arkhiv_session"
    assert cookie_options(True) == {
        "httponly": True,
        "samesite": "lax",
        "secure": True,
        "path": "/",
    }
    assert cookie_options(False)["secure"] is False
    assert cookies_secure(_request("https"), "auto") is True
    assert cookies_secure(_request("http"), "auto") is False
    assert cookies_secure(_request("http"), "always") is True
    assert cookies_secure(_request("https"), "never") is False


def test_clients_are_told_apart_by_address():
    assert client_key(_request()) == "203.0.113.7"
    assert client_key(_request(client=None)) == "unknown"


def test_web_settings_defaults():
    web = WebSettings()
    assert web.session_idle == timedelta(minutes=120)
    assert web.session_max == timedelta(days=7)
    assert web.secure_cookies == "auto"
    assert (web.sign_in_attempts_per_minute, web.uploads_per_hour) == (10, 2000)
    assert web.upload_bytes_per_day == 50 * 1024**3
    with pytest.raises(ValueError):
        WebSettings(secure_cookies="sometimes")


# Command line ---------------------------------------------------------------------------------


def test_passwords_from_the_command_line(archive, archive_env):
    env = subprocess_env(archive_env)
    policy = archive.settings.access

    def arkhiv(*args: str, password: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            arkhiv_command(*args), env=env, input=password, capture_output=True, text=True
        )

    added = arkhiv(
        "users", "add", "olena", "--role", "partner", "--password-stdin", password=PASSWORD
    )
    assert added.returncode == 0, added.stderr
    with writing(archive.engine) as conn:
        cookie, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
        assert authenticate(conn, policy, "olena", PASSWORD).role == "partner"

    changed = arkhiv(
        "users", "passwd", "olena", "--password-stdin", password="a brand new secret\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert "1 web session(s) ended" in changed.stdout
    with writing(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is None
        authenticate(conn, policy, "olena", "a brand new secret")
    before = _stored_hash(archive, "olena")

    short = arkhiv("users", "passwd", "olena", "--password-stdin", password="tiny\n")
    assert short.returncode == 1
    assert "too short: use at least 10 characters" in short.stderr
    assert "Traceback" not in short.stderr
    assert _stored_hash(archive, "olena") == before

    refused = arkhiv("users", "add", "mykola", "--role", "museum", "--password-stdin", password="")
    assert refused.returncode == 1 and "too short" in refused.stderr
    with reading(archive.engine) as conn:
        assert conn.execute(select(users).where(users.c.username == "mykola")).first() is None

    unknown = arkhiv("users", "passwd", "nobody", "--password-stdin", password=PASSWORD)
    assert unknown.returncode == 1 and "no user nobody" in unknown.stderr

    with writing(archive.engine) as conn:
        cookie, _ = start_session(conn, "olena", idle=IDLE, absolute=ABSOLUTE)
    disabled = arkhiv("users", "disable", "olena")
    assert disabled.returncode == 0, disabled.stderr
    with writing(archive.engine) as conn:
        assert session_viewer(conn, policy, cookie, idle=IDLE) is None
        with pytest.raises(Unauthorized):
            authenticate(conn, policy, "olena", "a brand new secret")
    assert arkhiv("users", "enable", "olena").returncode == 0
    with writing(archive.engine) as conn:
        authenticate(conn, policy, "olena", "a brand new secret")
