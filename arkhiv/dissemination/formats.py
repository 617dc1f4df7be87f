"""Copies of an archived model in the format a researcher asks for, written from its master.

The master is `model.glb` (glTF 2.0, metres, Y up; vertex colours, UVs, materials and textures,
one or more meshes and nodes) or, for objects archived as scans, a point cloud (PLY, LAS, LAZ or
E57). `FORMATS` describes every format an export can be made in: its suffix and MIME type, what it
carries and loses, and whether it is one file or a folder (a model file beside its textures;
`zip_export` packs one). `export` writes one and reports what it wrote and what it left out.

Decisions:
- Coordinates are written as the master holds them, in the local frame it was archived in: node
  transforms are applied, nothing is moved or rescaled. The only rotation is 3MF's, and it is
  stored as the build item's transform (3MF builds along Z), not applied to the coordinates.
- Nothing is copied from metadata. glTF `extras` are dropped; textures go out as the master's PNG
  or JPEG bytes with their metadata chunks and segments (EXIF, XMP, IPTC, comments, text, dates,
  MPF pictures) cut out, which loses no pixel, and images of other types are re-encoded as PNG
  from their pixels alone.
- GLB and glTF are re-packed from the master itself, so every buffer and material is carried
  byte for byte. Other meshes are written from the master's parts. trimesh writes STL; its other
  writers are not used: OFF drops vertex colours, COLLADA textures, PLY double precision, 3MF
  declares millimetres, and OBJ re-encodes textures and misnumbers UVs when only some parts have
  them. Those are written here (COLLADA through pycollada).
- FBX is written by Debian's `assimp` command. Its 5.2 release ends nested FBX node lists without
  the null record readers require (assimp issue 4686), so the file is rewritten with them, and its
  unit is declared as metres (FBX counts centimetres unless told otherwise).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import numpy as np

from arkhiv.errors import ArkhivError

MESH = "mesh"
CLOUD = "point cloud"
FOLDER = "folder"
FILE = "file"
GENERATOR = "Arkhiv dissemination export"
ASSIMP_TIMEOUT_S = 600


class ExportError(ArkhivError, ValueError):
    """An export that cannot be made: unknown format, wrong kind of master, missing tool."""


@dataclass(frozen=True)
class ExportFormat:
    name: str
    title: str
    suffix: str
    mime: str
    masters: tuple[str, ...]  # the kinds of master it can be written from
    layout: str  # FILE, or FOLDER: a model file beside its textures
    carries: tuple[str, ...]
    loses: tuple[str, ...]
    units: str
    needs: str | None = None  # a program outside Python

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "suffix": self.suffix,
            "mime": self.mime,
            "masters": list(self.masters),
            "layout": self.layout,
            "zippable": True,
            "carries": list(self.carries),
            "loses": list(self.loses),
            "units": self.units,
            "needs": self.needs,
        }


_NO_UNITS = "none recorded: the numbers are the master's metres"
_GLTF_CARRIES = (
    "every mesh, node and name",
    "normals",
    "UVs",
    "vertex colours",
    "materials with all their textures (the master's image bytes, metadata cut out)",
)
_MERGED = "parts: merged into one mesh"
_SAMPLED = "texture images and UVs: the texture's colour at each vertex is kept instead"

FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat(
            "glb",
            "glTF 2.0 binary",
            ".glb",
            "model/gltf-binary",
            (MESH,),
            FILE,
            _GLTF_CARRIES,
            ("glTF extras (application data that may hold metadata)",),
            "metres, Y up",
        ),
        ExportFormat(
            "gltf",
            "glTF 2.0 with a separate .bin and image files",
            ".gltf",
            "model/gltf+json",
            (MESH,),
            FOLDER,
            _GLTF_CARRIES,
            ("glTF extras (application data that may hold metadata)",),
            "metres, Y up",
        ),
        ExportFormat(
            "obj",
            "Wavefront OBJ with MTL and textures",
            ".obj",
            "model/obj",
            (MESH,),
            FOLDER,
            (
                "parts as named objects",
                "normals",
                "UVs",
                "base colour texture (map_Kd), colour (Kd), opacity (d), roughness and "
                "metallic (Pr, Pm), emission (Ke)",
                "vertex colours as RGB after each vertex (a widely read extension)",
            ),
            (
                "vertex colour alpha",
                "textures other than base colour (normal, occlusion, metallic-roughness, emissive)",
                "units and up axis (not recorded)",
            ),
            _NO_UNITS,
        ),
        ExportFormat(
            "ply",
            "PLY, binary",
            ".ply",
            "model/x-ply",
            (MESH, CLOUD),
            FILE,
            ("vertices or points (double precision where the master has it)", "normals", "RGBA"),
            (_MERGED, _SAMPLED, "materials", "units and up axis (not recorded)"),
            _NO_UNITS,
        ),
        ExportFormat(
            "ply-ascii",
            "PLY, text",
            ".ply",
            "model/x-ply",
            (MESH, CLOUD),
            FILE,
            ("vertices or points (double precision where the master has it)", "normals", "RGBA"),
            (_MERGED, _SAMPLED, "materials", "units and up axis (not recorded)"),
            _NO_UNITS,
        ),
        ExportFormat(
            "stl",
            "STL, binary",
            ".stl",
            "model/stl",
            (MESH,),
            FILE,
            ("triangles (single precision) with face normals",),
            (
                _MERGED,
                "colours, textures, UVs and materials",
                "vertex normals and shared vertices (every triangle has its own corners)",
                "units and up axis (not recorded)",
            ),
            _NO_UNITS,
        ),
        ExportFormat(
            "off",
            "Object File Format (COFF where coloured)",
            ".off",
            "model/x-off",
            (MESH,),
            FILE,
            ("vertices and triangles", "RGBA vertex colours"),
            (_MERGED, _SAMPLED, "normals", "materials", "units and up axis (not recorded)"),
            _NO_UNITS,
        ),
        ExportFormat(
            "dae",
            "COLLADA 1.4.1 with textures",
            ".dae",
            "model/vnd.collada+xml",
            (MESH,),
            FOLDER,
            (
                "parts as named nodes",
                "normals",
                "UVs",
                "RGBA vertex colours",
                "base colour texture or colour, opacity",
            ),
            ("roughness, metallic and textures other than base colour",),
            'metres (<unit meter="1"/>), Y up',
        ),
        ExportFormat(
            "3mf",
            "3D Manufacturing Format with the materials extension",
            ".3mf",
            "model/3mf",
            (MESH,),
            FILE,
            (
                "parts as objects",
                "vertex colours (colour groups)",
                "base colour texture (texture 2D groups) or colour",
            ),
            (
                "normals",
                "colour alpha where a texture also applies, and the colour factor on textures",
                "roughness, metallic and textures other than base colour",
                "triangles naming one vertex twice (3MF forbids them)",
            ),
            'metres (unit="meter"); built Z up by the build item\'s transform',
        ),
        ExportFormat(
            "usdz",
            "Universal Scene Description, zipped (USDZ)",
            ".usdz",
            "model/vnd.usdz+zip",
            (MESH,),
            FILE,
            (
                "parts as meshes",
                "normals",
                "UVs (primvars:st)",
                "vertex colours (displayColor, displayOpacity)",
                "UsdPreviewSurface materials with the base colour texture",
            ),
            ("textures other than base colour",),
            "metres (metersPerUnit 1), Y up",
        ),
        ExportFormat(
            "x3d",
            "X3D 3.3 (XML) with textures",
            ".x3d",
            "model/x3d+xml",
            (MESH,),
            FOLDER,
            (
                "parts as shapes",
                "normals",
                "UVs",
                "RGBA vertex colours",
                "base colour texture (ImageTexture), colour and opacity (Material)",
            ),
            (
                "roughness, metallic and textures other than base colour",
                "the colour factor on textures",
            ),
            "metres (X3D's unit), Y up",
        ),
        ExportFormat(
            "fbx",
            "Autodesk FBX 7.5, binary (written by assimp)",
            ".fbx",
            "model/x-fbx",
            (MESH,),
            FILE,
            (
                "parts",
                "normals",
                "UVs",
                "vertex colours",
                "materials with embedded textures",
            ),
            ("PBR roughness and metallic (assimp maps them to Phong)",),
            "metres (UnitScaleFactor 100), Y up",
            needs="Debian's assimp-utils (the assimp command)",
        ),
        ExportFormat(
            "xyz",
            "XYZ text, one point a line (x y z, then r g b 0-255 where coloured)",
            ".xyz",
            "text/plain",
            (CLOUD,),
            FILE,
            ("points (full precision)", "RGB colours"),
            ("normals", "intensity and other attributes", "units (not recorded)"),
            _NO_UNITS,
        ),
        ExportFormat(
            "las",
            "ASPRS LAS 1.4",
            ".las",
            "application/vnd.las",
            (CLOUD,),
            FILE,
            ("points (rounded to the chosen scale, reported)", "RGB colours (16 bit)"),
            ("normals", "attributes the master's format has beyond colour", "a CRS (none set)"),
            "those of the master (no CRS recorded)",
        ),
        ExportFormat(
            "laz",
            "ASPRS LAS 1.4, LASzip compressed",
            ".laz",
            "application/vnd.laszip",
            (CLOUD,),
            FILE,
            ("points (rounded to the chosen scale, reported)", "RGB colours (16 bit)"),
            ("normals", "attributes the master's format has beyond colour", "a CRS (none set)"),
            "those of the master (no CRS recorded)",
        ),
        ExportFormat(
            "e57",
            "ASTM E57",
            ".e57",
            "model/e57",
            (CLOUD,),
            FILE,
            ("points (double precision where the master has it)", "RGB colours", "bounds"),
            ("normals", "scanner poses, images and other attributes"),
            "metres (E57's unit)",
        ),
    )
}


@dataclass(frozen=True)
class Dropped:
    what: str
    reason: str


@dataclass
class ExportResult:
    format: ExportFormat
    output: Path  # the file, or the folder for folder formats
    files: list[Path] = field(default_factory=list)
    vertices: int = 0
    faces: int = 0
    points: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.name,
            "output": str(self.output),
            "files": [str(path) for path in self.files],
            "vertices": self.vertices,
            "faces": self.faces,
            "points": self.points,
            "dropped": [{"what": item.what, "reason": item.reason} for item in self.dropped],
            "notes": list(self.notes),
        }

    def drop(self, what: str, reason: str) -> None:
        item = Dropped(what, reason)
        if item not in self.dropped:
            self.dropped.append(item)


def export(master: Path, fmt: str, output: Path) -> ExportResult:
    """Writes `master` as `fmt` at `output`: the file, or for folder formats the folder (new or
    empty) that receives the model file and its textures. Nothing is left at `output` when the
    export fails."""
    chosen = FORMATS.get(fmt)
    if chosen is None:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    master, output = Path(master), Path(output)
    if not master.is_file():
        raise ExportError(f"{chosen.name}: the master {master} does not exist")
    if output.resolve() == master.resolve() or master.resolve().is_relative_to(output.resolve()):
        raise ExportError(f"{chosen.name}: the export would overwrite the master {master}")
    kind = _master_kind(master)
    if kind not in chosen.masters:
        if kind == MESH:
            why = f"{chosen.name} holds point clouds and {master.name} is a mesh"
        else:
            why = f"{chosen.name} needs faces and {master.name} is a point cloud"
        raise ExportError(why)
    if chosen.name == "fbx" and shutil.which("assimp") is None:
        raise ExportError(
            "FBX needs Debian's assimp-utils (the assimp command); it is not installed"
        )
    source = _read_master(master, kind)
    result = ExportResult(chosen, output)
    stem = _file_stem(master.stem)
    with _staged(output, chosen) as target:
        _WRITERS[chosen.name](source, target, result, stem)
        for item in source.dropped:  # what reading the master left out
            result.drop(item.what, item.reason)
        if chosen.layout == FOLDER:
            written = sorted(
                path.relative_to(target) for path in target.rglob("*") if path.is_file()
            )
            result.files = [output / path for path in written]
        else:
            result.files = [output]
    return result


def zip_export(result: ExportResult, archive: Path) -> Path:
    """The export's files in one ZIP, under a folder named after the export (entries dated
    1980-01-01 so that equal exports zip to equal bytes)."""
    archive = Path(archive)
    top = result.output.name if result.format.layout == FOLDER else result.output.stem
    base = result.output if result.format.layout == FOLDER else result.output.parent
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in result.files:
            info = zipfile.ZipInfo(f"{top}/{path.relative_to(base).as_posix()}")
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as source, bundle.open(info, "w", force_zip64=True) as target:
                shutil.copyfileobj(source, target, 1 << 20)
    return archive


def describe_formats() -> list[dict[str, Any]]:
    """Every format as plain data, for an API to list."""
    return [fmt.as_dict() for fmt in FORMATS.values()]


def formats_for(kind: str) -> list[ExportFormat]:
    """The formats a master of this kind (MESH or CLOUD) can be exported to."""
    return [fmt for fmt in FORMATS.values() if kind in fmt.masters]


@contextmanager
def _staged(output: Path, fmt: ExportFormat) -> Iterator[Path]:
    """A temporary path beside `output`, renamed to it once the writer has finished."""
    if fmt.layout == FOLDER:
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise ExportError(f"{fmt.name} is written as a folder; {output} must be new or empty")
    elif output.is_dir():
        raise ExportError(f"{fmt.name} is written as one file; {output} is a folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    # the staged name keeps the suffix: some writers choose by it
    staging = output.parent / f".partial-{uuid.uuid4().hex[:12]}-{output.name}"
    if fmt.layout == FOLDER:
        staging.mkdir()
    try:
        yield staging
        if fmt.layout == FOLDER and output.exists():
            output.rmdir()
        os.replace(staging, output)
    except BaseException:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)
        raise


def _file_stem(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "model"


# --- what the master holds ---------------------------------------------------------------------


@dataclass(eq=False)
class _Image:
    data: bytes  # PNG or JPEG, metadata cut out
    mime: str

    @property
    def suffix(self) -> str:
        return ".png" if self.mime == "image/png" else ".jpg"

    def rgba(self) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            return np.asarray(image.convert("RGBA"))


@dataclass(eq=False)
class _Material:
    name: str
    base_colour: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: _Image | None = None
    metallic: float | None = None  # None where the master defines no material
    roughness: float | None = None
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)
    alpha_mode: str = "OPAQUE"
    double_sided: bool = False
    other_textures: tuple[str, ...] = ()

    @property
    def tinted(self) -> bool:
        return tuple(self.base_colour) != (1.0, 1.0, 1.0, 1.0)


_DEFAULT_MATERIAL = _Material("default")


@dataclass(eq=False)
class _Part:
    name: str
    vertices: np.ndarray  # (n, 3) float32 or float64
    faces: np.ndarray  # (m, 3) unsigned or signed integers
    normals: np.ndarray | None = None  # (n, 3)
    uv: np.ndarray | None = None  # (n, 2), v counted upwards as in OBJ, USD, X3D, COLLADA, 3MF
    colours: np.ndarray | None = None  # (n, 4) uint8
    material: _Material = _DEFAULT_MATERIAL


@dataclass
class _Mesh:
    gltf: _Gltf | None
    given_parts: list[_Part] | None = None
    dropped: list[Dropped] = field(default_factory=list)

    @property
    def parts(self) -> list[_Part]:
        if self.given_parts is None:
            assert self.gltf is not None
            self.given_parts = self.gltf.parts(self.dropped)
            if not self.given_parts:
                raise ExportError("the master holds no triangles")
        return self.given_parts


@dataclass
class _Cloud:
    points: np.ndarray  # (n, 3) float32 or float64
    colours: np.ndarray | None = None  # (n, 3) uint8
    normals: np.ndarray | None = None
    dropped: list[Dropped] = field(default_factory=list)


def _master_kind(master: Path) -> str:
    suffix = master.suffix.lower()
    if suffix in (".glb", ".gltf"):
        return MESH
    if suffix in (".las", ".laz", ".e57"):
        return CLOUD
    if suffix == ".ply":
        return MESH if _ply_face_count(master) > 0 else CLOUD
    raise ExportError(f"{master.name}: not a master Arkhiv exports from (GLB, glTF, PLY, LAS, E57)")


def _read_master(master: Path, kind: str) -> _Mesh | _Cloud:
    suffix = master.suffix.lower()
    try:
        if suffix in (".glb", ".gltf"):
            return _Mesh(_Gltf(master))
        if suffix == ".ply":
            read = _read_ply(master, kind)
            if isinstance(read, _Mesh):
                return read
            cloud = read
        else:
            cloud = _read_las(master) if suffix in (".las", ".laz") else _read_e57(master)
    except ExportError:
        raise
    except Exception as exc:  # third-party parsers raise their own and plain errors
        raise ExportError(f"{master.name}: cannot be read: {exc}") from exc
    if len(cloud.points) == 0:
        raise ExportError(f"{master.name}: the point cloud holds no points")
    return cloud


# --- textures without metadata -------------------------------------------------------------------


def _clean_image(data: bytes) -> _Image:
    """The texture without metadata (`access.disclosure.picture_without_metadata`): PNG and
    JPEG keep every pixel byte; other images become PNG."""
    from arkhiv.access.disclosure import ImageError, picture_without_metadata

    try:
        return _Image(*picture_without_metadata(data))
    except ImageError as exc:
        raise ExportError(f"a texture of the master cannot be decoded: {exc}") from exc


# --- glTF masters --------------------------------------------------------------------------------

GLB_MAGIC = b"glTF"
GLB_JSON = 0x4E4F534A
GLB_BIN = 0x004E4942
_COMPONENT_TYPES = {
    5120: np.dtype("i1"),
    5121: np.dtype("u1"),
    5122: np.dtype("<i2"),
    5123: np.dtype("<u2"),
    5125: np.dtype("<u4"),
    5126: np.dtype("<f4"),
}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_OTHER_TEXTURES = ("normalTexture", "occlusionTexture", "emissiveTexture")


class _Gltf:
    """A glTF 2.0 master read in place: accessors are views of its buffers, not copies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.binary: memoryview | None = None
        data = path.read_bytes()
        if path.suffix.lower() == ".glb" or data[:4] == GLB_MAGIC:
            self.document = self._read_glb(data)
        else:
            self.document = json.loads(data)
        version = str(self.document.get("asset", {}).get("version", ""))
        if not version.startswith("2."):
            raise ExportError(f"{path.name}: glTF {version or '(no version)'}; 2.0 is read")
        required = self.document.get("extensionsRequired", [])
        if required:
            raise ExportError(
                f"{path.name}: needs glTF extensions the exporter does not read "
                f"({', '.join(required)})"
            )
        self._buffers: dict[int, memoryview] = {}
        self._images: dict[int, _Image] = {}
        self._materials: dict[int, _Material] = {}

    def _read_glb(self, data: bytes) -> dict:
        if len(data) < 20 or data[:4] != GLB_MAGIC:
            raise ExportError(f"{self.path.name}: not a glTF binary")
        length = min(struct.unpack_from("<I", data, 8)[0], len(data))
        view = memoryview(data)
        document, position = None, 12
        while position + 8 <= length:
            size, kind = struct.unpack_from("<II", data, position)
            chunk = view[position + 8 : position + 8 + size]
            if kind == GLB_JSON and document is None:
                document = json.loads(bytes(chunk))
            elif kind == GLB_BIN and self.binary is None:
                self.binary = chunk
            position += 8 + size + (-size % 4)
        if document is None:
            raise ExportError(f"{self.path.name}: the glTF binary has no JSON chunk")
        return document

    # buffers and accessors

    def buffer(self, index: int) -> memoryview:
        if index not in self._buffers:
            entry = self.document["buffers"][index]
            uri = entry.get("uri")
            if uri is None:
                if self.binary is None:
                    raise ExportError(f"{self.path.name}: buffer {index} has no data")
                data = self.binary
            else:
                data = memoryview(self._uri_bytes(uri))
            if len(data) < entry.get("byteLength", 0):
                raise ExportError(f"{self.path.name}: buffer {index} is shorter than declared")
            self._buffers[index] = data
        return self._buffers[index]

    def _uri_bytes(self, uri: str) -> bytes:
        if uri.startswith("data:"):
            return base64.b64decode(uri.split(",", 1)[1])
        folder = self.path.parent.resolve()
        target = (folder / unquote(uri)).resolve()
        if not target.is_relative_to(folder):
            raise ExportError(f"{self.path.name}: refers to {uri}, outside its folder")
        return target.read_bytes()

    def view_bytes(self, index: int) -> memoryview:
        view = self.document["bufferViews"][index]
        start = view.get("byteOffset", 0)
        data = self.buffer(view["buffer"])[start : start + view["byteLength"]]
        if len(data) != view["byteLength"]:
            raise ExportError(f"{self.path.name}: buffer view {index} runs past its buffer")
        return data

    def _array(self, view_index: int, offset: int, dtype, count: int, width: int, stride=None):
        view = self.document["bufferViews"][view_index]
        data = self.view_bytes(view_index)
        stride = stride or view.get("byteStride") or dtype.itemsize * width
        needed = offset + (stride * (count - 1) + dtype.itemsize * width if count else 0)
        if needed > len(data):
            raise ExportError(f"{self.path.name}: an accessor runs past buffer view {view_index}")
        return np.ndarray(
            (count, width), dtype, buffer=data, offset=offset, strides=(stride, dtype.itemsize)
        )

    def accessor(self, index: int) -> np.ndarray:
        entry = self.document["accessors"][index]
        dtype = _COMPONENT_TYPES[entry["componentType"]]
        width, count = _WIDTHS[entry["type"]], entry["count"]
        if "bufferView" in entry:
            values = self._array(
                entry["bufferView"], entry.get("byteOffset", 0), dtype, count, width
            )
        else:
            values = np.zeros((count, width), dtype)
        sparse = entry.get("sparse")
        if sparse:
            values = values.copy()
            where = sparse["indices"]
            positions = self._array(
                where["bufferView"],
                where.get("byteOffset", 0),
                _COMPONENT_TYPES[where["componentType"]],
                sparse["count"],
                1,
            ).ravel()
            given = sparse["values"]
            values[positions] = self._array(
                given["bufferView"], given.get("byteOffset", 0), dtype, sparse["count"], width
            )
        return values

    def _normalised(self, index: int) -> np.ndarray:
        """A float accessor, or an integer one mapped to 0..1 as glTF normalises it."""
        values = self.accessor(index)
        if values.dtype.kind == "f":
            return values
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)

    # images and materials

    def image_bytes(self, index: int) -> bytes:
        entry = self.document["images"][index]
        if "bufferView" in entry:
            return bytes(self.view_bytes(entry["bufferView"]))
        return self._uri_bytes(entry["uri"])

    def image(self, index: int) -> _Image:
        if index not in self._images:
            self._images[index] = _clean_image(self.image_bytes(index))
        return self._images[index]

    def material(self, index: int | None, dropped: list[Dropped]) -> _Material:
        if index is None:
            return _DEFAULT_MATERIAL
        if index not in self._materials:
            entry = self.document["materials"][index]
            pbr = entry.get("pbrMetallicRoughness", {})
            others = [slot for slot in _OTHER_TEXTURES if slot in entry]
            if "metallicRoughnessTexture" in pbr:
                others.append("metallicRoughnessTexture")
            self._materials[index] = _Material(
                name=str(entry.get("name") or f"material-{index}"),
                base_colour=tuple(float(c) for c in pbr.get("baseColorFactor", (1, 1, 1, 1))),
                texture=self._base_texture(pbr.get("baseColorTexture"), dropped),
                metallic=float(pbr.get("metallicFactor", 1.0)),
                roughness=float(pbr.get("roughnessFactor", 1.0)),
                emissive=tuple(float(c) for c in entry.get("emissiveFactor", (0, 0, 0))),
                alpha_mode=str(entry.get("alphaMode", "OPAQUE")),
                double_sided=bool(entry.get("doubleSided", False)),
                other_textures=tuple(others),
            )
        return self._materials[index]

    def _base_texture(self, reference: dict | None, dropped: list[Dropped]) -> _Image | None:
        if not reference:
            return None
        if reference.get("texCoord", 0) != 0:
            dropped.append(
                Dropped("a base colour texture", "it uses a second UV set, which is not carried")
            )
            return None
        if "KHR_texture_transform" in reference.get("extensions", {}):
            dropped.append(
                Dropped("texture transforms", "KHR_texture_transform is not applied to the UVs")
            )
        texture = self.document["textures"][reference["index"]]
        source = texture.get("source")
        for extension in texture.get("extensions", {}).values():  # EXT_texture_webp and kin
            if source is None and isinstance(extension, dict):
                source = extension.get("source")
        return None if source is None else self.image(source)

    # the scene

    def parts(self, dropped: list[Dropped]) -> list[_Part]:
        """Every triangle primitive of the default scene, placed by its node's transforms."""
        document = self.document
        nodes = document.get("nodes", [])
        scenes = document.get("scenes")
        if scenes:
            roots = scenes[document.get("scene", 0)].get("nodes", [])
        else:
            children = {child for node in nodes for child in node.get("children", [])}
            roots = [index for index in range(len(nodes)) if index not in children]
        parts: list[_Part] = []
        skipped: dict[str, int] = {}
        stack = [(index, None, 0) for index in reversed(roots)]
        while stack:
            index, parent, depth = stack.pop()
            if depth > 256:
                raise ExportError(f"{self.path.name}: the node hierarchy loops")
            node = nodes[index]
            world = _combined(parent, _node_matrix(node))
            if "mesh" in node:
                mesh = document["meshes"][node["mesh"]]
                name = str(node.get("name") or mesh.get("name") or f"node-{index}")
                primitives = mesh.get("primitives", [])
                for number, primitive in enumerate(primitives):
                    label = name if len(primitives) == 1 else f"{name}-{number}"
                    part = self._part(label, primitive, world, dropped, skipped)
                    if part is not None:
                        parts.append(part)
            for child in reversed(node.get("children", [])):
                stack.append((child, world, depth + 1))
        for kind, count in sorted(skipped.items()):
            dropped.append(Dropped(f"{count} {kind} primitive(s)", "only triangles are exported"))
        return parts

    def _part(self, name, primitive, world, dropped, skipped) -> _Part | None:
        attributes = primitive.get("attributes", {})
        mode = primitive.get("mode", 4)
        if mode not in (4, 5, 6) or "POSITION" not in attributes:
            kind = {0: "point", 1: "line", 2: "line loop", 3: "line strip"}.get(mode, "other")
            skipped[kind] = skipped.get(kind, 0) + 1
            return None
        vertices = self.accessor(attributes["POSITION"])
        if "indices" in primitive:
            indices = self.accessor(primitive["indices"]).ravel()
        else:
            indices = np.arange(len(vertices), dtype=np.uint32)
        faces = _triangles(indices, mode)
        if len(faces) and int(faces.max()) >= len(vertices):
            raise ExportError(f"{self.path.name}: {name} has indices past its vertices")
        normals = self.accessor(attributes["NORMAL"]) if "NORMAL" in attributes else None
        uv = None
        if "TEXCOORD_0" in attributes:
            gltf_uv = self._normalised(attributes["TEXCOORD_0"])
            uv = np.empty(gltf_uv.shape, np.float32)
            uv[:, 0] = gltf_uv[:, 0]
            uv[:, 1] = 1.0 - gltf_uv[:, 1]  # glTF counts v downwards
        colours = None
        if "COLOR_0" in attributes:
            colours = _rgba8(self.accessor(attributes["COLOR_0"]))
        if any(key.startswith(("TEXCOORD_", "COLOR_")) for key in attributes if key[-2:] != "_0"):
            dropped.append(Dropped("second UV and colour sets", "only the first set is carried"))
        part = _Part(
            name=name,
            vertices=vertices,
            faces=faces,
            normals=normals,
            uv=uv,
            colours=colours,
            material=self.material(primitive.get("material"), dropped),
        )
        return part if world is None else _placed(part, world)


def _rgba8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        eight = values
    elif values.dtype.kind == "f":
        eight = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:  # normalised 16-bit
        eight = np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)
    if eight.shape[1] == 4:
        return eight
    return np.column_stack([eight, np.full(len(eight), 255, np.uint8)])


def _triangles(indices: np.ndarray, mode: int) -> np.ndarray:
    if mode == 4:
        usable = len(indices) - len(indices) % 3
        return indices[:usable].reshape(-1, 3)
    count = max(len(indices) - 2, 0)
    first = np.arange(count)
    if mode == 5:  # strip: every other triangle is wound the other way round
        odd = first % 2
        return np.column_stack([indices[first + odd], indices[first + 1 - odd], indices[first + 2]])
    return np.column_stack(  # fan
        [np.full(count, indices[0] if count else 0), indices[first + 1], indices[first + 2]]
    )


def _node_matrix(node: dict) -> np.ndarray | None:
    """The node's local transform, or None where it has none."""
    if "matrix" in node:
        matrix = np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # stored column by column
        return None if np.array_equal(matrix, np.eye(4)) else matrix
    translation = node.get("translation")
    rotation = node.get("rotation")
    scale = node.get("scale")
    if translation is None and rotation is None and scale is None:
        return None
    matrix = np.eye(4)
    if rotation is not None:
        x, y, z, w = (float(value) for value in rotation)
        matrix[:3, :3] = [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    if scale is not None:
        matrix[:3, :3] = matrix[:3, :3] * np.asarray(scale, np.float64)
    if translation is not None:
        matrix[:3, 3] = np.asarray(translation, np.float64)
    return None if np.array_equal(matrix, np.eye(4)) else matrix


def _combined(parent: np.ndarray | None, local: np.ndarray | None) -> np.ndarray | None:
    if parent is None:
        return local
    return parent if local is None else parent @ local


def _placed(part: _Part, matrix: np.ndarray) -> _Part:
    linear = matrix[:3, :3]
    vertices = part.vertices.astype(np.float64) @ linear.T + matrix[:3, 3]
    normals = None
    if part.normals is not None:
        normals = part.normals.astype(np.float64) @ np.linalg.inv(linear)  # inverse transpose
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
    mirrored = np.linalg.det(linear) < 0
    return _Part(
        name=part.name,
        vertices=vertices,
        faces=part.faces[:, ::-1] if mirrored else part.faces,  # keep faces counter-clockwise
        normals=normals,
        uv=part.uv,
        colours=part.colours,
        material=part.material,
    )


# --- PLY, LAS/LAZ and E57 masters ----------------------------------------------------------------


def _ply_face_count(path: Path) -> int:
    with path.open("rb") as stream:
        if stream.readline().strip() != b"ply":
            raise ExportError(f"{path.name}: not a PLY file")
        for _ in range(10_000):
            line = stream.readline()
            if not line or line.strip() == b"end_header":
                break
            words = line.split()
            if len(words) == 3 and words[0] == b"element" and words[1] == b"face":
                return int(words[2])
    return 0


def _read_ply(path: Path, kind: str) -> _Mesh | _Cloud:
    import trimesh

    loaded = trimesh.load(str(path), file_type="ply", process=False)
    raw = loaded.metadata.get("_ply_raw", {}).get("vertex", {}).get("data")
    fields = set(raw.dtype.names or ()) if raw is not None else set()
    normals = None
    if {"nx", "ny", "nz"} <= fields:
        normals = np.column_stack([raw["nx"], raw["ny"], raw["nz"]]).astype(np.float32)
    coloured = {"red", "green", "blue"} <= fields
    if kind == CLOUD:
        points = np.column_stack([raw["x"], raw["y"], raw["z"]]) if raw is not None else None
        if points is None:
            points = np.asarray(loaded.vertices)
        colours = None
        if coloured:
            colours = _eight_bit(np.column_stack([raw["red"], raw["green"], raw["blue"]]))
        return _Cloud(points=points, colours=colours, normals=normals)
    colours = None
    if coloured and loaded.visual.kind == "vertex":
        colours = np.asarray(loaded.visual.vertex_colors, np.uint8)
    part = _Part(
        name=path.stem,
        vertices=np.asarray(loaded.vertices),
        faces=np.asarray(loaded.faces),
        normals=normals,
        colours=colours,
    )
    return _Mesh(None, [part])


def _eight_bit(channels: np.ndarray) -> np.ndarray:
    if channels.dtype == np.uint8:
        return channels
    if channels.dtype.kind == "f":
        return np.rint(np.clip(channels, 0.0, 1.0) * 255).astype(np.uint8)
    if channels.size and int(channels.max()) > 255:  # 16-bit colour
        return np.rint(channels / 257.0).astype(np.uint8)
    return channels.astype(np.uint8)


def _read_las(path: Path) -> _Cloud:
    import laspy

    data = laspy.read(str(path))
    points = np.column_stack([data.x, data.y, data.z])
    cloud = _Cloud(points=points)
    if {"red", "green", "blue"} <= set(data.point_format.dimension_names):
        rgb = np.column_stack([data.red, data.green, data.blue])
        cloud.colours = _eight_bit(rgb)
        if rgb.size and int(rgb.max()) > 255 and np.any(rgb % 257):
            cloud.dropped.append(
                Dropped("colour below 8 bits", "the master's 16-bit colours are rounded to 8")
            )
    return cloud


def _read_e57(path: Path) -> _Cloud:
    import pye57

    scans = pye57.E57(str(path))
    try:
        coordinates, colours = [], []
        for index in range(scans.scan_count):
            try:
                scan = scans.read_scan(index, colors=True, ignore_missing_fields=True)
            except Exception:  # colour fields other than 8-bit
                scan = scans.read_scan(index, ignore_missing_fields=True)
            coordinates.append(
                np.column_stack([scan["cartesianX"], scan["cartesianY"], scan["cartesianZ"]])
            )
            if "colorRed" in scan:
                colours.append(
                    np.column_stack([scan["colorRed"], scan["colorGreen"], scan["colorBlue"]])
                )
    finally:
        scans.close()
    cloud = _Cloud(points=np.concatenate(coordinates))
    if colours and len(colours) == len(coordinates):
        cloud.colours = _eight_bit(np.concatenate(colours))
    return cloud


# --- text output ---------------------------------------------------------------------------------

ROWS_AT_ONCE = 32_768


def _float_format(values: np.ndarray) -> str:
    """Enough digits to read back the same number: 9 for single, 17 for double precision."""
    return "%.9g" if values.dtype.itemsize <= 4 else "%.17g"


def _write_rows(stream: IO[str], values: np.ndarray, row_format: str) -> None:
    """`row_format` (one row, with its newline) for every row, in batches."""
    for start in range(0, len(values), ROWS_AT_ONCE):
        batch = values[start : start + ROWS_AT_ONCE]
        stream.write((row_format * len(batch)) % tuple(batch.ravel().tolist()))


def _joined(values: np.ndarray, value_format: str) -> str:
    """All values, space-separated (for XML attributes)."""
    flat = np.asarray(values).ravel()
    return " ".join(
        ((value_format + " ") * len(flat[start : start + ROWS_AT_ONCE * 4]))[:-1]
        % tuple(flat[start : start + ROWS_AT_ONCE * 4].tolist())
        for start in range(0, len(flat), ROWS_AT_ONCE * 4)
    )


def _unique_names(
    names: Iterable[str], clean: Callable[[str], str], taken: Iterable[str] = ()
) -> list[str]:
    used: set[str] = set(taken)
    result = []
    for name in names:
        base = clean(name) or "part"
        unique, number = base, 1
        while unique in used:
            number += 1
            unique = f"{base}_{number}"
        used.add(unique)
        result.append(unique)
    return result


def _identifier(name: str) -> str:
    """A name usable as an OBJ, USD, X3D or COLLADA identifier."""
    cleaned = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


class _TextureFiles:
    """Each texture written once beside the model, named by its order, not by any upload name."""

    def __init__(self, folder: Path, prefix: str = "texture") -> None:
        self.folder, self.prefix = folder, prefix
        self.names: dict[int, str] = {}

    def name(self, image: _Image) -> str:
        if id(image) not in self.names:
            name = f"{self.prefix}-{len(self.names)}{image.suffix}"
            (self.folder / name).write_bytes(image.data)
            self.names[id(image)] = name
        return self.names[id(image)]


def _distinct_materials(parts: list[_Part]) -> dict[int, str]:
    materials: dict[int, _Material] = {}
    for part in parts:
        materials.setdefault(id(part.material), part.material)
    names = _unique_names((m.name for m in materials.values()), _identifier)
    return dict(zip(materials, names, strict=True))


def _note_other_textures(parts: list[_Part], result: ExportResult) -> None:
    others = sorted({slot for part in parts for slot in part.material.other_textures})
    if others:
        result.drop(", ".join(others), f"{result.format.name} carries base colour textures only")


# --- glTF and GLB: the master re-packed ----------------------------------------------------------


def _write_glb(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    _write_repacked(mesh, target, result, stem, binary=True)


def _write_glb_under_one_root(mesh: _Mesh, target: Path, stem: str) -> None:
    """The GLB with the scene's nodes under one new node that has no transform: assimp takes a
    lone root node for the scene's root, whose transform its FBX writer then leaves out."""
    _write_repacked(mesh, target, ExportResult(FORMATS["glb"], target), stem, True, wrap=True)


def _write_gltf(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    _write_repacked(mesh, target, result, stem, binary=False)


def _write_repacked(
    mesh: _Mesh, target: Path, result: ExportResult, stem: str, binary: bool, wrap: bool = False
):
    """The master's document and buffer views as they are, in one buffer, with its images
    cleaned of metadata (in the buffer for GLB, as files beside it for glTF) and no extras."""
    gltf = mesh.gltf
    if gltf is None:  # a PLY mesh master: written through trimesh instead
        _write_gltf_through_trimesh(mesh, target, result, stem, binary)
        return
    if _has_extras(gltf.document):
        result.drop("glTF extras", "application data in the master's JSON may hold metadata")
    document = _without_extras(gltf.document)
    asset = {"version": "2.0", "generator": GENERATOR}
    if "minVersion" in gltf.document.get("asset", {}):
        asset["minVersion"] = gltf.document["asset"]["minVersion"]
    document["asset"] = asset
    if wrap and document.get("scenes"):
        scene = document["scenes"][document.get("scene", 0)]
        document.setdefault("nodes", []).append({"name": stem, "children": scene.get("nodes", [])})
        scene["nodes"] = [len(document["nodes"]) - 1]
    images = document.get("images", [])
    image_views = {image["bufferView"] for image in images if "bufferView" in image}
    old_views = document.get("bufferViews", [])
    renumbered: dict[int, int] = {}
    views: list[dict] = []
    blobs: list[Any] = []
    for index, view in enumerate(old_views):
        if index in image_views:
            continue
        renumbered[index] = len(views)
        views.append({key: value for key, value in view.items() if key != "buffer"})
        blobs.append(gltf.view_bytes(index))
    _renumber_views(document, renumbered)
    folder = target
    for index, image in enumerate(images):
        cleaned = gltf.image(index)
        entry = {"name": image["name"]} if "name" in image else {}
        if binary:
            entry.update(bufferView=len(views), mimeType=cleaned.mime)
            views.append({"byteLength": len(cleaned.data)})
            blobs.append(cleaned.data)
        else:
            name = f"{stem}-texture-{index}{cleaned.suffix}"
            (folder / name).write_bytes(cleaned.data)
            entry.update(uri=name, mimeType=cleaned.mime)
        images[index] = entry
    offset = 0
    for view in views:
        # the old offset's remainder by 4 kept: accessors inside rely on it for their alignment
        offset += (view.get("byteOffset", 0) - offset) % 4
        view["buffer"] = 0
        view["byteOffset"] = offset
        offset += view["byteLength"]
    total = offset + (-offset % 4)
    if views:
        document["bufferViews"] = views
        document["buffers"] = [{"byteLength": total}]
    else:
        document.pop("bufferViews", None)
        document.pop("buffers", None)
    if not binary and views:
        document["buffers"][0]["uri"] = f"{stem}.bin"
        with (folder / f"{stem}.bin").open("wb") as stream:
            _write_blobs(stream, views, blobs)
    text = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if binary:
        text += b" " * (-len(text) % 4)
        length = 12 + 8 + len(text) + (8 + total if views else 0)
        with target.open("wb") as stream:
            stream.write(struct.pack("<4sII", GLB_MAGIC, 2, length))
            stream.write(struct.pack("<II", len(text), GLB_JSON) + text)
            if views:
                stream.write(struct.pack("<II", total, GLB_BIN))
                _write_blobs(stream, views, blobs)
                stream.write(b"\0" * (total - views[-1]["byteOffset"] - views[-1]["byteLength"]))
    else:
        (folder / f"{stem}.gltf").write_bytes(text)
    _count_parts(mesh.parts, result)


def _write_blobs(stream: IO[bytes], views: list[dict], blobs: list[Any]) -> None:
    position = 0
    for view, blob in zip(views, blobs, strict=True):
        stream.write(b"\0" * (view["byteOffset"] - position))
        stream.write(blob)
        position = view["byteOffset"] + view["byteLength"]


def _has_extras(value: Any) -> bool:
    if isinstance(value, dict):
        return "extras" in value or any(_has_extras(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_extras(item) for item in value)
    return False


def _without_extras(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_extras(item) for key, item in value.items() if key != "extras"}
    if isinstance(value, list):
        return [_without_extras(item) for item in value]
    return value


def _renumber_views(value: Any, renumbered: dict[int, int]) -> None:
    """Every reference to a buffer view (accessors, sparse accessors, extensions) renumbered;
    images are rewritten separately."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "images":
                continue
            if key == "bufferView" and isinstance(item, int):
                if item not in renumbered:
                    raise ExportError("the master refers to an image's buffer view as data")
                value[key] = renumbered[item]
            else:
                _renumber_views(item, renumbered)
    elif isinstance(value, list):
        for item in value:
            _renumber_views(item, renumbered)


def _write_gltf_through_trimesh(mesh, target, result, stem, binary) -> None:
    import trimesh

    scene = trimesh.Scene()
    for part in mesh.parts:
        scene.add_geometry(_trimesh_of(part), geom_name=part.name)
    if binary:
        target.write_bytes(scene.export(file_type="glb"))
    else:
        for name, data in scene.export(file_type="gltf", embed_buffers=False).items():
            (target / (f"{stem}.gltf" if name == "model.gltf" else name)).write_bytes(data)
    _count_parts(mesh.parts, result)


def _trimesh_of(part: _Part):
    import trimesh

    return trimesh.Trimesh(
        vertices=part.vertices,
        faces=part.faces,
        vertex_normals=part.normals,
        vertex_colors=part.colours,
        process=False,
    )


def _count_parts(parts: list[_Part], result: ExportResult) -> None:
    result.vertices = sum(len(part.vertices) for part in parts)
    result.faces = sum(len(part.faces) for part in parts)


# --- one merged mesh: PLY, STL, OFF --------------------------------------------------------------


@dataclass
class _Merged:
    vertices: np.ndarray
    faces: np.ndarray  # int32
    normals: np.ndarray | None
    colours: np.ndarray | None  # (n, 4) uint8


def _merged(mesh: _Mesh, result: ExportResult, with_colours: bool = True) -> _Merged:
    """All parts as one mesh. Colours, where any part has them: its vertex colours times its
    base colour, else its texture sampled at each vertex, else its base colour."""
    parts = mesh.parts
    if len(parts) > 1:
        result.drop(f"{len(parts)} parts", f"{result.format.name} holds one mesh; merged")
    if len(parts) == 1:
        part = parts[0]
        vertices, normals = part.vertices, part.normals
        faces = part.faces.astype(np.int32, copy=False)
    else:
        vertices = np.concatenate([part.vertices for part in parts])
        offsets = np.cumsum([0] + [len(part.vertices) for part in parts[:-1]])
        faces = np.concatenate(
            [
                part.faces.astype(np.int32) + offset
                for part, offset in zip(parts, offsets, strict=True)
            ]
        )
        normals = None
        if all(part.normals is not None for part in parts):
            normals = np.concatenate([part.normals for part in parts])
    colours = None
    if with_colours and any(
        part.colours is not None or part.material.texture is not None or part.material.tinted
        for part in parts
    ):
        colours = np.concatenate([_vertex_colours(part, result) for part in parts])
    return _Merged(vertices, faces, normals, colours)


def _vertex_colours(part: _Part, result: ExportResult) -> np.ndarray:
    factor = np.asarray(part.material.base_colour, np.float64)
    if part.colours is not None:
        if part.material.tinted:
            return np.rint(part.colours * factor).astype(np.uint8)
        return part.colours
    if part.material.texture is not None and part.uv is not None:
        result.drop("texture images and UVs", _SAMPLED.split(": ", 1)[1])
        sampled = _sample(part.material.texture.rgba(), part.uv).astype(np.float64)
        return np.rint(sampled * factor).astype(np.uint8)
    colour = np.rint(factor * 255).astype(np.uint8)
    return np.broadcast_to(colour, (len(part.vertices), 4))


def _sample(pixels: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """The nearest texel under each UV, the texture repeating (glTF's default wrap)."""
    height, width = pixels.shape[:2]
    column = np.floor(np.mod(uv[:, 0], 1.0) * width).astype(np.int64).clip(0, width - 1)
    row = np.floor(np.mod(1.0 - uv[:, 1], 1.0) * height).astype(np.int64).clip(0, height - 1)
    return pixels[row, column]


def _drop_for_merged(mesh: _Mesh, result: ExportResult, normals: bool = True) -> None:
    parts = mesh.parts
    if any(part.uv is not None for part in parts):
        result.drop("UVs", f"{result.format.name} has no texture coordinates")
    if any(part.material is not _DEFAULT_MATERIAL for part in parts):
        result.drop("materials", f"{result.format.name} has no materials")
    if not normals and any(part.normals is not None for part in parts):
        result.drop("vertex normals", f"{result.format.name} does not store them")
    _note_other_textures(parts, result)


def _write_ply_binary(source, target: Path, result: ExportResult, stem: str) -> None:
    _write_ply(source, target, result, text=False)


def _write_ply_text(source, target: Path, result: ExportResult, stem: str) -> None:
    _write_ply(source, target, result, text=True)


def _write_ply(source: _Mesh | _Cloud, target: Path, result: ExportResult, text: bool) -> None:
    faces = None
    if isinstance(source, _Cloud):
        vertices, normals = source.points, source.normals
        colours = source.colours
        result.points = len(vertices)
    else:
        merged = _merged(source, result)
        _drop_for_merged(source, result)
        vertices, faces, normals, colours = (
            merged.vertices,
            merged.faces,
            merged.normals,
            merged.colours,
        )
        if colours is not None and bool(np.all(colours[:, 3] == 255)):
            colours = colours[:, :3]
        result.vertices, result.faces = len(vertices), len(faces)
    double = vertices.dtype.itemsize > 4
    fields: list[tuple[str, str, str]] = [
        (axis, "<f8" if double else "<f4", "double" if double else "float") for axis in "xyz"
    ]
    if normals is not None:
        fields += [(name, "<f4", "float") for name in ("nx", "ny", "nz")]
    if colours is not None:
        channels = ("red", "green", "blue", "alpha")[: colours.shape[1]]
        fields += [(name, "u1", "uchar") for name in channels]
    header = ["ply", f"format {'ascii' if text else 'binary_little_endian'} 1.0"]
    header.append(f"element vertex {len(vertices)}")
    header += [f"property {kind} {name}" for name, _, kind in fields]
    if faces is not None:
        header += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    header.append("end_header")
    with target.open("wb") as stream:
        stream.write(("\n".join(header) + "\n").encode("ascii"))
        if text:
            _write_ply_rows(stream, vertices, normals, colours, faces)
            return
        for start in range(0, len(vertices), ROWS_AT_ONCE * 8):
            stop = start + ROWS_AT_ONCE * 8
            rows = np.empty(len(vertices[start:stop]), [(name, dt) for name, dt, _ in fields])
            for column, axis in enumerate("xyz"):
                rows[axis] = vertices[start:stop, column]
            if normals is not None:
                for column, name in enumerate(("nx", "ny", "nz")):
                    rows[name] = normals[start:stop, column]
            if colours is not None:
                for column, name in enumerate(channels):
                    rows[name] = colours[start:stop, column]
            stream.write(rows.tobytes())
        if faces is not None:
            packed = np.empty(len(faces), [("count", "u1"), ("corners", "<i4", (3,))])
            packed["count"] = 3
            packed["corners"] = faces
            stream.write(packed.tobytes())


def _write_ply_rows(stream, vertices, normals, colours, faces) -> None:
    wrapper = io.TextIOWrapper(stream, encoding="ascii", newline="\n")
    coordinate = _float_format(vertices)
    columns = [vertices.astype(np.float64, copy=False)]
    row = " ".join([coordinate] * 3)
    if normals is not None:
        columns.append(normals)
        row += " %.9g %.9g %.9g"
    if colours is not None:
        columns.append(colours)
        row += " %d" * colours.shape[1]
    table = np.column_stack(columns) if len(columns) > 1 else columns[0]
    _write_rows(wrapper, table, row + "\n")
    if faces is not None:
        _write_rows(wrapper, faces, "3 %d %d %d\n")
    wrapper.flush()
    wrapper.detach()


def _write_stl(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    from trimesh.exchange.stl import export_stl

    merged = _merged(mesh, result, with_colours=False)
    _drop_for_merged(mesh, result, normals=False)
    if any(p.colours is not None or p.material.tinted for p in mesh.parts):
        result.drop("colours", "STL has no colours")
    if any(p.material.texture is not None for p in mesh.parts):
        result.drop("texture images", "STL has no textures")
    whole = _trimesh_of(_Part("model", merged.vertices, merged.faces))
    target.write_bytes(export_stl(whole))
    result.vertices, result.faces = 3 * len(merged.faces), len(merged.faces)


def _write_off(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    merged = _merged(mesh, result)
    _drop_for_merged(mesh, result, normals=False)
    vertices, colours = merged.vertices, merged.colours
    coordinate = _float_format(vertices)
    with target.open("w", encoding="ascii", newline="\n") as stream:
        stream.write("COFF\n" if colours is not None else "OFF\n")
        stream.write(f"{len(vertices)} {len(merged.faces)} 0\n")
        if colours is None:
            _write_rows(stream, vertices, " ".join([coordinate] * 3) + "\n")
        else:  # COFF: RGBA as integers 0..255 after each vertex
            table = np.column_stack([vertices.astype(np.float64, copy=False), colours])
            _write_rows(stream, table, " ".join([coordinate] * 3) + " %d %d %d %d\n")
        _write_rows(stream, merged.faces, "3 %d %d %d\n")
    result.vertices, result.faces = len(vertices), len(merged.faces)


# --- OBJ ----------------------------------------------------------------------------------------


def _write_obj(mesh: _Mesh, folder: Path, result: ExportResult, stem: str) -> None:
    parts = mesh.parts
    material_names = _distinct_materials(parts)
    textures = _TextureFiles(folder, f"{stem}-texture")
    object_names = _unique_names((part.name for part in parts), _identifier)
    with (folder / f"{stem}.obj").open("w", encoding="utf-8", newline="\n") as stream:
        stream.write(f"mtllib {stem}.mtl\n")
        v_base = vt_base = vn_base = 1
        for part, name in zip(parts, object_names, strict=True):
            stream.write(f"o {name}\n")
            vertices = part.vertices
            coordinate = _float_format(vertices)
            if part.colours is not None:
                if bool(np.any(part.colours[:, 3] != 255)):
                    result.drop("vertex colour alpha", "OBJ vertex colours are RGB")
                table = np.column_stack([vertices, part.colours[:, :3] / 255.0])
                _write_rows(
                    stream, table, f"v {coordinate} {coordinate} {coordinate} %.6g %.6g %.6g\n"
                )
            else:
                _write_rows(stream, vertices, f"v {coordinate} {coordinate} {coordinate}\n")
            corners = [part.faces.astype(np.int64) + v_base]
            if part.uv is not None:
                _write_rows(stream, part.uv, "vt %.9g %.9g\n")
                corners.append(part.faces.astype(np.int64) + vt_base)
            if part.normals is not None:
                _write_rows(stream, part.normals, "vn %.9g %.9g %.9g\n")
                corners.append(part.faces.astype(np.int64) + vn_base)
            stream.write(f"usemtl {material_names[id(part.material)]}\n")
            corner = {1: "%d", 2: "%d/%d", 3: "%d/%d/%d"}[len(corners)]
            if len(corners) == 2 and part.uv is None:
                corner = "%d//%d"
            table = np.stack(corners, axis=2).reshape(len(part.faces), -1)
            _write_rows(stream, table, f"f {corner} {corner} {corner}\n")
            v_base += len(vertices)
            vt_base += 0 if part.uv is None else len(part.uv)
            vn_base += 0 if part.normals is None else len(part.normals)
    lines = []
    written: set[int] = set()
    for part in parts:
        material = part.material
        if id(material) in written:
            continue
        written.add(id(material))
        red, green, blue, alpha = material.base_colour
        lines += [f"newmtl {material_names[id(material)]}", f"Kd {red:.6g} {green:.6g} {blue:.6g}"]
        lines += ["Ka 0 0 0", "Ks 0 0 0", "illum 1"]
        if alpha < 1.0:
            lines.append(f"d {alpha:.6g}")
        if material.metallic is not None:
            lines += [f"Pr {material.roughness:.6g}", f"Pm {material.metallic:.6g}"]
        if any(material.emissive):
            lines.append("Ke " + " ".join(f"{c:.6g}" for c in material.emissive))
        if material.texture is not None:
            lines.append(f"map_Kd {textures.name(material.texture)}")
        lines.append("")
    (folder / f"{stem}.mtl").write_text("\n".join(lines), encoding="utf-8", newline="\n")
    _note_other_textures(parts, result)
    _count_parts(parts, result)


# --- X3D -----------------------------------------------------------------------------------------


def _write_x3d(mesh: _Mesh, folder: Path, result: ExportResult, stem: str) -> None:
    from lxml import etree

    parts = mesh.parts
    textures = _TextureFiles(folder, f"{stem}-texture")
    names = _unique_names((part.name for part in parts), _identifier)
    path = folder / f"{stem}.x3d"
    with etree.xmlfile(str(path), encoding="UTF-8") as document:
        document.write_declaration()
        document.write_doctype(
            '<!DOCTYPE X3D PUBLIC "ISO//Web3D//DTD X3D 3.3//EN" '
            '"http://www.web3d.org/specifications/x3d-3.3.dtd">'
        )
        with (
            document.element("X3D", profile="Interchange", version="3.3"),
            document.element("Scene"),
        ):
            for part, name in zip(parts, names, strict=True):
                document.write(_x3d_shape(part, name, textures, result))
                document.flush()
    _note_other_textures(parts, result)
    _count_parts(parts, result)


def _x3d_shape(part: _Part, name: str, textures: _TextureFiles, result: ExportResult):
    from lxml import etree

    material = part.material
    shape = etree.Element("Shape", DEF=name)
    appearance = etree.SubElement(shape, "Appearance")
    red, green, blue, alpha = material.base_colour
    looks = {"diffuseColor": f"{red:.6g} {green:.6g} {blue:.6g}"}
    if alpha < 1.0:
        looks["transparency"] = f"{1.0 - alpha:.6g}"
    if any(material.emissive):
        looks["emissiveColor"] = " ".join(f"{c:.6g}" for c in material.emissive)
    etree.SubElement(appearance, "Material", **looks)
    textured = material.texture is not None and part.uv is not None
    if textured:
        if material.tinted:
            result.drop("colour factor on textures", "X3D 3 shows a texture's own colours")
        etree.SubElement(appearance, "ImageTexture", url=f'"{textures.name(material.texture)}"')
    corners = np.column_stack([part.faces.astype(np.int64), np.full(len(part.faces), -1)])
    faces = etree.SubElement(
        shape,
        "IndexedFaceSet",
        solid="false" if material.double_sided else "true",
        ccw="true",
        colorPerVertex="true",
        normalPerVertex="true",
        coordIndex=_joined(corners, "%d"),
    )
    etree.SubElement(
        faces, "Coordinate", point=_joined(part.vertices, _float_format(part.vertices))
    )
    if part.normals is not None:
        etree.SubElement(faces, "Normal", vector=_joined(part.normals, "%.9g"))
    if part.colours is not None:
        if bool(np.all(part.colours[:, 3] == 255)):
            etree.SubElement(faces, "Color", color=_joined(part.colours[:, :3] / 255.0, "%.6g"))
        else:
            etree.SubElement(faces, "ColorRGBA", color=_joined(part.colours / 255.0, "%.6g"))
    if textured:
        etree.SubElement(faces, "TextureCoordinate", point=_joined(part.uv, "%.9g"))
    return shape


# --- COLLADA -------------------------------------------------------------------------------------


def _write_dae(mesh: _Mesh, folder: Path, result: ExportResult, stem: str) -> None:
    import collada
    from collada import asset, geometry, scene, source

    parts = mesh.parts
    document = collada.Collada()
    document.assetInfo = asset.Asset(upaxis=asset.UP_AXIS.Y_UP, unitname="meter", unitmeter=1.0)
    textures = _TextureFiles(folder, f"{stem}-texture")
    effects: dict[int, Any] = {}
    nodes = []
    names = _unique_names((part.name for part in parts), _identifier)
    for number, (part, name) in enumerate(zip(parts, names, strict=True)):
        key = f"part{number}"
        textured = part.material.texture is not None and part.uv is not None
        if id(part.material) not in effects:
            effects[id(part.material)] = _dae_material(document, part.material, textures, result)
        dae_material = effects[id(part.material)]
        sources = [source.FloatSource(f"{key}-positions", _flat32(part.vertices), ("X", "Y", "Z"))]
        inputs = source.InputList()
        inputs.addInput(0, "VERTEX", f"#{key}-positions")
        if part.normals is not None:
            sources.append(
                source.FloatSource(f"{key}-normals", _flat32(part.normals), ("X", "Y", "Z"))
            )
            inputs.addInput(0, "NORMAL", f"#{key}-normals")
        if textured:
            sources.append(source.FloatSource(f"{key}-uv", _flat32(part.uv), ("S", "T")))
            inputs.addInput(0, "TEXCOORD", f"#{key}-uv", set="0")
        if part.colours is not None:
            rgba = (part.colours / np.float32(255)).astype(np.float32).ravel()
            sources.append(source.FloatSource(f"{key}-colours", rgba, ("R", "G", "B", "A")))
            inputs.addInput(0, "COLOR", f"#{key}-colours", set="0")
        shape = geometry.Geometry(document, f"{key}-mesh", name, sources)
        shape.primitives.append(
            shape.createTriangleSet(part.faces.astype(np.int32).ravel(), inputs, f"{key}-look")
        )
        document.geometries.append(shape)
        binding = [("UVSET0", "TEXCOORD", "0")] if textured else []
        placed = scene.GeometryNode(
            shape, [scene.MaterialNode(f"{key}-look", dae_material, inputs=binding)]
        )
        nodes.append(scene.Node(f"{key}-node", children=[placed], name=name))
    whole = scene.Scene("scene", nodes)
    document.scenes.append(whole)
    document.scene = whole
    document.write(str(folder / f"{stem}.dae"))
    _note_other_textures(parts, result)
    _count_parts(parts, result)


def _flat32(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.float32).ravel()


def _dae_material(document, material: _Material, textures: _TextureFiles, result: ExportResult):
    from collada import material as dae

    number = len(document.materials)
    red, green, blue, alpha = material.base_colour
    params: list[Any] = []
    diffuse: Any = (red, green, blue, 1.0)
    if material.texture is not None:
        image = dae.CImage(f"image{number}", textures.name(material.texture))
        document.images.append(image)
        surface = dae.Surface(f"surface{number}", image)
        sampler = dae.Sampler2D(f"sampler{number}", surface)
        params = [surface, sampler]
        diffuse = dae.Map(sampler, "UVSET0")
        if material.tinted:
            result.drop("colour factor on textures", "COLLADA's diffuse is the texture alone")
    effect = dae.Effect(
        f"effect{number}",
        params,
        "lambert",
        diffuse=diffuse,
        emission=(*material.emissive, 1.0),
        double_sided=material.double_sided,
        transparent=(1.0, 1.0, 1.0, 1.0),
        transparency=float(alpha),
        opaque_mode="A_ONE",
    )
    document.effects.append(effect)
    look = dae.Material(f"material{number}", material.name, effect)
    document.materials.append(look)
    return look


# --- 3MF -----------------------------------------------------------------------------------------

_3MF_CORE = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
_3MF_MATERIALS = "http://schemas.microsoft.com/3dmanufacturing/material/2015/02"
_3MF_MODEL_RELATION = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
_3MF_TEXTURE_RELATION = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dtexture"
_OPC_RELATIONSHIPS = "http://schemas.openxmlformats.org/package/2006/relationships"
# The build item's transform, rows of a 4x3 matrix applied to row vectors: (x, y, z) -> (x, -z, y)
Y_UP_TO_Z_UP_3MF = "1 0 0 0 0 1 0 -1 0 0 0 0"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _write_3mf(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    from xml.sax.saxutils import quoteattr

    parts = mesh.parts
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as package:
        texture_paths: dict[int, tuple[int, str, str]] = {}  # image -> (resource id, path, mime)
        next_id = 1
        for part in parts:
            image = part.material.texture
            if image is not None and part.uv is not None and id(image) not in texture_paths:
                name = f"/3D/Textures/texture-{len(texture_paths)}{image.suffix}"
                package.writestr(_zip_entry(name[1:]), image.data)
                texture_paths[id(image)] = (next_id, name, image.mime)
                next_id += 1
        package.writestr(_zip_entry("[Content_Types].xml"), _3mf_content_types())
        package.writestr(
            _zip_entry("_rels/.rels"),
            _opc_relationships([("/3D/3dmodel.model", _3MF_MODEL_RELATION)]),
        )
        if texture_paths:
            package.writestr(
                _zip_entry("3D/_rels/3dmodel.model.rels"),
                _opc_relationships(
                    [(path, _3MF_TEXTURE_RELATION) for _, path, _ in texture_paths.values()]
                ),
            )
        items = []
        degenerate = 0
        with package.open(_zip_entry("3D/3dmodel.model"), "w", force_zip64=True) as raw:
            stream = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
            stream.write(
                f'<model unit="meter" xml:lang="en-US" xmlns="{_3MF_CORE}" '
                f'xmlns:m="{_3MF_MATERIALS}">\n<resources>\n'
            )
            for texture_id, path, mime in texture_paths.values():
                stream.write(
                    f'<m:texture2d id="{texture_id}" path="{path}" contenttype="{mime}" '
                    'tilestyleu="wrap" tilestylev="wrap"/>\n'
                )
            names = _unique_names((part.name for part in parts), lambda name: name.strip())
            for part, name in zip(parts, names, strict=True):
                faces = part.faces
                distinct = (
                    (faces[:, 0] != faces[:, 1])
                    & (faces[:, 1] != faces[:, 2])
                    & (faces[:, 0] != faces[:, 2])
                )
                if not bool(distinct.all()):
                    degenerate += int((~distinct).sum())
                    faces = faces[distinct]
                property_id, per_vertex = next_id, True
                next_id += 1
                material = part.material
                if material.texture is not None and part.uv is not None:
                    texture_id = texture_paths[id(material.texture)][0]
                    stream.write(f'<m:texture2dgroup id="{property_id}" texid="{texture_id}">\n')
                    _write_rows(stream, part.uv, '<m:tex2coord u="%.9g" v="%.9g"/>\n')
                    stream.write("</m:texture2dgroup>\n")
                    if part.colours is not None or material.tinted:
                        result.drop(
                            "colours on textured parts", "3MF shows a texture's own colours"
                        )
                elif part.colours is not None:
                    colours = _vertex_colours(part, result)
                    stream.write(f'<m:colorgroup id="{property_id}">\n')
                    _write_rows(stream, colours, '<m:color color="#%02X%02X%02X%02X"/>\n')
                    stream.write("</m:colorgroup>\n")
                else:
                    per_vertex = False
                    colour = np.rint(np.asarray(material.base_colour) * 255).astype(int)
                    shown = "#" + "".join(f"{channel:02X}" for channel in colour)
                    stream.write(
                        f'<basematerials id="{property_id}"><base name={quoteattr(material.name)} '
                        f'displaycolor="{shown}"/></basematerials>\n'
                    )
                object_id = next_id
                next_id += 1
                stream.write(
                    f'<object id="{object_id}" type="model" name={quoteattr(name)} '
                    f'pid="{property_id}" pindex="0">\n<mesh>\n<vertices>\n'
                )
                coordinate = _float_format(part.vertices)
                _write_rows(
                    stream,
                    part.vertices,
                    f'<vertex x="{coordinate}" y="{coordinate}" z="{coordinate}"/>\n',
                )
                stream.write("</vertices>\n<triangles>\n")
                if per_vertex:
                    _write_rows(
                        stream,
                        np.column_stack([faces, faces]),
                        '<triangle v1="%d" v2="%d" v3="%d" p1="%d" p2="%d" p3="%d"/>\n',
                    )
                else:
                    _write_rows(stream, faces, '<triangle v1="%d" v2="%d" v3="%d"/>\n')
                stream.write("</triangles>\n</mesh>\n</object>\n")
                items.append(object_id)
                result.vertices += len(part.vertices)
                result.faces += len(faces)
            stream.write("</resources>\n<build>\n")
            for object_id in items:
                stream.write(f'<item objectid="{object_id}" transform="{Y_UP_TO_Z_UP_3MF}"/>\n')
            stream.write("</build>\n</model>\n")
            stream.flush()
            stream.detach()
    if degenerate:
        result.drop(f"{degenerate} triangles naming one vertex twice", "3MF forbids them")
    if any(part.normals is not None for part in parts):
        result.drop("vertex normals", "3MF does not store them")
    _note_other_textures(parts, result)
    result.notes.append("3MF builds along Z: the build item turns the Y-up model Z up")


def _zip_entry(name: str) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    entry.compress_type = zipfile.ZIP_DEFLATED
    return entry


def _3mf_content_types() -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="model" '
        'ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
        '<Default Extension="png" ContentType="image/png"/>'
        '<Default Extension="jpg" ContentType="image/jpeg"/>'
        "</Types>\n"
    )


def _opc_relationships(targets: list[tuple[str, str]]) -> str:
    entries = "".join(
        f'<Relationship Target="{target}" Id="rel{number}" Type="{kind}"/>'
        for number, (target, kind) in enumerate(targets)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Relationships xmlns="{_OPC_RELATIONSHIPS}">{entries}</Relationships>\n'
    )


# --- USDZ ----------------------------------------------------------------------------------------


def _write_usdz(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils

    parts = mesh.parts
    with tempfile.TemporaryDirectory(prefix=".usdz-", dir=target.parent) as work:
        layer = Path(work) / f"{stem}.usdc"
        stage = Usd.Stage.CreateNew(str(layer))
        UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
        UsdGeom.SetStageMetersPerUnit(stage, 1.0)
        root = UsdGeom.Xform.Define(stage, "/Model")
        stage.SetDefaultPrim(root.GetPrim())
        UsdGeom.Scope.Define(stage, "/Model/Materials")
        textures = _TextureFiles(Path(work), "texture")
        looks: dict[int, Any] = {}
        material_names = _distinct_materials(parts)
        names = _unique_names((part.name for part in parts), _identifier, taken=["Materials"])
        for part, name in zip(parts, names, strict=True):
            shape = _usd_mesh(stage, f"/Model/{name}", part)
            key = (id(part.material), part.colours is not None)
            if key not in looks:
                look_name = material_names[id(part.material)]
                if part.colours is not None:
                    look_name += "_vertex_colours"
                looks[key] = _usd_material(stage, f"/Model/Materials/{look_name}", part, textures)
            UsdShade.MaterialBindingAPI.Apply(shape.GetPrim()).Bind(looks[key])
        stage.GetRootLayer().Save()
        if not UsdUtils.CreateNewUsdzPackage(Sdf.AssetPath(str(layer)), str(target)):
            raise ExportError("usd-core could not package the USDZ")
    _note_other_textures(parts, result)
    _count_parts(parts, result)


def _usd_mesh(stage, path: str, part: _Part):
    from pxr import Gf, Sdf, UsdGeom, Vt

    shape = UsdGeom.Mesh.Define(stage, path)
    shape.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)  # polygons, not a subdivision cage
    points = np.ascontiguousarray(part.vertices, dtype=np.float32)
    shape.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points))
    shape.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(part.faces), 3, np.int32)))
    shape.CreateFaceVertexIndicesAttr(
        Vt.IntArray.FromNumpy(np.ascontiguousarray(part.faces, dtype=np.int32).ravel())
    )
    low, high = points.min(axis=0), points.max(axis=0)
    shape.CreateExtentAttr(Vt.Vec3fArray([Gf.Vec3f(*map(float, low)), Gf.Vec3f(*map(float, high))]))
    shape.CreateDoubleSidedAttr(part.material.double_sided)
    if part.normals is not None:
        shape.CreateNormalsAttr(
            Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(part.normals, dtype=np.float32))
        )
        shape.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    primvars = UsdGeom.PrimvarsAPI(shape)
    if part.uv is not None:
        primvars.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex).Set(
            Vt.Vec2fArray.FromNumpy(np.ascontiguousarray(part.uv, dtype=np.float32))
        )
    if part.colours is not None:
        rgb = np.ascontiguousarray(part.colours[:, :3] / np.float32(255), dtype=np.float32)
        shape.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set(Vt.Vec3fArray.FromNumpy(rgb))
        if bool(np.any(part.colours[:, 3] != 255)):
            alpha = np.ascontiguousarray(part.colours[:, 3] / np.float32(255), dtype=np.float32)
            shape.CreateDisplayOpacityPrimvar(UsdGeom.Tokens.vertex).Set(
                Vt.FloatArray.FromNumpy(alpha)
            )
    else:  # for viewers that show no materials
        red, green, blue, _ = part.material.base_colour
        shape.CreateDisplayColorPrimvar(UsdGeom.Tokens.constant).Set(
            Vt.Vec3fArray([Gf.Vec3f(red, green, blue)])
        )
    return shape


def _usd_material(stage, path: str, part: _Part, textures: _TextureFiles):
    from pxr import Gf, Sdf, UsdShade

    material = part.material
    look = UsdShade.Material.Define(stage, path)
    surface = UsdShade.Shader.Define(stage, f"{path}/PreviewSurface")
    surface.CreateIdAttr("UsdPreviewSurface")
    red, green, blue, alpha = material.base_colour
    diffuse = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    opacity = surface.CreateInput("opacity", Sdf.ValueTypeNames.Float)
    if material.texture is not None and part.uv is not None:
        coordinates = UsdShade.Shader.Define(stage, f"{path}/TextureCoordinates")
        coordinates.CreateIdAttr("UsdPrimvarReader_float2")
        coordinates.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        coordinates.CreateOutput("result", Sdf.ValueTypeNames.Float2)
        texture = UsdShade.Shader.Define(stage, f"{path}/BaseColourTexture")
        texture.CreateIdAttr("UsdUVTexture")
        texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(textures.name(material.texture))
        texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
            coordinates.ConnectableAPI(), "result"
        )
        texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("repeat")
        texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("repeat")
        texture.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(
            Gf.Vec4f(red, green, blue, alpha)
        )
        texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        texture.CreateOutput("a", Sdf.ValueTypeNames.Float)
        diffuse.ConnectToSource(texture.ConnectableAPI(), "rgb")
        if material.alpha_mode != "OPAQUE":
            opacity.ConnectToSource(texture.ConnectableAPI(), "a")
        else:
            opacity.Set(1.0)
    elif part.colours is not None:
        reader = UsdShade.Shader.Define(stage, f"{path}/VertexColours")
        reader.CreateIdAttr("UsdPrimvarReader_float3")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("displayColor")
        reader.CreateOutput("result", Sdf.ValueTypeNames.Float3)
        diffuse.ConnectToSource(reader.ConnectableAPI(), "result")
        opacity.Set(float(alpha))
    else:
        diffuse.Set(Gf.Vec3f(red, green, blue))
        opacity.Set(float(alpha))
    if material.alpha_mode == "MASK":
        surface.CreateInput("opacityThreshold", Sdf.ValueTypeNames.Float).Set(0.5)
    if material.metallic is not None:
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(material.metallic)
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(material.roughness)
    if any(material.emissive):
        surface.CreateInput("emissiveColor", Sdf.ValueTypeNames.Color3f).Set(
            Gf.Vec3f(*material.emissive)
        )
    look.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    return look


# --- FBX, through assimp ------------------------------------------------------------------------

FBX_MAGIC = b"Kaydara FBX Binary  \x00\x1a\x00"
FBX_FOOTER_MAGIC_LENGTH = 16
# FBX counts in centimetres; 100 of them make the master's metre.
FBX_UNIT_SCALE = 100.0


def _write_fbx(mesh: _Mesh, target: Path, result: ExportResult, stem: str) -> None:
    with tempfile.TemporaryDirectory(prefix=".fbx-", dir=target.parent) as work:
        cleaned = Path(work) / f"{stem}.glb"
        _write_glb_under_one_root(mesh, cleaned, stem)
        written = Path(work) / f"{stem}.fbx"
        try:
            run = subprocess.run(
                ["assimp", "export", str(cleaned), str(written), "-ffbx"],
                capture_output=True,
                text=True,
                timeout=ASSIMP_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"assimp took over {ASSIMP_TIMEOUT_S} s to write the FBX") from exc
        if run.returncode != 0 or not written.is_file():
            lines = (run.stderr or run.stdout).strip().splitlines()
            raise ExportError(f"assimp could not write the FBX: {lines[-1] if lines else '?'}")
        target.write_bytes(_fbx_repaired(written.read_bytes()))
    _note_other_textures(mesh.parts, result)
    _count_parts(mesh.parts, result)


@dataclass
class _FbxNode:
    name: bytes
    property_count: int
    properties: bytes
    children: list[_FbxNode]


def _fbx_repaired(data: bytes) -> bytes:
    """The binary FBX with a null record closing every nested node list (FBX readers require
    it; assimp 5.2 leaves it out) and UnitScaleFactor set to metres."""
    if not data.startswith(FBX_MAGIC):
        raise ExportError("assimp wrote no binary FBX")
    version = struct.unpack_from("<I", data, 23)[0]
    wide = version >= 7500
    header = 25 if wide else 13
    nodes, position = [], 27
    while True:
        node, position = _fbx_read_node(data, position, wide)
        if node is None:
            break
        nodes.append(node)
    _fbx_set_unit(nodes)
    out = bytearray(data[:27])
    for node in nodes:
        _fbx_write_node(out, node, wide)
    out += b"\0" * header  # the top-level list's null record
    out += b"\0" * 16 + b"\0" * 4  # footer code and its zero word, as assimp writes them
    out += b"\0" * (((len(out) + 15) & ~15) - len(out) or 16)
    out += struct.pack("<I", version) + b"\0" * 120 + data[-FBX_FOOTER_MAGIC_LENGTH:]
    return bytes(out)


def _fbx_read_node(data: bytes, position: int, wide: bool) -> tuple[_FbxNode | None, int]:
    if wide:
        end, count, length = struct.unpack_from("<QQQ", data, position)
        name_at = position + 24
    else:
        end, count, length = struct.unpack_from("<III", data, position)
        name_at = position + 12
    name_length = data[name_at]
    if end == 0:
        return None, name_at + 1 + name_length
    if end > len(data) or end <= position:
        raise ExportError("assimp wrote an FBX whose node offsets are out of range")
    start = name_at + 1 + name_length
    node = _FbxNode(data[start - name_length : start], count, data[start : start + length], [])
    cursor = start + length
    while cursor < end:
        child, cursor = _fbx_read_node(data, cursor, wide)
        if child is None:  # a null record already there
            break
        node.children.append(child)
    return node, end


def _fbx_write_node(out: bytearray, node: _FbxNode, wide: bool) -> None:
    start = len(out)
    record = "<QQQB" if wide else "<IIIB"
    out += struct.pack(record, 0, node.property_count, len(node.properties), len(node.name))
    out += node.name + node.properties
    if node.children or not node.properties:
        for child in node.children:
            _fbx_write_node(out, child, wide)
        out += b"\0" * (25 if wide else 13)
    struct.pack_into("<Q" if wide else "<I", out, start, len(out))


def _fbx_set_unit(nodes: list[_FbxNode]) -> None:
    for node in nodes:
        if node.name != b"GlobalSettings":
            continue
        for group in node.children:
            if group.name != b"Properties70":
                continue
            for entry in group.children:
                name = _fbx_first_string(entry.properties)
                # P: name, type, label, flags (four strings), then the double
                is_unit = name in (b"UnitScaleFactor", b"OriginalUnitScaleFactor")
                if is_unit and entry.properties[-9:-8] == b"D":
                    entry.properties = entry.properties[:-8] + struct.pack("<d", FBX_UNIT_SCALE)


def _fbx_first_string(properties: bytes) -> bytes | None:
    if properties[:1] != b"S":
        return None
    length = struct.unpack_from("<I", properties, 1)[0]
    return properties[5 : 5 + length]


# --- point clouds --------------------------------------------------------------------------------


def _write_xyz(cloud: _Cloud, target: Path, result: ExportResult, stem: str) -> None:
    coordinate = _float_format(cloud.points)
    row = " ".join([coordinate] * 3)
    with target.open("w", encoding="ascii", newline="\n") as stream:
        if cloud.colours is None:
            _write_rows(stream, cloud.points, row + "\n")
        else:
            table = np.column_stack([cloud.points.astype(np.float64, copy=False), cloud.colours])
            _write_rows(stream, table, row + " %d %d %d\n")
    if cloud.normals is not None:
        result.drop("normals", "XYZ readers disagree on the columns after the colour")
    result.points = len(cloud.points)


def _write_las(cloud: _Cloud, target: Path, result: ExportResult, stem: str) -> None:
    _write_las_file(cloud, target, result, compressed=False)


def _write_laz(cloud: _Cloud, target: Path, result: ExportResult, stem: str) -> None:
    _write_las_file(cloud, target, result, compressed=True)


def _write_las_file(cloud: _Cloud, target: Path, result: ExportResult, compressed: bool) -> None:
    """LAS stores integers times a scale plus an offset (an encoding: readers get the master's
    coordinates back). The offset is the whole unit below the minimum; the scale the finest power
    of ten that fits the extent in 32 bits, but no finer than a nanometre."""
    import laspy

    points = cloud.points
    low = points.min(axis=0) if len(points) else np.zeros(3)
    high = points.max(axis=0) if len(points) else np.zeros(3)
    offset = np.floor(low)
    span = float(np.max(high - offset)) if len(points) else 1.0
    scale = max(10.0 ** np.ceil(np.log10(max(span, 1e-12) / (2**31 - 2))), 1e-9)
    header = laspy.LasHeader(point_format=7 if cloud.colours is not None else 6, version="1.4")
    header.offsets = offset
    header.scales = np.full(3, scale)
    data = laspy.LasData(header)
    data.x, data.y, data.z = points[:, 0], points[:, 1], points[:, 2]
    if cloud.colours is not None:
        wide = cloud.colours.astype(np.uint16) * np.uint16(257)  # 255 -> 65535
        data.red, data.green, data.blue = wide[:, 0], wide[:, 1], wide[:, 2]
    if compressed:
        data.write(str(target), do_compress=True, laz_backend=laspy.LazBackend.Lazrs)
    else:
        data.write(str(target), do_compress=False)
    if cloud.normals is not None:
        result.drop("normals", "LAS point formats have no normals")
    result.points = len(points)
    result.notes.append(f"coordinates rounded to multiples of {scale:g} (LAS stores integers)")


def _write_e57(cloud: _Cloud, target: Path, result: ExportResult, stem: str) -> None:
    """One scan, in double precision where the master has it (pye57's own writer stores single
    precision, which would round coordinates far from the origin)."""
    import pye57
    from pye57 import libe57

    points = cloud.points
    double = points.dtype.itemsize > 4
    precision = libe57.E57_DOUBLE if double else libe57.E57_SINGLE
    low, high = points.min(axis=0), points.max(axis=0)
    columns = {
        f"cartesian{axis}": np.ascontiguousarray(points[:, index], np.float64)
        for index, axis in enumerate("XYZ")
    }
    if cloud.colours is not None:
        for index, channel in enumerate(("Red", "Green", "Blue")):
            columns[f"color{channel}"] = np.ascontiguousarray(cloud.colours[:, index])
    document = pye57.E57(str(target), mode="w")
    try:
        image = document.image_file
        scan = libe57.StructureNode(image)
        scan.set("guid", libe57.StringNode(image, f"{{{uuid.uuid4()}}}"))
        scan.set("name", libe57.StringNode(image, stem))
        bounds = libe57.StructureNode(image)
        prototype = libe57.StructureNode(image)
        for index, axis in enumerate("xyz"):
            bounds.set(f"{axis}Minimum", libe57.FloatNode(image, float(low[index])))
            bounds.set(f"{axis}Maximum", libe57.FloatNode(image, float(high[index])))
            prototype.set(
                f"cartesian{axis.upper()}",
                libe57.FloatNode(
                    image, float(low[index]), precision, float(low[index]), float(high[index])
                ),
            )
        scan.set("cartesianBounds", bounds)
        if cloud.colours is not None:
            limits = libe57.StructureNode(image)
            for channel in ("Red", "Green", "Blue"):
                limits.set(f"color{channel}Minimum", libe57.IntegerNode(image, 0))
                limits.set(f"color{channel}Maximum", libe57.IntegerNode(image, 255))
                prototype.set(f"color{channel}", libe57.IntegerNode(image, 0, 0, 255))
            scan.set("colorLimits", limits)
        records = libe57.CompressedVectorNode(image, prototype, libe57.VectorNode(image, True))
        scan.set("points", records)
        document.data3d.append(scan)
        buffers = libe57.VectorSourceDestBuffer()
        for name, column in columns.items():
            buffers.append(libe57.SourceDestBuffer(image, name, column, len(column), True, True))
        writer = records.writer(buffers)
        writer.write(len(points))
        writer.close()
    finally:
        document.close()
    if cloud.normals is not None:
        result.drop("normals", "E57's normals extension is not written")
    result.points = len(points)


_WRITERS: dict[str, Callable[[Any, Path, ExportResult, str], None]] = {
    "glb": _write_glb,
    "gltf": _write_gltf,
    "obj": _write_obj,
    "ply": _write_ply_binary,
    "ply-ascii": _write_ply_text,
    "stl": _write_stl,
    "off": _write_off,
    "dae": _write_dae,
    "3mf": _write_3mf,
    "usdz": _write_usdz,
    "x3d": _write_x3d,
    "fbx": _write_fbx,
    "xyz": _write_xyz,
    "las": _write_las,
    "laz": _write_laz,
    "e57": _write_e57,
}
