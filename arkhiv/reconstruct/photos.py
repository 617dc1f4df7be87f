"""Photo set → camera poses and a sparse model (structure from motion, pycolmap on the CPU) →
dense points (`stereo`) → a coloured surface (`surface`) in a local frame.

Working images are downscaled copies (longest side `max_image_side`, default 1600 px) written
without their EXIF: no GPS position reaches the working folder, the COLMAP database or anything
made from them. What EXIF is good for is read before: the focal length, as a prior for each
camera (35 mm equivalent, or focal length and focal-plane resolution), and which photos share a
camera (make, model, size, focal length), so each group gets one set of intrinsics to refine.

Matching is exhaustive for small sets and sequential (by file name, as photos are taken) with
loop detection off for larger ones. Incremental mapping keeps the largest model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport
from arkhiv.reconstruct.stereo import (
    StereoOptions,
    View,
    colour_from_views,
    dense_cloud,
    load_views,
    patch_match_cloud,
)
from arkhiv.reconstruct.surface import SurfaceOptions, surface_from_points, write_master

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".heif"}
FULL_FRAME_WIDTH_MM = 36.0
DEFAULT_FOCAL_FACTOR = 1.2  # COLMAP's guess without EXIF: focal = 1.2 times the longest side


@dataclass(frozen=True)
class PhotoOptions:
    max_image_side: int = 1600
    min_images: int = 3
    # Below this many SIFT features per photo (on average) a set that cannot be put together
    # is said to lack detail (blur, focus, plain surfaces) rather than overlap: measured here,
    # sharp photos give thousands, a 1600 px photo blurred by 8 px about a hundred.
    low_detail_features: int = 300
    exhaustive_up_to: int = 60  # more images than this: sequential matching
    sequential_overlap: int = 12
    dense: str = "auto"  # "auto": COLMAP PatchMatch when pycolmap has CUDA, else "cpu"
    stereo: StereoOptions = field(default_factory=StereoOptions)
    surface: SurfaceOptions = field(default_factory=lambda: SurfaceOptions(max_faces=400_000))
    threads: int = 2


@dataclass(frozen=True)
class PreparedPhoto:
    name: str  # the working copy's file name
    source: str  # the photo's path relative to the input folder
    width: int
    height: int
    focal_px: float  # the prior, at the working size
    focal_from: str  # "exif 35mm", "exif focal plane", "default"
    camera: str  # the group of photos sharing intrinsics


def mesh_from_photos(
    photos: Path, output: Path, options: PhotoOptions = PhotoOptions()
) -> ReconstructionReport:
    """A coloured mesh of what the photos under `photos` show, in `output/model.glb` and
    `output/model.ply`, with the camera poses in `output/sparse`. ReconstructionFailed (with
    the report so far in `.report`) when the set cannot become a model."""
    import open3d as o3d
    import pycolmap

    report = ReconstructionReport("photos", asdict(options))
    report.software["open3d"] = o3d.__version__
    sparse_reconstruction(photos, output, options, report)
    work = output / "work"
    try:
        with report.stage("undistort") as stage:
            views, sparse_points = load_views(
                output / "sparse", work / "images", work, options.threads
            )
            stage.figures["views"] = len(views)
        if options.dense == "cuda" or (options.dense == "auto" and pycolmap.has_cuda):
            cloud = patch_match_cloud(work, report)
        else:
            cloud = dense_cloud(views, sparse_points, options.stereo, report)
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points))
        pcd.colors = o3d.utility.Vector3dVector(cloud.colours)
        pcd.normals = o3d.utility.Vector3dVector(cloud.normals)
        mesh = surface_from_points(pcd, options.surface, report)
        with report.stage("colour") as stage:
            stage.figures.update(colour_from_views(mesh, views, options.threads))
        with report.stage("local frame") as stage:
            stage.figures.update(_to_local_frame(mesh, views, output))
        write_master(mesh, output, report)
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


def _to_local_frame(mesh, views: list[View], output: Path) -> dict[str, Any]:
    """Centre the model and turn it upright (glTF's +Y up, from the cameras' mean up direction:
    photos are mostly taken level), and the archived cameras (`output/sparse`) with it, so
    that poses and model line up. Structure from motion fixes no scale: units are arbitrary.
    The transform stays in the restricted working folder."""
    import pycolmap

    vertices = np.asarray(mesh.vertices)
    origin = vertices.mean(axis=0)
    up = -np.mean([view.rotation[1] for view in views], axis=0)  # camera y points down
    up /= np.linalg.norm(up)
    rotation = _rotation_onto(up, np.array([0.0, 1.0, 0.0]))
    mesh.translate(-origin)
    mesh.rotate(rotation, center=np.zeros(3))
    cameras = pycolmap.Reconstruction(output / "sparse")
    cameras.transform(pycolmap.Sim3d(np.hstack([rotation, (-rotation @ origin)[:, None]])))
    cameras.write(output / "sparse")
    (output / "work" / "local-frame.json").write_text(
        json.dumps({"origin": origin.tolist(), "rotation": rotation.tolist(), "units": None})
    )
    return {"units": "arbitrary (no scale from photos alone)", "upright_from": "camera up"}


def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation taking unit vector a onto unit vector b (Rodrigues)."""
    axis = np.cross(a, b)
    sine, cosine = np.linalg.norm(axis), float(np.dot(a, b))
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / sine
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sine * skew + (1 - cosine) * skew @ skew


def sparse_reconstruction(
    photos: Path,
    output: Path,
    options: PhotoOptions = PhotoOptions(),
    report: ReconstructionReport | None = None,
) -> ReconstructionReport:
    """Poses and sparse points of the photos under `photos`, written as a COLMAP model to
    `output/sparse`. ReconstructionFailed (with the report so far in `.report`) when the set
    cannot be reconstructed."""
    import pycolmap

    report = report or ReconstructionReport("photos", asdict(options))
    report.software["pycolmap"] = pycolmap.__version__
    work = output / "work"  # restricted: the COLMAP database stays here
    images = work / "images"
    shutil.rmtree(work, ignore_errors=True)
    images.mkdir(parents=True)
    try:
        with report.stage("prepare images") as stage:
            prepared, skipped = _prepare(photos, images, options.max_image_side)
            stage.figures.update(
                images=len(prepared),
                skipped=skipped,
                cameras=len({p.camera for p in prepared}),
                focal_priors=sorted({p.focal_from for p in prepared}),
            )
        if len(prepared) < options.min_images:
            raise ReconstructionFailed(
                f"too few photos: {len(prepared)} readable, at least {options.min_images} needed"
            )
        database = work / "database.db"
        with report.stage("features") as stage:
            extraction = pycolmap.FeatureExtractionOptions()
            extraction.max_image_size = options.max_image_side
            extraction.num_threads = options.threads
            extraction.use_gpu = False
            for group in _groups(prepared).values():
                reader = pycolmap.ImageReaderOptions()
                reader.camera_model = "SIMPLE_RADIAL"
                first = group[0]
                reader.camera_params = f"{first.focal_px},{first.width / 2},{first.height / 2},0"
                pycolmap.extract_features(
                    database,
                    images,
                    image_names=[p.name for p in group],
                    camera_mode=pycolmap.CameraMode.SINGLE,
                    reader_options=reader,
                    extraction_options=extraction,
                    device=pycolmap.Device.cpu,
                )
            db = pycolmap.Database.open(database)
            try:
                counts = [db.num_keypoints_for_image(i.image_id) for i in db.read_all_images()]
            finally:
                db.close()
            stage.figures.update(
                mean_features=round(sum(counts) / max(1, len(counts))), min_features=min(counts)
            )
        with report.stage("matching") as stage:
            matching = pycolmap.FeatureMatchingOptions()
            matching.num_threads = options.threads
            matching.use_gpu = False
            if len(prepared) <= options.exhaustive_up_to:
                stage.figures["method"] = "exhaustive"
                pycolmap.match_exhaustive(database, matching, device=pycolmap.Device.cpu)
            else:
                stage.figures["method"] = "sequential"
                pairing = pycolmap.SequentialPairingOptions()
                pairing.overlap = options.sequential_overlap
                pycolmap.match_sequential(database, matching, pairing, device=pycolmap.Device.cpu)
            db = pycolmap.Database.open(database)
            try:
                stage.figures["verified_pairs"] = db.num_verified_image_pairs()
            finally:
                db.close()
        with report.stage("mapping") as stage:
            mapping = pycolmap.IncrementalPipelineOptions()
            mapping.num_threads = options.threads
            models = pycolmap.incremental_mapping(database, images, work / "models", mapping)
            if not models:
                raise ReconstructionFailed(
                    _why_nothing_fits(report.figures("features"), options.low_detail_features)
                )
            model = max(models.values(), key=lambda m: m.num_reg_images())
            registered = sorted(image.name for image in model.images.values())
            stage.figures.update(
                models=len(models),
                registered=len(registered),
                unregistered=sorted({p.name for p in prepared} - set(registered)),
                points=model.num_points3D(),
                mean_reprojection_error_px=round(model.compute_mean_reprojection_error(), 4),
                mean_track_length=round(model.compute_mean_track_length(), 2),
                cameras={camera_id: _camera(camera) for camera_id, camera in model.cameras.items()},
            )
            if len(registered) < options.min_images:
                raise ReconstructionFailed(
                    f"only {len(registered)} of {len(prepared)} photos could be placed; at "
                    f"least {options.min_images} are needed"
                )
            sparse = output / "sparse"
            shutil.rmtree(sparse, ignore_errors=True)
            sparse.mkdir(parents=True)
            model.write(sparse)
            report.outputs.append("sparse")
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


def _why_nothing_fits(features: dict[str, Any], low_detail: int) -> str:
    mean = features["mean_features"]
    if mean < low_detail:
        return (
            f"the photos show too little detail to be matched (mean {mean} features per photo, "
            f"about {low_detail} or more are needed): they may be blurred, out of focus, or of "
            "plain surfaces; take them again, sharp, with texture in view"
        )
    return (
        "the photos could not be put together: no two of them overlap enough "
        f"(mean {mean} features per photo); take photos that each share most of their view "
        "with the next"
    )


def _camera(camera: Any) -> dict[str, Any]:
    return {
        "model": camera.model.name,
        "width": camera.width,
        "height": camera.height,
        "params": [round(float(value), 4) for value in camera.params],
    }


def _groups(prepared: list[PreparedPhoto]) -> dict[str, list[PreparedPhoto]]:
    groups: dict[str, list[PreparedPhoto]] = {}
    for photo in prepared:
        groups.setdefault(photo.camera, []).append(photo)
    return groups


def _prepare(
    photos: Path, images: Path, max_side: int
) -> tuple[list[PreparedPhoto], list[dict[str, str]]]:
    """Downscaled, upright copies without metadata; the photos that could not be read."""
    prepared, skipped = [], []
    sources = sorted(path for path in photos.rglob("*") if path.suffix.lower() in PHOTO_SUFFIXES)
    for number, path in enumerate(sources):
        relative = path.relative_to(photos).as_posix()
        try:
            with Image.open(path) as opened:
                exif = opened.getexif()
                image = ImageOps.exif_transpose(opened).convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped.append({"photo": relative, "reason": f"not a readable image: {exc}"})
            continue
        width, height = image.size
        scale = min(1.0, max_side / max(width, height))
        if scale < 1.0:
            image = image.resize((round(width * scale), round(height * scale)), Image.LANCZOS)
        name = f"{number:05d}.jpg"  # no source names in the working folder
        image.save(images / name, quality=95)  # no exif= : the copy carries no metadata
        focal, basis = _focal_prior(exif, width, height)
        device = f"{exif.get(0x010F, '')} {exif.get(0x0110, '')}".strip() or "unknown camera"
        prepared.append(
            PreparedPhoto(
                name,
                relative,
                image.width,
                image.height,
                focal * scale,
                basis,
                f"{device} {width}x{height} f{round(focal)}",
            )
        )
    return prepared, skipped


def _focal_prior(exif: Image.Exif, width: int, height: int) -> tuple[float, str]:
    """Focal length in pixels at the photo's own size, and where it came from."""
    details = exif.get_ifd(0x8769)
    longest = max(width, height)
    equivalent = details.get(0xA405)  # FocalLengthIn35mmFilm
    if equivalent:
        return float(equivalent) / FULL_FRAME_WIDTH_MM * longest, "exif 35mm"
    focal = details.get(0x920A)  # FocalLength, mm
    resolution = details.get(0xA20E)  # FocalPlaneXResolution, pixels per unit
    unit = {2: 25.4, 3: 10.0, 4: 1.0}.get(details.get(0xA210, 2))  # FocalPlaneResolutionUnit
    if focal and resolution and unit:
        return float(focal) * float(resolution) / unit, "exif focal plane"
    return DEFAULT_FOCAL_FACTOR * longest, "default"
