"""Which pipeline a capture gets: a finished mesh is kept (normalized), else depth frames are
fused, else a point cloud is meshed, else photos are reconstructed; the declared capture mode
decides between kinds a package holds together."""

from __future__ import annotations

import shutil

import numpy as np
import trimesh

from arkhiv.reconstruct.pipelines import choose
from tests.synthetic_scene import make_scene, write_photo_set, write_polycam_export


def _ply_cloud(path) -> None:
    points = np.random.default_rng(1).normal(size=(200, 3))
    trimesh.PointCloud(points).export(path)


def test_each_kind_of_capture_gets_its_pipeline(tmp_path):
    scene = make_scene(seed=2, cameras=4)
    photos = tmp_path / "photos"
    write_photo_set(photos / "set", scene)
    assert choose(photos).pipeline == "photos"
    assert choose(photos).input == photos / "set" and len(choose(photos).sources) == 4

    cloud = tmp_path / "cloud"
    cloud.mkdir()
    _ply_cloud(cloud / "scan.ply")
    assert choose(cloud).pipeline == "point cloud"

    mesh = tmp_path / "mesh"
    mesh.mkdir()
    trimesh.creation.box().export(mesh / "model.ply")  # a PLY with faces is a mesh
    (mesh / "model.mtl").write_text("")
    assert choose(mesh).pipeline == "mesh" and choose(mesh).input == mesh / "model.ply"

    depth = tmp_path / "depth"
    write_polycam_export(depth / "export", scene)
    chosen = choose(depth)
    assert chosen.pipeline == "depth" and chosen.input == depth / "export"
    # The keyframe images are depth frames' colour, not a photo set of their own.
    assert all("keyframes" in str(source) for source in chosen.sources)

    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing to model")
    assert choose(empty) is None


def test_a_mesh_beats_the_photos_it_was_made_from_unless_the_mode_says_otherwise(tmp_path):
    scene = make_scene(seed=2, cameras=4)
    write_photo_set(tmp_path / "photos", scene)
    trimesh.creation.icosphere().export(tmp_path / "model.glb")
    shutil.copy(tmp_path / "model.glb", tmp_path / "smaller.obj")
    assert choose(tmp_path).pipeline == "mesh"
    assert choose(tmp_path).input == tmp_path / "model.glb"  # glTF binary before other formats
    assert choose(tmp_path, declared_mode="photos").pipeline == "photos"
    assert choose(tmp_path, declared_mode="point-cloud").pipeline == "mesh"  # none to be had
