"""Point cloud → mesh: PLY, LAS/LAZ or E57 → normals → screened Poisson, trimmed where the
points were too sparse to support it → the largest pieces → a glTF binary master and a PLY.

Models are written in a local frame: the cloud is moved to its centroid first, so no
georeferenced coordinate (a site's position) reaches the outputs. The offset is kept only in the
restricted working folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport

CLOUD_SUFFIXES = {".ply", ".las", ".laz", ".e57"}
MIN_POINTS = 100


@dataclass(frozen=True)
class PointCloudOptions:
    poisson_depth: int = 9
    density_trim_quantile: float = 0.05  # vertices with the least support are cut away
    normal_neighbours: int = 30
    min_component_share: float = 0.01  # pieces smaller than this share of faces are dropped
    threads: int = 2


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
        with report.stage("normals") as stage:
            stage.figures["from_file"] = normals is not None
            if normals is None:
                pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(options.normal_neighbours))
                pcd.orient_normals_consistent_tangent_plane(options.normal_neighbours)
        with report.stage("surface") as stage:
            with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
                mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
                    pcd, depth=options.poisson_depth, n_threads=options.threads
                )
            densities = np.asarray(densities)
            if len(densities) == 0:
                raise ReconstructionFailed("no surface could be fitted to the points")
            cut = np.quantile(densities, options.density_trim_quantile)
            mesh.remove_vertices_by_mask(densities < cut)
            stage.figures.update(
                vertices=len(mesh.vertices), faces=len(mesh.triangles), trimmed_below=float(cut)
            )
        with report.stage("clean-up") as stage:
            mesh.remove_degenerate_triangles()
            mesh.remove_duplicated_triangles()
            mesh.remove_duplicated_vertices()
            mesh.remove_non_manifold_edges()
            clusters, sizes, _areas = mesh.cluster_connected_triangles()
            clusters, sizes = np.asarray(clusters), np.asarray(sizes)
            if len(sizes) == 0:
                raise ReconstructionFailed("the fitted surface was empty after clean-up")
            small = sizes < options.min_component_share * sizes.sum()
            mesh.remove_triangles_by_mask(small[clusters])
            mesh.remove_unreferenced_vertices()
            stage.figures.update(
                pieces=len(sizes),
                kept=int((~small).sum()),
                vertices=len(mesh.vertices),
                faces=len(mesh.triangles),
            )
        with report.stage("write") as stage:
            _write(mesh, output)
            report.outputs += ["model.glb", "model.ply"]
            stage.figures["bytes"] = sum((output / n).stat().st_size for n in report.outputs)
    except ReconstructionFailed as failure:
        report.failure = failure.reason
        failure.report = report  # type: ignore[attr-defined]
        raise
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
                rgb = np.column_stack([data.red, data.green, data.blue]).astype(np.float64)
                colours = rgb / max(1.0, float(rgb.max()))
            return points, colours, None
        import pye57

        scans = pye57.E57(str(cloud))
        parts = [scans.read_scan(i, ignore_missing_fields=True) for i in range(scans.scan_count)]
        points = np.concatenate(
            [np.column_stack([p["cartesianX"], p["cartesianY"], p["cartesianZ"]]) for p in parts]
        )
        return points.astype(np.float64), None, None
    except ReconstructionFailed:
        raise
    except Exception as exc:  # untrusted input read by third-party parsers
        raise ReconstructionFailed(f"{cloud.name}: cannot be read as a point cloud: {exc}") from exc


def _write(mesh, output: Path) -> None:
    import open3d as o3d
    import trimesh

    o3d.io.write_triangle_mesh(str(output / "model.ply"), mesh, write_ascii=False)
    colours = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
    master = trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices),
        faces=np.asarray(mesh.triangles),
        vertex_normals=np.asarray(mesh.vertex_normals) if mesh.has_vertex_normals() else None,
        vertex_colors=(colours * 255).astype(np.uint8) if colours is not None else None,
        process=False,
    )
    master.export(output / "model.glb")
