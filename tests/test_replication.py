"""Replication catch-up: a store that missed a version, or lost its data, gets the copies back
from verified replicas, and the object goes from at risk to preserved."""

from __future__ import annotations

import json
import shutil

import pytest

from arkhiv.aip.placement import object_key
from arkhiv.aip.replication import ReplicationIncomplete, replicate_object
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog.database import reading
from arkhiv.jobs.archiving import archive_submission, describe_object
from arkhiv.jobs.ingest import process_submission, receive_submission
from arkhiv.jobs.worker import Worker
from tests.aip_checks import store_problems
from tests.conftest import CORPORA, S3_CREDENTIALS
from tests.test_submit import berlin_bag


def _stores(s3_endpoint: str, bucket: str, endpoint: str | None = None) -> str:
    return json.dumps(
        [
            {"name": "site-a", "kind": "local", "path": "stores/site-a", "region": "kyiv"},
            {"name": "site-b", "kind": "local", "path": "stores/site-b", "region": "lviv"},
            {
                "name": "s3-eu",
                "kind": "s3",
                "bucket": bucket,
                "region": "eu-central",
                "endpoint_url": endpoint or s3_endpoint,
                "region_name": "eu-central-1",
                "max_attempts": 1,
                **S3_CREDENTIALS,
            },
        ]
    )


def _document(archive, object_id):
    with reading(archive.engine) as conn:
        return object_document(conn, object_id)


def test_an_s3_store_down_during_ingest_gets_its_copy_when_back(
    archive_env, s3_endpoint, s3_bucket, corpora, tmp_path, monkeypatch, virus_database
):
    bucket = s3_bucket("eu-central-1")
    monkeypatch.setenv("ARKHIV_INGEST__CLAMAV_DATABASE", str(virus_database))
    monkeypatch.setenv("ARKHIV_STORES", _stores(s3_endpoint, bucket, "http://127.0.0.1:9"))
    archive, _ = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        submission_id, _job, _ = receive_submission(archive, berlin_bag(corpora, tmp_path / "b"))
        object_id = process_submission(archive, submission_id)["object"]
        result = archive_submission(archive, submission_id, "worker-1")
        assert result["status"] == "at_risk"
        assert result["stores"]["s3-eu"].startswith("failed")
        document = _document(archive, object_id)
        assert document["stores"]["s3-eu"]["by_status"] == {
            "missing": document["stores"]["s3-eu"]["files"]
        }
        # Still down: the catch-up fails and will be retried.
        with pytest.raises(ReplicationIncomplete, match="s3-eu"):
            replicate_object(archive, object_id, "worker-1")
        assert archive.queue.depth().get("replicate", {}).get("queued", 0) == 1
    finally:
        archive.close()

    monkeypatch.setenv("ARKHIV_STORES", _stores(s3_endpoint, bucket))  # the store is back
    archive, _ = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        Worker(archive, ["replicate"], burst=True).run()
        document = _document(archive, object_id)
        assert document["status"] == "preserved"
        assert document["stores"]["s3-eu"]["by_status"] == {
            "verified": document["stores"]["s3-eu"]["files"]
        }
        replications = [e for e in document["events"] if e["label"] == "replication"]
        assert [e["outcome"] for e in replications].count("success") == 3
        assert store_problems(archive.stores["s3-eu"], tmp_path / "s3", CORPORA) == []
    finally:
        archive.close()


def test_a_store_that_lost_everything_is_refilled_version_by_version(
    archive, corpora, tmp_path, virus_database
):
    archive.settings.ingest.clamav_database = str(virus_database)
    submission_id, _job, _ = receive_submission(archive, berlin_bag(corpora, tmp_path / "b"))
    object_id = process_submission(archive, submission_id)["object"]
    archive_submission(archive, submission_id, "worker-1")
    describe_object(archive, object_id, {"condition": "damaged"}, "olena")
    site_c = archive.settings.store("site-c").path
    shutil.rmtree(site_c)
    site_c.mkdir()
    # The catalog learns of the loss from an audit; here it is told directly.
    from arkhiv.catalog.database import writing

    with writing(archive.engine) as conn:
        _forget_store(conn, "site-c")
    report = replicate_object(archive, object_id, "worker-1")
    assert report["status"] == "preserved"
    with reading(archive.engine) as conn:
        from arkhiv.catalog.objects import file_ids

        content_files = len(file_ids(conn, object_id))
    assert report["stores"]["site-c"] == {"copied": content_files, "problem": None}
    assert "site-a" not in report["stores"]  # nothing was missing there
    root = object_key(object_id)
    for name in ("inventory.json", "v1/inventory.json", "v2/inventory.json", "0=ocfl_object_1.1"):
        copied = (site_c / root / name).read_bytes()
        assert copied == (archive.settings.store("site-a").path / root / name).read_bytes()
    assert _document(archive, object_id)["stores"]["site-c"]["by_status"] == {
        "verified": content_files
    }
    # ocfl-py (at teardown) validates site-c with both versions.


def test_a_worker_killed_mid_copy_leaves_no_counted_replica_and_the_next_run_finishes(
    archive, archive_env, tmp_path, virus_database
):
    import os
    import signal
    import subprocess
    import time

    from arkhiv.aip.preservation import queue_replication
    from arkhiv.catalog.database import writing
    from arkhiv.ingest.bagging import make_bag
    from tests.conftest import arkhiv_command, subprocess_env, worker_processes
    from tests.test_submit import CAPTURE

    archive.settings.ingest.clamav_database = str(virus_database)
    folder = tmp_path / "scan"
    folder.mkdir()
    with (folder / "scan.bin").open("wb") as out:
        for _ in range(300):
            out.write(os.urandom(1 << 20))
    bag = make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE)
    submission_id, _job, _ = receive_submission(archive, bag)
    object_id = process_submission(archive, submission_id)["object"]
    archive_submission(archive, submission_id, "worker-1")
    site_c = archive.settings.store("site-c").path
    shutil.rmtree(site_c)
    site_c.mkdir()
    env = subprocess_env({**archive_env, "ARKHIV_INGEST__CLAMAV_DATABASE": str(virus_database)})
    found = subprocess.run(
        arkhiv_command("audit", "--store", "site-c", "--no-repair"), env=env, capture_output=True
    )
    assert found.returncode == 1  # at risk now, and a catch-up queued
    big = site_c / object_key(object_id) / "v1/content/package/data/scan.bin"
    incoming = site_c / ".incoming"
    with worker_processes(1, ["--queue", "replicate"], env, tmp_path) as (workers, _logs):
        deadline = time.monotonic() + 60
        while not any(incoming.glob("put-*")) or not big.parent.is_dir():
            assert time.monotonic() < deadline, "the copy never started"
            time.sleep(0.005)
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
    assert not big.exists()  # the half-copied file never took its name
    document = _document(archive, object_id)
    assert document["status"] == "at_risk"
    assert document["stores"]["site-c"]["by_status"].get("verified", 0) == 0
    # The killed job comes back once its lease expires; or a new one is queued. Either way:
    with writing(archive.engine) as conn:
        queue_replication(conn, archive, object_id)
    deadline = time.monotonic() + 60
    while _document(archive, object_id)["status"] != "preserved":
        assert time.monotonic() < deadline, "the catch-up did not finish"
        Worker(archive, ["replicate"], burst=True).run()
    assert big.stat().st_size == 300 << 20
    # The killed writer's partial file is outside every key (ocfl-py, at teardown, sees only
    # complete files) until the daily housekeeping removes it.
    from arkhiv.storage import LocalStore

    assert all(not item.key.startswith(".incoming") for item in archive.stores["site-c"].list())
    assert any(incoming.glob("put-*"))
    assert LocalStore("site-c", site_c).clean_incoming(older_than_seconds=0) >= 1


@pytest.mark.parametrize("service_checks", [True, False], ids=["checking", "echoing"])
def test_an_s3_copy_is_read_back_only_when_the_service_does_not_check_checksums(
    service_checks, request, archive_env, corpora, tmp_path, monkeypatch, virus_database
):
    kind = "checking_s3" if service_checks else "s3"
    endpoint = request.getfixturevalue(f"{kind}_endpoint")
    bucket = request.getfixturevalue(f"{kind}_bucket")("eu-central-1")
    monkeypatch.setenv("ARKHIV_INGEST__CLAMAV_DATABASE", str(virus_database))
    monkeypatch.setenv("ARKHIV_STORES", _stores(endpoint, bucket))
    archive, _ = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        content_reads = []
        archive.stores["s3-eu"].client.meta.events.register(
            "before-call.s3.GetObject",
            lambda params, **_: (
                content_reads.append(params["url_path"])
                if "/content/" in params["url_path"]
                else None
            ),
        )
        submission_id, _job, _ = receive_submission(archive, berlin_bag(corpora, tmp_path / "b"))
        object_id = process_submission(archive, submission_id)["object"]
        assert archive_submission(archive, submission_id, "worker-1")["status"] == "preserved"
        files = _document(archive, object_id)["stores"]["s3-eu"]["files"]
        assert len(content_reads) == (0 if service_checks else files)

        # Emptied, and refilled by the catch-up: again confirmed without reading back.
        s3 = request.getfixturevalue(f"{kind}_bucket").client
        for item in s3.list_objects_v2(Bucket=bucket)["Contents"]:
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        from arkhiv.catalog.database import writing

        with writing(archive.engine) as conn:
            _forget_store(conn, "s3-eu")
        content_reads.clear()
        assert replicate_object(archive, object_id, "worker-1")["status"] == "preserved"
        assert len(content_reads) == (0 if service_checks else files)
        assert store_problems(archive.stores["s3-eu"], tmp_path / "s3", CORPORA) == []
    finally:
        archive.close()


def _forget_store(conn, name: str) -> None:
    """What an audit would find after the store lost everything: no verified replica there."""
    from sqlalchemy import update

    from arkhiv.catalog.tables import replicas, stores

    store_id = conn.execute(stores.select().where(stores.c.name == name)).first().id
    conn.execute(update(replicas).where(replicas.c.store_id == store_id).values(status="missing"))
