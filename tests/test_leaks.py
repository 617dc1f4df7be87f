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

from arkhiv.access.accounts import set_role
from arkhiv.access.disclosure import coordinate_traces
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading, writing
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from arkhiv.web.app import create_app
from tests.test_access import gps_of
from tests.test_access_files import tokens
from tests.test_characterize_videos import encode
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
    _projected_cloud_without_crs(photos / "scan.las")
    encode(photos / "walk.mov", {"location": f"{SITE[0]:+08.4f}{SITE[1]:+09.4f}/"})
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


def _projected_cloud_without_crs(path) -> None:
    """A survey in UTM metres that declares no CRS: ingest cannot read a location from it, yet
    its numbers place the site (zone 35N, Lviv) within centimetres."""
    import laspy
    import numpy as np

    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = [0.001, 0.001, 0.001]
    header.offsets = [290000.0, 5523000.0, 290.0]
    cloud = laspy.LasData(header)
    grid = np.arange(200, dtype=np.float64)
    cloud.x = 290123.456 + grid % 10
    cloud.y = 5523456.789 + grid // 10
    cloud.z = 291.5 + grid * 0.001
    cloud.write(path)


# The catalogs play no part in what leaves (tests/test_access*.py run on both); one is enough.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_no_public_or_researcher_output_gives_the_site_away(archive, archived):
    photo_object, model_object, points = archived
    headers = tokens(archive, rena="researcher", pat="partner", ada="admin")
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
        # An administrator runs the archive, not field work: not even they get someone
        # else's package (it could hold originals), and it is not told apart from none.
        assert client.get(status["download"], headers=headers["admin"]).status_code == 404

        # The administrator may have originals but not locations: pictures come cleaned, and
        # nothing that ingest could not prove free of one (the survey in UTM without a CRS,
        # the tag files), neither as files nor in their own DIP.
        admin = headers["admin"]
        originals = [
            entry["logical_path"]
            for entry in client.get(f"/api/v1/objects/{photo_object}", headers=admin).json()[
                "files"
            ]
            if entry["logical_path"].startswith("package/")
        ]
        assert "package/data/scan.las" in originals
        for path in originals:
            got = client.get(f"/api/v1/objects/{photo_object}/files/{path}", headers=admin)
            clean(got, f"admin {path}")
            if path.endswith((".jpg", ".JPG", ".HEIC", ".jpeg", ".mov")):
                assert got.status_code == 200, (path, got.text[:200])
            else:
                assert got.status_code == 403, (path, got.status_code)
        asked = client.post(
            f"/api/v1/objects/{model_object}/dips",
            json={"formats": ["glb"], "originals": True},
            headers=admin,
        )
        assert asked.status_code == 202, asked.text
        Worker(archive, ["derive"], burst=True).run()
        status = client.get(asked.json()["status"], headers=admin).json()
        assert status["status"] == "done", status
        left_out = {entry["file"] for entry in status["result"]["left_out"]}
        assert {"package/data/wall.obj", "package/capture-metadata.json"} <= left_out
        assert status["result"]["located"] == []
        assert status["result"]["needs"] == ["request_dips", "download_originals"]
        dip = client.get(status["download"], headers=admin)
        assert dip.status_code == 200
        clean(dip, "admin DIP")
        with zipfile.ZipFile(io.BytesIO(dip.content)) as bundle:
            assert any(name.endswith("originals/data/wall.jpg") for name in bundle.namelist())

        # A partner's package holds the originals as submitted, locations and all; each
        # download is a disclosure in the log. Downgraded, the partner gets none of it.
        dana = tokens(archive, dana="partner")["partner"]
        asked = client.post(
            f"/api/v1/objects/{model_object}/dips",
            json={"formats": ["glb"], "originals": True},
            headers=dana,
        )
        Worker(archive, ["derive"], burst=True).run()
        status = client.get(asked.json()["status"], headers=dana).json()
        assert "package/data/wall.jpg" in status["result"]["located"]
        assert "precise_location" in status["result"]["needs"]
        dip = client.get(status["download"], headers=dana)
        assert dip.status_code == 200
        with zipfile.ZipFile(io.BytesIO(dip.content)) as bundle:
            [photo] = [name for name in bundle.namelist() if name.endswith("wall.jpg")]
            assert coordinate_traces(bundle.read(photo), points)  # the control: it is there
        with writing(archive.engine) as conn:
            set_role(conn, archive.settings.access, "dana", "researcher", actor="tests")
        refused = client.get(status["download"], headers=dana)
        assert refused.status_code == 403, refused.text
        since = client.get(asked.json()["status"], headers=dana).json()
        assert "result" not in since and "built for the partner role" in since["refused"]
        assert "built for the partner role" in refused.json()["detail"]
        clean(refused, "downgraded partner's DIP")
        again = client.get(
            f"/api/v1/objects/{model_object}/files/package/data/wall.jpg", headers=dana
        )
        assert again.status_code == 403  # researchers have no originals at all

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
        video = client.get(
            f"/api/v1/objects/{photo_object}/files/package/data/walk.mov",
            headers=headers["partner"],
        )
        assert coordinate_traces(video.content, [SITE])  # the control for the admin's copy
    with reading(archive.engine) as conn:
        logged = [(e["actor"], e["action"]) for e in audit_log.entries(conn)]
    assert ("pat", "precise-location.disclosed") in logged
    assert ("pat", "precise-location.file-served") in logged
    assert logged.count(("dana", "precise-location.dip-served")) == 1
    assert not [entry for entry in logged if entry[0] == "ada" and "precise" in entry[1]]
    assert not [entry for entry in logged if entry[0] in ("rena", "anonymous")]
    assert len(searched) > 100
    # The containers were opened: the 3MF's model part, the USDZ's layer and the DIP's inside.
    assert any(entry.startswith("public export 3mf:") for entry in searched)
    assert any(entry.startswith("researcher export usdz:") for entry in searched)
    assert any(entry.startswith("researcher DIP:") and "3mf:" in entry for entry in searched)
