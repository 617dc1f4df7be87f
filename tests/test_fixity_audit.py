"""Fixity audits and automatic repair, through `arkhiv audit`, on both catalogs: flipped bits,
a store emptied, every copy of a file corrupted."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest

from arkhiv.aip.placement import object_key
from arkhiv.fixity.audit import NoGoodCopy, audited_copy
from arkhiv.ingest.bagging import make_bag
from tests.conftest import arkhiv_command, delete_catalog
from tests.test_submit import CAPTURE, env, submit

__all__ = ["env"]
STORES = ("site-a", "site-b", "site-c")


def audit(env, *args: str) -> tuple[int, dict]:
    result = subprocess.run(
        arkhiv_command("audit", "--json", *args), env=env, capture_output=True, text=True
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def officer_report(env, output_format: str) -> tuple[int, object]:
    result = subprocess.run(
        arkhiv_command("report", "fixity", "--format", output_format),
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.stdout, result.stderr
    return result.returncode, (
        json.loads(result.stdout) if output_format == "json" else result.stdout
    )


def show(env, object_id: str) -> dict:
    result = subprocess.run(
        arkhiv_command("show", object_id, "--json"), env=env, capture_output=True, text=True
    )
    document = json.loads(result.stdout)
    document.pop("jobs")  # the catalog's working state, which a rebuild does not restore
    return document


@pytest.fixture
def archived(archive, env, tmp_path):
    """An archived object of 60 scans plus its metadata, on three local stores."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = random.Random(5)
    for number in range(60):
        (folder / f"scan-{number:02d}.bin").write_bytes(rng.randbytes(rng.randint(2000, 90000)))
    code, report = submit(make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE), env)
    assert code == 0, report["summary"]
    object_id = report["object_id"]
    roots = {name: archive.settings.store(name).path / object_key(object_id) for name in STORES}
    return object_id, roots


def flip_a_bit(path: Path, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    position = rng.randrange(len(data))
    data[position] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def test_one_pass_finds_and_repairs_fifty_flipped_bits(archived, env):
    object_id, roots = archived
    rng = random.Random(11)
    content = sorted(
        p.relative_to(roots["site-a"]).as_posix()
        for p in roots["site-a"].rglob("*")
        if p.is_file() and "/content/" in p.as_posix()
    )
    # 50 (file, store) pairs, never all three copies of one file.
    pairs = [(path, store) for path in content for store in STORES]
    rng.shuffle(pairs)
    chosen, per_file = [], {}
    for path, store in pairs:
        if per_file.get(path, 0) < 2 and len(chosen) < 50:
            chosen.append((path, store))
            per_file[path] = per_file.get(path, 0) + 1
    assert len({store for _path, store in chosen}) == 3
    originals = {path: (roots["site-a"] / path).read_bytes() for path in content}
    for path, store in chosen:
        flip_a_bit(roots[store] / path, rng)

    code, report = audit(env)
    assert code == 0, report
    failed = {(f["content_path"], f["store"]) for f in report["failures"]}
    assert failed == set(chosen)
    assert all(f["outcome"] == "mismatch" for f in report["failures"])
    assert {(r["file"], r["store"]) for r in report["repaired"]} == set(chosen)
    assert report["rechecked"] == 50  # each repaired replica audited again
    assert report["objects"] == {object_id: "preserved"}
    for path in content:
        for store in STORES:
            assert (roots[store] / path).read_bytes() == originals[path], (path, store)
    # The next pass finds nothing, and the events say what happened.
    code, again = audit(env)
    assert code == 0 and again["failures"] == []
    labels = [e["label"] for e in show(env, object_id)["events"]]
    assert labels.count("fixity check") >= 6 and "replication" in labels

    code, fixity = officer_report(env, "json")
    assert code == 0
    assert fixity["objects"][object_id]["status"] == "preserved"
    assert fixity["objects"][object_id]["min_copies"] == 3
    assert fixity["objects"][object_id]["last_audit_outcome"] == "success"
    assert {name: entry["by_status"] for name, entry in fixity["stores"].items()} == {
        name: {"verified": fixity["stores"][name]["replicas"]} for name in STORES
    }
    assert fixity["repairs"] and all(r["outcome"] == "success" for r in fixity["repairs"])
    (today,) = fixity["audited_per_day"].values()
    assert (
        today["failed"] == 50
        and today["bytes"] >= 2 * sum(fixity["stores"][name]["bytes"] for name in STORES) - 1
    )


def test_an_emptied_store_is_refilled(archived, env):
    object_id, roots = archived
    shutil.rmtree(roots["site-b"].parents[3])  # the store's whole OCFL root
    code, report = audit(env, "--store", "site-b")
    assert code == 0, report
    assert report["failures"] and all(f["outcome"] == "missing" for f in report["failures"])
    assert len(report["repaired"]) == len(report["failures"])
    assert show(env, object_id)["status"] == "preserved"
    assert (roots["site-b"] / "inventory.json").read_bytes() == (
        roots["site-a"] / "inventory.json"
    ).read_bytes()


@pytest.mark.damages_aips
def test_every_copy_corrupted_flags_the_object_damaged_and_overwrites_nothing(
    archive, archived, env, catalog_url
):
    object_id, roots = archived
    victim = "v1/content/package/data/scan-07.bin"
    other = "v1/content/package/data/scan-08.bin"
    rng = random.Random(3)
    for store in STORES:
        flip_a_bit(roots[store] / victim, rng)
    corrupted = {store: (roots[store] / victim).read_bytes() for store in STORES}
    healthy = (roots["site-a"] / other).read_bytes()
    code, report = audit(env)
    assert code == 1
    assert report["objects"] == {object_id: "damaged"}
    assert report["damaged_files"] == [{"object": object_id, "file": victim}]
    assert report["repaired"] == []
    for store in STORES:  # no bad copy was "repaired" from another bad copy
        assert (roots[store] / victim).read_bytes() == corrupted[store]
        assert (roots[store] / other).read_bytes() == healthy
    assert show(env, object_id)["status"] == "damaged"
    text = subprocess.run(arkhiv_command("audit"), env=env, capture_output=True, text=True)
    assert text.returncode == 1 and f"DAMAGED {object_id}: {victim}" in text.stdout

    code, fixity = officer_report(env, "json")
    assert code == 1
    assert fixity["damaged"] == [object_id]
    assert fixity["objects"][object_id]["files_without_good_copy"] == [victim]
    code, table = officer_report(env, "csv")
    rows = list(csv.DictReader(io.StringIO(table)))
    assert code == 1 and [r["kind"] for r in rows] == ["store"] * 3 + ["object"]
    assert rows[3]["status"] == "damaged" and rows[3]["files_without_good_copy"] == victim
    code, page = officer_report(env, "html")
    tree = lxml.html.fromstring(page)
    assert code == 1 and tree.findtext(".//h1") == "Fixity report"
    assert victim in tree.xpath("string(//li[@class='bad'])")
    with pytest.raises(NoGoodCopy, match="scan-07"):  # nothing to hand out
        audited_copy(archive, object_id, victim)

    # A catalog rebuilt from the stores knows it too (from the audits in the journals).
    before = show(env, object_id)
    delete_catalog(archive, catalog_url)
    for command in ("init", "rebuild-catalog"):
        assert subprocess.run(arkhiv_command(command), env=env).returncode == 0
    assert show(env, object_id) == before


def test_an_original_is_handed_out_only_from_a_copy_audited_just_now(archive, archived, env):
    from arkhiv.jobs.worker import Worker

    object_id, roots = archived
    path = "v1/content/package/data/scan-03.bin"
    assert audited_copy(archive, object_id, path) == "site-a"  # never audited: store order
    # Now site-a's check is the newest, so site-b is audited first: it fails, site-c serves.
    flip_a_bit(roots["site-b"] / path, random.Random(1))
    assert audited_copy(archive, object_id, path) == "site-c"
    checks = [e for e in show(env, object_id)["events"] if e["label"] == "fixity check"]
    assert sorted(e["outcome"] for e in checks) == ["failure", "success", "success"]
    assert show(env, object_id)["status"] == "at_risk"  # and its repair is queued:
    Worker(archive, ["replicate"], burst=True).run()
    assert show(env, object_id)["status"] == "preserved"
    assert (roots["site-b"] / path).read_bytes() == (roots["site-c"] / path).read_bytes()


def test_an_unknown_store_is_a_usage_error(archive, env):
    result = subprocess.run(
        arkhiv_command("audit", "--store", "nowhere"), env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "nowhere" in result.stderr


def test_the_hourly_sweep_audits_each_stores_share_oldest_first(archive, archived):
    from sqlalchemy import func, select

    from arkhiv.catalog.database import reading
    from arkhiv.catalog.tables import replicas, stores
    from arkhiv.jobs.fixity import SWEEP_KIND
    from arkhiv.jobs.worker import Worker

    def audited() -> dict[str, int]:
        with reading(archive.engine) as conn:
            return dict(
                conn.execute(
                    select(stores.c.name, func.count(replicas.c.last_audit_at))
                    .join(replicas, replicas.c.store_id == stores.c.id)
                    .group_by(stores.c.name)
                ).all()
            )

    total = archive.status()["stores"][0]["holdings"]["replicas"]
    # 90 days of hourly sweeps: each store's share this hour is one replica.
    archive.queue.enqueue("audit", SWEEP_KIND)
    Worker(archive, ["audit"], burst=True).run()
    assert audited() == {"site-a": 1, "site-b": 1, "site-c": 1}
    # A store audited every hour gets all of its replicas in one sweep.
    archive.settings.store("site-b").audit_interval_days = 1 / 24
    archive.queue.enqueue("audit", SWEEP_KIND)
    Worker(archive, ["audit"], burst=True).run()
    assert audited() == {"site-a": 2, "site-b": total, "site-c": 2}


def test_a_stores_bandwidth_cap_slows_its_audit(archive, archived):
    import time

    from arkhiv.fixity.audit import audit as run_audit

    held = archive.status()["stores"][0]["holdings"]["bytes"]
    archive.settings.store("site-c").audit_bandwidth_mb_s = held / 1e6 / 1.5  # 1.5 s of reading
    started = time.monotonic()
    report = run_audit(archive, store="site-c")
    took = time.monotonic() - started
    assert not report.failures and sum(c.bytes_read for c in report.checks) == held
    assert took >= 1.4
