"""Files leave the archive as the asker's role allows: originals with GPS only to roles trusted
with precise locations (logged), pictures without metadata for everyone else, derivatives to
the public with HTTP Range, the archive's own metadata to officers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from arkhiv.access.disclosure import coordinate_traces
from arkhiv.access.viewers import create_user, issue_token
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading, writing
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from arkhiv.policies.access import Permission, RoleGrant
from arkhiv.web.app import create_app
from tests.test_submit import BERLIN, CAPTURE, berlin_bag, env, submit

__all__ = ["env"]

SITE = (50.4501234, 30.5234567)  # the capture metadata's precise coordinates


def tokens(archive, **roles) -> dict[str, dict[str, str]]:
    """Bearer headers for new users, one per role: {role: header}."""
    headers = {}
    with writing(archive.engine) as conn:
        for user, role in roles.items():
            create_user(conn, archive.settings.access, user, role)
            _id, token = issue_token(conn, user, actor="tests")
            headers[role] = {"Authorization": f"Bearer {token}"}
    return headers


@pytest.fixture
def client(archive):
    # A role that may download originals but is not trusted with locations: it must get
    # pictures without their GPS.
    archive.settings.access.roles["conservator"] = RoleGrant(
        permissions=[
            Permission.VIEW_PUBLIC,
            Permission.DOWNLOAD_ACCESS_COPIES,
            Permission.DOWNLOAD_ORIGINALS,
        ]
    )
    with TestClient(create_app(archive, embedded_worker=False)) as test_client:
        yield test_client


def test_originals_with_gps_by_role(archive, env, corpora, tmp_path, client):
    capture = copy.deepcopy(CAPTURE)
    capture["object"]["coordinates"] = {"latitude": SITE[0], "longitude": SITE[1]}
    code, report = submit(berlin_bag(corpora, tmp_path / "bag", capture), env)
    assert code == 0
    object_id = report["object_id"]
    headers = tokens(archive, ada="partner", bo="researcher", cy="conservator", di="officer")
    url = f"/api/v1/objects/{object_id}/files/package/data/01.jpg"
    original = (corpora / "photogrammetry/opensfm-berlin/images/01.jpg").read_bytes()
    points = [*BERLIN.values(), SITE]

    assert client.get(url).status_code == 403  # the public role has no originals
    assert client.get(url, headers=headers["researcher"]).status_code == 403
    trusted = client.get(url, headers=headers["partner"])
    assert trusted.status_code == 200 and trusted.content == original
    with reading(archive.engine) as conn:
        served = [e for e in audit_log.entries(conn) if e["action"].endswith("file-served")]
    assert [(e["actor"], e["detail"]["file"]) for e in served] == [("ada", "package/data/01.jpg")]

    cleaned = client.get(url, headers=headers["conservator"])
    assert cleaned.status_code == 200 and coordinate_traces(cleaned.content, points) == []
    assert coordinate_traces(original, points)  # the control: the original does carry them
    cleaned_file = tmp_path / "cleaned.jpg"
    cleaned_file.write_bytes(cleaned.content)
    with Image.open(cleaned_file) as after:
        before = Image.open(corpora / "photogrammetry/opensfm-berlin/images/01.jpg")
        assert np.array_equal(np.asarray(before), np.asarray(after))
    # The capture metadata names the site precisely: not for the conservator at all.
    metadata = f"/api/v1/objects/{object_id}/files/package/capture-metadata.json"
    assert client.get(metadata, headers=headers["conservator"]).status_code == 403
    full = client.get(metadata, headers=headers["partner"])
    assert full.status_code == 200 and coordinate_traces(full.content, [SITE])
    # The bag's own tag files can name the site and the contributor: as located as the rest.
    bag_info = f"/api/v1/objects/{object_id}/files/package/bag-info.txt"
    assert client.get(bag_info, headers=headers["conservator"]).status_code == 403
    assert client.get(bag_info, headers=headers["partner"]).status_code == 200

    description = client.get(f"/api/v1/objects/{object_id}/files/metadata/description.json")
    assert description.status_code == 200, description.text
    assert coordinate_traces(description.content, points) == []
    premis = f"/api/v1/objects/{object_id}/files/metadata/premis.xml"
    assert client.get(premis).status_code == 403
    assert client.get(premis, headers=headers["officer"]).status_code == 200
    missing = client.get(f"/api/v1/objects/{object_id}/files/package/data/99.jpg")
    assert missing.status_code == 404
    assert client.get(f"/iiif/{object_id}/manifest").status_code == 404  # no model yet


def test_models_for_everyone_with_ranges(archive, env, corpora, tmp_path, client):
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "bunny.glb").write_bytes(
        (corpora / "3d-models/bunny-multiformat/bunny.glb").read_bytes()
    )
    capture = copy.deepcopy(CAPTURE)
    capture["capture"]["mode"] = "mesh"
    code, report = submit(make_bag(upload, tmp_path / "bag", capture_metadata=capture), env)
    assert code == 0, report
    Worker(archive, ["reconstruct"], burst=True).run()
    url = f"/api/v1/objects/{report['object_id']}/files/derivatives/model/model.glb"
    whole = client.get(url)
    assert whole.status_code == 200 and whole.content[:4] == b"glTF"
    assert whole.headers["content-type"] == "model/gltf-binary"
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(whole.content)}"

    # The IIIF Presentation 3 manifest paints its canvas with this model.
    manifest = client.get(f"/iiif/{report['object_id']}/manifest")
    assert manifest.status_code == 200, manifest.text
    document = manifest.json()
    assert document["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert document["type"] == "Manifest" and document["label"] == {
        "none": ["Rotes Rathaus, east façade"]
    }
    assert document["rights"] == "http://creativecommons.org/licenses/by/4.0/"
    [canvas] = document["items"]
    [page] = canvas["items"]
    [painting] = page["items"]
    assert painting["motivation"] == "painting" and painting["target"] == canvas["id"]
    body = painting["body"]
    assert (body["type"], body["format"]) == ("Model", "model/gltf-binary")
    assert client.get(body["id"].removeprefix("http://testserver")).content == whole.content
    assert "navPlace" not in manifest.text and "latitude" not in manifest.text
