"""Turning plain folders into BagIt 1.0 bags: real photos come out as a bag that bagit-python
validates, with sha512 and sha256 manifests and tag manifests, and the folder is left exactly as
it was; unsafe folders and bad requests are refused without leaving anything behind."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from datetime import date
from pathlib import Path

import bagit
import pytest

from arkhiv import __version__
from arkhiv.ingest.bagging import make_bag
from arkhiv.ingest.capture_metadata import PROFILE_ID, validate_profile
from arkhiv.ingest.model import IntakeError
from arkhiv.policies.ingest import IngestPolicy

PHOTOS = "photogrammetry/opensfm-berlin/images"
NFD_NAME = unicodedata.normalize("NFD", "Façade ä.txt")


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything about a folder that bagging must not change (links not followed)."""
    found: dict[str, tuple] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            content = ""
            if stat.S_ISREG(info.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            found[key] = (info.st_mode, info.st_size, info.st_mtime_ns, content)
    return found


def manifest(bag: Path, name: str) -> dict[str, str]:
    lines = (bag / name).read_text(encoding="utf-8").splitlines()
    return {path: digest for digest, path in (line.split("  ", 1) for line in lines)}


def bag_info(bag: Path) -> list[tuple[str, str]]:
    lines = (bag / "bag-info.txt").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(": ", 1)) for line in lines]


@pytest.fixture
def photos(corpora: Path) -> Path:
    """The real photos, read in place."""
    folder = corpora / PHOTOS
    assert any(folder.glob("*.jpg"))
    return folder


def test_folder_of_photos_becomes_a_valid_bagit_1_0_bag(photos: Path, tmp_path: Path) -> None:
    before = snapshot(photos)
    destination = tmp_path / "bags" / "berlin"
    made = make_bag(
        photos,
        destination,
        {"Source-Organization": "Arkhiv tests", "External-Description": "Berlin, façade"},
    )
    assert made == destination

    bag = bagit.Bag(str(made))
    bag.validate()  # every checksum recomputed, tag manifests and Payload-Oxum included
    assert bag.version_info == (1, 0)
    assert sorted(bag.algorithms) == ["sha256", "sha512"]
    assert (made / "bagit.txt").read_bytes() == (
        b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
    )
    assert sorted(p.name for p in made.iterdir()) == [
        "bag-info.txt",
        "bagit.txt",
        "data",
        "manifest-sha256.txt",
        "manifest-sha512.txt",
        "tagmanifest-sha256.txt",
        "tagmanifest-sha512.txt",
    ]

    originals = sorted(p for p in photos.rglob("*") if p.is_file())
    for algorithm in ("sha512", "sha256"):
        assert manifest(made, f"manifest-{algorithm}.txt") == {
            f"data/{p.relative_to(photos).as_posix()}": hashlib.new(
                algorithm, p.read_bytes()
            ).hexdigest()
            for p in originals
        }
        tags = manifest(made, f"tagmanifest-{algorithm}.txt")
        assert sorted(tags) == [
            "bag-info.txt",
            "bagit.txt",
            "manifest-sha256.txt",
            "manifest-sha512.txt",
        ]
        for name, digest in tags.items():
            assert hashlib.new(algorithm, (made / name).read_bytes()).hexdigest() == digest

    octets = sum(p.stat().st_size for p in originals)
    assert bag_info(made) == [
        ("Bagging-Date", date.today().isoformat()),
        ("Payload-Oxum", f"{octets}.{len(originals)}"),
        ("Bag-Software-Agent", f"Arkhiv {__version__}"),
        ("BagIt-Profile-Identifier", PROFILE_ID),
        ("Source-Organization", "Arkhiv tests"),
        ("External-Description", "Berlin, façade"),
    ]
    assert snapshot(photos) == before
    assert sorted(p.name for p in destination.parent.iterdir()) == ["berlin"]


def test_nested_folders_and_nfd_names_make_a_valid_bag(tmp_path: Path) -> None:
    source = tmp_path / "capture"
    (source / "photos" / "day 1").mkdir(parents=True)
    (source / "photos" / "day 1" / NFD_NAME).write_text("facade")
    (source / "mesh.obj").write_text("v 0 0 0\n")
    (source / "empty.txt").write_bytes(b"")
    before = snapshot(source)

    made = make_bag(source, tmp_path / "bag", processes=1)
    bagit.Bag(str(made)).validate()
    assert os.listdir(os.fsencode(made / "data" / "photos" / "day 1")) == [NFD_NAME.encode("utf-8")]
    assert f"data/photos/day 1/{NFD_NAME}" in manifest(made, "manifest-sha512.txt")
    assert snapshot(source) == before


def test_one_or_several_workers_make_the_same_manifests(tmp_path: Path) -> None:
    source = tmp_path / "scans"
    source.mkdir()
    for n in range(12):
        (source / f"{n:02}.bin").write_bytes(os.urandom(50_000 + n))
    one = make_bag(source, tmp_path / "one", processes=1)
    four = make_bag(source, tmp_path / "four", processes=4)
    for name in ("manifest-sha512.txt", "manifest-sha256.txt"):
        assert (one / name).read_bytes() == (four / name).read_bytes()
    bagit.Bag(str(four)).validate()


def test_percent_signs_are_encoded_in_manifests(tmp_path: Path) -> None:
    # RFC 8493 §2.1.3 (bagit-python does not decode %25, so it is not the judge here)
    source = tmp_path / "source"
    source.mkdir()
    (source / "100% done.txt").write_text("done")
    made = make_bag(source, tmp_path / "bag")
    paths = set(manifest(made, "manifest-sha256.txt"))
    assert paths == {"data/100%25 done.txt"}
    assert (made / "data" / "100% done.txt").read_text() == "done"


def test_destination_that_exists_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    destination = tmp_path / "bag"
    destination.mkdir()
    with pytest.raises(IntakeError) as caught:
        make_bag(source, destination)
    assert caught.value.problems == [f"{destination}: already exists"]
    assert list(destination.iterdir()) == []


def test_destination_inside_the_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    before = snapshot(source)
    with pytest.raises(IntakeError, match="lies inside the folder to be bagged"):
        make_bag(source, source / "bags" / "bag")
    assert snapshot(source) == before


def unsafe_source(tmp_path: Path, kind: str) -> tuple[Path, str, str]:
    """A folder with one thing a bag must not take; returns (folder, member, reason)."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    outside = tmp_path / "secret.txt"
    outside.write_text("not for the bag")
    if kind == "link out":
        (source / "secret.txt").symlink_to(outside)
        return source, "secret.txt", "points outside the package"
    if kind == "fifo":
        os.mkfifo(source / "pipe")
        return source, "pipe", "a FIFO (named pipe)"
    (source / "bell\x07.jpg").write_bytes(b"x")
    return source, "bell\\x07.jpg", "control character"


@pytest.mark.parametrize("kind", ["link out", "fifo", "control character"])
def test_unsafe_source_is_refused_and_nothing_is_left(tmp_path: Path, kind: str) -> None:
    source, member, reason = unsafe_source(tmp_path, kind)
    before_source = snapshot(source)
    parent = tmp_path / "bags"
    parent.mkdir()
    with pytest.raises(IntakeError) as caught:
        make_bag(source, parent / "bag")
    assert any(p.startswith(f"{member}: ") and reason in p for p in caught.value.problems)
    assert list(parent.iterdir()) == []  # neither the bag nor its unfinished copy
    assert snapshot(source) == before_source


def test_folder_over_the_limits_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for n in range(5):
        (source / f"{n}.txt").write_text("x")
    with pytest.raises(IntakeError, match="more than 4 files"):
        make_bag(source, tmp_path / "bag", policy=IngestPolicy(max_files=4))
    assert not (tmp_path / "bag").exists()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"Payload-Oxum": "1.1"}, "written by Arkhiv"),
        ({"bagging-date": "2001-01-01"}, "written by Arkhiv"),
        ({"Bad:Label": "x"}, "without ':'"),
        ({" Padded": "x"}, "without ':' or surrounding spaces"),
        ({"Contact-Name": "two\nlines"}, "single line"),
    ],
)
def test_bad_bag_info_fields_are_refused(tmp_path: Path, fields: dict, reason: str) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("a")
    with pytest.raises(IntakeError) as caught:
        make_bag(source, tmp_path / "bag", fields)
    label = next(iter(fields))
    assert caught.value.problems[0].startswith(f"bag-info field {label!r}: ")
    assert reason in caught.value.problems[0]
    assert not (tmp_path / "bag").exists()


def test_missing_or_empty_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IntakeError, match="not a folder"):
        make_bag(tmp_path / "nowhere", tmp_path / "bag")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IntakeError, match="holds no files"):
        make_bag(tmp_path / "empty", tmp_path / "bag")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_bag_made_here_fails_validation_once_changed(photos: Path, tmp_path: Path) -> None:
    # The validation above could not pass by accident: a changed payload byte is noticed.
    made = make_bag(photos, tmp_path / "bag")
    victim = next((made / "data").iterdir())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(made)).validate()


def test_capture_metadata_becomes_a_tag_file_and_the_bag_meets_arkhivs_profile(corpora, tmp_path):
    metadata = {"schema_version": "1.0", "object": {"title": "Bell tower"}}
    made = make_bag(
        corpora / "photogrammetry" / "opensfm-berlin" / "images",
        tmp_path / "bag",
        capture_metadata=metadata,
    )
    assert json.loads((made / "capture-metadata.json").read_text()) == metadata
    for algorithm in ("sha256", "sha512"):
        tags = manifest(made, f"tagmanifest-{algorithm}.txt")
        digest = hashlib.new(algorithm, (made / "capture-metadata.json").read_bytes()).hexdigest()
        assert tags["capture-metadata.json"] == digest
    assert [c for c in validate_profile(made) if c.outcome != "pass"] == []
