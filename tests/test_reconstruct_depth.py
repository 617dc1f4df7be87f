"""Depth captures → mesh on a synthetic scene whose truth is known (tests/synthetic_scene.py):
the surface must lie on the truth and cover what the cameras saw, carry the scene's colours, be
written in a local frame; captures that cannot become a model must end with a reason and no
model."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import trimesh

from arkhiv.reconstruct.depth import (
    DepthOptions,
    _confidence_levels,
    _undistortion_border,
    mesh_from_depth,
)
from arkhiv.reconstruct.report import ReconstructionFailed
from arkhiv.reconstruct.surface import SurfaceOptions
from tests.synthetic_scene import (
    GHOST_CENTRE,
    GHOST_RADIUS,
    make_scene,
    write_photo_set,
    write_polycam_export,
    write_rgbd_folder,
)

OFFSET = (500_000.0, 0.0, 0.0)  # where a georeferenced capture would sit
STAGES = ["read", "depth", "fuse", "extract", "clean-up", "write"]


@pytest.fixture(scope="module")
def scene():
    return make_scene()


@pytest.fixture(scope="module")
def small_scene():
    """Six quarter-size views: enough for the failures, quick to render."""
    return make_scene(cameras=6, width=160, height=120, focal=140.0)


@pytest.fixture(scope="module")
def polycam(scene, tmp_path_factory):
    """A Polycam export (corrected poses, a ghost only low-confidence depth sees, keyframe 5
    blurred) fused into a model."""
    folder = tmp_path_factory.mktemp("polycam")
    write_polycam_export(folder / "capture", scene)
    report = mesh_from_depth(folder / "capture", folder / "out")
    return report, folder / "out"


@pytest.fixture(scope="module")
def rgbd(scene, tmp_path_factory):
    """An RGB-D folder 500 km from its origin, inside the folder an unzip would leave, with
    one depth map damaged."""
    folder = tmp_path_factory.mktemp("rgbd")
    capture = write_rgbd_folder(folder / "upload" / "scan", scene, offset=OFFSET)
    damaged = capture / "depth" / "frame-0003.png"
    damaged.write_bytes(damaged.read_bytes()[:2000])
    report = mesh_from_depth(folder / "upload", folder / "out")
    return report, folder / "out"


def _distances(points: np.ndarray, mesh: trimesh.Trimesh) -> np.ndarray:
    """Each point's distance to the mesh surface (open3d ray-casting scene)."""
    import open3d as o3d

    surface = o3d.t.geometry.RaycastingScene()
    surface.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.faces.astype(np.uint32)),
    )
    return surface.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


def _model_in_world(output) -> tuple[trimesh.Trimesh, trimesh.Trimesh, np.ndarray]:
    """(the model as written, the same moved back by the local frame's origin, the origin)."""
    model = trimesh.load(output / "model.glb", force="mesh")
    origin = np.array(json.loads((output / "work" / "local-frame.json").read_text())["origin"])
    placed = trimesh.Trimesh(model.vertices + origin, model.faces, process=False)
    return model, placed, origin


def _check_surface(scene, placed: trimesh.Trimesh) -> tuple[float, float]:
    """Chamfer both ways, by points sampled on each surface and their exact distance to the
    other. Only what at least 3 cameras saw is asked of the model (fusion keeps surfaces seen by
    3 frames). Sampled point to sampled point would add a floor of about 5 mm (the spacing of
    the samples), hiding the sub-millimetre figures measured here."""
    truth = scene.visible_surface_points(60_000, min_views=3, seed=1)
    sampled, _faces = trimesh.sample.sample_surface(placed, 60_000, seed=1)
    model_to_truth = _distances(sampled, scene.truth_mesh)
    truth_to_model = _distances(truth, placed)
    return float(model_to_truth.mean()), float(truth_to_model.mean())


def _check_colours(scene, placed: trimesh.Trimesh, colours: np.ndarray) -> None:
    """Vertex colours against what the cameras saw at the nearest true surface."""
    assert np.ptp(colours, axis=0).min() > 0.5  # not one colour
    points, normals = scene.closest_surface(placed.vertices)
    expected = scene.shaded_colour(points, normals)
    # Measured: mean absolute error 0.048 (Polycam: JPEG, depth at 1/4 size) and 0.018 (RGB-D);
    # correlation per channel at least 0.94 and 0.99.
    assert np.abs(colours - expected).mean() < 0.08
    for channel in range(3):
        assert np.corrcoef(colours[:, channel], expected[:, channel])[0, 1] > 0.85


def _check_outward(placed: trimesh.Trimesh) -> None:
    """Faces on the object face away from its centre (viewers cull back faces)."""
    centres = placed.triangles_center
    centre = np.array([0.0, 0.4, 0.0])
    on_object = (np.linalg.norm(centres - centre, axis=1) < 0.7) & (centres[:, 1] > 0.15)
    outward = np.sum(placed.face_normals[on_object] * (centres[on_object] - centre), axis=1) > 0
    assert on_object.sum() > 10_000 and outward.mean() > 0.98


def test_a_polycam_export_becomes_a_coloured_surface_on_the_truth(polycam, scene):
    report, output = polycam
    model, placed, origin = _model_in_world(output)
    assert report.failure is None and report.outputs == ["model.glb", "model.ply"]
    assert [stage.name for stage in report.stages] == STAGES
    assert all(stage.seconds >= 0 for stage in report.stages)
    assert sum(stage.seconds for stage in report.stages) > 0
    assert json.dumps(report.as_dict())
    read = report.figures("read")
    assert read["layout"] == "polycam" and read["poses"] == "corrected"
    assert read["skipped"] == [{"frame": "1650000001250000", "reason": "blurred (score 40)"}]
    depth = report.figures("depth")
    assert depth["usable"] == 23 and depth["low_confidence"] > 1000
    fuse = report.figures("fuse")
    assert fuse["voxel_size_m"] == 0.01 and fuse["fused"] == 23 and fuse["blocks"] > 100
    assert len(model.faces) > 100_000
    # Local frame: around the mean camera position (the truth is in the capture's world).
    centres = [camera.centre for index, camera in enumerate(scene.cameras) if index != 5]
    assert np.allclose(origin, np.mean(centres, axis=0), atol=1e-6)
    assert np.abs(model.vertices).max() < 3.0
    # Voxels of 1 cm: measured 0.6 mm model→truth and 3.1 mm truth→model (the edges of what
    # the cameras saw are where fusion stops short).
    model_to_truth, truth_to_model = _check_surface(scene, placed)
    assert model_to_truth < 0.2 * 0.01 and truth_to_model < 0.5 * 0.01, (
        model_to_truth,
        truth_to_model,
    )
    # The ghost measured only at low confidence was dropped: nothing was built there.
    ghost = np.linalg.norm(placed.vertices - GHOST_CENTRE, axis=1) < GHOST_RADIUS + 0.05
    assert not ghost.any()
    _check_colours(scene, placed, model.visual.vertex_colors[:, :3] / 255)
    _check_outward(placed)


def test_an_rgbd_folder_far_from_the_origin_is_written_in_a_local_frame(rgbd, scene):
    report, output = rgbd
    model, placed, origin = _model_in_world(output)
    assert report.failure is None and [stage.name for stage in report.stages] == STAGES
    assert report.figures("read")["layout"] == "rgbd"
    # The damaged depth map is skipped and listed; the other 23 frames are fused.
    assert report.figures("depth")["skipped"] == [
        {"frame": "frame-0003", "reason": "depth map cannot be read"}
    ]
    assert report.figures("fuse")["fused"] == 23
    assert len(model.faces) > 100_000
    # No coordinate near 500 km reaches the model; the offset is only in the working folder.
    assert np.abs(model.vertices).max() < 3.0
    assert origin[0] == pytest.approx(OFFSET[0], abs=2.0)
    placed.vertices -= OFFSET
    # Measured 0.3 mm model→truth and 1.9 mm truth→model.
    model_to_truth, truth_to_model = _check_surface(scene, placed)
    assert model_to_truth < 0.2 * 0.01 and truth_to_model < 0.5 * 0.01, (
        model_to_truth,
        truth_to_model,
    )
    _check_colours(scene, placed, model.visual.vertex_colors[:, :3] / 255)
    _check_outward(placed)


def _no_model(output) -> bool:
    return not (output / "model.glb").exists() and not (output / "model.ply").exists()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        ("photos", "neither a Polycam raw-data export .* nor an RGB-D folder"),
        (
            "polycam without depth",
            "looks like a Polycam raw-data export but lacks keyframes/depth/",
        ),
        ("rgbd without poses", "looks like an RGB-D folder but lacks poses/"),
    ],
)
def test_a_folder_of_neither_layout_says_what_is_missing(small_scene, tmp_path, make, reason):
    capture = tmp_path / "capture"
    if make == "photos":
        write_photo_set(capture, small_scene)
    elif make == "polycam without depth":
        write_polycam_export(capture, small_scene)
        shutil.rmtree(capture / "keyframes" / "depth")
    else:
        write_rgbd_folder(capture, small_scene)
        shutil.rmtree(capture / "poses")
    with pytest.raises(ReconstructionFailed, match=reason) as failed:
        mesh_from_depth(capture, tmp_path / "out")
    assert failed.value.report.failure == failed.value.reason
    assert _no_model(tmp_path / "out")


@pytest.mark.parametrize("emptied", ["depth all zero", "confidence all low"])
def test_frames_without_usable_depth_end_with_a_reason(small_scene, tmp_path, emptied):
    capture = tmp_path / "capture"
    if emptied == "depth all zero":
        write_rgbd_folder(capture, small_scene)
        maps, value = sorted((capture / "depth").glob("*.png")), np.uint16(0)
    else:
        write_polycam_export(capture, small_scene, corrected=False, blurry=())
        maps, value = sorted((capture / "keyframes" / "confidence").glob("*.png")), np.uint8(0)
    for path in maps:
        shape = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape
        cv2.imwrite(str(path), np.full(shape, value))
    with pytest.raises(ReconstructionFailed, match="no usable depth in any of the 6 readable"):
        mesh_from_depth(capture, tmp_path / "out")
    assert _no_model(tmp_path / "out")


def test_too_few_frames_end_with_a_reason_and_the_bad_ones_listed(small_scene, tmp_path):
    capture = write_polycam_export(tmp_path / "capture", small_scene, blurry=())
    cameras = sorted((capture / "keyframes" / "corrected_cameras").glob("*.json"))
    cameras[0].write_text("{not json")
    cameras[1].write_text(json.dumps({"fx": 100}))
    for camera in cameras[2:4]:
        camera.unlink()
    with pytest.raises(ReconstructionFailed, match="too few usable frames: 2 of 4") as failed:
        mesh_from_depth(capture, tmp_path / "out")
    skipped = failed.value.report.figures("read")["skipped"]
    assert [item["frame"] for item in skipped] == [cameras[0].stem, cameras[1].stem]
    assert skipped[0]["reason"].startswith("camera file cannot be read")
    assert skipped[1]["reason"].startswith("camera file lacks fy, cx, cy, width, height, t_00")
    assert _no_model(tmp_path / "out")


def test_a_surface_nothing_supports_ends_with_a_reason(small_scene, tmp_path):
    capture = write_rgbd_folder(tmp_path / "capture", small_scene)
    with pytest.raises(ReconstructionFailed, match="holds no surface seen by at least 100 frames"):
        mesh_from_depth(capture, tmp_path / "out", DepthOptions(min_weight=100))
    assert _no_model(tmp_path / "out")


def test_a_model_over_the_face_budget_is_decimated_and_keeps_its_colours(small_scene, tmp_path):
    capture = write_rgbd_folder(tmp_path / "capture", small_scene)
    options = DepthOptions(surface=SurfaceOptions(max_faces=5000))
    report = mesh_from_depth(capture, tmp_path / "out", options)
    decimated = report.figures("decimate")
    assert decimated["faces_before"] > 20_000 and decimated["faces"] <= 5000
    model = trimesh.load(tmp_path / "out" / "model.glb", force="mesh")
    assert len(model.faces) == decimated["faces"]
    assert np.ptp(model.visual.vertex_colors[:, :3], axis=0).min() > 100


def test_confidence_is_read_as_arkit_levels_or_as_polycam_bytes():
    assert _confidence_levels(np.array([[0, 1, 2]], np.uint8)).tolist() == [[0, 1, 2]]
    assert _confidence_levels(np.array([[0, 127, 255]], np.uint8)).tolist() == [[0, 1, 2]]


def test_only_the_black_border_of_an_undistorted_image_is_masked():
    image = np.full((60, 80, 3), 120, np.uint8)
    image[:, :5] = 0  # the border undistortion leaves
    image[20:30, 30:40] = 0  # a black object in the scene
    border = _undistortion_border(image)
    assert border[:, :5].all() and border.sum() == 60 * 5
