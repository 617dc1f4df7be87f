"""Mesh characterization and validation on the real corpus (counts cross-checked with readers
written here from the format specs) and on broken packages made in tmp_path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from arkhiv.ingest.characterize.meshes import characterize_mesh, read_ply_header

BUNNY_VERTICES = 35947
BUNNY_FACES = 69451


@pytest.fixture(scope="module")
def bunny(corpora: Path) -> Path:
    return corpora / "3d-models" / "bunny-multiformat"


@pytest.fixture(scope="module")
def stanford(corpora: Path) -> Path:
    return corpora / "3d-models" / "stanford"


def problems_text(c) -> str:
    return "\n".join(c.problems)


def errors(c) -> list[str]:
    return [p for p in c.problems if not p.startswith("note:")]


# -- the Stanford bunny and friends ---------------------------------------------------------------


def ascii_ply_body(path: Path) -> tuple[np.ndarray, list[list[int]]]:
    """An independent reader of the zipper ASCII PLY: vertex lines, then face lines."""
    lines = path.read_text().splitlines()
    end = lines.index("end_header")
    counts = {
        line.split()[1]: int(line.split()[2]) for line in lines[:end] if line.startswith("element")
    }
    body = lines[end + 1 :]
    vertices = np.array([[float(v) for v in line.split()[:3]] for line in body[: counts["vertex"]]])
    faces = [
        [int(v) for v in line.split()[1:]]
        for line in body[counts["vertex"] : counts["vertex"] + counts["face"]]
    ]
    return vertices, faces


def test_bun_zipper_counts_match_an_independent_read(stanford):
    path = stanford / "bun_zipper.ply"
    c = characterize_mesh(path)
    assert c.valid is True, c.problems
    p = c.properties
    vertices, faces = ascii_ply_body(path)
    assert len(vertices) == BUNNY_VERTICES and len(faces) == BUNNY_FACES
    assert all(len(f) == 3 for f in faces)
    assert p["vertices"] == BUNNY_VERTICES
    assert p["faces"] == BUNNY_FACES
    assert p["triangles"] == BUNNY_FACES
    assert p["format"] == "PLY" and p["ply_encoding"] == "ascii"
    # Bounds of the referenced vertices (the zipper file also holds unreferenced ones).
    used = vertices[np.unique(np.array(faces))]
    assert p["bounds_min"] == pytest.approx(used.min(axis=0).tolist(), abs=1e-6)
    assert p["bounds_max"] == pytest.approx(used.max(axis=0).tolist(), abs=1e-6)
    assert p["extent"] == pytest.approx((used.max(axis=0) - used.min(axis=0)).tolist(), abs=1e-6)
    assert p["watertight"] is False  # the scanned bunny has holes in its base
    assert p["winding_consistent"] is True
    assert p["loaded"] is True
    assert p["has_vertex_colors"] is False and p["has_uvs"] is False


def test_ply_header_reader_agrees_with_the_file(stanford):
    header = read_ply_header(stanford / "dragon.ply")
    assert header.encoding == "binary_little_endian"
    assert {e.name: e.count for e in header.elements} == {"vertex": 50002, "face": 100000}
    raw = (stanford / "dragon.ply").read_bytes()
    assert raw[: header.length].endswith(b"end_header\n")


def test_dragon_binary_ply(stanford):
    c = characterize_mesh(stanford / "dragon.ply")
    assert c.valid is True, c.problems
    p = c.properties
    assert (p["vertices"], p["faces"]) == (50002, 100000)
    assert p["has_normals"] is True
    assert p["ply_encoding"] == "binary_little_endian"
    assert p["winding_consistent"] is True
    assert p["extent"][0] == pytest.approx(201.815, abs=1e-3)


def glb_json(path: Path) -> dict:
    data = path.read_bytes()
    length, kind = struct.unpack_from("<II", data, 12)
    assert kind == 0x4E4F534A
    return json.loads(data[20 : 20 + length])


def test_bunny_glb_counts_come_from_its_accessors(bunny):
    c = characterize_mesh(bunny / "bunny.glb")
    assert c.valid is True, c.problems
    p = c.properties
    doc = glb_json(bunny / "bunny.glb")
    prim = doc["meshes"][0]["primitives"][0]
    assert p["vertices"] == doc["accessors"][prim["attributes"]["POSITION"]]["count"] == 34834
    assert p["faces"] == doc["accessors"][prim["indices"]]["count"] // 3 == BUNNY_FACES
    assert (p["meshes"], p["primitives"], p["nodes"], p["materials"]) == (1, 1, 1, 1)
    assert p["format"] == "GLB" and p["glb_version"] == 2
    assert p["glb_chunks"] == ["JSON", "BIN"]
    assert p["units"] == "m"
    assert p["loaded"] is True and p["triangles"] == BUNNY_FACES
    assert p["textures"] == [] and p["has_uvs"] is False


def test_bunny_in_every_format_is_the_same_bunny(bunny, stanford):
    reference = characterize_mesh(stanford / "bun_zipper.ply").properties
    for name in ("bunny.glb", "bunny.gltf", "bunny.stl", "bunny_binary.ply", "bunny.wrl"):
        c = characterize_mesh(bunny / name)
        assert c.valid is True, (name, c.problems)
        p = c.properties
        assert p["faces"] == BUNNY_FACES, name
        assert p["bounds_min"] == pytest.approx(reference["bounds_min"], abs=1e-5), name
        assert p["bounds_max"] == pytest.approx(reference["bounds_max"], abs=1e-5), name
    glb = characterize_mesh(bunny / "bunny.glb").properties
    gltf = characterize_mesh(bunny / "bunny.gltf").properties
    assert gltf["format"] == "glTF"
    for key in ("vertices", "faces", "primitives", "meshes", "nodes", "watertight"):
        assert glb[key] == gltf[key], key


def test_binary_stl_triangles_and_shared_vertices(bunny):
    path = bunny / "bunny.stl"
    raw = path.read_bytes()
    (count,) = struct.unpack_from("<I", raw, 80)
    triangles = np.frombuffer(
        raw,
        dtype=np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]),
        offset=84,
    )
    unique = len(np.unique(triangles["v"].reshape(-1, 3), axis=0))
    c = characterize_mesh(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["stl_encoding"] == "binary"
    assert p["faces"] == count == BUNNY_FACES
    assert p["vertices"] == unique  # STL shares no vertices: the distinct positions count
    assert p["winding_consistent"] is True


def test_vrml_is_scanned_not_loaded(bunny):
    c = characterize_mesh(bunny / "bunny.wrl")
    assert c.valid is True, c.problems
    p = c.properties
    assert p["format"] == "VRML" and p["vrml_version"] == "2.0"
    assert (p["vertices"], p["faces"]) == (BUNNY_VERTICES, BUNNY_FACES)
    assert p["has_vertex_colors"] is True  # it carries a Color node
    assert p["materials"] == 1 and p["shapes"] == 1
    assert p["loaded"] is False and p["watertight"] is None
    assert any("scan of its nodes" in n for n in c.problems)


def test_vertex_only_ply_is_a_point_cloud_not_an_empty_mesh(stanford):
    c = characterize_mesh(stanford / "armadillo-pointcloud.ply")
    assert c.valid is True, c.problems
    assert c.properties["point_count"] == 38294
    assert "no faces: characterized as a point cloud" in problems_text(c)


def test_large_files_fall_back_to_header_figures(bunny, stanford):
    ply = characterize_mesh(bunny / "bunny_binary.ply", max_load_bytes=1000)
    assert ply.valid is True
    assert ply.properties["loaded"] is False
    assert (ply.properties["vertices"], ply.properties["faces"]) == (BUNNY_VERTICES, BUNNY_FACES)
    assert ply.properties["watertight"] is None
    assert "not loaded whole" in problems_text(ply)
    glb = characterize_mesh(bunny / "bunny.glb", max_load_bytes=1000).properties
    assert (glb["loaded"], glb["vertices"], glb["faces"]) == (False, 34834, BUNNY_FACES)
    assert glb["bounds_frame"] == "mesh" and glb["bounds_min"][1] == pytest.approx(0.032987)
    stl = characterize_mesh(bunny / "bunny.stl", max_load_bytes=1000).properties
    assert (stl["loaded"], stl["faces"]) == (False, BUNNY_FACES)


# -- claims that are not true -------------------------------------------------------------------


def test_html_saved_as_glb_is_invalid(tmp_path):
    path = tmp_path / "model.glb"
    path.write_text("<!DOCTYPE html><html><body>Not found</body></html>")
    c = characterize_mesh(path)
    assert c.valid is False
    assert "model.glb: claims to be GLB by its name but its content is an HTML page" in c.problems


def test_jpeg_saved_as_ply_is_invalid(tmp_path):
    path = tmp_path / "scan.ply"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200))
    c = characterize_mesh(path)
    assert c.valid is False
    assert "scan.ply: claims to be PLY by its name but its content is a JPEG image" in c.problems


def test_ply_content_under_an_stl_name(tmp_path, stanford):
    path = tmp_path / "bunny.stl"
    path.write_bytes((stanford / "bun_zipper_res4.ply").read_bytes())
    c = characterize_mesh(path)
    assert c.valid is False
    assert "bunny.stl: its name says STL but its content is PLY" in c.problems
    assert c.properties["faces"] == 948  # still characterized as what it is


def test_truncated_glb(tmp_path, bunny):
    data = (bunny / "bunny.glb").read_bytes()
    path = tmp_path / "cut.glb"
    path.write_bytes(data[: len(data) // 2])
    c = characterize_mesh(path)
    assert c.valid is False
    text = problems_text(c)
    assert (
        f"GLB header says {len(data)} bytes but the file has {len(data) // 2} (truncated)" in text
    )
    assert "BIN chunk at byte" in text and "ends" in text


def test_glb_with_bin_before_json(tmp_path):
    doc, binary = tetrahedron_gltf(uri=None)
    json_chunk = json.dumps(doc).encode().ljust(4 * -(-len(json.dumps(doc)) // 4), b" ")
    chunks = struct.pack("<II", len(binary), 0x004E4942) + binary
    chunks += struct.pack("<II", len(json_chunk), 0x4E4F534A) + json_chunk
    path = tmp_path / "swapped.glb"
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks)
    c = characterize_mesh(path)
    assert c.valid is False
    assert "swapped.glb: the first GLB chunk must be JSON, found BIN" in c.problems


def test_a_well_formed_glb_made_here(tmp_path):
    doc, binary = tetrahedron_gltf(uri=None)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    path = tmp_path / "tetra.glb"
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks)
    c = characterize_mesh(path)
    assert c.valid is True, c.problems
    assert (c.properties["vertices"], c.properties["faces"]) == (4, 4)
    assert c.properties["watertight"] is True


# -- glTF references ----------------------------------------------------------------------------


def tetrahedron_gltf(uri: str | None, image: str | None = None) -> tuple[dict, bytes]:
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype="<f4")
    indices = np.array([0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3], dtype="<u2")
    binary = positions.tobytes() + indices.tobytes()  # 48 + 24 bytes, 4-aligned
    buffer = {"byteLength": len(binary)}
    if uri is not None:
        buffer["uri"] = uri
    doc = {
        "asset": {"version": "2.0", "generator": "arkhiv tests"},
        "buffers": [buffer],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 48},
            {"buffer": 0, "byteOffset": 48, "byteLength": 24},
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 4,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 1],
            },
            {"bufferView": 1, "componentType": 5123, "count": 12, "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
        "scene": 0,
    }
    if image:
        doc["images"] = [{"uri": image}]
        doc["textures"] = [{"source": 0}]
        doc["materials"] = [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
        doc["meshes"][0]["primitives"][0]["material"] = 0
    return doc, binary


def write_gltf(folder: Path, doc: dict, binary: bytes | None, bin_name: str = "tetra.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if binary is not None:
        (folder / bin_name).write_bytes(binary)
    path = folder / "tetra.gltf"
    path.write_text(json.dumps(doc))
    return path


def test_gltf_with_external_buffer_and_texture(tmp_path):
    doc, binary = tetrahedron_gltf("tetra.bin", image="textures/skin%20one.png")
    (tmp_path / "textures").mkdir()
    (tmp_path / "textures" / "skin one.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    c = characterize_mesh(write_gltf(tmp_path, doc, binary))
    assert c.valid is True, c.problems
    p = c.properties
    assert p["textures"] == ["textures/skin%20one.png"]
    assert (p["vertices"], p["faces"], p["materials"]) == (4, 4, 1)
    assert p["watertight"] is True and p["winding_consistent"] is True
    assert p["extent"] == [1.0, 1.0, 1.0]


def test_gltf_with_missing_bin(tmp_path):
    doc, _ = tetrahedron_gltf("tetra.bin")
    c = characterize_mesh(write_gltf(tmp_path, doc, None))
    assert c.valid is False
    assert "tetra.gltf: buffer 0 'tetra.bin' not found (looked for tetra.bin)" in c.problems


def test_gltf_with_wrong_byte_length(tmp_path):
    doc, binary = tetrahedron_gltf("tetra.bin")
    c = characterize_mesh(write_gltf(tmp_path, doc, binary + b"\0\0\0\0"))
    assert c.valid is False
    assert (
        "tetra.gltf: buffer 0 'tetra.bin' declares byteLength 72 but the file has 76 bytes"
        in c.problems
    )


def test_gltf_with_missing_image_and_escaping_buffer(tmp_path):
    package = tmp_path / "package"
    doc, binary = tetrahedron_gltf("../tetra.bin", image="missing.png")
    (tmp_path / "tetra.bin").write_bytes(binary)  # exists, but outside the package
    c = characterize_mesh(write_gltf(package, doc, None), root=package)
    assert c.valid is False
    assert "tetra.gltf: buffer 0 '../tetra.bin' leaves the package" in c.problems
    assert "tetra.gltf: image 0 'missing.png' not found (looked for missing.png)" in c.problems


def test_gltf_data_uri_is_sized_and_checked(tmp_path):
    import base64

    doc, _ = tetrahedron_gltf(
        "data:application/octet-stream;base64," + base64.b64encode(binary_of_tetra()).decode()
    )
    assert characterize_mesh(write_gltf(tmp_path / "ok", doc, None)).valid is True
    doc["buffers"][0]["byteLength"] = 100
    c = characterize_mesh(write_gltf(tmp_path / "bad", doc, None))
    assert "tetra.gltf: buffer 0 (data URI) declares byteLength 100 but holds 72 bytes" in (
        c.problems
    )


def binary_of_tetra() -> bytes:
    return tetrahedron_gltf(None)[1]


def test_gltf_accessor_past_its_buffer_view(tmp_path):
    doc, binary = tetrahedron_gltf("tetra.bin")
    doc["accessors"][1]["count"] = 30
    c = characterize_mesh(write_gltf(tmp_path, doc, binary))
    assert c.valid is False
    assert "tetra.gltf: accessor 1 needs 60 bytes but bufferView 1 is shorter" in c.problems


# -- OBJ, MTL and textures ----------------------------------------------------------------------

TETRA_OBJ = """# tetrahedron
mtllib {mtl}
v 0 0 0
v 1 0 0
v 0 1 0
v 0 0 1
vt 0 0
vt 1 0
vt 0 1
usemtl skin
f 1/1 3/3 2/2
f 1/1 2/2 4/3
f 1/1 4/3 3/3
f 2/2 3/3 4/3
"""


def write_obj(folder: Path, mtl: str = "tetra.mtl", texture: str | None = "skin.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tetra.obj"
    path.write_text(TETRA_OBJ.format(mtl=mtl))
    if texture is not None:
        (folder / "tetra.mtl").write_text(
            f"newmtl skin\nKd 1 1 1\nmap_Kd -s 1 1 1 -clamp on {texture}\nmap_Bump skin_n.png\n"
        )
    return path


def test_good_obj_package(tmp_path):
    path = write_obj(tmp_path)
    (tmp_path / "skin.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    c = characterize_mesh(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert (p["vertices"], p["faces"], p["materials"], p["mtllibs"]) == (4, 4, 1, 1)
    assert p["textures"] == ["skin.png", "skin_n.png"]
    assert p["has_uvs"] is True and p["has_vertex_colors"] is False
    assert p["watertight"] is True and p["winding_consistent"] is True
    assert p["bounds_min"] == [0.0, 0.0, 0.0] and p["bounds_max"] == [1.0, 1.0, 1.0]


def test_obj_whose_mtl_is_missing(tmp_path):
    path = write_obj(tmp_path, mtl="gone.mtl", texture=None)
    c = characterize_mesh(path)
    assert c.valid is False
    assert errors(c) == ["tetra.obj: mtllib 'gone.mtl' not found (looked for gone.mtl)"]


def test_obj_whose_texture_is_missing(tmp_path):
    path = write_obj(tmp_path)
    (tmp_path / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    c = characterize_mesh(path)
    assert c.valid is False
    assert errors(c) == ["tetra.mtl: texture 'skin.png' not found (looked for skin.png)"]


def test_obj_texture_leaving_the_package(tmp_path):
    package = tmp_path / "package"
    path = write_obj(package, texture="../outside.png")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # it exists: still refused
    (package / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    c = characterize_mesh(path, root=package)
    assert c.valid is False
    assert errors(c) == ["tetra.mtl: texture '../outside.png' leaves the package"]


def test_obj_texture_with_an_absolute_path(tmp_path):
    path = write_obj(tmp_path, texture="C:\\Users\\me\\skin.png")
    (tmp_path / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    c = characterize_mesh(path)
    assert errors(c) == [
        "tetra.mtl: texture 'C:\\Users\\me\\skin.png' is an absolute path; it must be relative"
    ]


def test_bag_payload_is_the_package(tmp_path):
    """In a bag, models may reach across data/ but not out of it into the tag files."""
    bag = tmp_path / "bag"
    (bag / "data" / "textures").mkdir(parents=True)
    (bag / "bagit.txt").write_text("BagIt-Version: 1.0\n")
    (bag / "data" / "textures" / "skin.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (bag / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # beside bagit.txt: not payload
    path = write_obj(bag / "data" / "models", texture="../textures/skin.png")
    (bag / "data" / "models" / "tetra.mtl").write_text(
        "newmtl skin\nmap_Kd ../textures/skin.png\nmap_Bump ../../skin_n.png\n"
    )
    c = characterize_mesh(path)
    assert errors(c) == ["models/tetra.mtl: texture '../../skin_n.png' leaves the package"]


def test_empty_meshes_are_problems(tmp_path):
    stl = tmp_path / "empty.stl"
    stl.write_text("solid empty\nendsolid empty\n")
    c = characterize_mesh(stl)
    assert c.valid is False
    assert "empty.stl: no faces (an empty mesh)" in c.problems
    obj = tmp_path / "points.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\n")
    c = characterize_mesh(obj)
    assert "points.obj: no faces (an empty mesh)" in c.problems
    ply = tmp_path / "nothing.ply"
    ply.write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\n"
        "property float y\nproperty float z\nelement face 0\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    assert "nothing.ply: no faces (an empty mesh)" in characterize_mesh(ply).problems


def test_ascii_stl_and_off(tmp_path):
    stl = tmp_path / "tri.stl"
    facets = "".join(
        f"facet normal 0 0 0\nouter loop\nvertex {a}\nvertex {b}\nvertex {c}\nendloop\nendfacet\n"
        for a, b, c in [
            ("0 0 0", "0 1 0", "1 0 0"),
            ("0 0 0", "1 0 0", "0 0 1"),
            ("0 0 0", "0 0 1", "0 1 0"),
            ("1 0 0", "0 1 0", "0 0 1"),
        ]
    )
    stl.write_text(f"solid tetra\n{facets}endsolid tetra\n")
    c = characterize_mesh(stl)
    assert c.valid is True, c.problems
    p = c.properties
    assert (p["stl_encoding"], p["faces"], p["vertices"], p["watertight"]) == ("ascii", 4, 4, True)
    cut = tmp_path / "cut.stl"
    cut.write_text(f"solid tetra\n{facets[:200]}")
    assert (
        "cut.stl: ASCII STL ends without 'endsolid' (truncated)" in characterize_mesh(cut).problems
    )

    off = tmp_path / "tetra.off"
    off.write_text(
        "OFF\n# a tetrahedron\n4 4 6\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
        "3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n"
    )
    c = characterize_mesh(off)
    assert c.valid is True, c.problems
    assert (c.properties["vertices"], c.properties["faces"]) == (4, 4)
    assert c.properties["watertight"] is True


def test_truncated_binary_files(tmp_path, bunny, stanford):
    data = (stanford / "dragon.ply").read_bytes()
    ply = tmp_path / "dragon.ply"
    ply.write_bytes(data[: len(data) - 1000])
    c = characterize_mesh(ply)
    assert c.valid is False
    assert "dragon.ply: truncated: the header's elements need" in problems_text(c)

    data = (bunny / "bunny.stl").read_bytes()
    stl = tmp_path / "bunny.stl"
    stl.write_bytes(data[:-10])
    c = characterize_mesh(stl)
    assert c.valid is False
    assert c.problems == [
        f"bunny.stl: binary STL header promises {BUNNY_FACES} triangles "
        f"({84 + 50 * BUNNY_FACES} bytes) but the file has {len(data) - 10} bytes"
    ]


def test_gzipped_vrml_and_its_texture_references(tmp_path, bunny):
    import gzip

    path = tmp_path / "bunny.wrl"
    path.write_bytes(gzip.compress((bunny / "bunny.wrl").read_bytes()))
    c = characterize_mesh(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["gzip"] is True
    assert (p["vertices"], p["faces"]) == (BUNNY_VERTICES, BUNNY_FACES)

    textured = tmp_path / "quad.wrl"
    textured.write_text(
        "#VRML V2.0 utf8\n"
        'Shape { appearance Appearance { texture ImageTexture { url [ "tex/wall.jpg" ] } }\n'
        "  geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 1 1 0, 0 1 0 ] }\n"
        "    coordIndex [ 0 1 2 3 -1 ]\n"
        "    texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1 ] }\n"
        "  } }\n"
    )
    c = characterize_mesh(textured)
    assert c.properties["textures"] == ["tex/wall.jpg"]
    assert (c.properties["vertices"], c.properties["faces"]) == (4, 1)
    assert c.properties["has_uvs"] is True
    assert errors(c) == ["quad.wrl: texture 'tex/wall.jpg' not found (looked for tex/wall.jpg)"]


def test_json_that_is_not_gltf(tmp_path):
    path = tmp_path / "scene.gltf"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    c = characterize_mesh(path)
    assert c.problems == [
        "scene.gltf: claims to be glTF by its name but its content is JSON that is not a glTF "
        "document"
    ]


def test_obj_counts_survive_the_load_limit(tmp_path):
    path = write_obj(tmp_path)
    (tmp_path / "skin.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "skin_n.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    p = characterize_mesh(path, max_load_bytes=10).properties
    assert (p["loaded"], p["vertices"], p["faces"], p["watertight"]) == (False, 4, 4, None)


def test_malformed_gltf_values_are_findings_not_crashes(tmp_path):
    doc, binary = tetrahedron_gltf("tetra.bin")
    doc["bufferViews"][0]["byteOffset"] = "zero"
    c = characterize_mesh(write_gltf(tmp_path, doc, binary))
    assert c.valid is False
    assert c.problems[0].startswith("tetra.gltf: malformed glTF structure: TypeError(")


@pytest.mark.parametrize("name", ["bunny.glb", "bunny_binary.ply", "bunny.stl", "bunny.gltf"])
def test_damaged_copies_never_raise(tmp_path, bunny, name):
    data = (bunny / name).read_bytes()
    rng = np.random.default_rng(11)
    for n, cut in enumerate([0, 1, 13, 84, 300, len(data) // 3, len(data) - 1]):
        path = tmp_path / f"{n}{Path(name).suffix}"
        damaged = bytearray(data[:cut])
        for at in rng.integers(0, max(cut, 1), 3 if cut > 100 else 0):
            damaged[at] ^= 0xFF
        path.write_bytes(bytes(damaged))
        c = characterize_mesh(path)
        assert c.valid is False, (cut, c.properties)
        assert c.problems
