"""What leaves the archive about a site's location: the one place every output goes through.

- `precise_locations` is the only way to read a site's coordinates: it needs the
  `precise_location` permission, opens the sealed values with the archive key, and writes every
  disclosure to the append-only audit log (who, which object, why).
- `clean_image` is how any picture leaves: only the segments a picture needs are kept (EXIF,
  XMP, IPTC, comments and any application's own blocks are cut out, losslessly for JPEG and
  PNG; HEIC becomes JPEG), plus the orientation and the colour profile.
- `clean_video` is how any MP4/QuickTime video leaves: only the boxes a movie needs to play
  are kept; every other box (user data, metadata, XMP, vendor and unknown boxes, wherever they
  are) is turned into zeroed padding, and the samples of timed-metadata tracks (GoPro GPMF,
  CAMM) and media data no track uses are zeroed, in place, so that no offset moves and the
  video plays as before.
- `coordinate_traces` finds a location in bytes, written as decimal degrees (3+ decimals), as
  XMP's degrees-and-minutes or as EXIF rationals: a guard for outputs, and what the leak tests
  use.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from arkhiv.access.viewers import Viewer
from arkhiv.archive import Archive
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading, writing
from arkhiv.catalog.tables import sealed_locations
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import Permission
from arkhiv.policies.resources import DEFAULT_LIMITS, ResourceLimitExceeded, ResourceLimits
from arkhiv.security.sealing import Sealed, SealingError

if TYPE_CHECKING:
    from arkhiv.ingest.characterize.videos import Region

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks of pixels and of how to show them; text, dates, EXIF and private chunks are left out.
PNG_KEPT_CHUNKS = {
    b"IHDR",
    b"PLTE",
    b"IDAT",
    b"IEND",
    b"tRNS",
    b"gAMA",
    b"cHRM",
    b"sRGB",
    b"iCCP",
    b"sBIT",
    b"cICP",
    b"pHYs",
    b"acTL",
    b"fcTL",
    b"fdAT",
}
ORIENTATION = 0x0112


class ImageError(ArkhivError):
    pass


class VideoError(ArkhivError):
    pass


def precise_locations(
    archive: Archive, viewer: Viewer, object_id: str, purpose: str
) -> list[dict[str, Any]]:
    """The object's precise locations (capture metadata, EXIF/XMP GPS of its files), for a
    viewer allowed to see them; every call is in the audit log, even one that finds none."""
    viewer.require(Permission.PRECISE_LOCATION, "see precise locations")
    if not purpose.strip():
        raise ArkhivError("say why the precise location is needed (it is logged)")
    from arkhiv.jobs.ingest import seal_context_of

    with reading(archive.engine) as conn:
        rows = conn.execute(
            sealed_locations.select()
            .where(sealed_locations.c.object_id == object_id)
            .order_by(sealed_locations.c.source_path, sealed_locations.c.kind)
        ).all()
    found = []
    for row in rows:
        sealed = Sealed(row.key_id, row.nonce, row.ciphertext)
        try:
            context = seal_context_of(row.submission_id, row.source_path, row.kind)
            value = archive.key.unseal(sealed, context)
        except SealingError as exc:
            raise ArkhivError(f"a sealed location of {object_id} cannot be opened: {exc}") from exc
        found.append(value)
    with writing(archive.engine) as conn:
        audit_log.append(
            conn,
            viewer.name,
            "precise-location.disclosed",
            object_id,
            {"role": viewer.role, "purpose": purpose, "locations": len(found)},
        )
    return found


def clean_image(source: Path, destination: Path, limits: ResourceLimits = DEFAULT_LIMITS) -> Path:
    """A copy of the picture without EXIF, XMP, IPTC, comments or any application's own blocks
    (so no GPS, no device serial, no capture time): see `picture_without_metadata`; HEIC/HEIF
    and other formats become JPEG (PNG when they have transparency). Returns the path written
    (its suffix may change). What the picture declares must stay within `limits` before any
    of its pixels are read (all but sound JPEG and PNG are decoded on the way): this runs in
    the server, per request."""
    from arkhiv.ingest.characterize.images import check_picture

    try:
        check_picture(source, limits)
    except ResourceLimitExceeded as exc:
        raise ImageError(f"cannot be cleaned for download: {exc}") from None
    try:
        cleaned, media_type = picture_without_metadata(source.read_bytes(), others_as="JPEG")
    except ImageError as exc:
        raise ImageError(f"{source.name}: {exc}") from exc
    suffix = {"image/jpeg": (".jpg", ".jpeg"), "image/png": (".png",)}[media_type]
    target = (
        destination if destination.suffix.lower() in suffix else destination.with_suffix(suffix[0])
    )
    target.write_bytes(cleaned)
    return target


def is_cleanable_video(path: Path) -> bool:
    """Whether `clean_video` takes this file: an MP4/QuickTime/3GP movie by its first box (an
    `ftyp` that is not a HEIF/AVIF picture's, or a box old QuickTime files start with), whatever
    its name."""
    from arkhiv.ingest.characterize.videos import is_video  # the readers load numpy: on demand

    return is_video(path)


def clean_video(source: Path, destination: Path) -> Path:
    """A copy of the video without the locations it carries. An allowlist: only the boxes the
    walker walked and knows a movie needs to play are kept (`videos.TOP_KEPT`,
    `STRUCTURE_KEPT`, `FRAGMENT_KEPT`); every other box, at any level (user data with `©xyz`
    and `loci`, QuickTime `meta`, XMP, GoPro's `udta/GPMF`, `meco`, `emsg`, user data in movie
    fragments, vendor and unknown boxes, padding), becomes a `free` box of the same size with
    its payload zeroed. The samples of timed-metadata tracks (GPMF, CAMM, Apple's `mebx`, any
    other), in the movie or in its fragments, are zeroed with their track kept, and so are the
    bytes of `mdat` no track's samples occupy (a second `mdat`, a tail). No size or offset
    changes, so the chunk offsets stay valid and the video and sound play as before. Streamed:
    the file is copied, then the ranges overwritten in place. The copy is read again before it
    is returned. Refused (VideoError): a file whose boxes cannot all be walked, since its
    locations could not all be found, and one with a location in a box the movie needs (a
    handler name, a data reference), which cannot be cut out."""
    from arkhiv.ingest.characterize import videos

    if not is_cleanable_video(source):
        raise VideoError(f"{source.name}: not an MP4/QuickTime video")
    try:
        regions = videos.location_regions(source)
    except (videos.VideoStructureError, OSError) as exc:
        raise VideoError(f"{source.name}: cannot be cleaned ({exc})") from exc
    shutil.copyfile(source, destination)
    try:
        with destination.open("r+b") as fp:
            for region in regions:
                _neutralise(fp, region)
        left = videos.characterize_video(destination)
        blocks = set(left.properties.get("location_blocks", ()))
        # timed-metadata tracks stay (zeroed); their key tables may still name a location
        if not left.valid or left.locations or blocks - videos.TIMED_METADATA_BLOCKS:
            raise VideoError(f"{source.name}: locations remain after cleaning")
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return destination


def _neutralise(fp: Any, region: Region) -> None:
    """Zero a region; a box keeps its size field (32 or 64 bits) and becomes `free`."""
    start, end = region.start, region.start + region.length
    if region.box is not None:
        fp.seek(start + 4)
        fp.write(b"free")
        start += 16 if region.box.large else 8  # a 64-bit size stays
    fp.seek(start)
    zeros = bytes(1 << 20)
    while start < end:
        step = min(len(zeros), end - start)
        fp.write(zeros[:step])
        start += step


def picture_without_metadata(data: bytes, others_as: str = "PNG") -> tuple[bytes, str]:
    """(bytes, MIME type) of a picture without metadata. JPEG and PNG keep every pixel byte:
    only the segments or chunks a picture needs are kept, up to its end (a JPEG's trailers,
    such as the previews of a multi-picture file, are left out), plus the orientation. Any
    other picture, or a damaged JPEG or PNG, is decoded and encoded again as `others_as` (PNG
    or JPEG) from its pixels, turned upright."""
    try:
        if data.startswith(PNG_SIGNATURE):
            return _png_without_metadata(data), "image/png"
        if data.startswith(b"\xff\xd8"):
            return _with_orientation(_jpeg_without_metadata(data), data), "image/jpeg"
    except _Malformed:
        pass  # decoded and encoded again below, if it can be
    from pillow_heif import register_heif_opener

    register_heif_opener()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            picture = ImageOps.exif_transpose(opened)
            profile = opened.info.get("icc_profile")
            encoded = io.BytesIO()
            if others_as == "JPEG" and picture.mode not in ("RGBA", "LA", "PA"):
                picture.convert("RGB").save(encoded, "JPEG", quality=95, icc_profile=profile)
                return encoded.getvalue(), "image/jpeg"
            keep_mode = picture.mode in ("RGB", "RGBA", "L", "LA", "P")
            (picture if keep_mode else picture.convert("RGBA")).save(
                encoded, "PNG", icc_profile=profile
            )
            return encoded.getvalue(), "image/png"
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"not a picture that can be cleaned ({exc})") from exc


class _Malformed(Exception):
    pass


def _with_orientation(cleaned: bytes, original: bytes) -> bytes:
    """The cleaned JPEG with the original's orientation in a minimal EXIF block, so photos still
    show upright."""
    try:
        with Image.open(io.BytesIO(original)) as opened:
            orientation = opened.getexif().get(ORIENTATION)
    except OSError:
        orientation = None
    if orientation in (None, 1):
        return cleaned
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    block = exif.tobytes()  # "Exif\0\0" and a TIFF header: an APP1 payload as it is
    return cleaned[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + cleaned[2:]


def _png_without_metadata(data: bytes) -> bytes:
    kept = [PNG_SIGNATURE]
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            raise _Malformed
        if kind in PNG_KEPT_CHUNKS:
            kept.append(data[position:end])
        position = end
        if kind == b"IEND":
            return b"".join(kept)
    raise _Malformed


def _jpeg_without_metadata(data: bytes) -> bytes:
    """Segments up to the end of image, without APPn segments other than JFIF, the ICC profile
    and Adobe's colour transform, and without comments. Whatever follows the end of image (MPF
    pictures, trailers) is left out."""
    kept = [b"\xff\xd8"]
    position = 2
    while position + 1 < len(data):
        if data[position] != 0xFF:
            raise _Malformed
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:
            kept.append(b"\xff\xd9")
            return b"".join(kept)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            kept.append(data[position : position + 2])
            position += 2
            continue
        if position + 4 > len(data):
            raise _Malformed
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if end > len(data):
            raise _Malformed
        if _keep_jpeg_segment(marker, data[position + 4 : position + 20]):
            kept.append(data[position:end])
        position = end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            scan_end = _jpeg_scan_end(data, position)
            kept.append(data[position:scan_end])
            position = scan_end
    raise _Malformed


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == 0xFE:  # comment
        return False
    if 0xE0 <= marker <= 0xEF:
        return (
            (marker == 0xE0 and payload.startswith(b"JFIF\0"))
            or (marker == 0xE2 and payload.startswith(b"ICC_PROFILE\0"))
            or (marker == 0xEE and payload.startswith(b"Adobe"))
        )
    return True


def _jpeg_scan_end(data: bytes, position: int) -> int:
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            raise _Malformed
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
            position += 2
        elif following == 0xFF:
            position += 1
        else:
            return position


def coordinate_traces(data: bytes, points: Iterable[tuple[float, float]]) -> list[str]:
    """Where `data` gives away any of the points (latitude, longitude): each finding says how.
    Checked forms: decimal degrees to 3 or more decimals (rounded or cut), XMP's
    "DD,MM.mmm" degrees and decimal minutes, and EXIF's degree/minute rationals in either
    byte order."""
    text = data.decode("latin-1")
    found = []
    for latitude, longitude in points:
        for value in (latitude, longitude):
            for pattern, how in _patterns(value):
                if pattern.search(text if isinstance(pattern.pattern, str) else data):
                    found.append(f"{value:.6f} as {how}")
    return sorted(set(found))


def _patterns(value: float) -> list[tuple[re.Pattern, str]]:
    magnitude = abs(value)
    degrees = int(magnitude)
    minutes = (magnitude - degrees) * 60
    cut = f"{int(magnitude * 1000) / 1000:.3f}"
    rounded = f"{magnitude:.3f}"
    decimal = "|".join(re.escape(form) for form in sorted({cut, rounded}))
    patterns: list[tuple[re.Pattern, str]] = [
        (re.compile(rf"(?<![\d.])(?:{decimal})"), "decimal degrees"),
        (re.compile(rf"(?<!\d){degrees},0?{int(minutes)}\.\d"), "XMP degrees and minutes"),
    ]
    for order in "<>":
        for minute_pair in (
            (int(minutes), 1),
            (round(minutes * 100), 100),
            (round(minutes * 10000), 10000),
        ):
            binary = struct.pack(f"{order}IIII", degrees, 1, *minute_pair)
            patterns.append((re.compile(re.escape(binary)), "EXIF rationals"))
    return patterns


# Fields of `arkhiv show`'s document a viewer without `manage_preservation` gets; the rest
# (stores, replicas, events, sealed-location sources, submission) is the officers'.
# Where the cameras stood (a photo set's reconstructed poses): the capture's path, kept with the
# roles trusted with locations even though it is in the model's local frame.
CAMERA_PATHS = "derivatives/model/sparse/"
PUBLIC_FIELDS = ("id", "title", "object_type", "head_version", "created_at", "updated_at")
PUBLIC_FILE_FIELDS = ("logical_path", "role", "size", "format")


def object_view(document: dict[str, Any], viewer: Viewer) -> dict[str, Any]:
    """The object as `viewer` may see it. Preservation officers get the whole document. Everyone
    else gets the description (its location is the public grid cell only), the versions'
    dates and messages, and the files they may download: derivatives for everyone with
    `download_access_copies`, originals only with `download_originals` (originals can carry
    GPS: the roles with that permission are those trusted with precise locations)."""
    if viewer.may(Permission.MANAGE_PRESERVATION):
        return document
    view = {key: document[key] for key in PUBLIC_FIELDS}
    view["description"] = {
        key: value
        for key, value in document["description"].items()
        if key not in ("derivations",)  # provenance detail, in the METS/PREMIS for officers
    }
    view["versions"] = [
        {"number": v["number"], "created_at": v["created_at"], "message": v["message"]}
        for v in document["versions"]
    ]
    allowed_roles = set()
    if viewer.may(Permission.DOWNLOAD_ACCESS_COPIES):
        allowed_roles.add("derivative")
    if viewer.may(Permission.DOWNLOAD_ORIGINALS):
        allowed_roles.add("original")
    view["files"] = [
        {
            **{key: entry[key] for key in PUBLIC_FILE_FIELDS},
            "sha256": entry["digests"].get("sha256"),
        }
        for entry in document["files"]
        if entry["role"] in allowed_roles
        and (
            viewer.may(Permission.PRECISE_LOCATION)
            or not entry["logical_path"].startswith(CAMERA_PATHS)
        )
    ]
    return view
