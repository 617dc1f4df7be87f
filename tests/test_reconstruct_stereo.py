"""Dense stereo cannot be killed by one pair. An iPhone photo set made OpenCV ask for 18 EB
(a negative size) in the matcher: a pair of strongly converging views whose rectification puts
the shared points behind one camera, so the disparity search started near minus a million. Every
pair's rectification is now checked before matching; a pair that fails is skipped, counted in
the report with why, and the others make the cloud."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arkhiv.reconstruct import stereo
from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport
from arkhiv.reconstruct.stereo import PairSkipped, StereoOptions, View, dense_cloud
from tests.synthetic_scene import make_scene


def _look_at(centre: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    forward = (target - centre) / np.linalg.norm(target - centre)
    right = np.cross([0.0, -1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])
    return rotation, -rotation @ centre


def _pair(converging_degrees: float, partner_distance: float):
    """Two 1600x1200 views of 300 points around a target 5 m ahead: the partner stands
    `partner_distance` from the target, `converging_degrees` round from the first view."""
    rng = np.random.default_rng(1)
    calibration = np.array([[1400.0, 0, 800], [0, 1400.0, 600], [0, 0, 1]])
    image = rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    target = np.array([0.0, 0.0, 5.0])
    points = target + rng.uniform([-1.5, -1, -1.5], [1.5, 1, 1.5], (300, 3))
    angle = math.radians(converging_degrees)
    partner = target + partner_distance * np.array([math.sin(angle), 0, -math.cos(angle)])
    left = View("left.jpg", image, calibration, *_look_at(np.zeros(3), target), set())
    right = View("right.jpg", image, calibration, *_look_at(partner, target), set())
    return left, right, points


def test_the_pair_that_made_opencv_ask_for_exabytes_is_skipped_with_a_reason():
    left, right, shared = _pair(140, 2.0)  # before: minDisparity -931,369, then cv2.error
    with pytest.raises(PairSkipped, match="converge too strongly"):
        stereo._match_pair(left, right, 1.0, 1.0, shared, StereoOptions())
    left, right, shared = _pair(10, 5.0)  # an ordinary pair is still matched
    points, _colours, matched = stereo._match_pair(left, right, 1.0, 1.0, shared, StereoOptions())
    assert matched > 100_000 and len(points) > 10_000


@pytest.fixture(scope="module")
def ring():
    """Sixteen rendered views round a known object, as placed views with the sparse points they
    see (the true geometry stands in for structure from motion)."""
    scene = make_scene(seed=11, cameras=16, ground=False)
    sparse = {
        number: point
        for number, point in enumerate(scene.visible_surface_points(3000, min_views=2, seed=4))
    }
    views = []
    for number, rendered in enumerate(scene.views):
        camera = rendered.camera
        u, v, depth = _project(camera, np.array(list(sparse.values())))
        seen = (depth > 0) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
        views.append(
            View(
                f"view-{number:02d}.jpg",
                rendered.colour,
                camera.matrix,
                camera.rotation,
                camera.translation,
                {pid for pid, visible in zip(sparse, seen, strict=True) if visible},
            )
        )
    return views, sparse


def _project(camera, points):
    local = points @ camera.rotation.T + camera.translation
    return (
        camera.fx * local[:, 0] / local[:, 2] + camera.cx,
        camera.fy * local[:, 1] / local[:, 2] + camera.cy,
        local[:, 2],
    )


def test_a_bad_pair_is_counted_and_the_cloud_made_from_the_others(ring, monkeypatch):
    views, sparse = ring
    options = StereoOptions(max_image_side=640)
    good = stereo.choose_pairs(views, sparse, options)
    assert good
    # Views 0 and 3 of the lower ring stand 135° apart: the geometry of the iPhone's pair.
    shared = np.array([sparse[pid] for pid in views[0].point_ids & views[3].point_ids])
    monkeypatch.setattr(stereo, "choose_pairs", lambda *_args: [*good, (0, 3, shared)])
    report = ReconstructionReport("photos", {})
    cloud = dense_cloud(views, sparse, options, report)
    figures = report.figures("stereo matching")
    assert figures["pairs_matched"] == len(good)
    assert sum(figures["pairs_skipped"].values()) == 1, figures
    assert len(cloud.points) > 1000


def test_when_no_pair_can_be_matched_the_reason_says_why(ring, monkeypatch):
    views, sparse = ring
    shared = np.array([sparse[pid] for pid in views[0].point_ids & views[3].point_ids])
    monkeypatch.setattr(stereo, "choose_pairs", lambda *_args: [(0, 3, shared), (3, 0, shared)])
    with pytest.raises(ReconstructionFailed, match=r"none of the 2 photo pairs|any of the 2"):
        dense_cloud(views, sparse, StereoOptions(max_image_side=640), ReconstructionReport("p", {}))
