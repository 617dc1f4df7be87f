"""BagIt validation against the Library of Congress conformance suite (read in place) and bags
built here for the cases the suite lacks: names in another Unicode normalization, a flipped
byte, an extra file, a missing file."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import unicodedata
from pathlib import Path

import bagit
import pytest

from arkhiv.ingest.bag import BagReport, validate_bag
from arkhiv.ingest.model import Outcome
from tests.conftest import CORPORA

SUITE = "bagit-conformance-suite"
EXPECTED = CORPORA / SUITE / "CORPUS_EXPECTED_RESULTS.tsv"


def _suite_rows() -> list:
    if not EXPECTED.is_file():  # the corpora fixture skips (or fails) the test with the reason
        return [pytest.param(None, id="conformance-suite-missing")]
    with EXPECTED.open(newline="") as table:
        rows = list(csv.DictReader(table, delimiter="\t"))
    return [pytest.param(row, id=row["bag_path"].rstrip("/")) for row in rows]


def _outcomes(report: BagReport, outcome: Outcome) -> list:
    return [check for check in report.checks if check.outcome is outcome]


def _describe(report: BagReport) -> str:
    return "\n".join(
        f"{c.outcome.value} {c.name} {c.path}: {c.reason}"
        for c in report.checks
        if c.outcome in (Outcome.FAIL, Outcome.WARN)
    )


@pytest.mark.parametrize("row", _suite_rows())
def test_conformance_suite(corpora, row) -> None:
    """The TSV's verdicts: 'pass' valid; 'pass+warning' valid with at least one WARN; 'fail'
    invalid. 'fail-on-that-OS-only' bags use paths that only one OS can resolve (absolute,
    ~user, C:\\, UNC); Arkhiv refuses them on every OS, since an archive must stay portable."""
    report = validate_bag(corpora / SUITE / row["bag_path"])
    failures = _outcomes(report, Outcome.FAIL)
    warnings = _outcomes(report, Outcome.WARN)
    expected = row["expected"]
    if expected == "pass":
        assert report.valid and not failures, _describe(report)
    elif expected == "pass+warning":
        assert report.valid and not failures, _describe(report)
        assert warnings, "a bag the suite expects to warn about gave no WARN"
    else:
        assert expected in ("fail", "fail-on-that-OS-only")
        assert not report.valid and failures, _describe(report)
    for check in failures + warnings:
        assert check.reason.strip(), check
    assert report.valid == (not failures)


def test_suite_table_is_complete(corpora) -> None:
    with (corpora / SUITE / "CORPUS_EXPECTED_RESULTS.tsv").open(newline="") as table:
        rows = list(csv.DictReader(table, delimiter="\t"))
    assert len(rows) == 60
    assert all((corpora / SUITE / row["bag_path"]).is_dir() for row in rows)


def test_invalid_whitespace_in_bagit_txt_is_named(corpora) -> None:
    """bagit-python passes this bag: it strips the space before the colon. RFC 8493 §2.1.1
    fixes the declaration's exact form ("BagIt-Version: M.N"), and §2.2.2 says a label must not
    end with whitespace."""
    report = validate_bag(corpora / SUITE / "v1.0/invalid/bagit-with-invalid-whitespace")
    assert not report.valid
    failures = _outcomes(report, Outcome.FAIL)
    assert {check.name for check in failures} == {"bag.bagit_txt"}
    assert all(check.path == "bagit.txt" for check in failures)
    assert any("'BagIt-Version '" in check.reason for check in failures)
    assert any("'Tag-File-Character-Encoding '" in check.reason for check in failures)
    assert bagit.Bag(str(corpora / SUITE / "v1.0/invalid/bagit-with-invalid-whitespace")).is_valid()


def test_normalization_duplicate_is_verified_once(corpora) -> None:
    """The manifest lists one file in NFD and NFC; bagit-python fails it on a checksum of the
    NFD name it cannot open. Arkhiv warns about both forms and verifies the one file."""
    bag = corpora / SUITE / "v0.97/warning/same-filename-listed-twice-with-different-normalization"
    report = validate_bag(bag)
    assert report.valid, _describe(report)
    assert len(report.payload) == 1
    (digests,) = report.payload.values()
    assert digests["sha512"] == hashlib.sha512(b"").hexdigest()
    warned = " ".join(check.reason for check in _outcomes(report, Outcome.WARN))
    assert "NFD" in warned and "NFC" in warned


# -- bags made here ------------------------------------------------------------------------


def _bagit_bag(root: Path, files: dict[str, bytes], checksums=("sha256", "md5")) -> Path:
    """A bag written by bagit-python, the reference implementation."""
    root.mkdir()
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    bagit.make_bag(str(root), {"Contact-Name": "Arkhiv test"}, checksums=list(checksums))
    return root


PHOTOS = {
    "photos/a.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40,
    "photos/b.jpg": b"\xff\xd8\xff\xe1" + b"b" * 5000,
    "model/mesh.ply": b"ply\nformat ascii 1.0\nend_header\n",
    "empty.txt": b"",
}


def test_bag_made_by_bagit_python_is_valid(tmp_path) -> None:
    bag = _bagit_bag(tmp_path / "bag", PHOTOS)
    report = validate_bag(bag)
    assert report.valid, _describe(report)
    assert report.version == "0.97"
    assert not _outcomes(report, Outcome.WARN), _describe(report)
    passed = {check.name for check in _outcomes(report, Outcome.PASS)}
    assert {
        "bag.structure",
        "bag.bagit_txt",
        "bag.manifest",
        "bag.completeness",
        "bag.checksum",
        "bag.oxum",
        "bag.tagmanifest",
    } <= passed
    assert report.bag_info["Contact-Name"] == ["Arkhiv test"]
    assert report.bag_info["Payload-Oxum"] == [f"{sum(map(len, PHOTOS.values()))}.4"]


def test_payload_digests_equal_hashlib(tmp_path) -> None:
    bag = _bagit_bag(tmp_path / "bag", PHOTOS, checksums=("md5", "sha1"))
    report = validate_bag(bag)
    assert report.valid, _describe(report)
    assert set(report.payload) == {f"data/{name}" for name in PHOTOS}
    for name, content in PHOTOS.items():
        assert report.payload[f"data/{name}"] == {
            algorithm: hashlib.new(algorithm, content).hexdigest()
            for algorithm in ("md5", "sha1", "sha512", "sha256")
        }
        assert report.on_disk[f"data/{name}"] == f"data/{name}"
        assert report.sizes[f"data/{name}"] == len(content)
    expected_tags = {"bagit.txt", "bag-info.txt", "manifest-md5.txt", "manifest-sha1.txt"}
    expected_tags |= {"tagmanifest-md5.txt", "tagmanifest-sha1.txt"}
    assert set(report.tag_files) == expected_tags
    for name, digests in report.tag_files.items():
        content = (bag / name).read_bytes()
        for algorithm, digest in digests.items():
            assert digest == hashlib.new(algorithm, content).hexdigest()
        assert {"sha512", "sha256"} <= set(digests)


def test_corrupted_payload_byte_names_file_and_every_algorithm(tmp_path) -> None:
    bag = _bagit_bag(tmp_path / "bag", PHOTOS)
    target = bag / "data/photos/a.jpg"
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0x01
    target.write_bytes(bytes(content))
    report = validate_bag(bag)
    assert not report.valid
    failures = _outcomes(report, Outcome.FAIL)
    assert {check.name for check in failures} == {"bag.checksum"}  # same size: Oxum still holds
    assert {check.path for check in failures} == {"data/photos/a.jpg"}
    assert {check.detail["algorithm"] for check in failures} == {"sha256", "md5"}
    for check in failures:
        algorithm = check.detail["algorithm"]
        assert algorithm in check.reason and f"manifest-{algorithm}.txt" in check.reason
        assert check.detail["actual"] == hashlib.new(algorithm, bytes(content)).hexdigest()
    # The other files are still reported, with what they hold.
    assert report.payload["data/photos/a.jpg"]["sha512"] == hashlib.sha512(content).hexdigest()


def test_extra_file_fails_with_its_path(tmp_path) -> None:
    bag = _bagit_bag(tmp_path / "bag", PHOTOS)
    (bag / "data/photos/c.jpg").write_bytes(b"not in any manifest")
    report = validate_bag(bag)
    assert not report.valid
    completeness = [c for c in _outcomes(report, Outcome.FAIL) if c.name == "bag.completeness"]
    assert [check.path for check in completeness] == ["data/photos/c.jpg"]
    assert "no payload manifest" in completeness[0].reason
    assert any(check.name == "bag.oxum" for check in _outcomes(report, Outcome.FAIL))


def test_missing_file_fails_with_its_path(tmp_path) -> None:
    bag = _bagit_bag(tmp_path / "bag", PHOTOS)
    (bag / "data/model/mesh.ply").unlink()
    report = validate_bag(bag)
    assert not report.valid
    completeness = [c for c in _outcomes(report, Outcome.FAIL) if c.name == "bag.completeness"]
    assert [check.path for check in completeness] == ["data/model/mesh.ply"]
    assert "manifest-md5.txt" in completeness[0].reason
    assert "data/model/mesh.ply" not in report.payload


def _hand_bag(
    root: Path, files: dict[str, bytes], manifest_names: dict[str, str] | None = None
) -> Path:
    """A BagIt 1.0 bag with a sha256 manifest, written line by line. `manifest_names` maps a
    file's name on disk to the (raw) name its manifest line writes."""
    manifest_names = manifest_names or {}
    (root / "data").mkdir(parents=True)
    lines = []
    for name, content in files.items():
        target = root / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written = manifest_names.get(name, name)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  data/{written}\n")
    (root / "bagit.txt").write_bytes(b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    oxum = f"{sum(map(len, files.values()))}.{len(files)}"
    (root / "bag-info.txt").write_text(f"Payload-Oxum: {oxum}\n", encoding="utf-8")
    (root / "manifest-sha256.txt").write_text("".join(lines), encoding="utf-8")
    return root


@pytest.mark.parametrize(("manifest_form", "disk_form"), [("NFC", "NFD"), ("NFD", "NFC")])
def test_name_in_another_unicode_normalization_is_the_same_file(
    tmp_path, manifest_form, disk_form
) -> None:
    """A bag made on Linux and copied through macOS (NFD names) or the reverse."""
    name = "Núñez/Ångström σκηνή.obj"
    on_disk = unicodedata.normalize(disk_form, name)
    in_manifest = unicodedata.normalize(manifest_form, name)
    assert on_disk != in_manifest
    content = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    bag = _hand_bag(tmp_path / "bag", {on_disk: content}, {on_disk: in_manifest})
    assert (bag / "data" / on_disk).exists() and not (bag / "data" / in_manifest).exists()

    report = validate_bag(bag)

    assert report.valid, _describe(report)
    (warning,) = [c for c in _outcomes(report, Outcome.WARN) if c.name == "bag.normalization"]
    assert warning.detail == {
        "manifest_name": f"data/{in_manifest}",
        "disk_name": f"data/{on_disk}",
    }
    assert ascii(f"data/{in_manifest}") in warning.reason
    assert ascii(f"data/{on_disk}") in warning.reason
    assert manifest_form in warning.reason and disk_form in warning.reason
    assert report.payload[f"data/{in_manifest}"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert report.on_disk[f"data/{in_manifest}"] == f"data/{on_disk}"


def test_percent_encoded_names_in_bagit_1_0(tmp_path) -> None:
    """RFC 8493 §2.1.3: CR, LF and % are percent-encoded in manifests, and nothing else."""
    files = {"100%.txt": b"percent", "line\nbreak.txt": b"newline", "%41.txt": b"literal"}
    written = {"100%.txt": "100%25.txt", "line\nbreak.txt": "line%0Abreak.txt"}
    written["%41.txt"] = "%2541.txt"
    report = validate_bag(_hand_bag(tmp_path / "bag", files, written))
    assert report.valid, _describe(report)
    assert set(report.payload) == {f"data/{name}" for name in files}


def test_case_variant_alone_is_missing(tmp_path) -> None:
    """Only a second entry that differs in case from a present, identical one is tolerated."""
    bag = _hand_bag(tmp_path / "bag", {"hello.txt": b"hello\n"}, {"hello.txt": "HELLO.txt"})
    report = validate_bag(bag)
    assert not report.valid
    paths = {c.path for c in _outcomes(report, Outcome.FAIL) if c.name == "bag.completeness"}
    assert paths == {"data/HELLO.txt", "data/hello.txt"}


def test_duplicate_line_fails_in_bagit_1_0(tmp_path) -> None:
    bag = _hand_bag(tmp_path / "bag", {"a.txt": b"a"})
    manifest = bag / "manifest-sha256.txt"
    manifest.write_text(manifest.read_text() * 2)
    report = validate_bag(bag)
    assert not report.valid
    (failure,) = _outcomes(report, Outcome.FAIL)
    assert failure.name == "bag.manifest" and failure.path == "data/a.txt"


def test_symlink_and_fifo_in_payload_fail_without_being_read(tmp_path) -> None:
    bag = _hand_bag(tmp_path / "bag", {"a.txt": b"a"})
    (tmp_path / "outside.txt").write_text("secret")
    (bag / "data/link.txt").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(bag / "data/pipe")  # opening it would block forever
    report = validate_bag(bag)
    assert not report.valid
    structure = {c.path: c.reason for c in _outcomes(report, Outcome.FAIL)}
    assert "symbolic link" in structure["data/link.txt"]
    assert "not a regular file" in structure["data/pipe"]


def test_unfetched_file_of_a_holey_bag_fails(tmp_path) -> None:
    bag = _hand_bag(tmp_path / "bag", {"a.txt": b"a", "b.txt": b"b"})
    (bag / "fetch.txt").write_text("https://example.org/b.txt 1 data/b.txt\n")
    (bag / "data/b.txt").unlink()
    report = validate_bag(bag)
    assert not report.valid
    (missing,) = [c for c in _outcomes(report, Outcome.FAIL) if c.name == "bag.completeness"]
    assert missing.path == "data/b.txt" and "fetch.txt" in missing.reason


@pytest.mark.parametrize(
    ("case", "damage"),
    [
        ("not a directory", lambda bag: shutil.rmtree(bag)),
        ("no bagit.txt", lambda bag: (bag / "bagit.txt").unlink()),
        ("bagit.txt not UTF-8", lambda bag: (bag / "bagit.txt").write_bytes(b"\xffBagIt")),
        ("bagit.txt a directory", lambda bag: _replace_with_directory(bag / "bagit.txt")),
        ("manifest not UTF-8", lambda bag: (bag / "manifest-sha256.txt").write_bytes(b"\xfe\xff")),
        ("manifest garbage", lambda bag: (bag / "manifest-sha256.txt").write_text("nonsense\n")),
        ("manifest a directory", lambda bag: _replace_with_directory(bag / "manifest-sha256.txt")),
        ("no manifest", lambda bag: (bag / "manifest-sha256.txt").unlink()),
        ("bag-info not UTF-8", lambda bag: (bag / "bag-info.txt").write_bytes(b"A: \xff\xfe\n")),
        ("bag-info without colon", lambda bag: (bag / "bag-info.txt").write_text("nonsense\n")),
        ("bad Payload-Oxum", lambda bag: (bag / "bag-info.txt").write_text("Payload-Oxum: x\n")),
        ("no data directory", lambda bag: shutil.rmtree(bag / "data")),
        ("version 2.0", lambda bag: (bag / "bagit.txt").write_text(_declaration("2.0"))),
        ("unknown encoding", lambda bag: (bag / "bagit.txt").write_text(_declaration("1.0", "X"))),
        ("payload a directory", lambda bag: _replace_with_directory(bag / "data/a.txt")),
    ],
)
def test_unparseable_bags_fail_without_traceback(tmp_path, case, damage) -> None:
    bag = _hand_bag(tmp_path / "bag", {"a.txt": b"a"})
    damage(bag)
    report = validate_bag(bag)
    assert not report.valid, case
    failures = _outcomes(report, Outcome.FAIL)
    assert failures and all(check.reason.strip() for check in failures)
    assert not any("validation stopped" in check.reason for check in failures), _describe(report)


def _declaration(version: str, encoding: str = "UTF-8") -> str:
    return f"BagIt-Version: {version}\nTag-File-Character-Encoding: {encoding}\n"


def _replace_with_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


def test_unknown_extra_algorithm_is_a_caller_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="whirlpool"):
        validate_bag(tmp_path, extra_algorithms=("sha512", "whirlpool"))
