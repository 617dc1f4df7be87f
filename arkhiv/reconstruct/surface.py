"""Oriented points → a clean surface → the glTF binary master and a PLY: the end every pipeline
shares (point clouds, dense photo stereo, depth fusion).

Screened Poisson closes holes by guessing; the guesses are where few points support the
surface, so the vertices with the lowest density are cut away. Then the mesh is cleaned
(degenerate, duplicate and non-manifold parts, small floating pieces) and, above a face budget,
decimated by quadric error (fast-simplification) so masters stay usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport

MIN_POINTS = 100
MASTER_FILES = ["model.glb", "model.ply"]


@dataclass(frozen=True)
class SurfaceOptions:
    poisson_depth: int = 9
    density_trim_quantile: float = 0.05  # vertices with the least support are cut away
    min_component_share: float = 0.01  # pieces smaller than this share of faces are dropped
    max_faces: int | None = None  # decimated above this many faces
    threads: int = 2


def surface_from_points(pcd, options: SurfaceOptions, report: ReconstructionReport):
    """A cleaned open3d TriangleMesh of an oriented point cloud (colours carried over when the
    points have them). Records the stages "surface", "clean-up" and, when it runs, "decimate"."""
    import open3d as o3d

    if len(pcd.points) < MIN_POINTS or not pcd.has_normals():
        # Poisson on an empty or unoriented cloud crashes or returns nothing worth keeping.
        raise ReconstructionFailed(
            f"{len(pcd.points)} oriented points; at least {MIN_POINTS} are needed for a surface"
        )
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
            points=len(pcd.points),
            vertices=len(mesh.vertices),
            faces=len(mesh.triangles),
            trimmed_below=float(cut),
        )
    mesh = clean_up(mesh, options, report)
    if options.max_faces and len(mesh.triangles) > options.max_faces:
        mesh = decimate(mesh, options.max_faces, report)
    return mesh


def clean_up(mesh, options: SurfaceOptions, report: ReconstructionReport):
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
    return mesh


def decimate(mesh, max_faces: int, report: ReconstructionReport):
    """Quadric decimation down to about `max_faces`; vertex colours follow the nearest
    original vertex (fast-simplification keeps positions only)."""
    from importlib.metadata import version

    import fast_simplification
    import open3d as o3d

    report.software["fast-simplification"] = version("fast-simplification")
    with report.stage("decimate") as stage:
        vertices = np.asarray(mesh.vertices)
        faces = np.asarray(mesh.triangles)
        reduction = 1.0 - max_faces / len(faces)
        points, triangles = fast_simplification.simplify(
            vertices.astype(np.float32), faces.astype(np.int64), target_reduction=reduction
        )
        simplified = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(points.astype(np.float64)),
            o3d.utility.Vector3iVector(triangles.astype(np.int32)),
        )
        if mesh.has_vertex_colors():
            simplified.vertex_colors = o3d.utility.Vector3dVector(
                nearest_colours(np.asarray(points, float), vertices, np.asarray(mesh.vertex_colors))
            )
        simplified.compute_vertex_normals()
        stage.figures.update(faces_before=len(faces), faces=len(simplified.triangles))
    return simplified


def nearest_colours(points: np.ndarray, source: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The colour of the nearest source point for each of `points`."""
    import open3d.core as o3c

    search = o3c.nns.NearestNeighborSearch(o3c.Tensor(np.ascontiguousarray(source, np.float32)))
    search.knn_index()
    index, _distances = search.knn_search(o3c.Tensor(np.ascontiguousarray(points, np.float32)), 1)
    index = index.numpy()[:, 0]
    return colours[index]


def write_master(mesh, output: Path, report: ReconstructionReport) -> None:
    """`output/model.glb` (glTF 2.0 binary, the master) and `output/model.ply`."""
    import open3d as o3d
    import trimesh

    with report.stage("write") as stage:
        if not mesh.has_vertex_normals():
            mesh.compute_vertex_normals()
        o3d.io.write_triangle_mesh(str(output / "model.ply"), mesh, write_ascii=False)
        colours = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
        master = trimesh.Trimesh(
            vertices=np.asarray(mesh.vertices),
            faces=np.asarray(mesh.triangles),
            vertex_normals=np.asarray(mesh.vertex_normals),
            vertex_colors=(np.clip(colours, 0, 1) * 255).astype(np.uint8)
            if colours is not None
            else None,
            process=False,
        )
        master.export(output / "model.glb")
        report.outputs += MASTER_FILES
        stage.figures.update(
            faces=len(mesh.triangles),
            coloured=colours is not None,
            bytes=sum((output / name).stat().st_size for name in MASTER_FILES),
        )
