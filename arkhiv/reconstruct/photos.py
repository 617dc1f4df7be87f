"""Photo set → camera poses and a sparse model (structure from motion, pycolmap on the CPU) →
dense points (`stereo`) → a coloured surface (`surface`) in a local frame.

Working images are downscaled copies (longest side `max_image_side`, default 1600 px) written
without their EXIF: no GPS coordinate reaches the working folder, the COLMAP database or anything
made from them. What EXIF is good for is read before: the focal length, as a prior for each
camera (35 mm equivalent, or focal length and focal-plane resolution), which photos share a
camera (make, model, size, focal length), so each group gets one set of intrinsics to refine,
and the GPS position, turned at once into metres east, north and up from the photos' own mean
(the mean itself is never kept): those local positions are COLMAP's pose priors, in the
restricted database only.

Matching is exhaustive for small sets; larger ones are matched in sequence (by file name, as
photos are taken, loop detection off) and, with GPS, with their nearest neighbours too.
Incremental mapping tries COLMAP's own settings first and, when they leave photos out, settings
for walking captures (a street or facade photographed while walking along or towards it, where
views differ by small angles); the model with the most photos is kept.
"""

from __future__ import annotations

import json
import shutil
import time
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
EARTH_RADIUS_M = 6_378_137.0  # WGS 84 equatorial radius
WGS84_E2 = 6.694_379_990_14e-3  # WGS 84 first eccentricity squared

# Mapping settings tried in turn, until one places every photo; the model placing the most is
# kept. COLMAP's own defaults refuse a first pair whose views differ by under 16 degrees or
# whose camera moved mostly forward (`init_max_forward_motion` 0.95), which is every pair of
# a capture made walking along a street or a facade; the last photos of such a walk, turned
# on the spot, see too few earlier points for COLMAP's 30 (measured on the Lund walk: 2 or 3 of 29
# placed with the defaults, 29 of 29 with these, poses within the GPS's metres).
MAPPING_ATTEMPTS: dict[str, dict[str, float]] = {
    "COLMAP defaults": {},
    "walking capture": {
        "init_min_tri_angle": 4.0,
        "init_max_forward_motion": 1.0,
        "abs_pose_min_num_inliers": 15,
    },
}


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
    # GPS from the photos' EXIF as COLMAP pose priors (and, above `exhaustive_up_to`, to match
    # each photo with its nearest) when at least this share of the photos carry a position and
    # the positions span at least `gps_min_extent_m`: a phone's fix is good to about 5 m, and
    # priors over a smaller walk than a few fixes' error would pull the cameras toward noise.
    gps_min_share: float = 0.5
    gps_min_extent_m: float = 20.0
    gps_sigma_m: float = 5.0  # horizontal; altitude is taken as twice as uncertain
    spatial_neighbours: int = 20
    spatial_max_distance_m: float = 100.0
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
            metric = report.figures("mapping")["units"].startswith("metres")
            stage.figures.update(_to_local_frame(mesh, views, output, metric))
        write_master(mesh, output, report)
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


def _to_local_frame(mesh, views: list[View], output: Path, metric: bool) -> dict[str, Any]:
    """Centre the model and turn it upright (glTF's +Y up, from the cameras' mean up direction:
    photos are mostly taken level), and the archived cameras (`output/sparse`) with it, so
    that poses and model line up. Structure from motion alone fixes no scale: units are
    arbitrary unless GPS priors made them metres (`metric`). The transform stays in the
    restricted working folder."""
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
        json.dumps(
            {
                "origin": origin.tolist(),
                "rotation": rotation.tolist(),
                "units": "metres" if metric else None,
            }
        )
    )
    units = "metres (from GPS priors)" if metric else "arbitrary (no scale from photos alone)"
    return {"units": units, "upright_from": "camera up"}


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
            prepared, skipped, positions = _prepare(photos, images, options.max_image_side)
            priors, why_not = _usable_priors(positions, len(prepared), options)
            stage.figures.update(
                images=len(prepared),
                skipped=skipped,
                cameras=len({p.camera for p in prepared}),
                focal_priors=sorted({p.focal_from for p in prepared}),
                gps_positions=len(positions),
                pose_priors=(
                    f"{len(priors)} photos, from GPS, in metres east, north and up from their "
                    f"own mean (standard deviation {options.gps_sigma_m:g} m across, "
                    f"{2 * options.gps_sigma_m:g} m up)"
                    if priors
                    else f"none: {why_not}"
                ),
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
                if priors:
                    _write_pose_priors(db, priors, options.gps_sigma_m)
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
                if len(priors) == len(prepared):  # photos without a prior get no spatial pair
                    stage.figures["method"] = "spatial and sequential"
                    stage.figures["spatial"] = {
                        "neighbours": options.spatial_neighbours,
                        "max_distance_m": options.spatial_max_distance_m,
                    }
                    spatial = pycolmap.SpatialPairingOptions()
                    spatial.max_num_neighbors = options.spatial_neighbours
                    spatial.max_distance = options.spatial_max_distance_m
                    spatial.num_threads = options.threads
                    pycolmap.match_spatial(database, matching, spatial, device=pycolmap.Device.cpu)
                else:
                    stage.figures["method"] = "sequential"
                # In sequence too with GPS: a bad fix must not cut a photo off its neighbours
                # (pairs matched already are skipped).
                pairing = pycolmap.SequentialPairingOptions()
                pairing.overlap = options.sequential_overlap
                pycolmap.match_sequential(database, matching, pairing, device=pycolmap.Device.cpu)
            db = pycolmap.Database.open(database)
            try:
                stage.figures["verified_pairs"] = db.num_verified_image_pairs()
            finally:
                db.close()
        with report.stage("mapping") as stage:
            attempts, model = [], None
            for number, (name, settings) in enumerate(MAPPING_ATTEMPTS.items()):
                started = time.perf_counter()
                (work / "models" / str(number)).mkdir(parents=True)
                models = pycolmap.incremental_mapping(
                    database,
                    images,
                    work / "models" / str(number),
                    _mapping_options(settings, bool(priors), options.threads),
                )
                best = max(models.values(), key=lambda m: m.num_reg_images(), default=None)
                placed = best.num_reg_images() if best else 0
                attempts.append(
                    {
                        "settings": name,
                        "placed": placed,
                        "seconds": round(time.perf_counter() - started, 2),
                    }
                )
                if best and (model is None or placed > model.num_reg_images()):
                    model, chosen = best, (name, settings, len(models))
                if placed == len(prepared):
                    break
            stage.figures.update(attempts=attempts, use_prior_position=bool(priors))
            if model is None:
                raise ReconstructionFailed(
                    _why_nothing_fits(report.figures("features"), options.low_detail_features)
                )
            name, settings, count = chosen
            registered = sorted(image.name for image in model.images.values())
            stage.figures.update(
                settings=name,
                changed_options=settings,
                models=count,
                registered=len(registered),
                unregistered=sorted({p.name for p in prepared} - set(registered)),
                points=model.num_points3D(),
                mean_reprojection_error_px=round(model.compute_mean_reprojection_error(), 4),
                mean_track_length=round(model.compute_mean_track_length(), 2),
                cameras={camera_id: _camera(camera) for camera_id, camera in model.cameras.items()},
                units="metres (GPS priors)" if priors else "arbitrary",
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


def _mapping_options(settings: dict[str, float], priors: bool, threads: int):
    import pycolmap

    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = threads
    # Pose priors join every global bundle adjustment, and the model ends in their frame:
    # metres east, north and up from the photos' mean.
    mapping.use_prior_position = priors
    for key, value in settings.items():
        setattr(mapping.mapper, key, value)
    return mapping


def _usable_priors(
    positions: dict[str, np.ndarray], photos: int, options: PhotoOptions
) -> tuple[dict[str, np.ndarray], str]:
    """The local positions to give COLMAP as pose priors, or none and why."""
    if not positions:
        return {}, "no GPS position in the photos"
    if len(positions) < max(3, options.gps_min_share * photos):
        return {}, f"only {len(positions)} of {photos} photos carry a GPS position"
    points = np.array(list(positions.values()))[:, :2]
    extent = float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))
    if extent < options.gps_min_extent_m:
        return {}, (
            f"the GPS positions span {extent:.0f} m, under {options.gps_min_extent_m:g} m: "
            "no more than the error of a fix"
        )
    return positions, ""


def _write_pose_priors(db: Any, priors: dict[str, np.ndarray], sigma: float) -> None:
    import pycolmap

    covariance = np.diag([sigma**2, sigma**2, (2 * sigma) ** 2])
    for image in db.read_all_images():
        if image.name in priors:
            prior = pycolmap.PosePrior()
            prior.position = priors[image.name]
            prior.position_covariance = covariance
            prior.coordinate_system = pycolmap.PosePriorCoordinateSystem.CARTESIAN
            prior.corr_data_id = image.data_id
            db.write_pose_prior(prior)


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
) -> tuple[list[PreparedPhoto], list[dict[str, str]], dict[str, np.ndarray]]:
    """Downscaled, upright copies without metadata; the photos that could not be read; the
    GPS positions of the copies that have one, in metres from their mean (`_local_positions`)."""
    prepared, skipped, fixes = [], [], {}
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
        fix = _gps_fix(exif)
        if fix is not None:
            fixes[name] = fix
    return prepared, skipped, _local_positions(fixes)


def _gps_fix(exif: Image.Exif) -> tuple[float, float, float | None] | None:
    """Latitude and longitude (degrees) and altitude (metres, None if absent) from EXIF."""
    gps = exif.get_ifd(0x8825)
    try:
        latitude = _degrees(gps[2], gps.get(1, "N"), "S")
        longitude = _degrees(gps[4], gps.get(3, "E"), "W")
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180) or latitude == longitude == 0:
        return None  # no fix: some cameras write zeros
    try:
        altitude = float(gps[6]) * (-1 if gps.get(5) in (1, b"\x01") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        altitude = None
    return latitude, longitude, altitude if altitude is not None and np.isfinite(altitude) else None


def _degrees(value: Any, reference: Any, negative: str) -> float:
    degrees, minutes, seconds = (float(part) for part in value)
    sign = -1 if str(reference).strip().upper().startswith(negative) else 1
    return sign * (degrees + minutes / 60 + seconds / 3600)


def _local_positions(
    fixes: dict[str, tuple[float, float, float | None]],
) -> dict[str, np.ndarray]:
    """Metres east, north and up from the fixes' own mean (the tangent plane there, WGS 84:
    within centimetres over a few kilometres, far below a fix's error). The mean is dropped
    here: what leaves holds no absolute coordinate. Up is 0 unless every fix has an altitude (a
    walk keeps to about one height, well within the uncertainty allowed up)."""
    if not fixes:
        return {}
    offsets = np.radians(np.array([fix[:2] for fix in fixes.values()]))
    offsets -= offsets.mean(axis=0)  # from here on, nothing absolute
    latitude = np.radians(np.mean([fix[0] for fix in fixes.values()]))
    sine = np.sin(latitude)
    across = EARTH_RADIUS_M / np.sqrt(1 - WGS84_E2 * sine**2)  # prime vertical radius
    along = across * (1 - WGS84_E2) / (1 - WGS84_E2 * sine**2)  # meridian radius
    east = offsets[:, 1] * across * np.cos(latitude)
    north = offsets[:, 0] * along
    altitudes = [fix[2] for fix in fixes.values()]
    up = np.zeros(len(fixes))
    if all(altitude is not None for altitude in altitudes):
        up = np.array(altitudes, dtype=float) - float(np.mean(altitudes))
    local = np.stack([east, north, up], axis=1)
    return {name: local[row] for row, name in enumerate(fixes)}


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
