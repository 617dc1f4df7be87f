"""Safe intake of a submission package: a bag as a folder, a .zip, a .tar or a .tar.gz is placed
in a private staging folder, or refused with every reason found.

A package is hostile until proven otherwise. Member names are checked before anything is written
(no absolute paths, no `..`, no links, no devices, no control characters), sizes are counted as
the bytes arrive (headers can lie), and a limit stops the work the moment it is crossed. Nothing
is written outside staging, and on any failure staging is emptied again. Files and folders are
created with fixed permissions (0o644 / 0o755): no ownership, no setuid bits survive. File names
are kept byte for byte as given (NFC and NFD alike); bag validation compares them later."""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from arkhiv.ingest.model import IntakeError
from arkhiv.policies.ingest import IngestPolicy

CHUNK = 1024 * 1024  # bytes copied at a time: nothing is ever held whole in memory
# zipfile inflates LZMA members without capping what one call returns; small reads keep that
# output to a few MiB even at LZMA's best ratio.
_LZMA_READ = 4096
_GZIP_READ = 16 * 1024
# tarfile reads a member's header data (pax records, GNU long names) whole into memory, so the
# header data of one member is capped; real headers, extended attributes included, stay far below.
_TAR_METADATA_LIMIT = 16 * 1024 * 1024
# What tarfile may read ahead of the position it reports (it reads 10 KiB records).
_TAR_READAHEAD = 64 * 1024
# The compression ratio says nothing about a small package; a bomb is only a danger once big.
_RATIO_FLOOR = 1024 * 1024
_MAX_LISTED = 50  # problems listed before the examination stops

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DRIVE = re.compile(r"[A-Za-z]:")
_UTF8_NAMES = 0x800  # zip general purpose flag: the names are UTF-8
_ENCRYPTED = 0x1
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA}
_REFUSED_FORMATS = (
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"(\xb5/\xfd", "zstd-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
)


@dataclass
class CopiedFile:
    path: str  # relative to the copy's root, "/"-separated, exactly as named in the source
    size: int
    digests: dict[str, str] = field(default_factory=dict)  # algorithm -> hex, when asked for


def receive(source: Path, staging: Path, policy: IngestPolicy) -> Path:
    """Place the package at `source` (a bag folder, .zip, .tar or .tar.gz, recognised by its
    content) inside `staging` and return the bag root there: for an archive holding exactly one
    top-level folder and nothing else that folder, else the extraction root; for a folder, its
    copy `staging/<folder name>`.

    `staging` must be an empty folder, or not exist yet (it is then created, private). Raises
    IntakeError listing every problem found, each naming the member it concerns; staging is
    then left empty."""
    source, staging = Path(source), Path(staging)
    _prepare_staging(staging)
    try:
        return _receive(source, staging, policy)
    except BaseException:
        _empty(staging)
        raise


def copy_folder(
    source: Path,
    target: Path,
    policy: IngestPolicy,
    *,
    digests: Iterable[str] = (),
    workers: int = 1,
) -> list[CopiedFile]:
    """Copy the folder `source` to `target` (created here; its parent must exist) under the
    intake rules: symbolic links are never followed to read through them; one that points to a
    file inside `source` is copied as a regular file with that file's bytes, any other link,
    device, FIFO or socket is refused. Returns the files copied with their sizes and, for each
    algorithm in `digests` (hashlib names), their digests computed from the bytes written.
    Raises IntakeError; the caller removes `target` then."""
    source, target = Path(source), Path(target)
    base = os.path.realpath(source)
    if not os.path.isdir(base):
        raise IntakeError([f"{source}: not a folder"])
    if _inside(os.path.realpath(target), base):
        raise IntakeError([f"{source}: the copy's destination {target} lies inside it"])
    try:
        os.mkdir(target, 0o700)  # a package's folders and files are its owner's alone
    except OSError as exc:
        raise IntakeError([f"{target}: cannot be created ({exc.strerror})"]) from None
    intake = _Intake(target, policy, source)
    files = _plan_folder(base, intake)
    intake.finish_examination()
    for parts in intake.folders_named():
        intake.make_folder(parts)
    algorithms = tuple(digests)

    def copy(planned: tuple[tuple[str, ...], str]) -> CopiedFile:
        parts, path = planned
        shown = _shown("/".join(parts))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise IntakeError([f"{shown}: cannot be read ({exc.strerror})"]) from None
        with open(fd, "rb") as reader:
            # It was a regular file when listed; make sure it still is before reading it.
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IntakeError([f"{shown}: is no longer a regular file"])
            size, hexdigests = intake.write_file(parts, reader.read, shown, digests=algorithms)
        return CopiedFile("/".join(parts), size, hexdigests)

    if workers <= 1:
        copied = [copy(planned) for planned in files]
    else:
        copied = _in_parallel(copy, files, workers, intake)
    return sorted(copied, key=lambda f: f.path)


# -- the package as a whole ------------------------------------------------------------------


def _prepare_staging(staging: Path) -> None:
    if staging.is_symlink() or (staging.exists() and not staging.is_dir()):
        raise ValueError(f"staging {staging} is not a folder")
    if staging.exists():
        if any(staging.iterdir()):
            raise ValueError(f"staging {staging} is not empty")
    else:
        staging.mkdir(mode=0o700)


def _empty(staging: Path) -> None:
    for entry in os.scandir(staging):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _receive(source: Path, staging: Path, policy: IngestPolicy) -> Path:
    try:
        found = source.stat()
    except FileNotFoundError:
        raise IntakeError([f"{source}: no such file or folder"]) from None
    except OSError as exc:
        raise IntakeError([f"{source}: cannot be read ({exc.strerror})"]) from None
    if stat.S_ISDIR(found.st_mode):
        name = os.path.basename(os.path.realpath(source)) or "package"
        if problem := _name_problem(name, policy.max_path_length):
            raise IntakeError([f"{source}: the folder's own name is refused: {problem}"])
        target = staging / name
        copy_folder(source, target, policy)
        return target
    if not stat.S_ISREG(found.st_mode):
        raise IntakeError([f"{source}: neither a folder nor a regular file"])

    kind = _sniff(source)
    intake = _Intake(staging, policy, source, packed_size=found.st_size)
    if kind == "zip":
        _unpack_zip(source, intake)
    else:
        _unpack_tar(source, intake, gzipped=kind == "tar.gz")
    children = list(staging.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return staging


def _sniff(source: Path) -> str:
    """The package's format from its first bytes, whatever its name says."""
    try:
        with open(source, "rb") as handle:
            head = handle.read(tarfile.BLOCKSIZE)
    except OSError as exc:
        raise IntakeError([f"{source}: cannot be read ({exc.strerror})"]) from None
    if not head:
        raise IntakeError([f"{source}: the file is empty"])
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head[257:262] == b"ustar" or _is_tar_header(head):
        return "tar"
    for magic, described in _REFUSED_FORMATS:
        if head.startswith(magic):
            raise IntakeError(
                [f"{source}: holds {described}; send a .zip, .tar or .tar.gz archive instead"]
            )
    raise IntakeError([f"{source}: not a bag folder, nor a zip, tar or tar.gz archive"])


def _is_tar_header(block: bytes) -> bool:
    """A pre-POSIX tar header has no magic, only its checksum (the sum of its bytes with the
    checksum field counted as spaces)."""
    if len(block) < tarfile.BLOCKSIZE:
        return False
    field_text = block[148:156].split(b"\x00", 1)[0].strip()
    try:
        recorded = int(field_text, 8)
    except ValueError:
        return False
    return recorded == sum(block[:148]) + 8 * 0x20 + sum(block[156:512])


# -- names -----------------------------------------------------------------------------------


def _name_problem(name: str, max_length: int) -> str | None:
    """Why a member name is refused, or None. `name` is "/"-separated as archives store it."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL byte in the name"
    if _CONTROL.search(name):
        return "control character in the name"
    if "\\" in name:
        return "backslash in the name (a Windows path separator that could lead elsewhere)"
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter in the name (a Windows absolute path)"
    if ".." in name.split("/"):
        return "'..' in the path leads outside the package"
    if len("/".join(_parts(name))) > max_length:
        return f"path longer than {max_length} characters (limit max_path_length)"
    return None


def _parts(name: str) -> tuple[str, ...]:
    # "./bag/data/" and "bag//data" name the same place as "bag/data"
    return tuple(part for part in name.split("/") if part not in ("", "."))


def _shown(name: str) -> str:
    """The name as it can be printed: control characters and undecodable bytes escaped."""
    printable = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", printable)


def _inside(path: str, base: str) -> bool:
    return os.path.commonpath([path, base]) == base


# -- writing under the policy ----------------------------------------------------------------


class _Cancelled(Exception):
    """Another copy failed first; this one stops."""


class _Intake:
    """Places members under `root`, checking each name and counting what actually arrives
    against the policy. Problems with single members are collected (so that the package's
    sender learns them all); a crossed limit stops everything at once."""

    def __init__(
        self, root: Path, policy: IngestPolicy, package: Path, packed_size: int | None = None
    ) -> None:
        self.root = root
        self.policy = policy
        self.package = package
        self.packed_size = packed_size  # for the compression ratio; None for a folder
        self.problems: list[str] = []
        self.files = 0
        self.folders = 0
        self.declared_bytes = 0
        self.written_bytes = 0
        self.cancelled = threading.Event()
        self._kinds: dict[str, bool] = {}  # normalised path -> is a folder
        self._made: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    # examination

    def problem(self, text: str) -> None:
        self.problems.append(text)
        if len(self.problems) >= _MAX_LISTED:
            raise IntakeError([*self.problems, f"{self.package}: examination stopped here"])

    def admit(self, name: str, folder: bool) -> tuple[str, ...] | None:
        """The path parts of a member that may be written, or None when it is refused (the
        reason is recorded). Counts it against max_files."""
        shown = _shown(name)
        if reason := _name_problem(name, self.policy.max_path_length):
            self.problem(f"{shown}: {reason}")
            return None
        parts = _parts(name)
        if not parts:
            if not folder:
                self.problem(f"{shown}: names the package root, not a file")
            return None
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if self._kinds.get(prefix) is False:
                self.problem(f"{shown}: lies inside {_shown(prefix)}, which is a file")
                return None
            if prefix not in self._kinds:
                self._record(prefix, folder=True)
        key = "/".join(parts)
        earlier = self._kinds.get(key)
        if earlier is not None and not (folder and earlier):
            clash = (
                "appears twice in the package"
                if folder == earlier
                else "is both a file and a folder"
            )
            self.problem(f"{shown}: {clash}")
            return None
        if earlier is None:
            self._record(key, folder)
        return parts

    def _record(self, key: str, folder: bool) -> None:
        self._kinds[key] = folder
        limit = self.policy.max_files
        if folder:
            # Folders cost inodes too; a flood of them is held to the same number.
            self.folders += 1
            if self.folders > limit:
                self.stop(f"more than {limit} folders (limit max_files)")
        else:
            self.files += 1
            if self.files > limit:
                self.stop(f"more than {limit} files (limit max_files)")

    def folders_named(self) -> list[tuple[str, ...]]:
        return [tuple(key.split("/")) for key, folder in self._kinds.items() if folder]

    def expect(self, size: int, shown: str) -> None:
        """A member's size as its header declares it: refused early when already too much.
        The bytes that actually arrive are counted again while they are written."""
        self.declared_bytes += size
        self._check_size(self.declared_bytes, shown)

    def finish_examination(self) -> None:
        if self.problems:
            raise IntakeError(list(self.problems))
        if self.files == 0:
            raise IntakeError([f"{self.package}: holds no files"])

    def stop(self, reason: str) -> NoReturn:
        """Give up on the whole package for `reason`."""
        self.fail(f"{self.package}: {reason}")

    def fail(self, problem: str) -> NoReturn:
        """Give up at once; `problem` names the path it concerns."""
        raise IntakeError([*self.problems, problem])

    def _check_size(self, total: int, shown: str) -> None:
        policy = self.policy
        if total > policy.max_package_bytes:
            self.stop(
                f"unpacks to more than {policy.max_package_bytes} bytes "
                f"(limit max_package_bytes); stopped at {shown}"
            )
        packed = self.packed_size
        if (
            packed is not None
            and total > _RATIO_FLOOR
            and total > policy.max_compression_ratio * max(packed, 1)
        ):
            self.stop(
                f"unpacks to more than {policy.max_compression_ratio:g} times its packed size "
                f"of {packed} bytes (limit max_compression_ratio, a decompression bomb?); "
                f"stopped at {shown}"
            )

    # writing

    def make_folder(self, parts: tuple[str, ...]) -> None:
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._made:
                continue
            path = self.root.joinpath(*prefix)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not path.is_dir() or path.is_symlink():
                    self.fail(f"{_shown('/'.join(prefix))}: clashes with a file of the same name")
            except OSError as exc:
                self.fail(f"{_shown('/'.join(prefix))}: cannot be created ({exc.strerror})")
            self._made.add(prefix)

    def write_file(
        self,
        parts: tuple[str, ...],
        read: Callable[[int], bytes],
        shown: str,
        chunk: int = CHUNK,
        digests: tuple[str, ...] = (),
    ) -> tuple[int, dict[str, str]]:
        """Stream a member into place, counting every byte; returns (size, digests)."""
        path = self.root.joinpath(*parts)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            self.fail(f"{shown}: clashes with a folder of the same name")
        except OSError as exc:
            self.fail(f"{shown}: cannot be written ({exc.strerror})")
        hashers = [hashlib.new(name) for name in digests]
        size = 0
        with open(fd, "wb") as out:
            os.fchmod(fd, 0o600)  # whatever the umask: originals carry names and places
            while True:
                if self.cancelled.is_set():
                    raise _Cancelled
                try:
                    data = read(chunk)
                except OSError as exc:
                    self.fail(f"{shown}: cannot be read ({exc.strerror})")
                if not data:
                    break
                size += len(data)
                with self._lock:
                    self.written_bytes += len(data)
                    total = self.written_bytes
                self._check_size(total, shown)
                try:
                    out.write(data)
                except OSError as exc:
                    self.fail(f"{shown}: cannot be written ({exc.strerror})")
                for hasher in hashers:
                    hasher.update(data)
        return size, {
            name: hasher.hexdigest() for name, hasher in zip(digests, hashers, strict=True)
        }


def _in_parallel(copy, files, workers: int, intake: _Intake) -> list[CopiedFile]:
    """Copy files on `workers` threads (hashing releases the GIL); the first failure cancels
    the rest and is the one raised."""
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(copy, planned) for planned in files]
        wait(futures, return_when=FIRST_EXCEPTION)
        failures = [
            f.exception() for f in futures if f.done() and not f.cancelled() and f.exception()
        ]
        if failures:
            raise next((e for e in failures if not isinstance(e, _Cancelled)), failures[0])
        return [future.result() for future in futures]
    except BaseException:
        intake.cancelled.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- folders ---------------------------------------------------------------------------------


def _plan_folder(base: str, intake: _Intake) -> list[tuple[tuple[str, ...], str]]:
    """Walk the real folder `base` without following links; returns (parts, path to read) for
    each file and records folders and problems in `intake`."""
    files: list[tuple[tuple[str, ...], str]] = []
    pending: list[tuple[str, tuple[str, ...]]] = [(base, ())]
    while pending:
        folder, rel = pending.pop()
        try:
            entries = os.scandir(folder)
        except OSError as exc:
            intake.problem(f"{_shown('/'.join(rel)) or '.'}: cannot be read ({exc.strerror})")
            continue
        with entries:
            for entry in entries:
                parts = (*rel, entry.name)
                name = "/".join(parts)
                shown = _shown(name)
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError as exc:
                    intake.problem(f"{shown}: cannot be read ({exc.strerror})")
                    continue
                if stat.S_ISDIR(mode):
                    if intake.admit(name, folder=True) is not None:
                        pending.append((entry.path, parts))
                    continue
                path = entry.path
                if stat.S_ISLNK(mode):
                    path, reason = _link_target(entry.path, folder, base)
                    if reason:
                        intake.problem(f"{shown}: {reason}")
                        continue
                elif not stat.S_ISREG(mode):
                    intake.problem(f"{shown}: {_special_kind(mode)}")
                    continue
                if intake.admit(name, folder=False) is None:
                    continue
                try:
                    size = os.lstat(path).st_size
                except OSError as exc:
                    intake.problem(f"{shown}: cannot be read ({exc.strerror})")
                    continue
                intake.expect(size, shown)
                files.append((parts, path))
    return files


def _link_target(link: str, folder: str, base: str) -> tuple[str, str | None]:
    """(the real file a symbolic link names, None) when it is a regular file inside the
    package, else ("", why it is refused)."""
    try:
        target = os.readlink(link)
    except OSError as exc:
        return "", f"symbolic link cannot be read ({exc.strerror})"
    real = os.path.realpath(os.path.join(folder, target))
    if not _inside(real, base):
        return "", f"symbolic link to {_shown(target)} points outside the package"
    try:
        mode = os.lstat(real).st_mode
    except OSError:
        return "", f"symbolic link to {_shown(target)} leads nowhere"
    if stat.S_ISDIR(mode):
        return "", f"symbolic link to the folder {_shown(target)} (links are not followed)"
    if not stat.S_ISREG(mode):
        return "", f"symbolic link to {_shown(target)}, which is not a regular file"
    return real, None


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device file"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "an unknown kind of file"
    return f"{kind}: only regular files and folders are accepted"


# -- zip -------------------------------------------------------------------------------------


def _unpack_zip(source: Path, intake: _Intake) -> None:
    policy = intake.policy
    declared_entries = _zip_declared_entries(source)
    # Files and folders may each number max_files; more entries are refused before zipfile
    # loads the whole central directory into memory.
    if declared_entries is not None and declared_entries > 2 * policy.max_files:
        intake.stop(f"lists {declared_entries} entries, more than max_files allows")
    try:
        archive = zipfile.ZipFile(source)
    except UnicodeDecodeError:
        intake.stop("corrupt zip archive (a name flagged UTF-8 is not UTF-8)")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
        intake.stop(f"corrupt or truncated zip archive ({exc})")
    except NotImplementedError as exc:  # zipfile's word for a format version it cannot read
        intake.stop(f"unsupported zip archive ({exc})")
    with archive:
        planned: list[tuple[tuple[str, ...], zipfile.ZipInfo, str]] = []
        for info in archive.infolist():
            name = _zip_name(info)
            shown = _shown(name)
            kind, reason = _zip_member_kind(info)
            if reason:
                intake.problem(f"{shown}: {reason}")
                continue
            parts = intake.admit(name, folder=kind == "folder")
            if parts is None or kind == "folder":
                continue
            intake.expect(info.file_size, shown)
            planned.append((parts, info, shown))
        intake.finish_examination()

        for parts in intake.folders_named():
            intake.make_folder(parts)
        for parts, info, shown in planned:
            read_size = _LZMA_READ if info.compress_type == zipfile.ZIP_LZMA else CHUNK
            try:
                with archive.open(info) as member:
                    size, _ = intake.write_file(parts, member.read, shown, read_size)
            except (
                zipfile.BadZipFile,
                zlib.error,
                lzma.LZMAError,
                EOFError,
                ValueError,
                NotImplementedError,
                OSError,  # a corrupt offset makes zipfile seek where no file position is
            ) as exc:
                intake.fail(f"{shown}: corrupt or truncated data in the zip archive ({exc})")
            if size != info.file_size:
                intake.fail(
                    f"{shown}: {size} bytes arrived where the zip archive declares "
                    f"{info.file_size}: corrupt archive"
                )


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name. Names without the UTF-8 flag are CP437 by the zip specification, but
    macOS and many Unix tools write UTF-8 without setting it: those bytes are kept as UTF-8."""
    name = info.orig_filename  # zipfile cuts `filename` at a NUL; this keeps it to be refused
    if info.flag_bits & _UTF8_NAMES:
        return name
    raw = name.encode("cp437")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return name


def _zip_member_kind(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """("file" | "folder", None), or ("", why the member is refused)."""
    mode = info.external_attr >> 16  # Unix mode, when the archiver recorded one
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "", "symbolic link: links are not accepted in a package"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "", _special_kind(mode)
    if info.orig_filename.endswith("/") or kind == stat.S_IFDIR:
        return "folder", None
    if info.flag_bits & _ENCRYPTED:
        return "", "encrypted: the archive cannot read it"
    if info.compress_type == zipfile.ZIP_BZIP2:
        return "", "bzip2 compression cannot be unpacked in bounded memory; use deflate"
    if info.compress_type not in _ZIP_METHODS:
        return "", f"compression method {info.compress_type} is not supported; use deflate"
    return "file", None


def _zip_declared_entries(source: Path) -> int | None:
    """The number of entries the zip's end record declares (zip64 included), or None when it
    cannot be found (zipfile then says what is wrong)."""
    end_record, zip64_locator, zip64_record = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
    try:
        with open(source, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            tail_length = min(size, 22 + 0xFFFF + 20)  # end record, its comment, zip64 locator
            handle.seek(size - tail_length)
            tail = handle.read(tail_length)
            at = tail.rfind(end_record)
            if at < 0 or len(tail) - at < 22:
                return None
            entries = int.from_bytes(tail[at + 10 : at + 12], "little")
            if entries != 0xFFFF:
                return entries
            locator = tail[at - 20 : at] if at >= 20 else b""
            if not locator.startswith(zip64_locator):
                return None
            handle.seek(int.from_bytes(locator[8:16], "little"))
            record = handle.read(56)
    except (OSError, OverflowError):  # an offset no file has: zipfile will say it is corrupt
        return None
    if not record.startswith(zip64_record) or len(record) < 40:
        return None
    return int.from_bytes(record[32:40], "little")


# -- tar -------------------------------------------------------------------------------------


class _TarStream:
    """The bytes of a tar archive as tarfile reads them in stream mode: inflated here when
    gzipped (with a cap on each call's output, and the gzip trailer's CRC checked), counted,
    with the most recent kept so that the end-of-archive block can be looked at afterwards."""

    def __init__(self, raw, gzipped: bool, package: Path) -> None:
        self._raw = raw
        self._package = package
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self.delivered = 0
        self.limit: int | None = None  # delivered bytes allowed while tarfile reads headers
        self._recent: deque[tuple[int, bytes]] = deque()
        self._kept = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = CHUNK
        data = self._inflate(size) if self._inflater else self._raw.read(size)
        if data:
            self._remember(data)
        if self.limit is not None and self.delivered > self.limit:
            raise IntakeError(
                [f"{self._package}: a tar header holds more than {_TAR_METADATA_LIMIT} bytes"]
            )
        return data

    def _inflate(self, size: int) -> bytes:
        while True:
            inflater = self._inflater
            if inflater.eof:
                pending = inflater.unused_data or self._raw.read(_GZIP_READ)
                if not pending.startswith(b"\x1f\x8b"):
                    return b""  # the end, or padding after it (gzip ignores it too)
                self._inflater = inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                pending = inflater.unconsumed_tail or self._raw.read(_GZIP_READ)
                if not pending:
                    raise IntakeError(
                        [f"{self._package}: truncated gzip data (it ends before its last block)"]
                    )
            try:
                data = inflater.decompress(pending, size)
            except zlib.error as exc:
                raise IntakeError([f"{self._package}: corrupt gzip data ({exc})"]) from None
            if data:
                return data

    def _remember(self, data: bytes) -> None:
        self._recent.append((self.delivered, data))
        self.delivered += len(data)
        self._kept += len(data)
        while self._kept - len(self._recent[0][1]) >= 2 * _TAR_READAHEAD:
            self._kept -= len(self._recent.popleft()[1])

    def recent(self, offset: int, length: int) -> bytes | None:
        """Bytes [offset, offset+length) of the stream, shorter where it ended; None when they
        were not kept."""
        if not self._recent or self._recent[0][0] > offset:
            return None
        out = bytearray()
        for start, data in self._recent:
            low, high = max(offset, start), min(offset + length, start + len(data))
            if low < high:
                out += data[low - start : high - start]
        return bytes(out)


def _unpack_tar(source: Path, intake: _Intake, gzipped: bool) -> None:
    try:
        with open(source, "rb") as raw:
            stream = _TarStream(raw, gzipped, source)
            stream.limit = _TAR_METADATA_LIMIT + _TAR_READAHEAD
            with tarfile.open(
                fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape"
            ) as archive:
                _unpack_tar_members(archive, stream, intake)
                _check_tar_end(archive, stream, intake)
    except tarfile.TarError as exc:
        intake.stop(f"corrupt or truncated tar archive ({exc})")
    except OSError as exc:
        intake.stop(f"cannot be read ({exc.strerror})")
    intake.finish_examination()


def _check_tar_end(archive: tarfile.TarFile, stream: _TarStream, intake: _Intake) -> None:
    # tarfile stops quietly at a missing or broken header; only a block of zeros is a proper
    # end, anything else means the archive was cut short or damaged.
    end = stream.recent(archive.offset, tarfile.BLOCKSIZE)
    if end is not None and len(end) < tarfile.BLOCKSIZE:
        intake.stop("truncated tar archive (it ends without its end-of-archive marker)")
    if end is not None and any(end):
        intake.stop(f"corrupt tar archive (unreadable header at byte {archive.offset})")
    # Read what follows (padding) so that the gzip trailer's checksum is verified too.
    stream.limit = archive.offset + _TAR_METADATA_LIMIT
    while stream.read(CHUNK):
        pass


def _unpack_tar_members(archive: tarfile.TarFile, stream: _TarStream, intake: _Intake) -> None:
    while True:
        stream.limit = archive.offset + _TAR_METADATA_LIMIT + _TAR_READAHEAD
        member = archive.next()
        stream.limit = None
        if member is None:
            return
        shown = _shown(member.name)
        if member.isreg():
            folder = False
        elif member.isdir():
            folder = True
        else:
            intake.problem(f"{shown}: {_tar_refusal(member)}")
            intake.expect(member.size, shown)  # whatever tarfile skips over is bounded too
            continue
        parts = intake.admit(member.name, folder)
        if folder:
            if parts is not None and not intake.problems:
                intake.make_folder(parts)
            continue
        intake.expect(member.size, shown)
        if parts is None or intake.problems:
            continue  # refused already: the rest is only examined, not written
        intake.make_folder(parts[:-1])
        reader = archive.extractfile(member)
        try:
            size, _ = intake.write_file(parts, reader.read, shown)
        except tarfile.TarError as exc:
            intake.fail(f"{shown}: corrupt or truncated data in the tar archive ({exc})")
        if size != member.size:
            intake.fail(f"{shown}: truncated ({size} of {member.size} bytes)")


def _tar_refusal(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {_shown(member.linkname)}: links are not accepted in a package"
    if member.islnk():
        return f"hard link to {_shown(member.linkname)}: links are not accepted in a package"
    if member.ischr() or member.isblk():
        return "a device file: only regular files and folders are accepted"
    if member.isfifo():
        return "a FIFO (named pipe): only regular files and folders are accepted"
    return f"unsupported tar member type {member.type!r}"
