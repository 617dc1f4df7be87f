"""Dissemination packages: a valid BagIt zip with the chosen formats, public metadata, a
README with citation and licence, a METS valid against the METS schema, checksums; originals
only as the role may have them; a PREMIS dissemination event says who received what."""

from __future__ import annotations

import copy
import json
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import bagit
import pytest
from starlette.testclient import TestClient

from arkhiv.access.dips import build_dip
from arkhiv.access.viewers import Viewer
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.dissemination import expire_dips
from arkhiv.metadata.xml_validation import load_schema
from arkhiv.web.app import create_app
from tests.conftest import arkhiv_command, subprocess_env
from tests.test_access_files import tokens
from tests.test_dissemination_api import archived_model, bunny
from tests.test_submit import CAPTURE, env, submit

__all__ = ["bunny", "env"]


def test_a_dip_is_a_valid_bag_with_metadata_readme_and_mets(archive, bunny, corpora, tmp_path):
    researcher = Viewer("rena", "researcher", archive.settings.access)
    output = tmp_path / "bunny-dip.zip"
    result = build_dip(archive, researcher, bunny, output, ("glb", "obj", "usdz"))
    with zipfile.ZipFile(output) as bundle:
        bundle.extractall(tmp_path / "unzipped")
    [bag_folder] = (tmp_path / "unzipped").iterdir()
    bag = bagit.Bag(str(bag_folder))
    bag.validate()  # every checksum
    assert set(bag.algorithms) == {"sha256", "sha512"}
    assert bag.info["External-Identifier"] == bunny
    data = bag_folder / "data"
    assert (data / "model/glb").is_dir() and list((data / "model/obj").glob("*.obj"))
    assert list((data / "model/usdz").glob("*.usdz"))
    readme = (data / "README.md").read_text()
    assert "## Cite as" in readme and "CC-BY-4.0" in readme and bunny in readme
    record = json.loads((data / "metadata/object.jsonld").read_text())
    assert record["@type"] == "3DModel" and record["license"].startswith("https://creativecommons")
    mets = load_schema(corpora / "xml-schemas" / "mets.xsd")
    from lxml import etree

    document = etree.parse(str(data / "metadata/mets.xml"))
    mets.assertValid(document)
    listed = {
        f.get("{http://www.w3.org/1999/xlink}href")
        for f in document.iter("{http://www.loc.gov/METS/}FLocat")
    }
    assert {f"data/{name}" for name in result.files} - listed == {"data/metadata/mets.xml"}
    assert not any(name.startswith("originals/") for name in result.files)
    # Dublin Core, as OAI-PMH's oai_dc gives it: title, identifier and licence.
    dc = etree.parse(str(data / "metadata/dublin-core.xml")).getroot()
    assert dc.tag == "{http://www.openarchives.org/OAI/2.0/oai_dc/}dc"

    def terms(name: str) -> list[str]:
        return [e.text for e in dc.iter(f"{{http://purl.org/dc/elements/1.1/}}{name}")]

    assert terms("title") == ["bunny"]
    assert any(bunny in value for value in terms("identifier"))
    assert any("CC-BY-4.0" in value or "creativecommons" in value for value in terms("rights"))


def test_originals_in_a_dip_follow_the_role_and_the_event_is_recorded(
    archive, archive_env, env, corpora, tmp_path
):
    object_id = archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "bunny"
    )
    output = tmp_path / "with-originals.zip"
    result = subprocess.run(
        arkhiv_command(
            "dip",
            object_id,
            "-o",
            str(output),
            "--formats",
            "stl",
            "--role",
            "partner",
            "--originals",
            "--for",
            "restoration-lab",
            "--json",
        ),
        env=subprocess_env(archive_env),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert "originals/data/bunny.glb" in made["files"]
    refused = subprocess.run(
        arkhiv_command("dip", object_id, "-o", str(tmp_path / "x.zip"), "--originals"),
        env=subprocess_env(archive_env),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "may not receive originals" in refused.stderr
    shown = json.loads(
        subprocess.run(
            arkhiv_command("show", object_id, "--json"),
            env=subprocess_env(archive_env),
            capture_output=True,
            text=True,
        ).stdout
    )
    [event] = [e for e in shown["events"] if e["label"] == "dissemination"]
    assert "restoration-lab (partner)" in event["detail"]


def test_a_dip_is_made_for_the_role_the_recipient_has_when_it_is_made(archive, bunny):
    from sqlalchemy import update

    from arkhiv.access.viewers import create_user
    from arkhiv.catalog.database import writing
    from arkhiv.catalog.tables import users
    from arkhiv.jobs.dissemination import queue_dip
    from arkhiv.jobs.worker import Worker

    with writing(archive.engine) as conn:
        create_user(conn, archive.settings.access, "lab", "partner")
        job_id = queue_dip(
            conn, archive, Viewer("lab", "partner", archive.settings.access), bunny, ["stl"], True
        )
        # Downgraded before the package is made: it must not get the originals any more.
        conn.execute(update(users).where(users.c.username == "lab").values(role="researcher"))
    Worker(archive, ["derive"], burst=True).run()
    job = archive.queue.get(job_id)
    assert job.status == "dead" and "may not receive originals" in job.last_error


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_nothing_under_home_is_for_other_users_and_old_packages_go(
    archive, archive_env, env, tmp_path
):
    """DIP zips used to be 0644 under a 0755 dips/, the SQLite catalog (password and session
    hashes) 0644. Everything the archive's processes write under ARKHIV_HOME is now its
    owner's alone, and a prepared package is removed after server.dip_retention_days, its job
    saying so."""
    upload = tmp_path / "cube"
    upload.mkdir()
    corners = [(x, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
    sides = ["1 3 4 2", "5 6 8 7", "1 2 6 5", "3 7 8 4", "1 5 7 3", "2 4 8 6"]
    (upload / "cube.obj").write_text(
        "".join(f"v {x} {y} {z}\n" for x, y, z in corners) + "".join(f"f {s}\n" for s in sides)
    )
    capture = copy.deepcopy(CAPTURE)
    capture["capture"]["mode"] = "mesh"
    code, report = submit(make_bag(upload, tmp_path / "bag", capture_metadata=capture), env)
    assert code == 0, report
    worker = arkhiv_command("worker", "--burst", "--queue", "reconstruct", "--queue", "derive")
    done = subprocess.run(worker, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    headers = tokens(archive, rena="researcher")["researcher"]
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        asked = client.post(
            f"/api/v1/objects/{report['object_id']}/dips",
            json={"formats": ["stl"]},
            headers=headers,
        )
        assert asked.status_code == 202, asked.text
        done = subprocess.run(worker, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        status = client.get(asked.json()["status"], headers=headers).json()
        assert status["status"] == "done", status
        assert client.get(status["download"], headers=headers).status_code == 200

        home = archive.settings.home
        catalog = Path(archive.settings.catalog_url.removeprefix("sqlite:///"))
        assert list((home / "dips").glob("*.zip")) and catalog.is_file()
        written = [home, *home.rglob("*"), *catalog.parent.glob(catalog.name + "*")]
        shared = [
            f"{path} {stat.S_IMODE(path.stat().st_mode):o}"
            for path in written
            if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077
        ]
        assert shared == []

        removed = expire_dips(archive, now=time.time() + 8 * 86400)
        assert removed == [asked.json()["job"]] and not list((home / "dips").glob("*.zip"))
        status = client.get(asked.json()["status"], headers=headers).json()
        assert "download" not in status and "7 days" in status["removed"]["why"]
        gone = client.get(f"/api/v1/dips/{asked.json()['job']}/download", headers=headers)
        assert gone.status_code == 410 and "ask for it again" in gone.json()["detail"]
