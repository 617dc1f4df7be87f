"""Characterization of still images (JPEG, PNG, TIFF, WebP, HEIC/HEIF): dimensions, camera and
exposure, whether the pixels decode, and every precise location the file carries.

Locations of threatened sites must not leak, so metadata is read independently of decoding: the
metadata segments of JPEG, PNG and WebP are walked here directly (Pillow stops at what it needs to
decode, and a file too big or too broken to decode still carries its GPS tags), TIFF and HEIF
through Pillow and pillow-heif. Every EXIF, XMP and IPTC block found is searched, not only the
first one. `has_location` is True whenever location-bearing metadata is present, parseable or not,
or when the metadata could not be read completely; the access layer strips such files.
Beyond EXIF GPS and XMP (exif:GPS*, DJI drone-dji:Gps*), Mapillary's JSON position in
ImageDescription, the IPTC caption or XMP is reported too. Not searched: free-text place names,
JPEG segments after the first scan, XMP of MPO frames after the first.

Decoding check (`decode_check`):
- "jpeg-dct-scaled": JPEG is decoded at 1/8 scale (Image.draft). libjpeg still reads every
  entropy-coded byte, so truncation and corrupt data are found, with 1/64 of the memory.
- "full": every frame is decoded, when their pixels together stay within `max_decode_pixels`.
- "first-frames": the leading frames that fit within `max_decode_pixels` are decoded.
- "structure": larger images get Image.verify() (PNG: every chunk's CRC; other formats: the
  headers only) so that a huge scan is never held in memory; `valid` stays None unless that
  check fails.
- "none": the file could not be opened.
- "refused": the picture declares more pixels than `max_image_pixels` (a decompression bomb: a
  PNG of 100,000 x 100,000 pixels fits in a few hundred bytes); nothing was decoded, the file is
  invalid. The declared size comes from the header Pillow reads lazily, for HEIF from its `ispe`
  boxes before libheif parses anything.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree import ElementTree

import PIL
import pillow_heif
from PIL import Image, ImageFile
from PIL.TiffImagePlugin import IFDRational

from arkhiv.ingest.model import Characterization, GeoLocation
from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    ResourceLimitExceeded,
    ResourceLimits,
    check_picture_size,
)

pillow_heif.register_heif_opener()

DEFAULT_MAX_DECODE_PIXELS = 64_000_000  # ~256 MB as RGBA; larger images get verify() only
TOOL = f"arkhiv.images (Pillow {PIL.__version__}, pillow-heif {pillow_heif.__version__})"

_MAX_METADATA_BYTES = 64 * 1024 * 1024  # metadata kept in memory per file, all blocks together
_MAX_FRAMES = 10_000
_MAX_JPEG_SEGMENTS = 100_000

# EXIF tags
_IFD_EXIF = 0x8769
_IFD_GPS = 0x8825
_ORIENTATION, _MAKE, _MODEL, _SOFTWARE, _DESCRIPTION = 0x0112, 0x010F, 0x0110, 0x0131, 0x010E
_EXPOSURE, _FNUMBER, _ISO = 0x829A, 0x829D, 0x8827
_DATETIME_ORIGINAL, _OFFSET_ORIGINAL, _SUBSEC_ORIGINAL = 0x9003, 0x9011, 0x9291
_FOCAL, _FOCAL_35MM, _LENS_MODEL, _USER_COMMENT = 0x920A, 0xA405, 0xA434, 0x9286
# GPS tags that say nothing about where: a GPS IFD holding only these is not location-bearing
# (Canon writes a GPS IFD with just the version). Anything else, unknown tags included, is.
_GPS_HARMLESS = {0, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 23, 24, 25, 26, 27, 29, 30, 31}

# TIFF tags holding other metadata blocks
_TIFF_XMP, _TIFF_IPTC, _TIFF_PHOTOSHOP, _TIFF_ICC = 700, 33723, 34377, 34675

_NS_EXIF = "http://ns.adobe.com/exif/1.0/"
_NS_DJI = "http://www.dji.com/drone-dji/1.0/"
_XMP_STANDARD = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
# Names that carry coordinates in any XMP schema (DJI spells "GpsLongtitude" in some firmware).
_XMP_LOCATION_NAME = re.compile(
    r"(?i)(gps)?(dest)?(lat|latitude|lon|long|longitude|longtitude)|gpsareainformation"
)
_RAW_LOCATION = re.compile(rb"(?i)latitude|longitude|longtitude|MAPLat|MAPLon")
# Mapillary's uploader writes its position as JSON into ImageDescription and the IPTC caption.
_MAPILLARY = re.compile(
    rb"MAP(Latitude|Longitude|Altitude)(?:\"|&quot;|\\\")?\s*:\s*(?:\"|&quot;|\\\")?\s*"
    rb"(-?\d+(?:\.\d+)?)"
)
_XMP_COORDINATE = re.compile(
    r"\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*(?:,\s*(\d+(?:\.\d+)?)\s*)?([NSEW])\s*"
)


def characterize_image(
    path: Path,
    *,
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> Characterization:
    """Characterize one image file. Never raises for a bad file: problems go into the result.
    A picture declaring more than `limits.max_image_pixels` is refused before decoding, and no
    more pixels are decoded than the memory budget holds at 8 bytes each (RGBA and a copy).

    `locations` have `source` empty (the caller knows the file's path in the bag)."""
    path = Path(path)
    result = Characterization(tool=TOOL)
    found = _Found()
    props = result.properties
    max_decode_pixels = min(max_decode_pixels, limits.memory_budget_bytes // 8)

    with path.open("rb") as fp:
        prefix = fp.read(16)
        try:
            if prefix.startswith(b"\xff\xd8"):
                found.sof_precision = _walk_jpeg(fp, 0, found)
            elif prefix.startswith(b"\x89PNG\r\n\x1a\n"):
                found.png_bit_depth = _walk_png(fp, found)
            elif prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP":
                _walk_riff(fp, found)
        except Exception as exc:  # malformed segments must not end the characterization
            found.problem(f"metadata could not be read: {exc}", incomplete=True)

    # Before libheif parses the file (it reads HEIF's sizes itself, and refuses some, in words
    # that name no limit); other formats' sizes come from Pillow's lazy open below.
    declared = _heif_declared_size(path, prefix)
    file_bytes = path.stat().st_size
    refused = _refused(path.name, declared, limits, file_bytes)
    im, open_problem = (None, None) if refused else _open(path)
    if im is not None:
        declared = im.size
        refused = _refused(path.name, declared, limits, file_bytes)
        if refused:
            im.close()
            im = None
    if refused and declared is not None:
        result.valid = False
        result.problems.append(refused)
        props["decode_check"] = "refused"
        props["width"], props["height"] = declared
        if not found.walked:
            _scan_for_xmp(path, found)
            found.problem("metadata not read (refused): locations not ruled out", incomplete=True)
    elif im is None:
        result.valid = False
        result.problems.append(f"not a decodable image: {open_problem}")
        props["decode_check"] = "none"
        if not found.walked:
            # Neither Pillow nor a walker read this file's metadata: look for an XMP packet at
            # least, and do not claim the file is free of locations.
            _scan_for_xmp(path, found)
            found.problem("metadata could not be read: locations not ruled out", incomplete=True)
    else:
        with im:
            props["format"] = im.format
            props["width"], props["height"] = im.size
            props["mode"] = im.mode
            props["frames"] = getattr(im, "n_frames", 1)
            props["bit_depth"] = _bit_depth(im, found)
            try:
                _collect_with_pillow(im, prefix, found)
            except Exception as exc:  # a broken IFD or box must not hide the rest
                found.problem(f"metadata could not be read: {exc}", incomplete=True)
        if open_problem:
            result.problems.append(open_problem)
        _check_decoding(path, max_decode_pixels, result)

    try:
        _analyse(found, result)
    except Exception as exc:  # a bug or an unforeseen value: do not claim the file is clean
        result.problems.append(f"metadata analysis failed: {type(exc).__name__}: {exc}")
        props["has_location"] = True
    return result


# ---------------------------------------------------------------------------------------------
# What was found in the file


@dataclass
class _Found:
    exif: list[_Exif] = field(default_factory=list)
    xmp: list[bytes] = field(default_factory=list)
    iptc: list[bytes] = field(default_factory=list)
    texts: list[tuple[str, bytes]] = field(default_factory=list)  # (block, text) to search
    blocks: set[str] = field(default_factory=set)
    location_blocks: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    incomplete: bool = False  # some metadata was not read: locations cannot be ruled out
    walked: bool = False  # a walker of our own read the file's metadata segments
    kept: int = 0
    seen: set[bytes] = field(default_factory=set)
    sof_precision: int | None = None
    png_bit_depth: int | None = None

    def problem(self, text: str, *, incomplete: bool = False) -> None:
        self.problems.append(text)
        self.incomplete = self.incomplete or incomplete

    def keep(self, data: bytes) -> bool:
        """Account for a block kept in memory; False (and incomplete) past the budget, or when
        the same bytes were seen already (HEIF frames, TIFF pages share blocks)."""
        key = hashlib.sha256(data).digest()
        if key in self.seen:
            return False
        if self.kept + len(data) > _MAX_METADATA_BYTES:
            self.problem("metadata larger than the reading limit; not all read", incomplete=True)
            return False
        self.seen.add(key)
        self.kept += len(data)
        return True

    def add_exif(self, data: bytes, where: str) -> None:
        self.blocks.add("exif")
        if not self.keep(data):
            return
        exif = Image.Exif()
        try:
            exif.load(data)
        except Exception as exc:
            self.problem(f"{where}: EXIF block unreadable: {exc}")
            if _RAW_LOCATION.search(data) or b"GPS" in data:
                self.location_blocks.add("exif")
            return
        self.exif.append(_Exif.read(exif))

    def add_xmp(self, data: bytes) -> None:
        self.blocks.add("xmp")
        if self.keep(data):
            self.xmp.append(data)

    def add_iptc(self, data: bytes) -> None:
        self.blocks.add("iptc")
        if self.keep(data):
            self.iptc.append(data)

    def add_photoshop(self, data: bytes, where: str) -> None:
        """Photoshop image resources may carry IPTC, EXIF, XMP and ICC blocks of their own."""
        for resource, payload in _photoshop_resources(data):
            if resource == 0x0404:
                self.add_iptc(payload)
            elif resource in (0x0422, 0x0423):
                self.add_exif(payload, f"{where} (Photoshop)")
            elif resource == 0x0424:
                self.add_xmp(payload)
            elif resource == 0x040F:
                self.blocks.add("icc")


# ---------------------------------------------------------------------------------------------
# Reading metadata blocks


def _read(fp: BinaryIO, size: int, found: _Found, what: str) -> bytes:
    data = fp.read(size)
    if len(data) < size:
        found.problem(f"file ends inside the {what}")
    return data


def _walk_jpeg(fp: BinaryIO, start: int, found: _Found) -> int | None:
    """Every APPn and COM segment before the first scan; returns the SOF sample precision."""
    found.walked = True
    fp.seek(start)
    if fp.read(2) != b"\xff\xd8":
        found.problem("no JPEG start-of-image marker")
        return None
    precision = None
    photoshop = bytearray()
    extended: dict[bytes, dict[int, bytes]] = {}
    for _ in range(_MAX_JPEG_SEGMENTS):
        byte = fp.read(1)
        if not byte:
            found.problem("JPEG ends before its image data")
            break
        if byte != b"\xff":
            found.problem(f"JPEG marker expected at offset {fp.tell() - 1}")
            break
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker:
            break
        code = marker[0]
        if code == 0xD9:  # end of image
            break
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # markers without a length
            continue
        length_bytes = fp.read(2)
        if len(length_bytes) < 2:
            found.problem("JPEG ends inside a segment header")
            break
        length = int.from_bytes(length_bytes, "big") - 2
        if length < 0:
            found.problem(f"bad JPEG segment length at offset {fp.tell() - 2}")
            break
        if code == 0xDA:  # start of scan: metadata segments precede it
            break
        if 0xE0 <= code <= 0xEF or code == 0xFE:
            payload = _read(fp, length, found, "JPEG metadata segment")
            if found.kept + len(payload) > _MAX_METADATA_BYTES:
                found.problem("metadata larger than the reading limit", incomplete=True)
                break
            _jpeg_segment(code, payload, found, photoshop, extended)
        elif code in _JPEG_SOF and precision is None:
            header = fp.read(length)
            precision = header[0] if header else None
        else:
            fp.seek(length, 1)
    else:
        found.problem("too many JPEG segments; stopped reading", incomplete=True)
    if photoshop:
        found.add_photoshop(bytes(photoshop), "JPEG APP13")
    for chunks in extended.values():
        found.add_xmp(b"".join(chunks[offset] for offset in sorted(chunks)))
    return precision


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segment(
    code: int,
    payload: bytes,
    found: _Found,
    photoshop: bytearray,
    extended: dict[bytes, dict[int, bytes]],
) -> None:
    if code == 0xE1 and payload.startswith(b"Exif\x00"):
        found.add_exif(payload[6:], "JPEG APP1")
    elif code == 0xE1 and payload.startswith(_XMP_STANDARD):
        found.add_xmp(payload[len(_XMP_STANDARD) :])
    elif code == 0xE1 and payload.startswith(_XMP_EXTENSION):
        # Extended XMP: 32-byte GUID, full length, offset, then this chunk of the packet
        header = len(_XMP_EXTENSION)
        guid = payload[header : header + 32]
        offset = int.from_bytes(payload[header + 36 : header + 40], "big")
        extended.setdefault(guid, {})[offset] = payload[header + 40 :]
        found.blocks.add("xmp")
    elif code == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        found.blocks.add("icc")
    elif code == 0xED and payload.startswith(b"Photoshop 3.0\x00"):
        photoshop += payload[14:]  # a long resource block continues in the next APP13
    elif code == 0xFE:
        found.texts.append(("jpeg-comment", payload))
    elif b"<x:xmpmeta" in payload or b"<rdf:RDF" in payload:
        found.add_xmp(payload[payload.find(b"<") :])  # XMP under a nonstandard header


def _photoshop_resources(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 12 <= len(data) and data[pos : pos + 4] in (b"8BIM", b"MeSa", b"PHUT", b"AgHg"):
        resource = int.from_bytes(data[pos + 4 : pos + 6], "big")
        name_length = data[pos + 6]
        pos += 6 + name_length + 1
        pos += pos % 2  # the Pascal name is padded to an even size
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        yield resource, data[pos : pos + size]
        pos += size + size % 2


def _walk_png(fp: BinaryIO, found: _Found) -> int | None:
    """Every metadata chunk, including those after the image data (which Pillow only reads by
    decoding the whole image). Returns the IHDR bit depth."""
    found.walked = True
    fp.seek(8)
    bit_depth = None
    while True:
        header = fp.read(8)
        if len(header) < 8:
            found.problem("PNG ends without an IEND chunk")
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            break
        if kind in (b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"IHDR"):
            if found.kept + length > _MAX_METADATA_BYTES:
                found.problem(f"PNG {kind.decode()} chunk too large to read", incomplete=True)
                fp.seek(length + 4, 1)
                continue
            data = _read(fp, length, found, f"PNG {kind.decode('latin-1')} chunk")
            fp.seek(4, 1)  # CRC: verify() checks it
            if kind == b"IHDR":
                bit_depth = data[8] if len(data) >= 9 else None
            else:
                _png_chunk(kind, data, found)
        else:
            fp.seek(length + 4, 1)
    return bit_depth


def _png_chunk(kind: bytes, data: bytes, found: _Found) -> None:
    if kind == b"eXIf":
        found.add_exif(data, "PNG eXIf")
        return
    if kind == b"iCCP":
        found.blocks.add("icc")
        return
    keyword, _, rest = data.partition(b"\x00")
    try:
        if kind == b"tEXt":
            text = rest
        elif kind == b"zTXt":
            text = _inflate(rest[1:], found)
        else:  # iTXt: compression flag, method, language, translated keyword, text
            compressed = rest[:1] == b"\x01"
            _language, _, rest = rest[2:].partition(b"\x00")
            _translated, _, text = rest.partition(b"\x00")
            if compressed:
                text = _inflate(text, found)
    except zlib.error as exc:
        found.problem(f"PNG text chunk {keyword!r} unreadable: {exc}", incomplete=True)
        return
    name = keyword.decode("latin-1")
    if name == "XML:com.adobe.xmp":
        found.add_xmp(text)
    elif name.lower().startswith("raw profile type "):
        _imagemagick_profile(name[17:].lower(), text, found)
    else:
        found.texts.append(("png-text", keyword + b": " + text))


def _inflate(data: bytes, found: _Found) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, _MAX_METADATA_BYTES - found.kept)
    if inflater.unconsumed_tail:
        found.problem("compressed metadata larger than the reading limit", incomplete=True)
    return out


def _imagemagick_profile(kind: str, text: bytes, found: _Found) -> None:
    """ImageMagick's "Raw profile type X" text chunks: newline, type, length, hex lines."""
    lines = text.strip().split(b"\n")
    try:
        data = bytes.fromhex(b"".join(lines[2:]).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        found.problem(f"PNG raw profile {kind!r} is not hex", incomplete=True)
        return
    if kind in ("exif", "app1"):
        found.add_exif(data[6:] if data.startswith(b"Exif\x00") else data, "PNG raw profile")
    elif kind == "xmp":
        found.add_xmp(data)
    elif kind in ("iptc", "8bim"):
        found.add_iptc(data)
    elif kind in ("icc", "icm"):
        found.blocks.add("icc")
    else:
        found.texts.append(("png-text", data))


def _walk_riff(fp: BinaryIO, found: _Found) -> None:
    found.walked = True
    fp.seek(12)
    while True:
        header = fp.read(8)
        if len(header) < 8:
            break
        kind, size = struct.unpack("<4sI", header)
        padded = size + size % 2
        if kind in (b"EXIF", b"XMP ") and found.kept + size <= _MAX_METADATA_BYTES:
            data = _read(fp, size, found, f"WebP {kind.decode()} chunk")
            fp.seek(padded - size, 1)
            if kind == b"EXIF":
                found.add_exif(data[6:] if data.startswith(b"Exif\x00") else data, "WebP EXIF")
            else:
                found.add_xmp(data)
        else:
            if kind in (b"EXIF", b"XMP "):
                found.problem(f"WebP {kind.decode()} chunk too large to read", incomplete=True)
            elif kind == b"ICCP":
                found.blocks.add("icc")
            fp.seek(padded, 1)


def _collect_with_pillow(im: Image.Image, prefix: bytes, found: _Found) -> None:
    """Metadata of formats not walked here (TIFF, HEIF, others), and of later MPO frames."""
    frames = getattr(im, "n_frames", 1)
    if found.walked and im.format != "MPO":
        return  # the walker has read every block; seeking APNG frames would decode them
    if im.format == "HEIF" and _collect_heif_items(im, found):
        return
    if frames > _MAX_FRAMES:
        found.problem(
            f"{frames} frames; metadata read from the first {_MAX_FRAMES}", incomplete=True
        )
    for index in range(min(frames, _MAX_FRAMES)):
        if index:
            im.seek(index)
        where = f"frame {index}"
        if hasattr(im, "tag_v2"):  # TIFF: the file's own IFDs are its EXIF
            _collect_tiff_frame(im, prefix, found, where)
        elif index or not found.walked:  # MPO frame 0 was walked
            info = im.info
            if isinstance(info.get("exif"), bytes):
                found.add_exif(info["exif"], where)
            if isinstance(info.get("xmp"), bytes | str):
                xmp = info["xmp"]
                found.add_xmp(xmp.encode() if isinstance(xmp, str) else xmp)
            if info.get("icc_profile"):
                found.blocks.add("icc")


def _collect_heif_items(im: Image.Image, found: _Found) -> bool:
    """Every metadata item of every image in a HEIF file. pillow-heif's `info` keeps only the
    first Exif and XMP item of each image; its per-image C object (private, hence guarded, with
    `info` as the fallback) still lists them all. False when that is unavailable."""
    try:
        images = list(getattr(im, "_heif_file"))  # noqa: B009 (private: guarded)
        items = [item for image in images for item in image._c_image.metadata]
        icc = any(image.info.get("icc_profile") for image in images)
    except Exception:
        return False
    for item in items:
        kind, data = item.get("type"), item.get("data")
        if not isinstance(data, bytes):
            continue
        if kind == "Exif":
            # 4-byte offset to the TIFF header, which "Exif\0\0" may precede
            start = 4 + int.from_bytes(data[:4], "big")
            found.add_exif(data[start:] if start < len(data) else data[4:], "HEIF Exif item")
        elif kind == "mime" and (b"<x:xmpmeta" in data or "rdf" in item.get("content_type", "")):
            found.add_xmp(data)
        else:
            found.blocks.add("other")
            found.texts.append(("heif-metadata", data))
            if _RAW_LOCATION.search(data):
                found.location_blocks.add("heif-metadata")
    if icc:
        found.blocks.add("icc")
    return True


def _collect_tiff_frame(im: Any, prefix: bytes, found: _Found, where: str) -> None:
    tags = im.tag_v2
    if _TIFF_XMP in tags:
        found.add_xmp(_tag_bytes(tags[_TIFF_XMP], prefix))
    if _TIFF_IPTC in tags:
        found.add_iptc(_tag_bytes(tags[_TIFF_IPTC], prefix))
    if _TIFF_PHOTOSHOP in tags:
        found.add_photoshop(_tag_bytes(tags[_TIFF_PHOTOSHOP], prefix), where)
    if _TIFF_ICC in tags:
        found.blocks.add("icc")
    exif = im.getexif()  # reloaded by Pillow for each page
    if _IFD_EXIF in exif or _IFD_GPS in exif:
        found.blocks.add("exif")
    found.exif.append(_Exif.read(exif))  # now: Pillow reuses the object for the next page


def _tag_bytes(value: Any, prefix: bytes) -> bytes:
    """TIFF tags that should be bytes are sometimes typed LONG (IPTC) or ASCII."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        if all(0 <= v < 256 for v in value):
            return bytes(value)
        endian = "<" if prefix.startswith(b"II") else ">"
        return struct.pack(f"{endian}{len(value)}I", *(v & 0xFFFFFFFF for v in value))
    return str(value).encode()


def _scan_for_xmp(path: Path, found: _Found) -> None:
    """Look for XMP packets anywhere in a file that could not be parsed, a block at a time."""
    data = b""
    with path.open("rb") as fp:
        while block := fp.read(1 << 20):
            data += block
            while (start := data.find(b"<x:xmpmeta")) >= 0:
                end = data.find(b"</x:xmpmeta>", start)
                if end < 0:
                    data = data[start:]
                    if len(data) > _MAX_METADATA_BYTES:  # unterminated: raw search still sees it
                        found.add_xmp(data)
                        return
                    break
                found.add_xmp(data[start : end + 12])
                data = data[end + 12 :]
            else:
                data = data[-16:]  # a start tag may straddle two blocks
    if (start := data.find(b"<x:xmpmeta")) >= 0:
        found.add_xmp(data[start:])


# ---------------------------------------------------------------------------------------------
# Opening and decoding


def _open(path: Path) -> tuple[Image.Image | None, str | None]:
    """(image, problem). Pillow refuses images above its decompression-bomb limit at open; this
    module decodes at most `max_decode_pixels`, so such a file is opened without that check to
    read its header and metadata."""
    try:
        return Image.open(path), None
    except Image.DecompressionBombError as bomb:
        with path.open("rb") as fp:
            prefix = fp.read(16)
        for name in Image.ID:
            factory, accept = Image.OPEN[name]
            if accept is not None and accept(prefix) is not True:
                continue
            try:
                return factory(str(path)), f"not fully decoded: {bomb}"
            except Exception:
                continue
        return None, str(bomb)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _refused(
    name: str, size: tuple[int, int] | None, limits: ResourceLimits, file_bytes: int
) -> str | None:
    """The reason a declared picture size is refused, or None. Ingest decodes no more than
    its budget allows whatever the size, so only the count and the ratio are checked here;
    readers that decode whole (`check_picture`) check the memory too."""
    if size is None:
        return None
    try:
        check_picture_size(name, *size, file_bytes, limits, decoding=False)
    except ResourceLimitExceeded as exc:
        return f"{exc}, nothing decoded"
    return None


def declared_picture_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the picture's header declares them, nothing decoded; None when it is
    not a picture Pillow or libheif can open."""
    with path.open("rb") as fp:
        prefix = fp.read(16)
    declared = _heif_declared_size(path, prefix)
    if declared is not None:
        return declared
    with warnings.catch_warnings():  # Pillow's own bomb warning: the size is checked here
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im, _problem = _open(path)
    if im is None:
        return None
    with im:
        return im.size


def check_picture_bytes(name: str, data: bytes, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
    """`check_picture` for a picture held in memory (a texture inside a model)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
    except Image.DecompressionBombError as exc:
        raise ResourceLimitExceeded(f"{name}: {exc}") from None
    except Exception:
        return  # not a picture Pillow opens: whatever decodes it says what is wrong
    check_picture_size(name, *size, len(data), limits)


def check_picture(path: Path, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
    """For every reader about to decode a picture whole (textures, depth maps, a copy cleaned
    for download): ResourceLimitExceeded when what it declares is a bomb or would not fit the
    memory budget."""
    size = declared_picture_size(path)
    if size is not None:
        check_picture_size(path.name, *size, path.stat().st_size, limits)


_HEIF_CONTAINERS = {b"meta", b"iprp", b"ipco"}
_MAX_HEIF_META_BYTES = 16 * 1024**2


def _heif_declared_size(path: Path, prefix: bytes) -> tuple[int, int] | None:
    """The largest image size a HEIF/AVIF file declares (its `ispe` properties: the primary
    image, a grid's full size, tiles, thumbnails), read from the boxes alone; None when the
    file is not ISOBMFF or declares none."""
    if prefix[4:8] != b"ftyp":
        return None
    try:
        with path.open("rb") as fp:
            end = path.stat().st_size
            position = 0
            while position + 16 <= end:  # top-level boxes: find meta
                fp.seek(position)
                raw = fp.read(16)
                size, kind = struct.unpack_from(">I4s", raw)
                header = 8
                if size == 1:
                    size, header = struct.unpack_from(">Q", raw, 8)[0], 16
                elif size == 0:
                    size = end - position
                if size < header:
                    return None
                if kind == b"meta":
                    if size > _MAX_HEIF_META_BYTES:
                        return None
                    fp.seek(position + header)
                    data = fp.read(size - header)
                    # meta is a full box: version and flags first
                    return _largest_ispe(data[4:], None)
                position += size
    except (OSError, struct.error):
        return None
    return None


def _largest_ispe(data: bytes, largest: tuple[int, int] | None) -> tuple[int, int] | None:
    position = 0
    while position + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1 and position + 16 <= len(data):
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = len(data) - position
        if size < header:
            break
        body = data[position + header : position + size]
        if kind in _HEIF_CONTAINERS:
            largest = _largest_ispe(body, largest)
        elif kind == b"ispe" and len(body) >= 12:
            width, height = struct.unpack_from(">II", body, 4)  # after version and flags
            if largest is None or width * height > largest[0] * largest[1]:
                largest = (width, height)
        position += size
    return largest


def apply_pillow_limit(limits: ResourceLimits) -> None:
    """Lower Pillow's own decompression-bomb limit (MAX_IMAGE_PIXELS, which it refuses at twice)
    to `max_image_pixels` where that is lower. Never raised: it is process-wide, and the other
    Pillow users of the process (derivatives, textures) keep Pillow's stricter default."""
    current = Image.MAX_IMAGE_PIXELS
    if current is None or limits.max_image_pixels < current:
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels


def _check_decoding(path: Path, max_pixels: int, result: Characterization) -> None:
    props = result.properties
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        result.problems.append("Pillow is set to load truncated images: truncation not detected")
    im, _problem = _open(path)
    if im is None:
        props["decode_check"] = "none"
        return
    try:
        with im:
            width, height = im.size
            if im.format in ("JPEG", "MPO"):
                props["decode_check"] = "jpeg-dct-scaled"
                im.draft(im.mode, (max(1, -(-width // 8)), max(1, -(-height // 8))))
                im.load()
            elif width * height > max_pixels:
                props["decode_check"] = "structure"
                im.verify()
                result.problems.append(
                    f"not decoded: {width}x{height} exceeds {max_pixels} pixels; "
                    "structure checked only"
                )
                return  # valid stays None: the pixels were not checked
            else:
                props["decode_check"] = "full"
                frames = getattr(im, "n_frames", 1)
                decoded = pixels = 0
                for index in range(frames):
                    if index:
                        im.seek(index)
                    pixels += im.size[0] * im.size[1]
                    if pixels > max_pixels:
                        break
                    im.load()
                    decoded += 1
                if decoded < frames:
                    props["decode_check"] = "first-frames"
                    result.problems.append(
                        f"frames {decoded + 1} to {frames} not decoded (size limit)"
                    )
        result.valid = True
    except Exception as exc:  # any decoder failure means the pixels cannot be trusted
        result.valid = False
        result.problems.insert(0, f"image cannot be decoded: {type(exc).__name__}: {exc}")


def _bit_depth(im: Image.Image, found: _Found) -> int | None:
    """Bits per sample as stored (Pillow gives 16-bit PNG RGB as 8-bit "RGB")."""
    if found.png_bit_depth:
        return found.png_bit_depth
    if found.sof_precision:
        return found.sof_precision
    if isinstance(im.info.get("bit_depth"), int):  # pillow-heif
        return im.info["bit_depth"]
    tags = getattr(im, "tag_v2", None)
    if tags is not None and 258 in tags:
        value = tags[258]
        return max(value) if isinstance(value, tuple) else int(value)
    return {"1": 1, "I": 32, "F": 32}.get(im.mode, 16 if im.mode.startswith("I;16") else 8)


# ---------------------------------------------------------------------------------------------
# From blocks to properties and locations


def _analyse(found: _Found, result: Characterization) -> None:
    props = result.properties
    locations: list[GeoLocation] = []
    if found.exif:
        props.update(_camera(found.exif[0], result.problems))
    for exif in found.exif:
        locations += _exif_locations(exif, found)
        for text in (exif.ifd0.get(_DESCRIPTION), exif.sub.get(_USER_COMMENT)):
            if isinstance(text, str | bytes):
                found.texts.append(("exif", _as_bytes(text)))
    for packet in found.xmp:
        locations += _xmp_locations(packet, found)
        found.texts.append(("xmp", packet))
    for block in found.iptc:
        found.texts.append(("iptc", block))
    for block, text in found.texts:
        locations += _mapillary_locations(text, block, found)
        if block == "png-text" and _RAW_LOCATION.search(text.split(b":", 1)[0]):
            found.location_blocks.add(block)

    unique: list[GeoLocation] = []
    for location in locations:
        if location not in unique:
            unique.append(location)
    result.locations = unique
    result.problems += found.problems
    props["icc_profile"] = "icc" in found.blocks
    props["metadata_blocks"] = sorted(found.blocks)
    props["location_blocks"] = sorted(found.location_blocks)
    props["has_location"] = bool(unique or found.location_blocks or found.incomplete)


@dataclass
class _Exif:
    """One EXIF block with its sub-IFDs read at once: Pillow reads them lazily from the file,
    which is closed by the time they are analysed."""

    ifd0: dict[int, Any]
    sub: dict[int, Any]
    gps: dict[int, Any] | None  # None: no GPS pointer
    gps_error: str | None = None

    @classmethod
    def read(cls, exif: Image.Exif) -> _Exif:
        try:
            sub = dict(exif.get_ifd(_IFD_EXIF)) if _IFD_EXIF in exif else {}
        except Exception:
            sub = {}
        gps, error = None, None
        if _IFD_GPS in exif:
            try:
                gps = dict(exif.get_ifd(_IFD_GPS))
            except Exception as exc:
                gps, error = {}, str(exc)
        return cls(dict(exif), sub, gps, error)


def _camera(exif: _Exif, problems: list[str]) -> dict[str, Any]:
    sub = exif.sub
    values: dict[str, Any] = {
        "orientation": _integer(exif.ifd0.get(_ORIENTATION)),
        "camera_make": _text(exif.ifd0.get(_MAKE)),
        "camera_model": _text(exif.ifd0.get(_MODEL)),
        "software": _text(exif.ifd0.get(_SOFTWARE)),
        "lens": _text(sub.get(_LENS_MODEL)),
        "focal_length_mm": _maybe_number(sub.get(_FOCAL)),
        "focal_length_35mm": _integer(sub.get(_FOCAL_35MM)),
        "f_number": _maybe_number(sub.get(_FNUMBER)),
        "exposure_time_s": _maybe_number(sub.get(_EXPOSURE)),
        "iso": _integer(sub.get(_ISO)),
        "capture_time": _capture_time(sub, problems),
    }
    return {key: value for key, value in values.items() if value is not None}


def _capture_time(sub: dict[int, Any], problems: list[str]) -> str | None:
    raw = _text(sub.get(_DATETIME_ORIGINAL))
    if not raw:
        return None
    try:
        moment = datetime.strptime(raw[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        problems.append(f"DateTimeOriginal is not a date: {raw!r}")
        return None
    text = moment.isoformat()
    subsec = _text(sub.get(_SUBSEC_ORIGINAL))
    if subsec and subsec.isdigit():
        text += "." + subsec
    offset = _text(sub.get(_OFFSET_ORIGINAL))
    if offset and re.fullmatch(r"[+-]\d\d:\d\d", offset):
        text += offset
    return text


def _exif_locations(exif: _Exif, found: _Found) -> list[GeoLocation]:
    gps = exif.gps
    if gps is None:
        return []
    if exif.gps_error:
        found.problem(f"EXIF GPS block unreadable: {exif.gps_error}")
    if not gps or set(gps) - _GPS_HARMLESS:
        # An unreadable GPS block may hold anything; one with position tags does.
        found.location_blocks.add("exif")
    if not gps:
        found.problem("EXIF GPS block present but unreadable")
        return []
    locations = []
    for kind, (lat_ref, lat, lon_ref, lon) in (
        ("exif-gps", (1, 2, 3, 4)),
        ("exif-gps-dest", (19, 20, 21, 22)),
    ):
        if lat not in gps and lon not in gps:
            continue
        try:
            latitude = _coordinate(gps.get(lat), gps.get(lat_ref), "N", "S", 90)
            longitude = _coordinate(gps.get(lon), gps.get(lon_ref), "E", "W", 180)
        except ValueError as exc:
            found.problem(f"{kind} unparseable: {exc}")
            continue
        if gps.get(lat_ref) is None or gps.get(lon_ref) is None:
            found.problem(f"{kind}: hemisphere reference missing; taken from the sign")
        altitude = None
        if kind == "exif-gps" and gps.get(6) is not None:
            try:
                altitude = _number(gps[6])
                if _integer(gps.get(5)) in (1, 3):  # below sea level / below the ellipsoid
                    altitude = -altitude
            except ValueError as exc:
                found.problem(f"EXIF GPS altitude unparseable: {exc}")
        locations.append(GeoLocation(latitude, longitude, altitude, kind=kind))
    return locations


def _coordinate(value: Any, ref: Any, positive: str, negative: str, limit: float) -> float:
    if value is None:
        raise ValueError("latitude or longitude missing")
    parts = value if isinstance(value, tuple | list) else (value,)
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"{len(parts)} components")
    magnitude = sum(_number(part) / 60**index for index, part in enumerate(parts))
    hemisphere = (_text(ref) or "").upper()[:1]
    if hemisphere == negative:
        magnitude = -abs(magnitude)
    elif hemisphere == positive:
        magnitude = abs(magnitude)
    elif hemisphere:
        raise ValueError(f"reference {hemisphere!r} is not {positive} or {negative}")
    if not -limit <= magnitude <= limit:
        raise ValueError("out of range")
    return magnitude


def _number(value: Any) -> float:
    """A finite float from an EXIF/XMP number; ValueError for zero denominators and junk."""
    if isinstance(value, IFDRational):
        if value.denominator == 0:
            raise ValueError("zero denominator")
        number = value.numerator / value.denominator
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str | bytes):
        text = _text(value) or ""
        numerator, slash, denominator = text.partition("/")
        try:
            if slash:
                if float(denominator) == 0:
                    raise ValueError("zero denominator")
                number = float(numerator) / float(denominator)
            else:
                number = float(text)
        except ValueError as exc:
            raise ValueError("not a number") from exc
    else:
        raise ValueError("not a number")
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _maybe_number(value: Any) -> float | None:
    if isinstance(value, tuple) and value:
        value = value[0]
    try:
        return _number(value) if value is not None else None
    except ValueError:
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, tuple) and value:
        value = value[0]
    if isinstance(value, bytes) and len(value) == 1:
        return value[0]
    number = _maybe_number(value) if not isinstance(value, bytes) else None
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 \t\r\n")
    return value or None


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")


def _xmp_locations(packet: bytes, found: _Found) -> list[GeoLocation]:
    raw_hit = bool(_RAW_LOCATION.search(packet))
    packet = packet.strip(b"\x00 \t\r\n")
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:  # never in XMP; refuse entity tricks
        root = None
        found.problem("XMP packet declares a DOCTYPE; not parsed")
    else:
        try:
            root = ElementTree.fromstring(packet)
        except ElementTree.ParseError as exc:
            root = None
            found.problem(f"XMP packet not well-formed: {exc}")
    if root is None:
        if raw_hit:
            found.location_blocks.add("xmp")
            found.problem("XMP packet mentions a location that could not be parsed")
        return []

    locations = []
    for element in root.iter():
        props: dict[tuple[str, str], str] = {}
        for name, value in element.attrib.items():
            props[_split(name)] = value
        for child in element:
            if len(child) == 0 and child.text and child.text.strip():
                props[_split(child.tag)] = child.text.strip()
        if any(_XMP_LOCATION_NAME.fullmatch(local) for _ns, local in props):
            found.location_blocks.add("xmp")
        for kind, lat, lon, alt, ref in (
            ("xmp-gps", "GPSLatitude", "GPSLongitude", "GPSAltitude", "GPSAltitudeRef"),
            ("xmp-gps-dest", "GPSDestLatitude", "GPSDestLongitude", None, None),
        ):
            if (_NS_EXIF, lat) in props or (_NS_EXIF, lon) in props:
                location = _xmp_location(props, _NS_EXIF, kind, lat, lon, alt, ref, found)
                if location:
                    locations.append(location)
        if (_NS_DJI, "GpsLatitude") in props:
            lon = "GpsLongitude" if (_NS_DJI, "GpsLongitude") in props else "GpsLongtitude"
            location = _xmp_location(
                props, _NS_DJI, "xmp-drone", "GpsLatitude", lon, "AbsoluteAltitude", None, found
            )
            if location:
                locations.append(location)
    return locations


def _split(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        namespace, _, local = name[1:].partition("}")
        return namespace, local
    return "", name


def _xmp_location(
    props: dict[tuple[str, str], str],
    ns: str,
    kind: str,
    lat: str,
    lon: str,
    alt: str | None,
    ref: str | None,
    found: _Found,
) -> GeoLocation | None:
    try:
        latitude = _xmp_coordinate(props.get((ns, lat)), "N", "S", 90)
        longitude = _xmp_coordinate(props.get((ns, lon)), "E", "W", 180)
    except ValueError as exc:
        found.problem(f"{kind} unparseable: {exc}")
        return None
    altitude = None
    if alt and (ns, alt) in props:
        try:
            altitude = _number(props[(ns, alt)])
            if ref and props.get((ns, ref), "").strip() in ("1", "3"):
                altitude = -altitude
        except ValueError as exc:
            found.problem(f"{kind} altitude unparseable: {exc}")
    return GeoLocation(latitude, longitude, altitude, kind=kind)


def _xmp_coordinate(value: str | None, positive: str, negative: str, limit: float) -> float:
    """XMP GPSCoordinate: "DDD,MM,SSk" or "DDD,MM.mmk" (k one of N, S, E, W); drones and some
    writers use a signed decimal instead."""
    if value is None:
        raise ValueError("latitude or longitude missing")
    match = _XMP_COORDINATE.fullmatch(value)
    if match:
        degrees, minutes, seconds, hemisphere = match.groups()
        if hemisphere not in (positive, negative):
            raise ValueError(f"reference is not {positive} or {negative}")
        number = float(degrees) + float(minutes) / 60 + float(seconds or 0) / 3600
        if hemisphere == negative:
            number = -number
    else:
        try:
            number = float(value)
        except ValueError as exc:
            raise ValueError("not a coordinate in DDD,MM,SSk or DDD,MM.mmk form") from exc
    if not (math.isfinite(number) and -limit <= number <= limit):
        raise ValueError("out of range")
    return number


def _mapillary_locations(text: bytes, block: str, found: _Found) -> list[GeoLocation]:
    if b"MAP" not in text:
        return []
    values: dict[bytes, list[float]] = {b"Latitude": [], b"Longitude": [], b"Altitude": []}
    for match in _MAPILLARY.finditer(text):
        values[match[1]].append(float(match[2]))
    if not (values[b"Latitude"] or values[b"Longitude"]):
        return []
    found.location_blocks.add(block)
    locations = []
    pairs = zip(values[b"Latitude"], values[b"Longitude"], strict=False)
    for index, (latitude, longitude) in enumerate(pairs):
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            found.problem(f"Mapillary position out of range in {block}")
            continue
        altitudes = values[b"Altitude"]
        altitude = altitudes[index] if index < len(altitudes) else None
        locations.append(GeoLocation(latitude, longitude, altitude, kind="mapillary-json"))
    return locations


def xmp_packet_locations(packet: bytes) -> tuple[list[GeoLocation], list[str], bool]:
    """The locations in one XMP packet found outside a picture (videos carry XMP too): the
    locations, the problems met, and whether the packet is about a location at all (parseable
    or not)."""
    found = _Found()
    locations = _xmp_locations(packet, found)
    return locations, found.problems, bool(found.location_blocks)
