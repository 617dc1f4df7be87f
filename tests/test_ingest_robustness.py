"""Regression tests for defects found in review: leaks through the report, crashes mid-way,
two workers on one submission, hostile files that break readers."""

from __future__ import annotations

import io
import json
import shutil
import threading
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select

from arkhiv.catalog import events, submissions
from arkhiv.catalog.database import reading
from arkhiv.catalog.tables import premis_events, sealed_locations
from arkhiv.errors import ArkhivError
from arkhiv.ingest import pipeline
from arkhiv.ingest.bag import validate_bag
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs import ingest
from arkhiv.jobs.ingest import process_submission, receive_submission
from tests.conftest import require
from tests.test_submit import CAPTURE

PERSONAL_BAG_INFO = {
    "DC-Title": "Chapel",
    "DC-Type": "building",
    "DC-Coverage-Spatial": "Somewhere",
    "Arkhiv-Country": "UA",
    "Arkhiv-Latitude": "48.5127",
    "Arkhiv-Longitude": "37.9712",
    "Arkhiv-Capture-Mode": "photos",
    "DC-Date": "2024-05-01",
    "DC-Creator": "Olena Realname",
    "Arkhiv-Pseudonym": "bell-keeper",
    "Arkhiv-Publish-As": "pseudonym",
    "Contact-Email": "olena@example.org",
    "DC-Rights": "CC0-1.0",
    "Arkhiv-Permission-Statement": "Allowed.",
    "Arkhiv-Permission-Granted-By": "Father Secret",
}


@pytest.fixture
def scanning(archive, tmp_path):
    if shutil.which("clamscan") is None:
        require("clamav", "clamscan is not installed")
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    (signatures / "t.ndb").write_text("Robust.Test:0:*:" + b"ROBUSTNESS-TEST-SIG".hex() + "\n")
    archive.settings.ingest.clamav_database = str(signatures)
    return archive


def staged(archive, folder: Path, **bag_args) -> str:
    bag = make_bag(folder, folder.parent / f"{folder.name}-bag", **bag_args)
    submission_id, job_id, problems = receive_submission(archive, bag)
    assert job_id is not None, problems
    return submission_id


def record(archive, submission_id):
    with reading(archive.engine) as conn:
        return submissions.get(conn, submission_id)


def test_report_holds_no_tag_digests_people_or_coordinates(scanning, corpora, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(corpora / "photos-exif" / "Canon_40D.jpg", folder)
    submission_id = staged(scanning, folder, bag_info=PERSONAL_BAG_INFO)
    process_submission(scanning, submission_id)
    row = record(scanning, submission_id)
    assert row["status"] == "accepted", row["summary"]
    text = json.dumps(row["report"]) + row["summary"]
    for secret in ("48.512", "37.971", "Olena", "olena@", "Father Secret", "Realname"):
        assert secret not in text
    assert "tag_files" not in row["report"]
    bag_info = row["report"]["bag"]["bag_info"]
    assert set(bag_info) <= {
        "Bagging-Date",
        "Payload-Oxum",
        "Bag-Software-Agent",
        "BagIt-Profile-Identifier",
    }
    # the place itself is sealed, from bag-info
    with reading(scanning.engine) as conn:
        kinds = [r["kind"] for r in submissions.sealed_locations_of(conn, submission_id)]
    assert kinds == ["capture-metadata"]


def test_extents_are_scrubbed_even_without_a_crs(scanning, corpora, tmp_path):
    folder = tmp_path / "clouds"
    folder.mkdir()
    shutil.copy(corpora / "pointclouds" / "simple.las", folder)  # no CRS record
    shutil.copy(corpora / "3d-models" / "stanford" / "bun_zipper.ply", folder)
    submission_id = staged(scanning, folder, capture_metadata=CAPTURE)
    process_submission(scanning, submission_id)
    files = {f["path"]: f for f in record(scanning, submission_id)["report"]["files"]}
    for path in ("data/simple.las", "data/bun_zipper.ply"):
        properties = files[path]["characterization"]["properties"]
        assert not [k for k in properties if "bound" in k or "offset" in k or "extent" in k]
    assert files["data/simple.las"]["characterization"]["properties"]["point_count"] == 1065
    assert "635619" not in json.dumps(files)


def test_reader_messages_never_quote_coordinates():
    message = "xmp-gps unparseable: not a coordinate: '43.46715N'; utm 733512.4 4815623.1"
    masked = pipeline.mask_numbers(message)
    assert "43.467" not in masked and "733512" not in masked and "4815623" not in masked
    assert pipeline.mask_numbers("page 3 at byte offset 3072") == "page 3 at byte offset 3072"


def test_a_malformed_bag_info_line_is_not_quoted(corpora, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    bag = make_bag(folder, tmp_path / "bag")
    with (bag / "bag-info.txt").open("a") as info:
        info.write("Arkhiv-Latitude 43.46715\n")
    report = validate_bag(bag)
    reasons = " ".join(c.reason for c in report.checks)
    assert not report.valid
    assert "43.467" not in reasons


def test_a_crash_while_recording_changes_nothing_and_the_retry_completes(
    scanning, corpora, tmp_path, monkeypatch
):
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    folder = tmp_path / "berlin"
    shutil.copytree(images, folder)
    submission_id = staged(scanning, folder, capture_metadata={"schema_version": "1.0"})
    original = events.record_event
    calls = {"n": 0}

    def failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(events, "record_event", failing_once)
    with pytest.raises(OSError):
        process_submission(scanning, submission_id)
    row = record(scanning, submission_id)
    assert row["status"] == "ingesting"  # nothing of the outcome was kept
    assert (scanning.staging_dir / submission_id).is_dir()
    with reading(scanning.engine) as conn:
        assert submissions.sealed_locations_of(conn, submission_id) == []
    monkeypatch.setattr(events, "record_event", original)
    process_submission(scanning, submission_id)  # the job's retry
    row = record(scanning, submission_id)
    assert row["status"] == "rejected"  # the metadata is incomplete
    assert Path(row["quarantine_path"], "ingest-report.json").is_file()
    assert not (scanning.staging_dir / submission_id).exists()


def test_two_workers_on_one_submission_record_it_once(scanning, corpora, tmp_path, monkeypatch):
    folder = tmp_path / "berlin"
    shutil.copytree(corpora / "photogrammetry" / "opensfm-berlin" / "images", folder)
    submission_id = staged(scanning, folder, capture_metadata=CAPTURE)
    both_ran = threading.Barrier(2)
    real_run = ingest.run_ingest

    def run_together(*args, **kwargs):
        result = real_run(*args, **kwargs)
        both_ran.wait(timeout=60)  # both have a result before either records it
        return result

    monkeypatch.setattr(ingest, "run_ingest", run_together)
    outcomes = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(process_submission(scanning, submission_id))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o["status"] for o in outcomes) == ["accepted", "recorded elsewhere"]
    with reading(scanning.engine) as conn:
        sealed = conn.execute(
            select(func.count()).where(sealed_locations.c.submission_id == submission_id)
        ).scalar_one()
        ends = conn.execute(
            select(func.count()).where(
                premis_events.c.submission_id == submission_id,
                premis_events.c.event_type.like("%/ine"),
            )
        ).scalar_one()
    assert sealed == 6 and ends == 1  # 3 photos x (EXIF, Mapillary JSON)


def test_an_unexpected_intake_failure_leaves_a_rejected_record_and_no_staging(
    archive, tmp_path, monkeypatch
):
    def broken(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest, "receive", broken)
    package = tmp_path / "p.zip"
    package.write_bytes(b"PK")
    with pytest.raises(ArkhivError, match="intake failed"):
        receive_submission(archive, package)
    with reading(archive.engine) as conn:
        (row,) = submissions.find(conn)
    assert row["status"] == "rejected"
    assert not list(archive.staging_dir.iterdir())


def test_a_file_that_breaks_its_reader_fails_that_file_only(scanning, tmp_path):
    folder = tmp_path / "capture"
    folder.mkdir()
    (folder / "deep.gltf").write_text('{"asset": {"version": "2.0"}, "x": ' + "[" * 200_000)
    (folder / "notes.txt").write_text("fine")
    submission_id = staged(scanning, folder, capture_metadata=CAPTURE)
    process_submission(scanning, submission_id)
    row = record(scanning, submission_id)
    assert row["status"] == "rejected"
    failed = [c for c in row["report"]["checks"] if c["outcome"] == "fail"]
    assert [c["path"] for c in failed] == ["data/deep.gltf"]


def test_plain_upload_with_its_capture_metadata_is_accepted(scanning, corpora, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as packed:
        for image in sorted((corpora / "photogrammetry" / "opensfm-berlin" / "images").iterdir()):
            packed.write(image, f"photos/{image.name}")
        packed.writestr("photos/capture-metadata.json", json.dumps(CAPTURE))
    upload = tmp_path / "upload.zip"
    upload.write_bytes(buffer.getvalue())
    submission_id, _job, problems = receive_submission(scanning, upload, plain=True)
    assert problems == []
    process_submission(scanning, submission_id)
    row = record(scanning, submission_id)
    assert row["status"] == "accepted", row["summary"]
    assert "data/capture-metadata.json" not in {f["path"] for f in row["report"]["files"]}
    assert row["report"]["metadata"]["object"]["title"] == CAPTURE["object"]["title"]


def test_intake_problems_name_the_upload_not_server_paths(archive, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as packed:
        packed.writestr("../evil", "x")
    upload = tmp_path / "uploads" / "0f3c.part"
    upload.parent.mkdir()
    upload.write_bytes(buffer.getvalue())
    _id, _job, problems = receive_submission(archive, upload, source_name="museum.zip")
    assert problems and all("0f3c.part" not in p and str(tmp_path) not in p for p in problems)


def test_the_same_payload_submitted_twice_at_once_is_accepted_once(
    scanning, corpora, tmp_path, monkeypatch
):
    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    bag = make_bag(images, tmp_path / "bag", capture_metadata=CAPTURE)
    ids = [receive_submission(scanning, bag)[0] for _ in range(2)]
    both_ran = threading.Barrier(2)
    real_run = ingest.run_ingest

    def run_together(*args, **kwargs):
        result = real_run(*args, **kwargs)
        both_ran.wait(timeout=60)
        return result

    monkeypatch.setattr(ingest, "run_ingest", run_together)
    threads = [threading.Thread(target=process_submission, args=(scanning, i)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(record(scanning, i)["status"] for i in ids)
    assert statuses == ["accepted", "rejected"]


def test_submit_wait_runs_the_retry_after_a_failed_attempt(
    scanning, corpora, tmp_path, monkeypatch
):
    from typer.testing import CliRunner

    from arkhiv.cli import app

    images = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    bag = make_bag(images, tmp_path / "bag", capture_metadata=CAPTURE)
    monkeypatch.setenv("ARKHIV_INGEST__CLAMAV_DATABASE", scanning.settings.ingest.clamav_database)
    real_run = ingest.run_ingest
    attempts = []

    def flaky(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("staging disk went away for a moment")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(ingest, "run_ingest", flaky)
    result = CliRunner().invoke(app, ["submit", str(bag), "--wait", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "archived"
    assert len(attempts) == 2


def test_without_a_working_virus_check_nothing_is_parsed(archive, corpora, tmp_path):
    if shutil.which("clamscan") is None:
        require("clamav", "clamscan is not installed")
    archive.settings.ingest.clamav_database = str(tmp_path / "no-such-database")
    folder = tmp_path / "berlin"
    shutil.copytree(corpora / "photogrammetry" / "opensfm-berlin" / "images", folder)
    submission_id = staged(archive, folder, capture_metadata=CAPTURE)
    process_submission(archive, submission_id)
    row = record(archive, submission_id)
    assert row["status"] == "rejected"
    assert any(
        c["name"] == "virus.scan" and c["outcome"] == "fail" for c in row["report"]["checks"]
    )
    assert all("characterization" not in f for f in row["report"]["files"])
    with reading(archive.engine) as conn:
        assert submissions.sealed_locations_of(conn, submission_id) == []
