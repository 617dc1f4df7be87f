"""Format identification: PRONOM signatures through fido (in-process, signatures loaded once per
`Identifier`), and Arkhiv's own sniffers for the 3D, point-cloud and image formats that PRONOM
v109 misses or confuses (binary STL, LAS 1.3/1.4, LAZ, COPC, USD, HEIC brands, glTF whose
"asset" lies past fido's buffer).

Rules, in order:
- An empty file is not identified (basis "empty file").
- A strong sniffer (magic number plus structure) decides. When PRONOM's signature gives the same
  PUID the basis is "signature" (or "container"), otherwise "arkhiv sniffer: <what it saw>".
- A weak sniffer (text heuristics: OBJ, MTL, STL, binary STL's size rule) decides only where no
  PRONOM signature matched or PRONOM agrees.
- Otherwise PRONOM's signature or container match decides.
- Otherwise the extension decides, but only for formats that PRONOM cannot recognise by content
  (a `.glb` whose content fails the GLB signature is not called GLB).
- Content that contradicts the extension keeps the content's identification and gets a warning.

MIME types: the IANA-registered type where there is one (PRONOM's own MIME is often missing or
generic, e.g. application/json for glTF); `UNREGISTERED_MIME_TYPES` lists the de-facto ones
used where IANA has none.

Only the first and last 128 KiB of a file are read (plus the zip entries that PRONOM's
container signatures name, and a bounded scan for glTF's "asset"), so files of any size are fine.
"""

from __future__ import annotations

import json
import os
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fido
from fido.fido import Fido
from fido.package import OlePackage, ZipPackage

from arkhiv.ingest.model import Identification

FIDO_CONF = Path(fido.CONFIG_DIR)
PRONOM_VERSION = "109"
# fido's own default names formats-v104.xml, which 1.6.1 does not ship: always pass files by path.
SIGNATURE_FILE = FIDO_CONF / f"formats-v{PRONOM_VERSION}.xml"
CONTAINER_SIGNATURE_FILE = FIDO_CONF / "container-signature-20200121.xml"
SNIFFER_TOOL = "arkhiv sniffer"

_BUFSIZE = 128 * 1024  # fido's default: what its BOF/EOF signatures were written against
_GLTF_SCAN_LIMIT = 64 * 1024 * 1024  # embedded base64 buffers can push "asset" far from the ends
_GENERIC_PUIDS = {"x-fmt/263", "fmt/101", "fmt/1776", "x-fmt/111", "fmt/817"}

# MIME types for PUIDs where PRONOM v109 has none or not the IANA-registered one.
_MIME_BY_PUID = {
    "fmt/1314": "model/gltf+json",
    "fmt/1315": "model/gltf+json",
    "fmt/1316": "model/gltf-binary",
    "x-fmt/108": "model/stl",
    "fmt/865": "model/stl",
    "fmt/831": "model/x-ply",  # de facto: IANA has no PLY type
    "fmt/1210": "model/obj",
    "fmt/1211": "model/mtl",
    "fmt/368": "application/vnd.las",
    "fmt/369": "application/vnd.las",
    "fmt/370": "application/vnd.las",
    "fmt/643": "model/e57",
    "fmt/1101": "image/heif",
    "fmt/93": "model/vrml",
    "fmt/94": "model/vrml",
    "fmt/579": "model/x3d+xml",
    "fmt/580": "model/x3d+xml",
    "fmt/581": "model/x3d+xml",
    "fmt/582": "model/x3d+xml",
    "fmt/829": "model/3mf",
}
# The MIME types above (and in `_Kind`s below) that IANA has not registered.
UNREGISTERED_MIME_TYPES = {"model/x-ply", "model/vnd.usd"}


@dataclass(frozen=True)
class _Kind:
    """A format Arkhiv's sniffers recognise."""

    puid: str | None
    mime: str | None
    name: str
    extensions: tuple[str, ...]


GLB = _Kind("fmt/1316", "model/gltf-binary", "GL Transmission Format (Binary)", ("glb",))
GLTF_1 = _Kind("fmt/1314", "model/gltf+json", "GL Transmission Format (Text)", ("gltf",))
GLTF_2 = _Kind("fmt/1315", "model/gltf+json", "GL Transmission Format (Text)", ("gltf",))
STL_ASCII = _Kind("x-fmt/108", "model/stl", "STL (Standard Tessellation Language) ASCII", ("stl",))
STL_BINARY = _Kind("fmt/865", "model/stl", "STL (Standard Tessellation Language) Binary", ("stl",))
PLY = _Kind("fmt/831", "model/x-ply", "Polygon File Format", ("ply",))
OBJ = _Kind("fmt/1210", "model/obj", "Wavefront OBJ File", ("obj",))
MTL = _Kind("fmt/1211", "model/mtl", "Wavefront Material Template Library", ("mtl",))
E57 = _Kind("fmt/643", "model/e57", "ASTM E57 3D File Format", ("e57",))
LAZ = _Kind(None, "application/vnd.laszip", "LASzip compressed LAS (LAZ)", ("laz",))
COPC = _Kind(None, "application/vnd.laszip", "Cloud Optimized Point Cloud (COPC)", ("laz", "copc"))
USDZ = _Kind(None, "model/vnd.usdz+zip", "Universal Scene Description Zip (USDZ)", ("usdz",))
USDA = _Kind(None, "model/vnd.usda", "Universal Scene Description ASCII (USDA)", ("usda", "usd"))
USDC = _Kind(None, "model/vnd.usd", "Universal Scene Description Crate (USDC)", ("usdc", "usd"))
ZIP = _Kind("x-fmt/263", "application/zip", "ZIP Format", ("zip",))
TEXT = _Kind("x-fmt/111", "text/plain", "Plain Text File", ("txt",))
_HEIF_EXTENSIONS = ("heic", "heif", "hif", "heics", "heifs")
# PRONOM v109 has LAS 1.0-1.2 only; 1.3 and 1.4 get no PUID.
_LAS_PUIDS = {(1, 0): "fmt/368", (1, 1): "fmt/369", (1, 2): "fmt/370"}
_SNIFFED_EXTENSIONS = (
    {
        ext: kind.name
        for kind in (GLB, GLTF_2, STL_BINARY, PLY, OBJ, MTL, E57, LAZ, COPC, USDZ, USDA, USDC)
        for ext in kind.extensions
    }
    | {"las": "ASPRS Lidar Data Exchange Format"}
    | dict.fromkeys(_HEIF_EXTENSIONS, "High Efficiency Image File Format")
)
# PRONOM formats whose failure to match is not evidence: the sniffers below cover them.
_SNIFFED_PUIDS = {"fmt/865", "x-fmt/108", "fmt/1210", "fmt/1211"}


@dataclass
class _Sniff:
    kind: _Kind
    what: str  # what the sniffer saw, for the basis
    version: str | None = None
    strong: bool = True  # magic number and structure, not a heuristic
    warning: str | None = None


def _refuse(*_args: Any) -> None:
    # Arkhiv calls fido's matchers directly and takes their return values; nothing prints.
    raise AssertionError("fido's printing path is not used")


def _text(element: ET.Element, tag: str) -> str | None:
    value = element.findtext(tag)
    return (value.strip() or None) if value else None


class Identifier:
    """Identifies files; create one per ingest (loading the signatures takes a moment) and call
    `identify` for each file. Not for concurrent use: fido keeps per-file state."""

    def __init__(
        self,
        signature_file: Path = SIGNATURE_FILE,
        container_signature_file: Path = CONTAINER_SIGNATURE_FILE,
    ) -> None:
        signature_file = Path(signature_file)
        container_signature_file = Path(container_signature_file)
        for needed in (signature_file, container_signature_file):
            if not needed.is_file():
                raise FileNotFoundError(f"PRONOM signature file not found: {needed}")
        version = re.search(r"-v(\d+)\.xml$", signature_file.name)
        self.pronom_version = version.group(1) if version else "unknown"
        self.signature_file = signature_file
        self.container_signature_file = container_signature_file
        self.tool = f"fido {fido.__version__} (PRONOM v{self.pronom_version})"
        self.files_identified = 0

        self._fido = Fido(
            quiet=True,
            nocontainer=True,
            handle_matches=_refuse,
            conf_dir=str(signature_file.parent),
            format_files=[str(signature_file)],
        )
        # Parsed once here; fido's identify_file would re-parse this file for every ZIP or OLE2.
        containers = ET.parse(container_signature_file)
        self._container_signatures = {
            "zip": (ZipPackage, self._fido.extract_signatures(containers, "ZIP")),
            "ole": (OlePackage, self._fido.extract_signatures(containers, "OLE2")),
        }
        self._extensions_by_mime: dict[str, set[str]] = {}
        self._pronom_extensions: dict[str, str] = {}  # extension -> first PRONOM format name
        for element in self._fido.formats:
            extensions = {e.text.lower() for e in element.findall("extension") if e.text}
            mime = self._mime(element)
            if mime:
                self._extensions_by_mime.setdefault(mime, set()).update(extensions)
            for ext in extensions:
                self._pronom_extensions.setdefault(ext, element.findtext("name") or "")

    @property
    def software(self) -> tuple[str, str]:
        """(name, version) for the PREMIS agent."""
        return ("fido", f"{fido.__version__} (PRONOM v{self.pronom_version})")

    def identify(self, path: Path) -> Identification:
        path = Path(path)
        try:
            size = path.stat().st_size
            if size == 0:
                return Identification(None, None, None, basis="empty file", tool=self.tool)
            with path.open("rb") as handle:
                head, tail = _read_ends(handle, size)
                sniff = _sniff(handle, size, head, tail)
        except OSError as exc:
            return Identification(
                None, None, None, basis="unreadable", tool=self.tool, warning=str(exc)
            )
        self.files_identified += 1
        matches, matchtype = self._pronom(path, head, tail)
        ext = path.suffix.lower().lstrip(".")

        puids = [element.findtext("puid") for element, _ in matches]
        if sniff and (sniff.strong or not matches or sniff.kind.puid in puids):
            agreed = sniff.kind.puid is not None and sniff.kind.puid in puids
            result = Identification(
                puid=sniff.kind.puid,
                mime_type=sniff.kind.mime,
                format_name=sniff.kind.name,
                format_version=sniff.version,
                basis=matchtype if agreed else f"arkhiv sniffer: {sniff.what}",
                tool=self.tool if agreed else SNIFFER_TOOL,
                warning=sniff.warning,
            )
            allowed = set(sniff.kind.extensions)
        elif matches:
            element = matches[0][0]
            result = self._from_pronom(element, matchtype)
            if len(matches) > 1:
                others = ", ".join(
                    f"{p} ({e.findtext('name')})"
                    for p, (e, _) in zip(puids[1:], matches[1:], strict=True)
                )
                result.warning = f"PRONOM signatures also match {others}"
            allowed = self._allowed_extensions(element)
        else:
            return self._by_extension(path, ext, head, size)

        return _warn_contradiction(result, ext, allowed, self._expected_name(ext))

    # -- PRONOM ---------------------------------------------------------------------------------

    def _pronom(
        self, path: Path, head: bytes, tail: bytes
    ) -> tuple[list[tuple[ET.Element, str]], str]:
        matches = self._fido.match_formats(head, tail)
        container = self._fido.container_type(matches)
        if container in self._container_signatures and _members_are_bounded(path, container):
            package, signatures = self._container_signatures[container]
            try:
                puids = package(str(path), signatures).detect_formats()
            except Exception:
                # A damaged ZIP or OLE2 file (untrusted input, parsed by zipfile or olefile)
                # keeps the identification its outer signature gave.
                puids = []
            found: list[tuple[ET.Element, str]] = []
            for puid in dict.fromkeys(puids):
                element = self._fido.puid_format_map.get(puid)
                if element is not None:
                    found.append((element, element.findtext("name") or ""))
            if found:
                return found, "container"
        return matches, "signature"

    def _mime(self, element: ET.Element) -> str | None:
        puid = element.findtext("puid") or ""
        return _MIME_BY_PUID.get(puid) or _text(element, "mime")

    def _from_pronom(self, element: ET.Element, basis: str) -> Identification:
        return Identification(
            puid=element.findtext("puid"),
            mime_type=self._mime(element),
            format_name=_text(element, "name"),
            format_version=_text(element, "version"),
            basis=basis,
            tool=self.tool,
        )

    def _allowed_extensions(self, element: ET.Element) -> set[str]:
        allowed = {e.text.lower() for e in element.findall("extension") if e.text}
        mime = self._mime(element)
        return allowed | self._extensions_by_mime.get(mime, set()) if mime else allowed

    def _expected_name(self, ext: str) -> str | None:
        return _SNIFFED_EXTENSIONS.get(ext) or self._pronom_extensions.get(ext)

    def _by_extension(self, path: Path, ext: str, head: bytes, size: int) -> Identification:
        candidates = [element for element, _ in self._fido.match_extensions(path.name)]
        # A format with a PRONOM signature (or an Arkhiv sniffer) would have matched by content.
        blind = [
            e
            for e in candidates
            if not e.findall("signature")
            and e.findtext("puid") not in _SNIFFED_PUIDS
            and ext not in _SNIFFED_EXTENSIONS
        ]
        if len(blind) == 1:
            return self._from_pronom(blind[0], "extension")
        if _is_text(head, size):
            result = Identification(
                TEXT.puid,
                TEXT.mime,
                TEXT.name,
                basis="arkhiv sniffer: text without a known signature",
                tool=SNIFFER_TOOL,
            )
            allowed = {"txt"} | self._extensions_by_mime.get("text/plain", set())
            allowed |= {e.text.lower() for b in blind for e in b.findall("extension") if e.text}
            return _warn_contradiction(result, ext, allowed, self._expected_name(ext))
        result = Identification(None, None, None, basis="unidentified", tool=self.tool)
        if len(blind) > 1:
            names = ", ".join(f"{e.findtext('puid')} ({e.findtext('name')})" for e in blind)
            result.warning = f"extension .{ext} fits several formats ({names}); content unknown"
        elif ext and self._expected_name(ext):
            result.warning = (
                f"extension .{ext} suggests {self._expected_name(ext)}, "
                "but the content matches none of its signatures"
            )
        return result


def _warn_contradiction(
    result: Identification, ext: str, allowed: set[str], expected: str | None
) -> Identification:
    """Warn when the extension belongs to some other known format than the content's."""
    if not ext or ext in allowed or expected is None:
        return result
    content = f"{result.format_name} ({result.puid or result.mime_type})"
    if result.puid in _GENERIC_PUIDS:
        message = (
            f"extension .{ext} suggests {expected}, which could not be confirmed: "
            f"content is only known to be {content}"
        )
    else:
        message = f"extension .{ext} but content is {content}; .{ext} is for {expected}"
    result.warning = f"{result.warning}; {message}" if result.warning else message
    return result


# -- reading --------------------------------------------------------------------------------------


def _read_ends(handle: Any, size: int) -> tuple[bytes, bytes]:
    """The first and last `_BUFSIZE` bytes (fido's BOF and EOF buffers). Read here rather than
    with fido's get_buffers, whose read loop never ends if the file shrinks while it reads."""
    head = handle.read(min(size, _BUFSIZE))
    if size <= _BUFSIZE:
        return head, head
    handle.seek(size - _BUFSIZE)
    return head, handle.read(_BUFSIZE)


def _read_at(handle: Any, offset: int, length: int) -> bytes:
    handle.seek(offset)
    return handle.read(length)


_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")


def _is_text(head: bytes, size: int) -> bool:
    """UTF-8 (or ASCII) text without control characters, allowing a character cut at the end of
    the buffer."""
    if _CONTROL.search(head):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return size > len(head) and exc.start >= len(head) - 3
    return True


def _lines(head: bytes, size: int) -> list[bytes]:
    lines = head.splitlines()
    if size > len(head) and lines:
        lines.pop()  # cut by the buffer
    return lines


# -- sniffers -------------------------------------------------------------------------------------


def _sniff(handle: Any, size: int, head: bytes, tail: bytes) -> _Sniff | None:
    for sniffer in (_glb, _e57, _las, _usdc, _usda, _usdz, _heif, _ply):
        found = sniffer(head)
        if found:
            return found
    return _gltf_json(handle, size, head, tail) or _stl(head, tail, size) or _obj_mtl(head, size)


def _glb(head: bytes) -> _Sniff | None:
    if head[:4] != b"glTF" or len(head) < 12:
        return None
    version, _length = struct.unpack_from("<II", head, 4)
    if version != 2:
        # Binary glTF 1.0 was an extension (KHR_binary_glTF); PRONOM's fmt/1316 is version 2.
        return _Sniff(
            _Kind(None, None, "Binary glTF (KHR_binary_glTF)", ("glb",)),
            f"glTF magic, container version {version}",
            str(version),
        )
    return _Sniff(GLB, "glTF magic, container version 2", "2")


def _e57(head: bytes) -> _Sniff | None:
    if head[:8] != b"ASTM-E57" or len(head) < 16:
        return None
    major, minor = struct.unpack_from("<II", head, 8)
    return _Sniff(E57, "ASTM-E57 signature", f"{major}.{minor}")


def _las(head: bytes) -> _Sniff | None:
    if head[:4] != b"LASF" or len(head) < 105:
        return None
    major, minor = head[24], head[25]
    (header_size,) = struct.unpack_from("<H", head, 94)
    (vlr_count,) = struct.unpack_from("<I", head, 100)
    point_format = head[104]
    version = f"{major}.{minor}"
    # LASzip marks compressed point data by setting bit 7 (older tools: bit 6) of the format id.
    if not point_format & 0xC0:
        kind = _Kind(
            _LAS_PUIDS.get((major, minor)),
            "application/vnd.las",
            "ASPRS Lidar Data Exchange Format",
            ("las",),
        )
        return _Sniff(
            kind, f"LASF header, LAS {version}, point data format {point_format}", version
        )
    what = f"LASF header, LAS {version}, point data format {point_format & 0x3F} compressed"
    vlr = head[header_size : header_size + 20]
    if (major, minor) >= (1, 4) and vlr_count and len(vlr) == 20:
        user_id = vlr[2:18].rstrip(b"\0")
        (record_id,) = struct.unpack_from("<H", vlr, 18)
        if user_id == b"copc" and record_id == 1:
            return _Sniff(COPC, f"{what}, copc info VLR first", "1.0")
    return _Sniff(LAZ, what, version)


def _usdc(head: bytes) -> _Sniff | None:
    if head[:8] != b"PXR-USDC":
        return None
    version = ".".join(str(b) for b in head[8:11]) if len(head) >= 11 else None
    return _Sniff(USDC, "PXR-USDC magic", version)


_USDA = re.compile(rb"\A#usda[ \t]+([0-9][0-9.]*)")


def _usda(head: bytes) -> _Sniff | None:
    found = _USDA.match(head)
    return _Sniff(USDA, "#usda header", found.group(1).decode()) if found else None


def _usdz(head: bytes) -> _Sniff | None:
    if head[:4] != b"PK\x03\x04" or len(head) < 30:
        return None
    (method,) = struct.unpack_from("<H", head, 8)
    name_length, _extra_length = struct.unpack_from("<HH", head, 26)
    name = head[30 : 30 + name_length].decode("utf-8", "replace")
    if not name.lower().endswith((".usd", ".usda", ".usdc")):
        return None
    if method != 0:
        return _Sniff(
            ZIP,
            f"zip whose first entry {name} is compressed",
            warning=f"first entry {name} is a USD layer but compressed: USDZ stores entries "
            "uncompressed, so this is not a conforming USDZ",
        )
    return _Sniff(USDZ, f"zip whose first entry {name} is stored uncompressed")


_HEIC_BRANDS = {b"heic", b"heix"}
_HEIC_SEQUENCE_BRANDS = {b"hevc", b"hevx"}


def _heif(head: bytes) -> _Sniff | None:
    if head[4:8] != b"ftyp" or len(head) < 16:
        return None
    (box_size,) = struct.unpack_from(">I", head, 0)
    major = head[8:12]
    end = min(max(box_size, 16), len(head))
    compatible = [head[i : i + 4] for i in range(16, end - 3, 4)]
    brands = {major, *compatible}
    if b"avif" in brands or b"avis" in brands:
        return None  # AV1 in HEIF is AVIF: a format of its own
    if brands & _HEIC_BRANDS:
        mime = "image/heic"
    elif brands & _HEIC_SEQUENCE_BRANDS:
        mime = "image/heic-sequence"
    elif major == b"msf1":
        mime = "image/heif-sequence"
    elif major == b"mif1" or b"mif1" in brands:
        mime = "image/heif"
    else:
        return None
    shown = ",".join(b.decode("latin-1") for b in compatible)
    kind = _Kind("fmt/1101", mime, "High Efficiency Image File Format", _HEIF_EXTENSIONS)
    return _Sniff(kind, f"ftyp brand {major.decode('latin-1')} ({shown})")


_PLY = re.compile(
    rb"\Aply\r?\n(?:(?:comment|obj_info)[^\n]*\n)*"
    rb"format[ \t]+(ascii|binary_little_endian|binary_big_endian)[ \t]+([0-9.]+)"
)


def _ply(head: bytes) -> _Sniff | None:
    found = _PLY.match(head)
    if not found:
        return None
    encoding = found.group(1).decode()
    kind = _Kind(PLY.puid, PLY.mime, f"{PLY.name} ({encoding})", PLY.extensions)
    return _Sniff(kind, f"PLY header, format {encoding}", found.group(2).decode())


_ASSET = re.compile(rb'"asset"\s*:\s*\{')
_GLTF_KEYS = re.compile(rb'"(?:accessors|bufferViews|buffers|meshes|nodes|scenes|asset)"\s*:')


def _gltf_json(handle: Any, size: int, head: bytes, tail: bytes) -> _Sniff | None:
    body = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not body.startswith(b"{") or not _GLTF_KEYS.search(head):
        return None
    offset = _find_asset(handle, size, head, tail)
    if offset is None:
        return None
    chunk = _read_at(handle, offset, 64 * 1024).decode("utf-8", "replace")
    try:
        asset, _end = json.JSONDecoder().raw_decode(chunk)
    except ValueError:
        return None
    version = asset.get("version") if isinstance(asset, dict) else None
    if not isinstance(version, str):
        return None
    kind = {"2.0": GLTF_2, "1.0": GLTF_1}.get(
        version, _Kind(None, "model/gltf+json", "GL Transmission Format (Text)", ("gltf",))
    )
    return _Sniff(kind, f'JSON object with "asset" version {version}', version)


def _find_asset(handle: Any, size: int, head: bytes, tail: bytes) -> int | None:
    """Offset of the "{" that opens the asset object: in the head, the tail, or (for glTF with
    large embedded buffers) a bounded scan between them."""
    found = _ASSET.search(head)
    if found:
        return found.end() - 1
    found = _ASSET.search(tail)
    if found:
        return size - len(tail) + found.end() - 1
    overlap = 64
    position = len(head) - overlap
    limit = min(size - len(tail), _GLTF_SCAN_LIMIT)
    while position < limit:
        chunk = _read_at(handle, position, 1024 * 1024)
        if not chunk:
            break
        found = _ASSET.search(chunk)
        if found:
            return position + found.end() - 1
        position += len(chunk) - overlap
    return None


_STL_ASCII_BODY = re.compile(rb"^\s*(?:facet\s+normal|endsolid)\b", re.MULTILINE | re.IGNORECASE)


def _stl(head: bytes, tail: bytes, size: int) -> _Sniff | None:
    starts_solid = head.lstrip()[:5].lower() == b"solid"
    if size >= 84:
        (count,) = struct.unpack_from("<I", head, 80)
        # Binary STL headers may begin with "solid" too; the size rule and binary facets decide.
        if size == 84 + 50 * count and not (starts_solid and _is_text(head[84:], size - 84)):
            note = ", header starts with 'solid'" if starts_solid else ""
            return _Sniff(
                STL_BINARY,
                f"80-byte header and {count} facets of 50 bytes{note}",
                strong=False,
            )
    if (
        starts_solid
        and _is_text(head, size)
        and (_STL_ASCII_BODY.search(head) or b"endsolid" in tail.lower())
    ):
        return _Sniff(STL_ASCII, "text starting with 'solid' with facet lines", strong=False)
    return None


_OBJ_KEYWORDS = {
    b"v", b"vt", b"vn", b"vp", b"f", b"l", b"p", b"o", b"g", b"s", b"mg", b"usemtl", b"mtllib",
    b"cstype", b"deg", b"bmat", b"step", b"curv", b"curv2", b"surf", b"parm", b"trim", b"hole",
    b"scrv", b"sp", b"end", b"con", b"lod", b"bevel", b"c_interp", b"d_interp", b"shadow_obj",
    b"trace_obj", b"ctech", b"stech", b"call", b"csh", b"maplib", b"usemap",
}  # fmt: skip
_MTL_KEYWORDS = {
    b"newmtl", b"ka", b"kd", b"ks", b"ke", b"ns", b"ni", b"d", b"tr", b"tf", b"illum",
    b"sharpness", b"bump", b"disp", b"decal", b"refl", b"norm", b"pr", b"pm", b"ps", b"pc",
    b"pcr", b"aniso", b"anisor",
}  # fmt: skip
_OBJ_VERTEX = re.compile(rb"v\s+[-+0-9.eE]+\s+[-+0-9.eE]+\s+[-+0-9.eE]+")


def _obj_mtl(head: bytes, size: int) -> _Sniff | None:
    if not _is_text(head, size):
        return None
    statements = [
        line for line in (raw.strip() for raw in _lines(head, size)) if line[:1] not in b"#"
    ]
    keywords = [line.split()[0].lower() for line in statements]
    if not keywords:
        return None
    if b"newmtl" in keywords:
        known = sum(k in _MTL_KEYWORDS or k.startswith(b"map_") for k in keywords)
        if known >= 0.9 * len(keywords):
            return _Sniff(MTL, "text of newmtl and material statements", strong=False)
        return None
    known = sum(k in _OBJ_KEYWORDS for k in keywords)
    if known >= 0.9 * len(keywords) and any(_OBJ_VERTEX.match(line) for line in statements):
        return _Sniff(OBJ, "text of vertex and element statements", strong=False)
    return None


# -- Polycam --------------------------------------------------------------------------------------

_POLYCAM_CAMERA_FIELDS = (
    "fx",
    "fy",
    "cx",
    "cy",
    "width",
    "height",
    *(f"t_{row}{column}" for row in range(3) for column in range(4)),
)
_POLYCAM_SAMPLE = 16  # camera JSONs and PNGs checked per folder; the rest are counted
_POLYCAM_SEARCH_DEPTH = 3


def detect_polycam_export(root: Path) -> dict[str, Any] | None:
    """Recognise a Polycam "raw data" export (LiDAR or Room mode, developer mode on) at `root`
    or in a folder up to three levels below it. The layout, as Polycam documents it:

        <capture>/raw.glb, thumbnail.jpg, polycam.mp4, mesh_info.json   (optional)
        <capture>/keyframes/images/<timestamp>.jpg             original frames
        <capture>/keyframes/corrected_images/<timestamp>.jpg   undistorted (after optimisation)
        <capture>/keyframes/cameras/<timestamp>.json           fx fy cx cy width height
                                                               blur_score, t_00..t_23 (3x4 pose,
                                                               row-major, ARKit gravity-aligned)
        <capture>/keyframes/corrected_cameras/<timestamp>.json optimised poses, same fields
        <capture>/keyframes/depth/<timestamp>.png              16-bit grey, millimetres
        <capture>/keyframes/confidence/<timestamp>.png         8-bit grey: 0 low, 127, 255 high

    Returns None unless keyframes/ holds images and at least one camera JSON with intrinsics and
    a pose; otherwise a JSON-ready summary whose "problems" lists deviations found."""
    root = Path(root)
    for capture in _candidate_folders(root):
        summary = _polycam_summary(capture)
        if summary is not None:
            relative = capture.relative_to(root).as_posix()
            return {"layout": "polycam-raw-data", "root": relative, **summary}
    return None


def _candidate_folders(root: Path) -> Iterable[Path]:
    level = [root]
    for _depth in range(_POLYCAM_SEARCH_DEPTH + 1):
        following = []
        for folder in level:
            if (folder / "keyframes").is_dir():
                yield folder
                continue
            try:
                with os.scandir(folder) as entries:
                    following += sorted(
                        Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)
                    )
            except OSError:
                continue
        level = following[:1000]  # a bounded look, not a walk of the whole package


def _stems(folder: Path, suffix: str) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        return {
            Path(e.name).stem: Path(e.path)
            for e in entries
            if e.is_file(follow_symlinks=False) and e.name.lower().endswith(suffix)
        }


def _polycam_summary(capture: Path) -> dict[str, Any] | None:
    keyframes = capture / "keyframes"
    images = _stems(keyframes / "images", ".jpg")
    corrected_images = _stems(keyframes / "corrected_images", ".jpg")
    cameras = _stems(keyframes / "cameras", ".json")
    corrected_cameras = _stems(keyframes / "corrected_cameras", ".json")
    depth = _stems(keyframes / "depth", ".png")
    confidence = _stems(keyframes / "confidence", ".png")
    if not cameras or not (images or corrected_images):
        return None

    problems: list[str] = []
    valid_cameras = 0
    for stem in sorted(cameras)[:_POLYCAM_SAMPLE]:
        missing = _missing_camera_fields(cameras[stem])
        if missing:
            problems.append(f"keyframes/cameras/{stem}.json lacks {', '.join(missing)}")
        else:
            valid_cameras += 1
    if not valid_cameras:
        return None
    for name, maps, bit_depth in (("depth", depth, 16), ("confidence", confidence, 8)):
        for stem in sorted(maps)[:_POLYCAM_SAMPLE]:
            found = _png_grey_depth(maps[stem])
            if found != bit_depth:
                shown = "not a greyscale PNG" if found is None else f"{found}-bit greyscale"
                problems.append(
                    f"keyframes/{name}/{stem}.png is {shown}, expected {bit_depth}-bit greyscale"
                )
    without_image = sorted(set(cameras) - set(images) - set(corrected_images))
    if without_image:
        problems.append(f"{len(without_image)} cameras without an image, e.g. {without_image[0]}")
    if not depth:
        problems.append("no depth maps in keyframes/depth")
    else:
        without_depth = sorted(set(cameras) - set(depth))
        if without_depth:
            problems.append(
                f"{len(without_depth)} cameras without a depth map, e.g. {without_depth[0]}"
            )

    def present(name: str) -> str | None:
        return name if (capture / name).is_file() else None

    return {
        "keyframes": len(cameras),
        "images": len(images),
        "corrected_images": len(corrected_images),
        "cameras": len(cameras),
        "corrected_cameras": len(corrected_cameras),
        "depth_maps": len(depth),
        "confidence_maps": len(confidence),
        "optimized_poses": bool(corrected_cameras and corrected_images),
        "mesh": present("raw.glb"),
        "mesh_info": present("mesh_info.json"),
        "video": present("polycam.mp4"),
        "thumbnail": present("thumbnail.jpg"),
        "problems": problems,
    }


def _missing_camera_fields(path: Path) -> list[str]:
    try:
        if path.stat().st_size > 1024 * 1024:
            return ["a camera record (file too large)"]
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return ["valid JSON"]
    if not isinstance(data, dict):
        return ["a JSON object"]
    return [
        name
        for name in _POLYCAM_CAMERA_FIELDS
        if not isinstance(data.get(name), int | float) or isinstance(data.get(name), bool)
    ]


def _png_grey_depth(path: Path) -> int | None:
    """Bit depth of a greyscale PNG (from IHDR), None if it is not one."""
    try:
        with path.open("rb") as handle:
            header = handle.read(26)
    except OSError:
        return None
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    bit_depth, colour_type = header[24], header[25]
    return bit_depth if colour_type == 0 else None


# fido reads the zip members that container signatures name whole, into memory: a deflate bomb
# named [Content_Types].xml would exhaust the worker. Bigger members skip container matching.
CONTAINER_MEMBER_LIMIT = 64 * 1024**2


def _members_are_bounded(path: Path, container: str) -> bool:
    if container != "zip":
        return True  # OLE2 streams are not compressed: bounded by the file itself
    try:
        with zipfile.ZipFile(path) as archive:
            return all(info.file_size <= CONTAINER_MEMBER_LIMIT for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
