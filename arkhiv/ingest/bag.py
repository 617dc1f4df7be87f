"""BagIt validation: RFC 8493 (BagIt 1.0) and the drafts 0.93 to 0.97 before it.

bagit-python parses the bag declaration and bag-info.txt (labels, folded lines, repeated
labels, declared encodings). Arkhiv does the rest itself, because bagit-python stops at the
first problem, silently rewrites manifest paths, accepts a malformed bagit.txt (the conformance
suite's v1.0 "bagit-with-invalid-whitespace") and rejects three bags the suite says are valid
with a warning. Every file is read exactly once, and from that read come the manifest
checksums and Arkhiv's own sha512 and sha256.

Each problem becomes one Check naming the path it concerns; each step that passes adds one PASS
check. The bag is valid when no check FAILs. No input makes this module raise."""

from __future__ import annotations

import codecs
import os
import re
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import bagit

from arkhiv.fixity.digests import digest_files, digest_length, empty_digest, is_supported
from arkhiv.ingest.model import Check, Outcome

PAYLOAD_DIR = "data"
BAG_DECLARATION = "bagit.txt"
FETCH_FILE = "fetch.txt"
DECLARATION_LABELS = ("BagIt-Version", "Tag-File-Character-Encoding")

# Files that operating systems and file managers write by themselves. A bag made on one system
# and copied through another often loses them; that loses no content.
SYSTEM_FILE_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})
APPLE_DOUBLE_PREFIX = "._"

_MANIFEST_NAME = re.compile(r"(tag)?manifest-([A-Za-z0-9_-]+)\.txt")
_MANIFEST_LINE = re.compile(r"([0-9A-Fa-f]+)[ \t]+(.+)")
_FETCH_LINE = re.compile(r"(\S+)[ \t]+(\S+)[ \t]+(.+)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VERSION = re.compile(r"(\d+)\.(\d+)")
_OXUM = re.compile(r"(\d+)\.(\d+)")
_DRIVE = re.compile(r"[A-Za-z]:")
# RFC 8493 §2.1.3: only CR, LF and "%" are percent-encoded in 1.0 manifests. Drafts before 1.0
# encoded nothing, but bagit-python has always decoded CR and LF, so bags it made do so.
_PERCENT_1_0 = re.compile(r"%(0[AaDd]|25)")
_PERCENT_DRAFT = re.compile(r"%(0[AaDd])")
_PERCENT_VALUES = {"0a": "\n", "0d": "\r", "25": "%"}


@dataclass
class BagReport:
    """What validating one bag found. Paths are relative to the bag root, with "/"."""

    valid: bool
    version: str | None  # the declared BagIt-Version when it is a valid M.N
    checks: list[Check] = field(default_factory=list)
    bag_info: dict[str, list[str]] = field(default_factory=dict)  # bag-info.txt, every value
    # Each payload path as the manifest writes it -> every digest computed from the one read:
    # the manifests' algorithms and the extra ones (sha512, sha256).
    payload: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each tag file on disk (everything outside data/) -> its digests, likewise.
    tag_files: dict[str, dict[str, str]] = field(default_factory=dict)
    # Payload path as in the manifest -> the file's name on disk. They differ when the bag went
    # through a file system that changed the Unicode normalization of names (macOS).
    on_disk: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # payload path -> bytes

    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.outcome is Outcome.FAIL]

    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.outcome is Outcome.WARN]


def validate_bag(
    bag_dir: Path | str,
    processes: int = 2,
    extra_algorithms: Iterable[str] = ("sha512", "sha256"),
) -> BagReport:
    """Validate the bag at `bag_dir` completely: declaration, bag-info, manifests, completeness,
    Payload-Oxum, fetch.txt, tag manifests and every checksum of every file (`processes` files
    are read at a time). Raises ValueError only for an unknown algorithm in `extra_algorithms`;
    everything wrong with the bag is a FAIL check instead."""
    extras = list(dict.fromkeys(extra_algorithms))
    for name in extras:
        if not is_supported(name):
            raise ValueError(f"unsupported digest algorithm {name!r}")
    validation = _Validation(Path(bag_dir), processes, extras)
    try:
        validation.run()
    except Exception as exc:  # the promise is a report, never a traceback, whatever the input
        validation.fail("bag.structure", f"validation stopped: {type(exc).__name__}: {exc}")
    report = validation.report
    report.valid = not report.failures()
    return report


def _printable(name: str) -> str:
    """A name from the file system that may hold undecodable bytes, shown as backslash
    escapes so that reports stay valid UTF-8."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _normalization_form(name: str) -> str:
    for form in ("NFC", "NFD"):
        if unicodedata.is_normalized(form, name):
            return form
    return "neither NFC nor NFD"


def _is_system_file(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    return base.lower() in SYSTEM_FILE_NAMES or base.startswith(APPLE_DOUBLE_PREFIX)


def _payload(path: str) -> bool:
    return path.startswith(PAYLOAD_DIR + "/")


@dataclass
class _Entry:
    """One file as the manifests of one kind (payload or tag) list it, keyed by its NFC name."""

    forms: list[str]  # the name as each manifest line wrote it (decoded), first one first
    digests: dict[str, str] = field(default_factory=dict)  # algorithm -> lowercase hex
    manifests: dict[str, str] = field(default_factory=dict)  # algorithm -> manifest file name

    @property
    def name(self) -> str:
        return self.forms[0]


class _Metadata(bagit.Bag):
    """bagit-python's reading of bagit.txt and bag-info.txt, without its manifest loader
    (which raises at the first duplicate or unsafe line); Arkhiv reads the manifests itself."""

    def _load_manifests(self) -> None:
        self.entries = {}


class _Validation:
    def __init__(self, root: Path, processes: int, extras: list[str]) -> None:
        self.root = root
        self.processes = processes
        self.extras = extras
        self.report = BagReport(valid=False, version=None)
        self.version: tuple[int, int] = (0, 0)
        self.encoding = "utf-8"
        self.disk_payload: dict[str, int] = {}  # path -> size
        self.disk_tags: dict[str, int] = {}
        self.fetch_paths: set[str] = set()  # NFC keys of paths listed in fetch.txt
        # Listed OS-written files (.DS_Store, Thumbs.db) that are not in the bag.
        self.tolerated_missing: list[_Entry] = []

    # -- checks ---------------------------------------------------------------------------

    def add(
        self, name: str, outcome: Outcome, reason: str, path: str | None = None, **detail
    ) -> None:
        self.report.checks.append(
            Check(name, outcome, reason, _printable(path) if path else None, detail)
        )

    def fail(self, name: str, reason: str, path: str | None = None, **detail) -> None:
        self.add(name, Outcome.FAIL, reason, path, **detail)

    def warn(self, name: str, reason: str, path: str | None = None, **detail) -> None:
        self.add(name, Outcome.WARN, reason, path, **detail)

    def failed(self, *names: str) -> bool:
        return any(
            check.outcome is Outcome.FAIL and check.name in names for check in self.report.checks
        )

    def passed(self, name: str, reason: str) -> None:
        """PASS for a step with no FAIL of its own."""
        if not self.failed(name):
            self.add(name, Outcome.PASS, reason)

    # -- the steps --------------------------------------------------------------------------

    def run(self) -> None:
        if not self.root.is_dir():
            self.fail("bag.structure", f"{self.root} is not a directory")
            return
        if not self.read_declaration():
            return  # without a version and an encoding nothing else can be read
        self.read_bag_info()
        self.walk()
        payload_entries = self.read_manifests(tag=False)
        tag_entries = self.read_manifests(tag=True)
        self.read_fetch(payload_entries)
        payload_files = self.match_payload(payload_entries)
        self.check_oxum()
        tag_files = self.match_tags(tag_entries)
        self.verify_tags(tag_entries, tag_files)
        self.verify_payload(payload_entries, payload_files)

    def read_declaration(self) -> bool:
        """bagit.txt, to the letter of RFC 8493 §2.1.1: exactly the two lines
        "BagIt-Version: M.N" and "Tag-File-Character-Encoding: ENCODING", UTF-8 without a
        byte-order mark, label, colon, one space, value. bagit-python strips whitespace around
        labels and values, so it accepts "BagIt-Version : 1.0"; Arkhiv does not."""
        name = "bag.bagit_txt"
        path = self.root / BAG_DECLARATION
        if path.is_symlink() or (path.exists() and not path.is_file()):
            self.fail(name, "bagit.txt is not a regular file", BAG_DECLARATION)
            return False
        if not path.exists():
            self.fail(name, "no bagit.txt: this is not a bag (RFC 8493 §2.1.1)", BAG_DECLARATION)
            return False
        try:
            raw = path.read_bytes()
        except OSError as exc:
            self.fail(name, f"cannot read bagit.txt: {exc.strerror or exc}", BAG_DECLARATION)
            return False
        if raw.startswith(codecs.BOM_UTF8):
            self.fail(name, "bagit.txt begins with a byte-order mark", BAG_DECLARATION)
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(name, f"bagit.txt is not UTF-8 (byte {exc.start})", BAG_DECLARATION)
            return False
        lines = _LINE_BREAK.split(text)
        if lines and lines[-1] == "":
            lines.pop()  # the line break that ends the last line
        values: dict[str, str] = {}
        for number, line in enumerate(lines, 1):
            label, colon, rest = line.partition(":")
            if not colon:
                self.fail(name, f"line {number} is not 'Label: value': {line!r}", BAG_DECLARATION)
                continue
            if label != label.strip():
                self.fail(
                    name,
                    f"line {number}: whitespace around the label {label!r} (RFC 8493 §2.1.1 "
                    "and §2.2.2: a label, a colon, one space, the value)",
                    BAG_DECLARATION,
                )
            if not re.fullmatch(r"[ \t]\S+", rest):
                self.fail(
                    name,
                    f"line {number}: the value must follow the colon after exactly one space "
                    f"and hold no whitespace; found {rest!r}",
                    BAG_DECLARATION,
                )
            values.setdefault(label.strip(), rest.strip())
        labels = [line.partition(":")[0].strip() for line in lines]
        if labels != list(DECLARATION_LABELS):
            self.fail(
                name,
                "bagit.txt must hold exactly two lines, 'BagIt-Version' then "
                f"'Tag-File-Character-Encoding'; found {labels}",
                BAG_DECLARATION,
            )
        version_text = values.get("BagIt-Version")
        encoding = values.get("Tag-File-Character-Encoding")
        usable = True
        match = _VERSION.fullmatch(version_text or "")
        if version_text is None:
            self.fail(name, "no BagIt-Version", BAG_DECLARATION)
            usable = False
        elif match is None:
            self.fail(name, f"BagIt-Version {version_text!r} is not M.N", BAG_DECLARATION)
            usable = False
        else:
            self.version = (int(match.group(1)), int(match.group(2)))
            if not ((0, 93) <= self.version <= (0, 97) or self.version[0] == 1):
                self.fail(name, f"unsupported BagIt version {version_text}", BAG_DECLARATION)
                usable = False
            else:
                self.report.version = version_text
        if encoding is None:
            self.fail(name, "no Tag-File-Character-Encoding", BAG_DECLARATION)
            usable = False
        else:
            try:
                codecs.lookup(encoding)
                self.encoding = encoding
            except LookupError:
                self.fail(
                    name, f"unknown Tag-File-Character-Encoding {encoding!r}", BAG_DECLARATION
                )
                usable = False
        if usable:
            self.passed(name, f"BagIt {version_text}, tag files in {encoding}")
        return usable

    def read_bag_info(self) -> None:
        name = "bag.bag_info"
        try:
            metadata = _Metadata(str(self.root))
        except (bagit.BagError, UnicodeError, OSError, ValueError) as exc:
            # bagit quotes the offending line, which may hold coordinates: say where, not what
            self.fail(
                name,
                f"cannot read the bag metadata: {without_quoted_line(exc)}",
                self.info_file_name(),
            )
            return
        for label, value in metadata.info.items():
            self.report.bag_info[label] = list(value) if isinstance(value, list) else [value]
        if metadata.info:
            self.passed(name, f"{len(metadata.info)} labels in {metadata.tag_file_name}")
        else:
            self.add(name, Outcome.SKIP, f"no {metadata.tag_file_name} (it is optional)")

    def info_file_name(self) -> str:
        # BagIt 0.93 to 0.95 called bag-info.txt package-info.txt.
        return "package-info.txt" if self.version <= (0, 95) else "bag-info.txt"

    def walk(self) -> None:
        """Every file in the bag, without following links: regular files only, sizes from the
        same lstat."""
        name = "bag.structure"
        payload_root = self.root / PAYLOAD_DIR
        if not payload_root.is_dir() or payload_root.is_symlink():
            self.fail(name, "no payload directory 'data/' (RFC 8493 §2.1.2)", PAYLOAD_DIR)
        pending = [("", self.root)]
        while pending:
            prefix, directory = pending.pop()
            try:
                with os.scandir(directory) as entries:
                    found = list(entries)
            except OSError as exc:
                self.fail(name, f"cannot list the directory: {exc.strerror or exc}", prefix)
                continue
            for entry in found:
                relative = prefix + entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    self.fail(name, f"cannot stat: {exc.strerror or exc}", relative)
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append((relative + "/", Path(entry.path)))
                    continue
                if stat.S_ISLNK(info.st_mode):
                    self.fail(name, "symbolic link: a bag must hold the files themselves", relative)
                    continue
                if not stat.S_ISREG(info.st_mode):
                    self.fail(name, "not a regular file (device, FIFO or socket)", relative)
                    continue
                if _printable(relative) != relative:
                    self.fail(name, "file name is not valid UTF-8", relative)
                    continue
                target = self.disk_payload if _payload(relative) else self.disk_tags
                target[relative] = info.st_size
        by_nfc: dict[str, list[str]] = {}
        for path in [*self.disk_payload, *self.disk_tags]:
            by_nfc.setdefault(_nfc(path), []).append(path)
        for paths in by_nfc.values():
            if len(paths) > 1:
                self.fail(
                    name,
                    "several files whose names differ only in Unicode normalization: "
                    + ", ".join(ascii(path) for path in sorted(paths))
                    + "; only some file systems can hold them side by side",
                    sorted(paths)[0],
                )
        self.passed(
            name, f"{len(self.disk_payload)} payload files, {len(self.disk_tags)} tag files"
        )

    def manifest_names(self, tag: bool) -> list[tuple[str, str]]:
        """(file name, algorithm) of the payload or tag manifests at the bag root."""
        names = []
        for relative in sorted(self.disk_tags):
            match = _MANIFEST_NAME.fullmatch(relative)
            if match and bool(match.group(1)) == tag:
                names.append((relative, match.group(2).lower()))
        return names

    def read_text(self, check: str, relative: str) -> str | None:
        """A tag file decoded with the declared encoding; None (and a FAIL) when it cannot be."""
        try:
            raw = (self.root / relative).read_bytes()
        except OSError as exc:
            self.fail(check, f"cannot read: {exc.strerror or exc}", relative)
            return None
        try:
            text = raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            self.fail(
                check,
                f"not valid {self.encoding} (byte {exc.start}), the declared tag file encoding",
                relative,
            )
            return None
        if text.startswith("\ufeff"):
            if self.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
                self.warn(check, "begins with a byte-order mark, which UTF-8 must not", relative)
            text = text[1:]
        return text

    def manifest_path(self, check: str, manifest: str, number: int, written: str) -> str | None:
        """The bag-relative path a manifest line means, or None when it is unusable. Leading
        "*" (md5sum's binary mode) and "./" are tolerated with a warning, as RFC 8493 readers
        may; anything that could leave the bag is refused."""
        where = f"{manifest} line {number}"
        path = written
        if path.startswith("*"):
            self.warn(
                check,
                f"{where}: '*' before the path, as md5sum writes in binary mode; read as "
                f"{path[1:]!r}",
                path[1:],
            )
            path = path[1:]
        decoder = _PERCENT_1_0 if self.version >= (1, 0) else _PERCENT_DRAFT
        path = decoder.sub(lambda match: _PERCENT_VALUES[match.group(1).lower()], path)
        if path.startswith("./"):
            self.warn(check, f"{where}: path starts with './'; read relative to the bag", path)
            while path.startswith("./"):
                path = path[2:]
        if (
            path.startswith(("/", "~", "\\"))
            or _DRIVE.match(path)
            or "\0" in path
            or ".." in path.split("/")
            or ".." in path.split("\\")
        ):
            self.fail(check, f"{where}: path {written!r} points outside the bag", written)
            return None
        parts = path.split("/")
        if "" in parts or "." in parts:
            self.warn(check, f"{where}: empty or '.' segments in {written!r}", written)
            path = "/".join(part for part in parts if part not in ("", "."))
        return path

    def read_manifests(self, tag: bool) -> dict[str, _Entry]:
        check = "bag.tagmanifest" if tag else "bag.manifest"
        entries: dict[str, _Entry] = {}
        manifests = self.manifest_names(tag)
        usable = []
        for manifest, algorithm in manifests:
            if not is_supported(algorithm):
                self.warn(
                    check,
                    f"{manifest}: Arkhiv cannot compute {algorithm!r}; this manifest is not "
                    "verified",
                    manifest,
                )
                continue
            text = self.read_text(check, manifest)
            if text is None:
                continue
            usable.append(manifest)
            self.read_manifest(check, manifest, algorithm, text, entries, tag)
        if not tag and not usable:
            self.fail(
                check,
                "no payload manifest that Arkhiv can verify (manifest-ALGORITHM.txt, RFC 8493 "
                "§2.1.3)",
            )
        if not tag:
            self.check_every_manifest_lists_every_file(entries, usable)
        if usable:
            self.passed(check, f"{len(entries)} entries in {', '.join(usable)}")
        elif tag:
            self.add(check, Outcome.SKIP, "no tag manifest (they are optional)")
        return entries

    def read_manifest(
        self,
        check: str,
        manifest: str,
        algorithm: str,
        text: str,
        entries: dict[str, _Entry],
        tag: bool,
    ) -> None:
        expected_length = digest_length(algorithm)
        seen: dict[str, tuple[str, str, int]] = {}  # NFC key -> (form, digest, line number)
        for number, line in enumerate(_LINE_BREAK.split(text), 1):
            if not line.strip():
                continue
            match = _MANIFEST_LINE.fullmatch(line.rstrip(" \t"))
            if match is None:
                self.fail(check, f"line {number} is not 'CHECKSUM FILEPATH': {line!r}", manifest)
                continue
            digest, written = match.group(1).lower(), match.group(2)
            path = self.manifest_path(check, manifest, number, written)
            if path is None:
                continue
            if len(digest) != expected_length:
                self.fail(
                    check,
                    f"{manifest} line {number}: a {algorithm} checksum has {expected_length} hex "
                    f"digits, this one {len(digest)}",
                    path,
                )
                continue
            if not tag and not _payload(path):
                self.fail(
                    check,
                    f"{manifest} line {number}: {path!r} is outside the payload directory data/",
                    path,
                )
                continue
            key = _nfc(path)
            if key in seen:
                self.duplicate(check, manifest, path, digest, number, seen[key])
                continue
            seen[key] = (path, digest, number)
            entry = entries.setdefault(key, _Entry(forms=[path]))
            if path not in entry.forms:
                entry.forms.append(path)
            entry.digests[algorithm] = digest
            entry.manifests[algorithm] = manifest

    def duplicate(
        self,
        check: str,
        manifest: str,
        path: str,
        digest: str,
        number: int,
        first: tuple[str, str, int],
    ) -> None:
        """The same file listed twice in one manifest. RFC 8493 (BagIt 1.0) forbids it; the
        drafts did not, so there it is a warning unless the two checksums disagree."""
        first_path, first_digest, first_number = first
        if first_path == path:
            how = f"lists {path!r} twice (lines {first_number} and {number})"
        else:
            how = (
                f"lists the same name twice in different Unicode normalizations: "
                f"{first_path!a} ({_normalization_form(first_path)}, line {first_number}) "
                f"and {path!a} ({_normalization_form(path)}, line {number})"
            )
        detail = {"manifest": manifest, "forms": sorted({first_path, path})}
        if first_digest != digest:
            self.fail(check, f"{manifest} {how} with different checksums", path, **detail)
        elif self.version >= (1, 0):
            self.fail(check, f"{manifest} {how}; BagIt 1.0 lists a file once", path, **detail)
        else:
            self.warn(check, f"{manifest} {how}, with the same checksum", path, **detail)

    def check_every_manifest_lists_every_file(
        self, entries: dict[str, _Entry], manifests: list[str]
    ) -> None:
        if len(manifests) < 2:
            return
        for entry in entries.values():
            missing = sorted(set(manifests) - set(entry.manifests.values()))
            if missing:
                self.fail(
                    "bag.manifest",
                    f"listed in {', '.join(sorted(entry.manifests.values()))} but not in "
                    f"{', '.join(missing)}; every payload manifest lists every payload file",
                    entry.name,
                )

    def read_fetch(self, payload_entries: dict[str, _Entry]) -> None:
        """fetch.txt: each line "URL LENGTH FILEPATH". Arkhiv fetches nothing; the files must
        already be in the bag (completeness says so when they are not)."""
        check = "bag.fetch"
        if FETCH_FILE not in self.disk_tags:
            return
        text = self.read_text(check, FETCH_FILE)
        if text is None:
            return
        for number, line in enumerate(_LINE_BREAK.split(text), 1):
            if not line.strip():
                continue
            match = _FETCH_LINE.fullmatch(line.strip())
            if match is None:
                self.fail(check, f"line {number} is not 'URL LENGTH FILEPATH'", FETCH_FILE)
                continue
            url, length, written = match.groups()
            parsed = urlparse(url)
            if not (parsed.scheme and (parsed.netloc or parsed.scheme == "file")):
                self.fail(check, f"fetch.txt line {number}: malformed URL {url!r}", written)
            if not (length.isdigit() or length == "-"):
                self.fail(
                    check, f"fetch.txt line {number}: length {length!r} is not a number", written
                )
            path = self.manifest_path(check, FETCH_FILE, number, written)
            if path is None:
                continue
            if not _payload(path):
                self.fail(
                    check, f"fetch.txt line {number}: {path!r} is not in the payload (data/)", path
                )
                continue
            if _nfc(path) not in payload_entries:
                self.fail(
                    check,
                    f"fetch.txt line {number}: {path!r} is in no payload manifest",
                    path,
                )
            self.fetch_paths.add(_nfc(path))
        self.passed(check, f"{len(self.fetch_paths)} entries, all within the payload")

    def match_files(
        self, entries: dict[str, _Entry], disk: dict[str, int]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Pair manifest entries with files on disk by name, and by NFC name where the bytes
        differ (RFC 8493 §2.1.3: readers treat canonically equivalent names as the same).
        Returns ({entry key: disk path}, {entry key: reason it is missing})."""
        by_nfc: dict[str, list[str]] = {}
        for path in disk:
            by_nfc.setdefault(_nfc(path), []).append(path)
        matched: dict[str, str] = {}
        missing: dict[str, str] = {}
        for key, entry in entries.items():
            exact = [form for form in entry.forms if form in disk]
            if exact:
                matched[key] = exact[0]
                continue
            candidates = by_nfc.get(key, [])
            if len(candidates) == 1:
                matched[key] = candidates[0]
                disk_path = candidates[0]
                self.warn(
                    "bag.normalization",
                    f"the manifest writes {entry.name!a} "
                    f"({_normalization_form(entry.name)}) and the file on disk is "
                    f"{disk_path!a} ({_normalization_form(disk_path)}): the same name in "
                    "another Unicode normalization, as macOS file systems write them; treated "
                    "as the same file",
                    entry.name,
                    manifest_name=entry.name,
                    disk_name=disk_path,
                )
            else:
                missing[key] = entry.name
        return matched, missing

    def match_payload(self, entries: dict[str, _Entry]) -> dict[str, str]:
        check = "bag.completeness"
        matched, missing = self.match_files(entries, self.disk_payload)
        by_casefold = {key.casefold(): key for key in matched}
        for key in missing:
            entry = entries[key]
            twin_key = by_casefold.get(key.casefold())
            twin = entries.get(twin_key) if twin_key else None
            same_digests = twin is not None and all(
                twin.digests.get(algorithm) == digest for algorithm, digest in entry.digests.items()
            )
            if twin is not None and same_digests:
                self.warn(
                    check,
                    f"{entry.name!r} is not in the bag but {twin.name!r}, listed with the same "
                    "checksums, is: the manifest was written on a case-insensitive file system, "
                    "where both names are one file",
                    entry.name,
                    present=twin.name,
                )
            elif _is_system_file(entry.name):
                self.tolerated_missing.append(entry)
                self.warn(
                    check,
                    f"{entry.name!r}, a file the operating system writes by itself, is listed "
                    "in the manifest but not in the bag; no content is lost",
                    entry.name,
                )
            elif key in self.fetch_paths:
                self.fail(
                    check,
                    "listed in fetch.txt and not yet fetched; Arkhiv takes complete bags only",
                    entry.name,
                )
            else:
                listed = ", ".join(sorted(set(entry.manifests.values())))
                self.fail(check, f"listed in {listed} but not in the bag", entry.name)
        listed_on_disk = set(matched.values())
        for path in sorted(set(self.disk_payload) - listed_on_disk):
            self.fail(check, "in the payload but in no payload manifest", path)
        for key, disk_path in matched.items():
            if _is_system_file(disk_path):
                self.warn(
                    check,
                    "a file the operating system writes by itself (not content) is in the payload",
                    entries[key].name,
                )
        self.passed(check, f"{len(matched)} listed files in the bag, no file unlisted")
        return matched

    def check_oxum(self) -> None:
        """Payload-Oxum ("OCTETS.COUNT" in bag-info.txt) against the payload on disk."""
        check = "bag.oxum"
        values = self.report.bag_info.get("Payload-Oxum", [])
        if not values:
            self.add(check, Outcome.SKIP, "no Payload-Oxum in bag-info.txt (it is optional)")
            return
        info_file = self.info_file_name()
        if len(set(values)) > 1:
            self.fail(check, f"several different Payload-Oxum values: {values}", info_file)
            return
        if len(values) > 1:
            self.warn(check, "Payload-Oxum given more than once", info_file)
        match = _OXUM.fullmatch(values[0].strip())
        if match is None:
            self.fail(check, f"Payload-Oxum {values[0]!r} is not OCTETS.COUNT", info_file)
            return
        expected_bytes, expected_count = int(match.group(1)), int(match.group(2))
        found_bytes = sum(self.disk_payload.values())
        found_count = len(self.disk_payload)
        if (expected_bytes, expected_count) == (found_bytes, found_count):
            self.passed(check, f"{found_count} files, {found_bytes} bytes, as declared")
            return
        # OS-written files that went missing (warned about already) explain a difference in
        # count; their size is known when their checksum is that of no bytes at all.
        tolerated = self.tolerated_missing
        unknown_size = any(not _is_empty_file_digest(entry) for entry in tolerated)
        count_explained = found_count + len(tolerated) == expected_count
        bytes_explained = (
            found_bytes <= expected_bytes if unknown_size else found_bytes == expected_bytes
        )
        reason = (
            f"Payload-Oxum declares {expected_count} files and {expected_bytes} bytes; the "
            f"payload holds {found_count} files and {found_bytes} bytes"
        )
        if tolerated and count_explained and bytes_explained:
            self.warn(
                check, reason + ", a difference the missing OS-written files explain", info_file
            )
        else:
            self.fail(check, reason, info_file)

    def match_tags(self, entries: dict[str, _Entry]) -> dict[str, str]:
        check = "bag.tagmanifest"
        every_file = {**self.disk_tags, **self.disk_payload}
        matched, missing = self.match_files(entries, every_file)
        for key in missing:
            entry = entries[key]
            listed = ", ".join(sorted(set(entry.manifests.values())))
            self.fail(check, f"listed in {listed} but not in the bag", entry.name)
        return matched

    def verify_tags(self, entries: dict[str, _Entry], matched: dict[str, str]) -> None:
        """Digest every tag file on disk once, and compare those a tag manifest lists."""
        check = "bag.tagmanifest"
        algorithms = self.algorithms(entries.values())
        by_disk = {disk_path: entries[key] for key, disk_path in matched.items()}
        verified = 0
        relatives = sorted(self.disk_tags) + [p for p in by_disk if p not in self.disk_tags]
        jobs = {os.path.join(self.root, relative): relative for relative in relatives}
        for full_path, result in digest_files(list(jobs), algorithms, processes=1):
            relative = jobs[full_path]
            if isinstance(result, OSError):
                self.fail(check, f"cannot read: {result.strerror or result}", relative)
                continue
            if relative in self.disk_tags:
                self.report.tag_files[relative] = result
            entry = by_disk.get(relative)
            if entry is not None:
                verified += 1
                self.compare(check, entry, relative, result)
        if entries:
            self.passed(check, f"{verified} files match their tag manifest checksums")

    def verify_payload(self, entries: dict[str, _Entry], matched: dict[str, str]) -> None:
        """One read of each listed payload file gives every manifest checksum and the extras."""
        check = "bag.checksum"
        if not entries:
            return
        algorithms = self.algorithms(entries.values())
        by_disk = {disk_path: entries[key] for key, disk_path in matched.items()}
        jobs = {os.path.join(self.root, relative): relative for relative in by_disk}
        for full_path, result in digest_files(list(jobs), algorithms, processes=self.processes):
            relative = jobs[full_path]
            entry = by_disk[relative]
            if isinstance(result, OSError):
                self.fail(check, f"cannot read: {result.strerror or result}", entry.name)
                continue
            self.compare(check, entry, relative, result)
            self.report.payload[entry.name] = result
            self.report.on_disk[entry.name] = relative
            self.report.sizes[entry.name] = self.disk_payload[relative]
        # Files finish in any order; the report lists them by name.
        for table in (self.report.payload, self.report.on_disk, self.report.sizes):
            ordered = sorted(table.items())
            table.clear()
            table.update(ordered)
        self.passed(
            check,
            f"{len(self.report.payload)} payload files match "
            f"{', '.join(sorted({a for e in entries.values() for a in e.digests}))}",
        )

    def compare(self, check: str, entry: _Entry, relative: str, computed: dict[str, str]) -> None:
        for algorithm, expected in sorted(entry.digests.items()):
            actual = computed[algorithm]
            if actual != expected:
                manifest = entry.manifests[algorithm]
                self.fail(
                    check,
                    f"{algorithm} mismatch: {manifest} has {expected}, the file has {actual}",
                    entry.name,
                    algorithm=algorithm,
                    expected=expected,
                    actual=actual,
                    manifest=manifest,
                    disk_name=relative,
                )

    def algorithms(self, entries: Iterable[_Entry]) -> list[str]:
        listed = sorted({algorithm for entry in entries for algorithm in entry.digests})
        return list(dict.fromkeys([*listed, *self.extras]))


def _is_empty_file_digest(entry: _Entry) -> bool:
    return any(empty_digest(algorithm) == digest for algorithm, digest in entry.digests.items())


def without_quoted_line(exc: Exception) -> str:
    """bagit quotes a malformed bag-info line, which may hold coordinates: say what, not where."""
    text = str(exc)
    marker = "contains invalid tag:"
    if marker in text:
        return text[: text.index(marker)] + "has a line that is not 'Label: value'"
    return text
