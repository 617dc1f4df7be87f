"""Pictures of a coloured mesh from a pinhole camera, by ray casting on the CPU (no display or
GPU needed): to compare a model with the photos it came from, and for thumbnails."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def render(mesh, calibration, rotation, translation, width: int, height: int, threads: int = 2):
    """(RGB uint8 image, mask of pixels showing the mesh) of an open3d TriangleMesh with vertex
    colours, seen by the camera x = K (R X + t); lit by a head-on light so shape reads too."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene(nthreads=threads)
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    columns, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pixels = np.stack([columns.ravel(), rows.ravel(), np.ones(columns.size)], axis=1)
    directions = pixels @ np.linalg.inv(calibration).T @ rotation  # camera rays → world
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centre = -rotation.T @ translation
    rays = np.hstack([np.broadcast_to(centre, directions.shape), directions]).astype(np.float32)
    hits = scene.cast_rays(o3d.core.Tensor(rays))
    triangle = hits["primitive_ids"].numpy().astype(np.int64)
    mask = triangle != scene.INVALID_ID
    image = np.zeros((width * height, 3))
    if mask.any():
        faces = np.asarray(mesh.triangles)[triangle[mask]]
        uv = hits["primitive_uvs"].numpy()[mask]
        weights = np.column_stack([1 - uv.sum(axis=1), uv[:, 0], uv[:, 1]])
        colours = (
            np.asarray(mesh.vertex_colors)
            if mesh.has_vertex_colors()
            else np.full((len(mesh.vertices), 3), 0.7)
        )
        image[mask] = np.einsum("ij,ijk->ik", weights, colours[faces])
        normals = hits["primitive_normals"].numpy()[mask]
        shading = 0.6 + 0.4 * np.abs(np.einsum("ij,ij->i", normals, directions[mask]))
        if mesh.has_vertex_colors():
            shading = np.ones_like(shading)  # colours from photos already carry their light
        image[mask] *= shading[:, None]
    rgb = (np.clip(image, 0, 1) * 255).astype(np.uint8).reshape(height, width, 3)
    return rgb, mask.reshape(height, width)


def agreement_with_photos(output: Path, every: int = 2, scale: float = 0.25) -> list[dict]:
    """How much a photo reconstruction in `output` looks like its own photos: for every
    `every`-th photo, the model rendered from where the photo was taken, and the share of the
    picture it covers and the correlation of grey levels with the photo there. A quality
    figure that needs no ground truth (tests and bench/reconstruct.py)."""
    import open3d as o3d
    from PIL import Image

    from arkhiv.reconstruct.stereo import load_views

    # The archived cameras are in the model's frame (photos.mesh_from_photos moves both).
    views, _points = load_views(output / "sparse", output / "work" / "images", output / "work", 2)
    model = o3d.io.read_triangle_mesh(str(output / "model.ply"))
    found = []
    for view in views[::every]:
        calibration = view.calibration.copy()
        calibration[:2] *= scale
        height, width = (round(side * scale) for side in view.image.shape[:2])
        picture, covered = render(
            model, calibration, view.rotation, view.translation, width, height
        )
        photo = np.asarray(Image.fromarray(view.image).resize((width, height))).mean(axis=2)
        correlation = (
            float(np.corrcoef(photo[covered], picture.mean(axis=2)[covered])[0, 1])
            if covered.sum() > 100
            else 0.0
        )
        found.append(
            {"photo": view.name, "coverage": float(covered.mean()), "correlation": correlation}
        )
    return found
