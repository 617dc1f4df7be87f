"""Point cloud → mesh on real scans: the surface must lie on the points (Chamfer distance), the
model must be in a local frame, and bad clouds must end with a reason."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from arkhiv.reconstruct.pointcloud import PointCloudOptions, mesh_from_points
from arkhiv.reconstruct.report import ReconstructionFailed


def _chamfer(points: np.ndarray, surface: trimesh.Trimesh, samples: int = 20000) -> tuple:
    """(mean distance points→surface, mean distance surface→points), by nearest neighbours."""
    import open3d as o3d

    rng = np.random.default_rng(1)
    chosen = points[rng.choice(len(points), min(samples, len(points)), replace=False)]
    sampled, _faces = trimesh.sample.sample_surface(surface, samples * 5, seed=1)

    def cloud(array):
        return o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(array, float)))

    to_surface = np.mean(cloud(chosen).compute_point_cloud_distance(cloud(sampled)))
    to_points = np.mean(cloud(sampled).compute_point_cloud_distance(cloud(points)))
    return to_surface, to_points


def test_the_armadillo_scan_becomes_a_closed_surface_on_its_points(corpora, tmp_path):
    import open3d as o3d

    cloud = corpora / "3d-models/stanford/armadillo-pointcloud.ply"
    report = mesh_from_points(cloud, tmp_path)
    points = np.asarray(o3d.io.read_point_cloud(str(cloud)).points)
    model = trimesh.load(tmp_path / "model.glb", force="mesh")
    assert len(model.faces) > 50_000
    # Local frame: the model sits around the origin, moved by the cloud's centroid.
    local = points - points.mean(axis=0)
    extent = np.ptp(local, axis=0).max()
    assert np.abs(model.vertices.mean(axis=0)).max() < 0.05 * extent
    # Stated in the scan's own point spacing (0.41 units): measured 0.16 and 0.31.
    spacing = np.mean(o3d.io.read_point_cloud(str(cloud)).compute_nearest_neighbor_distance())
    to_surface, to_points = _chamfer(local, model)
    assert to_surface < 0.5 * spacing and to_points < 1.0 * spacing, (to_surface, to_points)
    assert report.figures("normals")["from_file"] is True
    assert report.outputs == ["points.ply", "model.glb", "model.ply"] and report.failure is None
    kept = np.asarray(o3d.io.read_point_cloud(str(tmp_path / "points.ply")).points)
    assert np.allclose(kept, local, atol=1e-9)  # every point, in the model's frame


def test_a_dense_cloud_is_thinned_for_the_surface_but_kept_whole(corpora, tmp_path):
    import open3d as o3d

    cloud = corpora / "3d-models/stanford/armadillo-pointcloud.ply"
    report = mesh_from_points(cloud, tmp_path, PointCloudOptions(max_surface_points=10_000))
    total = len(o3d.io.read_point_cloud(str(cloud)).points)
    assert 5_000 < report.figures("read")["thinned_for_surface"] <= 10_000
    assert report.figures("surface")["points"] == report.figures("read")["thinned_for_surface"]
    assert len(o3d.io.read_point_cloud(str(tmp_path / "points.ply")).points) == total


def test_a_georeferenced_las_is_written_in_a_local_frame(corpora, tmp_path):
    import laspy

    cloud = corpora / "pointclouds/simple.las"
    data = laspy.read(cloud)
    report = mesh_from_points(cloud, tmp_path)
    model = trimesh.load(tmp_path / "model.glb", force="mesh")
    far = np.abs(np.column_stack([data.x, data.y, data.z])).max()
    assert np.abs(model.vertices).max() < far / 10  # nowhere near the site's coordinates
    assert report.figures("normals")["from_file"] is False


def test_a_coloured_laz_keeps_its_colours_and_none_of_its_georeference(corpora, tmp_path):
    import laspy
    import open3d as o3d

    cloud = corpora / "pointclouds/simple.laz"
    data = laspy.read(cloud)
    report = mesh_from_points(cloud, tmp_path)
    original = np.column_stack([data.x, data.y, data.z])
    kept = o3d.io.read_point_cloud(str(tmp_path / "points.ply"))
    assert np.allclose(np.asarray(kept.points), original - original.mean(axis=0), atol=1e-6)
    # This file puts 8-bit values in LAS's 16-bit channels (as many writers do): read as 8-bit,
    # not as near-black.
    rgb = np.column_stack([data.red, data.green, data.blue])
    assert rgb.max() <= 255
    assert np.allclose(np.asarray(kept.colors), rgb / 255.0, atol=1e-6)
    model = trimesh.load(tmp_path / "model.glb", force="mesh")
    assert model.visual.kind == "vertex" and len(model.faces) > 0
    assert np.abs(model.vertices).max() < np.abs(original).max() / 10
    assert report.figures("read")["colours"] is True


def test_the_e57_bunny_becomes_a_surface_on_its_points(corpora, tmp_path):
    import open3d as o3d
    import pye57

    cloud = corpora / "pointclouds/bunnyDouble.e57"
    scan = pye57.E57(str(cloud)).read_scan(0, ignore_missing_fields=True)
    points = np.column_stack([scan["cartesianX"], scan["cartesianY"], scan["cartesianZ"]])
    report = mesh_from_points(cloud, tmp_path)
    local = points - points.mean(axis=0)
    model = trimesh.load(tmp_path / "model.glb", force="mesh")
    spacing = np.mean(
        o3d.geometry.PointCloud(
            o3d.utility.Vector3dVector(local)
        ).compute_nearest_neighbor_distance()
    )
    to_surface, to_points = _chamfer(local, model)
    assert to_surface < 0.5 * spacing and to_points < 1.0 * spacing, (to_surface, to_points)
    assert report.figures("read")["points"] == len(points)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "usable points"), (b"ply\nformat ascii 1.0\nend_header\n", "usable points")],
)
def test_empty_and_broken_clouds_end_with_a_reason(tmp_path, corpora, content, reason):
    cloud = tmp_path / "cloud.ply"
    if content is None:
        cloud.write_text(
            "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
            "property float y\nproperty float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
        )
    else:
        cloud.write_bytes(content)
    with pytest.raises(ReconstructionFailed, match=reason):
        mesh_from_points(cloud, tmp_path / "out")
    assert not (tmp_path / "out" / "model.glb").exists()


def test_a_damaged_e57_is_refused(corpora, tmp_path):
    with pytest.raises(ReconstructionFailed, match="cannot be read"):
        mesh_from_points(corpora / "pointclouds/bad-crc.e57", tmp_path)
