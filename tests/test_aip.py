"""AIPs end to end, on both catalogs: an accepted bag becomes an OCFL object on every store with
METS, PREMIS and CIDOC-CRM; edits make new versions that store nothing twice; the catalog is
rebuilt from the stores alone. (Every AIP written here is also held to ocfl-py, the XSDs and the
SHACL shapes when the test's archive is torn down: see tests/aip_checks.py.)"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest

from arkhiv.aip import archiving
from arkhiv.aip.ocfl import Inventory, object_path
from arkhiv.aip.placement import object_key
from arkhiv.aip.rebuild import rebuild_catalog
from arkhiv.catalog.database import reading
from arkhiv.config import IdentifierSettings
from arkhiv.identifiers import IdentifierError, check_character, mint, normalize
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.archiving import archive_submission, describe_object
from arkhiv.jobs.ingest import process_submission, receive_submission
from tests.conftest import arkhiv_command, delete_catalog
from tests.test_submit import BERLIN, CAPTURE, berlin_bag, digits, env, submit

__all__ = ["env"]  # the fixture, shared with test_submit

# --- identifiers and layout (no archive) --------------------------------------------------------


def test_minted_arks_carry_a_check_character_that_catches_typos():
    identifier = mint("99999", "b3")
    assert identifier.startswith("ark:99999/b3") and len(identifier) == len("ark:99999/b3") + 11
    assert normalize(identifier) == identifier
    assert normalize(identifier.replace("ark:", "ark:/")) == identifier  # the older form
    assert normalize(f"https://n2t.net/{identifier.upper()}") == identifier
    body = identifier[len("ark:") :]
    for position in range(len(body) - 1):
        if body[position] == "/":
            continue
        for char in "0123456789bcdfghjkmnpqrstvwxz":
            typo = body[:position] + char + body[position + 1 :]
            if typo != body:
                assert check_character(typo[:-1]) != typo[-1], typo
        swapped = body[:position] + body[position + 1] + body[position] + body[position + 2 :]
        if swapped != body:
            with pytest.raises(IdentifierError):
                normalize("ark:" + swapped)
    with pytest.raises(IdentifierError, match="not an ARK"):
        normalize("doi:10.1000/182")


def test_bad_naming_settings_are_refused():
    with pytest.raises(ValueError, match="shoulder"):
        IdentifierSettings(shoulder="a1")  # vowels are not betanumeric
    with pytest.raises(ValueError, match="NAAN"):
        IdentifierSettings(naan="123")


@pytest.mark.parametrize(
    "identifier",
    ["ark:99999/b3k7m2q9xw9", "urn:uuid:" + "0" * 32, "ark:12345/" + "x" * 150, "ark:1/ü ž"],
)
def test_storage_layout_agrees_with_ocfl_py(identifier):
    from ocfl.layout_0003_hash_and_id_n_tuple import Layout_0003_Hash_And_Id_N_Tuple

    assert object_path(identifier) == Layout_0003_Hash_And_Id_N_Tuple().identifier_to_path(
        identifier
    )


# --- helpers --------------------------------------------------------------------------------


def cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(arkhiv_command(*args), env=env, capture_output=True, text=True)


def show(env, object_id: str) -> dict:
    """The object as `arkhiv show` has it, less its jobs: the queue is the catalog's working
    state, not something the AIPs hold (a rebuilt catalog starts with none)."""
    result = cli(env, "show", object_id, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    document.pop("jobs")
    return document


def object_root(archive, store: str, object_id: str) -> Path:
    return archive.settings.store(store).path / object_key(object_id)


def root_inventory(archive, store: str, object_id: str) -> Inventory:
    return Inventory.from_json(
        (object_root(archive, store, object_id) / "inventory.json").read_bytes()
    )


def add_md5_manifest(bag: Path) -> dict[str, str]:
    """Give a bag an MD5 payload manifest too (as many museum tools write) and redo its tag
    manifests; returns path -> md5."""
    md5 = {
        path.relative_to(bag).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted((bag / "data").rglob("*"))
        if path.is_file()
    }
    (bag / "manifest-md5.txt").write_text("".join(f"{d}  {p}\n" for p, d in md5.items()))
    for algorithm in ("sha256", "sha512"):
        tags = sorted(p for p in bag.iterdir() if p.is_file() and not p.name.startswith("tag"))
        lines = [f"{hashlib.new(algorithm, p.read_bytes()).hexdigest()}  {p.name}\n" for p in tags]
        (bag / f"tagmanifest-{algorithm}.txt").write_text("".join(lines))
    return md5


# --- v1 from a submission --------------------------------------------------------------------


def test_an_accepted_bag_becomes_an_ocfl_object_on_every_store(archive, env, corpora, tmp_path):
    bag = berlin_bag(corpora, tmp_path / "berlin")
    md5 = add_md5_manifest(bag)
    code, report = submit(bag, env)
    assert code == 0, report["summary"]
    assert report["status"] == "archived"
    object_id = report["object_id"]
    assert normalize(object_id) == object_id
    assert not (archive.staging_dir / report["id"]).exists()

    document = show(env, object_id)
    assert document["status"] == "preserved" and document["head_version"] == 1
    assert document["submission"] == report["id"]
    assert document["title"] == "Rotes Rathaus, east façade"
    files = {entry["logical_path"]: entry for entry in document["files"]}
    assert {
        "package/bagit.txt",
        "package/bag-info.txt",
        "package/manifest-md5.txt",
        "package/capture-metadata.json",
        "package/data/01.jpg",
        "metadata/mets.xml",
        "metadata/premis.xml",
        "metadata/crm.jsonld",
        "metadata/crm.ttl",
        "metadata/description.json",
        "metadata/ingest-report.json",
        "metadata/sealed-locations.json",
    } <= set(files)
    photo = files["package/data/01.jpg"]
    assert photo["role"] == "original" and photo["format"]["puid"] == "fmt/43"
    assert photo["format"]["version"] == "1.01"
    assert photo["digests"]["md5"] == md5["data/01.jpg"]
    assert photo["replicas"] == {"site-a": "verified", "site-b": "verified", "site-c": "verified"}
    assert files["metadata/mets.xml"]["role"] == "metadata"
    labels = [event["label"] for event in document["events"]]
    for expected in ("ingestion start", "virus check", "format identification", "validation"):
        assert expected in labels
    assert labels.count("replication") == 3
    assert "information package creation" in labels
    assert document["versions"][0]["user"]["address"].startswith("https://")

    for store in ("site-a", "site-b", "site-c"):
        root = object_root(archive, store, object_id)
        inventory = root_inventory(archive, store, object_id)
        assert inventory.id == object_id and inventory.head == 1
        # The package exactly as submitted, and the submitter's MD5s in the fixity block.
        for path in bag.rglob("*"):
            if path.is_file():
                relative = path.relative_to(bag).as_posix()
                assert (root / "v1/content/package" / relative).read_bytes() == path.read_bytes()
        content = "v1/content/package/data/01.jpg"
        assert inventory.fixity["md5"][md5["data/01.jpg"]] == [content]
        journal = archive.settings.store(store).path / "journal" / object_path(object_id)
        assert len(list(journal.glob("*.json"))) == 1

    # Public metadata documents never carry the precise position found in the photos' EXIF.
    metadata_folder = object_root(archive, "site-a", object_id) / "v1/content/metadata"
    for name in ("mets.xml", "premis.xml", "crm.jsonld", "crm.ttl", "description.json"):
        written = (metadata_folder / name).read_text()
        for latitude, longitude in BERLIN.values():
            assert digits(latitude) not in written and digits(longitude) not in written, name


def test_describe_makes_a_version_and_a_bad_edit_changes_nothing(archive, env, corpora, tmp_path):
    code, report = submit(berlin_bag(corpora, tmp_path / "berlin"), env)
    assert code == 0
    object_id = report["object_id"]
    edited = cli(
        env,
        "describe",
        object_id,
        "--set",
        "condition=damaged",
        "--set",
        "condition_note=Shell damage to the east wing, March 2022",
        "--as",
        "olena",
        "--json",
    )
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["changed"]["condition"] == {"from": None, "to": "damaged"}
    document = show(env, object_id)
    assert document["head_version"] == 2
    assert document["description"]["condition"] == "damaged"
    assert document["versions"][1]["user"]["name"] == "olena"
    assert "condition" in document["versions"][1]["message"]
    modification = [e for e in document["events"] if e["label"] == "metadata modification"]
    assert len(modification) == 1 and modification[0]["version"] == 2

    inventory = root_inventory(archive, "site-b", object_id)
    new_content = sorted(
        p for paths in inventory.manifest.values() for p in paths if p.startswith("v2/")
    )
    # Only the regenerated metadata is new; the package and the ingest report are carried over.
    assert new_content == [
        "v2/content/metadata/crm.jsonld",
        "v2/content/metadata/crm.ttl",
        "v2/content/metadata/description.json",
        "v2/content/metadata/mets.xml",
        "v2/content/metadata/premis.xml",
    ]
    v2 = inventory.versions[2].logical_files()
    assert inventory.content_path_of(v2["package/data/01.jpg"]).startswith("v1/")
    mets = (object_root(archive, "site-b", object_id) / "v2/content/metadata/mets.xml").read_text()
    assert "damaged" in mets

    for bad in (["--set", "colour=red"], ["--set", "condition=burnt"], ["--set", "title="]):
        result = cli(env, "describe", object_id, *bad)
        assert result.returncode == 1, result.stdout
        assert "colour" in result.stderr or "condition" in result.stderr or "title" in result.stderr
    assert show(env, object_id)["head_version"] == 2
    assert root_inventory(archive, "site-a", object_id).head == 2
    assert not (object_root(archive, "site-a", object_id) / "v3").exists()


@pytest.mark.slow
def test_an_unchanged_100_mb_file_is_stored_once(archive, env, tmp_path):
    folder = tmp_path / "scan"
    folder.mkdir()
    big = folder / "scan.ply"
    # A real point cloud of 100 MiB (ingest characterizes it, so it must be a valid PLY).
    count = (100 << 20) // 12
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    points = numpy.random.default_rng(7).uniform(-5, 5, (count, 3)).astype("<f4")
    with big.open("wb") as out:
        out.write(header.encode())
        out.write(points.tobytes())
    del points
    code, report = submit(make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE), env)
    assert code == 0, report["summary"]
    object_id = report["object_id"]
    result = cli(env, "describe", object_id, "--set", "period=19th century")
    assert result.returncode == 0, result.stderr
    size = big.stat().st_size
    for store in ("site-a", "site-b", "site-c"):
        root = object_root(archive, store, object_id)
        copies = [p for p in root.rglob("*") if p.is_file() and p.stat().st_size == size]
        assert [p.relative_to(root).as_posix() for p in copies] == [
            "v1/content/package/data/scan.ply"
        ]
        v2_bytes = sum(p.stat().st_size for p in (root / "v2").rglob("*") if p.is_file())
        assert v2_bytes < 1 << 20
    assert (
        root_inventory(archive, "site-c", object_id)
        .versions[2]
        .logical_files()["package/data/scan.ply"]
        == hashlib.sha512(big.read_bytes()).hexdigest()
    )


# --- rebuilding the catalog from the stores ----------------------------------------------------


def test_rebuild_catalog_from_the_stores_gives_identical_objects(
    archive, env, corpora, catalog_url, tmp_path
):
    objects = []
    code, report = submit(berlin_bag(corpora, tmp_path / "berlin"), env)
    assert code == 0
    objects.append(report["object_id"])
    bunny = dict(CAPTURE, object=dict(CAPTURE["object"], title="Stanford bunny", type="sculpture"))
    models = corpora / "3d-models" / "bunny-multiformat"
    code, report = submit(make_bag(models, tmp_path / "bunny", capture_metadata=bunny), env)
    assert code == 0, report["summary"]
    objects.append(report["object_id"])
    for field, value in (("condition", "destroyed"), ("description", "Burnt in 2024.")):
        assert cli(env, "describe", objects[0], "--set", f"{field}={value}").returncode == 0
    assert cli(env, "describe", objects[1], "--set", "period=1994").returncode == 0
    before = {object_id: show(env, object_id) for object_id in objects}
    submission_before = json.loads(cli(env, "submissions", "show", report["id"], "--json").stdout)

    delete_catalog(archive, catalog_url)
    assert cli(env, "init").returncode == 0
    assert cli(env, "objects", "--json").stdout.strip() == "[]"
    rebuilt = cli(env, "rebuild-catalog", "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert sorted(json.loads(rebuilt.stdout)["objects"]) == sorted(objects)
    for object_id in objects:
        assert show(env, object_id) == before[object_id]
    submission_after = json.loads(cli(env, "submissions", "show", report["id"], "--json").stdout)
    for key in ("status", "object_id", "received_at", "finished_at", "report", "events"):
        assert submission_after[key] == submission_before[key], key
    # Rebuilding twice would double everything: refused.
    again = cli(env, "rebuild-catalog")
    assert again.returncode == 1 and "already holds objects" in again.stderr
    # The rebuilt catalog is a working one: the next edit becomes v3.
    assert cli(env, "describe", objects[0], "--set", "period=1861-1869").returncode == 0
    assert show(env, objects[0])["head_version"] == 4


# --- crashes and concurrency -----------------------------------------------------------------


def test_a_crash_before_the_catalog_commit_is_retried_into_one_version(
    archive, corpora, tmp_path, monkeypatch, virus_database
):
    archive.settings.ingest.clamav_database = str(virus_database)
    bag = berlin_bag(corpora, tmp_path / "berlin")
    submission_id, _job, problems = receive_submission(archive, bag)
    assert not problems
    outcome = process_submission(archive, submission_id)
    assert outcome["status"] == "accepted"
    real_commit = archiving._commit
    calls = []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("power cut after the stores were written")
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(archiving, "_commit", crash_once)
    with pytest.raises(OSError, match="power cut"):
        archive_submission(archive, submission_id, "worker-1")
    first_inventory = root_inventory(archive, "site-a", outcome["object"]).to_json()
    result = archive_submission(archive, submission_id, "worker-2")
    assert result["status"] == "preserved"
    object_id = outcome["object"]
    for store in ("site-a", "site-b", "site-c"):
        inventory = root_inventory(archive, store, object_id)
        assert inventory.head == 1 and inventory.to_json() == first_inventory
    with reading(archive.engine) as conn:
        from arkhiv.aip.show import object_document

        document = object_document(conn, object_id)
    assert [e["label"] for e in document["events"]].count("replication") == 3
    assert len(document["versions"]) == 1


def test_an_object_being_changed_elsewhere_is_refused(archive, corpora, tmp_path, virus_database):
    from arkhiv.catalog import leases
    from arkhiv.catalog.database import writing

    archive.settings.ingest.clamav_database = str(virus_database)
    submission_id, _job, _ = receive_submission(archive, berlin_bag(corpora, tmp_path / "b"))
    object_id = process_submission(archive, submission_id)["object"]
    archive_submission(archive, submission_id, "worker-1")
    with writing(archive.engine) as conn:
        assert leases.acquire(conn, f"object:{object_id}", "someone-else", 60)
    with pytest.raises(archiving.ConcurrentChange):
        describe_object(archive, object_id, {"period": "1861"}, "olena")
    with reading(archive.engine) as conn:
        from arkhiv.catalog.objects import get_object

        assert get_object(conn, object_id)["head_version"] == 1


# --- stores in S3 ----------------------------------------------------------------------------


def test_aips_on_s3_stores_in_two_regions_validate_and_rebuild(
    archive_env,
    catalog_url,
    s3_endpoint,
    s3_bucket,
    corpora,
    tmp_path,
    monkeypatch,
    virus_database,
):
    from arkhiv.aip.show import object_document
    from arkhiv.archive import Archive
    from arkhiv.catalog.database import reading
    from tests.aip_checks import store_problems
    from tests.conftest import CORPORA, S3_CREDENTIALS

    stores = [{"name": "site-a", "kind": "local", "path": "stores/site-a", "region": "kyiv"}]
    for name, region, s3_region in (
        ("s3-eu", "eu-central", "eu-central-1"),
        ("s3-us", "us-east", "us-east-1"),
    ):
        stores.append(
            {
                "name": name,
                "kind": "s3",
                "bucket": s3_bucket(s3_region),
                "prefix": "arkhiv",
                "region": region,
                "endpoint_url": s3_endpoint,
                "region_name": s3_region,
                **S3_CREDENTIALS,
            }
        )
    monkeypatch.setenv("ARKHIV_STORES", json.dumps(stores))
    monkeypatch.setenv("ARKHIV_INGEST__CLAMAV_DATABASE", str(virus_database))
    archive, _ = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        submission_id, _job, problems = receive_submission(
            archive, berlin_bag(corpora, tmp_path / "b")
        )
        assert not problems
        object_id = process_submission(archive, submission_id)["object"]
        result = archive_submission(archive, submission_id, "worker-1")
        assert result["status"] == "preserved", result
        assert set(result["stores"].values()) == {"verified"}
        describe_object(archive, object_id, {"condition": "damaged"}, "olena")
        for name in ("s3-eu", "s3-us"):
            assert store_problems(archive.stores[name], tmp_path / name, CORPORA) == []
        with reading(archive.engine) as conn:
            before = object_document(conn, object_id)
        assert before["stores"]["s3-eu"]["region"] == "eu-central"
        status = {s["name"]: s for s in archive.status()["stores"]}
        assert status["s3-us"]["reachable"] is True
    finally:
        archive.close()

    delete_catalog(archive, catalog_url)
    # Only the S3 copies are left to rebuild from: the local store is gone too.
    shutil.rmtree(Path(archive_env["ARKHIV_HOME"]) / "stores" / "site-a")
    archive, _ = Archive.initialize(archive_env["ARKHIV_HOME"])
    try:
        report = rebuild_catalog(archive)
        assert report.objects == [object_id], report.problems
        with reading(archive.engine) as conn:
            after = object_document(conn, object_id)
        assert after["stores"]["site-a"]["by_status"] == {
            "missing": after["stores"]["site-a"]["files"]
        }
        assert after["status"] == "at_risk"
        for document in (before, after):
            for entry in document["files"]:
                entry["replicas"].pop("site-a")
            document["stores"].pop("site-a")
            document.pop("status")
        assert after == before
    finally:
        archive.close()
