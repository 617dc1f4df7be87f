"""Characterization and validation of 3D meshes: glTF 2.0 (.gltf and .glb), OBJ (+ MTL),
PLY, STL (ASCII and binary), OFF and VRML.

Structure is checked from the bytes (GLB chunks, glTF JSON, MTL files, PLY and STL headers) so
that every broken reference is named; geometry facts (bounds, watertightness, winding) come from
trimesh, but only for files small enough to load whole within the memory budget. Larger files get
the figures their headers give (glTF accessor counts are exact and cheap, so they are always used).
Declared counts (glTF accessors, Draco and meshopt sizes, PLY and OFF headers) are checked against
the resource limits first (policies/resources.py): a file declaring far more than it holds is
refused as a decompression bomb."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from arkhiv.ingest.characterize.findings import Findings
from arkhiv.ingest.model import Characterization
from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    RATIO_FLOOR_BYTES,
    CountLimit,
    ResourceLimitExceeded,
    ResourceLimits,
    check_declared,
    fits_memory,
    load_estimate,
    size_text,
)

# Above this much data (the file plus what it references) a mesh is not loaded whole, whatever
# the memory budget says (trimesh needs 8 to 20 times the file size in memory).
MAX_LOAD_BYTES = 2 * 1024**3
MAX_JSON_BYTES = 256 * 1024**2  # a glTF's JSON; real ones are far smaller
MAX_MTL_BYTES = 64 * 1024**2
MAX_PLY_HEADER_BYTES = 1024**2
_CHUNK = 16 * 1024**2

_EXTENSIONS = {
    ".glb": "glb",
    ".gltf": "gltf",
    ".obj": "obj",
    ".ply": "ply",
    ".stl": "stl",
    ".off": "off",
    ".wrl": "vrml",
    ".vrml": "vrml",
}
_LABELS = {
    "glb": "GLB",
    "gltf": "glTF",
    "obj": "OBJ",
    "ply": "PLY",
    "stl": "STL",
    "off": "OFF",
    "vrml": "VRML",
}
# What the content sniffer may answer, beyond the mesh formats, in words for a problem line.
NOT_MESH_CONTENT = {
    "html": "an HTML page",
    "xml": "an XML document",
    "jpeg": "a JPEG image",
    "png": "a PNG image",
    "gif": "a GIF image",
    "tiff": "a TIFF image",
    "pdf": "a PDF document",
    "zip": "a ZIP archive",
    "gzip": "gzip-compressed data",
    "las": "a LAS/LAZ point cloud",
    "e57": "an E57 point cloud",
    "json": "JSON that is not a glTF document",
    "text": "text that is not a mesh format",
    "binary": "binary data of no recognised mesh format",
    "empty": "an empty file",
}
_OBJ_KEYWORDS = frozenset(
    re.findall(
        r"\S+",
        "v vt vn vp f l p o g s mtllib usemtl curv curv2 surf cstype deg parm end mg lod bevel "
        "c_interp d_interp shadow_obj trace_obj",
    )
)
# Every mesh characterization carries these keys; None where the format or the read cannot tell.
_DEFAULTS: dict[str, Any] = {
    "vertices": None,
    "faces": None,
    "bounds_min": None,
    "bounds_max": None,
    "extent": None,
    "units": None,
    "watertight": None,
    "winding_consistent": None,
    "has_vertex_colors": None,
    "has_uvs": None,
    "textures": list,
    "materials": 0,
    "loaded": False,
}
_OFF_KEYWORD = re.compile(rb"^(?:ST)?C?N?4?n?OFF(?:\s|$)")


@dataclass(kw_only=True)
class _Result(Findings):
    root: Path
    max_load_bytes: int
    tools: list[str] = field(default_factory=lambda: ["arkhiv mesh reader"])
    limits: ResourceLimits = DEFAULT_LIMITS
    # Bytes the declared geometry takes decoded, node instances counted (glTF): what loading
    # it whole costs beyond the file's own size.
    decoded: int = 0

    @property
    def name(self) -> str:
        return _display(self.path, self.root)


def characterize_mesh(
    path: Path,
    *,
    root: Path | None = None,
    max_load_bytes: int = MAX_LOAD_BYTES,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> Characterization:
    """Characterize and validate one mesh file.

    `root` is the package root that references may not leave; by default the payload (data/)
    of the nearest bag above the file (a folder holding bagit.txt), else the file's own folder.
    Files (with what they reference) above `max_load_bytes`, or whose load would need more than
    the memory budget of `limits`, are not loaded whole: their figures come from headers. Files
    declaring more than `limits` allow are refused (invalid, with the reason)."""
    path = Path(path)
    result = _Result(
        path=path, root=_package_root(path, root), max_load_bytes=max_load_bytes, limits=limits
    )
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        result.fail(f"{result.name}: cannot be read: {exc.strerror or exc}")
        return result.build()

    claimed = _EXTENSIONS.get(path.suffix.lower())
    content = sniff(head, size)
    if content == "stl-binary" or content == "stl-ascii":
        kind = "stl"
    elif content == "json":
        kind = "gltf" if _looks_like_gltf_json(head) else None
    elif content == "gzip" and claimed == "vrml" and _gzipped_vrml(path):
        kind = "vrml"
    elif content == "binary" and claimed == "stl" and size >= 84:
        kind = "stl"  # a binary STL whose size disagrees with its header: say exactly that
    else:
        kind = content if content in _LABELS else None
    if kind is None:
        what = NOT_MESH_CONTENT.get(content, "not a recognised mesh format")
        result.props["format"] = _LABELS.get(claimed or "")
        result.props["content"] = content
        label = _LABELS.get(claimed or "", path.suffix or "a mesh format")
        result.fail(f"{result.name}: claims to be {label} by its name but its content is {what}")
        return result.build()
    if claimed and claimed != kind:
        result.fail(
            f"{result.name}: its name says {_LABELS[claimed]} but its content is {_LABELS[kind]}"
        )

    handlers = {
        "glb": _glb,
        "gltf": _gltf,
        "obj": _obj,
        "ply": _ply,
        "stl": _stl,
        "off": _off,
        "vrml": _vrml,
    }
    try:
        delegated = handlers[kind](result, size, head)
    except ResourceLimitExceeded as refused:
        result.fail(str(refused))  # the message names the file already
        delegated = None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, struct.error) as exc:
        # Hostile or mangled structure (a string where a count belongs, say) is a finding.
        result.fail(f"{result.name}: malformed {_LABELS[kind]} structure: {exc!r}")
        delegated = None
    if delegated is not None:
        return delegated
    for key, default in _DEFAULTS.items():
        result.props.setdefault(key, default() if callable(default) else default)
    return result.build()


# -- sniffing -----------------------------------------------------------------------------------


def sniff(head: bytes, size: int) -> str:
    """What the first bytes say the file is, whatever its name claims."""
    if not head:
        return "empty"
    signatures = (
        (b"glTF", "glb"),
        (b"ASTM-E57", "e57"),
        (b"LASF", "las"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF87a", "gif"),
        (b"GIF89a", "gif"),
        (b"%PDF-", "pdf"),
        (b"PK\x03\x04", "zip"),
        (b"PK\x05\x06", "zip"),
        (b"\x1f\x8b", "gzip"),
        (b"II*\x00", "tiff"),
        (b"MM\x00*", "tiff"),
    )
    for magic, name in signatures:
        if head.startswith(magic):
            return name
    # Binary STL has no signature (its header may even start with "solid"): its size is exact.
    if size >= 84 and 84 + 50 * int.from_bytes(head[80:84], "little") == size:
        return "stl-binary"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    low = text[:1024].lower()
    if text.startswith(b"ply") and text[3:4] in (b"\n", b"\r"):
        return "ply"
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low or b"<body" in low:
        return "html"
    if low.startswith(b"#vrml"):
        return "vrml"
    if _OFF_KEYWORD.match(text):
        return "off"
    if b"\x00" in head:
        return "binary"
    if low.startswith(b"solid"):
        return "stl-ascii"
    if text.startswith(b"{"):
        return "json"
    if text.startswith(b"<"):
        return "xml"
    if _looks_like_obj(text):
        return "obj"
    return "text"


def _looks_like_obj(text: bytes) -> bool:
    lines = text.splitlines()[:-1] or text.splitlines()  # the last line may be cut off
    for raw in lines[:64]:
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue  # exporters open with long comment blocks: those alone still pass
        if line.split()[0].decode("latin-1") not in _OBJ_KEYWORDS:
            return False
    return bool(lines)


def _gzipped_vrml(path: Path) -> bool:
    try:
        with gzip.open(path) as f:
            return f.read(5).lower() == b"#vrml"
    except (OSError, EOFError):
        return False


def _looks_like_gltf_json(head: bytes) -> bool:
    # The asset object is required; in the first 4 KiB of a glTF it nearly always appears, and
    # if it does not the JSON parse below says what is wrong.
    return b'"asset"' in head or b'"accessors"' in head or b'"buffers"' in head


# -- references ---------------------------------------------------------------------------------


def _package_root(path: Path, root: Path | None) -> Path:
    if root is not None:
        return Path(root).resolve()
    here = path.resolve().parent
    for folder in (here, *here.parents):
        if (folder / "bagit.txt").is_file():
            # A bag's payload is data/: a model referencing the tag files has left it too.
            payload = folder / "data"
            return payload if here.is_relative_to(payload) else folder
    return here


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.name


def _resolve(result: _Result, ref: str, bases: list[Path], what: str) -> Path | None:
    """The file a reference names, or None with a problem (absolute, URL, leaving the package,
    missing). Every problem names the owner and the reference as written."""
    owner = result.name
    cleaned = ref.strip().replace("\\", "/")
    if not cleaned:
        result.fail(f"{owner}: {what} reference is empty")
        return None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", cleaned) or cleaned.startswith("file:"):
        result.fail(f"{owner}: {what} '{ref}' is a URL; a package must hold its own files")
        return None
    if cleaned.startswith("/") or re.match(r"^[A-Za-z]:/", cleaned):
        result.fail(f"{owner}: {what} '{ref}' is an absolute path; it must be relative")
        return None
    first = None
    for base in bases:
        target = (base / cleaned).resolve()
        if not target.is_relative_to(result.root):
            result.fail(f"{owner}: {what} '{ref}' leaves the package")
            return None
        first = first or target
        if target.is_file():
            return target
    looked = _display(first, result.root) if first else cleaned
    result.fail(f"{owner}: {what} '{ref}' not found (looked for {looked})")
    return None


# -- glTF and GLB -------------------------------------------------------------------------------

_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_COMPONENT_SIZE = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
_TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Extensions whose geometry trimesh cannot decode: accessor counts still hold, loading does not.
_UNDECODABLE = {"KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_meshopt_compression"}


def _glb(result: _Result, size: int, head: bytes) -> None:
    result.props["format"] = "GLB"
    name = result.name
    if size < 12:
        result.fail(f"{name}: GLB header cut off ({size} bytes, 12 needed)")
        return
    _magic, version, length = struct.unpack_from("<4sII", head)
    result.props["glb_version"] = version
    if version != 2:
        result.fail(f"{name}: GLB version {version}; glTF 2.0 defines version 2")
    if length != size:
        state = "truncated" if size < length else "has trailing data"
        result.fail(f"{name}: GLB header says {length} bytes but the file has {size} ({state})")

    chunks: list[tuple[int, int, int]] = []  # (type, data offset, length available)
    with result.path.open("rb") as f:
        offset = 12
        while offset < size:
            f.seek(offset)
            raw = f.read(8)
            if len(raw) < 8:
                result.fail(f"{name}: chunk header at byte {offset} cut off")
                break
            chunk_length, chunk_type = struct.unpack("<II", raw)
            label = _chunk_label(chunk_type)
            end = offset + 8 + chunk_length
            if end > size:
                result.fail(
                    f"{name}: {label} chunk at byte {offset} declares {chunk_length} bytes but "
                    f"the file ends {end - size} bytes short"
                )
                chunks.append((chunk_type, offset + 8, size - offset - 8))
                break
            if chunk_length % 4:
                result.fail(f"{name}: {label} chunk at byte {offset} is not 4-byte aligned")
            chunks.append((chunk_type, offset + 8, chunk_length))
            offset = end
        result.props["glb_chunks"] = [_chunk_label(t) for t, _, _ in chunks]

        if not chunks or chunks[0][0] != _JSON_CHUNK:
            found = _chunk_label(chunks[0][0]) if chunks else "nothing"
            result.fail(f"{name}: the first GLB chunk must be JSON, found {found}")
            return
        types = [t for t, _, _ in chunks]
        if types.count(_JSON_CHUNK) > 1 or types.count(_BIN_CHUNK) > 1:
            result.fail(f"{name}: more than one JSON or BIN chunk")
        if _BIN_CHUNK in types and types.index(_BIN_CHUNK) != 1:
            result.fail(f"{name}: the BIN chunk must directly follow the JSON chunk")
        bin_length = None
        if len(chunks) > 1 and chunks[1][0] == _BIN_CHUNK:
            bin_length = chunks[1][2]

        _, json_offset, json_length = chunks[0]
        if json_length > MAX_JSON_BYTES:
            result.fail(f"{name}: JSON chunk of {json_length} bytes is over the limit")
            return
        f.seek(json_offset)
        text = f.read(json_length)
    try:
        document = json.loads(text.decode("utf-8").rstrip(" \x00"))
    except (UnicodeDecodeError, ValueError) as exc:
        result.fail(f"{name}: JSON chunk is not valid JSON: {exc}")
        return
    if not isinstance(document, dict):
        result.fail(f"{name}: JSON chunk is not a glTF object")
        return
    external = _gltf_document(result, document, glb_bin=bin_length, size=size)
    _load_gltf(result, "glb", size + external)


def _chunk_label(chunk_type: int) -> str:
    if chunk_type == _JSON_CHUNK:
        return "JSON"
    if chunk_type == _BIN_CHUNK:
        return "BIN"
    return f"0x{chunk_type:08X}"


def _gltf(result: _Result, size: int, head: bytes) -> None:
    result.props["format"] = "glTF"
    if size > MAX_JSON_BYTES:
        result.fail(f"{result.name}: {size} bytes of glTF JSON is over the limit")
        return
    try:
        document = json.loads(result.path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        result.fail(f"{result.name}: not valid glTF JSON: {exc}")
        return
    if not isinstance(document, dict):
        result.fail(f"{result.name}: not a glTF document (JSON top level is not an object)")
        return
    external = _gltf_document(result, document, glb_bin=None, size=size)
    _load_gltf(result, "gltf", size + external)


def _gltf_document(result: _Result, doc: dict[str, Any], glb_bin: int | None, size: int) -> int:
    """Check a glTF document's references and record its counts. Returns the bytes of the
    external files it references (for the load limit). Raises ResourceLimitExceeded when the
    declared geometry is a decompression bomb."""
    name = result.name
    base = result.path.parent
    asset = doc.get("asset")
    if not isinstance(asset, dict) or "version" not in asset:
        result.fail(f"{name}: no asset.version (required by glTF)")
        version = ""
    else:
        version = str(asset["version"])
        result.props["gltf_version"] = version
        if isinstance(asset.get("generator"), str):
            result.props["generator"] = asset["generator"]
    if version and not version.startswith("2."):
        result.note(f"glTF {version}: only glTF 2.0 structure is validated")
        return 0

    def items(key: str) -> list[Any]:
        value = doc.get(key, [])
        if not isinstance(value, list):
            result.fail(f"{name}: '{key}' is not an array")
            return []
        return value

    buffers, views, accessors = items("buffers"), items("bufferViews"), items("accessors")
    meshes, nodes, images = items("meshes"), items("nodes"), items("images")
    required = doc.get("extensionsRequired") or []
    result.props.update(
        meshes=len(meshes),
        nodes=len(nodes),
        materials=len(items("materials")),
        scenes=len(items("scenes")),
        units="m",  # glTF 2.0 fixes the unit: metres
    )
    if required:
        result.props["extensions_required"] = list(required)
    used = set(doc.get("extensionsUsed") or []) | set(required)

    external = 0
    declared: list[int | None] = []
    for i, buffer in enumerate(buffers):
        length = buffer.get("byteLength") if isinstance(buffer, dict) else None
        if not isinstance(length, int) or length < 1:
            result.fail(f"{name}: buffer {i} has no valid byteLength")
            declared.append(None)
            continue
        declared.append(length)
        uri = buffer.get("uri")
        if uri is None and _meshopt_fallback(buffer):
            pass  # holds no bytes: what EXT_meshopt_compression decodes goes here
        elif uri is None:
            if glb_bin is not None and i == 0:
                # The BIN chunk is padded to 4 bytes, so it may be up to 3 bytes longer.
                if not 0 <= glb_bin - length <= 3:
                    result.fail(
                        f"{name}: buffer 0 declares {length} bytes but the BIN chunk holds "
                        f"{glb_bin}"
                    )
            else:
                result.fail(f"{name}: buffer {i} has no uri and no GLB BIN chunk to stand for")
        elif not isinstance(uri, str):
            result.fail(f"{name}: buffer {i} uri is not a string")
        elif uri.startswith("data:"):
            actual = _data_uri_size(uri)
            if actual is None:
                result.fail(f"{name}: buffer {i} data URI is not valid base64")
            elif actual != length:
                result.fail(
                    f"{name}: buffer {i} (data URI) declares byteLength {length} but holds "
                    f"{actual} bytes"
                )
        else:
            target = _resolve(result, unquote(uri), [base], f"buffer {i}")
            if target is not None:
                actual = target.stat().st_size
                external += actual
                if actual != length:
                    result.fail(
                        f"{name}: buffer {i} '{uri}' declares byteLength {length} but the file "
                        f"has {actual} bytes"
                    )

    for i, view in enumerate(views):
        b = view.get("buffer") if isinstance(view, dict) else None
        if not isinstance(b, int) or not 0 <= b < len(buffers):
            result.fail(f"{name}: bufferView {i} names buffer {b}, which does not exist")
            continue
        end = view.get("byteOffset", 0) + view.get("byteLength", 0)
        if declared[b] is not None and end > declared[b]:
            result.fail(f"{name}: bufferView {i} ends at byte {end}, past buffer {b}")

    def accessor(index: Any, what: str) -> dict[str, Any] | None:
        if not isinstance(index, int) or not 0 <= index < len(accessors):
            result.fail(f"{name}: {what} names accessor {index}, which does not exist")
            return None
        value = accessors[index]
        return value if isinstance(value, dict) else None

    for i, acc in enumerate(accessors):
        if not isinstance(acc, dict) or "bufferView" not in acc:
            continue  # no bufferView: all zeros (or sparse), nothing to reach
        v = acc["bufferView"]
        if not isinstance(v, int) or not 0 <= v < len(views):
            result.fail(f"{name}: accessor {i} names bufferView {v}, which does not exist")
            continue
        count = acc.get("count", 0)
        element = _COMPONENT_SIZE.get(acc.get("componentType"), 0) * _TYPE_COMPONENTS.get(
            acc.get("type"), 0
        )
        if not element or not isinstance(count, int) or count < 1:
            continue
        view = views[v]
        stride = view.get("byteStride") or element
        need = acc.get("byteOffset", 0) + stride * (count - 1) + element
        if need > view.get("byteLength", 0):
            result.fail(f"{name}: accessor {i} needs {need} bytes but bufferView {v} is shorter")

    vertices = faces = primitives = 0
    points_only = True
    has_uvs = has_colours = False
    lows: list[list[float]] = []
    highs: list[list[float]] = []
    for m, mesh in enumerate(meshes):
        for p, prim in enumerate(mesh.get("primitives", []) if isinstance(mesh, dict) else []):
            primitives += 1
            attributes = prim.get("attributes", {}) if isinstance(prim, dict) else {}
            used |= set(prim.get("extensions", {}) or {})
            has_uvs = has_uvs or "TEXCOORD_0" in attributes
            has_colours = has_colours or "COLOR_0" in attributes
            if "POSITION" not in attributes:
                continue
            pos = accessor(attributes["POSITION"], f"mesh {m} primitive {p} POSITION")
            if pos is None:
                continue
            vertices += int(pos.get("count", 0))
            if len(pos.get("min", [])) == 3 and len(pos.get("max", [])) == 3:
                lows.append(pos["min"])
                highs.append(pos["max"])
            indexed = pos.get("count", 0)
            if "indices" in prim:
                idx = accessor(prim["indices"], f"mesh {m} primitive {p} indices")
                indexed = int(idx.get("count", 0)) if idx else 0
            mode = prim.get("mode", 4)
            points_only = points_only and mode == 0
            if mode == 4:
                faces += indexed // 3
            elif mode in (5, 6):
                faces += max(indexed - 2, 0)
    for n, node in enumerate(nodes):
        mesh_index = node.get("mesh") if isinstance(node, dict) else None
        if mesh_index is not None and not (
            isinstance(mesh_index, int) and 0 <= mesh_index < len(meshes)
        ):
            result.fail(f"{name}: node {n} names mesh {mesh_index}, which does not exist")

    textures: list[str] = []
    embedded = 0
    for i, image in enumerate(images):
        uri = image.get("uri") if isinstance(image, dict) else None
        if uri is None:
            if not isinstance(image, dict) or "bufferView" not in image:
                result.fail(f"{name}: image {i} has neither a uri nor a bufferView")
            embedded += 1
        elif uri.startswith("data:"):
            embedded += 1
            if _data_uri_size(uri) is None:
                result.fail(f"{name}: image {i} data URI is not valid base64")
        else:
            textures.append(uri)
            target = _resolve(result, unquote(uri), [base], f"image {i}")
            if target is not None:
                external += target.stat().st_size

    result.props.update(
        primitives=primitives,
        vertices=vertices,
        faces=faces,
        has_uvs=has_uvs,
        has_vertex_colors=has_colours,
        textures=textures,
        embedded_images=embedded,
    )
    if lows:
        low = [min(v[a] for v in lows) for a in range(3)]
        high = [max(v[a] for v in highs) for a in range(3)]
        _set_bounds(result, low, high)
        result.props["bounds_frame"] = "mesh"  # node transforms not applied (until loaded)
    if primitives and faces == 0 and points_only:
        result.note("every primitive is POINTS: a point cloud stored as glTF")
    elif faces == 0:
        result.fail(f"{name}: no faces (an empty mesh)")
    undecodable = sorted(used & _UNDECODABLE)
    if undecodable:
        result.props["compression"] = undecodable
    result.decoded = _gltf_declared(
        name, accessors, views, meshes, nodes, size + external, result.limits
    )
    return external


def _accessor_bytes(accessor: Any) -> int:
    """What an accessor takes decoded: count x element size (0 when not understood)."""
    if not isinstance(accessor, dict):
        return 0
    count = accessor.get("count", 0)
    element = _COMPONENT_SIZE.get(accessor.get("componentType"), 0) * _TYPE_COMPONENTS.get(
        accessor.get("type"), 0
    )
    return count * element if isinstance(count, int) and count > 0 else 0


def _meshopt_fallback(buffer: dict[str, Any]) -> bool:
    extensions = buffer.get("extensions") or {}
    return any(
        isinstance(extensions.get(name), dict) and extensions[name].get("fallback") is True
        for name in ("EXT_meshopt_compression", "KHR_meshopt_compression")
    )


def gltf_declared_check(
    name: str, document: dict[str, Any], stored: int, limits: ResourceLimits
) -> int:
    """The resource checks of a glTF document whose `stored` bytes (the file plus its external
    buffers) are about to be decoded; returns the decoded size with node instances counted.
    Raises ResourceLimitExceeded."""

    def items(key: str) -> list[Any]:
        value = document.get(key, [])
        return value if isinstance(value, list) else []

    return _gltf_declared(
        name,
        items("accessors"),
        items("bufferViews"),
        items("meshes"),
        items("nodes"),
        stored,
        limits,
    )


def _gltf_declared(
    name: str,
    accessors: list[Any],
    views: list[Any],
    meshes: list[Any],
    nodes: list[Any],
    stored: int,
    limits: ResourceLimits,
) -> int:
    """Declared sizes against the resource limits, before anything decodes them: Draco and
    meshopt data against their compressed bytes, every accessor against the file (an accessor
    without a bufferView is all zeros, costing nothing to declare), vertices and faces against
    the count limit. Returns the decoded size with node instances counted (trimesh copies a
    mesh for every node that places it), for the load estimate."""

    def accessor_bytes(index: Any) -> int:
        valid = isinstance(index, int) and 0 <= index < len(accessors)
        return _accessor_bytes(accessors[index]) if valid else 0

    def accessor_count(index: Any) -> int:
        return accessors[index].get("count", 0) if accessor_bytes(index) else 0

    def view_bytes(index: Any) -> int:
        view = views[index] if isinstance(index, int) and 0 <= index < len(views) else None
        length = view.get("byteLength", 0) if isinstance(view, dict) else 0
        return length if isinstance(length, int) else 0

    for i, view in enumerate(views):
        extensions = (view.get("extensions") or {}) if isinstance(view, dict) else {}
        for key in ("EXT_meshopt_compression", "KHR_meshopt_compression"):
            meshopt = extensions.get(key)
            if not isinstance(meshopt, dict):
                continue
            count, stride = meshopt.get("count", 0), meshopt.get("byteStride", 0)
            length = meshopt.get("byteLength", 0)
            if not all(isinstance(v, int) for v in (count, stride, length)):
                raise ValueError(
                    f"bufferView {i}: {key} count, byteStride, byteLength not integers"
                )
            check_declared(
                f"{name} bufferView {i} ({key})",
                "elements",
                count,
                count * stride,
                length,
                limits,
                held="compressed",
                limit="max_mesh_elements",
            )

    per_mesh: list[int] = []
    vertices = faces = 0
    for m, mesh in enumerate(meshes):
        total = 0
        for p, prim in enumerate(mesh.get("primitives", []) if isinstance(mesh, dict) else []):
            if not isinstance(prim, dict):
                continue
            attributes = prim.get("attributes", {})
            attributes = attributes if isinstance(attributes, dict) else {}
            decoded = sum(accessor_bytes(a) for a in attributes.values())
            decoded += accessor_bytes(prim.get("indices"))
            total += decoded
            position = accessor_count(attributes.get("POSITION"))
            vertices += position
            faces += (accessor_count(prim.get("indices")) or position) // 3
            draco = (prim.get("extensions") or {}).get("KHR_draco_mesh_compression")
            if isinstance(draco, dict):
                check_declared(
                    f"{name} mesh {m} primitive {p} (KHR_draco_mesh_compression)",
                    "vertices",
                    position,
                    decoded,
                    view_bytes(draco.get("bufferView")),
                    limits,
                    held="compressed",
                    limit="max_mesh_elements",
                )
        per_mesh.append(total)

    declared = sum(a.get("count", 0) for a in accessors if _accessor_bytes(a))
    whole = sum(_accessor_bytes(a) for a in accessors)
    check_declared(name, "accessor elements", declared, whole, stored, limits, held="compressed")
    for count, what in ((vertices, "vertices"), (faces, "faces")):
        check_declared(name, what, count, 0, stored, limits, held="any", limit="max_mesh_elements")

    instances = [0] * len(meshes)
    for node in nodes:
        index = node.get("mesh") if isinstance(node, dict) else None
        if isinstance(index, int) and 0 <= index < len(meshes):
            instances[index] += 1
    return sum(b * max(n, 1) for b, n in zip(per_mesh, instances, strict=True))


def _data_uri_size(uri: str) -> int | None:
    header, _, payload = uri.partition(",")
    if header.endswith(";base64"):
        try:
            return len(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            return None
    return len(unquote(payload).encode("utf-8"))


def _load_gltf(result: _Result, file_type: str, total: int) -> None:
    if result.problems:
        result.note("not loaded: structural problems come first")
        return
    if result.props.get("compression"):
        names = ", ".join(result.props["compression"])
        result.note(f"geometry compressed with {names}: counts from accessors, not decoded")
        return
    _load_geometry(result, file_type, total)


# -- OBJ and MTL --------------------------------------------------------------------------------

_MTL_MAPS = re.compile(r"^(map_\w+|bump|disp|decal|refl|norm)$", re.IGNORECASE)
# Options before a texture file name and how many values each takes (-o, -s, -t take 1 to 3).
_MAP_OPTIONS = {
    "-blendu": 1,
    "-blendv": 1,
    "-bm": 1,
    "-boost": 1,
    "-cc": 1,
    "-clamp": 1,
    "-imfchan": 1,
    "-mm": 2,
    "-texres": 1,
    "-type": 1,
    "-o": 3,
    "-s": 3,
    "-t": 3,
}


def _obj(result: _Result, size: int, head: bytes) -> None:
    result.props["format"] = "OBJ"
    counts, mtllibs, first_vertex = _scan_obj(result.path)
    faces = counts["f"]
    for key, what in (("v", "vertices"), ("f", "faces")):
        check_declared(
            result.name,
            what,
            counts[key],
            0,
            size,
            result.limits,
            held="any",
            limit="max_mesh_elements",
        )
    result.props.update(
        vertices=counts["v"],
        faces=faces,
        texture_coordinates=counts["vt"],
        normals=counts["vn"],
        has_uvs=counts["vt"] > 0,
        # "v x y z r g b" is the common (unofficial) way OBJ carries vertex colours.
        has_vertex_colors=first_vertex is not None and len(first_vertex.split()) in (6, 7),
    )
    if faces == 0:
        result.fail(f"{result.name}: no faces (an empty mesh)")

    base = result.path.parent
    textures: list[str] = []
    materials = 0
    external = 0
    for line in mtllibs:
        for ref in _mtllib_names(line, base):
            mtl = _resolve(result, ref, [base], "mtllib")
            if mtl is None:
                continue
            external += mtl.stat().st_size
            found, maps = _read_mtl(result, mtl)
            materials += found
            for ref_map in maps:
                textures.append(ref_map)
                # Textures are relative to the MTL; some exporters write them relative to the OBJ.
                target = _resolve_map(result, mtl, ref_map, [mtl.parent, base])
                if target is not None:
                    external += target.stat().st_size
    result.props.update(mtllibs=len(mtllibs), materials=materials, textures=textures)
    _load_geometry(result, "obj", size + external)


def _scan_obj(path: Path) -> tuple[dict[str, int], list[str], str | None]:
    """Count statements block by block (bytes.count is fast and memory stays bounded)."""
    counts = dict.fromkeys(("v", "vt", "vn", "f"), 0)
    mtllibs: list[str] = []
    first_vertex: str | None = None
    with path.open("rb") as f:
        for data in _line_blocks(f):
            for key in counts:
                counts[key] += data.count(b"\n" + key.encode() + b" ")
                counts[key] += data.count(b"\n" + key.encode() + b"\t")
            for match in re.finditer(rb"\n[ \t]*mtllib[ \t]+([^\r\n]*)", data):
                mtllibs.append(match.group(1).decode("utf-8", "replace").strip())
            if first_vertex is None:
                match = re.search(rb"\nv[ \t]+([^\r\n]*)", data)
                if match:
                    first_vertex = match.group(1).decode("latin-1")
    return counts, mtllibs, first_vertex


def _line_blocks(f: IO[bytes]) -> Iterator[bytes]:
    """Blocks of whole lines, each starting with a line break (so that every statement at the
    start of a line follows one). A line longer than a block is cut rather than held whole."""
    tail = b"\n"
    while block := f.read(_CHUNK):
        data = tail + block
        cut = data.rfind(b"\n")
        if cut <= 0:
            cut = len(data)
        yield data[:cut]
        tail = data[cut:] or b"\n"
    if tail.strip():
        yield tail


def _mtllib_names(line: str, base: Path) -> list[str]:
    # The spec separates several files by spaces, but names with spaces are common in practice:
    # the whole line wins when it names a file.
    if (base / line.replace("\\", "/")).is_file() or len(line.split()) == 1:
        return [line]
    return line.split()


def _read_mtl(result: _Result, mtl: Path) -> tuple[int, list[str]]:
    if mtl.stat().st_size > MAX_MTL_BYTES:
        result.fail(f"{_display(mtl, result.root)}: MTL file over the size limit")
        return 0, []
    materials = 0
    maps: list[str] = []
    for raw in mtl.read_bytes().decode("utf-8", "replace").splitlines():
        parts = raw.strip().split()
        if not parts or parts[0].startswith("#"):
            continue
        keyword = parts[0]
        if keyword.lower() == "newmtl":
            materials += 1
        elif _MTL_MAPS.match(keyword):
            ref = _map_file(parts[1:])
            if ref:
                maps.append(ref)
            else:
                result.fail(f"{_display(mtl, result.root)}: '{keyword}' names no file")
    return materials, maps


def _map_file(args: list[str]) -> str:
    """The file name of a map_* statement: what is left after its options."""
    i = 0
    while i < len(args) and args[i].lower() in _MAP_OPTIONS:
        most = _MAP_OPTIONS[args[i].lower()]
        i += 1
        taken = 0
        while taken < most and i < len(args) - 1:
            if most == 3 and taken and not _is_number(args[i]):
                break
            i += 1
            taken += 1
    return " ".join(args[i:])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _resolve_map(result: _Result, mtl: Path, ref: str, bases: list[Path]) -> Path | None:
    owner = result.path
    result.path = mtl  # problems name the MTL that references the texture
    try:
        return _resolve(result, ref, bases, "texture")
    finally:
        result.path = owner


# -- PLY ----------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}


@dataclass
class PlyProperty:
    name: str
    type: str  # numpy type code without byte order, e.g. "f4"
    list_count: str | None = None  # for list properties, the type of the count


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty]

    @property
    def fixed_size(self) -> int | None:
        """Bytes per row in binary PLY, None when a list property makes rows vary."""
        if any(p.list_count for p in self.properties):
            return None
        return sum(int(p.type[1]) for p in self.properties)

    def has(self, *names: str) -> bool:
        present = {p.name for p in self.properties}
        return all(n in present for n in names)


@dataclass
class PlyHeader:
    encoding: str  # ascii, binary_little_endian, binary_big_endian
    version: str
    elements: list[PlyElement]
    comments: list[str]
    length: int  # bytes up to and including the end_header line

    def element(self, name: str) -> PlyElement | None:
        return next((e for e in self.elements if e.name == name), None)


def read_ply_header(path: Path) -> PlyHeader:
    """Parse a PLY header. Raises ValueError saying what is wrong."""
    with Path(path).open("rb") as f:
        head = f.read(MAX_PLY_HEADER_BYTES)
    end = re.search(rb"end_header[ \t]*(\r\n|\n|\r)", head)
    if not head.startswith(b"ply"):
        raise ValueError("no 'ply' magic line")
    if end is None:
        raise ValueError("no end_header line in the first MiB")
    lines = head[: end.start()].decode("latin-1").splitlines()[1:]
    encoding = version = ""
    elements: list[PlyElement] = []
    comments: list[str] = []
    for number, line in enumerate(lines, 2):
        parts = line.split()
        if not parts:
            continue
        keyword = parts[0]
        if keyword in ("comment", "obj_info"):
            comments.append(line.partition(" ")[2].strip())
        elif keyword == "format" and len(parts) == 3:
            encoding, version = parts[1], parts[2]
        elif keyword == "element" and len(parts) == 3 and parts[2].isdigit():
            elements.append(PlyElement(parts[1], int(parts[2]), []))
        elif keyword == "property" and elements:
            if len(parts) == 5 and parts[1] == "list":
                count_type, item_type = _PLY_TYPES.get(parts[2]), _PLY_TYPES.get(parts[3])
                if not count_type or not item_type:
                    raise ValueError(f"header line {number}: unknown type in '{line}'")
                elements[-1].properties.append(PlyProperty(parts[4], item_type, count_type))
            elif len(parts) == 3 and parts[1] in _PLY_TYPES:
                elements[-1].properties.append(PlyProperty(parts[2], _PLY_TYPES[parts[1]]))
            else:
                raise ValueError(f"header line {number}: bad property '{line}'")
        else:
            raise ValueError(f"header line {number}: not understood: '{line}'")
    if encoding not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"unknown or missing format line (found '{encoding}')")
    return PlyHeader(encoding, version, elements, comments, end.end())


def ply_vertex_flags(vertex: PlyElement) -> dict[str, bool]:
    names = {p.name for p in vertex.properties}
    return {
        "has_normals": {"nx", "ny", "nz"} <= names,
        "has_vertex_colors": bool(
            {"red", "green", "blue"} <= names
            or {"r", "g", "b"} <= names
            or {"diffuse_red", "diffuse_green", "diffuse_blue"} <= names
        ),
        "has_uvs": bool(
            {"s", "t"} <= names
            or {"u", "v"} <= names
            or {"texture_u", "texture_v"} <= names
            or {"texture_s", "texture_t"} <= names
        ),
    }


def _ply_least_row(element: PlyElement) -> int:
    """Bytes of one binary row at the least: a face has at least three vertex indices; other
    lists may be empty."""
    row = element.fixed_size
    if row is not None:
        return row
    return sum(
        int(p.type[1])
        if not p.list_count
        else int(p.list_count[1]) + (3 * int(p.type[1]) if _is_face_list(element, p) else 0)
        for p in element.properties
    )


def ply_declared_check(
    name: str, header: PlyHeader, size: int, limits: ResourceLimits, *, limit: CountLimit
) -> None:
    """Refuse a PLY whose header declares far more than its bytes hold (a header of 2 billion
    vertices over a few bytes), before any reader sizes its arrays from those counts. An ASCII
    value takes at least two bytes (a digit and a separator), a binary one one to eight, so
    honest ASCII is at most four times smaller than binary: far under the ratio either way.
    Raises ResourceLimitExceeded."""
    decoded = sum(element.count * _ply_least_row(element) for element in header.elements)
    vertex, face = header.element("vertex"), header.element("face")
    vertices = vertex.count if vertex else 0
    check_declared(
        name, "vertices", vertices, decoded, size, limits, held="compressed", limit=limit
    )
    if face is not None:
        check_declared(name, "faces", face.count, 0, size, limits, held="any", limit=limit)


def ply_size_problem(header: PlyHeader, size: int) -> str | None:
    """For binary PLY: is the file as long as its header says? Exact when every element has
    fixed-size rows, or when list rows turn out uniform (all triangles); else a lower bound."""
    if header.encoding == "ascii":
        return None
    need = header.length
    exact = True
    for element in header.elements:
        row = element.fixed_size
        if row is None:
            fixed = sum(int(p.type[1]) for p in element.properties if not p.list_count)
            lists = [p for p in element.properties if p.list_count]
            if len(lists) == 1 and element is header.elements[-1]:
                per = int(lists[0].list_count[1]) + 3 * int(lists[0].type[1])
                if need + element.count * (fixed + per) == size:
                    return None  # all triangles, and exactly the bytes they need
            # A face has at least three vertex indices; other lists may be empty.
            row = fixed + sum(
                int(p.list_count[1]) + (3 * int(p.type[1]) if _is_face_list(element, p) else 0)
                for p in lists
            )
            exact = False
        need += element.count * row
    if size < need:
        least = "" if exact else "at least "
        return f"truncated: the header's elements need {least}{need} bytes, the file has {size}"
    if exact and size > need:
        return f"{size - need} bytes after the last element (the header declares {need})"
    return None


def _is_face_list(element: PlyElement, prop: PlyProperty) -> bool:
    return element.name == "face" and prop.name in ("vertex_indices", "vertex_index")


def _ply(result: _Result, size: int, head: bytes) -> Characterization | None:
    result.props["format"] = "PLY"
    try:
        header = read_ply_header(result.path)
    except ValueError as exc:
        result.fail(f"{result.name}: PLY header: {exc}")
        return None
    vertex, face = header.element("vertex"), header.element("face")
    vertices = vertex.count if vertex else 0
    faces = face.count if face else 0
    if faces == 0 and vertices > 0:
        # Vertex-only PLY is a point cloud, not an empty mesh.
        from arkhiv.ingest.characterize.pointclouds import characterize_point_cloud

        cloud = characterize_point_cloud(result.path, limits=result.limits)
        cloud.problems.append("note: no faces: characterized as a point cloud")
        return cloud
    result.props.update(
        ply_encoding=header.encoding,
        ply_elements={e.name: e.count for e in header.elements},
        vertices=vertices,
        faces=faces,
    )
    ply_declared_check(result.name, header, size, result.limits, limit="max_mesh_elements")
    if vertex is None or not vertex.has("x", "y", "z"):
        result.fail(f"{result.name}: no vertex element with x, y and z")
    if vertex is not None:
        result.props.update(ply_vertex_flags(vertex))
    if face is not None:
        names = {p.name for p in face.properties}
        result.props["has_uvs"] = result.props.get("has_uvs", False) or "texcoord" in names
    if faces == 0:
        result.fail(f"{result.name}: no faces (an empty mesh)")
    textures: list[str] = []
    external = 0
    for comment in header.comments:
        # MeshLab and others name a texture as "comment TextureFile NAME".
        key, _, value = comment.partition(" ")
        if key.lower() == "texturefile" and value.strip():
            textures.append(value.strip())
            target = _resolve(result, value.strip(), [result.path.parent], "texture")
            if target is not None:
                external += target.stat().st_size
    result.props["textures"] = textures
    units = _declared_units(header.comments)
    if units:
        result.props["units"] = units
    problem = ply_size_problem(header, size)
    if problem:
        result.fail(f"{result.name}: {problem}")
        return None
    _load_geometry(result, "ply", size + external, expect_vertices=vertices)
    return None


def _declared_units(comments: list[str]) -> str | None:
    for comment in comments:
        match = re.match(r"^units?\s*[:=]?\s*(\w+)\s*$", comment, re.IGNORECASE)
        if match:
            return match.group(1)
    return None


# -- STL ----------------------------------------------------------------------------------------


def _stl(result: _Result, size: int, head: bytes) -> None:
    result.props["format"] = "STL"
    name = result.name
    if size >= 84 and 84 + 50 * int.from_bytes(head[80:84], "little") == size:
        triangles = int.from_bytes(head[80:84], "little")
        result.props.update(stl_encoding="binary", faces=triangles)
        if head[:80].startswith(b"COLOR="):
            result.props["stl_header_colour"] = True  # Materialise/VisCAM face colour convention
    elif head.lstrip().lower().startswith(b"solid") and b"\x00" not in head:
        result.props["stl_encoding"] = "ascii"
        triangles, solids, ended = _scan_ascii_stl(result.path)
        result.props.update(faces=triangles, solids=solids)
        if not ended:
            result.fail(f"{name}: ASCII STL ends without 'endsolid' (truncated)")
            return
    else:
        promised = int.from_bytes(head[80:84], "little")
        result.props.update(stl_encoding="binary")
        result.fail(
            f"{name}: binary STL header promises {promised} triangles "
            f"({84 + 50 * promised} bytes) but the file has {size} bytes"
        )
        return
    if triangles == 0:
        result.fail(f"{name}: no faces (an empty mesh)")
        return
    check_declared(
        name, "faces", triangles, 0, size, result.limits, held="any", limit="max_mesh_elements"
    )
    result.props.update(has_uvs=False, has_vertex_colors=False, textures=[], materials=0)
    _load_geometry(result, "stl", size, merge_count=True)


def _scan_ascii_stl(path: Path) -> tuple[int, int, bool]:
    triangles = solids = 0
    last = b""
    with path.open("rb") as f:
        for data in _line_blocks(f):
            triangles += data.count(b"endfacet")
            solids += len(re.findall(rb"\n[ \t]*solid\b", data))
            last = (last + data)[-256:]
    return triangles, solids, b"endsolid" in last.lower()


# -- OFF ----------------------------------------------------------------------------------------


def _off(result: _Result, size: int, head: bytes) -> None:
    result.props["format"] = "OFF"
    tokens: list[str] = []
    for line in head.decode("latin-1").splitlines():
        tokens += line.split("#", 1)[0].split()
        if len(tokens) >= 4:
            break
    keyword, *numbers = tokens[:4] if tokens else [""]
    if keyword != "OFF" and keyword.endswith("OFF"):
        result.props["off_variant"] = keyword
    numbers = [n for n in numbers if n.isdigit()]
    if len(numbers) < 2:
        result.fail(f"{result.name}: OFF header has no vertex and face counts")
        return
    vertices, faces = int(numbers[0]), int(numbers[1])
    result.props.update(vertices=vertices, faces=faces, textures=[], materials=0)
    # As text, a vertex or a triangle takes at least six bytes ("0 0 0" and a line break);
    # decoded, twelve: a header promising far more than its text holds is refused here.
    limits = result.limits
    decoded = 12 * (vertices + faces)
    check_declared(
        result.name,
        "vertices",
        vertices,
        decoded,
        size,
        limits,
        held="compressed",
        limit="max_mesh_elements",
    )
    check_declared(
        result.name, "faces", faces, 0, size, limits, held="any", limit="max_mesh_elements"
    )
    if faces == 0:
        result.fail(f"{result.name}: no faces (an empty mesh)")
        return
    _load_geometry(result, "off", size, expect_vertices=vertices)


# -- VRML ---------------------------------------------------------------------------------------

_VRML_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]]|[^\s,{}\[\]"#]+')


def _vrml(result: _Result, size: int, head: bytes) -> None:
    """trimesh does not read VRML: this scan counts the geometry nodes' arrays as it streams
    (IndexedFaceSet coordinates and faces, colours, texture coordinates, texture URLs)."""
    result.props["format"] = "VRML"
    compressed = head.startswith(b"\x1f\x8b")  # VRML97 allows gzip-compressed files
    result.props["gzip"] = compressed
    if compressed:
        _check_gzip_ratio(result, size)
    scan = _VrmlScan()
    first = None
    try:
        with gzip.open(result.path) if compressed else result.path.open("rb") as f:
            for block in _line_blocks(f):
                for line in block.decode("utf-8", "replace").splitlines():
                    if first is None and line.strip():
                        first = line.strip()
                    scan.feed(line.split("#", 1)[0] if "#" in line and '"' not in line else line)
    except (OSError, EOFError) as exc:  # a broken gzip stream
        result.fail(f"{result.name}: compressed VRML cannot be read: {exc}")
        return
    match = re.match(r"#VRML\s+V?(\d\.\d)", first or "")
    result.props["vrml_version"] = match.group(1) if match else None
    if match is None:
        result.fail(f"{result.name}: no '#VRML V2.0' (or V1.0) header line")
    result.props.update(
        vertices=scan.points,
        faces=scan.faces,
        shapes=scan.shapes,
        materials=scan.materials,
        has_uvs=scan.uvs > 0,
        has_vertex_colors=scan.colours > 0,
        textures=scan.urls,
        loaded=False,
    )
    if scan.low is not None:
        _set_bounds(result, scan.low, scan.high)
        result.props["bounds_frame"] = "file"  # Transform nodes not applied
    for url in scan.urls:
        _resolve(result, url, [result.path.parent], "texture")
    if scan.faces == 0:
        result.fail(f"{result.name}: no faces (an empty mesh)")
    if scan.malformed or scan.array is not None:
        result.fail(f"{result.name}: malformed or unterminated coordinate data")
    result.tools.append("arkhiv VRML scan")
    result.note("VRML is not read by trimesh: figures come from a scan of its nodes")


def _check_gzip_ratio(result: _Result, size: int) -> None:
    """Inflate without parsing (fast) up to what the decoded ratio allows, so that a gzip bomb
    is refused before the scan (slow) spends minutes on it."""
    most = max(RATIO_FLOOR_BYTES, result.limits.max_decoded_ratio * size)
    inflated = 0
    try:
        with gzip.open(result.path) as f:
            while block := f.read(_CHUNK):
                inflated += len(block)
                if inflated > most:
                    raise ResourceLimitExceeded(
                        f"{result.name}: its gzip data inflates past {size_text(inflated)} "
                        f"from {size_text(size)}, over the limit "
                        f"{result.limits.max_decoded_ratio:,g}:1 (ingest.max_decoded_ratio): "
                        "refused as a decompression bomb"
                    )
    except (OSError, EOFError):
        return  # the scan says what is wrong with the stream


_TEXTURE_NODES = ("ImageTexture", "Texture2")


class _VrmlScan:
    """A token stream state machine: node names before '{', field names before '['."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.pending = ""  # the last word seen (a node type or field name)
        self.array: str | None = None  # inside a value array: coord, index, uv, colour, url
        self.points = self.faces = self.shapes = self.materials = self.uvs = self.colours = 0
        self.open_face = False
        self.malformed = 0  # tokens in a coordinate array that are not numbers
        self.numbers: list[float] = []
        self.low: list[float] | None = None
        self.high: list[float] | None = None
        self.urls: list[str] = []

    def feed(self, line: str) -> None:
        for token in _VRML_TOKEN.findall(line):
            if self.array is not None:
                self._in_array(token)
            elif token == "{":
                self.nodes.append(self.pending)
                if self.pending == "Shape":
                    self.shapes += 1
                elif self.pending in ("Material", "Material2"):
                    self.materials += 1
            elif token == "}":
                if self.nodes:
                    self.nodes.pop()
            elif token == "[":
                # Only value arrays are consumed here; node lists (children, choice) are not.
                self.array = self._array_kind()
            elif token.startswith('"'):
                if self.pending in ("url", "filename") and self._node() in _TEXTURE_NODES:
                    self.urls.append(token[1:-1])
            else:
                self.pending = token

    def _node(self) -> str:
        return self.nodes[-1] if self.nodes else ""

    def _array_kind(self) -> str | None:
        node, name = self._node(), self.pending
        if name == "point" and node in ("Coordinate", "Coordinate3"):
            return "coord"
        if name == "coordIndex":
            return "index"
        if name == "point" and node in ("TextureCoordinate", "TextureCoordinate2"):
            return "uv"
        if name == "color" and node == "Color":
            return "colour"
        if name in ("url", "filename"):
            return "url"
        return None

    def _in_array(self, token: str) -> None:
        if token == "]":
            if self.array == "index" and self.open_face:
                self.faces += 1  # the last face may lack its closing -1
            if self.array == "coord":
                self._flush()
            self.array, self.open_face = None, False
            return
        kind = self.array
        if kind == "coord":
            try:
                self.numbers.append(float(token))
            except ValueError:
                self.malformed += 1
            if len(self.numbers) >= 30000:
                self._flush()
        elif kind == "index":
            if token == "-1":
                if self.open_face:
                    self.faces += 1
                self.open_face = False
            else:
                self.open_face = True
        elif kind == "uv":
            self.uvs += 1
        elif kind == "colour":
            self.colours += 1
        elif kind == "url" and token.startswith('"') and self._node() in _TEXTURE_NODES:
            self.urls.append(token[1:-1])

    def _flush(self) -> None:
        whole = len(self.numbers) - len(self.numbers) % 3
        for i in range(0, whole, 3):
            xyz = self.numbers[i : i + 3]
            if self.low is None or self.high is None:
                self.low, self.high = list(xyz), list(xyz)
            else:
                self.low = [min(a, b) for a, b in zip(self.low, xyz, strict=True)]
                self.high = [max(a, b) for a, b in zip(self.high, xyz, strict=True)]
        self.points += whole // 3
        self.numbers = self.numbers[whole:]


# -- geometry via trimesh -----------------------------------------------------------------------


def _set_bounds(result: _Result, low: list[float], high: list[float]) -> None:
    result.props["bounds_min"] = [float(v) for v in low]
    result.props["bounds_max"] = [float(v) for v in high]
    result.props["extent"] = [float(b) - float(a) for a, b in zip(low, high, strict=True)]


def _load_geometry(
    result: _Result,
    file_type: str,
    total: int,
    *,
    expect_vertices: int | None = None,
    merge_count: bool = False,
) -> None:
    """Load with trimesh for bounds, watertightness and winding, if small enough."""
    if total > result.max_load_bytes:
        result.props["loaded"] = False
        result.note(
            f"not loaded whole: {total} bytes is over the {result.max_load_bytes}-byte limit; "
            "figures come from the header"
        )
        return
    # Not a reason to refuse the file (its bytes are honest), only not to load it here.
    needed = load_estimate(file_type, max(total, result.decoded))
    if not fits_memory(needed, result.limits):
        result.props["loaded"] = False
        result.note(
            f"not loaded whole: loading it needs ≈{size_text(needed)}, over the memory budget "
            f"of {size_text(result.limits.memory_budget_bytes)} (ingest.memory_budget_bytes); "
            "figures come from the header"
        )
        return
    try:
        import numpy as np
        import trimesh
    except ImportError:
        result.props["loaded"] = False
        result.note("trimesh is not installed: figures come from the header")
        return
    result.tools.append(f"trimesh {trimesh.__version__}")
    try:
        loaded = trimesh.load(str(result.path), file_type=file_type, process=False)
    except Exception as exc:  # trimesh raises many kinds on broken input
        result.fail(f"{result.name}: could not be read as {result.props['format']}: {exc}")
        return
    # A scene's dump applies its node transforms.
    geometries = loaded.dump() if isinstance(loaded, trimesh.Scene) else [loaded]
    meshes = [g for g in geometries if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    result.props["loaded"] = True
    result.props["triangles"] = int(sum(len(m.faces) for m in meshes))
    if expect_vertices is not None:
        held = sum(len(g.vertices) for g in geometries if hasattr(g, "vertices"))
        if held != expect_vertices:
            result.fail(
                f"{result.name}: the header declares {expect_vertices} vertices but "
                f"{held} were read"
            )
    if not meshes:
        return
    bounds = np.array([m.bounds for m in meshes])
    _set_bounds(result, bounds[:, 0].min(axis=0).tolist(), bounds[:, 1].max(axis=0).tolist())
    result.props.pop("bounds_frame", None)
    watertight = winding = True
    unique = 0
    for mesh in meshes:
        # Seams split vertices (UVs, normals, STL has none shared): judge the shape, not the
        # storage, so merge positions first.
        merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
        merged.merge_vertices(merge_tex=True, merge_norm=True)
        unique += len(merged.vertices)
        watertight = watertight and bool(merged.is_watertight)
        winding = winding and bool(merged.is_winding_consistent)
    result.props["watertight"] = watertight
    result.props["winding_consistent"] = winding
    if merge_count:
        result.props["vertices"] = unique  # STL stores no shared vertices
    if "has_vertex_colors" not in result.props:
        result.props["has_vertex_colors"] = any(m.visual.kind == "vertex" for m in meshes)
    if "has_uvs" not in result.props:
        result.props["has_uvs"] = any(getattr(m.visual, "uv", None) is not None for m in meshes)
