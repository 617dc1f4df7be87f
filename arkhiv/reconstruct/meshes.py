"""Mesh uploads → the glTF 2.0 binary master and a PLY: OBJ (+ MTL and textures), glTF and GLB,
PLY, STL, and USD/USDZ.

The master is a scene of the upload's parts with their transforms applied, in metres and Y up
where the source declares units and axes (glTF's convention; OBJ, PLY and STL declare neither,
so their numbers are kept and the report says "units unknown"). Textures, UVs, base colours,
vertex colours and normals are kept; textures go in as the upload's own bytes, less their
metadata (EXIF, XMP: a phone photo can say where it was taken), whenever those decode to the
same pixels (a JPEG is never re-encoded), else as lossless PNG. Nothing is
decimated; the only clean-up is dropping faces that draw nothing: faces naming one vertex twice
and repeats of a face with the same corners and winding. STL corners that are the very same
point are joined, since the format stores every triangle's corners apart.

A model far from the origin (georeferenced or in a site grid) is moved to its bounding-box centre:
the outputs are in a local frame and the offset is kept only in `output/work/local-frame.json`.
Everything is written under temporary names and renamed once the GLB, read back, holds what was
read, so a failing upload leaves no model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    ResourceLimitExceeded,
    ResourceLimits,
    check_memory,
    check_zip_members,
    load_estimate,
)
from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport, Stage
from arkhiv.reconstruct.surface import MASTER_FILES

MESH_FORMATS = {
    ".obj": "OBJ",
    ".glb": "GLB",
    ".gltf": "glTF",
    ".ply": "PLY",
    ".stl": "STL",
    ".usdz": "USDZ",
    ".usd": "USD",
    ".usda": "USD",
    ".usdc": "USD",
}
USD_FORMATS = {"USD", "USDZ"}
# glTF 2.0 core only knows these two; any other image is embedded as PNG.
KEPT_IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}
# (x, y, z) → (x, z, -y): a proper rotation, so faces keep their winding
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
LOCAL_FRAME_FILE = "local-frame.json"


@dataclass(frozen=True)
class MeshOptions:
    # A model whose bounding-box centre is farther from the origin than this many times its own
    # size sits in an outer frame (a site grid, a georeference, a scanner's world) ...
    far_from_origin_extents: float = 100.0
    # ... or farther than this many units whatever its size: beyond 10,000 a float32 (what glTF
    # stores) resolves about 1 mm when the unit is the metre; UTM coordinates are all beyond it.
    far_from_origin_units: float = 10_000.0
    drop_degenerate_faces: bool = True
    drop_duplicate_faces: bool = True


@dataclass(eq=False)
class Texture:
    data: bytes  # the encoded image, as embedded in the master
    mime: str

    def image(self):
        from PIL import Image

        return Image.open(io.BytesIO(self.data))


@dataclass(eq=False)
class Material:
    """A glTF metallic-roughness material. Sources without one are matte and not metallic."""

    name: str | None = None
    base_colour: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    base_colour_texture: Texture | None = None
    metallic: float = 0.0
    roughness: float = 1.0
    # Carried from glTF sources: metallicRoughnessTexture, normalTexture, occlusionTexture,
    # emissiveTexture.
    other_textures: dict[str, Texture] = field(default_factory=dict)
    emissive: tuple[float, float, float] | None = None
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float | None = None
    double_sided: bool = False


@dataclass(eq=False)
class Part:
    name: str
    vertices: np.ndarray  # (n, 3) float64
    faces: np.ndarray  # (m, 3) int64, counter-clockwise seen from outside
    normals: np.ndarray | None = None  # (n, 3), only where the source has them
    uv: np.ndarray | None = None  # (n, 2), v up as in OBJ and USD; flipped when written
    colours: np.ndarray | None = None  # (n, 4) uint8 RGBA, values as in the source
    material: Material | None = None


@dataclass
class Source:
    format: str
    parts: list[Part]
    units: str  # "metres" or "unknown"
    up_axis: str | None  # "Y" or "Z"; None where the format does not say
    meters_per_unit: float = 1.0  # USD's stage metadata; 1 for the rest
    warnings: list[str] = field(default_factory=list)
    not_meshes: Counter = field(default_factory=Counter)  # point clouds, lines, other shapes


def master_from_mesh(
    upload: Path,
    output: Path,
    options: MeshOptions = MeshOptions(),
    *,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> ReconstructionReport:
    """The upload's model as `output/model.glb` (the master) and `output/model.ply`. A model
    declaring more than `limits` allow, or too big to read within the memory budget, ends with
    the reason, unread."""
    import trimesh

    report = ReconstructionReport("mesh upload", asdict(options))
    report.software["trimesh"] = trimesh.__version__
    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    pending = {name: output / f".{name}.partial" for name in (*MASTER_FILES, LOCAL_FRAME_FILE)}
    try:
        with report.stage("read") as stage:
            model = main_model_file(Path(upload))
            source = read_mesh(
                model, Path(upload) if Path(upload).is_dir() else model.parent, limits=limits
            )
            if source.format in USD_FORMATS:
                from pxr import Usd

                report.software["usd-core"] = ".".join(map(str, Usd.GetVersion()))
            _record_read(source, stage)
        with report.stage("frame") as stage:
            local_frame = to_master_frame(source, options, stage)
        with report.stage("clean-up") as stage:
            clean_up(source, options, stage)
        with report.stage("write") as stage:
            written = write_glb(source, pending["model.glb"])
            ply_colours = write_ply(source.parts, pending["model.ply"])
            pending[LOCAL_FRAME_FILE].write_text(json.dumps(local_frame, indent=2))
            _record_written(source, written, ply_colours, pending, stage)
        with report.stage("validate") as stage:
            validate(pending["model.glb"], source, written, stage)
        for name in MASTER_FILES:
            pending.pop(name).replace(output / name)
        pending.pop(LOCAL_FRAME_FILE).replace(work / LOCAL_FRAME_FILE)
        report.outputs += MASTER_FILES
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    finally:
        for path in pending.values():
            path.unlink(missing_ok=True)
    return report


# --- choosing the model file ------------------------------------------------------------------


def main_model_file(upload: Path) -> Path:
    """The upload itself, or the one model file in an uploaded folder."""
    readable = ", ".join(sorted(set(MESH_FORMATS.values())))
    if upload.is_file():
        if upload.suffix.lower() not in MESH_FORMATS:
            kind = upload.suffix or "no suffix"
            raise ReconstructionFailed(
                f"{upload.name}: not a mesh format Arkhiv reads ({kind}); it reads {readable}"
            )
        return upload
    if not upload.is_dir():
        raise ReconstructionFailed(f"{upload.name}: no such file or folder")
    candidates = [
        path
        for path in sorted(upload.rglob("*"))
        if path.is_file()
        and path.suffix.lower() in MESH_FORMATS
        # hidden files and macOS resource forks (._x.obj, __MACOSX/) are not models
        and not any(p.startswith(".") or p == "__MACOSX" for p in path.relative_to(upload).parts)
    ]
    candidates = _without_usd_layers_of_others(candidates)
    # a point cloud beside a mesh is not a second model (alone, it is refused when read)
    meshes = [path for path in candidates if not _ply_without_faces(path)]
    candidates = meshes or candidates
    if not candidates:
        raise ReconstructionFailed(f"{upload.name}: the folder holds no mesh file ({readable})")
    if len(candidates) > 1:
        names = ", ".join(str(path.relative_to(upload)) for path in candidates)
        raise ReconstructionFailed(
            f"{upload.name}: several candidate models ({names}); upload one model per folder"
        )
    return candidates[0]


def _ply_without_faces(path: Path) -> bool:
    """A PLY whose header declares no faces (a point cloud)."""
    if path.suffix.lower() != ".ply":
        return False
    with path.open("rb") as stream:
        header = stream.read(65536).split(b"end_header", 1)[0]
    for line in header.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == b"element" and words[1] == b"face":
            return words[2] == b"0"
    return True


def _without_usd_layers_of_others(candidates: list[Path]) -> list[Path]:
    """USD files that another USD file of the upload uses (sublayers, references, payloads) are
    parts of that model, not models of their own."""
    usd = [path for path in candidates if MESH_FORMATS[path.suffix.lower()] in USD_FORMATS]
    if len(candidates) < 2 or not usd:
        return candidates
    from pxr import Sdf

    used: set[Path] = set()
    for path in usd:
        try:
            layer = Sdf.Layer.FindOrOpen(str(path))
            dependencies = layer.GetCompositionAssetDependencies() if layer else []
        except Exception:  # a damaged layer is reported when it is read as the model
            continue
        used.update((path.parent / dependency).resolve() for dependency in dependencies)
    return [path for path in candidates if path.resolve() not in used]


# --- reading ----------------------------------------------------------------------------------


def read_mesh(model: Path, upload_root: Path, *, limits: ResourceLimits = DEFAULT_LIMITS) -> Source:
    """The model's parts in its own units and axes, with their transforms applied."""
    form = MESH_FORMATS[model.suffix.lower()]
    _check_resources(model, upload_root, form, limits)
    if form in USD_FORMATS:
        source = _read_usd(model, upload_root, form)
    else:
        source = _read(model, form, limits)
    _refuse_broken_geometry(model, source)
    if source.not_meshes:
        shapes = ", ".join(f"{kind} {count}" for kind, count in sorted(source.not_meshes.items()))
        source.warnings.append(f"{model.name}: items that are not meshes were left out ({shapes})")
    return source


def _check_resources(model: Path, upload_root: Path, form: str, limits: ResourceLimits) -> None:
    """Before any parser reads the upload (they all hold it whole): what it declares must fit
    in its bytes (PLY header counts, USDZ members), and reading it must fit the memory budget."""
    from arkhiv.ingest.characterize.meshes import ply_declared_check, read_ply_header

    size = model.stat().st_size
    total = size
    try:
        if form == "USDZ":
            try:
                with zipfile.ZipFile(model) as packed:
                    members = [
                        (i.filename, i.file_size, i.compress_size) for i in packed.infolist()
                    ]
            except (zipfile.BadZipFile, OSError):
                members = []  # usd-core says what is wrong with it
            check_zip_members(model.name, members, size, limits)
            total = max(size, sum(member[1] for member in members))
        elif form == "USD" and upload_root.is_dir():
            # Layers of the upload that this one may use are read with it.
            total = sum(
                path.stat().st_size
                for path in upload_root.rglob("*")
                if path.is_file() and MESH_FORMATS.get(path.suffix.lower()) == "USD"
            )
        elif form == "PLY":
            try:
                header = read_ply_header(model)
            except ValueError:
                header = None  # trimesh says what is wrong with it
            if header is not None:
                ply_declared_check(model.name, header, size, limits, limit="max_mesh_elements")
        check_memory(model.name, f"this {form}", load_estimate(form.lower(), total), limits)
    except ResourceLimitExceeded as refused:
        raise ReconstructionFailed(str(refused)) from None


def _read(model: Path, form: str, limits: ResourceLimits = DEFAULT_LIMITS) -> Source:
    """OBJ, glTF, GLB, PLY and STL through trimesh; references resolved inside the folder."""
    import trimesh

    document, binary = None, None
    if form == "STL":
        _check_stl(model)
    elif form in ("GLB", "glTF"):
        document, binary = _gltf_document(model, form)
        _check_gltf_resources(model, form, document, binary, limits)
    files = _UploadFiles(model, limits)
    try:
        loaded = trimesh.load(str(model), resolver=files, process=False)
    except Exception as exc:  # untrusted input read by a third-party parser
        needed = [name for name in files.missing if not _is_image_name(name)]
        if needed:
            raise ReconstructionFailed(
                f"{model.name}: needs {', '.join(needed)}, which the upload does not hold"
            ) from exc
        raise ReconstructionFailed(
            f"{model.name}: cannot be read as {form}: {_parser_message(exc, model)}"
        ) from exc

    source = Source(
        format=form,
        parts=[],
        units="metres" if form in ("GLB", "glTF") else "unknown",
        up_axis="Y" if form in ("GLB", "glTF") else None,
    )
    source.warnings += _missing_file_warnings(model, form, files)
    originals = list(files.served.values())
    if document is not None:
        originals += _gltf_embedded_images(document, binary, files.served)
        extensions = sorted(set(document.get("extensionsUsed", [])))
        if extensions:
            source.warnings.append(
                f"{model.name}: glTF extensions are not carried into the master "
                f"({', '.join(extensions)}); the upload keeps them"
            )
    images = _OriginalImages(originals)
    exact_colours = _exact_base_colours(document, files.served)
    for name, geometry, transform in _geometries(loaded):
        if not isinstance(geometry, trimesh.Trimesh):
            source.not_meshes[type(geometry).__name__] += 1
            continue
        part = _part_from_trimesh(name, geometry, images, exact_colours, source.warnings)
        source.parts.append(transformed(part, transform))
    return source


def _geometries(loaded) -> list[tuple[str, Any, np.ndarray]]:
    """(name, geometry, 4x4 world transform) for every placement of every geometry."""
    import trimesh

    if not isinstance(loaded, trimesh.Scene):
        return [(str(loaded.metadata.get("name") or "mesh"), loaded, np.eye(4))]
    placed = []
    for node in loaded.graph.nodes_geometry:
        transform, geometry_name = loaded.graph[node]
        placed.append((str(node), loaded.geometry[geometry_name], np.asarray(transform, float)))
    return placed


def _part_from_trimesh(
    name: str, mesh, images: _OriginalImages, exact_colours: dict, warnings: list[str]
) -> Part:
    from trimesh.visual import ColorVisuals

    part = Part(
        name=name,
        vertices=np.asarray(mesh.vertices, dtype=np.float64),
        faces=np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3),
    )
    # trimesh keeps the file's normals in its cache and computes them on request otherwise;
    # only the file's are wanted (viewers shade faces flat when a glTF has none).
    if "vertex_normals" in mesh._cache.cache:
        part.normals = np.asarray(mesh._cache.cache["vertex_normals"], dtype=np.float64)
    visual = mesh.visual
    if isinstance(visual, ColorVisuals):
        if visual.kind == "vertex":
            part.colours = np.asarray(visual.vertex_colors, dtype=np.uint8)
        elif visual.kind == "face":
            part = _with_face_colours(part, np.asarray(visual.face_colors, dtype=np.uint8))
        return part
    uv = getattr(visual, "uv", None)
    if uv is not None and len(uv) == len(part.vertices):
        part.uv = np.asarray(uv, dtype=np.float64)[:, :2]
    elif uv is not None:
        warnings.append(f"{name}: {len(uv)} UVs for {len(part.vertices)} vertices, not kept")
    colours = getattr(visual, "vertex_attributes", {}).get("color")
    if colours is not None and len(colours) == len(part.vertices):
        part.colours = np.asarray(colours, dtype=np.uint8)
    if getattr(visual, "material", None) is not None:
        part.material = _material_from_trimesh(visual.material, images, exact_colours)
    return part


def _with_face_colours(part: Part, face_colours: np.ndarray) -> Part:
    """glTF colours vertices, not faces: each face gets corners of its own, in its colour."""
    corners = part.faces.reshape(-1)
    return Part(
        name=part.name,
        vertices=part.vertices[corners],
        faces=np.arange(len(corners), dtype=np.int64).reshape(-1, 3),
        normals=None if part.normals is None else part.normals[corners],
        colours=np.repeat(face_colours[:, :4], 3, axis=0),
    )


def _material_from_trimesh(material, images: _OriginalImages, exact_colours: dict) -> Material:
    from trimesh.visual.material import PBRMaterial, SimpleMaterial

    def base_colour(eight_bits) -> tuple[float, ...]:
        # trimesh keeps 8 bits of a colour; the file's own value where it is that colour
        exact = exact_colours.get(material.name)
        eight_bits = np.asarray(eight_bits, dtype=np.float64)
        if exact is not None and np.array_equal(np.round(np.asarray(exact) * 255), eight_bits):
            return tuple(float(c) for c in exact)
        return tuple((eight_bits / 255.0).tolist())

    if isinstance(material, SimpleMaterial):  # OBJ's MTL
        diffuse = base_colour(material.diffuse)
        image = material.image
        return Material(
            name=material.name,
            base_colour=diffuse,
            base_colour_texture=images.texture(image) if image is not None else None,
            alpha_mode="BLEND" if diffuse[3] < 1.0 else "OPAQUE",
        )
    if not isinstance(material, PBRMaterial):
        material = material.to_pbr()
    factor = material.baseColorFactor
    result = Material(
        name=material.name,
        base_colour=base_colour(factor) if factor is not None else (1.0, 1.0, 1.0, 1.0),
        # glTF's own defaults where the source leaves them out
        metallic=1.0 if material.metallicFactor is None else float(material.metallicFactor),
        roughness=1.0 if material.roughnessFactor is None else float(material.roughnessFactor),
        emissive=None
        if material.emissiveFactor is None
        else tuple(np.asarray(material.emissiveFactor, float).tolist()),
        alpha_mode=material.alphaMode or "OPAQUE",
        alpha_cutoff=material.alphaCutoff,
        double_sided=bool(material.doubleSided),
    )
    if material.baseColorTexture is not None:
        result.base_colour_texture = images.texture(material.baseColorTexture)
    for slot in ("metallicRoughnessTexture", "normalTexture", "occlusionTexture"):
        if getattr(material, slot) is not None:
            result.other_textures[slot] = images.texture(getattr(material, slot))
    if material.emissiveTexture is not None:
        result.other_textures["emissiveTexture"] = images.texture(material.emissiveTexture)
    return result


def _exact_base_colours(document: dict | None, served: dict[str, bytes]) -> dict[str, tuple]:
    """Base colours as the file writes them (RGBA floats), by material name: glTF's
    baseColorFactor, MTL's Kd. Names used twice are left out."""
    found: dict[str, list[tuple]] = {}
    if document is not None:
        for material in document.get("materials", []):
            factor = material.get("pbrMetallicRoughness", {}).get("baseColorFactor", [1, 1, 1, 1])
            if "name" in material and len(factor) == 4:
                found.setdefault(material["name"], []).append(tuple(map(float, factor)))
    for name, data in served.items():
        if not name.lower().endswith(".mtl"):
            continue
        material_name = None
        for line in data.decode("utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) > 1 and words[0].lower() == "newmtl":
                material_name = " ".join(words[1:])
            elif len(words) == 4 and words[0].lower() == "kd" and material_name is not None:
                try:
                    colour = (*map(float, words[1:]), 1.0)
                except ValueError:
                    continue
                found.setdefault(material_name, []).append(colour)
    return {name: colours[0] for name, colours in found.items() if len(colours) == 1}


class _UploadFiles:
    """What the model refers to (MTL, textures, glTF buffers), looked up next to it the way
    uploads spell them: as written, with Windows separators, after MTL options (`-s 1 1 1 a.png`)
    or in another letter case. Never outside the model's folder. Remembers what it served (to
    embed textures unchanged) and what it could not find (to say so)."""

    def __init__(self, model: Path, limits: ResourceLimits = DEFAULT_LIMITS) -> None:
        from trimesh.resolvers import FilePathResolver

        self.folder = model.parent
        self.files = FilePathResolver(str(model))
        self.limits = limits
        self.served: dict[str, bytes] = {}
        self.missing: list[str] = []
        self.refused: dict[str, str] = {}  # textures too big to decode: name -> why

    def get(self, name: str) -> bytes:
        from arkhiv.ingest.characterize.images import check_picture_bytes

        for spelling in self._spellings(name):
            try:
                data = self.files.get(spelling)
            except (OSError, ValueError):
                continue
            if _is_image_name(name):
                # trimesh decodes textures whole as it loads them: a bomb is never handed over
                # (the model is kept untextured, and the report says why).
                try:
                    check_picture_bytes(Path(spelling).name, data, self.limits)
                except ResourceLimitExceeded as refused:
                    self.refused[name] = str(refused)
                    raise FileNotFoundError(name) from None
            self.served[name] = data
            return data
        if name not in self.missing:
            self.missing.append(name)
        raise FileNotFoundError(name)

    __getitem__ = get

    def _spellings(self, name: str) -> list[str]:
        forward = unquote(name).strip().replace("\\", "/")
        spellings = [name, forward, forward.split()[-1] if forward.split() else forward]
        wanted = {spelling.lower() for spelling in spellings}
        spellings += [
            str(path.relative_to(self.folder))
            for path in self.folder.rglob("*")
            if str(path.relative_to(self.folder)).lower() in wanted
            or path.name.lower() in {Path(spelling).name.lower() for spelling in spellings}
        ]
        return list(dict.fromkeys(spellings))

    # the rest of trimesh's resolver interface
    def keys(self):
        return self.files.keys()

    def namespaced(self, namespace: str):
        return self.files.namespaced(namespace)

    def write(self, name: str, data) -> None:
        raise PermissionError("uploads are read, never written")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tga", ".tif", ".tiff", ".gif", ".webp"}


def _is_image_name(name: str) -> bool:
    words = name.replace("\\", "/").split()
    return bool(words) and Path(words[-1]).suffix.lower() in IMAGE_SUFFIXES


def _missing_file_warnings(model: Path, form: str, files: _UploadFiles) -> list[str]:
    """A missing or unreadable texture does not stop the master: it is kept untextured, with its
    UVs, and the report says what is missing (the upload itself is archived as it came)."""
    from PIL import Image

    warnings = [f"{model.name}: {why}; kept untextured" for why in files.refused.values()]
    for name in files.missing:
        if name in files.refused:
            continue
        if form == "OBJ" and name.lower().endswith(".mtl"):
            warnings.append(
                f"{model.name}: its materials file {name} is not in the upload; "
                "kept without materials and textures"
            )
        else:
            warnings.append(f"{model.name}: texture {name} is not in the upload; kept untextured")
    for name, data in files.served.items():
        if not _is_image_name(name):
            continue
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
        except Exception:
            warnings.append(f"{model.name}: texture {name} cannot be decoded; kept untextured")
    if form == "OBJ":
        warnings += _obj_maps_not_carried(model, files)
    return warnings


def _obj_maps_not_carried(model: Path, files: _UploadFiles) -> list[str]:
    """The master carries an OBJ material's colour and colour texture (map_Kd) only."""
    other_maps = set()
    for name, data in files.served.items():
        if not name.lower().endswith(".mtl"):
            continue
        for line in data.decode("utf-8", errors="replace").splitlines():
            keyword = line.strip().split(maxsplit=1)[0].lower() if line.strip() else ""
            if keyword != "map_kd" and (
                keyword.startswith("map_") or keyword in ("bump", "norm", "disp", "refl")
            ):
                other_maps.add(keyword)
    if not other_maps:
        return []
    return [
        f"{model.name}: material maps other than map_Kd ({', '.join(sorted(other_maps))}) are "
        "not carried into the master; the upload keeps them"
    ]


def _check_stl(model: Path) -> None:
    """trimesh reads garbage as an empty STL; say what is wrong instead."""
    size = model.stat().st_size
    with model.open("rb") as stream:
        head = stream.read(84)
    if len(head) == 84:
        triangles = struct.unpack_from("<I", head, 80)[0]
        if size == 84 + 50 * triangles:
            return  # binary STL
    if head.lstrip()[:5].lower() == b"solid":
        with model.open("rb") as stream:
            if b"facet" in stream.read(1 << 20):
                return  # ASCII STL
    raise ReconstructionFailed(
        f"{model.name}: not a valid STL (neither ASCII 'solid … facet' nor a binary STL whose "
        f"size matches its triangle count; {size} bytes)"
    )


GLB_MAGIC = b"glTF"
GLB_JSON_CHUNK = 0x4E4F534A
GLB_BINARY_CHUNK = 0x004E4942
# glTF extensions that change how geometry is stored: trimesh cannot decode them.
UNREADABLE_EXTENSIONS = {"KHR_draco_mesh_compression", "EXT_meshopt_compression"}


def _gltf_document(model: Path, form: str) -> tuple[dict, bytes | None]:
    """The glTF JSON and, for GLB, the binary chunk; a damaged container is named as such."""
    data = model.read_bytes()
    binary = None
    if form == "glTF":
        text = data
    else:
        if len(data) < 20 or data[:4] != GLB_MAGIC:
            raise ReconstructionFailed(f"{model.name}: not a GLB (no glTF binary header)")
        version, length = struct.unpack_from("<II", data, 4)
        if version != 2:
            raise ReconstructionFailed(f"{model.name}: GLB version {version}; Arkhiv reads 2.0")
        if length != len(data):
            raise ReconstructionFailed(
                f"{model.name}: damaged or truncated GLB: its header gives {length} bytes, "
                f"the file has {len(data)}"
            )
        chunks, offset = [], 12
        while offset + 8 <= len(data):
            chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
            body = data[offset + 8 : offset + 8 + chunk_length]
            if len(body) < chunk_length:
                raise ReconstructionFailed(f"{model.name}: damaged GLB: a chunk runs past the end")
            chunks.append((chunk_type, body))
            offset += 8 + chunk_length
        if not chunks or chunks[0][0] != GLB_JSON_CHUNK:
            raise ReconstructionFailed(f"{model.name}: damaged GLB: no JSON chunk first")
        text = chunks[0][1]
        binary = next((body for kind, body in chunks[1:] if kind == GLB_BINARY_CHUNK), None)
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReconstructionFailed(f"{model.name}: its glTF JSON is damaged: {exc}") from exc
    asset = document.get("asset") if isinstance(document, dict) else None
    if not isinstance(asset, dict) or not str(asset.get("version", "")).startswith("2"):
        raise ReconstructionFailed(f"{model.name}: not a glTF 2.0 document")
    unreadable = UNREADABLE_EXTENSIONS & set(document.get("extensionsRequired", []))
    if unreadable:
        raise ReconstructionFailed(
            f"{model.name}: its geometry is compressed with {', '.join(sorted(unreadable))}, "
            "which Arkhiv cannot decode; upload it uncompressed"
        )
    return document, binary


def _check_gltf_resources(
    model: Path, form: str, document: dict, binary: bytes | None, limits: ResourceLimits
) -> None:
    """Accessor, Draco and meshopt counts against the bytes that hold them, the decoded
    geometry (node instances counted) against the memory budget, and the embedded textures'
    declared sizes."""
    from arkhiv.ingest.characterize.images import check_picture_bytes
    from arkhiv.ingest.characterize.meshes import gltf_declared_check

    stored = model.stat().st_size
    external: dict[str, Path] = {}
    buffers = document.get("buffers")
    for buffer in buffers if isinstance(buffers, list) else []:
        uri = buffer.get("uri") if isinstance(buffer, dict) else None
        if isinstance(uri, str) and not uri.startswith("data:"):
            target = model.parent / unquote(uri)
            if target.is_file():
                stored += target.stat().st_size
                external[uri] = target
    try:
        decoded = gltf_declared_check(model.name, document, stored, limits)
        needed = load_estimate(form.lower(), max(stored, decoded))
        check_memory(model.name, "its geometry", needed, limits)
        # Embedded textures are decoded by trimesh as it loads the model: none may be a bomb.
        # Only the external buffers that hold images are read here (geometry buffers are
        # trimesh's to read, once).
        views = document.get("bufferViews") or []
        image_buffers = {
            views[image["bufferView"]].get("buffer", -1)
            for image in document.get("images") or []
            if isinstance(image.get("bufferView"), int) and image["bufferView"] < len(views)
        }
        image_uris = {
            buffers[i].get("uri")
            for i in image_buffers
            if isinstance(i, int) and 0 <= i < len(buffers or [])
        }
        held = {uri: path.read_bytes() for uri, path in external.items() if uri in image_uris}
        for number, image in enumerate(_gltf_embedded_images(document, binary, held)):
            check_picture_bytes(f"{model.name} image {number}", image, limits)
    except ResourceLimitExceeded as refused:
        raise ReconstructionFailed(str(refused)) from None
    except (TypeError, ValueError, AttributeError) as exc:  # a mangled document
        raise ReconstructionFailed(f"{model.name}: its glTF JSON is damaged: {exc}") from exc


def _gltf_embedded_images(document: dict, binary: bytes | None, served: dict) -> list[bytes]:
    """The encoded images of a glTF, wherever they are stored (best effort: an image not found
    here is embedded as PNG of its pixels)."""

    def buffer_bytes(index: int) -> bytes | None:
        uri = document["buffers"][index].get("uri")
        if uri is None:
            return binary
        if uri.startswith("data:"):
            return base64.b64decode(uri.split(",", 1)[1])
        return served.get(uri)

    images = []
    for image in document.get("images", []):
        try:
            if "bufferView" in image:
                view = document["bufferViews"][image["bufferView"]]
                buffer = buffer_bytes(view["buffer"]) or b""
                start = view.get("byteOffset", 0)
                images.append(buffer[start : start + view["byteLength"]])
            elif str(image.get("uri", "")).startswith("data:"):
                images.append(base64.b64decode(image["uri"].split(",", 1)[1]))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return images


class _OriginalImages:
    """Encoded images as the upload holds them. A texture is embedded as the upload's own bytes
    when they decode to exactly its pixels (re-encoding a JPEG would lose quality), else as PNG,
    which is lossless."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = blobs

    def texture(self, image) -> Texture:
        from PIL import Image

        pixels = None
        for blob in self.blobs:
            try:
                with Image.open(io.BytesIO(blob)) as original:
                    if (
                        original.format not in KEPT_IMAGE_TYPES
                        or original.size != image.size
                        or original.mode != image.mode
                    ):
                        continue
                    if pixels is None:
                        pixels = np.asarray(image)
                    if np.array_equal(np.asarray(original), pixels):
                        return _without_metadata(blob)
            except Exception:  # not an image, or a damaged one
                continue
        return _png_texture(image)


def _without_metadata(data: bytes) -> Texture:
    """The upload's own encoded picture, every pixel byte kept, without its EXIF/XMP/IPTC: a
    phone's photo used as a texture can carry where it was taken."""
    from arkhiv.access.disclosure import picture_without_metadata

    return Texture(*picture_without_metadata(data))


def _png_texture(image) -> Texture:
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return Texture(encoded.getvalue(), "image/png")


def _texture_from_bytes(data: bytes, name: str, warnings: list[str]) -> Texture | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format in KEPT_IMAGE_TYPES:
                image.verify()
                return _without_metadata(data)
            image.load()
            return _png_texture(image)
    except Exception:
        warnings.append(f"texture {name} cannot be decoded; kept untextured")
        return None


# --- USD and USDZ -----------------------------------------------------------------------------


def _read_usd(model: Path, upload_root: Path, form: str) -> Source:
    """Every visible polygon mesh of the stage, placed in the world; units and up axis are the
    stage's (applied later, with the local frame)."""
    from pxr import Usd, UsdGeom

    try:
        stage = Usd.Stage.Open(str(model))
    except Exception as exc:
        raise ReconstructionFailed(
            f"{model.name}: cannot be read as {form}: {_parser_message(exc, model)}"
        ) from exc
    if stage is None:
        raise ReconstructionFailed(f"{model.name}: cannot be read as {form}")
    root = upload_root.resolve()
    for layer in stage.GetUsedLayers():
        real = layer.realPath.split("[", 1)[0]
        if real and not Path(real).resolve().is_relative_to(root):
            # a layer from elsewhere on this machine is not part of the upload
            raise ReconstructionFailed(
                f"{model.name}: uses the layer {layer.identifier}, which is outside the upload"
            )
    source = Source(
        format=form,
        parts=[],
        units="metres",
        up_axis=str(UsdGeom.GetStageUpAxis(stage)),
        meters_per_unit=float(UsdGeom.GetStageMetersPerUnit(stage)),
    )
    if not UsdGeom.StageHasAuthoredMetersPerUnit(stage):
        source.warnings.append(
            f"{model.name}: metersPerUnit is not set; USD's default, centimetres, is assumed"
        )
    reader = _UsdMeshReader(stage, root, source.warnings)
    for prim in stage.Traverse(Usd.TraverseInstanceProxies(Usd.PrimDefaultPredicate)):
        if prim.IsA(UsdGeom.PointInstancer):
            # its prototypes are read once, where they are defined; the copies are not made
            source.not_meshes["PointInstancer"] += 1
        if not prim.IsA(UsdGeom.Gprim):
            continue
        imageable = UsdGeom.Imageable(prim)
        if (
            imageable.ComputeVisibility() == UsdGeom.Tokens.invisible
            or imageable.ComputePurpose() == UsdGeom.Tokens.guide
        ):
            continue
        if not prim.IsA(UsdGeom.Mesh):
            source.not_meshes[str(prim.GetTypeName())] += 1
            continue
        source.parts += reader.parts(prim)
    return source


class _UsdMeshReader:
    """A UsdGeom.Mesh → parts: polygons fanned into triangles, primvars (st, normals,
    displayColor) per vertex, the UsdPreviewSurface of the mesh and of its material subsets."""

    def __init__(self, stage, root: Path, warnings: list[str]) -> None:
        from pxr import Usd, UsdGeom

        self.time = Usd.TimeCode.Default()
        self.transforms = UsdGeom.XformCache(self.time)
        self.root = root
        self.warnings = warnings
        self.materials: dict[str, tuple[Material | None, str | None]] = {}

    def parts(self, prim) -> list[Part]:
        from pxr import UsdGeom, UsdShade

        mesh = UsdGeom.Mesh(prim)
        where = str(prim.GetPath())
        points = _array(self._value(mesh.GetPointsAttr()), np.float64).reshape(-1, 3)
        counts = _array(self._value(mesh.GetFaceVertexCountsAttr()), np.int64)
        indices = _array(self._value(mesh.GetFaceVertexIndicesAttr()), np.int64)
        if len(counts) == 0 or len(points) == 0:
            return []
        if (
            counts.sum() != len(indices)
            or counts.min() < 0
            or (len(indices) and (indices.min() < 0 or indices.max() >= len(points)))
        ):
            raise ReconstructionFailed(
                f"mesh {where}: its face vertex counts and indices do not fit its "
                f"{len(points)} points"
            )
        binding = UsdShade.MaterialBindingAPI(prim)
        material, uv_name = self._material(binding.ComputeBoundMaterial()[0])
        corner_values: dict[str, np.ndarray] = {}
        uv = self._primvar(prim, uv_name or "st", counts, indices, len(points))
        if uv is None and uv_name is None:
            uv = self._any_texcoord_primvar(prim, counts, indices, len(points))
        if uv is not None:
            corner_values["uv"] = uv[:, :2]
        normals = self._primvar(prim, "normals", counts, indices, len(points))
        if normals is None and mesh.GetNormalsAttr().HasAuthoredValue():
            normals = self._corners(
                self._value(mesh.GetNormalsAttr()),
                str(mesh.GetNormalsInterpolation()),
                counts,
                indices,
                len(points),
                f"{where} normals",
            )
        if normals is not None:
            corner_values["normals"] = normals
        if material is None:
            material = self._display_colour(prim, counts, indices, len(points), corner_values)

        vertex_of_corner, vertices, values = _vertices_of_corners(points, indices, corner_values)
        triangles, polygon_of_triangle = _fan_triangles(counts)
        faces = vertex_of_corner[triangles]
        if str(mesh.GetOrientationAttr().Get()) == "leftHanded":
            faces = faces[:, [0, 2, 1]]
        whole = Part(
            name=where,
            vertices=vertices,
            faces=faces,
            normals=values.get("normals"),
            uv=values.get("uv"),
            colours=values.get("colours"),
            material=material,
        )
        world = np.asarray(self.transforms.GetLocalToWorldTransform(prim), float).T
        return [
            transformed(part, world)
            for part in self._split_by_subsets(binding, whole, polygon_of_triangle)
        ]

    def _split_by_subsets(self, binding, whole: Part, polygon_of_triangle) -> list[Part]:
        from pxr import UsdShade

        parts = []
        taken = np.zeros(len(whole.faces), dtype=bool)
        for subset in binding.GetMaterialBindSubsets():
            polygons = _array(self._value(subset.GetIndicesAttr()), np.int64)
            chosen = np.isin(polygon_of_triangle, polygons) & ~taken
            if not chosen.any():
                continue
            taken |= chosen
            bound = UsdShade.MaterialBindingAPI(subset.GetPrim()).ComputeBoundMaterial()[0]
            material, _uv_name = self._material(bound)
            name = f"{whole.name}/{subset.GetPrim().GetName()}"
            parts.append(_compacted(whole, chosen, name, material or whole.material))
        if not taken.any():
            return [whole]
        if not taken.all():
            parts.append(_compacted(whole, ~taken, whole.name, whole.material))
        return parts

    def _value(self, attribute):
        from pxr import Usd

        value = attribute.Get(self.time)
        if value is None and attribute.GetNumTimeSamples():
            value = attribute.Get(Usd.TimeCode.EarliestTime())  # animated: its first pose
        return value

    def _primvar(self, prim, name: str, counts, indices, point_count: int) -> np.ndarray | None:
        from pxr import UsdGeom

        primvar = UsdGeom.PrimvarsAPI(prim).GetPrimvar(name)
        if not primvar or not primvar.HasAuthoredValue():
            return None
        values = primvar.ComputeFlattened(self.time)
        if values is None:
            return None
        return self._corners(
            values,
            str(primvar.GetInterpolation()),
            counts,
            indices,
            point_count,
            f"{prim.GetPath()} {name}",
        )

    def _any_texcoord_primvar(self, prim, counts, indices, point_count: int):
        from pxr import Sdf, UsdGeom

        for primvar in UsdGeom.PrimvarsAPI(prim).GetPrimvars():
            if primvar.GetTypeName() in (Sdf.ValueTypeNames.TexCoord2fArray,):
                return self._primvar(
                    prim, str(primvar.GetPrimvarName()), counts, indices, point_count
                )
        return None

    def _corners(self, values, interpolation, counts, indices, point_count, what):
        """One value per face corner; None (with a warning) when the count does not fit."""
        values = _array(values, np.float64)
        values = values.reshape(len(values), -1) if len(values) else values.reshape(0, 1)
        expected = {
            "constant": 1,
            "uniform": len(counts),
            "vertex": point_count,
            "varying": point_count,
            "faceVarying": len(indices),
        }.get(interpolation)
        if expected is None or len(values) != expected:
            self.warnings.append(
                f"{what}: {len(values)} values do not fit {interpolation} interpolation; not kept"
            )
            return None
        if interpolation == "constant":
            return np.repeat(values, len(indices), axis=0)
        if interpolation == "uniform":
            return np.repeat(values, counts, axis=0)
        if interpolation in ("vertex", "varying"):
            return values[indices]
        return values

    def _display_colour(self, prim, counts, indices, point_count, corner_values):
        """displayColor (and displayOpacity) stand for the look where no material is bound, as
        in USD renderers: one colour becomes the material's, varying colours vertex colours."""
        colour = self._primvar(prim, "displayColor", counts, indices, point_count)
        if colour is None:
            return None
        opacity = self._primvar(prim, "displayOpacity", counts, indices, point_count)
        alpha = opacity[:, :1] if opacity is not None else np.ones((len(colour), 1))
        rgba = np.column_stack([colour[:, :3], alpha])
        translucent = bool((rgba[:, 3] < 1.0).any())
        if np.all(rgba == rgba[:1]):
            return Material(
                name="displayColor",
                base_colour=tuple(rgba[0].tolist()),
                alpha_mode="BLEND" if translucent else "OPAQUE",
            )
        corner_values["colours"] = rgba
        return Material(name="displayColor", alpha_mode="BLEND" if translucent else "OPAQUE")

    def _material(self, material) -> tuple[Material | None, str | None]:
        """A UsdPreviewSurface as a glTF material, and the primvar its texture reads UVs from."""
        if not material:
            return None, None
        key = str(material.GetPath())
        if key not in self.materials:
            self.materials[key] = self._preview_surface(material)
        return self.materials[key]

    def _preview_surface(self, material) -> tuple[Material | None, str | None]:
        from pxr import UsdShade

        shader = material.ComputeSurfaceSource()[0]
        if not shader or shader.GetIdAttr().Get() != "UsdPreviewSurface":
            self.warnings.append(
                f"material {material.GetPath()} is not a UsdPreviewSurface; its look is not kept"
            )
            return None, None
        result = Material(name=material.GetPrim().GetName(), metallic=0.0, roughness=0.5)
        metallic = _input_value(shader, "metallic")
        roughness = _input_value(shader, "roughness")
        opacity = _input_value(shader, "opacity")
        threshold = _input_value(shader, "opacityThreshold")
        if isinstance(metallic, float):
            result.metallic = metallic
        if isinstance(roughness, float):
            result.roughness = roughness
        alpha = opacity if isinstance(opacity, float) else 1.0
        if isinstance(threshold, float) and threshold > 0:
            result.alpha_mode, result.alpha_cutoff = "MASK", threshold
        elif alpha < 1.0:
            result.alpha_mode = "BLEND"
        uv_name = None
        source = _input_source(shader, "diffuseColor")
        if isinstance(source, UsdShade.Shader):
            if source.GetIdAttr().Get() == "UsdUVTexture":
                result.base_colour_texture = self._texture(source, material)
                reader = _input_source(source, "st")
                if isinstance(reader, UsdShade.Shader):
                    varname = _input_value(reader, "varname")
                    uv_name = str(varname) if varname else None
            result.base_colour = (1.0, 1.0, 1.0, alpha)
        elif source is not None:
            result.base_colour = (*(float(c) for c in source), alpha)
        else:
            result.base_colour = (0.18, 0.18, 0.18, alpha)  # UsdPreviewSurface's default
        return result, uv_name

    def _texture(self, texture_shader, material) -> Texture | None:
        from pxr import Ar

        asset = _input_value(texture_shader, "file")
        authored = getattr(asset, "path", "") or ""
        resolved = getattr(asset, "resolvedPath", "") or ""
        where = f"material {material.GetPath()}"
        if "<UDIM>" in authored.upper():
            self.warnings.append(f"{where}: UDIM textures ({authored}) are not carried")
            return None
        inside = resolved and Path(resolved.split("[", 1)[0]).resolve().is_relative_to(self.root)
        opened = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(resolved)) if inside else None
        if opened is None:
            self.warnings.append(
                f"{where}: texture {authored or '(none named)'} is not in the upload; "
                "kept untextured"
            )
            return None
        return _texture_from_bytes(bytes(opened.GetBuffer()), authored, self.warnings)


def _input_attribute(shader, name: str):
    """The attribute that gives a shader input its value, through connections."""
    shader_input = shader.GetInput(name)
    if not shader_input:
        return None
    attributes = shader_input.GetValueProducingAttributes()
    return attributes[0] if attributes else None


def _input_value(shader, name: str):
    attribute = _input_attribute(shader, name)
    if attribute is None or attribute.GetName().startswith("outputs:"):
        return None
    value = attribute.Get()
    return float(value) if isinstance(value, int | float) else value


def _input_source(shader, name: str):
    """The shader whose output feeds the input, else the input's value (or None)."""
    from pxr import UsdShade

    attribute = _input_attribute(shader, name)
    if attribute is None:
        return None
    if attribute.GetName().startswith("outputs:"):
        return UsdShade.Shader(attribute.GetPrim())
    return attribute.Get()


def _array(values, dtype) -> np.ndarray:
    return np.asarray(values if values is not None else [], dtype=dtype)


def _vertices_of_corners(points, indices, corner_values: dict[str, np.ndarray]):
    """Vertices for face corners: one per point where every value follows the points, else one
    per distinct (point, values) combination, so UV seams and per-face colours stay exact."""
    columns = [indices[:, None].astype(np.float64), *corner_values.values()]
    if not corner_values:
        return indices, points, {}
    keys, first, vertex_of_corner = np.unique(
        np.column_stack(columns), axis=0, return_index=True, return_inverse=True
    )
    vertex_of_corner = vertex_of_corner.reshape(-1)
    point_of_vertex = indices[first]
    values, start = {}, 1
    for name, corner in corner_values.items():
        width = corner.shape[1]
        values[name] = keys[:, start : start + width]
        start += width
    if "colours" in values:
        values["colours"] = np.clip(np.round(values["colours"] * 255), 0, 255).astype(np.uint8)
    return vertex_of_corner, points[point_of_vertex], values


def _fan_triangles(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Corner indices of the triangles fanning each polygon from its first corner (exact for
    convex polygons, which is what modelling tools write), and each triangle's polygon."""
    starts = np.cumsum(counts) - counts
    per_polygon = np.maximum(counts - 2, 0)
    polygon = np.repeat(np.arange(len(counts)), per_polygon)
    step = np.arange(len(polygon)) - np.repeat(np.cumsum(per_polygon) - per_polygon, per_polygon)
    first = starts[polygon]
    return np.column_stack([first, first + step + 1, first + step + 2]), polygon


def _compacted(part: Part, face_mask: np.ndarray, name: str, material: Material | None) -> Part:
    """The chosen faces with only the vertices they use."""
    faces = part.faces[face_mask]
    used, faces = np.unique(faces, return_inverse=True)

    def pick(values):
        return None if values is None else values[used]

    return Part(
        name=name,
        vertices=part.vertices[used],
        faces=faces.reshape(-1, 3),
        normals=pick(part.normals),
        uv=pick(part.uv),
        colours=pick(part.colours),
        material=material,
    )


# --- checks, frame, clean-up ------------------------------------------------------------------


def _refuse_broken_geometry(model: Path, source: Source) -> None:
    faces = sum(len(part.faces) for part in source.parts)
    if faces == 0:
        if {"PointCloud", "Points"} & set(source.not_meshes):
            raise ReconstructionFailed(
                f"{model.name}: a point cloud, not a mesh (it has no faces); "
                "the point-cloud pipeline makes a surface from it"
            )
        raise ReconstructionFailed(f"{model.name}: holds no faces, so no mesh")
    for part in source.parts:
        where = f"{model.name}" if len(source.parts) == 1 else f"{model.name}, {part.name}"
        bad = int((~np.isfinite(part.vertices)).any(axis=1).sum())
        if bad:
            raise ReconstructionFailed(
                f"{where}: {bad} of {len(part.vertices)} vertices have coordinates that are not "
                "numbers (NaN) or infinite"
            )
        if len(part.faces) and (part.faces.min() < 0 or part.faces.max() >= len(part.vertices)):
            raise ReconstructionFailed(f"{where}: faces refer to vertices the file does not have")
        if part.normals is not None and not np.isfinite(part.normals).all():
            part.normals = None  # viewers compute their own
            source.warnings.append(f"{part.name}: normals with NaN or infinity were dropped")
        if part.uv is not None and not np.isfinite(part.uv).all():
            part.uv = np.nan_to_num(part.uv, nan=0.0, posinf=0.0, neginf=0.0)
            source.warnings.append(f"{part.name}: UVs with NaN or infinity were set to 0")


def transformed(part: Part, matrix: np.ndarray) -> Part:
    """The part moved by a 4x4 column-vector transform; normals follow, a mirroring flips the
    winding so faces still point out."""
    if np.allclose(matrix, np.eye(4), rtol=0, atol=1e-15):
        return part
    linear = matrix[:3, :3]
    part.vertices = part.vertices @ linear.T + matrix[:3, 3]
    if part.normals is not None:
        normals = part.normals @ np.linalg.inv(linear)
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        part.normals = np.divide(normals, lengths, out=normals, where=lengths > 0)
    if np.linalg.det(linear) < 0:
        part.faces = part.faces[:, [0, 2, 1]]
    return part


def to_master_frame(source: Source, options: MeshOptions, stage: Stage) -> dict:
    """Metres and Y up where the source declares them, then moved to the bounding-box centre if
    it is far from the origin. Returns the content of work/local-frame.json."""
    conversion = np.eye(4)
    conversion[:3, :3] *= source.meters_per_unit
    if source.up_axis == "Z":
        conversion[:3, :3] = Z_UP_TO_Y_UP @ conversion[:3, :3]
    for part in source.parts:
        transformed(part, conversion)

    low, high = _bounds(source.parts)
    centre, extent = (low + high) / 2, float(np.max(high - low))
    distance = float(np.linalg.norm(centre))
    far = (
        distance > options.far_from_origin_extents * extent
        or distance > options.far_from_origin_units
    )
    origin = centre if far else np.zeros(3)
    if far:
        for part in source.parts:
            part.vertices = part.vertices - origin  # in float64, before glTF's float32
    stage.figures.update(
        units=source.units,
        scaled_to_metres=source.meters_per_unit if source.meters_per_unit != 1.0 else None,
        up_axis_conversion="Z→Y" if source.up_axis == "Z" else None,
        local_frame_offset_applied=far,
    )
    return {
        "origin": origin.tolist(),
        "applied": far,
        "meaning": "source coordinates = model coordinates + origin, in the model's axes and "
        "units (after the source's declared units and up axis were converted)",
        "source_up_axis": source.up_axis,
        "source_meters_per_unit": source.meters_per_unit,
    }


def clean_up(source: Source, options: MeshOptions, stage: Stage) -> None:
    """Only what draws nothing goes: faces naming a vertex twice, and repeats of a face with the
    same corners in the same winding (a reversed copy, a back face, stays)."""
    joined = 0
    if source.format == "STL":
        for part in source.parts:
            before = len(part.vertices)
            part.vertices, inverse = np.unique(part.vertices, axis=0, return_inverse=True)
            part.faces = inverse.reshape(-1)[part.faces]
            joined += before - len(part.vertices)
    degenerate = duplicate = 0
    for part in source.parts:
        faces = part.faces
        if options.drop_degenerate_faces:
            repeated = (
                (faces[:, 0] == faces[:, 1])
                | (faces[:, 1] == faces[:, 2])
                | (faces[:, 0] == faces[:, 2])
            )
            degenerate += int(repeated.sum())
            faces = faces[~repeated]
        if options.drop_duplicate_faces and len(faces):
            # rotate each face to start at its lowest index: same winding, comparable rows
            shift = np.argmin(faces, axis=1)[:, None]
            canonical = np.take_along_axis(faces, (shift + np.arange(3)) % 3, axis=1)
            _unique, first = np.unique(canonical, axis=0, return_index=True)
            duplicate += len(faces) - len(first)
            faces = faces[np.sort(first)]
        part.faces = faces
    emptied = [part.name for part in source.parts if len(part.faces) == 0]
    source.parts = [part for part in source.parts if len(part.faces)]
    if not source.parts:
        raise ReconstructionFailed("every face of the model is degenerate; nothing to show")
    stage.figures.update(
        stl_corners_joined=joined if source.format == "STL" else None,
        degenerate_faces_dropped=degenerate,
        duplicate_faces_dropped=duplicate,
        parts_emptied=emptied,
        faces=sum(len(part.faces) for part in source.parts),
    )


def _bounds(parts: list[Part]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.min([part.vertices.min(axis=0) for part in parts], axis=0),
        np.max([part.vertices.max(axis=0) for part in parts], axis=0),
    )


# --- writing ----------------------------------------------------------------------------------

ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
FLOAT, UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT = 5126, 5121, 5123, 5125
TRIANGLES = 4
# For parts without a material: glTF's own default is fully metallic, which shows an STL or a
# vertex-coloured PLY nearly black in viewers without an environment map.
MATTE_WHITE = Material(name="default")


def write_glb(source: Source, path: Path) -> dict:
    """A glTF 2.0 binary of the parts, one node each, without transforms (they are applied).
    Written here rather than by trimesh so that textures go in as the upload's bytes. Returns
    the glTF JSON written."""
    binary = bytearray()
    document: dict[str, Any] = {
        "asset": {
            "version": "2.0",
            "generator": "Arkhiv mesh upload",
            "extras": {
                "source_format": source.format,
                "source_units": source.units,
                "source_up_axis": source.up_axis,
            },
        },
        "scene": 0,
        "scenes": [{"nodes": []}],
        "nodes": [],
        "meshes": [],
        "accessors": [],
        "bufferViews": [],
    }
    materials: list[dict] = []
    material_index: dict[int, int] = {}
    images: list[dict] = []
    image_index: dict[str, int] = {}

    def buffer_view(data: bytes, target: int | None = None) -> int:
        binary.extend(b"\0" * (-len(binary) % 4))
        view = {"buffer": 0, "byteOffset": len(binary), "byteLength": len(data)}
        if target:
            view["target"] = target
        binary.extend(data)
        document["bufferViews"].append(view)
        return len(document["bufferViews"]) - 1

    def accessor(array: np.ndarray, component: int, kind: str, target: int, **extra) -> int:
        array = np.ascontiguousarray(array)
        entry = {
            "bufferView": buffer_view(array.tobytes(), target),
            "componentType": component,
            "count": len(array),
            "type": kind,
            **extra,
        }
        document["accessors"].append(entry)
        return len(document["accessors"]) - 1

    def texture(image: Texture) -> dict:
        digest = hashlib.sha256(image.data).hexdigest()
        if digest not in image_index:
            images.append({"bufferView": buffer_view(image.data), "mimeType": image.mime})
            image_index[digest] = len(images) - 1
        return {"index": image_index[digest]}  # textures and images are listed one to one

    def material(chosen: Material) -> int:
        if id(chosen) not in material_index:
            pbr: dict[str, Any] = {
                "baseColorFactor": [float(c) for c in chosen.base_colour],
                "metallicFactor": float(chosen.metallic),
                "roughnessFactor": float(chosen.roughness),
            }
            entry: dict[str, Any] = {"pbrMetallicRoughness": pbr}
            if chosen.name:
                entry["name"] = str(chosen.name)
            if chosen.base_colour_texture is not None:
                pbr["baseColorTexture"] = texture(chosen.base_colour_texture)
            for slot, image in chosen.other_textures.items():
                target = pbr if slot == "metallicRoughnessTexture" else entry
                target[slot] = texture(image)
            if chosen.emissive is not None:
                entry["emissiveFactor"] = [float(c) for c in chosen.emissive]
            if chosen.alpha_mode != "OPAQUE":
                entry["alphaMode"] = chosen.alpha_mode
            if chosen.alpha_mode == "MASK" and chosen.alpha_cutoff is not None:
                entry["alphaCutoff"] = float(chosen.alpha_cutoff)
            if chosen.double_sided:
                entry["doubleSided"] = True
            materials.append(entry)
            material_index[id(chosen)] = len(materials) - 1
        return material_index[id(chosen)]

    for part in source.parts:
        positions = part.vertices.astype("<f4")
        attributes = {
            "POSITION": accessor(
                positions,
                FLOAT,
                "VEC3",
                ARRAY_BUFFER,
                min=positions.min(axis=0).astype(float).tolist(),
                max=positions.max(axis=0).astype(float).tolist(),
            )
        }
        if part.normals is not None:
            lengths = np.linalg.norm(part.normals, axis=1, keepdims=True)
            unit = np.divide(
                part.normals, lengths, out=np.zeros_like(part.normals), where=lengths > 0
            )
            attributes["NORMAL"] = accessor(unit.astype("<f4"), FLOAT, "VEC3", ARRAY_BUFFER)
        if part.uv is not None:
            flipped = np.column_stack([part.uv[:, 0], 1.0 - part.uv[:, 1]])  # glTF's v runs down
            attributes["TEXCOORD_0"] = accessor(flipped.astype("<f4"), FLOAT, "VEC2", ARRAY_BUFFER)
        if part.colours is not None:
            attributes["COLOR_0"] = accessor(
                part.colours.astype(np.uint8), UNSIGNED_BYTE, "VEC4", ARRAY_BUFFER, normalized=True
            )
        primitive = {
            "attributes": attributes,
            "indices": accessor(*_indices(part), "SCALAR", ELEMENT_ARRAY_BUFFER),
            "mode": TRIANGLES,
        }
        primitive["material"] = material(part.material or MATTE_WHITE)
        document["meshes"].append({"name": part.name, "primitives": [primitive]})
        document["nodes"].append({"name": part.name, "mesh": len(document["meshes"]) - 1})
        document["scenes"][0]["nodes"].append(len(document["nodes"]) - 1)
    if materials:
        document["materials"] = materials
    if images:
        document["images"] = images
        document["textures"] = [{"source": index} for index in range(len(images))]
    binary.extend(b"\0" * (-len(binary) % 4))
    document["buffers"] = [{"byteLength": len(binary)}]

    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    with path.open("wb") as stream:
        stream.write(struct.pack("<4sII", GLB_MAGIC, 2, 12 + 8 + len(text) + 8 + len(binary)))
        stream.write(struct.pack("<II", len(text), GLB_JSON_CHUNK) + text)
        stream.write(struct.pack("<II", len(binary), GLB_BINARY_CHUNK))
        stream.write(binary)
    return document


def _indices(part: Part) -> tuple[np.ndarray, int]:
    """16-bit indices where they suffice (glTF reserves each type's largest value)."""
    if len(part.vertices) < 0xFFFF:
        return part.faces.reshape(-1).astype("<u2"), UNSIGNED_SHORT
    return part.faces.reshape(-1).astype("<u4"), UNSIGNED_INT


def write_ply(parts: list[Part], path: Path) -> str | None:
    """All parts in one binary PLY with vertex colours: the source's, else sampled from the
    colour texture, else the material's colour. Returns where the colours came from."""
    import trimesh

    colours, origins = [], set()
    for part in parts:
        colour, origin = _ply_colours(part)
        colours.append(colour)
        origins.add(origin)
    offsets = np.cumsum([0] + [len(part.vertices) for part in parts])[:-1]
    with_normals = all(part.normals is not None for part in parts)
    mesh = trimesh.Trimesh(
        vertices=np.concatenate([part.vertices for part in parts]),
        faces=np.concatenate(
            [part.faces + offset for part, offset in zip(parts, offsets, strict=True)]
        ),
        vertex_normals=np.concatenate([part.normals for part in parts]) if with_normals else None,
        vertex_colors=None if origins == {None} else np.concatenate(colours),
        process=False,
    )
    path.write_bytes(mesh.export(file_type="ply", encoding="binary"))
    known = sorted(origin for origin in origins if origin)
    return ", ".join(known) or None


def _ply_colours(part: Part) -> tuple[np.ndarray, str | None]:
    from trimesh.visual.color import uv_to_color

    white = np.full((len(part.vertices), 4), 255, dtype=np.uint8)
    material = part.material
    factor = np.asarray(material.base_colour if material else (1.0, 1.0, 1.0, 1.0))
    if part.colours is not None:
        return part.colours, "vertex colours"
    if material and material.base_colour_texture is not None and part.uv is not None:
        sampled = uv_to_color(part.uv, material.base_colour_texture.image()).astype(np.float64)
        return np.clip(np.round(sampled * factor), 0, 255).astype(np.uint8), "texture"
    if material is not None and material.base_colour != (1.0, 1.0, 1.0, 1.0):
        return np.tile(np.round(factor * 255).astype(np.uint8), (len(part.vertices), 1)), (
            "material colour"
        )
    return white, None


# --- validation and the report ----------------------------------------------------------------


def validate(path: Path, source: Source, written: dict, stage: Stage) -> None:
    """The GLB read back by trimesh holds the vertices, faces and bounds that were read (within
    float32 rounding), and its images and UVs are where they should be."""
    import trimesh

    try:
        scene = trimesh.load(str(path), file_type="glb", process=False)
    except Exception as exc:
        raise ReconstructionFailed(f"the written master cannot be read back: {exc}") from exc
    meshes = [geometry for _name, geometry, _transform in _geometries(scene)]
    vertices = sum(len(mesh.vertices) for mesh in meshes)
    faces = sum(len(mesh.faces) for mesh in meshes)
    expected_vertices = sum(len(part.vertices) for part in source.parts)
    expected_faces = sum(len(part.faces) for part in source.parts)
    low, high = _bounds(source.parts)
    tolerance = 1e-6 * max(1.0, float(np.abs([low, high]).max()))
    bounds_match = bool(np.allclose(scene.bounds, [low, high], rtol=0, atol=tolerance))
    textured = sum(
        1
        for mesh in meshes
        if getattr(getattr(mesh.visual, "material", None), "baseColorTexture", None) is not None
    )
    expected_textured = sum(
        1 for part in source.parts if part.material and part.material.base_colour_texture
    )
    with_uv = sum(1 for mesh in meshes if getattr(mesh.visual, "uv", None) is not None)
    with_colours = sum(1 for mesh in meshes if _has_vertex_colours(mesh))
    stage.figures.update(
        vertices=vertices,
        faces=faces,
        bounds_match=bounds_match,
        images=len(written.get("images", [])),
        textured_parts=textured,
        parts_with_uv=with_uv,
        parts_with_vertex_colours=with_colours,
    )
    problems = []
    if (vertices, faces) != (expected_vertices, expected_faces):
        problems.append(
            f"{vertices} vertices and {faces} faces instead of "
            f"{expected_vertices} and {expected_faces}"
        )
    if not bounds_match:
        problems.append(
            f"bounds {scene.bounds.tolist()} instead of {[low.tolist(), high.tolist()]}"
        )
    if textured != expected_textured:
        problems.append(f"{textured} textured parts instead of {expected_textured}")
    if with_uv != sum(1 for part in source.parts if part.uv is not None):
        problems.append(f"UVs on {with_uv} parts only")
    if with_colours != sum(1 for part in source.parts if part.colours is not None):
        problems.append(f"vertex colours on {with_colours} parts only")
    if problems:
        raise ReconstructionFailed(
            "the written master does not hold what was read: " + "; ".join(problems)
        )


def _has_vertex_colours(mesh) -> bool:
    # trimesh keeps COLOR_0 beside a material as a vertex attribute, else as vertex colours
    visual = mesh.visual
    return visual.kind == "vertex" or "color" in getattr(visual, "vertex_attributes", {})


def _record_read(source: Source, stage: Stage) -> None:
    stage.figures.update(
        source_format=source.format,
        parts=len(source.parts),
        vertices=sum(len(part.vertices) for part in source.parts),
        faces=sum(len(part.faces) for part in source.parts),
        units=source.units,
        up_axis=source.up_axis or "unknown",
        meters_per_unit=source.meters_per_unit if source.format in USD_FORMATS else None,
        not_meshes_skipped=dict(source.not_meshes),
        warnings=source.warnings,
    )


def _record_written(source, written: dict, ply_colours, pending: dict, stage: Stage) -> None:
    low, high = _bounds(source.parts)
    parts = source.parts
    stage.figures.update(
        parts=len(parts),
        vertices=sum(len(part.vertices) for part in parts),
        faces=sum(len(part.faces) for part in parts),
        textures=len(written.get("images", [])),
        materials=len(written.get("materials", [])),
        has_uv=any(part.uv is not None for part in parts),
        has_vertex_colours=any(part.colours is not None for part in parts),
        has_normals=any(part.normals is not None for part in parts),
        bounds=[low.round(6).tolist(), high.round(6).tolist()],
        extent=(high - low).round(6).tolist(),
        units=source.units,
        ply_colours=ply_colours,
        bytes={name: pending[name].stat().st_size for name in MASTER_FILES},
    )


def _parser_message(exc: BaseException, model: Path) -> str:
    """A parser's complaint, short: USD's "Error in 'function' at line N in file F : 'text'"
    becomes its texts; the folder the upload was unpacked into is left out."""
    text = str(exc)
    if "Error in '" in text:
        texts = [
            part.split(" : '", 1)[1].strip().rstrip("'").strip()
            for part in text.split("Error in '")
            if " : '" in part
        ]
        text = "; ".join(dict.fromkeys(texts))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    return message.replace(f"{model.resolve().parent}/", "").replace(f"{model.parent}/", "")
