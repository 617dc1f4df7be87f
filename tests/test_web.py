import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from arkhiv.catalog.database import create_catalog_engine
from arkhiv.web.app import create_app
from tests.conftest import arkhiv_command, subprocess_env, zipped


def bearer(archive, role: str, name: str | None = None) -> dict[str, str]:
    """An Authorization header for a new user of `role`."""
    from arkhiv.access.viewers import create_user, issue_token
    from arkhiv.catalog.database import writing

    with writing(archive.engine) as conn:
        create_user(conn, archive.settings.access, name or f"{role}-user", role)
        _id, token = issue_token(conn, name or f"{role}-user")
    return {"Authorization": f"Bearer {token}"}


def test_health_and_status(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert client.get("/api/v1/status").status_code == 403  # stores are the officers'
        status = client.get("/api/v1/status", headers=bearer(archive, "officer")).json()
        assert len(status["stores"]) == 3
        assert status["objects"]["total"] == 0
        assert client.get("/openapi.json").json()["info"]["title"] == "Arkhiv"
        home = client.get("/", follow_redirects=False)
        assert home.status_code == 200 and "text/html" in home.headers["content-type"]
        assert client.get("/docs").status_code == 200


def test_health_reports_an_unreachable_catalog(archive):
    archive.engine.dispose()
    archive.engine = create_catalog_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(base: str, server: subprocess.Popen, errors: Path, patience_s: float):
    """Until `arkhiv serve` answers /health; returns the deadline for what the caller waits on
    next."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return deadline
        except httpx.TransportError:
            pass
        assert server.poll() is None, errors.read_text()
        assert time.monotonic() < deadline, "the server never answered"
        time.sleep(0.1)


@pytest.mark.slow
def test_serve_answers_and_its_embedded_worker_runs_jobs(archive, archive_env, tmp_path):
    port = free_port()
    log = tmp_path / "log"
    job_id = archive.queue.enqueue("ingest", "test.record", {"log": str(log)})
    officer = bearer(archive, "officer")
    output, errors = tmp_path / "serve.out", tmp_path / "serve.err"
    server = subprocess.Popen(
        arkhiv_command("serve", "--port", str(port)),
        env=subprocess_env(archive_env),
        stdout=output.open("w"),
        stderr=errors.open("w"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = wait_until_healthy(base, server, errors, 30)
        while archive.queue.get(job_id).status != "done":
            assert time.monotonic() < deadline, "the embedded worker never ran the job"
            time.sleep(0.1)
        status = httpx.get(base + "/api/v1/status", headers=officer).json()
        assert status["jobs"]["totals"]["done"] >= 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert f"http://127.0.0.1:{port}" in output.read_text()
    assert server.returncode == 0


def test_upload_a_bag_then_poll_its_outcome(archive, corpora, tmp_path, virus_database):
    from arkhiv.ingest.bagging import make_bag
    from arkhiv.jobs.worker import Worker
    from tests.test_submit import CAPTURE

    archive.settings.ingest.clamav_database = str(virus_database)
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    bag = make_bag(images, tmp_path / "bag", capture_metadata=CAPTURE)
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        client.headers.update(bearer(archive, "museum"))
        response = client.post(
            "/api/v1/submissions?filename=berlin.zip",
            content=zipped(bag, "berlin"),
            headers={"Content-Type": "application/zip"},
        )
        assert response.status_code == 202, response.text
        href = response.headers["location"]
        assert client.get(href).json()["status"] == "received"
        Worker(archive, ["ingest"], burst=True).run()
        outcome = client.get(href).json()
    assert outcome["status"] == "archived", outcome["summary"]
    assert outcome["source_name"] == "berlin.zip"
    assert outcome["public_location"]["country"] == "DE"
    assert "staging_path" not in outcome
    assert "52.518" not in str(outcome)


def test_plain_photos_are_bagged_by_arkhiv(archive, corpora, virus_database):
    from arkhiv.jobs.worker import Worker

    archive.settings.ingest.clamav_database = str(virus_database)
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        client.headers.update(bearer(archive, "museum"))
        response = client.post("/api/v1/submissions?plain=true", content=zipped(images, "photos"))
        assert response.status_code == 202, response.text
        Worker(archive, ["ingest"], burst=True).run()
        outcome = client.get(response.headers["location"]).json()
    # bagged and checked; rejected only because plain photos carry no capture metadata
    assert outcome["report"]["bag"]["version"] == "1.0"
    assert {f["path"] for f in outcome["report"]["files"]} == {
        "data/01.jpg",
        "data/02.jpg",
        "data/03.jpg",
    }
    failed = {c["name"] for c in outcome["report"]["checks"] if c["outcome"] == "fail"}
    assert failed == {"capture-metadata.missing"}


def test_oversized_hostile_and_missing(archive, tmp_path):
    import io
    import zipfile

    archive.settings.ingest.max_package_bytes = 1000
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        assert client.post("/api/v1/submissions", content=b"x").status_code == 403  # anonymous
        client.headers.update(bearer(archive, "museum"))
        assert client.post("/api/v1/submissions", content=b"x" * 5000).status_code == 413
        assert client.post("/api/v1/submissions", content=b"").status_code == 400
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as packed:
            packed.writestr("../evil.txt", "x")
        refused = client.post("/api/v1/submissions", content=buffer.getvalue())
        assert refused.status_code == 422
        assert any("evil.txt" in problem for problem in refused.json()["problems"])
        assert client.get("/api/v1/submissions/nope").status_code == 404
    assert not list((archive.settings.home / "uploads").iterdir())


def test_stale_uploads_are_removed_fresh_ones_kept(tmp_path):
    import os
    import time

    from arkhiv.web.app import STALE_UPLOAD_SECONDS, remove_stale_uploads

    old, fresh = tmp_path / "old.part", tmp_path / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"x")
    long_ago = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_uploads(tmp_path) == 1
    assert not old.exists() and fresh.exists()
    assert remove_stale_uploads(tmp_path / "missing") == 0


def test_objects_api_shows_and_edits_an_object(archive, corpora, tmp_path, virus_database):
    from urllib.parse import quote

    from arkhiv.access.viewers import create_user, issue_token
    from arkhiv.catalog.database import writing
    from arkhiv.ingest.bagging import make_bag
    from arkhiv.jobs.worker import Worker
    from tests.test_submit import CAPTURE

    archive.settings.ingest.clamav_database = str(virus_database)
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    bag = make_bag(images, tmp_path / "bag", capture_metadata=CAPTURE)
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        museum = bearer(archive, "museum")
        response = client.post("/api/v1/submissions", content=zipped(bag, "berlin"), headers=museum)
        assert response.status_code == 202, response.text
        Worker(archive, ["ingest"], burst=True).run()
        assert client.get(response.headers["location"]).status_code == 404  # not the submitter
        object_id = client.get(response.headers["location"], headers=museum).json()["object_id"]
        listed = client.get("/api/v1/objects").json()
        assert [entry["id"] for entry in listed] == [object_id]

        # The ARK in the path as is, or percent-encoded, or in its older ark:/ form.
        for path in (object_id, quote(object_id, safe=""), object_id.replace("ark:", "ark:/")):
            shown = client.get(f"/api/v1/objects/{path}")
            assert shown.status_code == 200, shown.text
            assert shown.json()["id"] == object_id
        assert shown.json()["head_version"] == 1
        assert "52.518" not in shown.text

        # The public sees the description and the files it may download, not the stores.
        assert "stores" not in shown.json() and "events" not in shown.json()
        assert {f["role"] for f in shown.json()["files"]} <= {"derivative"}

        edit = {"set": {"condition": "damaged", "period": "1861-1869"}}
        url = f"/api/v1/objects/{object_id}/description"
        assert client.patch(url, json=edit).status_code == 403  # anonymous: the public role
        with writing(archive.engine) as conn:
            create_user(conn, archive.settings.access, "olena", "officer")
            _id, token = issue_token(conn, "olena")
        officer = {"Authorization": f"Bearer {token}"}
        edited = client.patch(url, json=edit, headers=officer)
        assert edited.status_code == 200, edited.text
        assert edited.json()["version"]["version"] == 2
        after = client.get(f"/api/v1/objects/{object_id}", headers=officer).json()
        assert after["head_version"] == 2 and after["description"]["period"] == "1861-1869"
        assert after["versions"][1]["user"]["name"] == "olena"  # from the token, not the body
        assert "stores" in after and "events" in after  # officers see the whole record

        bad = client.patch(url, json={"set": {"condition": "burnt"}}, headers=officer)
        assert bad.status_code == 422 and "condition" in bad.json()["detail"]
        assert client.patch(url, json=[], headers=officer).status_code == 400
        assert client.get("/api/v1/objects/ark:99999/b3nosuchthin").status_code == 404
        assert client.get(f"/api/v1/objects/{object_id}").json()["head_version"] == 2


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_oversized_bodies_are_refused_before_anything_reads_them(archive):
    """A stranger's 300 MB JSON body to /api/v1/tokens used to be read and parsed (the server
    grew by 800 MB) before the 403. Now no route but the uploads and the submissions API reads
    more than server.max_body_bytes, whether the client declares the length or not."""
    import asyncio

    app = create_app(archive, embedded_worker=False)
    limit = archive.settings.server.max_body_bytes
    with TestClient(app) as client:
        declared = client.post(
            "/api/v1/tokens",
            content=b'{"name": "' + b"x" * limit + b'"}',
            headers={"Content-Type": "application/json"},
        )
        assert declared.status_code == 413, declared.text
        assert "server.max_body_bytes" in declared.json()["detail"]
        assert client.post("/api/v1/tokens", json={"name": "x"}).status_code == 403  # as before
        form = client.post("/signin", data={"username": "x" * (2 * limit)})
        assert form.status_code == 413

    offered, chunk = 300 * 1024**2, 64 * 1024
    sent = 0
    answers: list[dict] = []

    async def receive():
        nonlocal sent
        sent += chunk
        return {"type": "http.request", "body": b" " * chunk, "more_body": sent < offered}

    async def send(message):
        answers.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/tokens",
        "raw_path": b"/api/v1/tokens",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
        "client": ("203.0.113.5", 4000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert answers[0]["status"] == 413
    assert sent <= limit + chunk  # not 300 MB: the rest was never asked for


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_every_route_has_an_access_rule_and_the_documented_table_is_current(archive):
    """docs/access.md's route-by-role table is where a review starts: a new route without an
    entry, an entry for a route that is gone, or a stale table fails here. The rules of the
    routes that need no object are then tried as every role."""
    from arkhiv.policies.access import AccessPolicy
    from arkhiv.web.route_access import ROUTES, document_section, served_routes
    from tests.test_access_files import tokens

    app = create_app(archive, embedded_worker=False)
    served = served_routes(app)
    assert sorted(served - ROUTES.keys()) == [], "routes without an entry in route_access.py"
    assert sorted(ROUTES.keys() - served) == [], "entries for routes the app does not serve"
    documented = (Path(__file__).parent.parent / "docs" / "access.md").read_text()
    assert document_section(AccessPolicy()) in documented, (
        "docs/access.md is stale: python -m arkhiv.web.route_access docs/access.md"
    )

    policy = archive.settings.access
    roles = [role for role in policy.roles if role != policy.anonymous_role]
    headers = tokens(archive, **{f"{role}-user": role for role in roles})
    simple = [
        path
        for (method, path) in ROUTES
        if method == "GET" and "{" not in path and ROUTES[(method, path)].needs
    ]
    assert len(simple) >= 6
    with TestClient(app) as client:
        for path in simple:
            rule = ROUTES[("GET", path)]
            anonymous = client.get(path, follow_redirects=False)
            assert anonymous.status_code in (303, 401, 403), (path, anonymous.status_code)
            for role in roles:
                answer = client.get(path, headers=headers[role], follow_redirects=False)
                allowed = all(policy.allows(role, need) for need in rule.needs)
                assert (answer.status_code < 400) == allowed, (path, role, answer.status_code)
