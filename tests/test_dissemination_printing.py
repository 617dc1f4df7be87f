"""Print-ready replicas: a real broken scan comes out a closed manifold solid, to scale, on the
plate, in STL and 3MF; an open surface is refused, or thickened on request."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
manifold3d = pytest.importorskip("manifold3d")
pytest.importorskip("open3d")
pytest.importorskip("skimage")
from lxml import etree  # noqa: E402

from arkhiv.dissemination.printing import (  # noqa: E402
    NotPrintable,
    PrintOptions,
    print_ready,
)
from tests.conftest import require  # noqa: E402

CORE_3MF = "{http://schemas.microsoft.com/3dmanufacturing/core/2015/02}"


@pytest.fixture(scope="module")
def bunny(corpora, tmp_path_factory):
    path = corpora / "3d-models" / "stanford" / "bun_zipper.ply"
    require("corpora", None if path.exists() else f"{path} is missing")
    output = tmp_path_factory.mktemp("bunny")
    return path, print_ready(path, output, 80.0)


def assert_manifold_solid(mesh: trimesh.Trimesh) -> None:
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.is_volume
    solid = manifold3d.Manifold(
        manifold3d.Mesh(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint32),
        )
    )
    assert solid.status() == manifold3d.Error.NoError
    assert solid.volume() == pytest.approx(mesh.volume, rel=1e-3)


def read_3mf(path) -> tuple[etree._Element, np.ndarray, np.ndarray]:
    with zipfile.ZipFile(path) as package:
        assert "[Content_Types].xml" in package.namelist()
        assert "3dmanufacturing" in package.read("_rels/.rels").decode()
        model = etree.fromstring(package.read("3D/3dmodel.model"))
    vertices = np.array(
        [[float(vertex.get(axis)) for axis in "xyz"] for vertex in model.iter(f"{CORE_3MF}vertex")]
    )
    faces = np.array(
        [
            [int(triangle.get(corner)) for corner in ("v1", "v2", "v3")]
            for triangle in model.iter(f"{CORE_3MF}triangle")
        ]
    )
    return model, vertices, faces


def test_the_stanford_bunny_becomes_a_closed_manifold_solid(bunny):
    _, report = bunny
    assert not report.watertight_before
    assert report.holes_found == report.holes_filled == 5  # the base of the scan is open
    assert report.watertight_after and report.manifold_after and not report.remeshed
    assert report.volume_mm3 > 0
    assert any("filled 5 of 5 holes" in line for line in report.repairs)
    stl = trimesh.load_mesh(report.files["stl"])
    assert_manifold_solid(stl)


def test_the_bunny_is_scaled_along_its_longest_axis_and_sits_on_the_plate(bunny):
    _, report = bunny
    stl = trimesh.load_mesh(report.files["stl"])
    assert stl.extents.max() == pytest.approx(80.0, rel=0.005)
    # on the plate (z = 0) and wholly in the positive octant
    assert stl.bounds[0] == pytest.approx((0.0, 0.0, 0.0), abs=1e-3)
    assert report.dimensions_mm == pytest.approx(tuple(stl.extents), abs=1e-3)
    # the scan is Y-up; on the plate its height (the ears) is along z
    assert stl.extents[2] > stl.extents[1]
    assert 0 < report.min_wall_mm < 80


def test_stl_and_3mf_reimport_with_the_same_faces_in_millimetres(bunny):
    _, report = bunny
    stl = trimesh.load_mesh(report.files["stl"])
    assert len(stl.faces) == report.faces_after
    model, vertices, faces = read_3mf(report.files["3mf"])
    assert model.get("unit") == "millimeter"
    assert len(faces) == report.faces_after
    assert np.allclose(vertices.min(axis=0), stl.bounds[0], atol=1e-3)
    assert np.allclose(vertices.max(axis=0), stl.bounds[1], atol=1e-3)
    assert_manifold_solid(trimesh.Trimesh(vertices, faces, process=False))
    # and trimesh's own 3MF reader agrees (it needs networkx, which scikit-image brings)
    scene = trimesh.load_scene(report.files["3mf"])
    assert scene.units == "millimeter"
    assert len(scene.to_mesh().faces) == report.faces_after


@pytest.fixture(scope="module")
def facade(tmp_path_factory):
    """A facade-like scan: an open sheet 4 wide and 3 tall, bent in plan, Y-up as in glTF."""
    across, up = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(0, 3, 31), indexing="ij")
    angle = across * 0.6
    vertices = np.stack(
        [4 * np.sin(angle), up, 4 * np.cos(angle) - 4 + 0.05 * np.sin(up * 5)], axis=-1
    ).reshape(-1, 3)
    corner = (np.arange(40)[:, None] * 31 + np.arange(30)[None, :]).ravel()
    faces = np.concatenate(
        [
            np.stack([corner, corner + 31, corner + 1], axis=1),
            np.stack([corner + 1, corner + 31, corner + 32], axis=1),
        ]
    )
    path = tmp_path_factory.mktemp("facade") / "facade.glb"
    trimesh.Trimesh(vertices, faces).export(path)
    return path


def test_an_open_facade_is_not_printable_as_it_stands(facade, tmp_path):
    with pytest.raises(NotPrintable) as refused:
        print_ready(facade, tmp_path, 80.0)
    assert "open surface" in refused.value.reason
    assert "solidify_mm" in refused.value.reason
    assert not list(tmp_path.iterdir())


def test_an_open_facade_can_be_printed_as_a_thickened_shell(facade, tmp_path):
    report = print_ready(
        facade, tmp_path, 80.0, formats=("stl",), options=PrintOptions(solidify_mm=3)
    )
    assert report.solidified_mm == 3 and report.remeshed
    assert any("3 mm shell" in line for line in report.repairs)
    stl = trimesh.load_mesh(report.files["stl"])
    assert_manifold_solid(stl)
    assert stl.extents.max() == pytest.approx(80.0, rel=0.005)
    assert stl.bounds[0, 2] == pytest.approx(0.0, abs=1e-3)
    # a shell about as thick as asked for
    assert 2.5 < report.min_wall_mm < 3.2
    assert set(report.files) == {"stl"}


def test_a_non_manifold_edge_is_remeshed_into_a_solid(tmp_path):
    first = trimesh.creation.box((1, 1, 1))
    second = trimesh.creation.box((1, 1, 1))
    second.apply_translation((1, 1, 0))  # the boxes share one edge, held by four faces
    trimesh.util.concatenate([first, second]).export(tmp_path / "pair.glb")
    report = print_ready(tmp_path / "pair.glb", tmp_path / "out", 20.0, axis="x")
    assert report.remeshed and report.remesh_pitch_mm == pytest.approx(0.2)
    stl = trimesh.load_mesh(report.files["stl"])
    assert_manifold_solid(stl)
    assert stl.extents[0] == pytest.approx(20.0, rel=0.005)
    assert report.volume_mm3 == pytest.approx(2 * 10.0**3, rel=0.05)


def test_bad_requests_are_refused(facade, tmp_path):
    with pytest.raises(ValueError):
        print_ready(facade, tmp_path, 0)
    with pytest.raises(ValueError):
        print_ready(facade, tmp_path, 50, axis="diagonal")
    with pytest.raises(ValueError):
        print_ready(facade, tmp_path, 50, formats=("obj",))
