"""Turn a plain folder (a folder of photos, a Polycam export, scans) into a BagIt 1.0 bag
(RFC 8493) without touching the folder: its files are copied under the same rules as a received
package (no links followed out of it, no devices) and hashed as they are written.

The bag is written here rather than by `bagit.make_bag`, which bags in place, declares BagIt
0.97 and changes the process's working directory (unsafe beside the server's worker threads).
It is built in a hidden folder beside the destination and renamed into place when complete, so
a failure never leaves a half-made bag under the destination's name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from arkhiv import __version__
from arkhiv.ingest.capture_metadata import METADATA_FILE, PROFILE_ID
from arkhiv.ingest.model import IntakeError
from arkhiv.ingest.unpack import CopiedFile, copy_folder
from arkhiv.policies.ingest import IngestPolicy

ALGORITHMS = ("sha512", "sha256")  # the first is the archive's fixity digest
BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
SOFTWARE_AGENT = f"Arkhiv {__version__}"
# Fields that describe the bag itself: written from what was bagged, never taken from a caller.
_COMPUTED_FIELDS = (
    "Bagging-Date",
    "Payload-Oxum",
    "Bag-Software-Agent",
    "BagIt-Profile-Identifier",
)


def make_bag(
    source: Path,
    destination: Path,
    bag_info: dict[str, str] | None = None,
    processes: int = 2,
    *,
    policy: IngestPolicy | None = None,
    capture_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a BagIt 1.0 bag of the folder `source` at `destination` (which must not exist;
    missing parent folders are created) and return it. The payload is a copy of `source` in
    destination/data; the bag has sha512 and sha256 manifests and tag manifests, and a
    bag-info.txt with Bagging-Date, Payload-Oxum, Bag-Software-Agent and the `bag_info` fields
    in their order. `processes` files are copied and hashed at once. `policy` bounds the
    folder as for a received package (default limits when None). `capture_metadata`, when
    given, becomes the tag file capture-metadata.json (checked at ingest, not here).

    Raises IntakeError naming the path and the reason when the folder cannot be bagged (unsafe
    or unreadable content, limits exceeded, a bad bag-info field, the destination exists); then
    nothing is left at or beside the destination."""
    source, destination = Path(source), Path(destination)
    policy = policy or IngestPolicy()
    if processes < 1:
        raise ValueError(f"processes must be at least 1, not {processes}")
    fields = _checked_fields(bag_info or {})
    if not source.is_dir():
        raise IntakeError([f"{source}: not a folder"])
    if os.path.lexists(destination):
        raise IntakeError([f"{destination}: already exists"])
    real_source = os.path.realpath(source)
    if os.path.commonpath([os.path.realpath(destination), real_source]) == real_source:
        raise IntakeError([f"{destination}: lies inside the folder to be bagged, {source}"])
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    except OSError as exc:
        raise IntakeError([f"{destination}: cannot be created ({exc.strerror})"]) from None
    try:
        payload = copy_folder(source, work / "data", policy, digests=ALGORITHMS, workers=processes)
        _refuse_unencodable(payload)
        _write_tag_files(work, payload, fields, capture_metadata)
        # mkdtemp's 0700 stays: a bag holds its photos' GPS and its contributor's name.
        if os.path.lexists(destination):
            raise IntakeError([f"{destination}: appeared while the bag was being made"])
        os.rename(work, destination)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise IntakeError([f"{destination}: cannot be written ({exc.strerror})"]) from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return destination


def _checked_fields(bag_info: dict[str, str]) -> list[tuple[str, str]]:
    """bag-info.txt fields as given, refused when they would break the file's format."""
    problems = []
    computed = {label.lower() for label in _COMPUTED_FIELDS}
    for label, value in bag_info.items():
        if not isinstance(label, str) or not isinstance(value, str):
            problems.append(f"bag-info field {label!r}: label and value must be text")
        elif not label or label != label.strip() or re.search(r"[:\r\n]", label):
            problems.append(
                f"bag-info field {label!r}: a label is one line, without ':' or surrounding spaces"
            )
        elif label.lower() in computed:
            problems.append(f"bag-info field {label!r}: written by Arkhiv, cannot be given")
        elif re.search(r"[\r\n]", value):
            problems.append(f"bag-info field {label!r}: the value must be a single line")
    if problems:
        raise IntakeError(problems)
    return list(bag_info.items())


def _refuse_unencodable(payload: list[CopiedFile]) -> None:
    """Manifests are UTF-8: a name that is not (bytes a file system kept undecoded) cannot be
    listed in one."""
    problems = []
    for copied in payload:
        try:
            copied.path.encode("utf-8")
        except UnicodeEncodeError:
            shown = copied.path.encode("utf-8", "backslashreplace").decode("utf-8")
            problems.append(f"{shown}: the file name is not valid UTF-8")
    if problems:
        raise IntakeError(problems)


def _manifest_path(path: str) -> str:
    # RFC 8493 §2.1.3: CR, LF and % (and only those) are percent-encoded in manifest paths.
    return path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _write_tag_files(
    bag: Path,
    payload: list[CopiedFile],
    fields: list[tuple[str, str]],
    capture_metadata: Mapping[str, Any] | None,
) -> None:
    octets = sum(copied.size for copied in payload)
    info = [
        ("Bagging-Date", date.today().isoformat()),
        ("Payload-Oxum", f"{octets}.{len(payload)}"),
        ("Bag-Software-Agent", SOFTWARE_AGENT),
        ("BagIt-Profile-Identifier", PROFILE_ID),
        *fields,
    ]
    tag_files = {
        "bagit.txt": BAGIT_TXT,
        "bag-info.txt": "".join(f"{label}: {value}\n" for label, value in info),
    }
    if capture_metadata is not None:
        tag_files[METADATA_FILE] = json.dumps(capture_metadata, indent=2, ensure_ascii=False) + "\n"
    for algorithm in ALGORITHMS:
        # Two spaces, as sha512sum writes them, so that `sha512sum -c` can check a bag too.
        tag_files[f"manifest-{algorithm}.txt"] = "".join(
            f"{copied.digests[algorithm]}  data/{_manifest_path(copied.path)}\n"
            for copied in payload
        )
    for name, text in tag_files.items():
        _write_text(bag / name, text)
    for algorithm in ALGORITHMS:
        lines = (
            f"{hashlib.new(algorithm, text.encode('utf-8')).hexdigest()}  {name}\n"
            for name, text in tag_files.items()
        )
        _write_text(bag / f"tagmanifest-{algorithm}.txt", "".join(lines))


def _write_text(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.chmod(path, 0o600)
