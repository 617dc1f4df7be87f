"""Point cloud → mesh: PLY, LAS/LAZ or E57 → normals → screened Poisson, trimmed where the
points were too sparse to support it → the largest pieces → a glTF binary master and a PLY.
The cloud itself is kept beside the mesh (`points.ply`, every point, in the same local frame):
researchers who work on points get them without the site's georeference.

Models are written in a local frame: the cloud is moved to its centroid first, so no
georeferenced coordinate (a site's position) reaches the outputs. The offset is kept only in the
restricted working folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport
from arkhiv.reconstruct.surface import MIN_POINTS, SurfaceOptions, surface_from_points, write_master

CLOUD_SUFFIXES = {".ply", ".las", ".laz", ".e57"}
CLOUD_FILE = "points.ply"


@dataclass(frozen=True)
class PointCloudOptions:
    normal_neighbours: int = 30
    # Normal orientation and Poisson grow faster than the point count; a denser cloud is thinned
    # evenly for the surface (the kept cloud still has every point).
    max_surface_points: int = 2_000_000
    surface: SurfaceOptions = field(default_factory=SurfaceOptions)


def mesh_from_points(
    cloud: Path, output: Path, options: PointCloudOptions = PointCloudOptions()
) -> ReconstructionReport:
    """A mesh of the cloud in `output/model.glb` and `output/model.ply`."""
    import open3d as o3d

    report = ReconstructionReport("point cloud", asdict(options))
    report.software["open3d"] = o3d.__version__
    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with report.stage("read") as stage:
            points, colours, normals = _read(cloud)
            stage.figures.update(points=len(points), colours=colours is not None)
            finite = np.isfinite(points).all(axis=1)
            points = points[finite]
            if len(points) < MIN_POINTS:
                raise ReconstructionFailed(
                    f"the cloud has {len(points)} usable points; at least {MIN_POINTS} are needed"
                )
            origin = points.mean(axis=0)
            (work / "local-frame.json").write_text(json.dumps({"origin": origin.tolist()}))
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points - origin))
            if colours is not None:
                pcd.colors = o3d.utility.Vector3dVector(colours[finite])
            if normals is not None:
                pcd.normals = o3d.utility.Vector3dVector(normals[finite])
            o3d.io.write_point_cloud(str(output / CLOUD_FILE), pcd, write_ascii=False)
            report.outputs.append(CLOUD_FILE)
            if len(pcd.points) > options.max_surface_points:
                every = -(-len(pcd.points) // options.max_surface_points)
                pcd = pcd.uniform_down_sample(every)
                stage.figures["thinned_for_surface"] = len(pcd.points)
        with report.stage("normals") as stage:
            stage.figures["from_file"] = normals is not None
            if normals is None:
                pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(options.normal_neighbours))
                pcd.orient_normals_consistent_tangent_plane(options.normal_neighbours)
        mesh = surface_from_points(pcd, options.surface, report)
        write_master(mesh, output, report)
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


def _read(cloud: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(points, colours in 0..1 or None, normals or None) as float64 arrays."""
    suffix = cloud.suffix.lower()
    if suffix not in CLOUD_SUFFIXES:
        raise ReconstructionFailed(f"{cloud.name}: not a point cloud Arkhiv reads ({suffix})")
    try:
        if suffix == ".ply":
            import open3d as o3d

            pcd = o3d.io.read_point_cloud(str(cloud))
            points = np.asarray(pcd.points, dtype=np.float64)
            colours = np.asarray(pcd.colors) if pcd.has_colors() else None
            normals = np.asarray(pcd.normals) if pcd.has_normals() else None
            return points, colours, normals
        if suffix in (".las", ".laz"):
            import laspy

            data = laspy.read(cloud)
            points = np.column_stack([data.x, data.y, data.z]).astype(np.float64)
            colours = None
            if {"red", "green", "blue"} <= set(data.point_format.dimension_names):
                colours = _unit_colours(np.column_stack([data.red, data.green, data.blue]))
            return points, colours, None
        import pye57

        scans = pye57.E57(str(cloud))
        parts = [
            scans.read_scan(i, colors=True, ignore_missing_fields=True)
            for i in range(scans.scan_count)
        ]
        points = np.concatenate(
            [np.column_stack([p["cartesianX"], p["cartesianY"], p["cartesianZ"]]) for p in parts]
        )
        colours = None
        if all("colorRed" in p for p in parts):
            colours = _unit_colours(
                np.concatenate(
                    [
                        np.column_stack([p["colorRed"], p["colorGreen"], p["colorBlue"]])
                        for p in parts
                    ]
                )
            )
        return points.astype(np.float64), colours, None
    except ReconstructionFailed:
        raise
    except Exception as exc:  # untrusted input read by third-party parsers
        raise ReconstructionFailed(f"{cloud.name}: cannot be read as a point cloud: {exc}") from exc


def _unit_colours(rgb: np.ndarray) -> np.ndarray:
    """Colours in 0..1 from 8-bit or 16-bit channels (LAS stores 16 bits, many writers put 8-bit
    values in them; E57 declares limits that are almost always 0-255)."""
    rgb = rgb.astype(np.float64)
    return rgb / (65535.0 if rgb.max(initial=0) > 255 else 255.0)
