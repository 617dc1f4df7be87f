"""Dissemination packages: a valid BagIt zip with the chosen formats, public metadata, a
README with citation and licence, a METS valid against the METS schema, checksums; originals
only as the role may have them; a PREMIS dissemination event says who received what."""

from __future__ import annotations

import json
import subprocess
import zipfile

import bagit

from arkhiv.access.dips import build_dip
from arkhiv.access.viewers import Viewer
from arkhiv.metadata.xml_validation import load_schema
from tests.conftest import arkhiv_command, subprocess_env
from tests.test_dissemination_api import archived_model, bunny
from tests.test_submit import env

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
