"""Which pipeline a capture needs, and running it.

A capture is the payload of an archived package, copied to a working folder. What it holds
decides: a finished mesh is normalized to the master (rebuilding it from its photos would throw
the maker's work away); else a depth capture is fused; else a point cloud is meshed; else a photo
set is reconstructed. The capture metadata's declared mode breaks ties when a package holds
several kinds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from arkhiv.policies.resources import DEFAULT_LIMITS, ResourceLimits
from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport

MESH_SUFFIXES = {".obj", ".glb", ".gltf", ".stl", ".usdz", ".usd", ".usda", ".usdc"}
CLOUD_SUFFIXES = {".las", ".laz", ".e57"}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".heif"}
MODES = {"mesh": "mesh", "lidar-depth": "depth", "point-cloud": "point cloud", "photos": "photos"}
PREFERENCE = ("mesh", "depth", "point cloud", "photos")


@dataclass(frozen=True)
class PipelineOptions:
    """What a worker's settings change in every pipeline (the rest are the pipelines' own
    defaults, recorded in each report)."""

    max_image_side: int = 1600  # photos are downscaled to this for matching and stereo
    dense: str = "auto"  # photos: "auto" (CUDA PatchMatch when pycolmap has CUDA) or "cpu"
    threads: int = 0  # 0: every core of the machine
    # What one uploaded cloud or mesh may make a reader allocate (ingest's limits).
    limits: ResourceLimits = DEFAULT_LIMITS

    @property
    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Choice:
    pipeline: str  # mesh, depth, point cloud, photos
    input: Path  # the file or folder the pipeline reads
    sources: tuple[Path, ...]  # the capture files the model is derived from


def choose(capture: Path, declared_mode: str | None = None) -> Choice | None:
    """The pipeline for the capture folder, or None when it holds nothing a model can be made
    from."""
    from arkhiv.ingest.identify import detect_polycam_export

    files = sorted(path for path in capture.rglob("*") if path.is_file())
    found: dict[str, Choice] = {}
    meshes = [p for p in files if p.suffix.lower() in MESH_SUFFIXES or _ply_has_faces(p) is True]
    if meshes:
        main = meshes[0] if len(meshes) == 1 else _main_mesh(meshes)
        # Its materials, textures and buffers are found beside it by the mesh reader.
        found["mesh"] = Choice("mesh", main, (main,))
    polycam = detect_polycam_export(capture)
    if polycam is not None:
        root = capture / polycam["root"]
        found["depth"] = Choice("depth", root, tuple(p for p in files if _inside(p, root)))
    elif (rgbd := _rgbd_folder(capture)) is not None:
        found["depth"] = Choice("depth", rgbd, tuple(p for p in files if _inside(p, rgbd)))
    clouds = [p for p in files if p.suffix.lower() in CLOUD_SUFFIXES or _ply_has_faces(p) is False]
    if clouds:
        largest = max(clouds, key=lambda p: p.stat().st_size)
        found["point cloud"] = Choice("point cloud", largest, (largest,))
    photos = [p for p in files if p.suffix.lower() in PHOTO_SUFFIXES]
    depth_files = set(found["depth"].sources) if "depth" in found else set()
    photos = [p for p in photos if p not in depth_files]
    if photos:  # too few is for the pipeline to say, with the numbers
        found["photos"] = Choice("photos", _common_folder(photos, capture), tuple(photos))
    declared = MODES.get(declared_mode or "")
    if declared in found:
        return found[declared]
    for pipeline in PREFERENCE:
        if pipeline in found:
            return found[pipeline]
    return None


def run(
    choice: Choice, output: Path, options: PipelineOptions = PipelineOptions()
) -> ReconstructionReport:
    """Run the chosen pipeline into `output` (model.glb and model.ply, plus what it adds)."""
    output.mkdir(parents=True, exist_ok=True)
    threads = options.thread_count
    if choice.pipeline == "photos":
        from arkhiv.reconstruct.photos import PhotoOptions, mesh_from_photos

        defaults = PhotoOptions()
        return mesh_from_photos(
            choice.input,
            output,
            replace(
                _surface_threads(defaults, threads),
                max_image_side=options.max_image_side,
                dense=options.dense,
                threads=threads,
                stereo=replace(
                    defaults.stereo, max_image_side=options.max_image_side, threads=threads
                ),
            ),
        )
    if choice.pipeline == "point cloud":
        from arkhiv.reconstruct.pointcloud import PointCloudOptions, mesh_from_points

        return mesh_from_points(
            choice.input,
            output,
            _surface_threads(PointCloudOptions(), threads),
            limits=options.limits,
        )
    if choice.pipeline == "depth":
        from arkhiv.reconstruct.depth import DepthOptions, mesh_from_depth

        return mesh_from_depth(
            choice.input,
            output,
            _surface_threads(DepthOptions(), threads),
            limits=options.limits,
        )
    if choice.pipeline == "mesh":
        from arkhiv.reconstruct.meshes import master_from_mesh

        return master_from_mesh(choice.input, output, limits=options.limits)
    raise ReconstructionFailed(f"no pipeline called {choice.pipeline!r}")


def _surface_threads(options, threads: int):
    """The pipeline's options with the surface stage (Poisson) on `threads` threads."""
    return replace(options, surface=replace(options.surface, threads=threads))


def _ply_has_faces(path: Path) -> bool | None:
    """True for a PLY mesh, False for a PLY point cloud, None when not a readable PLY."""
    if path.suffix.lower() != ".ply":
        return None
    try:
        with path.open("rb") as handle:
            header = handle.read(4096)
    except OSError:
        return None
    if not header.startswith(b"ply"):
        return None
    for line in header.split(b"end_header", 1)[0].splitlines():
        words = line.split()
        if len(words) == 3 and words[:2] == [b"element", b"face"]:
            return words[2] != b"0"
    return False


def _main_mesh(meshes: list[Path]) -> Path:
    """Of several mesh files, the one the capture is about: glTF binary first (a self-contained
    master already), then the largest."""
    rank = {".glb": 0, ".gltf": 1, ".usdz": 2, ".obj": 3}
    return min(meshes, key=lambda p: (rank.get(p.suffix.lower(), 4), -p.stat().st_size))


def _rgbd_folder(capture: Path) -> Path | None:
    """A generic RGB-D capture: a folder with depth/ and poses/ beside the colour frames."""
    for depth in sorted(capture.rglob("depth")):
        if depth.is_dir() and (depth.parent / "poses").is_dir():
            return depth.parent
    return None


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _common_folder(paths: list[Path], capture: Path) -> Path:
    parents = {p.parent for p in paths}
    if len(parents) == 1:
        return parents.pop()
    return capture
