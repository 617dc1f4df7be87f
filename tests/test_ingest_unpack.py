"""Intake of submission packages. Hostile packages, generated here with zipfile and tarfile, are
refused with a reason that names the member; after each refusal nothing was written anywhere
outside staging (a sentinel folder lies beside it) and staging is empty again. Real bags come
through byte for byte from a folder, a zip, a tar and a tar.gz."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from arkhiv.ingest.model import IntakeError
from arkhiv.ingest.unpack import receive
from arkhiv.policies.ingest import IngestPolicy

BASIC_BAG = "bagit-conformance-suite/v1.0/valid/basicBag"
MIB = 1024 * 1024
NFD_NAME = unicodedata.normalize("NFD", "Café Ωmega ä.txt")
SENTINEL_TEXT = "must stay as it is\n"


@dataclass
class Site:
    root: Path  # everything the test touches lies under it
    staging: Path
    sentinel: Path  # beside staging: a package that escaped would land here first
    packages: Path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    work = tmp_path / "work"
    staging = work / "staging"
    staging.mkdir(parents=True, mode=0o700)
    sentinel = work / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text(SENTINEL_TEXT)
    packages = tmp_path / "packages"
    packages.mkdir()
    return Site(tmp_path, staging, sentinel, packages)


def tree(root: Path) -> dict[str, tuple]:
    """Everything under `root` without following links: path -> kind and content."""
    found: dict[str, tuple] = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(folder, name)
            mode = path.lstat().st_mode
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                found[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[key] = ("other", stat.S_IFMT(mode))
    return found


def refused(site: Site, package: Path, policy: IngestPolicy | None = None) -> list[str]:
    """Receive `package`, expecting a refusal that leaves every place as it was."""
    before = tree(site.root)
    with pytest.raises(IntakeError) as caught:
        receive(package, site.staging, policy or IngestPolicy())
    assert site.staging.is_dir()
    assert list(site.staging.iterdir()) == []
    assert sorted(p.name for p in site.sentinel.iterdir()) == ["keep.txt"]
    assert (site.sentinel / "keep.txt").read_text() == SENTINEL_TEXT
    assert tree(site.root) == before  # nothing appeared, changed or vanished anywhere
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def names(problems: list[str], member: str, reason: str) -> bool:
    """Whether one problem names `member` and gives `reason`."""
    return any(problem.startswith(f"{member}: ") and reason in problem for problem in problems)


def contents(root: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a folder): what a byte-for-byte comparison needs."""
    return {
        path.relative_to(root).as_posix(): None if path.is_dir() else path.read_bytes()
        for path in root.rglob("*")
    }


# -- building packages -----------------------------------------------------------------------


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, data


def make_tar(
    path: Path, entries: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w", **options
) -> Path:
    with tarfile.open(path, mode, **options) as archive:
        for info, data in entries:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def package_from_tar_entries(
    site: Site, kind: str, entries: list[tuple[tarfile.TarInfo, bytes]]
) -> Path:
    """The same members as a zip, a tar or a tar.gz (regular files only for a zip)."""
    if kind == "zip":
        return make_zip(site.packages / "package.zip", [(i.name, d) for i, d in entries])
    mode = "w:gz" if kind == "tar.gz" else "w"
    return make_tar(site.packages / f"package.{kind}", entries, mode)


def archive_folder(folder: Path, package: Path, kind: str) -> Path:
    """`folder` packed as `kind` with its own name as the one top-level folder."""
    if kind == "zip":
        with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(package, "w:gz" if kind == "tar.gz" else "w") as archive:
            archive.add(folder, folder.name)
    return package


class Zeros(io.RawIOBase):
    """`size` zero bytes, produced as read: a bomb is built without holding it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def patch_zip_headers(path: Path, update) -> None:
    """Apply `update(data, header_offset, is_central)` to every local and central header."""
    data = bytearray(path.read_bytes())
    for signature, central in ((b"PK\x03\x04", False), (b"PK\x01\x02", True)):
        at = data.find(signature)
        while at >= 0:
            update(data, at, central)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


# -- hostile packages ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_path_traversal_is_refused(site: Site, kind: str) -> None:
    package = package_from_tar_entries(
        site,
        kind,
        [
            entry("bag/data/fine.txt", b"fine"),
            entry("../evil.txt", b"escaped"),
            entry("bag/../../sentinel/keep.txt", b"overwritten"),
        ],
    )
    problems = refused(site, package)
    assert names(problems, "../evil.txt", "'..' in the path leads outside the package")
    assert names(problems, "bag/../../sentinel/keep.txt", "outside the package")
    assert not any("fine.txt" in problem for problem in problems)


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_absolute_member_path_is_refused(site: Site, kind: str) -> None:
    absolute = str(site.root / "absolute-evil.txt")
    package = package_from_tar_entries(site, kind, [entry(absolute, b"escaped")])
    assert names(refused(site, package), absolute, "absolute path")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("..\\evil.txt", "backslash in the name"),
        ("bag\\..\\..\\evil.txt", "backslash in the name"),
        ("C:/evil.txt", "drive letter"),
        ("c:evil.txt", "drive letter"),
    ],
)
def test_windows_path_tricks_are_refused(site: Site, name: str, reason: str) -> None:
    package = make_zip(site.packages / "windows.zip", [(name, b"escaped")])
    assert names(refused(site, package), name, reason)


def test_tar_symlink_escape_is_refused(site: Site) -> None:
    # The classic: a link out of the package, then a file written "through" it.
    package = make_tar(
        site.packages / "symlink.tar",
        [
            entry("bag/escape", kind=tarfile.SYMTYPE, linkname="../../sentinel"),
            entry("bag/escape/keep.txt", b"overwritten through the link"),
            entry("bag/data/passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        ],
    )
    problems = refused(site, package)
    assert names(problems, "bag/escape", "symbolic link to ../../sentinel")
    assert names(problems, "bag/data/passwd", "links are not accepted")


def test_tar_hard_link_to_outside_is_refused(site: Site) -> None:
    outside = str(site.sentinel / "keep.txt")
    package = make_tar(
        site.packages / "hardlink.tar.gz",
        [
            entry("bag/data/fine.txt", b"fine"),
            entry("bag/data/keep.txt", kind=tarfile.LNKTYPE, linkname=outside),
        ],
        "w:gz",
    )
    problems = refused(site, package)
    assert names(problems, "bag/data/keep.txt", f"hard link to {outside}")


def test_zip_symlink_member_is_refused(site: Site) -> None:
    link = zipfile.ZipInfo("bag/data/link")
    link.create_system = 3  # Unix, where the mode says "symbolic link"
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    package = make_zip(site.packages / "link.zip", [(link, b"../../../sentinel/keep.txt")])
    assert names(refused(site, package), "bag/data/link", "symbolic link")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        (tarfile.CHRTYPE, "a device file"),
        (tarfile.BLKTYPE, "a device file"),
        (tarfile.FIFOTYPE, "a FIFO"),
    ],
)
def test_tar_special_file_member_is_refused(site: Site, kind: bytes, reason: str) -> None:
    device = entry("bag/data/null", kind=kind)[0]
    device.devmajor, device.devminor = 1, 3
    package = make_tar(site.packages / "device.tar", [entry("bag/a.txt", b"a"), (device, b"")])
    assert names(refused(site, package), "bag/data/null", reason)


def test_folder_symlink_pointing_outside_is_refused(site: Site) -> None:
    bag = site.packages / "bag"
    (bag / "data").mkdir(parents=True)
    (bag / "data" / "fine.txt").write_text("fine")
    (bag / "data" / "keep.txt").symlink_to(site.sentinel / "keep.txt")
    (bag / "data" / "up").symlink_to("../../../work/sentinel")
    problems = refused(site, bag)
    assert names(problems, "data/keep.txt", "points outside the package")
    assert names(problems, "data/up", "points outside the package")


def test_folder_symlink_to_a_folder_inside_is_not_followed(site: Site) -> None:
    bag = site.packages / "bag"
    (bag / "data").mkdir(parents=True)
    (bag / "data" / "fine.txt").write_text("fine")
    (bag / "loop").symlink_to(".")
    assert names(refused(site, bag), "loop", "links are not followed")


def test_folder_symlink_to_a_file_inside_is_copied_as_a_file(site: Site) -> None:
    bag = site.packages / "bag"
    (bag / "data").mkdir(parents=True)
    (bag / "data" / "scan.ply").write_bytes(b"ply\nformat ascii 1.0\n")
    (bag / "data" / "alias.ply").symlink_to("scan.ply")
    root = receive(bag, site.staging, IngestPolicy())
    alias = root / "data" / "alias.ply"
    assert not alias.is_symlink()
    assert alias.read_bytes() == b"ply\nformat ascii 1.0\n"
    assert (bag / "data" / "alias.ply").is_symlink()  # the source is left as it was


def test_fifo_in_a_folder_is_refused(site: Site) -> None:
    bag = site.packages / "bag"
    (bag / "data").mkdir(parents=True)
    (bag / "data" / "fine.txt").write_text("fine")
    os.mkfifo(bag / "data" / "pipe")  # opening it would block: intake must never do so
    assert names(refused(site, bag), "data/pipe", "a FIFO (named pipe)")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_decompression_bomb_is_refused(site: Site, kind: str) -> None:
    size = 50 * MIB
    if kind == "zip":
        package = site.packages / "bomb.zip"
        with (
            zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive,
            archive.open("bomb/zeros.bin", "w") as member,
        ):
            source = Zeros(size)
            while chunk := source.read(MIB):
                member.write(chunk)
    else:
        package = site.packages / "bomb.tar.gz"
        with tarfile.open(package, "w:gz") as archive:
            info = tarfile.TarInfo("bomb/zeros.bin")
            info.size = size
            archive.addfile(info, io.BufferedReader(Zeros(size)))
    assert package.stat().st_size < size / 500
    problems = refused(site, package, IngestPolicy(max_compression_ratio=100))
    assert names(problems, str(package), "limit max_compression_ratio")
    assert "bomb/zeros.bin" in problems[-1]


def test_lying_zip_header_does_not_let_more_through(site: Site) -> None:
    # The headers claim 1,000 bytes; 10 MiB of zeros follow. Only what the header admits may
    # come out, and the mismatch is caught.
    package = site.packages / "lying.zip"
    make_zip(package, [("bag/zeros.bin", bytes(10 * MIB))])

    def claim_small(data: bytearray, at: int, central: bool) -> None:
        size_at = at + (24 if central else 22)
        data[size_at : size_at + 4] = (1000).to_bytes(4, "little")

    patch_zip_headers(package, claim_small)
    assert names(refused(site, package), "bag/zeros.bin", "corrupt")


def test_too_many_files_are_refused(site: Site) -> None:
    package = make_zip(
        site.packages / "many.zip", [(f"bag/data/{n:02}.txt", b"x") for n in range(20)]
    )
    problems = refused(site, package, IngestPolicy(max_files=10))
    assert names(problems, str(package), "more than 10 files (limit max_files)")


def test_too_many_folders_are_refused(site: Site) -> None:
    package = make_tar(
        site.packages / "folders.tar",
        [entry(f"bag/{n:02}", kind=tarfile.DIRTYPE) for n in range(20)]
        + [entry("bag/a.txt", b"a")],
    )
    problems = refused(site, package, IngestPolicy(max_files=10))
    assert names(problems, str(package), "more than 10 folders")


@pytest.fixture(scope="module")
def ten_thousand_files(tmp_path_factory) -> Path:
    package = tmp_path_factory.mktemp("many") / "ten-thousand.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(10_000):
            archive.writestr(f"tiles/data/{n // 1000}/{n:05}.txt", f"{n}\n")
    return package


def test_ten_thousand_small_files_are_accepted(site: Site, ten_thousand_files: Path) -> None:
    root = receive(ten_thousand_files, site.staging, IngestPolicy())
    assert root == site.staging / "tiles"
    files = [path for path in root.rglob("*") if path.is_file()]
    assert len(files) == 10_000
    assert (root / "data" / "9" / "09999.txt").read_text() == "9999\n"


def test_ten_thousand_files_exceed_a_limit_of_9999(site: Site, ten_thousand_files: Path) -> None:
    problems = refused(site, ten_thousand_files, IngestPolicy(max_files=9999))
    assert names(problems, str(ten_thousand_files), "more than 9999 files")


@pytest.mark.parametrize("kind", ["zip", "tar", "folder"])
def test_package_over_the_size_limit_is_refused(site: Site, kind: str) -> None:
    big = os.urandom(2 * MIB)
    if kind == "folder":
        package = site.packages / "bag"
        package.mkdir()
        (package / "big.bin").write_bytes(big)
        member = "big.bin"
    else:
        package = package_from_tar_entries(site, kind, [entry("bag/big.bin", big)])
        member = "bag/big.bin"
    problems = refused(site, package, IngestPolicy(max_package_bytes=MIB))
    assert names(problems, str(package), "limit max_package_bytes")
    assert problems[-1].endswith(f"stopped at {member}")


def test_path_longer_than_the_limit_is_refused(site: Site) -> None:
    long_name = "bag/" + "x" * 60 + ".txt"
    package = make_zip(site.packages / "long.zip", [(long_name, b"x"), ("bag/ok.txt", b"ok")])
    problems = refused(site, package, IngestPolicy(max_path_length=40))
    assert names(problems, long_name, "longer than 40 characters")


def test_control_characters_and_nul_in_names_are_refused(site: Site) -> None:
    package = make_tar(
        site.packages / "names.tar",
        [entry("bag/bell\x07.txt", b"a"), entry("bag/é\x00hidden.txt", b"b")],
        format=tarfile.PAX_FORMAT,  # a pax record can carry a NUL, a ustar header cannot
    )
    problems = refused(site, package)
    assert names(problems, "bag/bell\\x07.txt", "control character")
    assert names(problems, "bag/é\\x00hidden.txt", "NUL byte")


def test_duplicate_and_clashing_members_are_refused(site: Site) -> None:
    package = make_tar(
        site.packages / "twice.tar",
        [
            entry("bag/a.txt", b"first"),
            entry("bag/a.txt", b"second"),
            entry("bag/b", b"a file"),
            entry("bag/b/c.txt", b"inside a file"),
        ],
    )
    problems = refused(site, package)
    assert names(problems, "bag/a.txt", "appears twice")
    assert names(problems, "bag/b/c.txt", "which is a file")


def test_zip_with_bzip2_member_is_refused(site: Site) -> None:
    package = site.packages / "bzip2.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("bag/a.txt", b"a" * 1000)
    assert names(refused(site, package), "bag/a.txt", "bzip2 compression")


def test_oversized_tar_header_is_refused(site: Site) -> None:
    # tarfile would read a pax header of any size whole into memory.
    info, data = entry("bag/a.txt", b"a")
    info.pax_headers = {"comment": "x" * (20 * MIB)}
    package = make_tar(site.packages / "header.tar", [(info, data)], format=tarfile.PAX_FORMAT)
    assert names(refused(site, package), str(package), "a tar header holds more than")


# -- broken packages -------------------------------------------------------------------------


@pytest.fixture
def random_bag(site: Site) -> Path:
    bag = site.packages / "random-bag"
    (bag / "data").mkdir(parents=True)
    for n in range(3):
        (bag / "data" / f"{n}.bin").write_bytes(os.urandom(100_000))
    (bag / "bagit.txt").write_text("BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    return bag


def cut(package: Path, keep: int) -> Path:
    data = package.read_bytes()
    package.write_bytes(data[:keep])
    return package


def test_truncated_zip_is_refused(site: Site, random_bag: Path) -> None:
    package = archive_folder(random_bag, site.packages / "cut.zip", "zip")
    cut(package, package.stat().st_size * 6 // 10)
    assert names(refused(site, package), str(package), "corrupt or truncated zip")


@pytest.mark.parametrize("fraction", [0.5, 0.99])
def test_truncated_tar_gz_is_refused(site: Site, random_bag: Path, fraction: float) -> None:
    package = archive_folder(random_bag, site.packages / "cut.tar.gz", "tar.gz")
    cut(package, int(package.stat().st_size * fraction))
    assert names(refused(site, package), str(package), "truncated gzip data")


def test_tar_gz_without_its_gzip_trailer_is_refused(site: Site, random_bag: Path) -> None:
    package = archive_folder(random_bag, site.packages / "cut.tar.gz", "tar.gz")
    cut(package, package.stat().st_size - 8)  # CRC-32 and length of the gzip trailer
    assert names(refused(site, package), str(package), "truncated gzip data")


def test_tar_cut_inside_a_member_is_refused(site: Site, random_bag: Path) -> None:
    package = archive_folder(random_bag, site.packages / "cut.tar", "tar")
    cut(package, package.stat().st_size // 2)
    problems = refused(site, package)
    assert any("truncated" in problem or "unexpected end" in problem for problem in problems)


def test_tar_cut_between_members_is_refused(site: Site, random_bag: Path) -> None:
    # tarfile itself stops quietly where the next header is missing.
    package = archive_folder(random_bag, site.packages / "cut.tar", "tar")
    data = package.read_bytes()
    end = len(data)
    while not any(data[end - tarfile.BLOCKSIZE : end]):
        end -= tarfile.BLOCKSIZE
    cut(package, end)
    assert names(refused(site, package), str(package), "without its end-of-archive marker")


def test_zip_with_a_bad_crc_is_refused(site: Site) -> None:
    package = site.packages / "crc.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("bag/data/scan.txt", b"0123456789" * 100)
    data = bytearray(package.read_bytes())
    data[data.index(b"0123456789") + 5] ^= 0x01
    package.write_bytes(bytes(data))
    assert names(refused(site, package), "bag/data/scan.txt", "Bad CRC-32")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(600), "not a bag folder, nor a zip, tar or tar.gz"),
        (b"BZh91AY&SY" + bytes(600), "bzip2-compressed data"),
        (b"", "the file is empty"),
    ],
)
def test_what_is_not_a_package_is_refused(site: Site, content: bytes, reason: str) -> None:
    package = site.packages / "package.zip"
    package.write_bytes(content)
    assert names(refused(site, package), str(package), reason)


def test_missing_package_is_refused(site: Site) -> None:
    missing = site.packages / "nowhere.zip"
    assert names(refused(site, missing), str(missing), "no such file or folder")


def test_archive_without_files_is_refused(site: Site) -> None:
    package = make_tar(site.packages / "empty.tar", [entry("bag", kind=tarfile.DIRTYPE)])
    assert names(refused(site, package), str(package), "holds no files")


def test_staging_must_be_empty(site: Site) -> None:
    (site.staging / "left-over").write_text("x")
    package = make_zip(site.packages / "bag.zip", [("bag/a.txt", b"a")])
    with pytest.raises(ValueError, match="not empty"):
        receive(package, site.staging, IngestPolicy())


# -- packages that come through --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_real_bag_comes_through_byte_for_byte(site: Site, corpora: Path, kind: str) -> None:
    bag = corpora / BASIC_BAG
    if kind == "folder":
        package = bag
    else:
        package = archive_folder(bag, site.packages / f"basicBag.{kind}", kind)
    before = tree(site.root)
    root = receive(package, site.staging, IngestPolicy())
    assert root == site.staging / "basicBag"
    assert contents(root) == contents(bag)
    for path in [root, *root.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    outside = {key: value for key, value in tree(site.root).items()}
    for key in list(outside):
        if key.startswith("work/staging/"):
            del outside[key]
    assert outside == before


@pytest.mark.parametrize(
    ("kind", "misleading_name"),
    [("zip", "package.tar.gz"), ("tar.gz", "package.zip"), ("tar", "package.bin")],
)
def test_format_is_recognised_by_content(
    site: Site, random_bag: Path, kind: str, misleading_name: str
) -> None:
    package = archive_folder(random_bag, site.packages / misleading_name, kind)
    root = receive(package, site.staging, IngestPolicy())
    assert contents(root) == contents(random_bag)


def test_archive_without_one_top_folder_returns_the_extraction_root(site: Site) -> None:
    package = make_zip(
        site.packages / "flat.zip", [("bagit.txt", b"BagIt-Version: 1.0\n"), ("data/a.txt", b"a")]
    )
    root = receive(package, site.staging, IngestPolicy())
    assert root == site.staging
    assert contents(root) == {
        "bagit.txt": b"BagIt-Version: 1.0\n",
        "data": None,
        "data/a.txt": b"a",
    }


def test_tar_made_from_dot_is_accepted(site: Site, random_bag: Path) -> None:
    package = site.packages / "dot.tar"
    with tarfile.open(package, "w") as archive:
        archive.add(random_bag, ".")  # members "./", "./data/0.bin", ...
    root = receive(package, site.staging, IngestPolicy())
    assert root == site.staging
    assert contents(root) == contents(random_bag)


def test_ownership_and_special_permission_bits_are_dropped(site: Site) -> None:
    script, data = entry("bag/run.sh", b"#!/bin/sh\n")
    script.mode, script.uid, script.gid = 0o6777, 0, 0
    folder = entry("bag/shared", kind=tarfile.DIRTYPE)[0]
    folder.mode = 0o1777
    package = make_tar(site.packages / "modes.tar", [(folder, b""), (script, data)])
    root = receive(package, site.staging, IngestPolicy())
    assert stat.S_IMODE((root / "run.sh").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o700


@pytest.mark.parametrize("kind", ["folder", "zip", "tar", "tar.gz"])
def test_nfd_names_are_kept_byte_for_byte(site: Site, kind: str) -> None:
    assert unicodedata.normalize("NFC", NFD_NAME) != NFD_NAME
    if kind == "folder":
        package = site.packages / "bag"
        (package / "data").mkdir(parents=True)
        (package / "data" / NFD_NAME).write_text("photo")
    else:
        package = package_from_tar_entries(site, kind, [entry(f"bag/data/{NFD_NAME}", b"photo")])
    root = receive(package, site.staging, IngestPolicy())
    assert os.listdir(os.fsencode(root / "data")) == [NFD_NAME.encode("utf-8")]


def test_macos_zip_names_in_utf8_without_the_flag_are_kept(site: Site) -> None:
    # macOS writes NFD names in UTF-8 but leaves the zip's UTF-8 flag unset.
    package = make_zip(site.packages / "macos.zip", [(f"bag/{NFD_NAME}", b"photo")])

    def clear_utf8_flag(data: bytearray, at: int, central: bool) -> None:
        flags_at = at + (8 if central else 6)
        flags = int.from_bytes(data[flags_at : flags_at + 2], "little") & ~0x800
        data[flags_at : flags_at + 2] = flags.to_bytes(2, "little")

    patch_zip_headers(package, clear_utf8_flag)
    with zipfile.ZipFile(package) as archive:
        assert not archive.infolist()[0].flag_bits & 0x800
    root = receive(package, site.staging, IngestPolicy())
    assert os.listdir(os.fsencode(root)) == [NFD_NAME.encode("utf-8")]


def test_zip_names_in_cp437_are_read_as_cp437(site: Site) -> None:
    # Old Windows zips: no UTF-8 flag and bytes that are not UTF-8; the zip format says CP437.
    package = make_zip(site.packages / "dos.zip", [("bag/MXller.txt", b"x")])
    package.write_bytes(package.read_bytes().replace(b"MXller", b"M\x81ller"))
    root = receive(package, site.staging, IngestPolicy())
    assert os.listdir(root) == ["Müller.txt"]
