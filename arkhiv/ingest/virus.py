"""The virus check: ClamAV over every file of a staged package, before any parser opens one.

Fail-safe throughout: a file is clean only when ClamAV said so. Whatever ClamAV did not scan (2 GiB
or more, over its limits, encrypted, a symbolic link, a special file, a file it never reported on)
is listed as unscannable, and a ClamAV that is missing or failing fails the check.

Two ways to reach ClamAV:

- clamscan (default), run once for the whole tree because loading the signatures takes long. It
  runs without --infected so that it names every file it scanned: a file missing from its answer
  was skipped silently (clamscan skips FIFOs, and directories deeper than --max-dir-recursion,
  without a word) and is reported as not scanned. Its answer is one "PATH: STATUS" line per file;
  paths are matched against the files walked here, so spaces, colons, line breaks and bytes that
  are not UTF-8 in names cannot be misread.
- clamd over its UNIX socket (`policy.clamd_socket`), with FILDES: this process opens each file
  and hands clamd the open descriptor. clamd needs no permission on the staging area and never
  sees a path, no data is copied through the socket (INSTREAM would be capped by clamd's
  StreamMaxLength, 100 MiB by default), and each answer belongs to the one file sent. clamd's
  limits are those of clamd.conf; a probe file nested deeper than any sane MaxRecursion checks
  that clamd reports files over its limits (AlertExceedsMax yes) instead of passing them.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import stat
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from arkhiv.ingest.model import Check, Outcome
from arkhiv.policies.ingest import GIB, IngestPolicy

CHECK = "virus.scan"
CLAMAV_SIZE_LIMIT = 2 * GIB  # libclamav cannot scan a file of this size or larger
TOO_LARGE = "ClamAV cannot scan files of 2 GiB or more"
CLAMD_TIMEOUT = 600.0  # seconds for one clamd answer; clamd's own MaxScanTime is 120 s by default
CLAMD_STREAMS = os.cpu_count() or 2  # files sent to clamd at once (it scans each on a thread)
PROBE_DEPTH = 300  # archives nested in the clamd probe; clamd's MaxRecursion is 17 by default

_LIMITS = {
    "MaxFileSize": "the file, or a file inside it, is larger than ClamAV's maximum file size",
    "MaxScanSize": "more data to scan than ClamAV's maximum scan size (archive contents included)",
    "MaxRecursion": "archives nested deeper than ClamAV follows",
    "MaxFiles": "more files inside than ClamAV's maximum",
    "MaxScanTime": "scanning took longer than ClamAV's time limit",
}
# One status line of clamscan, after "PATH: ". Signature names never hold ':'.
_STATUS = re.compile(rb"(?:OK|Empty file|Excluded|Symbolic link|(?P<sig>[^:\n]+) FOUND|.+ ERROR)")


@dataclass
class VirusReport:
    engine: str  # ClamAV version and signature version, e.g. "1.4.6/27412/Mon Sep 30 ..."
    checks: list[Check] = field(default_factory=list)
    infected: list[tuple[str, str]] = field(default_factory=list)  # (path, signature)
    unscannable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    errors: list[tuple[str | None, str]] = field(default_factory=list)  # (path or None, message)
    clean: bool = False  # nothing found, everything scanned, no error
    scanned: int = 0  # files ClamAV reported as scanned


@dataclass
class _File:
    rel: str  # relative to the root, as the checks name it
    path: bytes  # absolute, as clamscan prints it
    size: int


@dataclass
class _Findings:
    files: list[_File]
    infected: list[tuple[str, str]] = field(default_factory=list)
    unscannable: list[tuple[str, str, dict]] = field(default_factory=list)
    errors: list[tuple[str | None, str]] = field(default_factory=list)
    scanned: int = 0

    def alert(self, rel: str, signature: str) -> None:
        """A FOUND answer: a virus, or ClamAV saying it did not scan the file."""
        reason = _not_scanned_reason(signature)
        if reason is None:
            self.infected.append((rel, signature))
            self.scanned += 1
        else:
            self.unscannable.append((rel, reason, {"alert": signature}))


def scan_tree(root: Path, policy: IngestPolicy) -> VirusReport:
    """Scan every file under `root` (symbolic links are not followed). Paths in the report are
    relative to `root`, with '/' between folders."""
    try:
        base = Path(root).resolve(strict=True)
    except OSError as exc:
        return _report("unknown", _Findings([], errors=[(None, f"package folder: {exc}")]), policy)
    findings = _Findings([])
    depth = _walk(os.fsencode(base), b"", 0, findings)
    if policy.clamd_socket:
        engine = _scan_clamd(policy, findings)
    else:
        engine = _scan_clamscan(os.fsencode(base), policy, findings, depth)
    return _report(engine, findings, policy)


def _walk(base: bytes, rel: bytes, depth: int, findings: _Findings) -> int:
    """Collect the regular files under base/rel; return the deepest folder level seen."""
    deepest = depth
    try:
        entries = sorted(os.scandir(os.path.join(base, rel) if rel else base), key=lambda e: e.name)
    except OSError as exc:
        findings.errors.append((os.fsdecode(rel) or ".", f"folder cannot be read: {exc.strerror}"))
        return deepest
    for entry in entries:
        child = rel + b"/" + entry.name if rel else entry.name
        name = os.fsdecode(child)
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError as exc:
            findings.errors.append((name, f"cannot be read: {exc.strerror}"))
            continue
        if stat.S_ISDIR(info.st_mode):
            deepest = max(deepest, _walk(base, child, depth + 1, findings))
        elif stat.S_ISREG(info.st_mode):
            findings.files.append(_File(name, base + b"/" + child, info.st_size))
        elif stat.S_ISLNK(info.st_mode):
            # Following it could scan something outside the package, or nothing at all.
            findings.unscannable.append(
                (name, "symbolic link: not followed, its target is not scanned", {})
            )
        else:
            findings.unscannable.append((name, "not a regular file (FIFO, socket, device)", {}))
    return deepest


def _not_scanned_reason(signature: str) -> str | None:
    """ClamAV's alerts for what it did not scan are not infections."""
    if signature.startswith("Heuristics.Limits.Exceeded."):
        limit = signature.rsplit(".", 1)[1]
        return f"{_LIMITS.get(limit, 'over one of ClamAV limits')} ({signature})"
    if signature.startswith("Heuristics.Encrypted."):
        return f"encrypted: its contents cannot be scanned ({signature})"
    return None


# clamscan ----------------------------------------------------------------------------------------


def _scan_clamscan(base: bytes, policy: IngestPolicy, findings: _Findings, depth: int) -> str:
    program = shutil.which("clamscan")
    if program is None:
        findings.errors.append(
            (None, "virus check unavailable: clamscan not found (install ClamAV) and no clamd")
        )
        return "unavailable"
    database = [f"--database={policy.clamav_database}"] if policy.clamav_database else []
    try:
        version = subprocess.run(
            [program, "--version", *database], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        findings.errors.append((None, f"virus check unavailable: clamscan --version: {exc}"))
        return "unavailable"
    if version.returncode != 0:
        message = _message(version.stderr or version.stdout)
        findings.errors.append((None, f"virus check unavailable: clamscan --version: {message}"))
        return "unavailable"
    engine = version.stdout.strip().removeprefix("ClamAV ")
    if policy.clamav_database and "/" not in engine:
        engine = f"{engine} (database {policy.clamav_database})"

    too_large = [f for f in findings.files if f.size >= CLAMAV_SIZE_LIMIT]
    large: dict[bytes, dict] = {}  # path -> the check's detail, which gets ClamAV's word on it
    for entry in too_large:
        large[entry.path] = {"size": entry.size}
        findings.unscannable.append((entry.rel, TOO_LARGE, large[entry.path]))
    command = [
        os.fsencode(program),
        b"--recursive",
        b"--no-summary",
        b"--alert-exceeds-max=yes",  # otherwise files over the limits pass as clean
        b"--alert-encrypted-archive=yes",  # an encrypted archive's contents are not scanned
        b"--follow-dir-symlinks=0",
        b"--follow-file-symlinks=0",
        f"--max-dir-recursion={max(depth + 2, 15)}".encode(),  # deeper folders: skipped silently
        f"--max-filesize={policy.virus_scan_max_file_bytes}".encode(),
        f"--max-scansize={policy.virus_scan_max_scan_bytes}".encode(),
        b"--scan-image-fuzzy-hash=" + (b"yes" if policy.virus_scan_images_by_fuzzy_hash else b"no"),
        *(os.fsencode(option) for option in database),
        # Kept from ClamAV by an anchored pattern on the whole path. Should one not match (clamscan
        # truncates paths to 512 bytes before matching), --max-filesize stops it unread.
        *(b"--exclude=^" + _ere_escape(entry.path) + b"$" for entry in too_large),
        base,
    ]
    try:
        run = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        findings.errors.append((None, f"virus check unavailable: clamscan: {exc}"))
        return engine
    known = {entry.path: entry for entry in findings.files}
    statuses, unparsed = _parse_clamscan(run.stdout, known)
    for path, status in statuses.items():
        entry = known[path]
        if path in large:
            large[path]["clamav"] = status.decode("utf-8", "replace")  # "Excluded": never read
        match = _STATUS.fullmatch(status)
        signature = match["sig"].decode("utf-8", "replace") if match and match["sig"] else None
        if signature:
            if path in large and _not_scanned_reason(signature):
                continue  # already listed as too large
            findings.alert(entry.rel, signature)
        elif status.endswith(b" ERROR"):
            findings.errors.append((entry.rel, f"ClamAV: {status[:-6].decode('utf-8', 'replace')}"))
        elif status in (b"OK", b"Empty file"):
            findings.scanned += 1
        elif path not in large:  # Excluded, Symbolic link: cannot happen for a file listed here
            findings.unscannable.append(
                (entry.rel, f"ClamAV skipped it: {status.decode('utf-8', 'replace')}", {})
            )
    detections = [line for line in unparsed if line.endswith(b" FOUND")]
    for line in detections:  # never drop a detection, even one on a path not walked here
        findings.errors.append((None, f"ClamAV: {line.decode('utf-8', 'replace')}"))
    if (
        run.returncode == 1
        and not findings.infected
        and not detections
        and not any("alert" in extra for _rel, _reason, extra in findings.unscannable)
    ):
        findings.errors.append((None, "ClamAV reported a detection that matches no file"))
    if run.returncode not in (0, 1):
        message = _message(run.stderr.decode("utf-8", "replace"))
        findings.errors.append((None, f"ClamAV failed (exit {run.returncode}): {message}"))
    if run.returncode in (0, 1) or statuses:
        listed = {rel for rel, _reason, _extra in findings.unscannable}
        for entry in findings.files:
            if entry.path not in statuses and entry.rel not in listed:
                findings.unscannable.append(
                    (entry.rel, "ClamAV did not report on it: not scanned", {})
                )
    return engine


def _parse_clamscan(output: bytes, known: dict[bytes, _File]) -> tuple[dict[bytes, bytes], list]:
    """Map each known path to its status. A name holding line breaks spans several lines, so up
    to that many preceding lines are tried together with each line."""
    spans = 1 + max((path.count(b"\n") for path in known), default=0)
    statuses: dict[bytes, bytes] = {}
    unparsed: list[bytes] = []
    pending: list[bytes] = []
    for line in output.split(b"\n"):
        pending.append(line)
        if len(pending) > spans:
            unparsed.append(pending.pop(0))
        for start in range(len(pending)):
            found = _split_status(b"\n".join(pending[start:]), known)
            if found:
                statuses[found[0]] = found[1]
                unparsed.extend(pending[:start])
                pending = []
                break
    unparsed.extend(pending)
    return statuses, [line for line in unparsed if line]


def _split_status(text: bytes, known: dict[bytes, _File]) -> tuple[bytes, bytes] | None:
    """ "PATH: STATUS" for a known PATH; the longest such path wins (names may hold ': ')."""
    cut = len(text)
    while (cut := text.rfind(b": ", 0, cut)) > 0:
        path, status = text[:cut], text[cut + 2 :]
        if path in known and _STATUS.fullmatch(status):
            return path, status
    return None


def _ere_escape(path: bytes) -> bytes:
    """Escape a path for ClamAV's POSIX extended regular expressions."""
    return re.sub(rb"([.\[\]()*+?{}|^$\\])", rb"\\\1", path)


def _message(stderr: str) -> str:
    """ClamAV's own words on what went wrong: its error lines, else its last lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return "; ".join(errors or lines[-3:])[:1000] or "no message"


# clamd -------------------------------------------------------------------------------------------


def _scan_clamd(policy: IngestPolicy, findings: _Findings) -> str:
    address = policy.clamd_socket or ""
    try:
        engine = _clamd(address, b"zVERSION\0").removeprefix("ClamAV ")
        probe = _clamd_probe(address)
    except OSError as exc:
        findings.errors.append((None, f"virus check unavailable: clamd at {address}: {exc}"))
        return "unavailable"
    if probe == "OK":
        findings.errors.append(
            (
                None,
                f"clamd passes files over its limits as clean (an archive nested {PROBE_DEPTH} "
                "deep came back OK): set AlertExceedsMax yes and a lower MaxRecursion",
            )
        )
        return engine
    if not probe.endswith(" FOUND"):
        findings.errors.append((None, f"clamd cannot scan: {probe.removesuffix(' ERROR')}"))
        return engine
    candidates = []
    for entry in findings.files:
        if entry.size >= CLAMAV_SIZE_LIMIT:
            findings.unscannable.append((entry.rel, TOO_LARGE, {"size": entry.size}))
        elif entry.size > policy.virus_scan_max_file_bytes:
            reason = f"larger than the virus scan limit of {policy.virus_scan_max_file_bytes} bytes"
            findings.unscannable.append((entry.rel, reason, {"size": entry.size}))
        else:
            candidates.append(entry)
    # clamd scans each connection on its own thread: several at once use every core, where
    # one clamscan uses one.
    with ThreadPoolExecutor(max_workers=CLAMD_STREAMS, thread_name_prefix="clamd") as pool:
        answers = pool.map(lambda entry: _clamd_file(address, entry), candidates)
        for entry, (kind, message) in zip(candidates, answers, strict=True):
            if kind == "down":
                # clamd gone or stuck: the rest is not scanned, and one failure says so.
                if not any(text.endswith("scan incomplete") for _rel, text in findings.errors):
                    findings.errors.append((entry.rel, f"{message}; scan incomplete"))
            elif kind == "unscannable":
                findings.unscannable.append((entry.rel, message, {}))
            elif kind == "error":
                findings.errors.append((entry.rel, message))
            elif message == "OK":
                findings.scanned += 1
            elif message.endswith(" FOUND"):
                findings.alert(entry.rel, message.removesuffix(" FOUND"))
            else:
                findings.errors.append((entry.rel, f"clamd: {message.removesuffix(' ERROR')}"))
    return engine


def clamd_configuration(
    policy: IngestPolicy, *, socket_path: Path, database: Path, temporary: Path, log: Path
) -> str:
    """A clamd.conf for a clamd serving this policy: its limits and alerts, so that clamd and
    clamscan give the same verdicts (clamd takes no options per scan)."""
    return "\n".join(
        [
            f"LocalSocket {socket_path}",
            f"DatabaseDirectory {database}",
            f"TemporaryDirectory {temporary}",
            f"LogFile {log}",
            "Foreground yes",
            "AlertExceedsMax yes",
            "AlertEncryptedArchive yes",
            f"MaxFileSize {policy.virus_scan_max_file_bytes}",
            f"MaxScanSize {policy.virus_scan_max_scan_bytes}",
            f"ScanImageFuzzyHash {'yes' if policy.virus_scan_images_by_fuzzy_hash else 'no'}",
            f"MaxThreads {max(2, CLAMD_STREAMS)}",
            "",
        ]
    )


def _clamd_file(address: str, entry: _File) -> tuple[str, str]:
    """One file through clamd: ("answer", status) or ("error" | "unscannable" | "down", why)."""
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return "error", f"cannot be opened: {exc.strerror}"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced since the walk
            return "unscannable", "no longer a regular file"
        answer = _clamd(address, b"zFILDES\0", fd)
    except OSError as exc:
        return "down", f"clamd at {address}: {exc}"
    finally:
        os.close(fd)
    return "answer", answer.partition(": ")[2] if answer.startswith("fd[") else answer


def _clamd(address: str, command: bytes, fd: int | None = None) -> str:
    """One command on a fresh connection (z-commands: the answer ends with a NUL byte)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CLAMD_TIMEOUT)
        sock.connect(address)
        sock.sendall(command)
        if fd is not None:
            socket.send_fds(sock, [b"\0"], [fd])
        answer = bytearray()
        while b"\0" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    return answer.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _clamd_probe(address: str) -> str:
    """Scan an archive nested PROBE_DEPTH deep: a clamd that alerts on its limits flags it."""
    fd = os.memfd_create("arkhiv-clamd-probe", os.MFD_CLOEXEC)
    try:
        with open(fd, "wb", closefd=False) as out:
            out.write(_nested_archive())
        answer = _clamd(address, b"zFILDES\0", fd)
    finally:
        os.close(fd)
    return answer.partition(": ")[2] if answer.startswith("fd[") else answer


@cache
def _nested_archive() -> bytes:
    data = b"arkhiv clamd limits probe"
    for _ in range(PROBE_DEPTH):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("n.zip", data)
        data = buffer.getvalue()
    return data


# report ------------------------------------------------------------------------------------------


def _report(engine: str, findings: _Findings, policy: IngestPolicy) -> VirusReport:
    report = VirusReport(engine=engine, scanned=findings.scanned)
    for path, reason in sorted(findings.errors, key=lambda e: (e[0] or "", e[1])):
        report.errors.append((path, reason))
        report.checks.append(Check(CHECK, Outcome.FAIL, reason, path))
    for path, signature in sorted(findings.infected):
        report.infected.append((path, signature))
        report.checks.append(
            Check(CHECK, Outcome.FAIL, f"virus found: {signature}", path, {"signature": signature})
        )
    outcome = Outcome.FAIL if policy.reject_unscannable else Outcome.WARN
    for path, reason, detail in sorted(findings.unscannable, key=lambda u: u[:2]):
        report.unscannable.append((path, reason))
        report.checks.append(Check(CHECK, outcome, f"not scanned: {reason}", path, detail))
    report.clean = not report.checks
    if report.clean:
        report.checks.append(
            Check(CHECK, Outcome.PASS, f"{findings.scanned} files scanned, no virus found")
        )
    return report
