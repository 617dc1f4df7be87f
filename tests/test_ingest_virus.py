"""The virus check against the real ClamAV, with a signature database written here: a body
signature (.ndb) for a test string and a hash signature (.hdb) for one file's exact content.
One prepared tree holds most cases and is scanned once; clamd is tested when it is installed."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from arkhiv.ingest.model import Outcome
from arkhiv.ingest.virus import CLAMAV_SIZE_LIMIT, TOO_LARGE, VirusReport, scan_tree
from arkhiv.policies.ingest import IngestPolicy
from tests.clamd_process import start_clamd
from tests.conftest import require

# Built at run time, so this file itself never carries the signature it tests.
BODY = ("ARKHIV-TEST-SIGNATURE-" + "7f3a9c1e").encode()
HASHED = b"ARKHIV hash-signed test content\n"
BODY_SIG = "Arkhiv.Test.Body.UNOFFICIAL"  # ClamAV names signatures outside its own databases so
HASH_SIG = "Arkhiv.Test.Hash.UNOFFICIAL"
MAX_FILE = 64 * 1024  # the policy's --max-filesize in the prepared tree

UNICODE_DIR = "sub dir/ünïcödé ☃"
INFECTED = f"{UNICODE_DIR}/scan: result FOUND.bin"  # ': ' and FOUND in a name must not confuse
TOO_BIG = "raw/scan [2 GiB] (sparse).bin"  # regular expression characters in the excluded path
DEEP = "/".join(f"level{n}" for n in range(20)) + "/deep.bin"  # clamscan skips >15 levels


def _clamscan() -> None:
    require("clamav", None if shutil.which("clamscan") else "clamscan not installed (clamav)")


def _infected_bytes() -> bytes:
    return os.urandom(2048) + BODY + os.urandom(2048)


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("signatures")
    (folder / "arkhiv-test.ndb").write_text(f"Arkhiv.Test.Body:0:*:{BODY.hex()}\n")
    md5 = hashlib.md5(HASHED).hexdigest()
    (folder / "arkhiv-test.hdb").write_text(f"{md5}:{len(HASHED)}:Arkhiv.Test.Hash\n")
    return folder


def _policy(database: Path, **changes) -> IngestPolicy:
    return IngestPolicy(clamav_database=str(database), **changes)


def _write(root: Path, rel: str, data: bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _encrypted_zip() -> bytes:
    """A zip whose member is flagged encrypted, as a password-protected one is."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("secret.txt", b"x" * 100)
    data = bytearray(buffer.getvalue())
    data[6] |= 1  # general purpose flags of the local header
    central = data.find(b"PK\x01\x02")
    data[central + 8] |= 1  # ... and of the central directory entry
    return bytes(data)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("package") / "bag"
    _write(root, "bagit.txt", b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    _write(root, "data/model.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n" * 100)
    _write(root, "data/empty.txt", b"")
    _write(root, INFECTED, _infected_bytes())
    _write(root, "data/hashed.bin", HASHED)
    _write(root, " leading and trailing ", _infected_bytes())
    _write(root, DEEP, _infected_bytes())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("textures/readme.txt", b"nothing here")
        archive.writestr("textures/payload.bin", b"padding " * 500 + BODY)
    _write(root, "data/textures.zip", buffer.getvalue())
    _write(root, "data/encrypted.zip", _encrypted_zip())
    # Over the policy's file limit, and infected: ClamAV skips it, so it is neither clean nor
    # (as far as anyone knows) infected.
    _write(root, "data/over-limit.bin", _infected_bytes() + b"\0" * MAX_FILE)
    # 2 GiB, sparse (no disk used), the signature at its start: were ClamAV to read it, it would
    # be found.
    big = _write(root, TOO_BIG, BODY)
    os.truncate(big, CLAMAV_SIZE_LIMIT)
    # A name with a line break and one that is not UTF-8: clamscan prints both raw.
    os.makedirs(os.fsencode(root / "odd"), exist_ok=True)
    for name in (b"line\nbreak.bin", b"latin1-\xe9t\xe9.bin"):
        Path(os.fsdecode(os.fsencode(root / "odd") + b"/" + name)).write_bytes(_infected_bytes())
    outside = _write(root.parent, "outside.bin", _infected_bytes())
    (root / "data" / "link.bin").symlink_to(outside)
    os.mkfifo(root / "data" / "fifo")
    return root


@pytest.fixture(scope="module")
def report(tree, database) -> VirusReport:
    _clamscan()
    started = time.monotonic()
    result = scan_tree(tree, _policy(database, virus_scan_max_file_bytes=MAX_FILE))
    print(f"clamscan over the prepared tree: {time.monotonic() - started:.2f} s")
    return result


def _checks(report: VirusReport, path: str) -> list:
    return [check for check in report.checks if check.path == path]


def test_infected_file_in_unicode_folder_is_named_with_its_signature(report):
    assert (INFECTED, BODY_SIG) in report.infected
    [check] = _checks(report, INFECTED)
    assert check.name == "virus.scan"
    assert check.outcome == Outcome.FAIL
    assert check.detail == {"signature": BODY_SIG}
    assert not report.clean


def test_hash_signature_and_odd_names(report):
    infected = dict(report.infected)
    assert infected["data/hashed.bin"] == HASH_SIG
    assert infected[" leading and trailing "] == BODY_SIG
    assert infected["odd/line\nbreak.bin"] == BODY_SIG
    assert infected[os.fsdecode(b"odd/latin1-\xe9t\xe9.bin")] == BODY_SIG


def test_signature_inside_a_zip_is_found(report):
    assert ("data/textures.zip", BODY_SIG) in report.infected


def test_folder_deeper_than_clamscans_default_is_scanned(report):
    assert (DEEP, BODY_SIG) in report.infected


def test_clean_files_are_neither_infected_nor_unscannable(report):
    flagged = {path for path, _ in report.infected} | {path for path, _ in report.unscannable}
    for path in ("bagit.txt", "data/model.obj", "data/empty.txt"):
        assert path not in flagged
        assert _checks(report, path) == []


def test_file_over_the_size_limit_is_unscannable_not_clean_not_infected(report):
    unscannable = dict(report.unscannable)
    assert "Heuristics.Limits.Exceeded.MaxFileSize" in unscannable["data/over-limit.bin"]
    assert "data/over-limit.bin" not in dict(report.infected)
    [check] = _checks(report, "data/over-limit.bin")
    assert check.outcome == Outcome.WARN
    assert "signature" not in check.detail  # the pipeline must not take it for a virus


def test_file_of_2_gib_is_unscannable_and_never_given_to_clamav(report):
    assert (TOO_BIG, TOO_LARGE) in report.unscannable
    [check] = _checks(report, TOO_BIG)
    assert check.outcome == Outcome.WARN
    assert check.detail == {"size": CLAMAV_SIZE_LIMIT, "clamav": "Excluded"}


def test_encrypted_archive_is_unscannable(report):
    reason = dict(report.unscannable)["data/encrypted.zip"]
    assert reason.startswith("encrypted")
    assert "data/encrypted.zip" not in dict(report.infected)


def test_links_and_special_files_are_not_followed_but_reported(report):
    unscannable = dict(report.unscannable)
    assert unscannable["data/link.bin"].startswith("symbolic link")
    assert unscannable["data/fifo"].startswith("not a regular file")
    assert all(not path.startswith("..") for path, _ in report.infected)


def test_the_whole_report(report):
    assert sorted(path for path, _ in report.infected) == sorted(
        [
            INFECTED,
            DEEP,
            " leading and trailing ",
            "data/hashed.bin",
            "data/textures.zip",
            "odd/line\nbreak.bin",
            os.fsdecode(b"odd/latin1-\xe9t\xe9.bin"),
        ]
    )
    assert sorted(path for path, _ in report.unscannable) == sorted(
        [TOO_BIG, "data/over-limit.bin", "data/encrypted.zip", "data/link.bin", "data/fifo"]
    )
    # Every check is about a finding: no error, nothing unaccounted for.
    assert len(report.checks) == len(report.infected) + len(report.unscannable)
    assert report.scanned == 7 + 3  # the infected ones, bagit.txt, model.obj, empty.txt
    assert report.engine.startswith(_clamscan_version())


def _clamscan_version() -> str:
    out = subprocess.run(["clamscan", "--version"], capture_output=True, text=True).stdout
    return out.strip().removeprefix("ClamAV ").split("/")[0]


def test_clean_tree_is_clean(tmp_path, database):
    _clamscan()
    _write(tmp_path, "data/a.txt", b"a clean file\n")
    _write(tmp_path, "data/b c/d.ply", b"ply\nformat ascii 1.0\nend_header\n")
    report = scan_tree(tmp_path, _policy(database))
    assert report.clean
    assert report.infected == [] and report.unscannable == []
    [check] = report.checks
    assert (check.outcome, check.reason) == (Outcome.PASS, "2 files scanned, no virus found")
    assert report.engine.startswith(_clamscan_version())


def test_reject_unscannable_fails_the_check(tmp_path, database):
    _clamscan()
    _write(tmp_path, "big.bin", b"\0" * 2048)
    report = scan_tree(tmp_path, _policy(database, virus_scan_max_file_bytes=1024))
    [check] = report.checks
    assert check.outcome == Outcome.WARN
    report = scan_tree(
        tmp_path, _policy(database, virus_scan_max_file_bytes=1024, reject_unscannable=True)
    )
    [check] = report.checks
    assert check.outcome == Outcome.FAIL
    assert report.unscannable and not report.infected and not report.clean


@pytest.mark.parametrize("broken", ["missing", "malformed"])
def test_broken_database_fails_the_check(tmp_path, broken):
    _clamscan()
    _write(tmp_path, "data/a.txt", b"a clean file\n")
    database = tmp_path.parent / f"{tmp_path.name}-signatures.ndb"
    if broken == "malformed":
        database.write_text("this is not a signature\n")
    report = scan_tree(tmp_path, IngestPolicy(clamav_database=str(database)))
    assert not report.clean
    [check] = report.checks
    assert check.outcome == Outcome.FAIL
    assert check.reason.startswith("ClamAV failed (exit 2): ")
    assert report.errors == [(None, check.reason)]
    assert ("No such file" if broken == "missing" else "Malformed database") in check.reason


def test_clamav_missing_fails_the_check(tmp_path, monkeypatch, database):
    _write(tmp_path, "a.txt", b"a clean file\n")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    report = scan_tree(tmp_path, _policy(database))
    assert not report.clean
    [check] = report.checks
    assert check.outcome == Outcome.FAIL
    assert check.reason.startswith("virus check unavailable: ")


def test_pictures_meet_fuzzy_image_hashes_only_when_the_policy_asks(tmp_path):
    """The fuzzy hash decodes every picture (slow on photo sets), so it is off by default."""
    _clamscan()
    require("clamav", None if shutil.which("sigtool") else "sigtool not installed (clamav)")
    from PIL import Image

    photo = tmp_path / "package" / "photo.jpg"
    photo.parent.mkdir()
    Image.effect_mandelbrot((256, 192), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo)
    listed = subprocess.run(
        ["sigtool", "--fuzzy-img", str(photo)], capture_output=True, text=True, check=True
    )
    fuzzy_hash = listed.stdout.split(": ")[-1].strip()
    signatures = tmp_path / "signatures"
    signatures.mkdir()
    (signatures / "fuzzy.ldb").write_text(
        f"Arkhiv.Test.Picture;Engine:150-255,Target:0;0;fuzzy_img#{fuzzy_hash}#0\n"
    )

    by_default = scan_tree(photo.parent, _policy(signatures))
    assert by_default.clean and by_default.scanned == 1
    asked = scan_tree(photo.parent, _policy(signatures, virus_scan_images_by_fuzzy_hash=True))
    assert asked.infected == [("photo.jpg", "Arkhiv.Test.Picture.UNOFFICIAL")]


def test_missing_package_folder_fails(tmp_path, database):
    report = scan_tree(tmp_path / "nothing", _policy(database))
    assert not report.clean
    assert report.checks[0].outcome == Outcome.FAIL


def test_clamd_socket_unreachable_fails(tmp_path, database):
    report = scan_tree(tmp_path, IngestPolicy(clamd_socket=str(tmp_path / "no.sock")))
    assert not report.clean
    [check] = report.checks
    assert check.outcome == Outcome.FAIL
    assert check.reason.startswith("virus check unavailable: clamd at ")


# clamd ------------------------------------------------------------------------------------------


def _start_clamd(folder: Path, database: Path, alert_exceeds_max: bool) -> subprocess.Popen:
    policy = IngestPolicy(virus_scan_max_file_bytes=1 << 20)
    try:
        return start_clamd(folder, database, policy, alert_exceeds_max=alert_exceeds_max)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def clamd(tmp_path_factory, database):
    """A clamd of our own on a socket in a temporary folder (clamav-daemon package)."""
    require("clamd", None if shutil.which("clamd") else "clamd not installed (clamav-daemon)")
    folder = tmp_path_factory.mktemp("clamd")
    process = _start_clamd(folder, database, alert_exceeds_max=True)
    yield folder / "clamd.sock"
    process.terminate()
    process.wait(timeout=30)


def test_clamd_agrees_with_clamscan(clamd, tree, report):
    policy = IngestPolicy(clamd_socket=str(clamd), virus_scan_max_file_bytes=MAX_FILE)
    by_clamd = scan_tree(tree, policy)
    assert sorted(by_clamd.infected) == sorted(report.infected)
    assert sorted(path for path, _ in by_clamd.unscannable) == sorted(
        path for path, _ in report.unscannable
    )
    assert (TOO_BIG, TOO_LARGE) in by_clamd.unscannable
    assert by_clamd.engine == _clamscan_version()
    assert len(by_clamd.checks) == len(by_clamd.infected) + len(by_clamd.unscannable)


def test_clamd_reports_its_own_limits(clamd, tmp_path):
    # Under the policy's limit, over clamd's MaxFileSize (1M): clamd's alert, not clean.
    _write(tmp_path, "large.bin", BODY + b"\0" * (2 * 1024 * 1024))
    _write(tmp_path, "clean.txt", b"clean\n")
    report = scan_tree(tmp_path, IngestPolicy(clamd_socket=str(clamd)))
    [(path, reason)] = report.unscannable
    assert path == "large.bin" and "Heuristics.Limits.Exceeded.MaxFileSize" in reason
    assert report.infected == [] and report.scanned == 1


def test_clamd_that_passes_files_over_its_limits_is_refused(tmp_path, database):
    require("clamd", None if shutil.which("clamd") else "clamd not installed (clamav-daemon)")
    process = _start_clamd(tmp_path / "clamd", database, alert_exceeds_max=False)
    try:
        _write(tmp_path / "package", "a.txt", b"clean\n")
        policy = IngestPolicy(clamd_socket=str(tmp_path / "clamd" / "clamd.sock"))
        report = scan_tree(tmp_path / "package", policy)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not report.clean
    [check] = report.checks
    assert check.outcome == Outcome.FAIL
    assert "AlertExceedsMax yes" in check.reason
