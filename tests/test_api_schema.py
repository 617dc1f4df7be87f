"""The OpenAPI document is served and describes the API well enough for schemathesis to
generate requests for every operation; none of them may get a server error (5xx)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from starlette.testclient import TestClient

from arkhiv.web.app import create_app


def test_no_generated_request_makes_the_server_fail(archive):
    app = create_app(archive, embedded_worker=False)
    with TestClient(app) as client:  # runs the app's start-up, as a server would
        assert client.get("/openapi.json").status_code == 200
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        failures, operations, calls = [], 0, []
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1

            @given(case=operation.as_strategy())
            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                response = case.call()
                calls.append(case.operation.label)
                if response.status_code >= 500:
                    failures.append(
                        (
                            case.method,
                            case.formatted_path,
                            response.status_code,
                            response.text[:200],
                        )
                    )

            check()
    assert operations >= 10 and len(set(calls)) == operations  # every operation was called
    assert len(calls) > 5 * operations
    assert failures == []


def test_values_the_catalog_cannot_hold_are_refused_not_crashed_on(archive):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        assert client.get("/api/v1/dips/9223372036854775808").status_code == 422
        assert client.get("/api/v1/objects", params={"q": "a\x00b"}).status_code in (200, 422)
        oai = client.get(
            "/oai", params={"verb": "GetRecord", "identifier": "x\x00", "metadataPrefix": "edm"}
        )
        assert oai.status_code in (200, 422)
