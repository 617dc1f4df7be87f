"""Handing out an object's files: who may have which file, in what state.

- **Derivatives** (models and their formats) need `download_access_copies`; **originals** (the
  package as submitted) `download_originals`; the archive's own **metadata** files are the
  preservation officers', except the public description record.
- A file that carries a precise location (its GPS was sealed at ingest; the capture metadata)
  goes out as it is only to roles with `precise_location`, and each time is written to the
  audit log. Anyone else gets pictures through `clean_image` (no EXIF/XMP/IPTC; HEIC as JPEG),
  videos through `clean_video` (metadata boxes and telemetry tracks zeroed, still playable)
  and nothing at all of other location-bearing files.
- Originals go out as submitted only to roles with `precise_location`: ingest cannot prove that
  every original is free of a location (a cloud in projected coordinates without a CRS, a
  format it has no reader for). Other roles allowed originals get pictures cleaned and nothing
  else of them.
- Originals are audited on the way out (`fixity.audit.audited_copy`): what leaves is the
  archived bytes, from a replica that matches the inventory. Derivatives are served from a
  verified replica on a local store when there is one (HTTP Range works on it), else copied from
  one that passes its audit.
"""

from __future__ import annotations

import mimetypes
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from arkhiv.access.disclosure import CAMERA_PATHS, VideoError, clean_image, clean_video
from arkhiv.access.viewers import Forbidden, Viewer
from arkhiv.aip.archiving import PACKAGE
from arkhiv.aip.description import FILE_NAME as DESCRIPTION
from arkhiv.aip.placement import object_key
from arkhiv.archive import Archive
from arkhiv.catalog import audit_log
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import sealed_locations
from arkhiv.errors import ArkhivError
from arkhiv.fixity.audit import audited_copy
from arkhiv.policies.access import Permission

PICTURES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".webp",
    ".avif",
    ".gif",
    ".dng",
}
# Movies from phones and action cameras: GPS in their metadata boxes and telemetry tracks.
VIDEOS = {".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2"}
VIDEO_TYPES = {"application/mp4", "video/3gpp", "audio/3gpp", "video/3gpp2"}
WITHDRAWN = "withdrawn"
STALE_SECONDS = 3600  # a download's temporary copy left behind (a client that went away)


class NotFound(ArkhivError):
    pass


@dataclass
class Download:
    path: Path  # what to send
    filename: str  # the name the receiver sees
    media_type: str
    temporary: Path | None = None  # remove after sending
    cleaned: bool = False  # metadata was stripped on the way
    located: bool = False  # goes out as archived although it carries a precise location


def prepare_download(
    archive: Archive, viewer: Viewer, object_id: str, logical_path: str
) -> Download:
    """The file of the object's head version at `logical_path`, as `viewer` may have it."""
    _sweep_stale(archive.staging_dir)
    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
        hidden = row is not None and row["status"] == WITHDRAWN
        if (
            row is None
            or row["head_version"] == 0
            or (hidden and not viewer.may(Permission.MANAGE_PRESERVATION))
        ):
            raise NotFound(f"no object {object_id}")
        entry = catalog_objects.version_state(conn, object_id, row["head_version"]).get(
            logical_path
        )
        if entry is None:
            raise NotFound(f"{object_id} has no file {logical_path}")
        located = _carries_location(conn, object_id, logical_path)
    role = entry["role"]
    if role == "derivative":
        viewer.require(Permission.DOWNLOAD_ACCESS_COPIES, "download access copies")
    elif role == "original":
        viewer.require(Permission.DOWNLOAD_ORIGINALS, "download originals")
    elif logical_path != DESCRIPTION:
        viewer.require(Permission.MANAGE_PRESERVATION, "download the archive's metadata files")
    name = Path(logical_path).name
    media_type = entry["mime_type"] or mimetypes.guess_type(name)[0] or "application/octet-stream"
    suffix = Path(name).suffix.lower()
    picture = suffix in PICTURES or (entry["mime_type"] or "").startswith("image/")
    video = suffix in VIDEOS or media_type.startswith("video/") or media_type in VIDEO_TYPES
    cleanable = picture or video  # their locations can be cut out, leaving the rest intact
    trusted = viewer.may(Permission.PRECISE_LOCATION)
    if located and not trusted and not cleanable:
        raise Forbidden(
            f"{logical_path} carries a precise location; the {viewer.role} role may not have it"
        )
    if role == "original" and not trusted and not cleanable:
        # Ingest seals the locations it can read, but a capture can carry one it cannot (a
        # cloud in projected coordinates without a CRS, a format with no reader): an original
        # goes as submitted only to roles trusted with locations. Pictures and videos go out
        # cleaned.
        raise Forbidden(
            f"{logical_path} is an original that may carry a precise location the archive "
            f"cannot rule out; as submitted it goes only to roles with precise_location, not "
            f"to the {viewer.role} role (the model and its formats are location-free)"
        )
    folder = Path(tempfile.mkdtemp(prefix="download-", dir=archive.staging_dir))
    try:
        source = _verified_copy(archive, object_id, entry, folder, must_audit=role == "original")
        if picture and not trusted:
            limits = archive.settings.ingest.resource_limits()
            cleaned = clean_image(source, folder / ("clean-" + name), limits)
            out_name = Path(name).with_suffix(cleaned.suffix).name
            media_type = mimetypes.guess_type(out_name)[0] or media_type
            return Download(cleaned, out_name, media_type, folder, cleaned=True)
        if video and not trusted:
            try:
                cleaned = clean_video(source, folder / ("clean-" + name))
            except VideoError as exc:
                raise Forbidden(
                    f"{logical_path} cannot be cleaned of its locations ({exc}); the "
                    f"{viewer.role} role may not have it as submitted"
                ) from None
            return Download(cleaned, name, media_type, folder, cleaned=True)
        if located:
            with writing(archive.engine) as conn:
                audit_log.append(
                    conn,
                    viewer.name,
                    "precise-location.file-served",
                    object_id,
                    {"role": viewer.role, "file": logical_path},
                )
        if source.parent != folder:  # served in place from a local store
            shutil.rmtree(folder, ignore_errors=True)
            return Download(source, name, media_type, located=located)
        return Download(source, name, media_type, folder, located=located)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _sweep_stale(staging: Path) -> None:
    """Remove temporary download copies older than an hour: a response that never started (a
    bad Range header, a client gone) does not run its clean-up."""
    import time

    limit = time.time() - STALE_SECONDS
    for folder in staging.glob("download-*"):
        try:
            if folder.stat().st_mtime < limit:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


def _carries_location(conn, object_id: str, logical_path: str) -> bool:
    sources = {
        source
        for (source,) in conn.execute(
            select(sealed_locations.c.source_path).where(sealed_locations.c.object_id == object_id)
        )
    }
    in_package = logical_path.removeprefix(PACKAGE + "/")
    # The package's tag files (bag-info.txt, capture-metadata.json) can name the site and the
    # contributor's address whatever was found in them: they count as located.
    tag_file = logical_path.startswith(PACKAGE + "/") and not in_package.startswith("data/")
    return in_package in sources or tag_file or logical_path.startswith(CAMERA_PATHS)


def _verified_copy(archive: Archive, object_id: str, entry, folder: Path, must_audit: bool) -> Path:
    """The file's bytes as archived: a verified replica on a local store read in place, or a
    copy audited on the way (always, for originals)."""
    if not must_audit:
        with reading(archive.engine) as conn:
            replicas = [
                r
                for r in catalog_objects.replicas_of(conn, object_id)
                if r["content_path"] == entry["content_path"] and r["status"] == "verified"
            ]
        for replica in replicas:
            store = archive.stores.get(replica["store"])
            local_path = getattr(store, "local_path", None)
            if local_path is not None:
                path = local_path(object_key(object_id, entry["content_path"]))
                if path.is_file() and path.stat().st_size == entry["size"]:
                    return path
    copy = folder / ("archived-" + Path(entry["content_path"]).name)
    audited_copy(archive, object_id, entry["content_path"], copy_to=copy)
    return copy
