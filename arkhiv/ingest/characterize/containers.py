"""Models packed in ZIP containers: 3MF (an OPC package) and USDZ. Ingest reads only their
central directory, never a member: it checks that the container opens, counts its members and
refuses one whose members declare more than the resource limits allow (a few kilobytes that
inflate to gigabytes in whatever reader opens them later: reconstruction, a researcher's tool).
A container's geometry is read where it is used, under the same limits."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from arkhiv.ingest.characterize.findings import Findings
from arkhiv.ingest.model import Characterization
from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    ResourceLimitExceeded,
    ResourceLimits,
    check_zip_members,
)

# What a container claims to be by its name; its members must bear it out (3MF: a model part,
# per the 3MF core specification's package layout; USDZ: a USD layer as its first member).
_FORMATS = {".3mf": "3MF", ".usdz": "USDZ"}


@dataclass(kw_only=True)
class _Result(Findings):
    tools: list[str] = field(default_factory=lambda: ["arkhiv zip container reader"])

    def fail(self, message: str) -> None:
        super().fail(f"{self.name}: {message}")


def characterize_container(
    path: Path, *, limits: ResourceLimits = DEFAULT_LIMITS
) -> Characterization:
    path = Path(path)
    result = _Result(path=path)
    claimed = _FORMATS.get(path.suffix.lower())
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as bundle:
            members = [(i.filename, i.file_size, i.compress_size) for i in bundle.infolist()]
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        result.fail(f"not a readable ZIP container ({exc})")
        return result.build()
    names = [name for name, _size, _packed in members]
    form = claimed or _form_of(names)
    result.props.update(
        format=form,
        members=len(members),
        uncompressed_bytes=sum(size for _name, size, _packed in members),
    )
    try:
        check_zip_members(path.name, members, size, limits)
    except ResourceLimitExceeded as exc:
        result.problems.append(str(exc))
        return result.build()
    if form == "3MF" and not any(name.lower().endswith(".model") for name in names):
        result.fail("a 3MF package without a model part (3D/3dmodel.model)")
    if form == "USDZ" and not (names and names[0].lower().endswith((".usd", ".usda", ".usdc"))):
        result.fail("a USDZ whose first member is not a USD layer")
    return result.build()


def _form_of(names: list[str]) -> str:
    if any(name.lower().endswith(".model") for name in names):
        return "3MF"
    return "USDZ"
