"""The OpenAPI document is served and describes the API well enough for schemathesis to
generate requests for every operation; none of them may get a server error (5xx)."""

from __future__ import annotations

import schemathesis
import trimesh
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from arkhiv.web.app import create_app
from tests.test_access_files import tokens
from tests.test_dissemination_api import archived_model
from tests.test_submit import env

__all__ = ["env"]


def fuzz(
    app, *, headers=None, object_id=None, max_examples=25, skip=()
) -> tuple[list, int, list, list]:
    """Generated requests for every operation: (server errors, operations, operations called,
    (operation, status) answered).
    With `object_id`, every path that names an object names that one (the rest is generated),
    so the handlers behind the 404 run too."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, operations, calls, answered = [], 0, [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            if object_id and "object_id" in (case.path_parameters or {}):
                case.path_parameters["object_id"] = object_id
            response = case.call(headers=headers)
            calls.append(case.operation.label)
            answered.append((case.operation.label, response.status_code))
            if response.status_code >= 500:
                failures.append(
                    (case.method, case.formatted_path, response.status_code, response.text[:200])
                )

        check()
    return failures, operations, calls, answered


def test_no_generated_request_makes_the_server_fail(archive):
    app = create_app(archive, embedded_worker=False)
    with TestClient(app) as client:  # runs the app's start-up, as a server would
        assert client.get("/openapi.json").status_code == 200
        failures, operations, calls, _answered = fuzz(app)
    assert operations >= 10 and len(set(calls)) == operations  # every operation was called
    assert len(calls) > 5 * operations
    assert failures == []


def test_generated_requests_about_a_real_model_by_an_officer_make_no_server_error(
    archive, env, tmp_path
):
    """The same, signed in as an officer (every permission the API checks) and aimed at an
    archived model: exports, levels, prints, DIP requests, files, locations and description
    edits all run on generated values."""
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.3)
    mesh.visual.vertex_colors = [180, 120, 60, 255]
    path = tmp_path / "pebble.glb"
    mesh.export(path)
    object_id = archived_model(archive, env, tmp_path, path, "Pebble")
    headers = tokens(archive, ana="officer")["officer"]
    app = create_app(archive, embedded_worker=False)
    with TestClient(app):
        failures, operations, calls, answered = fuzz(
            app,
            headers=headers,
            object_id=object_id,
            max_examples=15,
            # It would revoke the fuzzer's own token (number 1) and leave the rest 401s; the
            # anonymous run above fuzzes it.
            skip=("DELETE /api/v1/tokens/{token_id}",),
        )
    assert len(set(calls)) == operations
    # The handlers ran on the real object: they answered with content, not only 404s.
    reached = {label for label, status in answered if "{object_id" in label and status < 300}
    assert len(reached) >= 6, sorted(reached)
    assert failures == []


def test_values_the_catalog_cannot_hold_are_refused_not_crashed_on(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        assert client.get("/api/v1/dips/9223372036854775808").status_code == 422
        assert client.get("/api/v1/objects", params={"q": "a\x00b"}).status_code in (200, 422)
        oai = client.get(
            "/oai", params={"verb": "GetRecord", "identifier": "x\x00", "metadataPrefix": "edm"}
        )
        assert oai.status_code in (200, 422)
