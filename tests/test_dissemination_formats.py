"""Round trips of dissemination exports: every format written from a glTF or point cloud master
and read back, by another library than the one that wrote it wherever one exists, for its
vertex and face counts, bounds and colours."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import warnings
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open3d as o3d
import PIL.Image as PIL_Image
import pytest
import trimesh

from arkhiv.dissemination.formats import (
    CLOUD,
    FOLDER,
    FORMATS,
    MESH,
    ExportError,
    ExportResult,
    export,
    formats_for,
    zip_export,
)
from tests.conftest import require

BUNNY = Path("3d-models/bunny-multiformat/bunny.glb")
MESH_FORMATS = [fmt.name for fmt in formats_for(MESH)]
CLOUD_FORMATS = [fmt.name for fmt in formats_for(CLOUD)]
# What each format does to vertices: kept as indexed, or one per triangle corner (STL)
CORNERS = {"stl"}
COLOURED = {"glb", "gltf", "obj", "ply", "ply-ascii", "off", "dae", "3mf", "usdz", "x3d", "fbx"}
TEXTURED = {"glb", "gltf", "obj", "dae", "3mf", "usdz", "x3d", "fbx"}
SECRET = b"Somewhere-Secret-42"


@dataclass
class ReadBack:
    vertices: int
    faces: int
    bounds: np.ndarray  # (2, 3)
    colour_mean: np.ndarray | None = None  # RGB, 0..255
    texture: np.ndarray | None = None  # RGBA pixels of the base colour texture
    corners: np.ndarray | None = None  # x y z u v of every textured triangle corner, v up


@dataclass
class Master:
    path: Path
    vertices: int
    faces: int
    bounds: np.ndarray
    colour_mean: np.ndarray | None = None
    texture: np.ndarray | None = None
    corners: np.ndarray | None = None


def textured_corners(vertices, faces, uv) -> np.ndarray:
    """Position and UV (v up) of each triangle corner."""
    corners = np.asarray(faces).reshape(-1)
    return np.column_stack([np.asarray(vertices)[corners], np.asarray(uv)[corners, :2]])


# --- masters -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coloured(tmp_path_factory) -> Master:
    """An icosphere with a colour of its own at every vertex."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.25)
    rng = np.random.default_rng(7)
    colours = rng.integers(0, 256, (len(sphere.vertices), 4), dtype=np.uint8)
    colours[:, 3] = 255
    sphere.visual = trimesh.visual.ColorVisuals(sphere, vertex_colors=colours)
    path = tmp_path_factory.mktemp("coloured") / "model.glb"
    path.write_bytes(sphere.export(file_type="glb"))
    return Master(
        path,
        len(sphere.vertices),
        len(sphere.faces),
        sphere.bounds,
        colours[:, :3].mean(axis=0),
    )


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> Master:
    """A box with a corner of its own per face and a PNG texture over it."""
    box = trimesh.creation.box(extents=(0.3, 0.2, 0.1))
    box = trimesh.Trimesh(
        box.vertices[box.faces.reshape(-1)], np.arange(36).reshape(-1, 3), process=False
    )
    rng = np.random.default_rng(3)
    uv = rng.uniform(0.05, 0.95, (36, 2))
    pixels = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    image = PIL_Image.fromarray(pixels, "RGBA")
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0)
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    path = tmp_path_factory.mktemp("textured") / "model.glb"
    path.write_bytes(box.export(file_type="glb"))
    corners = textured_corners(box.vertices, box.faces, uv)
    return Master(path, 36, 12, box.bounds, texture=pixels, corners=corners)


@pytest.fixture(scope="module")
def bunny(corpora) -> Master:
    path = corpora / BUNNY
    require("corpora", None if path.is_file() else f"{path} is missing")
    loaded = trimesh.load(str(path), force="mesh", process=False)
    return Master(path, len(loaded.vertices), len(loaded.faces), loaded.bounds)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory) -> Master:
    rng = np.random.default_rng(11)
    points = rng.normal(0.0, 0.4, (5000, 3)) + np.array([0.5, -0.25, 2.0])
    colours = rng.integers(0, 256, (5000, 4), dtype=np.uint8)
    colours[:, 3] = 255
    path = tmp_path_factory.mktemp("cloud") / "scan.ply"
    path.write_bytes(trimesh.PointCloud(points, colors=colours).export(file_type="ply"))
    stored = trimesh.load(str(path), process=False)  # as written: single precision
    bounds = np.array([stored.vertices.min(axis=0), stored.vertices.max(axis=0)])
    return Master(path, len(points), 0, bounds, colours[:, :3].mean(axis=0))


# --- readers -------------------------------------------------------------------------------------


def read_with_trimesh(path: Path, **options) -> ReadBack:
    scene = trimesh.load(str(path), force="scene", process=False, **options)
    meshes = scene.dump()
    colours, texture, corners = [], None, []
    for mesh in meshes:
        visual = mesh.visual
        if visual.kind == "vertex":
            colours.append(np.asarray(visual.vertex_colors)[:, :3])
        elif visual.kind == "texture":
            image = getattr(visual.material, "baseColorTexture", None)
            image = image if image is not None else getattr(visual.material, "image", None)
            if image is not None:
                texture = np.asarray(image.convert("RGBA"))
            if visual.uv is not None and len(visual.uv) == len(mesh.vertices):
                corners.append(textured_corners(mesh.vertices, mesh.faces, visual.uv))
    return ReadBack(
        sum(len(mesh.vertices) for mesh in meshes),
        sum(len(mesh.faces) for mesh in meshes),
        scene.bounds,
        np.concatenate(colours).mean(axis=0) if colours else None,
        texture,
        np.concatenate(corners) if corners else None,
    )


def read_with_open3d(path: Path) -> ReadBack:
    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    vertices = np.asarray(mesh.vertices)
    colours = np.asarray(mesh.vertex_colors) * 255 if mesh.has_vertex_colors() else None
    texture = None
    for image in mesh.textures:  # one per material, empty where it has no texture
        pixels = np.asarray(image)
        if pixels.ndim == 3:
            alpha = np.full(pixels.shape[:2], 255, np.uint8)
            texture = pixels if pixels.shape[-1] == 4 else np.dstack([pixels, alpha])
    corners = None
    if mesh.has_triangle_uvs():
        uv = np.asarray(mesh.triangle_uvs)
        triangles = np.asarray(mesh.triangles).reshape(-1)
        corners = np.column_stack([vertices[triangles], uv])
    return ReadBack(
        len(vertices),
        len(np.asarray(mesh.triangles)),
        np.array([vertices.min(axis=0), vertices.max(axis=0)]),
        None if colours is None else colours.mean(axis=0),
        texture,
        corners,
    )


def read_obj(path: Path) -> ReadBack:
    read = read_with_open3d(path)
    if read.texture is not None:  # open3d holds OBJ textures bottom row first
        read.texture = read.texture[::-1]
    return read


def read_3mf(path: Path) -> ReadBack:
    """trimesh for the geometry placed by the build, the XML itself for the colour groups."""
    placed = read_with_trimesh(path)
    with zipfile.ZipFile(path) as package:
        model = ElementTree.fromstring(package.read("3D/3dmodel.model"))
        textures = [name for name in package.namelist() if name.startswith("3D/Textures/")]
        texture = _pixels(package.read(textures[0])) if textures else None
    assert model.get("unit") == "meter"
    colours = [
        [int(element.get("color")[i : i + 2], 16) for i in (1, 3, 5)]
        for element in model.iter(
            "{http://schemas.microsoft.com/3dmanufacturing/material/2015/02}color"
        )
    ]
    placed.colour_mean = np.mean(colours, axis=0) if colours else None
    placed.texture = texture
    material = "{http://schemas.microsoft.com/3dmanufacturing/material/2015/02}"
    core = "{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}"
    group = model.find(f".//{material}texture2dgroup")
    if group is not None:  # one textured object: its own coordinates, before the build turns it
        uv = [(float(c.get("u")), float(c.get("v"))) for c in group.iter(f"{material}tex2coord")]
        vertices = [[float(v.get(axis)) for axis in "xyz"] for v in model.iter(f"{core}vertex")]
        triangles = list(model.iter(f"{core}triangle"))
        at = [[int(t.get(key)) for key in ("v1", "v2", "v3")] for t in triangles]
        texel = [[int(t.get(key)) for key in ("p1", "p2", "p3")] for t in triangles]
        corners = np.asarray(at).reshape(-1)
        placed.corners = np.column_stack(
            [np.asarray(vertices)[corners], np.asarray(uv)[np.asarray(texel).reshape(-1)]]
        )
    return placed


def read_dae(path: Path) -> ReadBack:
    """pycollada's parser (trimesh, which also reads through it, leaves vertex colours out)."""
    import collada

    document = collada.Collada(str(path))
    vertices, faces, colours, texture, corners = [], 0, [], None, []
    with warnings.catch_warnings():  # pycollada places geometry with numpy.matrix
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        primitives = [
            primitive
            for geometry in document.scene.objects("geometry")
            for primitive in geometry.primitives()
        ]
    for primitive in primitives:
        vertices.append(np.asarray(primitive.vertex))
        faces += len(primitive.vertex_index)
        if primitive.texcoordset:
            positions = np.asarray(primitive.vertex)[np.asarray(primitive.vertex_index)]
            uv = np.asarray(primitive.texcoordset[0])[np.asarray(primitive.texcoord_indexset[0])]
            corners.append(np.column_stack([positions.reshape(-1, 3), uv.reshape(-1, 2)]))
        for _, _, _, _, values in primitive.original.sources.get("COLOR", []):
            colours.append(np.asarray(values)[:, :3] * 255)
        diffuse = primitive.material.effect.diffuse if primitive.material else None
        if isinstance(diffuse, collada.material.Map):
            texture = _pixels((path.parent / diffuse.sampler.surface.image.path).read_bytes())
    every = np.concatenate(vertices)
    return ReadBack(
        len(every),
        faces,
        np.array([every.min(axis=0), every.max(axis=0)]),
        np.concatenate(colours).mean(axis=0) if colours else None,
        texture,
        np.concatenate(corners) if corners else None,
    )


def read_usdz(path: Path) -> ReadBack:
    """usd-core reading the package, after its own validators have found nothing to say."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(path))
    try:
        from pxr import UsdValidation
    except ImportError:  # usd-core before 25.x has no validation framework in Python
        UsdValidation = None
    if UsdValidation is not None:
        validators = UsdValidation.ValidationRegistry().GetOrLoadAllValidators()
        problems = UsdValidation.ValidationContext(validators).Validate(stage)
        assert not problems, [problem.GetMessage() for problem in problems]
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    vertices, faces, colours, corners = [], 0, [], []
    for prim in stage.Traverse():
        if not prim.IsA(UsdGeom.Mesh):
            continue
        shape = UsdGeom.Mesh(prim)
        points = np.asarray(shape.GetPointsAttr().Get())
        vertices.append(points)
        counts = np.asarray(shape.GetFaceVertexCountsAttr().Get())
        assert set(counts.tolist()) == {3}
        faces += len(counts)
        st = UsdGeom.PrimvarsAPI(shape).GetPrimvar("st")
        if st:
            at = np.asarray(shape.GetFaceVertexIndicesAttr().Get())
            corners.append(textured_corners(points, at, np.asarray(st.Get())))
        display = UsdGeom.PrimvarsAPI(shape).GetPrimvar("displayColor")
        if display.GetInterpolation() == UsdGeom.Tokens.vertex:
            colours.append(np.asarray(display.Get()) * 255)
    with zipfile.ZipFile(path) as package:
        images = [name for name in package.namelist() if name.endswith((".png", ".jpg"))]
        texture = _pixels(package.read(images[0])) if images else None
    every = np.concatenate(vertices)
    return ReadBack(
        len(every),
        faces,
        np.array([every.min(axis=0), every.max(axis=0)]),
        np.concatenate(colours).mean(axis=0) if colours else None,
        texture,
        np.concatenate(corners) if corners else None,
    )


def read_x3d(path: Path) -> ReadBack:
    """The standard library's XML parser, not lxml, which wrote it."""
    scene = ElementTree.parse(path).getroot()
    vertices, faces, colours, texture, corners = [], 0, [], None, []
    for face_set in scene.iter("IndexedFaceSet"):
        points = np.array(face_set.find("Coordinate").get("point").split(), float).reshape(-1, 3)
        vertices.append(points)
        at = np.array(face_set.get("coordIndex").split(), int)
        faces += int((at == -1).sum())
        coordinates = face_set.find("TextureCoordinate")
        if coordinates is not None:  # indexed by coordIndex, as no texCoordIndex is given
            uv = np.array(coordinates.get("point").split(), float).reshape(-1, 2)
            corners.append(textured_corners(points, at[at >= 0], uv))
        for tag, width in (("Color", 3), ("ColorRGBA", 4)):
            node = face_set.find(tag)
            if node is not None:
                values = np.array(node.get("color").split(), float).reshape(-1, width)
                colours.append(values[:, :3] * 255)
    for image in scene.iter("ImageTexture"):
        texture = _pixels((path.parent / image.get("url").strip('"')).read_bytes())
    every = np.concatenate(vertices)
    return ReadBack(
        len(every),
        faces,
        np.array([every.min(axis=0), every.max(axis=0)]),
        np.concatenate(colours).mean(axis=0) if colours else None,
        texture,
        np.concatenate(corners) if corners else None,
    )


def read_fbx(path: Path) -> ReadBack:
    """assimp's importer: its statistics, and the mesh it writes as PLY for the colours."""
    info = subprocess.run(["assimp", "info", str(path)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr or info.stdout

    def figure(label: str) -> str:
        return re.search(rf"^{label}\s*(.+)$", info.stdout, re.MULTILINE).group(1).strip()

    data = path.read_bytes()
    unit = data.index(b"UnitScaleFactor")
    assert b"D" + struct.pack("<d", 100.0) in data[unit : unit + 80], "FBX not declared in metres"
    low = np.array(figure(r"Minimum point").strip("()").split(), float)
    high = np.array(figure(r"Maximum point").strip("()").split(), float)
    back = path.with_name(path.stem + "-read.ply")
    run = subprocess.run(["assimp", "export", str(path), str(back), "-fply"], capture_output=True)
    assert run.returncode == 0
    read = trimesh.load(str(back), process=False)
    colours, corners = None, None
    if read.visual.kind == "vertex":
        colours = np.asarray(read.visual.vertex_colors)[:, :3].astype(float)
    if getattr(read.visual, "uv", None) is not None:
        corners = textured_corners(read.vertices, read.faces, read.visual.uv)
    texture = None
    if int(figure(r"Textures \(embed\.\):")) > 0:
        texture = _embedded_fbx_texture(path)
    return ReadBack(
        int(figure("Vertices:")),
        int(figure("Faces:")),
        np.array([low, high]),
        None if colours is None else colours.mean(axis=0),
        texture,
        corners,
    )


def _embedded_fbx_texture(path: Path) -> np.ndarray:
    folder = path.parent / f"{path.stem}-textures"
    folder.mkdir(exist_ok=True)
    subprocess.run(["assimp", "extract", str(path), str(folder / "texture")], capture_output=True)
    images = sorted(folder.iterdir())
    return _pixels(images[0].read_bytes())


def _pixels(data: bytes) -> np.ndarray:
    with PIL_Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGBA"))


def main_file(result: ExportResult) -> Path:
    if result.format.layout != FOLDER:
        return result.output
    return next(path for path in result.files if path.suffix == result.format.suffix)


MESH_READERS: dict[str, Callable[[Path], ReadBack]] = {
    "glb": read_with_trimesh,
    "gltf": read_with_trimesh,
    "obj": read_obj,
    "ply": read_with_open3d,
    "ply-ascii": read_with_open3d,
    "stl": read_with_open3d,
    "off": read_with_open3d,
    "dae": read_dae,
    "3mf": read_3mf,
    "usdz": read_usdz,
    "x3d": read_x3d,
    "fbx": read_fbx,
}


def export_and_read(master: Master, fmt: str, folder: Path) -> tuple[ExportResult, ReadBack]:
    if fmt == "fbx":
        require("assimp", None if shutil.which("assimp") else "FBX needs Debian's assimp-utils")
    chosen = FORMATS[fmt]
    output = folder / (fmt if chosen.layout == FOLDER else f"{fmt}{chosen.suffix}")
    result = export(master.path, fmt, output)
    assert all(path.is_file() for path in result.files)
    assert not list(folder.glob(".partial-*")), "staging left behind"
    return result, MESH_READERS[fmt](main_file(result))


def expected_bounds(fmt: str, bounds: np.ndarray) -> np.ndarray:
    if fmt != "3mf":
        return bounds
    (x0, y0, z0), (x1, y1, z1) = bounds  # built Z up: (x, y, z) -> (x, -z, y)
    return np.array([[x0, -z1, y0], [x1, -z0, y1]])


def assert_same_bounds(read: np.ndarray, expected: np.ndarray) -> None:
    scale = float(np.max(expected[1] - expected[0]))
    np.testing.assert_allclose(read, expected, rtol=0, atol=1e-5 * scale)


def sorted_rows(table: np.ndarray) -> np.ndarray:
    """Rows in one order whatever order a reader gives them in."""
    table = np.round(np.asarray(table, float), 6)
    return table[np.lexsort(table.T[::-1])]


def assert_counts(fmt: str, master: Master, result: ExportResult, read: ReadBack) -> None:
    assert read.faces == master.faces == result.faces
    if fmt in CORNERS:  # written apart, joined again by the reader as it sees fit
        assert read.vertices <= 3 * master.faces
    elif fmt == "fbx":  # assimp splits corners where normals or UVs differ
        assert master.vertices <= read.vertices <= 3 * master.faces
    else:
        assert read.vertices == master.vertices == result.vertices


# --- meshes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_coloured_mesh_round_trip(fmt, coloured, tmp_path):
    result, read = export_and_read(coloured, fmt, tmp_path)
    assert_counts(fmt, coloured, result, read)
    assert_same_bounds(read.bounds, expected_bounds(fmt, coloured.bounds))
    if fmt in COLOURED:
        assert read.colour_mean is not None, f"{fmt} lost the vertex colours"
        np.testing.assert_allclose(read.colour_mean, coloured.colour_mean, atol=1.0)
    else:
        assert any("colour" in item.what for item in result.dropped)


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_textured_mesh_round_trip(fmt, textured, tmp_path):
    result, read = export_and_read(textured, fmt, tmp_path)
    assert_counts(fmt, textured, result, read)
    assert_same_bounds(read.bounds, expected_bounds(fmt, textured.bounds))
    if fmt in TEXTURED:
        assert read.texture is not None, f"{fmt} lost the texture"
        np.testing.assert_array_equal(read.texture, textured.texture)
        assert read.corners is not None, f"{fmt} lost the UVs"
        np.testing.assert_allclose(
            sorted_rows(read.corners), sorted_rows(textured.corners), atol=1e-6
        )
    else:
        assert any("texture" in item.what for item in result.dropped)


@pytest.mark.parametrize("fmt", MESH_FORMATS)
def test_bunny_round_trip(fmt, bunny, tmp_path):
    result, read = export_and_read(bunny, fmt, tmp_path)
    assert_counts(fmt, bunny, result, read)
    assert_same_bounds(read.bounds, expected_bounds(fmt, bunny.bounds))


# --- point clouds --------------------------------------------------------------------------------


def read_cloud(fmt: str, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(points, RGB 0..255 or None), each read by another library than the writer's."""
    if fmt in ("ply", "ply-ascii"):
        read = o3d.io.read_point_cloud(str(path))
        colours = np.asarray(read.colors) * 255 if read.has_colors() else None
        return np.asarray(read.points), colours
    if fmt == "xyz":
        table = np.loadtxt(path)
        return table[:, :3], table[:, 3:6] if table.shape[1] >= 6 else None
    if fmt in ("las", "laz"):
        import laspy

        data = laspy.read(str(path))
        colours = np.column_stack([data.red, data.green, data.blue]) / 257.0
        return np.column_stack([data.x, data.y, data.z]), colours
    import pye57

    scans = pye57.E57(str(path))
    scan = scans.read_scan(0, colors=True, ignore_missing_fields=True)
    scans.close()
    points = np.column_stack([scan["cartesianX"], scan["cartesianY"], scan["cartesianZ"]])
    colours = np.column_stack([scan["colorRed"], scan["colorGreen"], scan["colorBlue"]])
    return points, colours


@pytest.mark.parametrize("fmt", CLOUD_FORMATS)
def test_point_cloud_round_trip(fmt, cloud, tmp_path):
    result = export(cloud.path, fmt, tmp_path / f"scan{FORMATS[fmt].suffix}")
    points, colours = read_cloud(fmt, result.output)
    assert len(points) == result.points == cloud.vertices
    assert_same_bounds(np.array([points.min(axis=0), points.max(axis=0)]), cloud.bounds)
    assert colours is not None
    np.testing.assert_allclose(colours.mean(axis=0), cloud.colour_mean, atol=1.0)


# --- metadata, frames and refusals ---------------------------------------------------------------


def _glb(path: Path, texture: bytes, mime: str, translation: list[float]) -> np.ndarray:
    """A glTF binary written by hand: one textured quad in a node moved by `translation`, and
    extras that must not be carried. Returns the quad's corners."""
    corners = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32) * 0.5
    uv = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)
    indices = np.array([0, 1, 2, 0, 2, 3], np.uint16)
    blobs = [corners.tobytes(), uv.tobytes(), indices.tobytes() + b"\0\0", texture]
    offsets = np.cumsum([0] + [len(blob) + (-len(blob) % 4) for blob in blobs])
    binary = b"".join(blob + b"\0" * (-len(blob) % 4) for blob in blobs)
    document = {
        "asset": {"version": "2.0", "copyright": "a depositor", "extras": {"who": "x"}},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "quad", "mesh": 0, "translation": translation}],
        "meshes": [
            {
                "primitives": [
                    {"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}
                ]
            }
        ],
        "materials": [
            {
                "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}},
                "extras": {"gps": SECRET.decode()},
            }
        ],
        "textures": [{"source": 0}],
        "images": [{"bufferView": 3, "mimeType": mime}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 4,
                "type": "VEC3",
                "min": corners.min(axis=0).tolist(),
                "max": corners.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": 5126, "count": 4, "type": "VEC2"},
            {"bufferView": 2, "componentType": 5123, "count": 6, "type": "SCALAR"},
        ],
        "bufferViews": [
            {"buffer": 0, "byteOffset": int(offsets[i]), "byteLength": len(blob)}
            for i, blob in enumerate(blobs)
        ],
        "buffers": [{"byteLength": len(binary)}],
    }
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    path.write_bytes(
        struct.pack("<4sII", b"glTF", 2, 28 + len(text) + len(binary))
        + struct.pack("<II", len(text), 0x4E4F534A)
        + text
        + struct.pack("<II", len(binary), 0x004E4942)
        + binary
    )
    return corners + np.asarray(translation, np.float32)


def _image_with_metadata(kind: str) -> tuple[bytes, np.ndarray]:
    """A JPEG or PNG carrying EXIF (a description and a GPS latitude) and a text comment."""
    from PIL import PngImagePlugin

    pixels = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    exif = PIL_Image.Exif()
    exif[0x010E] = SECRET.decode()  # ImageDescription
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPSInfo: a latitude
    encoded = io.BytesIO()
    if kind == "jpeg":
        PIL_Image.fromarray(pixels).save(encoded, "JPEG", exif=exif, comment=SECRET, quality=90)
    else:
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", SECRET.decode())
        PIL_Image.fromarray(pixels).save(encoded, "PNG", exif=exif, pnginfo=text)
    data = encoded.getvalue()
    assert SECRET in data and (b"Exif" in data or b"eXIf" in data)
    return data, _pixels(data)


def _all_bytes(result: ExportResult) -> bytes:
    """Every byte written, with ZIP containers (3MF, USDZ) opened."""
    blobs = []
    for path in result.files:
        data = path.read_bytes()
        blobs.append(data)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as package:
                blobs += [package.read(name) for name in package.namelist()]
    return b"".join(blobs)


@pytest.mark.parametrize("kind", ["jpeg", "png"])
@pytest.mark.parametrize("fmt", sorted(TEXTURED))
def test_no_metadata_reaches_an_export_and_nodes_stay_placed(fmt, kind, tmp_path):
    image, pixels = _image_with_metadata(kind)
    master = tmp_path / "model.glb"
    corners = _glb(master, image, f"image/{kind}", [0.0, 2.0, -1.0])
    quad = Master(master, 4, 2, np.array([corners.min(axis=0), corners.max(axis=0)]))
    result, read = export_and_read(quad, fmt, tmp_path / "out")
    written = _all_bytes(result)
    for secret in (SECRET, b"Exif", b"eXIf", b"a depositor"):
        assert secret not in written
    assert_same_bounds(read.bounds, expected_bounds(fmt, quad.bounds))
    assert read.texture is not None
    np.testing.assert_array_equal(read.texture, pixels)


def test_glb_keeps_the_masters_geometry_bytes(coloured, tmp_path):
    result = export(coloured.path, "glb", tmp_path / "copy.glb")
    original = trimesh.load(str(coloured.path), force="mesh", process=False)
    copy = trimesh.load(str(result.output), force="mesh", process=False)
    np.testing.assert_array_equal(copy.vertices, original.vertices)
    np.testing.assert_array_equal(copy.faces, original.faces)


def test_folder_exports_zip(textured, tmp_path):
    result = export(textured.path, "obj", tmp_path / "obj")
    archive = zip_export(result, tmp_path / "obj.zip")
    with zipfile.ZipFile(archive) as bundle:
        names = sorted(bundle.namelist())
    assert names == sorted(f"obj/{path.name}" for path in result.files)
    assert any(name.endswith(".png") for name in names)


def test_registry_describes_every_format():
    assert len(FORMATS) >= 12
    for fmt in FORMATS.values():
        described = fmt.as_dict()
        assert described["suffix"].startswith(".") and "/" in described["mime"]
        assert described["layout"] in ("file", "folder") and described["carries"]
    assert FORMATS["stl"].loses and "colours" in " ".join(FORMATS["stl"].loses)


def test_bad_requests_are_refused(coloured, cloud, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="unknown export format 'step'"):
        export(coloured.path, "step", tmp_path / "x.step")
    with pytest.raises(ExportError, match="las holds point clouds"):
        export(coloured.path, "las", tmp_path / "x.las")
    with pytest.raises(ExportError, match="stl needs faces"):
        export(cloud.path, "stl", tmp_path / "x.stl")
    with pytest.raises(ExportError, match="new or empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "other").write_text("kept")
        export(coloured.path, "obj", tmp_path / "full")
    assert (tmp_path / "full" / "other").read_text() == "kept"
    with pytest.raises(ExportError, match="overwrite the master"):
        export(coloured.path, "glb", coloured.path)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match="FBX needs Debian's assimp-utils"):
        export(coloured.path, "fbx", tmp_path / "x.fbx")
    assert not (tmp_path / "x.fbx").exists()
