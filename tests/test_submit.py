"""`arkhiv submit` end to end, through the command line, on both catalogs: real photos with GPS,
hostile and broken packages, duplicates, quarantine."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from arkhiv.catalog import submissions
from arkhiv.catalog.database import reading
from arkhiv.catalog.tables import metadata
from arkhiv.ingest.bagging import make_bag
from arkhiv.security.sealing import Sealed
from tests.conftest import arkhiv_command, require, subprocess_env, zipped

SIGNATURE = b"ARKHIV-TEST-SIGNATURE-" + b"e2e00001"
# Positions read from the files with ExifTool 12.57 (-n), not with Arkhiv's own reader.
BERLIN = {
    "data/01.jpg": (52.5189166666667, 13.4002944444444),
    "data/02.jpg": (52.518925, 13.4003888888889),
    "data/03.jpg": (52.5190472222222, 13.4004472222222),
}
HEIC = (39.0513444444444, -94.2887722222222)

CAPTURE = {
    "schema_version": "1.0",
    "object": {
        "title": "Rotes Rathaus, east façade",
        "type": "building",
        "place_name": "Berlin-Mitte",
        "country": "DE",
    },
    "capture": {"mode": "photos", "captured_at": "2012-03-14T10:00:00+01:00"},
    "contributor": {"pseudonym": "spree-walker", "publish_as": "pseudonym"},
    "rights": {"license": "CC-BY-4.0"},
    "permission": {"statement": "Public street, no permission needed.", "granted_by": "n/a"},
}


@pytest.fixture
def env(archive, archive_env, tmp_path):
    if shutil.which("clamscan") is None:
        require("clamav", "clamscan is not installed")
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    (signatures / "e2e.ndb").write_text(f"Arkhiv.Test.E2E:0:*:{SIGNATURE.hex()}\n")
    return subprocess_env({**archive_env, "ARKHIV_INGEST__CLAMAV_DATABASE": str(signatures)})


def submit(path: Path, env) -> tuple[int, dict]:
    result = subprocess.run(
        arkhiv_command("submit", str(path), "--wait", "--json"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def berlin_bag(corpora, destination: Path, capture=CAPTURE) -> Path:
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    return make_bag(images, destination, capture_metadata=capture)


def catalog_text(archive) -> str:
    """Every value in every catalog table, as text: where a clear coordinate would show."""
    parts = []
    with reading(archive.engine) as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def distance_km(a, b):
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371 * math.asin(math.sqrt(h))


def digits(value: float, places: int = 4) -> str:
    return f"{value:.{places}f}"[:-1]  # e.g. 52.518 for 52.5189...: what any leak would contain


def test_phone_photos_gps_is_sealed_and_only_a_coarse_cell_is_public(
    archive, env, corpora, tmp_path
):
    code, report = submit(berlin_bag(corpora, tmp_path / "berlin"), env)
    assert code == 0, report["summary"]
    assert report["status"] == "archived"
    submission_id = report["id"]

    with reading(archive.engine) as conn:
        sealed = submissions.sealed_locations_of(conn, submission_id)
    assert {row["source_path"] for row in sealed} == set(BERLIN)
    for row in sealed:
        location = archive.key.unseal(
            Sealed(row["key_id"], row["nonce"], row["ciphertext"]),
            f"{submission_id}:{row['source_path']}:{row['kind']}",
        )
        expected = BERLIN[row["source_path"]]
        assert distance_km((location["latitude"], location["longitude"]), expected) < 0.01
        assert location["kind"] in ("exif-gps", "mapillary-json", "xmp-gps")

    public = report["public_location"]
    assert public["country"] == "DE"
    assert public["cell_km"] == 25
    assert public["south"] <= BERLIN["data/01.jpg"][0] <= public["north"]
    assert public["west"] <= BERLIN["data/01.jpg"][1] <= public["east"]
    assert distance_km((public["latitude"], public["longitude"]), BERLIN["data/01.jpg"]) > 0.5

    stored = catalog_text(archive)
    shown = json.dumps(report)
    for latitude, longitude in BERLIN.values():
        for text in (digits(latitude), digits(longitude)):
            assert text not in stored, f"{text} in the catalog"
            assert text not in shown, f"{text} in the submission report"
    files = {f["path"]: f for f in report["report"]["files"]}
    assert all(files[path]["carries_location"] for path in BERLIN)
    assert files["data/01.jpg"]["format"]["mime_type"] == "image/jpeg"
    assert files["data/01.jpg"]["format"]["puid"] == "fmt/43"  # JFIF 1.01, per PRONOM v109
    assert files["data/01.jpg"]["characterization"]["properties"]["width"] == 3264
    contributor = report["report"]["metadata"]["contributor"]
    assert contributor.get("pseudonym") == "spree-walker"
    assert "email" not in contributor and "name" not in contributor

    kinds = {event["event_type"].rsplit("/", 1)[1] for event in report["events"]}
    assert {"ins", "unp", "val", "mes", "vir", "mee", "for", "enc", "ine"} <= kinds
    virus = next(e for e in report["events"] if e["event_type"].endswith("/vir"))
    assert any(agent["name"] == "ClamAV" and agent["version"] for agent in virus["agents"])
    identification = next(e for e in report["events"] if e["event_type"].endswith("/for"))
    assert any(agent["name"] == "fido" for agent in identification["agents"])


def test_museum_bag_with_dublin_core_and_heic(archive, env, corpora, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("IMG_5195.HEIC", "DSCN0010.jpg", "Canon_40D.jpg"):
        shutil.copy(corpora / "photos-exif" / name, folder / name)
    bag_info = {
        "DC-Title": "Test object",
        "DC-Type": "museum-object",
        "DC-Coverage-Spatial": "Kansas City",
        "Arkhiv-Country": "US",
        "Arkhiv-Capture-Mode": "photos",
        "DC-Date": "2021-04-11",
        "DC-Creator": "Museum photographer",
        "Arkhiv-Publish-As": "name",
        "DC-Rights": "CC0-1.0",
        "Arkhiv-Permission-Statement": "Photographed by museum staff.",
        "Arkhiv-Permission-Granted-By": "The museum",
    }
    code, report = submit(make_bag(folder, tmp_path / "bag", bag_info), env)
    assert code == 0, report["summary"]
    with reading(archive.engine) as conn:
        sealed = {r["source_path"] for r in submissions.sealed_locations_of(conn, report["id"])}
    assert sealed == {"data/IMG_5195.HEIC", "data/DSCN0010.jpg"}  # the Canon has no GPS
    heic = next(f for f in report["report"]["files"] if f["path"] == "data/IMG_5195.HEIC")
    assert heic["format"]["mime_type"] == "image/heic"
    assert heic["carries_location"]
    assert digits(HEIC[0]) not in catalog_text(archive)
    assert report["public_location"]["country"] == "US"


def test_infected_package_goes_to_quarantine_and_nothing_is_parsed(archive, env, tmp_path):
    folder = tmp_path / "capture"
    (folder / "scans").mkdir(parents=True)
    (folder / "scans" / "model.glb").write_bytes(b"glTF" + SIGNATURE + b"\0" * 64)
    (folder / "notes.txt").write_text("clean")
    code, report = submit(make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE), env)
    assert code == 1
    assert report["status"] == "rejected"
    infected = [c for c in report["report"]["checks"] if c["detail"].get("signature")]
    assert [(c["path"], c["detail"]["signature"]) for c in infected] == [
        ("data/scans/model.glb", "Arkhiv.Test.E2E.UNOFFICIAL")
    ]
    assert all("characterization" not in f for f in report["report"]["files"])  # never parsed
    assert report["report"]["metadata"] is None
    quarantine = Path(report["quarantine_path"])
    assert quarantine.is_dir() and (quarantine / "ingest-report.json").is_file()
    assert not (archive.staging_dir / report["id"]).exists()
    assert report["staging_path"] is None

    listed = subprocess.run(
        arkhiv_command("quarantine", "list", "--json"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [r["id"] for r in json.loads(listed.stdout)] == [report["id"]]
    shown = subprocess.run(
        arkhiv_command("quarantine", "show", report["id"]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Arkhiv.Test.E2E" in shown.stdout
    subprocess.run(
        arkhiv_command("quarantine", "purge", report["id"]),
        env=env,
        check=True,
        capture_output=True,
    )
    assert not quarantine.exists()
    with reading(archive.engine) as conn:
        row = submissions.get(conn, report["id"])
    assert row["status"] == "purged"
    assert row["report"]["checks"]  # the report outlives the package


def test_the_same_package_twice_is_reported_as_a_duplicate(env, corpora, tmp_path):
    bag = berlin_bag(corpora, tmp_path / "berlin")
    first_code, first = submit(bag, env)
    assert first_code == 0
    archive_zip = tmp_path / "again.zip"
    archive_zip.write_bytes(zipped(bag, "berlin"))
    code, second = submit(archive_zip, env)
    assert code == 1
    duplicate = [c for c in second["report"]["checks"] if c["name"] == "duplicate"]
    assert duplicate and first["id"] in duplicate[0]["reason"]


def test_a_glb_that_is_really_html_is_rejected_naming_the_file(env, tmp_path):
    folder = tmp_path / "capture"
    folder.mkdir()
    (folder / "model.glb").write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    code, report = submit(make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE), env)
    assert code == 1
    invalid = [c for c in report["report"]["checks"] if c["outcome"] == "fail"]
    assert any(c["path"] == "data/model.glb" and "HTML" in c["reason"] for c in invalid), invalid


def test_missing_capture_metadata_fields_are_listed_all_at_once(env, corpora, tmp_path):
    incomplete = {**CAPTURE, "object": {"type": "building"}}
    del incomplete["permission"]
    code, report = submit(berlin_bag(corpora, tmp_path / "bag", incomplete), env)
    assert code == 1
    reasons = " ".join(c["reason"] for c in report["report"]["checks"] if c["outcome"] == "fail")
    for field in ("object.title", "object.place_name", "object.country", "permission"):
        assert field in reasons


def test_path_traversal_zip_is_refused_at_intake_and_leaves_nothing(archive, env, tmp_path):
    hostile = tmp_path / "hostile.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as packed:
        packed.writestr("bag/bagit.txt", "BagIt-Version: 1.0\n")
        packed.writestr("../../escaped.txt", "gotcha")
    hostile.write_bytes(buffer.getvalue())
    code, report = submit(hostile, env)
    assert code == 1
    assert report["status"] == "rejected"
    assert "escaped.txt" in report["summary"]
    assert not (archive.staging_dir / report["id"]).exists()
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_an_invalid_conformance_bag_is_rejected_with_a_reason(env, corpora, tmp_path):
    bag = corpora / "bagit-conformance-suite" / "v1.0" / "invalid" / "bagit-with-invalid-whitespace"
    code, report = submit(bag, env)
    assert code == 1
    failures = [c for c in report["report"]["checks"] if c["outcome"] == "fail"]
    assert any(c["name"] == "bag.bagit_txt" for c in failures), failures


def test_rejecting_a_flat_zip_touches_no_other_submission(archive, env, corpora, tmp_path):
    # Received and waiting for its ingest: its staging must survive the other's rejection.
    result = subprocess.run(
        arkhiv_command("submit", str(berlin_bag(corpora, tmp_path / "berlin")), "--json"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    kept = json.loads(result.stdout)
    assert kept["status"] == "received"
    kept_staging = Path(kept["staging_path"])
    flat = tmp_path / "flat.zip"  # bag files at the zip's root: no single top folder
    bag = berlin_bag(corpora, tmp_path / "incomplete", {"schema_version": "1.0"})
    (bag / "data" / "01.jpg").write_bytes(b"changed after bagging")
    flat.write_bytes(zipped(bag))
    code, rejected = submit(flat, env)
    assert code == 1
    assert Path(rejected["quarantine_path"]).name == rejected["id"]
    assert kept_staging.is_dir() and (kept_staging / "bagit.txt").is_file()
    assert (archive.staging_dir / kept["id"]).is_dir()
