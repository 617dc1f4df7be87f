"""The location leak test. Two objects hold precise locations: GPS-tagged photos (9 Nikon
JPEGs, a Nokia JPEG, an iPhone HEIC) and a model whose texture is one of those photos, each with
the site's coordinates in its capture metadata. Every output a visitor or a researcher can ask
for — API JSON, file downloads, OAI-PMH, IIIF, every export format, every level of detail,
print files, the DIP zip with everything in it — is searched for those coordinates (decimal
degrees to 3+ decimals, EXIF rationals, XMP): none may carry them. A trusted partner gets them,
and each such access is in the audit log."""

from __future__ import annotations

import copy
import io
import shutil
import zipfile

import pytest
from starlette.testclient import TestClient

from arkhiv.access.disclosure import coordinate_traces
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from arkhiv.web.app import create_app
from tests.test_access import gps_of
from tests.test_access_files import tokens
from tests.test_submit import CAPTURE, env, submit

__all__ = ["env"]

SITE = (49.8397123, 24.0297456)  # the capture metadata's coordinates (made up, Lviv)
LEVELS = ("thumb", "low", "medium", "high")


@pytest.fixture
def archived(archive, env, corpora, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(corpora / "photos-exif", photos, ignore=shutil.ignore_patterns("*.rst"))
    points = [p for p in (gps_of(path) for path in sorted(photos.iterdir())) if p]
    assert len(points) >= 11
    capture = copy.deepcopy(CAPTURE)
    capture["object"]["coordinates"] = {"latitude": SITE[0], "longitude": SITE[1]}
    code, report = submit(make_bag(photos, tmp_path / "bag-photos", capture_metadata=capture), env)
    assert code == 0, report
    photo_object = report["object_id"]

    upload = tmp_path / "wall"
    upload.mkdir()
    shutil.copyfile(corpora / "photos-exif" / "DSCN0010.jpg", upload / "wall.jpg")
    (upload / "wall.mtl").write_text("newmtl wall\nKd 1 1 1\nmap_Kd wall.jpg\n")
    rows = [f"v {x} {y} {0.1 * ((x * 7 + y * 3) % 5)}" for y in range(8) for x in range(8)]
    uvs = [f"vt {x / 7} {y / 7}" for y in range(8) for x in range(8)]
    faces = []
    for y in range(7):
        for x in range(7):
            a = y * 8 + x + 1
            faces += [
                f"f {a}/{a} {a + 1}/{a + 1} {a + 9}/{a + 9}",
                f"f {a}/{a} {a + 9}/{a + 9} {a + 8}/{a + 8}",
            ]
    (upload / "wall.obj").write_text(
        "mtllib wall.mtl\n" + "\n".join(rows + uvs + ["usemtl wall"] + faces) + "\n"
    )
    capture = copy.deepcopy(capture)
    capture["capture"]["mode"] = "mesh"
    capture["object"]["title"] = "Carved wall"
    code, report = submit(make_bag(upload, tmp_path / "bag-wall", capture_metadata=capture), env)
    assert code == 0, report
    model_object = report["object_id"]
    Worker(archive, ["reconstruct"], burst=True).run()
    return photo_object, model_object, [*points, SITE]


# The catalogs play no part in what leaves (tests/test_access*.py run on both); one is enough.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_no_public_or_researcher_output_gives_the_site_away(archive, archived):
    photo_object, model_object, points = archived
    headers = tokens(archive, rena="researcher", pat="partner")
    searched = []

    def clean(response, what: str) -> None:
        assert response.status_code < 500, (what, response.text[:200])
        searched.append(what)
        clean_bytes(response.content, what)

    def clean_bytes(data: bytes, what: str) -> None:
        found = coordinate_traces(data, points)
        assert found == [], (what, found)
        # Any ZIP, whatever it is served as (3MF, USDZ, a DIP and the ZIPs inside it): every
        # entry is searched too.
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as bundle:
                for name in bundle.namelist():
                    assert "database.db" not in name and "/sparse/" not in name, (what, name)
                    searched.append(f"{what}:{name}")
                    clean_bytes(bundle.read(name), f"{what}:{name}")

    with TestClient(create_app(archive, embedded_worker=False)) as client:
        for who, header in (("public", {}), ("researcher", headers["researcher"])):

            def get(url, header=header, **arguments):
                return client.get(url, headers=header, **arguments)

            clean(get("/api/v1/objects"), f"{who} list")
            clean(get("/"), f"{who} catalogue page")
            clean(get("/", params={"q": "Carved"}), f"{who} search page")
            for object_id in (photo_object, model_object):
                shown = get(f"/api/v1/objects/{object_id}")
                clean(shown, f"{who} object")
                clean(get(f"/objects/{object_id}"), f"{who} object page")
                clean(get(f"/api/v1/objects/{object_id}/location"), f"{who} location")
                for entry in shown.json()["files"]:
                    clean(
                        get(f"/api/v1/objects/{object_id}/files/{entry['logical_path']}"),
                        entry["logical_path"],
                    )
                for path in (
                    "package/data/DSCN0010.jpg",
                    "package/data/IMG_5195.HEIC",
                    "package/capture-metadata.json",
                    "metadata/premis.xml",
                    "metadata/sealed-locations.json",
                    "metadata/ingest-report.json",
                ):
                    refused = get(f"/api/v1/objects/{object_id}/files/{path}")
                    clean(refused, f"{who} {path}")
                for verb in ("oai_dc", "edm"):
                    clean(
                        get(
                            "/oai",
                            params={
                                "verb": "GetRecord",
                                "identifier": object_id,
                                "metadataPrefix": verb,
                            },
                        ),
                        f"oai {verb}",
                    )
            for verb in ("oai_dc", "edm"):
                clean(
                    get("/oai", params={"verb": "ListRecords", "metadataPrefix": verb}), "oai list"
                )
            clean(get(f"/iiif/{model_object}/manifest"), f"{who} iiif")
            for fmt in [f["name"] for f in get("/api/v1/formats").json() if "mesh" in f["masters"]]:
                clean(get(f"/api/v1/objects/{model_object}/export/{fmt}"), f"{who} export {fmt}")
            for level in LEVELS:
                for compression in ("none", "draco", "meshopt"):
                    clean(
                        get(
                            f"/api/v1/objects/{model_object}/lod/{level}",
                            params={"compression": compression},
                        ),
                        f"lod {level} {compression}",
                    )
            # 10 mm: the print's vertex numbers (3MF writes them as text) stay below 11, where
            # no coordinate here lies (the smallest is 11.879), so a match is a leak, not chance.
            for fmt in ("stl", "3mf"):
                clean(
                    get(
                        f"/api/v1/objects/{model_object}/print",
                        params={"size_mm": 10, "format": fmt, "solidify_mm": 0.5},
                    ),
                    f"print {fmt}",
                )

        # The researcher's DIP, with everything in it.
        asked = client.post(
            f"/api/v1/objects/{model_object}/dips",
            json={
                "formats": [
                    "glb",
                    "gltf",
                    "obj",
                    "ply",
                    "stl",
                    "dae",
                    "3mf",
                    "usdz",
                    "x3d",
                    "fbx",
                    "off",
                ]
            },
            headers=headers["researcher"],
        )
        assert asked.status_code == 202, asked.text
        Worker(archive, ["derive"], burst=True).run()
        status = client.get(asked.json()["status"], headers=headers["researcher"]).json()
        assert status["status"] == "done", status
        dip = client.get(status["download"], headers=headers["researcher"])
        assert dip.status_code == 200
        clean(dip, "researcher DIP")
        assert client.get(status["download"]).status_code == 404  # someone else's request

        # The trusted partner does get the site, and the log says so.
        precise = client.get(
            f"/api/v1/objects/{photo_object}/location",
            params={"precise": "true", "purpose": "damage assessment"},
            headers=headers["partner"],
        )
        assert coordinate_traces(precise.content, [SITE])
        original = client.get(
            f"/api/v1/objects/{photo_object}/files/package/data/DSCN0010.jpg",
            headers=headers["partner"],
        )
        assert coordinate_traces(original.content, points)
    with reading(archive.engine) as conn:
        logged = [(e["actor"], e["action"]) for e in audit_log.entries(conn)]
    assert ("pat", "precise-location.disclosed") in logged
    assert ("pat", "precise-location.file-served") in logged
    assert not [entry for entry in logged if entry[0] in ("rena", "anonymous")]
    assert len(searched) > 100
    # The containers were opened: the 3MF's model part, the USDZ's layer and the DIP's inside.
    assert any(entry.startswith("public export 3mf:") for entry in searched)
    assert any(entry.startswith("researcher export usdz:") for entry in searched)
    assert any(entry.startswith("researcher DIP:") and "3mf:" in entry for entry in searched)
