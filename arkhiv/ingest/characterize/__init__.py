"""Characterization: what each file is made of (dimensions, camera, geometry, point counts), whether
it decodes, and every precise location it carries, so that locations can be sequestered. One
module per family of formats; the dispatcher that picks one for a file lives here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from arkhiv.ingest.characterize.containers import characterize_container
from arkhiv.ingest.characterize.images import characterize_image
from arkhiv.ingest.characterize.meshes import characterize_mesh
from arkhiv.ingest.characterize.pointclouds import characterize_point_cloud
from arkhiv.ingest.characterize.videos import characterize_video
from arkhiv.ingest.model import Characterization, Identification
from arkhiv.policies.resources import DEFAULT_LIMITS, ResourceLimits

Characterizer = Callable[[Path], Characterization]

_BY_MIME: dict[str, Characterizer] = {
    "image/jpeg": characterize_image,
    "image/png": characterize_image,
    "image/tiff": characterize_image,
    "image/webp": characterize_image,
    "image/heic": characterize_image,
    "image/heif": characterize_image,
    "image/heic-sequence": characterize_image,
    "image/heif-sequence": characterize_image,
    "model/gltf+json": characterize_mesh,
    "model/gltf-binary": characterize_mesh,
    "model/stl": characterize_mesh,
    "model/obj": characterize_mesh,
    "model/x-ply": characterize_mesh,  # hands vertex-only PLY on to the point-cloud reader
    "model/vrml": characterize_mesh,
    "application/vnd.las": characterize_point_cloud,
    "application/vnd.laszip": characterize_point_cloud,
    "model/e57": characterize_point_cloud,
    "model/3mf": characterize_container,
    "model/vnd.usdz+zip": characterize_container,
    # PRONOM calls MP4 (and M4V, M4A) application/mp4 and 3GP audio/3gpp
    **dict.fromkeys(
        (
            "video/mp4",
            "video/quicktime",
            "video/3gpp",
            "video/3gpp2",
            "video/x-m4v",
            "application/mp4",
            "audio/mp4",
            "audio/3gpp",
        ),
        characterize_video,
    ),
}

# A file whose content is not what its name claims is still read as what it claims, so that
# the claim is refuted with a reason ("a .glb that is really HTML") instead of passing unread.
_BY_EXTENSION: dict[str, Characterizer] = {
    **dict.fromkeys(
        (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".heif"), characterize_image
    ),
    **dict.fromkeys((".gltf", ".glb", ".stl", ".obj", ".ply", ".off", ".wrl"), characterize_mesh),
    **dict.fromkeys((".las", ".laz", ".e57"), characterize_point_cloud),
    **dict.fromkeys((".3mf", ".usdz"), characterize_container),
    **dict.fromkeys((".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".qt", ".m4a"), characterize_video),
}


# Readers that check declared counts (points, mesh elements, pixels) against resource limits.
_LIMITED: set[Callable[..., Characterization]] = {
    characterize_container,
    characterize_image,
    characterize_mesh,
    characterize_point_cloud,
}


def characterize(
    path: Path,
    identification: Identification | None,
    *,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> Characterization:
    """Characterize one file by what it was identified as (else by what its name claims);
    files of other kinds get an empty characterization with `valid` None. Files declaring more
    than `limits` allow are refused (invalid, with the reason)."""
    mime = identification.mime_type if identification else None
    characterizer = _BY_MIME.get(mime or "") or _BY_EXTENSION.get(path.suffix.lower())
    if characterizer is None:
        return Characterization()
    if characterizer in _LIMITED:
        return characterizer(path, limits=limits)
    return characterizer(path)
