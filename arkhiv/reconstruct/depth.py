"""Depth captures → mesh: Polycam raw-data exports or generic RGB-D folders with poses → depth
fused into a truncated signed distance volume (open3d's VoxelBlockGrid) → its zero surface,
coloured from the images → clean-up → a glTF binary master and a PLY.

Two layouts are read (a single top-level subfolder, as unzipping often leaves, is looked into):

- **Polycam raw data** (LiDAR captures with developer mode on): `keyframes/cameras/NAME.json`
  (`fx, fy, cx, cy, width, height` for the image, `t_00 … t_23` the camera-to-world transform,
  row by row, in ARKit's convention: the camera looks down -Z with +Y up, the world is Y-up;
  `blur_score`, lower is blurrier), `keyframes/images/NAME.jpg`, `keyframes/depth/NAME.png`
  (16-bit millimetres at the depth sensor's smaller size, e.g. 256 x 192) and
  `keyframes/confidence/NAME.png` (8-bit ARKit levels low, medium, high, stored as 0/1/2 or as
  0/127/255). When both `corrected_cameras/` and `corrected_images/` are present (globally
  optimised poses, undistorted images) they are used instead, and the black border that
  undistortion leaves gives no depth (it would paint the surface black).
- **RGB-D folders**: `intrinsics.json` (`fx, fy, cx, cy, width, height`, optional `depth_scale`,
  depth units per metre, 1000 by default), `depth/NAME.png` (16-bit), `color/NAME.(png|jpg|jpeg)`
  registered to the depth, and `poses/NAME.txt` (4 x 4 camera-to-world, OpenCV axes: +X right,
  +Y down, +Z forward).

Intrinsics are those of an image `width` x `height`, with pixel centres on integer coordinates
(OpenCV's convention); they are scaled to each depth map and colour image by pixel areas. Depth
is fused at its own size and colour is read from the full-size image.

Rules: depth pixels below `min_confidence` (Polycam; high only by default) or beyond
`depth_max` (5 m, the LiDAR's range) are dropped. A Polycam keyframe whose blur score is under
`blur_ratio` (half) of the capture's median is skipped; the score's scale is not documented, so
only comparisons within a capture are trusted. Frames that cannot be read, do not match their
camera, or hold no usable depth are skipped and listed in the report. Fewer than `min_frames`
usable frames, or no surface at all, end with `ReconstructionFailed`. The voxel size, unless
given, is the scene's extent over 512 but at least 1 cm (LiDAR depth resolves nothing finer);
the signed distance is truncated 4 voxels from the surface, and only surfaces seen by at least
3 frames are extracted.

Models are written in a local frame: the mean camera position is subtracted before fusion, so
no georeferenced coordinate reaches the outputs. The offset is kept only in the restricted
working folder (`work/local-frame.json`). Axes are the capture's own (Y-up for Polycam).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from arkhiv.policies.resources import DEFAULT_LIMITS, ResourceLimitExceeded, ResourceLimits
from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport
from arkhiv.reconstruct.surface import SurfaceOptions, clean_up, decimate, write_master

RGBD_PARTS = ["intrinsics.json", "color/", "depth/", "poses/"]
COLOUR_SUFFIXES = (".png", ".jpg", ".jpeg")
# ARKit's camera looks down -Z with +Y up; OpenCV's (and open3d's) looks down +Z with +Y down.
OPENCV_FROM_ARKIT = np.diag([1.0, -1.0, -1.0, 1.0])
HIGH_CONFIDENCE = 2
VOXELS_ACROSS_SCENE = 512  # the automatic voxel size: the scene's extent over this


@dataclass(frozen=True)
class DepthOptions:
    voxel_size: float | None = None  # metres; None: max(min_voxel_size, extent / 512)
    min_voxel_size: float = 0.01  # LiDAR depth resolves nothing finer than 1-2 cm
    depth_max: float = 5.0  # metres; farther depth is dropped
    min_confidence: int = HIGH_CONFIDENCE  # ARKit levels: 0 low, 1 medium, 2 high
    blur_ratio: float = 0.5  # keyframes under this share of the median blur score are skipped
    truncation_voxels: float = 4.0  # the signed distance is truncated this many voxels away
    block_resolution: int = 16
    min_weight: float = 3.0  # surfaces seen by fewer frames than this are not extracted
    min_frames: int = 3
    surface: SurfaceOptions = field(default_factory=lambda: SurfaceOptions(max_faces=1_000_000))


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera for an image `width` x `height`; pixel centres on integer coordinates."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def matrix_for(self, width: int, height: int, what: str) -> np.ndarray:
        """The 3 x 3 matrix for the same camera at another resolution, scaled by pixel areas
        (`what` names the image for the message when its shape is not the camera's)."""
        sx, sy = width / self.width, height / self.height
        if abs(sx - sy) > 0.01 * sx:
            raise _FrameProblem(
                f"{what} is {width}x{height}, not the shape of the camera's "
                f"{self.width}x{self.height}"
            )
        return np.array(
            [
                [self.fx * sx, 0.0, (self.cx + 0.5) * sx - 0.5],
                [0.0, self.fy * sy, (self.cy + 0.5) * sy - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )


@dataclass
class Frame:
    """One depth map with its image, camera and pose, not yet read."""

    name: str
    depth: Path
    colour: Path
    confidence: Path | None
    intrinsics: Intrinsics
    camera_to_world: np.ndarray  # 4 x 4, OpenCV axes, the capture's world
    depth_units_per_metre: float
    blur_score: float | None = None
    undistorted: bool = False  # Polycam's corrected images have black borders


class _FrameProblem(Exception):
    """One frame cannot be used; the message says why."""


def mesh_from_depth(
    capture: Path,
    output: Path,
    options: DepthOptions = DepthOptions(),
    *,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> ReconstructionReport:
    """A mesh of the capture in `output/model.glb` and `output/model.ply`. A frame's picture
    (depth map, confidence, image) declaring more than `limits` allow ends it, unread."""
    import cv2
    import open3d as o3d

    report = ReconstructionReport("depth capture", asdict(options))
    report.software.update(open3d=o3d.__version__, numpy=np.__version__, opencv=cv2.__version__)
    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with report.stage("read") as stage:
            layout, root = _find_layout(capture)
            if layout == "polycam":
                frames, skipped, details = _polycam_frames(root, options)
            else:
                frames, skipped, details = _rgbd_frames(root)
            stage.figures.update(
                layout=layout, **details, frames=len(frames) + len(skipped), skipped=skipped
            )
            if len(frames) < options.min_frames:
                raise ReconstructionFailed(
                    f"too few usable frames: {len(frames)} of {len(frames) + len(skipped)}; "
                    f"at least {options.min_frames} are needed"
                )
            _check_pictures(frames, limits)
        with report.stage("depth") as stage:
            frames, samples = _check_depth(frames, options, stage.figures)
            origin = np.mean([frame.camera_to_world[:3, 3] for frame in frames], axis=0)
            (work / "local-frame.json").write_text(json.dumps({"origin": origin.tolist()}))
            voxel_size = options.voxel_size or _automatic_voxel_size(samples - origin, options)
            stage.figures.update(
                extent_m=round(_extent(samples - origin), 3),
                voxel_size_m=round(voxel_size, 5),
                local_frame="work/local-frame.json",
            )
        with report.stage("fuse") as stage:
            grid = _fuse(frames, origin, voxel_size, options, stage.figures)
        with report.stage("extract") as stage:
            mesh = _extract(grid, options)
            stage.figures.update(vertices=len(mesh.vertices), faces=len(mesh.triangles))
        mesh = clean_up(mesh, options.surface, report)
        if options.surface.max_faces and len(mesh.triangles) > options.surface.max_faces:
            mesh = decimate(mesh, options.surface.max_faces, report)
        write_master(mesh, output, report)
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


def _check_pictures(frames: list[Frame], limits: ResourceLimits) -> None:
    """OpenCV decodes each picture whole: what each declares is checked before any is read."""
    from arkhiv.ingest.characterize.images import check_picture

    for frame in frames:
        for picture in (frame.depth, frame.confidence, frame.colour):
            if picture is None:
                continue
            try:
                check_picture(picture, limits)
            except ResourceLimitExceeded as refused:
                raise ReconstructionFailed(str(refused)) from None


def _find_layout(capture: Path) -> tuple[str, Path]:
    """("polycam" or "rgbd", the folder holding it)."""
    if not capture.is_dir():
        raise ReconstructionFailed(f"{capture.name}: a depth capture is a folder")
    roots = [capture]
    inside = [entry for entry in capture.iterdir() if not entry.name.startswith((".", "__MACOSX"))]
    if len(inside) == 1 and inside[0].is_dir():
        roots.append(inside[0])
    for root in roots:
        for layout in ("polycam", "rgbd"):
            found, missing = _parts(root, layout)
            if not found:
                continue
            if missing:
                what = "a Polycam raw-data export" if layout == "polycam" else "an RGB-D folder"
                raise ReconstructionFailed(
                    f"{capture.name} looks like {what} but lacks {', '.join(missing)}"
                )
            return layout, root
    raise ReconstructionFailed(
        f"{capture.name} is neither a Polycam raw-data export (keyframes/ with cameras/, "
        "images/ and depth/) nor an RGB-D folder (intrinsics.json, color/, depth/, poses/)"
    )


def _parts(root: Path, layout: str) -> tuple[bool, list[str]]:
    """(whether anything of the layout is there, the parts it lacks)."""
    if layout == "polycam":
        keyframes = root / "keyframes"
        missing = [
            f"keyframes/{part}/"
            for part in ("cameras", "images", "depth")
            if not (keyframes / part).is_dir() and not (keyframes / f"corrected_{part}").is_dir()
        ]
        return keyframes.is_dir(), missing
    missing = [part for part in RGBD_PARTS if not (root / part).exists()]
    return len(missing) < len(RGBD_PARTS), missing


def _polycam_frames(root: Path, options: DepthOptions) -> tuple[list[Frame], list, dict]:
    keyframes = root / "keyframes"
    corrected = (keyframes / "corrected_cameras").is_dir() and (
        keyframes / "corrected_images"
    ).is_dir()
    cameras = keyframes / ("corrected_cameras" if corrected else "cameras")
    images = keyframes / ("corrected_images" if corrected else "images")
    confidence = keyframes / "confidence"
    has_confidence = confidence.is_dir()
    frames: list[Frame] = []
    skipped: list[dict] = []
    for camera_file in sorted(cameras.glob("*.json")):
        name = camera_file.stem
        try:
            camera = _polycam_camera(camera_file)
            intrinsics = Intrinsics(
                *(camera[key] for key in ("fx", "fy", "cx", "cy")),
                int(camera["width"]),
                int(camera["height"]),
            )
            arkit_pose = np.eye(4)
            arkit_pose[:3] = [
                [camera[f"t_{row}{column}"] for column in range(4)] for row in range(3)
            ]
            _check_rigid(arkit_pose)
            colour = _existing(images, name, COLOUR_SUFFIXES, "image")
            depth = _existing(keyframes / "depth", name, (".png",), "depth map")
            confidence_map = (
                _existing(confidence, name, (".png",), "confidence map") if has_confidence else None
            )
        except _FrameProblem as problem:
            skipped.append({"frame": name, "reason": str(problem)})
            continue
        blur = camera.get("blur_score")
        frames.append(
            Frame(
                name,
                depth,
                colour,
                confidence_map,
                intrinsics,
                arkit_pose @ OPENCV_FROM_ARKIT,
                1000.0,
                float(blur) if isinstance(blur, int | float) else None,
                corrected,
            )
        )
    details = {"poses": "corrected" if corrected else "arkit", "confidence": has_confidence}
    scores = [frame.blur_score for frame in frames if frame.blur_score is not None]
    if len(scores) >= options.min_frames and np.median(scores) > 0:
        threshold = options.blur_ratio * float(np.median(scores))
        details["blur_threshold"] = round(threshold, 3)
        blurred = [
            frame
            for frame in frames
            if frame.blur_score is not None and frame.blur_score < threshold
        ]
        for frame in blurred:
            skipped.append({"frame": frame.name, "reason": f"blurred (score {frame.blur_score:g})"})
        frames = [frame for frame in frames if frame not in blurred]
    return frames, skipped, details


def _polycam_camera(path: Path) -> dict:
    try:
        camera = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _FrameProblem(f"camera file cannot be read: {exc}") from exc
    keys = ["fx", "fy", "cx", "cy", "width", "height"]
    keys += [f"t_{row}{column}" for row in range(3) for column in range(4)]
    if not isinstance(camera, dict):
        raise _FrameProblem("camera file is not a JSON object")
    missing = [key for key in keys if not isinstance(camera.get(key), int | float)]
    if missing:
        raise _FrameProblem(f"camera file lacks {', '.join(missing)}")
    if not np.isfinite([camera[key] for key in keys]).all():
        raise _FrameProblem("camera file holds values that are not finite")
    if camera["width"] <= 0 or camera["height"] <= 0 or camera["fx"] <= 0 or camera["fy"] <= 0:
        raise _FrameProblem("camera has no size or focal length")
    return camera


def _rgbd_frames(root: Path) -> tuple[list[Frame], list, dict]:
    try:
        described = json.loads((root / "intrinsics.json").read_text())
        intrinsics = Intrinsics(
            *(float(described[key]) for key in ("fx", "fy", "cx", "cy")),
            int(described["width"]),
            int(described["height"]),
        )
        units = float(described.get("depth_scale", 1000.0))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise ReconstructionFailed(f"intrinsics.json cannot be used: {exc!r}") from exc
    values = [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, units]
    if not np.isfinite(values).all() or min(*values, intrinsics.width, intrinsics.height) <= 0:
        raise ReconstructionFailed(
            "intrinsics.json: sizes, focal lengths and depth_scale must be finite and > 0"
        )
    frames: list[Frame] = []
    skipped: list[dict] = []
    for depth in sorted((root / "depth").glob("*.png")):
        name = depth.stem
        try:
            colour = _existing(root / "color", name, COLOUR_SUFFIXES, "colour image")
            pose_file = _existing(root / "poses", name, (".txt",), "pose")
            try:
                pose = np.loadtxt(pose_file, dtype=np.float64)
            except ValueError as exc:
                raise _FrameProblem(f"pose cannot be read: {exc}") from exc
            if pose.shape != (4, 4):
                raise _FrameProblem("pose is not a 4 x 4 matrix")
            _check_rigid(pose)
        except _FrameProblem as problem:
            skipped.append({"frame": name, "reason": str(problem)})
            continue
        frames.append(Frame(name, depth, colour, None, intrinsics, pose, units))
    return frames, skipped, {"depth_scale": units}


def _existing(folder: Path, name: str, suffixes: tuple[str, ...], what: str) -> Path:
    for suffix in suffixes:
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    raise _FrameProblem(f"no {what}")


def _check_rigid(pose: np.ndarray) -> None:
    rotation = pose[:3, :3]
    if (
        not np.isfinite(pose).all()
        or np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-3
        or np.linalg.det(rotation) < 0
        or np.abs(pose[3] - [0, 0, 0, 1]).max() > 1e-6
    ):
        raise _FrameProblem("pose is not a rigid transform")


def _check_depth(
    frames: list[Frame], options: DepthOptions, figures: dict
) -> tuple[list[Frame], np.ndarray]:
    """The frames with usable depth, and a sample of their points in the capture's world."""
    usable, skipped, samples = [], [], []
    counts = {"pixels": 0, "kept": 0, "low_confidence": 0, "too_far": 0}
    for frame in frames:
        try:
            depth, frame_counts = _load_depth(frame, options)
        except _FrameProblem as problem:
            skipped.append({"frame": frame.name, "reason": str(problem)})
            continue
        for key, value in frame_counts.items():
            counts[key] += value
        if frame_counts["kept"] == 0:
            skipped.append({"frame": frame.name, "reason": "no usable depth"})
            continue
        usable.append(frame)
        samples.append(_sample_points(frame, depth))
    figures.update(usable=len(usable), skipped=skipped, **counts)
    if not usable:
        readable = len(frames) - sum(item["reason"] != "no usable depth" for item in skipped)
        if readable:
            raise ReconstructionFailed(
                f"no usable depth in any of the {readable} readable frames: every pixel is "
                f"empty, below confidence {options.min_confidence} or beyond {options.depth_max} m"
            )
    if len(usable) < max(1, options.min_frames):
        raise ReconstructionFailed(
            f"too few frames with usable depth: {len(usable)} of {len(frames)}; "
            f"at least {options.min_frames} are needed"
        )
    return usable, np.concatenate(samples)


def _load_depth(frame: Frame, options: DepthOptions) -> tuple[np.ndarray, dict]:
    """Metres as float32, 0 where there is no usable measurement; and what was dropped."""
    import cv2

    raw = cv2.imread(str(frame.depth), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise _FrameProblem("depth map cannot be read")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise _FrameProblem("depth map is not a 16-bit single-channel PNG")
    frame.intrinsics.matrix_for(raw.shape[1], raw.shape[0], "depth map")  # shape must match
    depth = raw.astype(np.float32) / np.float32(frame.depth_units_per_metre)
    measured = depth > 0
    keep = measured & (depth <= options.depth_max)
    low_confidence = np.zeros_like(measured)
    if frame.confidence is not None:
        confidence = cv2.imread(str(frame.confidence), cv2.IMREAD_UNCHANGED)
        if confidence is None or confidence.ndim != 2 or confidence.dtype != np.uint8:
            raise _FrameProblem("confidence map is not an 8-bit single-channel PNG")
        if confidence.shape != raw.shape:
            raise _FrameProblem("confidence map and depth map differ in size")
        low_confidence = measured & (_confidence_levels(confidence) < options.min_confidence)
        keep &= ~low_confidence
    counts = {
        "pixels": int(measured.sum()),
        "kept": int(keep.sum()),
        "low_confidence": int(low_confidence.sum()),
        "too_far": int((measured & (depth > options.depth_max)).sum()),
    }
    depth[~keep] = 0
    return depth, counts


def _confidence_levels(confidence: np.ndarray) -> np.ndarray:
    """ARKit's levels (0 low, 1 medium, 2 high) from a map that stores them as they are or as
    0/127/255 (Polycam's documentation gives the latter)."""
    if confidence.max() <= HIGH_CONFIDENCE:
        return confidence
    return np.digitize(confidence, [64, 192]).astype(np.uint8)


def _sample_points(frame: Frame, depth: np.ndarray, step: int = 8) -> np.ndarray:
    """Every `step`-th measured pixel in each direction, back-projected into the world."""
    matrix = frame.intrinsics.matrix_for(depth.shape[1], depth.shape[0], "depth map")
    v, u = np.mgrid[0 : depth.shape[0] : step, 0 : depth.shape[1] : step]
    z = depth[v, u].astype(np.float64)
    measured = z > 0
    u, v, z = u[measured], v[measured], z[measured]
    in_camera = np.column_stack(
        [(u - matrix[0, 2]) / matrix[0, 0] * z, (v - matrix[1, 2]) / matrix[1, 1] * z, z]
    )
    pose = frame.camera_to_world
    return in_camera @ pose[:3, :3].T + pose[:3, 3]


def _extent(points: np.ndarray) -> float:
    """The largest side of the box holding 98 % of the points along each axis (a few wild
    measurements do not make the scene huge)."""
    low, high = np.percentile(points, [1, 99], axis=0)
    return float((high - low).max())


def _automatic_voxel_size(points: np.ndarray, options: DepthOptions) -> float:
    return max(options.min_voxel_size, _extent(points) / VOXELS_ACROSS_SCENE)


def _fuse(
    frames: list[Frame], origin: np.ndarray, voxel_size: float, options: DepthOptions, figures: dict
):
    """A VoxelBlockGrid with every usable frame integrated, in the local frame."""
    import cv2
    import open3d as o3d
    import open3d.core as o3c

    device = o3c.Device("CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=((1), (1), (3)),
        voxel_size=voxel_size,
        block_resolution=options.block_resolution,
        block_count=1000,  # the hash map grows as blocks are touched
        device=device,
    )
    fused, skipped = 0, []
    for frame in frames:
        try:
            depth, _counts = _load_depth(frame, options)
            colour = cv2.imread(str(frame.colour), cv2.IMREAD_COLOR)
            if colour is None:
                raise _FrameProblem("image cannot be read")
            colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
            if frame.undistorted:
                # Fusion colours the voxels it updates, so depth under the black border that
                # undistortion leaves would paint them black.
                border = cv2.resize(
                    _undistortion_border(colour).astype(np.uint8),
                    (depth.shape[1], depth.shape[0]),
                    interpolation=cv2.INTER_NEAREST,
                )
                depth[border > 0] = 0
            if not (depth > 0).any():
                raise _FrameProblem("no usable depth")
            depth_matrix = frame.intrinsics.matrix_for(depth.shape[1], depth.shape[0], "depth map")
            colour_matrix = frame.intrinsics.matrix_for(colour.shape[1], colour.shape[0], "image")
        except _FrameProblem as problem:
            skipped.append({"frame": frame.name, "reason": str(problem)})
            continue
        pose = frame.camera_to_world.copy()
        pose[:3, 3] -= origin
        extrinsic = o3c.Tensor(np.linalg.inv(pose))  # world → camera
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth)))
        colour_image = o3d.t.geometry.Image(
            o3c.Tensor(np.ascontiguousarray(colour, dtype=np.float32) / np.float32(255))
        )
        depth_intrinsic = o3c.Tensor(_open3d_pixels(depth_matrix))
        colour_intrinsic = o3c.Tensor(_open3d_pixels(colour_matrix))
        # Depth is already in metres, so the depth scale is 1.
        blocks = grid.compute_unique_block_coordinates(
            depth_image,
            depth_intrinsic,
            extrinsic,
            1.0,
            options.depth_max,
            options.truncation_voxels,
        )
        grid.integrate(
            blocks,
            depth_image,
            colour_image,
            depth_intrinsic,
            colour_intrinsic,
            extrinsic,
            1.0,
            options.depth_max,
            options.truncation_voxels,
        )
        fused += 1
    figures.update(
        fused=fused,
        skipped=skipped,
        voxel_size_m=round(voxel_size, 5),
        truncation_m=round(voxel_size * options.truncation_voxels, 5),
        block_resolution=options.block_resolution,
        blocks=int(grid.hashmap().size()),
    )
    if fused < options.min_frames:
        raise ReconstructionFailed(
            f"too few frames could be fused: {fused}; at least {options.min_frames} are needed"
        )
    return grid


def _undistortion_border(colour: np.ndarray) -> np.ndarray:
    """Black pixels connected to the image's edge: where undistortion had nothing to show."""
    import cv2

    black = (colour.max(axis=2) <= 3).astype(np.uint8)
    _count, labels = cv2.connectedComponents(black)
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.isin(labels, edge[edge > 0])


def _open3d_pixels(matrix: np.ndarray) -> np.ndarray:
    """open3d's fusion reads pixel floor(u), so pixel centres sit at +0.5 for it."""
    shifted = matrix.copy()
    shifted[:2, 2] += 0.5
    return shifted


def _extract(grid, options: DepthOptions):
    """The zero surface as a legacy open3d TriangleMesh with vertex colours."""
    import open3d as o3d

    nothing = ReconstructionFailed(
        f"the fused depth holds no surface seen by at least {options.min_weight:g} frames"
    )
    if grid.hashmap().size() == 0:
        raise nothing
    try:
        mesh = grid.extract_triangle_mesh(weight_threshold=options.min_weight)
    except RuntimeError as exc:  # open3d refuses an empty extraction rather than returning one
        raise nothing from exc
    if mesh.is_empty() or "indices" not in mesh.triangle or len(mesh.triangle.indices) == 0:
        raise nothing
    legacy = mesh.to_legacy()
    if legacy.has_vertex_colors():
        colours = np.clip(np.asarray(legacy.vertex_colors), 0.0, 1.0)
        legacy.vertex_colors = o3d.utility.Vector3dVector(colours)
    return legacy
