import signal
import socket
import subprocess
import time

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from arkhiv.catalog.database import create_catalog_engine
from arkhiv.web.app import create_app
from tests.conftest import arkhiv_command, subprocess_env


def test_health_and_status(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        status = client.get("/api/v1/status").json()
        assert len(status["stores"]) == 3
        assert status["objects"]["total"] == 0
        assert client.get("/openapi.json").json()["info"]["title"] == "Arkhiv"
        assert client.get("/", follow_redirects=False).headers["location"] == "/api/v1/status"


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


@pytest.mark.slow
def test_serve_answers_and_its_embedded_worker_runs_jobs(archive, archive_env, tmp_path):
    port = free_port()
    log = tmp_path / "log"
    job_id = archive.queue.enqueue("ingest", "test.record", {"log": str(log)})
    output, errors = tmp_path / "serve.out", tmp_path / "serve.err"
    server = subprocess.Popen(
        arkhiv_command("serve", "--port", str(port)),
        env=subprocess_env(archive_env),
        stdout=output.open("w"),
        stderr=errors.open("w"),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)
        while archive.queue.get(job_id).status != "done":
            assert time.monotonic() < deadline, "the embedded worker never ran the job"
            time.sleep(0.1)
        status = httpx.get(base + "/api/v1/status").json()
        assert status["jobs"]["totals"]["done"] >= 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert f"http://127.0.0.1:{port}" in output.read_text()
    assert server.returncode == 0
