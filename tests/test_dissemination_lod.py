"""Web levels of detail: sizes, face budgets, colours and textures, and decodable compression."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import DracoPy
import fast_simplification  # noqa: F401 - needed by the module under test
import meshoptimizer
import numpy as np
import pytest
import trimesh
from PIL import Image

from arkhiv.dissemination.lod import (
    DEFAULT_LEVELS,
    LevelSpec,
    LodOptions,
    levels_of_detail,
)
from tests.conftest import require

TARGETS = {spec.name: spec.faces for spec in DEFAULT_LEVELS}
ATLAS = (3, 2)  # box-mapping charts laid out 3 across, 2 down
CHART_COLOURS = [(200, 40, 40), (40, 170, 60), (50, 70, 210), (230, 200, 40), (40, 190, 200)]
CHART_COLOURS.append((190, 60, 180))


def bumpy_sphere(subdivisions: int) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    mesh.vertices *= 1 + 0.03 * np.sin(mesh.vertices[:, :1] * 17) * np.cos(
        mesh.vertices[:, 1:2] * 9
    )
    return mesh


@pytest.fixture(scope="module")
def coloured(tmp_path_factory):
    """A 327,680-face vertex-coloured master at the default targets (medium exceeds it)."""
    mesh = bumpy_sphere(7)
    colors = np.full((len(mesh.vertices), 4), 255, dtype=np.uint8)
    colors[:, :3] = np.clip((mesh.vertices * 0.5 + 0.5) * 255, 0, 255)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colors)
    root = tmp_path_factory.mktemp("coloured")
    mesh.export(root / "model.glb")
    levels = levels_of_detail(root / "model.glb", root / "levels")
    return mesh, {(level.name, level.compression): level for level in levels}


def box_mapped(mesh: trimesh.Trimesh, image: Image.Image) -> trimesh.Trimesh:
    """Six UV charts (one per dominant normal direction), vertices split along the seams."""
    normals = mesh.face_normals
    axis = np.abs(normals).argmax(axis=1)
    chart = axis * 2 + (normals[np.arange(len(normals)), axis] > 0)
    key = mesh.faces.ravel() * 6 + np.repeat(chart, 3)
    unique, inverse = np.unique(key, return_inverse=True)
    vertex, vertex_chart = unique // 6, unique % 6
    positions = mesh.vertices[vertex]
    others = np.array([[1, 2], [0, 2], [0, 1]])[vertex_chart // 2]
    local = np.take_along_axis(positions, others, axis=1) * 0.45 + 0.5  # inside the tile
    column, row = vertex_chart % ATLAS[0], vertex_chart // ATLAS[0]
    uv = np.stack([(column + local[:, 0]) / ATLAS[0], 1.0 - (row + local[:, 1]) / ATLAS[1]], axis=1)
    visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    return trimesh.Trimesh(positions, inverse.reshape(-1, 3), visual=visual, process=False)


def atlas_image(size: int) -> Image.Image:
    """One colour per chart, with a gentle gradient so that resampling has something to do."""
    pixels = np.zeros((size, size, 3), dtype=np.float64)
    ramp = np.linspace(-25, 25, size)
    for index, colour in enumerate(CHART_COLOURS):
        column, row = index % ATLAS[0], index // ATLAS[0]
        rows = slice(row * size // ATLAS[1], (row + 1) * size // ATLAS[1])
        columns = slice(column * size // ATLAS[0], (column + 1) * size // ATLAS[0])
        pixels[rows, columns] = colour
    pixels += ramp[:, None, None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def textured(tmp_path_factory):
    mesh = box_mapped(bumpy_sphere(5), atlas_image(2048))
    root = tmp_path_factory.mktemp("textured")
    mesh.export(root / "model.glb")
    options = LodOptions(
        levels=(
            LevelSpec("thumb", 1_000, 256, max_bytes=200_000),
            LevelSpec("low", 5_000, 1024),
            LevelSpec("medium", 10_000, 2048),
            LevelSpec("high", None, 4096),
        )
    )
    levels = levels_of_detail(root / "model.glb", root / "levels", options)
    return root / "model.glb", {(level.name, level.compression): level for level in levels}


def load(path: Path) -> trimesh.Trimesh:
    # the scene's own geometry: concatenating it (load_mesh) drops COLOR_0 beside a material
    scene = trimesh.load_scene(path, process=False)
    (node,) = scene.graph.nodes_geometry
    transform, name = scene.graph[node]
    assert np.allclose(transform, np.eye(4))
    return scene.geometry[name]


def vertex_colours(mesh: trimesh.Trimesh) -> np.ndarray:
    if mesh.visual.kind == "vertex":
        return mesh.visual.vertex_colors
    return mesh.visual.vertex_attributes["color"]  # trimesh's place for COLOR_0 beside a material


def area_weighted_colour(mesh: trimesh.Trimesh) -> np.ndarray:
    corner_colours = vertex_colours(mesh)[mesh.faces][:, :, :3].astype(np.float64)
    return np.average(corner_colours.mean(axis=1), axis=0, weights=mesh.area_faces)


def sampled_texture_colours(mesh: trimesh.Trimesh, count: int = 20_000) -> np.ndarray:
    """Colours a viewer would show at points spread evenly over the surface (nearest texel)."""
    rng = np.random.default_rng(7)
    faces = rng.choice(len(mesh.faces), count, p=mesh.area_faces / mesh.area)
    weights = rng.dirichlet((1, 1, 1), count)
    uv = np.einsum("ij,ijk->ik", weights, mesh.visual.uv[mesh.faces[faces]])
    image = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"))
    height, width = image.shape[:2]
    column = np.clip((uv[:, 0] % 1.0) * width, 0, width - 1).astype(int)
    row = np.clip((1.0 - uv[:, 1] % 1.0) * height, 0, height - 1).astype(int)  # trimesh: v up
    return image[row, column].astype(np.float64)


def histogram(colours: np.ndarray) -> np.ndarray:
    bins = np.clip(colours // 64, 0, 3).astype(int)
    joint = bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2]
    return np.bincount(joint, minlength=64) / len(colours)


def open_edges(mesh: trimesh.Trimesh) -> int:
    welded = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    _, counts = np.unique(welded.edges_sorted, axis=0, return_counts=True)
    return int((counts == 1).sum())


def rotated_to_lowest(faces: np.ndarray) -> np.ndarray:
    shift = faces.argmin(axis=1)
    columns = (shift[:, None] + np.arange(3)) % 3
    return np.take_along_axis(faces, columns, axis=1)


def read_glb(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20 : 20 + json_length])
    binary = data[20 + json_length + 8 :]
    return gltf, binary


def decode_meshopt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in model units) and faces, decoded the way three.js's MeshoptDecoder would."""
    gltf, binary = read_glb(path)
    assert set(gltf["extensionsRequired"]) == {"EXT_meshopt_compression", "KHR_mesh_quantization"}
    assert gltf["buffers"][1]["extensions"]["EXT_meshopt_compression"] == {"fallback": True}

    def view_bytes(index: int) -> np.ndarray:
        view = gltf["bufferViews"][index]
        assert view["buffer"] == 1  # only the compressed copy exists
        ext = view["extensions"]["EXT_meshopt_compression"]
        assert view["byteLength"] == ext["byteStride"] * ext["count"]
        encoded = binary[ext["byteOffset"] : ext["byteOffset"] + ext["byteLength"]]
        # the bindings decode into arrays of their own types: take the raw bytes back out
        if ext["mode"] == "TRIANGLES":
            assert encoded[0] == 0xE1
            decoded = meshoptimizer.decode_index_buffer(ext["count"], ext["byteStride"], encoded)
            width = np.uint16 if ext["byteStride"] == 2 else np.uint32
            return decoded.view(width)[: ext["count"]]
        assert encoded[0] == 0xA0  # vertex codec version 0, the one the extension specifies
        decoded = meshoptimizer.decode_vertex_buffer(ext["count"], ext["byteStride"], encoded)
        return decoded.view(np.uint8).reshape(ext["count"], ext["byteStride"])

    primitive = gltf["meshes"][0]["primitives"][0]
    position = gltf["accessors"][primitive["attributes"]["POSITION"]]
    assert position["componentType"] == 5123
    grid = view_bytes(position["bufferView"]).copy().view(np.uint16)[:, :3].astype(np.float64)
    node = gltf["nodes"][0]
    positions = grid * np.array(node["scale"]) + np.array(node["translation"])
    indices = gltf["accessors"][primitive["indices"]]
    faces = np.asarray(view_bytes(indices["bufferView"])).astype(np.int64).reshape(-1, 3)
    assert indices["count"] == faces.size
    return positions, faces


def test_thumb_is_small(coloured):
    _, levels = coloured
    for compression in ("none", "draco", "meshopt"):
        level = levels[("thumb", compression)]
        assert level.bytes == level.path.stat().st_size < 200_000


def test_face_counts_follow_targets_but_never_exceed_the_master(coloured):
    mesh, levels = coloured
    master = len(mesh.faces)
    for name, target in TARGETS.items():
        level = levels[(name, "none")]
        reloaded = load(level.path)
        assert len(reloaded.faces) == level.faces
        if target is None or target >= master:
            assert level.faces == master
            assert not level.decimated
        else:
            assert abs(level.faces - target) <= 0.1 * target
            assert level.decimated
        assert level.seconds > 0 and level.vertices == len(reloaded.vertices)


def test_vertex_colours_survive_decimation_and_compression(coloured):
    mesh, levels = coloured
    expected = area_weighted_colour(mesh)
    for (name, compression), level in levels.items():
        if compression == "meshopt":
            continue  # trimesh does not read meshopt; its colours are checked below
        reloaded = load(level.path)
        assert np.abs(area_weighted_colour(reloaded) - expected).max() < 3, (name, compression)


def test_compressed_variants_decode_to_the_same_geometry(coloured):
    _, levels = coloured
    for name in TARGETS:
        plain = load(levels[(name, "none")].path)
        draco = levels[(name, "draco")]
        gltf, binary = read_glb(draco.path)
        assert gltf["extensionsRequired"] == ["KHR_draco_mesh_compression"]
        extension = gltf["meshes"][0]["primitives"][0]["extensions"]["KHR_draco_mesh_compression"]
        view = gltf["bufferViews"][extension["bufferView"]]
        decoded = DracoPy.decode(
            binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
        )
        assert len(decoded.faces) == draco.faces == len(plain.faces)
        assert set(extension["attributes"]) == {"POSITION", "NORMAL", "COLOR_0"}
        via_trimesh = load(draco.path)  # trimesh maps the Draco attribute ids as three.js does
        assert len(via_trimesh.faces) == len(plain.faces)
        assert np.allclose(via_trimesh.bounds, plain.bounds, atol=plain.scale * 1e-3)

        meshopt = levels[(name, "meshopt")]
        positions, faces = decode_meshopt(meshopt.path)
        assert len(faces) == meshopt.faces == len(plain.faces)
        # the same triangles (the codec may rotate a triangle's corners, keeping its winding)
        assert (rotated_to_lowest(faces) == rotated_to_lowest(plain.faces)).all()
        # and the same positions but for the 16-bit grid
        assert np.abs(positions - plain.vertices).max() < plain.scale * 1e-4
        assert meshopt.bytes < levels[(name, "none")].bytes


def test_textured_master_keeps_capped_textures_and_colours(textured):
    master_path, levels = textured
    master = load(master_path)
    expected = sampled_texture_colours(master)
    caps = {"thumb": 256, "low": 1024, "medium": 2048, "high": 2048}  # never upscaled
    for (name, compression), level in levels.items():
        assert level.texture_px == (caps[name], caps[name]), (name, compression)
        if compression == "meshopt":
            continue
        reloaded = load(level.path)
        texture = reloaded.visual.material.baseColorTexture
        assert texture.size == (caps[name], caps[name])
        colours = sampled_texture_colours(reloaded)
        assert np.abs(colours.mean(axis=0) - expected.mean(axis=0)).max() < 4, (name, compression)
        overlap = np.minimum(histogram(colours), histogram(expected)).sum()
        assert overlap > 0.95, (name, compression, overlap)


def test_textured_levels_keep_their_uv_seams_closed(textured):
    master_path, levels = textured
    assert open_edges(load(master_path)) == 0
    for name in ("thumb", "low", "medium"):
        level = load(levels[(name, "none")].path)
        assert open_edges(level) == 0, name
        assert abs(len(level.faces) - levels[(name, "none")].faces) == 0


def test_a_decimated_scan_keeps_every_face_through_compression(corpora, tmp_path):
    """A real scan decimates into slivers and coincident vertices, which Draco would drop."""
    path = corpora / "3d-models" / "stanford" / "bun_zipper.ply"
    require("corpora", None if path.exists() else f"{path} is missing")
    scan = trimesh.load_mesh(path)
    mesh = trimesh.Trimesh(*trimesh.remesh.subdivide(scan.vertices, scan.faces))
    colours = np.full((len(mesh.vertices), 4), 255, dtype=np.uint8)
    colours[:, :3] = (mesh.vertices - mesh.bounds[0]) / mesh.extents * 255
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=colours)
    mesh.export(tmp_path / "model.glb")
    options = LodOptions(
        levels=(LevelSpec("thumb", 5_000, 256, max_bytes=200_000), LevelSpec("low", 100_000, 1024))
    )
    levels = {
        (level.name, level.compression): level
        for level in levels_of_detail(tmp_path / "model.glb", tmp_path / "levels", options)
    }
    for name, target in (("thumb", 5_000), ("low", 100_000)):
        plain = levels[(name, "none")]
        assert abs(plain.faces - target) <= 0.1 * target
        assert levels[(name, "draco")].faces == levels[(name, "meshopt")].faces == plain.faces
        _, faces = decode_meshopt(levels[(name, "meshopt")].path)
        assert len(faces) == plain.faces
        reloaded = load(plain.path)
        assert np.abs(area_weighted_colour(reloaded) - area_weighted_colour(mesh)).max() < 3


def test_a_master_smaller_than_the_thumb_keeps_all_its_faces(tmp_path):
    mesh = bumpy_sphere(1)  # 80 faces
    mesh.export(tmp_path / "model.glb")
    levels = levels_of_detail(tmp_path / "model.glb", tmp_path / "levels")
    assert {level.faces for level in levels} == {80}
    assert {level.path.name for level in levels} >= {"thumb.glb", "low.glb", "medium.glb"}
