"""Shared fixtures. Every catalog test runs twice: on SQLite and on a throwaway PostgreSQL
database created for the test and dropped after it.

PostgreSQL: ARKHIV_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
Tests that need something outside the repository (a server, a program, ../shared/corpora) call
`require(name, problem)`: locally they skip with the reason; names listed in ARKHIV_REQUIRE
(comma-separated; .ci/run sets them all) fail instead."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from arkhiv.archive import Archive
from tests.aip_checks import aip_problems

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "ARKHIV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRED = {name.strip() for name in os.environ.get("ARKHIV_REQUIRE", "").split(",") if name}
CORPORA = REPO.parent / "shared" / "corpora"
TEST_PLUGINS = '["tests.job_handlers"]'

_postgres_problem: str | None = None
_postgres_checked = False


def _postgres_unavailable() -> str | None:
    global _postgres_checked, _postgres_problem
    if not _postgres_checked:
        _postgres_checked = True
        try:
            engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 5})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            _postgres_problem = f"PostgreSQL at {POSTGRES_URL} unavailable: {exc}".splitlines()[0]
    return _postgres_problem


def require(name: str, problem: str | None) -> None:
    """Skip (locally) or fail (where ARKHIV_REQUIRE names it) when `problem` is not None."""
    if problem is None:
        return
    if name in REQUIRED:
        pytest.fail(f"{problem} (required: ARKHIV_REQUIRE includes {name})")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def corpora() -> Path:
    """../shared/corpora, read in place (never copied into the repository)."""
    require("corpora", None if CORPORA.is_dir() else f"test corpora not found at {CORPORA}")
    return CORPORA


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    require("postgresql", _postgres_unavailable())
    name = f"arkhiv_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def catalog_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def archive_env(catalog_url, tmp_path, monkeypatch, request) -> Iterator[dict[str, str]]:
    """Environment for an archive in a temporary ARKHIV_HOME on the parametrized catalog, with
    short leases and back-off so that tests run in seconds. Exported to this process and
    returned for subprocesses."""
    home = tmp_path / "home"
    env = {
        "ARKHIV_HOME": str(home),
        "ARKHIV_CATALOG__URL": catalog_url,
        "ARKHIV_JOBS__PLUGINS": TEST_PLUGINS,
        "ARKHIV_JOBS__LEASE_SECONDS": "3",
        "ARKHIV_JOBS__POLL_INTERVAL_SECONDS": "0.05",
        "ARKHIV_JOBS__BACKOFF_BASE_SECONDS": "0.2",
        "ARKHIV_JOBS__BACKOFF_MAX_SECONDS": "2",
        "ARKHIV_JOBS__MAX_ATTEMPTS": "3",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    if request.node.get_closest_marker("damages_aips"):
        return  # the test corrupts copies on purpose and checks the outcome itself
    problems = aip_problems(home, CORPORA if CORPORA.is_dir() else None)
    assert not problems, "AIPs written by this test are invalid:\n" + "\n".join(problems)


@pytest.fixture
def archive(archive_env) -> Iterator[Archive]:
    opened, _created = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def virus_database(tmp_path) -> Path:
    """A ClamAV database with one test signature (no official database is needed)."""
    import shutil

    if shutil.which("clamscan") is None:
        require("clamav", "clamscan is not installed")
    folder = tmp_path / "signatures"
    folder.mkdir()
    (folder / "test.ndb").write_text("Arkhiv.Test:0:*:" + b"ARKHIV-TEST-SIGNATURE".hex() + "\n")
    return folder


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `python -m arkhiv ...` children: the repo importable (for test
    handler plugins) and this process's ARKHIV_* settings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def zipped(folder: Path, top: str | None = None) -> bytes:
    """A zip of every file under `folder`, inside a top folder `top` or at the zip's root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as packed:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = str(path.relative_to(folder))
                packed.write(path, f"{top}/{name}" if top else name)
    return buffer.getvalue()


def arkhiv_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "arkhiv", *args]


@contextmanager
def worker_processes(
    count: int, args: list[str], env: dict[str, str], log_dir: Path
) -> Iterator[tuple[list[subprocess.Popen], list[Path]]]:
    """Start `arkhiv worker ARGS` processes; kill any still running when the block ends.
    Their logs go to files: a worker writing to a pipe nobody reads blocks once it is full."""
    logs = [log_dir / f"worker-{n}.log" for n in range(count)]
    workers = [
        subprocess.Popen(
            arkhiv_command("worker", *args),
            env=subprocess_env(env),
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        for log in logs
    ]
    try:
        yield workers, logs
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


# --- an S3 protocol server on loopback -------------------------------------------------------

S3_CREDENTIALS = {"access_key_id": "arkhiv-test", "secret_access_key": "arkhiv-test-secret"}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _s3_server(tmp_path_factory, command: list[str]) -> Iterator[str]:
    """An S3 protocol server in its own process on a free loopback port."""
    import importlib.util
    import socket
    import time

    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        require("s3", "moto and boto3 are not installed (pip install -e '.[s3,test]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [part.format(host="127.0.0.1", port=port) for part in command],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    require("s3", f"S3 server did not start: {log.read_text()[-500:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server, for the whole session. Like some S3-compatible services, it echoes the
    checksums it is sent without checking them."""
    yield from _s3_server(
        tmp_path_factory, [sys.executable, "-m", "moto.server", "-H", "{host}", "-p", "{port}"]
    )


@pytest.fixture(scope="session")
def checking_s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server refusing a put whose bytes do not match its SHA-256, as AWS does."""
    server = str(Path(__file__).with_name("checking_s3_server.py"))
    yield from _s3_server(tmp_path_factory, [sys.executable, server, "{host}", "{port}"])


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A factory of fresh buckets on the test S3 server: make(region) -> bucket name."""
    return _bucket_factory(s3_endpoint)


@pytest.fixture
def checking_s3_bucket(checking_s3_endpoint):
    return _bucket_factory(checking_s3_endpoint)


def _bucket_factory(endpoint: str):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["access_key_id"],
        aws_secret_access_key=S3_CREDENTIALS["secret_access_key"],
    )

    def make(region: str = "us-east-1") -> str:
        name = f"arkhiv-{uuid.uuid4().hex[:16]}"
        options = {}
        if region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(Bucket=name, **options)
        return name

    make.client = client
    return make


def delete_catalog(archive, catalog_url: str) -> None:
    """Remove the catalog under a running archive (SQLite files, or the PostgreSQL schema)."""
    from sqlalchemy import create_engine, text

    archive.engine.dispose()
    if catalog_url.startswith("sqlite"):
        path = Path(catalog_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        engine = create_engine(catalog_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
