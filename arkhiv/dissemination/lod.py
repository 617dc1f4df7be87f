"""Levels of detail for web viewers, after the derivatives the Smithsonian's Voyager shows.

`levels_of_detail` reads an archived master `model.glb` and writes, next to each other:

    thumb.glb   ~5k faces, textures <= 256 px, always under 200 KB (the target shrinks until it is)
    low.glb     ~150k faces, textures <= 1024 px
    medium.glb  ~500k faces, textures <= 2048 px
    high.glb    the master's faces, textures <= 4096 px

plus, for every level, `<level>.draco.glb` (KHR_draco_mesh_compression) and `<level>.meshopt.glb`
(EXT_meshopt_compression over KHR_mesh_quantization).

Decisions:
- A level never has more faces than the master. Every level is still written, so a viewer
  document can always name the four files: one whose target is at or above the master's face
  count carries the master's full geometry and differs from the finer level only by its texture
  cap (`Level.decimated` is False for it).
- Levels are decimated in a chain, each from the next finer one, which is much faster on large
  masters than starting from the master every time and loses little at these ratios.
- Untextured meshes are decimated with fast-simplification (quadric error, optimal vertex
  placement). It drops vertex attributes, so each new vertex takes the mean colour of the
  original vertices that collapsed into it (replayed from the collapse record): a box filter
  that keeps the mean colour.
- Textured meshes are decimated with meshoptimizer's simplifier instead. UV seams split vertices,
  and fast-simplification treats each side of a seam as an independent border and tears it open
  (on a box-mapped bunny, 446 open edges became 3,937); meshoptimizer collapses the twins of a
  seam together and keeps original vertices, so UVs and colours stay exact.
- Textures are downscaled (Lanczos, never upscaled) and stored as JPEG unless they use alpha.
- Colours are copied byte for byte: whatever the master's COLOR_0 holds is what the levels hold.
"""

from __future__ import annotations

import io
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["COMPRESSIONS", "DEFAULT_LEVELS", "Level", "LevelSpec", "LodOptions", "levels_of_detail"]

COMPRESSIONS = ("draco", "meshopt")

BYTE, UNSIGNED_BYTE, UNSIGNED_SHORT, UNSIGNED_INT, FLOAT = 5120, 5121, 5123, 5125, 5126
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
LINEAR, LINEAR_MIPMAP_LINEAR, REPEAT = 9729, 9987, 10497
GENERATOR = "arkhiv levels of detail"


@dataclass(frozen=True)
class LevelSpec:
    """One level to write: `faces` None means the master's own detail."""

    name: str
    faces: int | None
    texture_px: int
    max_bytes: int | None = None


DEFAULT_LEVELS = (
    LevelSpec("thumb", 5_000, 256, max_bytes=200_000),
    LevelSpec("low", 150_000, 1024),
    LevelSpec("medium", 500_000, 2048),
    LevelSpec("high", None, 4096),
)


@dataclass(frozen=True)
class LodOptions:
    levels: tuple[LevelSpec, ...] = DEFAULT_LEVELS
    compressions: tuple[str, ...] = COMPRESSIONS
    jpeg_quality: int = 85
    # 14 bits keep a vertex within 1/32768 of the model's size, below what a web viewer shows
    draco_position_bits: int = 14
    draco_normal_bits: int = 10
    draco_level: int = 7


@dataclass(frozen=True)
class Level:
    """One file written. `seconds` covers decimation and writing for the uncompressed file, and
    encoding for a compressed variant."""

    name: str
    path: Path
    compression: str  # "none", "draco" or "meshopt"
    faces: int
    vertices: int
    bytes: int
    texture_px: tuple[int, int] | None
    seconds: float
    decimated: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "compression": self.compression,
            "faces": self.faces,
            "vertices": self.vertices,
            "bytes": self.bytes,
            "texture_px": list(self.texture_px) if self.texture_px else None,
            "seconds": round(self.seconds, 3),
            "decimated": self.decimated,
        }


@dataclass
class _Surface:
    positions: np.ndarray  # (n, 3) float64
    faces: np.ndarray  # (m, 3) int64
    uv: np.ndarray | None = None  # (n, 2) in glTF's convention (v grows downwards)
    colors: np.ndarray | None = None  # (n, 4) uint8


@dataclass
class _Look:
    image: Image.Image | None
    base_color: list[float]
    metallic: float
    roughness: float
    double_sided: bool
    alpha_mode: str | None = None
    alpha_cutoff: float | None = None


@dataclass
class _Texture:
    data: bytes
    mime: str
    size: tuple[int, int]


def levels_of_detail(master: Path, output: Path, options: LodOptions = LodOptions()) -> list[Level]:
    """Write every level (and its compressed variants) of `master` into `output`."""
    unknown = set(options.compressions) - set(COMPRESSIONS)
    if unknown:
        raise ValueError(f"unknown compression {sorted(unknown)}; known: {COMPRESSIONS}")
    output.mkdir(parents=True, exist_ok=True)
    surface, look = _load_master(Path(master))
    finer = _prepare(surface)  # the master less its degenerate and doubled faces
    master_faces = len(finer.faces)
    if master_faces == 0:
        raise ValueError(f"{master} holds no triangles")

    def target_of(spec: LevelSpec) -> int:
        return min(spec.faces or master_faces, master_faces)

    textures: dict[int, _Texture] = {}
    levels: list[Level] = []
    # finest first, so that each level is decimated from the one before it
    order = sorted(enumerate(options.levels), key=lambda item: (target_of(item[1]), item[0]))
    for _, spec in reversed(order):
        target = target_of(spec)
        texture_seconds = 0.0
        if look.image is not None and spec.texture_px not in textures:
            started = time.perf_counter()
            textures[spec.texture_px] = _encode_texture(
                look.image, spec.texture_px, options.jpeg_quality
            )
            texture_seconds = time.perf_counter() - started
        texture = textures.get(spec.texture_px)
        path = output / f"{spec.name}.glb"
        while True:
            started = time.perf_counter()
            current = finer if target >= len(finer.faces) else _prepare(_decimate(finer, target))
            normals = _vertex_normals(current)
            path.write_bytes(_plain_glb(current, normals, look, texture))
            seconds = time.perf_counter() - started + texture_seconds
            size = path.stat().st_size
            if spec.max_bytes is None or size <= spec.max_bytes or len(current.faces) < 100:
                break
            # geometry is what outgrows the budget: shrink it in proportion, with a margin
            target = int(len(current.faces) * spec.max_bytes / size * 0.9)
        decimated = len(current.faces) < master_faces
        texture_px = texture.size if texture else None
        levels.append(
            Level(
                name=spec.name,
                path=path,
                compression="none",
                faces=len(current.faces),
                vertices=len(current.positions),
                bytes=size,
                texture_px=texture_px,
                seconds=seconds,
                decimated=decimated,
            )
        )
        for compression in options.compressions:
            started = time.perf_counter()
            variant = output / f"{spec.name}.{compression}.glb"
            if compression == "draco":
                data, faces, vertices = _draco_glb(current, normals, look, texture, options)
            else:
                data, faces, vertices = _meshopt_glb(current, normals, look, texture)
            variant.write_bytes(data)
            levels.append(
                Level(
                    name=spec.name,
                    path=variant,
                    compression=compression,
                    faces=faces,
                    vertices=vertices,
                    bytes=len(data),
                    texture_px=texture_px,
                    seconds=time.perf_counter() - started,
                    decimated=decimated,
                )
            )
        finer = current
    return levels


# -- reading the master ------------------------------------------------------------------------


def _load_master(master: Path) -> tuple[_Surface, _Look]:
    import trimesh

    # process=False keeps the vertices that UV seams split
    scene = trimesh.load_scene(master, process=False)
    pieces = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
            pieces.append(_piece(geometry, transform))
    if not pieces:
        raise ValueError(f"{master} holds no triangles")
    images = {id(piece[2]) for piece in pieces}
    uv_kinds = {piece[0].uv is None for piece in pieces}
    if len(images) > 1 or len(uv_kinds) > 1:
        # several textures: trimesh packs them into one atlas (vertex colours are lost there)
        surface, look, _ = _piece(scene.to_mesh(), np.eye(4))
        return _weld(surface), look
    surfaces = [piece[0] for piece in pieces]
    colors = None
    if any(surface.colors is not None for surface in surfaces):
        colors = np.concatenate(
            [
                np.full((len(surface.positions), 4), 255, np.uint8)
                if surface.colors is None
                else surface.colors
                for surface in surfaces
            ]
        )
    offsets = np.cumsum([0] + [len(surface.positions) for surface in surfaces])
    combined = _Surface(
        positions=np.concatenate([surface.positions for surface in surfaces]),
        faces=np.concatenate(
            [s.faces + offset for s, offset in zip(surfaces, offsets, strict=False)]
        ),
        uv=None if surfaces[0].uv is None else np.concatenate([s.uv for s in surfaces]),
        colors=colors,
    )
    return _weld(combined), pieces[0][1]


def _piece(mesh: Any, transform: np.ndarray) -> tuple[_Surface, _Look, Any]:
    """One placed mesh of the scene, in the scene's frame, with its look and texture image."""
    positions = np.asarray(mesh.vertices, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if np.linalg.det(transform[:3, :3]) < 0:  # a mirroring node turns the faces inside out
        faces = faces[:, ::-1]
    visual = mesh.visual
    material = getattr(visual, "material", None)
    colors = _vertex_colours(visual, len(positions))
    image = None
    if material is not None:
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    uv = None
    if image is not None and getattr(visual, "uv", None) is not None:
        uv = np.array(visual.uv, dtype=np.float64)[:, :2]
        uv[:, 1] = 1.0 - uv[:, 1]  # trimesh flips v on load; glTF's v grows downwards
    else:
        image = None
    look = _Look(
        image=image,
        base_color=_base_color(material),
        metallic=_factor(material, "metallicFactor", 0.0),
        roughness=_factor(material, "roughnessFactor", 1.0),
        double_sided=bool(getattr(material, "doubleSided", False)),
        alpha_mode=getattr(material, "alphaMode", None),
        alpha_cutoff=getattr(material, "alphaCutoff", None),
    )
    return _Surface(positions, faces, uv, colors), look, image


def _vertex_colours(visual: Any, count: int) -> np.ndarray | None:
    """COLOR_0 as RGBA bytes; trimesh files it under the material's visual when there is one."""
    if visual.kind == "vertex":
        return np.asarray(visual.vertex_colors, dtype=np.uint8)
    stored = getattr(visual, "vertex_attributes", {}).get("color")
    if stored is None or len(stored) != count:
        return None
    stored = np.asarray(stored)
    if stored.dtype.kind == "f":
        stored = np.rint(np.clip(stored, 0.0, 1.0) * 255.0)
    elif stored.dtype == np.uint16:
        stored = np.rint(stored / 257.0)
    colors = np.full((count, 4), 255, dtype=np.uint8)
    colors[:, : min(stored.shape[1], 4)] = stored[:, :4]
    return colors


def _base_color(material: Any) -> list[float]:
    factor = getattr(material, "baseColorFactor", None)
    if factor is None:
        return [1.0, 1.0, 1.0, 1.0]
    factor = np.asarray(factor, dtype=np.float64).ravel()
    if factor.max() > 1.0:  # trimesh keeps factors as 0-255
        factor = factor / 255.0
    return [round(float(value), 6) for value in factor[:4]]


def _factor(material: Any, name: str, default: float) -> float:
    # captured surfaces are not metallic: without a stated factor, write a matte dielectric
    value = getattr(material, name, None)
    return default if value is None else float(value)


def _weld(surface: _Surface) -> _Surface:
    """Merge vertices that are written identically (float32) in every attribute they carry.

    Without UVs only the position counts: the quadric decimator needs a connected surface, and
    a colour seam on a scan is noise."""
    columns = [surface.positions.astype(np.float32)]
    if surface.uv is not None:
        columns.append(surface.uv.astype(np.float32))
        if surface.colors is not None:
            columns.append(surface.colors.view(np.float32))  # four bytes: compared, not read
    rows = np.ascontiguousarray(np.hstack(columns))
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, unique, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return _Surface(
        positions=surface.positions[unique],
        faces=inverse.ravel()[surface.faces],
        uv=None if surface.uv is None else surface.uv[unique],
        colors=None if surface.colors is None else surface.colors[unique],
    )


# -- decimation --------------------------------------------------------------------------------


def _decimate(surface: _Surface, target: int) -> _Surface:
    if surface.uv is not None:
        return _decimate_seam_aware(surface, target)
    return _decimate_quadric(surface, target)


def _decimate_quadric(surface: _Surface, target: int) -> _Surface:
    import fast_simplification

    points, faces, collapses = fast_simplification.simplify(
        surface.positions, surface.faces, target_count=target, return_collapses=True
    )
    colors = None
    if surface.colors is not None:
        # the replay yields, for every original vertex, the vertex it collapsed into
        _, _, into = fast_simplification.replay_simplification(
            surface.positions, surface.faces, collapses
        )
        colors = _group_mean(surface.colors, into, len(points))
    # the decimator can leave two vertices on one spot: welding them shows the faces between
    # them to be degenerate, and _prepare drops those (Draco would drop them on its own)
    return _weld(
        _Surface(np.asarray(points, np.float64), np.asarray(faces, np.int64), colors=colors)
    )


def _group_mean(values: np.ndarray, groups: np.ndarray, count: int) -> np.ndarray:
    members = np.maximum(np.bincount(groups, minlength=count), 1)
    means = [
        np.bincount(groups, weights=values[:, channel], minlength=count) / members
        for channel in range(values.shape[1])
    ]
    return np.clip(np.rint(np.stack(means, axis=1)), 0, 255).astype(np.uint8)


def _decimate_seam_aware(surface: _Surface, target: int) -> _Surface:
    import meshoptimizer

    indices = surface.faces.astype(np.uint32).ravel()
    kept = np.empty_like(indices)
    # an error bound of 1.0 (the whole model) lets the face target alone decide
    count = meshoptimizer.simplify(
        kept,
        indices,
        surface.positions.astype(np.float32),
        target_index_count=target * 3,
        target_error=1.0,
    )
    return _Surface(
        surface.positions, kept[:count].reshape(-1, 3).astype(np.int64), surface.uv, surface.colors
    )


def _prepare(surface: _Surface) -> _Surface:
    """Drop collapsed faces and unused vertices; order both for the GPU cache and the codecs."""
    import meshoptimizer

    faces = surface.faces
    faces = faces[
        (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    ]
    # a face twice over (same corners, either winding) is dropped by Draco: drop it everywhere
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    indices = faces.astype(np.uint32).ravel()
    ordered = np.empty_like(indices)
    meshoptimizer.optimize_vertex_cache(ordered, indices, len(indices), len(surface.positions))
    # vertices in order of first use, which also drops the unreferenced ones
    used, first = np.unique(ordered, return_index=True)
    order = used[np.argsort(first)]
    remap = np.empty(len(surface.positions), dtype=np.int64)
    remap[order] = np.arange(len(order))
    return _Surface(
        positions=surface.positions[order],
        faces=remap[ordered.astype(np.int64)].reshape(-1, 3),
        uv=None if surface.uv is None else surface.uv[order],
        colors=None if surface.colors is None else surface.colors[order],
    )


def _vertex_normals(surface: _Surface) -> np.ndarray:
    """Area-weighted normals, shared across UV seams so that seams do not show in the shading."""
    from trimesh.grouping import unique_rows

    _, spot = unique_rows(surface.positions)
    corners = surface.positions[surface.faces]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    spots = spot[surface.faces].ravel()
    summed = np.stack(
        [
            np.bincount(
                spots, weights=np.repeat(face_normals[:, axis], 3), minlength=spot.max() + 1
            )
            for axis in range(3)
        ],
        axis=1,
    )[spot]
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    normals = np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)
    normals[length[:, 0] == 0] = (0.0, 0.0, 1.0)
    return normals


def _encode_texture(image: Image.Image, cap: int, quality: int) -> _Texture:
    from PIL import Image as PILImage

    width, height = image.size
    if max(width, height) > cap:
        scale = cap / max(width, height)
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))),
            PILImage.Resampling.LANCZOS,
        )
    buffer = io.BytesIO()
    if image.mode in ("RGBA", "LA", "P") and _uses_alpha(image):
        image.save(buffer, format="PNG", optimize=True)
        return _Texture(buffer.getvalue(), "image/png", image.size)
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return _Texture(buffer.getvalue(), "image/jpeg", image.size)


def _uses_alpha(image: Image.Image) -> bool:
    rgba = image.convert("RGBA")
    return rgba.getchannel("A").getextrema()[0] < 255


# -- writing glTF binaries ---------------------------------------------------------------------


class _Glb:
    """A single-mesh glTF 2.0 binary being assembled."""

    def __init__(self) -> None:
        self.gltf: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": GENERATOR},
            "buffers": [],
            "bufferViews": [],
            "accessors": [],
        }
        self.binary = bytearray()
        self.extensions: set[str] = set()

    def append(self, data: bytes) -> int:
        """Append data to the binary chunk at a 4-byte boundary; return its offset."""
        self.binary += b"\0" * (-len(self.binary) % 4)
        offset = len(self.binary)
        self.binary += data
        return offset

    def view(self, data: bytes, target: int | None = None) -> int:
        view: dict[str, Any] = {"buffer": 0, "byteOffset": self.append(data)}
        view["byteLength"] = len(data)
        if target is not None:
            view["target"] = target
        return self.add("bufferViews", view)

    def accessor(
        self,
        view: int | None,
        component: int,
        count: int,
        kind: str,
        *,
        normalized: bool = False,
        bounds: np.ndarray | None = None,
    ) -> int:
        accessor: dict[str, Any] = {"componentType": component, "count": int(count), "type": kind}
        if view is not None:
            accessor["bufferView"] = view
        if normalized:
            accessor["normalized"] = True
        if bounds is not None and len(bounds):
            as_number = float if component == FLOAT else int
            accessor["min"] = [as_number(value) for value in bounds.min(axis=0)]
            accessor["max"] = [as_number(value) for value in bounds.max(axis=0)]
        return self.add("accessors", accessor)

    def add(self, kind: str, item: dict[str, Any]) -> int:
        self.gltf.setdefault(kind, []).append(item)
        return len(self.gltf[kind]) - 1

    def finish(
        self,
        primitive: dict[str, Any],
        look: _Look,
        texture: _Texture | None,
        node: dict[str, Any] | None = None,
        required: tuple[str, ...] = (),
    ) -> bytes:
        pbr: dict[str, Any] = {
            "baseColorFactor": look.base_color,
            "metallicFactor": look.metallic,
            "roughnessFactor": look.roughness,
        }
        if texture is not None:
            image = self.view(texture.data)
            self.gltf["images"] = [{"bufferView": image, "mimeType": texture.mime}]
            self.gltf["samplers"] = [
                {
                    "magFilter": LINEAR,
                    "minFilter": LINEAR_MIPMAP_LINEAR,
                    "wrapS": REPEAT,
                    "wrapT": REPEAT,
                }
            ]
            self.gltf["textures"] = [{"sampler": 0, "source": 0}]
            pbr["baseColorTexture"] = {"index": 0}
        material: dict[str, Any] = {"pbrMetallicRoughness": pbr}
        if look.double_sided:
            material["doubleSided"] = True
        if look.alpha_mode in ("MASK", "BLEND"):
            material["alphaMode"] = look.alpha_mode
            if look.alpha_mode == "MASK" and look.alpha_cutoff is not None:
                material["alphaCutoff"] = float(look.alpha_cutoff)
        self.gltf["materials"] = [material]
        primitive["material"] = 0
        primitive["mode"] = 4  # triangles
        self.gltf["meshes"] = [{"primitives": [primitive]}]
        self.gltf["nodes"] = [{"mesh": 0, **(node or {})}]
        self.gltf["scenes"] = [{"nodes": [0]}]
        self.gltf["scene"] = 0
        self.gltf["buffers"].insert(0, {"byteLength": len(self.binary)})
        if self.extensions:
            self.gltf["extensionsUsed"] = sorted(self.extensions)
        if required:
            self.gltf["extensionsRequired"] = sorted(required)
        return _glb_bytes(self.gltf, bytes(self.binary))


def _glb_bytes(gltf: dict[str, Any], binary: bytes) -> bytes:
    document = json.dumps(gltf, separators=(",", ":")).encode()
    document += b" " * (-len(document) % 4)
    binary += b"\0" * (-len(binary) % 4)
    length = 12 + 8 + len(document) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<4sII", b"glTF", 2, length),
            struct.pack("<I4s", len(document), b"JSON"),
            document,
            struct.pack("<I4s", len(binary), b"BIN\0"),
            binary,
        ]
    )


def _index_type(vertices: int) -> tuple[int, type]:
    return (UNSIGNED_SHORT, np.uint16) if vertices <= 65535 else (UNSIGNED_INT, np.uint32)


def _plain_glb(
    surface: _Surface, normals: np.ndarray, look: _Look, texture: _Texture | None
) -> bytes:
    glb = _Glb()
    n = len(surface.positions)
    positions = surface.positions.astype(np.float32)
    attributes = {
        "POSITION": glb.accessor(
            glb.view(positions.tobytes(), ARRAY_BUFFER), FLOAT, n, "VEC3", bounds=positions
        ),
        "NORMAL": glb.accessor(
            glb.view(normals.astype(np.float32).tobytes(), ARRAY_BUFFER), FLOAT, n, "VEC3"
        ),
    }
    if texture is not None and surface.uv is not None:
        uv = surface.uv.astype(np.float32).tobytes()
        attributes["TEXCOORD_0"] = glb.accessor(glb.view(uv, ARRAY_BUFFER), FLOAT, n, "VEC2")
    if surface.colors is not None:
        colors = surface.colors.tobytes()
        attributes["COLOR_0"] = glb.accessor(
            glb.view(colors, ARRAY_BUFFER), UNSIGNED_BYTE, n, "VEC4", normalized=True
        )
    component, dtype = _index_type(n)
    indices = surface.faces.astype(dtype).tobytes()
    primitive = {
        "attributes": attributes,
        "indices": glb.accessor(
            glb.view(indices, ELEMENT_ARRAY_BUFFER), component, surface.faces.size, "SCALAR"
        ),
    }
    return glb.finish(primitive, look, texture)


def _draco_glb(
    surface: _Surface,
    normals: np.ndarray,
    look: _Look,
    texture: _Texture | None,
    options: LodOptions,
) -> tuple[bytes, int, int]:
    import DracoPy

    extra: dict[str, Any] = {"normals": normals}
    textured = texture is not None and surface.uv is not None
    if textured:
        extra["tex_coord"] = surface.uv
        # enough bits to address a quarter texel of the level's texture
        extra["tex_coord_quantization_bits"] = max(12, int(np.ceil(np.log2(max(texture.size)))) + 2)
    if surface.colors is not None:
        extra["colors"] = surface.colors
    encoded = DracoPy.encode(
        surface.positions,
        surface.faces.astype(np.uint32),
        quantization_bits=options.draco_position_bits,
        compression_level=options.draco_level,
        normal_quantization_bits=options.draco_normal_bits,
        **extra,
    )
    # Draco reorders and may reweld vertices: the counts, bounds and attribute ids a viewer
    # needs are those of the decoded data, and decoding here proves the file decodes
    decoded = DracoPy.decode(encoded)
    ids = {attribute["attribute_type"]: attribute["unique_id"] for attribute in decoded.attributes}
    kinds = DracoPy.AttributeType
    n, faces = len(decoded.points), len(decoded.faces)
    glb = _Glb()
    glb.extensions.add("KHR_draco_mesh_compression")
    attributes = {
        "POSITION": glb.accessor(
            None, FLOAT, n, "VEC3", bounds=np.asarray(decoded.points, dtype=np.float32)
        ),
        "NORMAL": glb.accessor(None, FLOAT, n, "VEC3"),
    }
    mapping = {"POSITION": ids[kinds.POSITION], "NORMAL": ids[kinds.NORMAL]}
    if textured:
        attributes["TEXCOORD_0"] = glb.accessor(None, FLOAT, n, "VEC2")
        mapping["TEXCOORD_0"] = ids[kinds.TEX_COORD]
    if surface.colors is not None:
        attributes["COLOR_0"] = glb.accessor(None, UNSIGNED_BYTE, n, "VEC4", normalized=True)
        mapping["COLOR_0"] = ids[kinds.COLOR]
    component, _ = _index_type(n)
    primitive = {
        "attributes": attributes,
        "indices": glb.accessor(None, component, faces * 3, "SCALAR"),
        "extensions": {
            "KHR_draco_mesh_compression": {
                "bufferView": glb.view(encoded),
                "attributes": mapping,
            }
        },
    }
    data = glb.finish(primitive, look, texture, required=("KHR_draco_mesh_compression",))
    return data, faces, n


def _meshopt_glb(
    surface: _Surface, normals: np.ndarray, look: _Look, texture: _Texture | None
) -> tuple[bytes, int, int]:
    """Quantize (KHR_mesh_quantization), then compress every geometry view with meshoptimizer."""
    import meshoptimizer

    n = len(surface.positions)
    glb = _Glb()
    glb.extensions.update(("EXT_meshopt_compression", "KHR_mesh_quantization"))
    fallback_length = 0

    def compressed_view(raw: np.ndarray, stride: int, mode: str, target: int) -> int:
        """A bufferView whose bytes live only compressed; its fallback buffer holds no data."""
        nonlocal fallback_length
        raw = np.ascontiguousarray(raw)
        count = raw.size if mode == "TRIANGLES" else len(raw)
        if mode == "TRIANGLES":
            # the bitstream does not depend on the index width; byteStride sets the output
            meshoptimizer.encode_index_version(1)
            encoded = meshoptimizer.encode_index_buffer(raw.astype(np.uint32).ravel(), count, n)
        else:
            meshoptimizer.encode_vertex_version(0)  # EXT_meshopt_compression reads version 0
            encoded = meshoptimizer.encode_vertex_buffer(raw, count, stride)
        offset = glb.append(encoded)
        fallback_length += -fallback_length % 4
        view: dict[str, Any] = {
            "buffer": 1,
            "byteOffset": fallback_length,
            "byteLength": stride * count,
            "target": target,
            "extensions": {
                "EXT_meshopt_compression": {
                    "buffer": 0,
                    "byteOffset": offset,
                    "byteLength": len(encoded),
                    "byteStride": stride,
                    "mode": mode,
                    "count": count,
                }
            },
        }
        if mode == "ATTRIBUTES":
            view["byteStride"] = stride
        fallback_length += stride * count
        return glb.add("bufferViews", view)

    # positions on a 16-bit grid over the largest extent; the node scales them back uniformly,
    # which leaves the normals valid
    origin = surface.positions.min(axis=0)
    step = float(np.ptp(surface.positions, axis=0).max()) / 65535.0 or 1.0
    grid = np.zeros((n, 4), dtype=np.uint16)  # padded to the 4-byte stride attributes need
    grid[:, :3] = np.clip(np.rint((surface.positions - origin) / step), 0, 65535)
    attributes = {
        "POSITION": glb.accessor(
            compressed_view(grid, 8, "ATTRIBUTES", ARRAY_BUFFER),
            UNSIGNED_SHORT,
            n,
            "VEC3",
            bounds=grid[:, :3],
        )
    }
    packed_normals = np.zeros((n, 4), dtype=np.int8)
    packed_normals[:, :3] = np.clip(np.rint(normals * 127.0), -127, 127)
    attributes["NORMAL"] = glb.accessor(
        compressed_view(packed_normals, 4, "ATTRIBUTES", ARRAY_BUFFER),
        BYTE,
        n,
        "VEC3",
        normalized=True,
    )
    if texture is not None and surface.uv is not None:
        if surface.uv.min() >= 0.0 and surface.uv.max() <= 1.0:
            uv = np.rint(surface.uv * 65535.0).astype(np.uint16)
            view = compressed_view(uv, 4, "ATTRIBUTES", ARRAY_BUFFER)
            attributes["TEXCOORD_0"] = glb.accessor(
                view, UNSIGNED_SHORT, n, "VEC2", normalized=True
            )
        else:  # repeating UVs do not fit a normalized integer
            view = compressed_view(surface.uv.astype(np.float32), 8, "ATTRIBUTES", ARRAY_BUFFER)
            attributes["TEXCOORD_0"] = glb.accessor(view, FLOAT, n, "VEC2")
    if surface.colors is not None:
        attributes["COLOR_0"] = glb.accessor(
            compressed_view(surface.colors, 4, "ATTRIBUTES", ARRAY_BUFFER),
            UNSIGNED_BYTE,
            n,
            "VEC4",
            normalized=True,
        )
    component, dtype = _index_type(n)
    indices = surface.faces.astype(dtype)
    primitive = {
        "attributes": attributes,
        "indices": glb.accessor(
            compressed_view(indices, np.dtype(dtype).itemsize, "TRIANGLES", ELEMENT_ARRAY_BUFFER),
            component,
            indices.size,
            "SCALAR",
        ),
    }
    glb.gltf["buffers"].append(
        {
            "byteLength": fallback_length + (-fallback_length % 4),
            "extensions": {"EXT_meshopt_compression": {"fallback": True}},
        }
    )
    node = {"translation": [float(value) for value in origin], "scale": [step] * 3}
    data = glb.finish(
        primitive,
        look,
        texture,
        node=node,
        required=("EXT_meshopt_compression", "KHR_mesh_quantization"),
    )
    return data, len(surface.faces), n
