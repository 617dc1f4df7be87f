"""Mesh uploads → the glTF binary master: the bunny in four formats keeps its faces and bounds;
generated uploads keep textures and UVs (OBJ), are converted to metres and Y up (USDZ), or are
moved to a local frame (georeferenced OBJ); uploads that cannot become a master end with a reason
and leave no model."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from arkhiv.reconstruct.meshes import master_from_mesh
from arkhiv.reconstruct.report import ReconstructionFailed

BUNNY = "3d-models/bunny-multiformat"


def _glb(path: Path) -> tuple[dict, bytes]:
    """The JSON and binary chunks of a GLB."""
    data = path.read_bytes()
    json_length = struct.unpack_from("<I", data, 12)[0]
    document = json.loads(data[20 : 20 + json_length])
    binary_length = struct.unpack_from("<I", data, 20 + json_length)[0]
    start = 20 + json_length + 8
    return document, data[start : start + binary_length]


def _embedded_images(path: Path) -> list[bytes]:
    document, binary = _glb(path)
    views = document["bufferViews"]
    return [
        binary[views[i["bufferView"]]["byteOffset"] :][: views[i["bufferView"]]["byteLength"]]
        for i in document.get("images", [])
    ]


def _attributes(path: Path) -> set[str]:
    document, _binary = _glb(path)
    return {
        name
        for mesh in document["meshes"]
        for primitive in mesh["primitives"]
        for name in primitive["attributes"]
    }


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("bunny.glb", {"POSITION", "NORMAL"}),
        ("bunny.gltf", {"POSITION", "NORMAL"}),
        ("bunny.stl", {"POSITION"}),
        ("bunny_binary.ply", {"POSITION", "COLOR_0"}),
    ],
)
def test_the_bunny_becomes_a_glb_master_with_its_faces_and_bounds(
    corpora, tmp_path, name, attributes
):
    upload = corpora / BUNNY / name
    source = trimesh.load(upload, force="mesh", process=False)
    report = master_from_mesh(upload, tmp_path)
    master = trimesh.load(tmp_path / "model.glb", force="mesh", process=False)
    assert len(master.faces) == len(source.faces) == 69_451
    assert np.allclose(master.bounds, source.bounds, rtol=0, atol=1e-6)
    assert _attributes(tmp_path / "model.glb") == attributes
    ply = trimesh.load(tmp_path / "model.ply", process=False)
    assert len(ply.faces) == len(source.faces)
    assert report.outputs == ["model.glb", "model.ply"] and report.failure is None
    assert report.figures("frame")["local_frame_offset_applied"] is False
    assert report.figures("validate")["bounds_match"] is True
    assert report.figures("read")["units"] == ("metres" if "gl" in name else "unknown")
    frame = json.loads((tmp_path / "work" / "local-frame.json").read_text())
    assert frame["applied"] is False and frame["origin"] == [0.0, 0.0, 0.0]


def _textured_obj(folder: Path, texture: str = "bark.png") -> bytes:
    """A square with UVs and normals, its MTL naming `texture`; returns the PNG's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 3 % 256).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "bark.png")
    (folder / "square.mtl").write_text(f"newmtl bark\nKd 0.7 0.3 0.123\nmap_Kd {texture}\n")
    (folder / "square.obj").write_text(
        "mtllib square.mtl\n"
        "v 0 0 0\nv 2 0 0\nv 2 1 0\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nvn 0 0 1\n"
        "usemtl bark\nf 1/1/1 2/2/1 3/3/1\nf 1/1/1 3/3/1 4/4/1\n"
    )
    return (folder / "bark.png").read_bytes()


def test_an_obj_keeps_its_texture_unchanged_and_its_uvs(tmp_path):
    png = _textured_obj(tmp_path / "upload")
    _point_only_ply(tmp_path / "upload", None)  # a point cloud beside it is not a second model
    report = master_from_mesh(tmp_path / "upload", tmp_path / "out")
    glb = tmp_path / "out" / "model.glb"
    assert _embedded_images(glb) == [png]  # the upload's own bytes, not re-encoded
    assert {"TEXCOORD_0", "NORMAL"} <= _attributes(glb)
    (material,) = _glb(glb)[0]["materials"]
    assert material["pbrMetallicRoughness"]["baseColorFactor"] == [0.7, 0.3, 0.123, 1.0]  # exact
    master = trimesh.load(glb, force="mesh", process=False)
    assert master.visual.material.baseColorTexture.size == (8, 8)
    corners = {
        (tuple(v), tuple(uv)) for v, uv in zip(master.vertices, master.visual.uv, strict=True)
    }
    assert ((2.0, 1.0, 0.0), (1.0, 1.0)) in corners and ((0.0, 0.0, 0.0), (0.0, 0.0)) in corners
    written = report.figures("write")
    assert written["textures"] == 1 and written["has_uv"] and written["faces"] == 2
    assert report.figures("read")["warnings"] == []


def test_an_obj_whose_texture_is_missing_is_kept_untextured_with_a_warning(tmp_path):
    _textured_obj(tmp_path / "upload", texture="lost.jpg")
    report = master_from_mesh(tmp_path / "upload", tmp_path / "out")
    glb = tmp_path / "out" / "model.glb"
    assert _embedded_images(glb) == [] and "TEXCOORD_0" in _attributes(glb)
    (warning,) = report.figures("read")["warnings"]
    assert "lost.jpg" in warning and "untextured" in warning


def _usdz_box(folder: Path) -> bytes:
    """A Z-up USDZ in centimetres: a textured 200 x 100 x 50 cm box and a triangle coloured by
    displayColor. Returns the texture's bytes."""
    from pxr import Sdf, Usd, UsdGeom, UsdShade, UsdUtils

    folder.mkdir()
    Image.fromarray(np.full((4, 4, 3), (200, 120, 40), np.uint8)).save(folder / "wood.png")
    stage = Usd.Stage.CreateNew(str(folder / "box.usda"))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 0.01)
    stage.SetDefaultPrim(UsdGeom.Xform.Define(stage, "/box").GetPrim())
    box = UsdGeom.Mesh.Define(stage, "/box/body")
    box.CreatePointsAttr(
        [(x, y, z) for z in (0, 50) for x, y in ((0, 0), (200, 0), (200, 100), (0, 100))]
    )
    box.CreateFaceVertexCountsAttr([4] * 6)
    box.CreateFaceVertexIndicesAttr(
        [0, 3, 2, 1, 4, 5, 6, 7, 0, 1, 5, 4, 1, 2, 6, 5, 2, 3, 7, 6, 3, 0, 4, 7]
    )
    st = UsdGeom.PrimvarsAPI(box).CreatePrimvar(
        "st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.faceVarying
    )
    st.Set([(0, 0), (1, 0), (1, 1), (0, 1)] * 6)
    material = UsdShade.Material.Define(stage, "/box/wood")
    surface = UsdShade.Shader.Define(stage, "/box/wood/surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    texture = UsdShade.Shader.Define(stage, "/box/wood/texture")
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set("wood.png")
    reader = UsdShade.Shader.Define(stage, "/box/wood/st")
    reader.CreateIdAttr("UsdPrimvarReader_float2")
    reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
    texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(
        reader.ConnectableAPI(), "result"
    )
    texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
    surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(
        texture.ConnectableAPI(), "rgb"
    )
    material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    UsdShade.MaterialBindingAPI.Apply(box.GetPrim()).Bind(material)
    flag = UsdGeom.Mesh.Define(stage, "/box/flag")
    flag.CreatePointsAttr([(0, 0, 50), (200, 0, 50), (0, 100, 50)])
    flag.CreateFaceVertexCountsAttr([3])
    flag.CreateFaceVertexIndicesAttr([0, 1, 2])
    flag.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set([(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    stage.GetRootLayer().Save()
    assert UsdUtils.CreateNewUsdzPackage(
        Sdf.AssetPath(str(folder / "box.usda")), str(folder / "box.usdz")
    )
    return (folder / "wood.png").read_bytes()


def test_a_z_up_usdz_in_centimetres_becomes_y_up_in_metres(tmp_path):
    png = _usdz_box(tmp_path / "made")
    report = master_from_mesh(tmp_path / "made" / "box.usdz", tmp_path / "out")
    glb = tmp_path / "out" / "model.glb"
    master = trimesh.load(glb, force="mesh", process=False)
    # x stays, the height (z) becomes y, depth (y) becomes -z; centimetres become metres
    assert np.allclose(master.bounds, [[0, 0, -1.0], [2.0, 0.5, 0]], atol=1e-6)
    assert _embedded_images(glb) == [png]
    assert {"TEXCOORD_0", "COLOR_0"} <= _attributes(glb)
    assert len(master.faces) == 6 * 2 + 1
    frame = report.figures("frame")
    assert frame["up_axis_conversion"] == "Z→Y" and frame["scaled_to_metres"] == 0.01
    assert report.figures("write")["has_vertex_colours"] is True


def test_a_georeferenced_obj_is_written_in_a_local_frame(tmp_path):
    corners = np.array([[x, y, z] for x in (0, 10) for y in (0, 8) for z in (0, 3)], float)
    site = corners + np.array([512_345.25, 5_543_210.5, 231.0])  # UTM easting, northing, height
    faces = [[1, 3, 2], [2, 3, 4], [5, 6, 8], [5, 8, 7], [1, 2, 6], [1, 6, 5]]
    text = "".join(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in site)
    (tmp_path / "wall.obj").write_text(text + "".join(f"f {a} {b} {c}\n" for a, b, c in faces))
    report = master_from_mesh(tmp_path / "wall.obj", tmp_path / "out")
    master = trimesh.load(tmp_path / "out" / "model.glb", force="mesh", process=False)
    ply = trimesh.load(tmp_path / "out" / "model.ply", process=False)
    assert np.abs(master.vertices).max() <= 6 and np.abs(ply.vertices).max() <= 6
    frame = json.loads((tmp_path / "out" / "work" / "local-frame.json").read_text())
    assert frame["applied"] is True
    assert np.allclose(frame["origin"], site.min(axis=0) + np.array([5, 4, 1.5]), atol=1e-6)
    assert np.allclose(
        np.sort(master.vertices + frame["origin"], axis=0), np.sort(site, axis=0), atol=1e-4
    )
    # the offset is nowhere else: not in the report, not in the master's JSON
    assert "5543" not in json.dumps(report.as_dict()) and "5543" not in json.dumps(
        _glb(tmp_path / "out" / "model.glb")[0]
    )
    assert report.figures("frame")["local_frame_offset_applied"] is True
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == [
        "local-frame.json",
        "model.glb",
        "model.ply",
        "work",
    ]


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# Each makes a bad upload in `folder` and returns it; `bunny` gives the corpus folder.


def _unknown_suffix(folder: Path, bunny) -> Path:
    return _write(folder / "scan.wrl", "#VRML V2.0 utf8\n")


def _truncated_glb(folder: Path, bunny) -> Path:
    data = (bunny() / "bunny.glb").read_bytes()
    return _write(folder / "bunny.glb", data[: len(data) // 2])


def _garbage_stl(folder: Path, bunny) -> Path:
    return _write(folder / "part.stl", bytes(range(256)) * 7)


def _point_only_ply(folder: Path, bunny) -> Path:
    header = "ply\nformat ascii 1.0\nelement vertex 3\n"
    properties = "property float x\nproperty float y\nproperty float z\nend_header\n"
    return _write(folder / "points.ply", header + properties + "0 0 0\n1 0 0\n0 1 0\n")


def _nan_vertices(folder: Path, bunny) -> Path:
    return _write(folder / "nan.obj", "v nan 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 inf\nf 1 2 3\nf 2 4 3\n")


def _damaged_usd(folder: Path, bunny) -> Path:
    return _write(folder / "scene.usdc", b"PXR-USDC" + bytes(64))


def _gltf_without_its_buffer(folder: Path, bunny) -> Path:
    document = json.loads((bunny() / "bunny.gltf").read_text())
    for buffer in document["buffers"]:
        buffer["uri"] = "bunny.bin"
    return _write(folder / "bunny.gltf", json.dumps(document))


def _two_models(folder: Path, bunny) -> Path:
    _write(folder / "a.stl", "solid a\nendsolid a\n")
    _write(folder / "b.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return folder


def _no_model(folder: Path, bunny) -> Path:
    return _write(folder / "notes.txt", "nothing here").parent


FAILURES = [
    (_unknown_suffix, "scan.wrl: not a mesh format"),
    (_truncated_glb, "bunny.glb: damaged or truncated GLB"),
    (_garbage_stl, "part.stl: not a valid STL"),
    (_point_only_ply, "points.ply: a point cloud, not a mesh"),
    (_nan_vertices, r"nan.obj: 2 of 4 vertices .* \(NaN\) or infinite"),
    (_damaged_usd, "scene.usdc: cannot be read as USD"),
    (_gltf_without_its_buffer, "bunny.gltf: needs bunny.bin, which the upload does not hold"),
    (_two_models, r"several candidate models \(a.stl, b.obj\)"),
    (_no_model, "the folder holds no mesh file"),
]


@pytest.mark.parametrize(
    ("make", "reason"), FAILURES, ids=[make.__name__.strip("_") for make, _ in FAILURES]
)
def test_uploads_that_cannot_become_a_master_end_with_a_reason_and_no_model(
    request, tmp_path, make, reason
):
    upload = make(tmp_path / "upload", lambda: request.getfixturevalue("corpora") / BUNNY)
    output = tmp_path / "out"
    with pytest.raises(ReconstructionFailed, match=reason) as raised:
        master_from_mesh(upload, output)
    assert raised.value.report.failure == raised.value.reason
    assert not (output / "model.glb").exists() and not (output / "model.ply").exists()
    assert [p.name for p in output.rglob("*")] == ["work"]  # nothing half-written either


def test_a_phone_photo_used_as_a_texture_leaves_its_gps_behind(corpora, tmp_path):
    """The master embeds the upload's JPEG pixel for pixel, but not the EXIF that says where it
    was taken."""
    from PIL import Image

    from arkhiv.access.disclosure import coordinate_traces
    from tests.test_access import gps_of

    photo = corpora / "photos-exif" / "DSCN0010.jpg"
    point = gps_of(photo)
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "wall.jpg").write_bytes(photo.read_bytes())
    (upload / "wall.mtl").write_text("newmtl wall\nKd 1 1 1\nmap_Kd wall.jpg\n")
    (upload / "wall.obj").write_text(
        "mtllib wall.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\nusemtl wall\nf 1/1 2/2 3/3\nf 1/1 3/3 4/4\n"
    )
    assert coordinate_traces(photo.read_bytes(), [point])  # the control
    master_from_mesh(upload / "wall.obj", tmp_path / "out")
    master = (tmp_path / "out" / "model.glb").read_bytes()
    assert coordinate_traces(master, [point]) == []
    scene = trimesh.load(tmp_path / "out" / "model.glb", force="mesh")
    texture = scene.visual.material.baseColorTexture
    with Image.open(photo) as original:
        assert np.array_equal(
            np.asarray(texture.convert("RGB")), np.asarray(original.convert("RGB"))
        )
