"""What one file may make a reader allocate: the decompression-bomb check every reader of a
compressed or counted format (point clouds, meshes, pictures) runs on the counts a file declares,
before it decodes anything.

Pure: no I/O and no Arkhiv imports. `IngestPolicy.resource_limits()` builds the limits from the
configuration; readers called without limits use these defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GIB = 1024**3

DEFAULT_MEMORY_BUDGET_BYTES = 2 * GIB
DEFAULT_MAX_DECODED_RATIO = 200.0
DEFAULT_MAX_POINTS = 10_000_000_000
DEFAULT_MAX_MESH_ELEMENTS = 4_000_000_000
DEFAULT_MAX_IMAGE_PIXELS = 500_000_000

# Below this many decoded bytes a high ratio is never refused: small, very regular files (a
# flat-colour picture, a LAZ of a few thousand points) compress far and cannot hurt anyone.
RATIO_FLOOR_BYTES = 64 * 1024**2

# Peak memory of a whole-file read per byte of file, measured on a 1.3-million-face sphere
# (trimesh 4, characterization's load plus its vertex merge): OBJ 8.2, binary PLY 18.1, binary
# STL 10.6, GLB 20.4. Rounded up; formats not measured get the largest.
LOAD_FACTORS = {"obj": 10, "off": 10, "ply": 20, "stl": 12, "glb": 24, "gltf": 24, "usd": 24}
DEFAULT_LOAD_FACTOR = 24


class ResourceLimitExceeded(Exception):
    """A file declares more than a reader may allocate for it. The message is for people and
    names the file, what it declares and the limit (with its configuration key)."""


@dataclass(frozen=True)
class ResourceLimits:
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    max_decoded_ratio: float = DEFAULT_MAX_DECODED_RATIO
    max_points: int = DEFAULT_MAX_POINTS
    max_mesh_elements: int = DEFAULT_MAX_MESH_ELEMENTS
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


DEFAULT_LIMITS = ResourceLimits()

Held = Literal["raw", "compressed", "any"]
CountLimit = Literal["max_points", "max_mesh_elements", "max_image_pixels"]


def check_declared(
    name: str,
    what: str,
    declared: int,
    decoded_bytes: int,
    file_bytes: int,
    limits: ResourceLimits = DEFAULT_LIMITS,
    *,
    held: Held,
    limit: CountLimit | None = None,
) -> None:
    """Refuse a file whose declared `declared` `what` (taking `decoded_bytes` once decoded)
    cannot be honest or would cost too much: over the count `limit`; for `held="raw"` (stored
    uncompressed) more bytes than the `file_bytes` it has; for `held="compressed"` a decoded
    size over `max_decoded_ratio` times the compressed bytes. `held="any"`: only the count.
    Raises ResourceLimitExceeded."""
    declared, decoded_bytes, file_bytes = int(declared), int(decoded_bytes), int(file_bytes)
    claim = f"{name}: declares {declared:,} {what}"
    if declared < 0 or decoded_bytes < 0:
        raise ResourceLimitExceeded(f"{claim}: a negative count")
    if limit is not None and declared > getattr(limits, limit):
        raise ResourceLimitExceeded(
            f"{claim}, over the limit of {getattr(limits, limit):,} (ingest.{limit}): refused"
        )
    if held == "raw" and decoded_bytes > file_bytes:
        raise ResourceLimitExceeded(
            f"{claim} ({size_text(decoded_bytes)}) but holds only {size_text(file_bytes)}: "
            "more than the file can hold, refused"
        )
    if held == "compressed" and decoded_bytes > RATIO_FLOOR_BYTES:
        ratio = decoded_bytes / max(file_bytes, 1)
        if ratio > limits.max_decoded_ratio:
            raise ResourceLimitExceeded(
                f"{claim} (≈{size_text(decoded_bytes)} decoded) in {size_text(file_bytes)}, a "
                f"ratio of {ratio:,.0f}:1 over the limit {limits.max_decoded_ratio:,g}:1 "
                "(ingest.max_decoded_ratio): refused as a decompression bomb"
            )


def check_memory(
    name: str, what: str, needed_bytes: int, limits: ResourceLimits = DEFAULT_LIMITS
) -> None:
    """Refuse reading a file whole when that needs more than the memory budget."""
    if not fits_memory(needed_bytes, limits):
        raise ResourceLimitExceeded(
            f"{name}: reading {what} whole needs ≈{size_text(needed_bytes)}, over the memory "
            f"budget of {size_text(limits.memory_budget_bytes)} (ingest.memory_budget_bytes): "
            "refused"
        )


def check_picture_size(
    name: str,
    width: int,
    height: int,
    file_bytes: int,
    limits: ResourceLimits = DEFAULT_LIMITS,
    *,
    decoding: bool = True,
) -> None:
    """A picture's declared size, before anything decodes it: within `max_image_pixels`, and
    no more decoded bytes (RGB) than `max_decoded_ratio` times its file holds (a PNG or TIFF of
    13,000 x 13,000 flat pixels fits in half a megabyte). `decoding`: the caller is about to
    decode it whole (RGBA, 4 bytes a pixel), which must fit the memory budget too."""
    pixels = int(width) * int(height)
    check_declared(
        name,
        f"pixels ({int(width):,} x {int(height):,})",
        pixels,
        pixels * 3,
        file_bytes,
        limits,
        held="compressed",
        limit="max_image_pixels",
    )
    if decoding:
        check_memory(name, "this picture", pixels * 4, limits)


def fits_memory(needed_bytes: int, limits: ResourceLimits = DEFAULT_LIMITS) -> bool:
    return needed_bytes <= limits.memory_budget_bytes


def load_estimate(file_type: str, total_bytes: int) -> int:
    """Peak memory of loading a mesh file whole (file plus what it references) with trimesh."""
    return total_bytes * LOAD_FACTORS.get(file_type, DEFAULT_LOAD_FACTOR)


def check_zip_members(
    name: str,
    members: list[tuple[str, int, int]],
    archive_bytes: int,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> None:
    """A zip container (USDZ, 3MF) from its directory alone, before anything is extracted:
    `members` are (name, declared uncompressed size, compressed size). Every member, and the
    whole, must stay within the decoded ratio; the whole must fit the memory budget, since
    readers of these formats (usd-core, 3MF loaders) hold their members in memory."""
    total = 0
    for member, size, packed in members:
        total += size
        check_declared(
            f"{name} member {member}", "bytes", size, size, packed, limits, held="compressed"
        )
    check_declared(
        name, "bytes in its members", total, total, archive_bytes, limits, held="compressed"
    )
    check_memory(name, "its members", total, limits)


def size_text(size: float) -> str:
    """Bytes in decimal units, at most one decimal: 59 KB, 170 MB, 12 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")
