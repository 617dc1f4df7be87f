"""Dense multi-view stereo on the CPU, from the poses structure from motion found.

COLMAP's PatchMatch stereo needs CUDA, so on the CPU Arkhiv does its own, from OpenCV and
numpy parts:

1. the photos are undistorted to pinhole cameras (COLMAP's undistorter);
2. each view gets its best stereo partners: views sharing many sparse points, seen under a
   triangulation angle wide enough for depth but narrow enough to match, side by side (the
   matcher searches along rows);
3. each pair is rectified and matched with semi-global block matching; the disparity search is
   limited to what the pair's shared sparse points allow, so little time goes to impossible
   depths, and each matched pixel becomes a point with the colour it was seen in;
4. a point is kept only when the depth map of another view, from another pair of photos,
   agrees with it (cross-view geometric consistency): what one pair got wrong in a blank wall or
   the sky, the others do not confirm;
5. the points are thinned on a voxel grid and given normals facing the cameras that saw them.

The surface is then fitted by `surface.surface_from_points` and coloured from the views by
`colour_from_views`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport


@dataclass(frozen=True)
class StereoOptions:
    max_image_side: int = 1600  # pairs are rectified and matched at this size
    partners: int = 2  # stereo partners per view
    min_shared_points: int = 30
    min_angle_degrees: float = 3.0  # triangulation angle of the shared points (median)
    max_angle_degrees: float = 45.0
    max_disparities: int = 384
    block_size: int = 5
    min_texture: float = 2.0  # grey-level spread around a pixel below which it is not matched
    consistency_tolerance: float = 0.01  # depths agree within this share of the depth
    min_consistent_views: int = 1  # other views whose depth maps confirm a point
    pixel_stride: int = 2  # every n-th matched pixel in each direction becomes a point
    voxels_per_stride: float = 1.0  # the point grid: this many strides' footprint at the depth
    threads: int = 2


class PairSkipped(Exception):
    """A stereo pair whose geometry cannot be matched (checked before any matcher allocates):
    the pair is left out and counted, the others go on. The message is the reason, said the
    same way for every pair it applies to, so the report can count them."""


@dataclass
class View:
    name: str
    image: np.ndarray  # undistorted RGB, uint8
    calibration: np.ndarray  # 3x3 pinhole K at the image's size
    rotation: np.ndarray  # world → camera
    translation: np.ndarray
    point_ids: set[int]

    @property
    def centre(self) -> np.ndarray:
        return -self.rotation.T @ self.translation

    def scaled(self, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """(image, K) at `factor` times the size."""
        import cv2

        if factor >= 1.0:
            return self.image, self.calibration
        height, width = self.image.shape[:2]
        size = (round(width * factor), round(height * factor))
        calibration = self.calibration.copy()
        calibration[:2] *= factor
        return cv2.resize(self.image, size, interpolation=cv2.INTER_AREA), calibration

    def project(self, points: np.ndarray, calibration: np.ndarray):
        """(u, v, depth) of world points in this view at the size of `calibration`."""
        camera = points @ self.rotation.T + self.translation
        depth = camera[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = calibration[0, 0] * camera[:, 0] / depth + calibration[0, 2]
            v = calibration[1, 1] * camera[:, 1] / depth + calibration[1, 2]
        return u, v, depth


@dataclass
class DenseCloud:
    points: np.ndarray  # float64, Nx3, world frame of the sparse model
    colours: np.ndarray  # float64 0..1
    normals: np.ndarray  # unit, facing the cameras that saw the points
    spacing: float  # the point grid's cell size


def load_views(
    sparse: Path, images: Path, work: Path, threads: int
) -> tuple[list[View], dict[int, np.ndarray]]:
    """The registered photos, undistorted to pinhole cameras, with their poses; and the sparse
    points by id."""
    import cv2
    import pycolmap

    undistorted = work / "undistorted"
    pycolmap.undistort_images(undistorted, sparse, images, num_threads=threads)
    model = pycolmap.Reconstruction(undistorted / "sparse")
    views = []
    for image in sorted(model.images.values(), key=lambda image: image.name):
        if not image.has_pose:
            continue
        pose = image.cam_from_world()
        pixels = cv2.imread(str(undistorted / "images" / image.name), cv2.IMREAD_COLOR)
        if pixels is None:
            continue
        views.append(
            View(
                image.name,
                cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB),
                image.camera.calibration_matrix(),
                np.asarray(pose.rotation.matrix()),
                np.asarray(pose.translation),
                {p.point3D_id for p in image.points2D if p.has_point3D()},
            )
        )
    return views, {pid: np.asarray(point.xyz) for pid, point in model.points3D.items()}


def dense_cloud(
    views: list[View],
    sparse_points: dict[int, np.ndarray],
    options: StereoOptions,
    report: ReconstructionReport,
) -> DenseCloud:
    import cv2
    import open3d as o3d

    cv2.setNumThreads(options.threads)
    report.software["opencv"] = cv2.__version__
    with report.stage("stereo pairs") as stage:
        pairs = choose_pairs(views, sparse_points, options)
        stage.figures.update(
            pairs=len(pairs), views_with_partners=len({i for i, _j, _d in pairs}), views=len(views)
        )
        if not pairs:
            raise ReconstructionFailed(
                "no two placed photos form a usable stereo pair (too little overlap, or a "
                "viewing angle too narrow or too wide between them)"
            )
    with report.stage("stereo matching") as stage:
        factor = {
            i: min(1.0, options.max_image_side / max(view.image.shape[:2]))
            for i, view in enumerate(views)
        }
        # (view, partner, points, colours): the points belong to the view's depth
        measured: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        matched_pixels = 0
        skipped: Counter[str] = Counter()
        for i, j, shared in pairs:
            try:
                points, colours, pixels = _match_pair(
                    views[i], views[j], factor[i], factor[j], shared, options
                )
            except PairSkipped as why:
                skipped[str(why)] += 1
                continue
            matched_pixels += pixels
            if len(points):
                measured.append((i, j, points, colours))
            else:
                skipped["no pixel matched"] += 1
        stage.figures.update(
            matched_pixels=matched_pixels,
            points=sum(len(m[2]) for m in measured),
            pairs_matched=len(measured),
            pairs_skipped=dict(skipped),
        )
        if not measured:
            reasons = "; ".join(f"{why}: {n}" for why, n in skipped.most_common())
            raise ReconstructionFailed(
                f"stereo matching found no depth in any of the {len(pairs)} photo pairs ({reasons})"
            )
    with report.stage("depth consistency") as stage:
        depth_maps = _depth_maps(views, factor, measured)
        kept_points, kept_colours, directions = [], [], []
        for i, j, points, colours in measured:
            confirmed_by = np.zeros(len(points), dtype=np.int32)
            for v in {v for v, _w in depth_maps} - {i}:
                # Another view confirms a point only through a pair that is not this one
                # reversed: the same two images would repeat the same mistakes.
                agrees = np.zeros(len(points), dtype=bool)
                for (view, partner), (calibration, depth_map) in depth_maps.items():
                    if view == v and {view, partner} != {i, j}:
                        agrees |= _agrees(
                            views[v], calibration, depth_map, points, options.consistency_tolerance
                        )
                confirmed_by += agrees
            keep = confirmed_by >= options.min_consistent_views
            kept_points.append(points[keep])
            kept_colours.append(colours[keep])
            towards = views[i].centre - points[keep]
            directions.append(towards / np.linalg.norm(towards, axis=1, keepdims=True))
        points = np.concatenate(kept_points).astype(np.float64)
        stage.figures.update(
            consistent_points=len(points),
            share_kept=round(len(points) / max(1, sum(len(m[2]) for m in measured)), 3),
        )
        if len(points) < 1000:
            raise ReconstructionFailed(
                f"only {len(points)} points were confirmed by more than one view: the photos "
                "do not see the same surfaces well enough for a dense model"
            )
    with report.stage("point grid") as stage:
        spacing = _grid_spacing(views, factor, points, options)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        pcd.colors = o3d.utility.Vector3dVector(np.concatenate(kept_colours) / 255.0)
        # The viewing directions ride along as normals: averaged per cell, they then orient
        # the estimated normals towards the cameras.
        pcd.normals = o3d.utility.Vector3dVector(np.concatenate(directions).astype(np.float64))
        pcd = pcd.voxel_down_sample(spacing)
        pcd, _kept = pcd.remove_statistical_outlier(nb_neighbors=20, std_ratio=2.0)
        pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * spacing, max_nn=30))
        stage.figures.update(points=len(pcd.points), spacing=round(float(spacing), 6))
    return DenseCloud(
        np.asarray(pcd.points), np.asarray(pcd.colors), np.asarray(pcd.normals), spacing
    )


def choose_pairs(
    views: list[View], sparse_points: dict[int, np.ndarray], options: StereoOptions
) -> list[tuple[int, int, np.ndarray]]:
    """(view, partner, the sparse points both see in front of the view) for each view's best
    partners: the most shared points, discounted outside an 8-20° triangulation angle."""
    pairs = []
    for i, view in enumerate(views):
        candidates = []
        for j, other in enumerate(views):
            if j == i:
                continue
            shared = view.point_ids & other.point_ids
            if len(shared) < options.min_shared_points:
                continue
            xyz = np.array([sparse_points[pid] for pid in shared if pid in sparse_points])
            rays_i = xyz - view.centre
            rays_j = xyz - other.centre
            cosine = np.sum(rays_i * rays_j, axis=1) / (
                np.linalg.norm(rays_i, axis=1) * np.linalg.norm(rays_j, axis=1)
            )
            angle = math.degrees(float(np.median(np.arccos(np.clip(cosine, -1, 1)))))
            if not options.min_angle_degrees <= angle <= options.max_angle_degrees:
                continue
            baseline = view.rotation @ (other.centre - view.centre)
            if abs(baseline[1]) > abs(baseline[0]):
                continue  # one above the other: the matcher searches along rows
            in_front = (xyz @ view.rotation.T + view.translation)[:, 2] > 0
            if in_front.sum() < options.min_shared_points:
                continue
            # Narrow angles give noisy depth, wide ones long searches and occlusions.
            score = len(shared) * min(1.0, angle / 8.0) * min(1.0, 20.0 / angle)
            candidates.append((score, j, xyz[in_front]))
        candidates.sort(key=lambda candidate: candidate[0], reverse=True)
        for _score, j, shared in candidates[: options.partners]:
            pairs.append((i, j, shared))
    return pairs


def _match_pair(
    left: View,
    right: View,
    left_factor: float,
    right_factor: float,
    shared: np.ndarray,
    options: StereoOptions,
):
    """World points (float32), their colours (uint8) and the number of matched pixels, from
    rectifying and matching `left` against `right`; the points belong to `left`. `shared`: the
    sparse points both see, which bound the disparities searched.

    The rectification is checked before the matcher allocates anything: strongly converging
    views, or a partner far to one side, can give a disparity range or an offset that is not
    finite, larger than the image, or negative enough for OpenCV to compute a negative buffer
    size (an iPhone set made it ask for 18 EB). Such a pair raises PairSkipped."""
    import cv2

    image_l, k_l = left.scaled(left_factor)
    image_r, k_r = right.scaled(right_factor)
    size = (image_l.shape[1], image_l.shape[0])
    rotation = right.rotation @ left.rotation.T
    translation = right.translation - rotation @ left.translation
    no_distortion = np.zeros(5)
    # Principal points are left free (no CALIB_ZERO_DISPARITY) and every source pixel kept
    # (alpha 1): converging views, as when walking around an object, would otherwise need
    # disparities wider than the image or lose most of it to the crop.
    r_l, r_r, p_l, p_r, _q, _roi_l, _roi_r = cv2.stereoRectify(
        k_l,
        no_distortion,
        k_r,
        no_distortion,
        size,
        rotation,
        translation.reshape(3, 1),  # OpenCV 5 rejects a flat vector here
        flags=0,
        alpha=1,
    )
    if not all(np.isfinite(m).all() for m in (r_l, r_r, p_l, p_r)):
        raise PairSkipped("rectification failed (degenerate geometry)")
    if abs(p_r[1, 3]) > abs(p_r[0, 3]):
        raise PairSkipped("rectified one above the other")
    low, count, mirrored = _disparity_search(shared, left, r_l, p_l, p_r, size, options)
    map_l = cv2.initUndistortRectifyMap(k_l, no_distortion, r_l, p_l, size, cv2.CV_32FC1)
    map_r = cv2.initUndistortRectifyMap(k_r, no_distortion, r_r, p_r, size, cv2.CV_32FC1)
    rect_l = cv2.remap(image_l, *map_l, cv2.INTER_LINEAR)
    rect_r = cv2.remap(image_r, *map_r, cv2.INTER_LINEAR)
    if mirrored:
        rect_l, rect_r = rect_l[:, ::-1].copy(), rect_r[:, ::-1].copy()
    block = options.block_size
    matcher = cv2.StereoSGBM_create(
        minDisparity=low,
        numDisparities=count,
        blockSize=block,
        P1=8 * 3 * block**2,
        P2=32 * 3 * block**2,
        disp12MaxDiff=1,
        uniquenessRatio=10,
        speckleWindowSize=100,
        speckleRange=2,
        mode=cv2.StereoSGBM_MODE_SGBM_3WAY,
    )
    try:
        disparity = matcher.compute(rect_l, rect_r).astype(np.float32) / 16.0
    except cv2.error as exc:  # whatever got past the checks above: this pair, not the job
        raise PairSkipped(f"the matcher refused the pair ({exc.err or 'OpenCV error'})") from None
    valid = disparity >= low  # the matcher marks failures with low - 1
    if mirrored:
        disparity, valid, rect_l = -disparity[:, ::-1], valid[:, ::-1], rect_l[:, ::-1]
    valid &= _textured(rect_l, options.min_texture)
    matched = int(valid.sum())
    stride = options.pixel_stride
    grid = np.zeros_like(valid)
    grid[::stride, ::stride] = True
    rows, cols = np.nonzero(valid & grid)
    # x_l - x_r = (cx_l - cx_r) - f*Tx / Z, so Z = f*Tx / ((cx_l - cx_r) - d).
    with np.errstate(divide="ignore"):
        depth = p_r[0, 3] / (p_l[0, 2] - p_r[0, 2] - disparity[rows, cols])
    ahead = np.isfinite(depth) & (depth > 0)
    rows, cols, depth = rows[ahead], cols[ahead], depth[ahead]
    rectified = np.column_stack(
        [
            (cols - p_l[0, 2]) / p_l[0, 0] * depth,
            (rows - p_l[1, 2]) / p_l[1, 1] * depth,
            depth,
        ]
    )
    camera = rectified @ r_l  # rectified → left camera (r_l is orthonormal)
    world = (camera - left.translation) @ left.rotation  # camera → world
    return world.astype(np.float32), rect_l[rows, cols], matched


def _disparity_search(shared, left, r_l, p_l, p_r, size, options) -> tuple[int, int, bool]:
    """(lowest disparity, how many to search, whether to match mirrored images) from where the
    shared sparse points fall in both rectified images; PairSkipped when they say the pair
    cannot be matched."""
    width, height = size
    rect = (shared @ left.rotation.T + left.translation) @ r_l.T
    ahead = rect[:, 2] > 1e-9 * max(1.0, float(np.abs(rect).max(initial=0.0)))
    if ahead.sum() < options.min_shared_points:
        raise PairSkipped("the shared points lie behind the rectified cameras")
    rect = rect[ahead]
    x_l = p_l[0, 0] * rect[:, 0] / rect[:, 2] + p_l[0, 2]
    y_l = p_l[1, 1] * rect[:, 1] / rect[:, 2] + p_l[1, 2]
    x_r = (p_r[0, 0] * rect[:, 0] + p_r[0, 3]) / rect[:, 2] + p_r[0, 2]
    inside = (
        np.isfinite(x_l)
        & np.isfinite(x_r)
        & (x_l >= 0)
        & (x_l < width)
        & (x_r >= 0)
        & (x_r < width)
        & (y_l >= 0)
        & (y_l < height)
    )
    # The rectified images keep every source pixel (alpha 1); when views converge strongly
    # they are squeezed into a corner and most shared points fall outside one of them.
    if inside.sum() < max(options.min_shared_points, 0.5 * len(rect)):
        raise PairSkipped("too little overlap once rectified (the views converge too strongly)")
    signed = (x_l - x_r)[inside]
    mirrored = bool(np.median(signed) < 0)  # the partner stands to the left: match mirrored
    found = -signed if mirrored else signed
    lowest, highest = (float(v) for v in np.percentile(found, [2, 98]))
    margin = 0.15 * (highest - lowest) + 8
    needed = highest + margin - (lowest - margin)
    if needed > 2 * options.max_disparities:
        raise PairSkipped("the disparity range is too wide (the partner is far to one side)")
    low = math.floor(lowest - margin)
    count = min(options.max_disparities, 16 * math.ceil(needed / 16))
    # OpenCV sizes its buffers from the image width and these: a minimum disparity of the
    # order of the width, either side, makes them negative or absurd.
    if not -width < low < width or count <= 0 or low + count >= width:
        raise PairSkipped("the disparities fall outside the image")
    return low, count, mirrored


def _depth_maps(views, factor, measured):
    """Per (view, partner) pair: (K at the matching size, the pair's nearest depth per pixel of
    the view, inf where it found none)."""
    maps = {}
    for i, j, points, _colours in measured:
        view = views[i]
        height, width = (round(s * factor[i]) for s in view.image.shape[:2])
        calibration = view.calibration.copy()
        calibration[:2] *= factor[i]
        depth_map = np.full(height * width, np.inf, dtype=np.float32)
        u, v, depth = view.project(points, calibration)
        u, v = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (depth > 0)
        np.minimum.at(depth_map, v[inside] * width + u[inside], depth[inside])
        maps[(i, j)] = (calibration, depth_map.reshape(height, width))
    return maps


def _agrees(view: View, calibration, depth_map, points, tolerance) -> np.ndarray:
    height, width = depth_map.shape
    u, v, depth = view.project(points, calibration)
    inside = (u >= 0) & (u < width - 0.5) & (v >= 0) & (v < height - 0.5) & (depth > 0)
    seen = np.full(len(points), np.inf, dtype=np.float32)
    seen[inside] = depth_map[
        np.round(v[inside]).astype(np.int64), np.round(u[inside]).astype(np.int64)
    ]
    return np.abs(seen - depth) < tolerance * depth


def _grid_spacing(views, factor, points, options) -> float:
    """The footprint of `pixel_stride` pixels at the median depth: finer adds no detail the
    matching could resolve."""
    sample = points[:: max(1, len(points) // 20000)]
    footprints = []
    for i, view in enumerate(views):
        depth = (sample @ view.rotation.T + view.translation)[:, 2]
        depth = depth[depth > 0]
        if len(depth):
            focal = view.calibration[0, 0] * factor[i]
            footprints.append(np.median(depth) / focal)
    return float(np.median(footprints)) * options.pixel_stride * options.voxels_per_stride


def colour_from_views(mesh, views: list[View], threads: int = 2) -> dict:
    """Vertex colours sampled from the photos that see each vertex squarely: a weighted mean
    over the views where the vertex is visible (the ray from the camera hits the mesh there
    first), weighted by the cosine of the viewing angle to the fourth power so frontal views
    dominate and grazing ones barely count."""
    import open3d as o3d

    mesh.compute_vertex_normals()
    vertices = np.asarray(mesh.vertices)
    normals = np.asarray(mesh.vertex_normals)
    scene = o3d.t.geometry.RaycastingScene(nthreads=threads)
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    total = np.zeros((len(vertices), 3))
    weights = np.zeros(len(vertices))
    for view in views:
        height, width = view.image.shape[:2]
        u, v, depth = view.project(vertices, view.calibration)
        inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1) & (depth > 0)
        towards = view.centre - vertices
        distance = np.linalg.norm(towards, axis=1)
        cosine = np.einsum("ij,ij->i", normals, towards) / np.maximum(distance, 1e-12)
        candidates = np.nonzero(inside & (cosine > 0.1))[0]
        if not len(candidates):
            continue
        # Visible when nothing of the mesh lies between the camera and the vertex.
        origins = np.repeat(view.centre[None], len(candidates), axis=0)
        rays = np.hstack([origins, towards[candidates] * -1 / distance[candidates, None]])
        hits = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        visible = hits >= distance[candidates] * (1 - 1e-3)
        chosen = candidates[visible]
        samples = _bilinear(view.image, u[chosen], v[chosen])
        weight = cosine[chosen] ** 4
        total[chosen] += samples * weight[:, None]
        weights[chosen] += weight
    seen = weights > 0
    colours = np.full((len(vertices), 3), 0.5)
    colours[seen] = total[seen] / weights[seen, None] / 255.0
    if mesh.has_vertex_colors():  # unseen vertices keep the colour the points gave them
        colours[~seen] = np.asarray(mesh.vertex_colors)[~seen]
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.clip(colours, 0, 1))
    return {"vertices_seen": int(seen.sum()), "vertices": len(vertices)}


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours at sub-pixel positions (inside the image)."""
    height, width = image.shape[:2]
    u0 = np.clip(np.floor(u).astype(np.int64), 0, width - 2)
    v0 = np.clip(np.floor(v).astype(np.int64), 0, height - 2)
    du, dv = (u - u0)[:, None], (v - v0)[:, None]
    pixels = image.astype(np.float64)
    return (
        pixels[v0, u0] * (1 - du) * (1 - dv)
        + pixels[v0, u0 + 1] * du * (1 - dv)
        + pixels[v0 + 1, u0] * (1 - du) * dv
        + pixels[v0 + 1, u0 + 1] * du * dv
    )


def _textured(image: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels with enough local contrast to be matched: in a clear sky or a blank wall any
    disparity fits equally well, and what the matcher picks there is noise."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.blur(grey, (7, 7))
    spread = np.sqrt(np.maximum(cv2.blur(grey * grey, (7, 7)) - mean * mean, 0))
    return spread >= threshold


def patch_match_cloud(work: Path, report: ReconstructionReport) -> DenseCloud:
    """COLMAP's PatchMatch stereo and fusion, for pycolmap builds with CUDA, on the workspace
    `load_views` undistorted into."""
    import open3d as o3d
    import pycolmap

    workspace = work / "undistorted"
    with report.stage("patch match stereo (CUDA)"):
        pycolmap.patch_match_stereo(workspace)
    with report.stage("stereo fusion") as stage:
        fused = workspace / "fused.ply"
        pycolmap.stereo_fusion(fused, workspace, output_type="PLY")
        pcd = o3d.io.read_point_cloud(str(fused))
        if len(pcd.points) < 1000 or not pcd.has_normals():
            raise ReconstructionFailed(
                f"stereo fusion kept {len(pcd.points)} points: too few for a dense model"
            )
        spacing = float(np.mean(pcd.compute_nearest_neighbor_distance()))
        stage.figures.update(points=len(pcd.points), spacing=round(spacing, 6))
    return DenseCloud(
        np.asarray(pcd.points), np.asarray(pcd.colors), np.asarray(pcd.normals), spacing
    )
