"""A scene whose truth is known, for reconstruction tests: a bumpy, richly textured object on a
textured ground square, photographed by cameras on two rings around it.

Everything is deterministic from a seed. The world is metric and Y-up (the ground is y = 0), so
ARKit-style exports need no change of world axes. Cameras follow OpenCV: +X right, +Y down, +Z
forward, with a rotation and translation that take world points into the camera. Pixel centres
sit on integer coordinates, and the principal point is the image centre ((width - 1) / 2), which
in COLMAP's half-pixel convention is exactly width / 2.

The colour is a function of the 3D position (three planar textures of multi-scale noise and
random discs, blended by the surface's orientation, with detail from 1 m down to 5 mm), so every
part of the surface looks different and feature matching has plenty to work with. Shading is
Lambertian under a fixed sun plus ambient light: it does not depend on the viewpoint, so fused
colours can be compared with `shaded_colour`.

Writers put the rendered views on disk as a photo set, a generic RGB-D folder (the layout
`arkhiv.reconstruct.depth` reads) or a Polycam raw-data export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
import trimesh
from PIL import Image

SUN = np.array([0.5, 1.0, 0.3]) / np.linalg.norm([0.5, 1.0, 0.3])
AMBIENT = 0.35
BACKGROUND = np.array([0.62, 0.66, 0.70])
TEXTURE_HALF_SPAN = 1.8  # metres; the textures cover [-1.8, 1.8] on each axis
TEXTURE_SIDE = 1024  # texels, 3.5 mm each
GHOST_CENTRE = np.array([0.75, 1.1, 0.35])  # a blob only low-confidence depth "sees"
GHOST_RADIUS = 0.15
# The ARKit camera looks down -Z with +Y up; OpenCV's looks down +Z with +Y down.
ARKIT_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in OpenCV convention; `rotation` and `translation` map world points
    into the camera (x_cam = R x_world + t)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def centre(self) -> np.ndarray:
        return -self.rotation.T @ self.translation

    @property
    def camera_to_world(self) -> np.ndarray:
        """4x4, OpenCV axes."""
        pose = np.eye(4)
        pose[:3, :3] = self.rotation.T
        pose[:3, 3] = self.centre
        return pose

    def resized(self, width: int, height: int) -> Camera:
        """The same camera at another resolution (pixel areas scaled, centres kept on
        integer coordinates)."""
        sx, sy = width / self.width, height / self.height
        return Camera(
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            self.rotation,
            self.translation,
        )


@dataclass
class View:
    camera: Camera
    colour: np.ndarray  # uint8, height x width x 3, RGB
    depth: np.ndarray  # float32 metres along the camera's +Z; 0 where nothing was hit


@dataclass
class SyntheticScene:
    """The truth (`object_mesh`, `ground_mesh`, together `truth_mesh`), the `cameras`, and the
    rendered `views` (made on first use). `visible_surface_points` is what a reconstruction can
    be asked to cover; `closest_surface` and `shaded_colour` give what it should look like."""

    object_mesh: trimesh.Trimesh
    ground_mesh: trimesh.Trimesh | None
    cameras: list[Camera]
    textures: np.ndarray  # 3 planes (XY, YZ, XZ) x side x side x RGB, zero mean, unit spread
    seed: int
    _raycaster: object = field(default=None, repr=False)

    @cached_property
    def truth_mesh(self) -> trimesh.Trimesh:
        """Object and ground together (two separate pieces; they intersect)."""
        parts = [self.object_mesh] + ([self.ground_mesh] if self.ground_mesh else [])
        return trimesh.util.concatenate(parts)

    @cached_property
    def _vertex_normals(self) -> np.ndarray:
        """Area-weighted (trimesh's own wants scipy)."""
        mesh = self.truth_mesh
        triangles = mesh.vertices[mesh.faces]
        weighted = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        normals = np.zeros_like(mesh.vertices)
        for corner in range(3):
            np.add.at(normals, mesh.faces[:, corner], weighted)
        return normals / (np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12)

    @property
    def object_size(self) -> float:
        return float(np.ptp(self.object_mesh.vertices, axis=0).max())

    def colour_at(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Albedo (0..1 RGB) at world points on surfaces with these unit normals."""
        # Triplanar mapping: each texture plane paints the surfaces that face it, so none is
        # stretched into stripes. Its axes are tilted so that every plane faces the ground
        # equally.
        axes = _oblique_axes()
        tilted = np.asarray(points, dtype=np.float64) @ axes
        weights = np.abs(np.asarray(normals) @ axes) ** 4
        weights /= np.linalg.norm(weights, axis=1, keepdims=True) + 1e-12
        total = np.zeros((len(tilted), 3))
        for plane, (a, b) in enumerate(((0, 1), (1, 2), (0, 2))):
            facing = weights[:, 3 - a - b][:, None]  # the axis square to this plane
            total += facing * _bilinear(self.textures[plane], tilted[:, a], tilted[:, b])
        return np.clip(0.5 + 0.22 * total, 0.03, 0.97)

    def shaded_colour(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """What a camera sees at world points with these unit normals (any viewpoint)."""
        return self.colour_at(points, normals) * _shading(normals)[:, None]

    def closest_surface(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest points on the truth and the (face) normals there."""
        import open3d as o3d

        self.cast(np.zeros((1, 6)))  # builds the ray-casting scene
        closest = self._raycaster.compute_closest_points(
            o3d.core.Tensor(np.asarray(points, dtype=np.float32))
        )
        normals = closest["primitive_normals"].numpy().astype(np.float64)
        return closest["points"].numpy().astype(np.float64), normals

    def cast(self, rays: np.ndarray) -> dict[str, np.ndarray]:
        """open3d ray casting on the truth: t_hit (inf for no hit) and smooth unit normals."""
        import open3d as o3d

        if self._raycaster is None:
            scene = o3d.t.geometry.RaycastingScene()
            mesh = self.truth_mesh
            scene.add_triangles(
                o3d.core.Tensor(mesh.vertices.astype(np.float32)),
                o3d.core.Tensor(mesh.faces.astype(np.uint32)),
            )
            self._raycaster = scene
        hits = self._raycaster.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
        t_hit = hits["t_hit"].numpy()
        hit = np.isfinite(t_hit)
        primitive = np.where(hit, hits["primitive_ids"].numpy(), 0).astype(np.int64)
        uv = hits["primitive_uvs"].numpy()
        corners = self.truth_mesh.faces[primitive]
        vertex_normals = self._vertex_normals
        normals = (
            (1 - uv[..., :1] - uv[..., 1:]) * vertex_normals[corners[..., 0]]
            + uv[..., :1] * vertex_normals[corners[..., 1]]
            + uv[..., 1:] * vertex_normals[corners[..., 2]]
        )
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True) + 1e-12
        # Faces seen from behind (the ground from below) are lit as their visible side.
        facing_away = np.sum(normals * rays[..., 3:], axis=-1) > 0
        normals[facing_away] *= -1
        return {"t_hit": t_hit, "normals": normals}

    def render(self, camera: Camera) -> View:
        origins, directions = _camera_rays(camera)
        hits = self.cast(np.concatenate([origins, directions], axis=-1))
        t_hit = hits["t_hit"]
        hit = np.isfinite(t_hit)
        # Ray directions have unit camera-Z, so the hit distance is the z-depth.
        depth = np.where(hit, t_hit, 0).astype(np.float32)
        colour = np.broadcast_to(BACKGROUND, (*depth.shape, 3)).copy()
        points = origins[hit] + directions[hit] * t_hit[hit][:, None]
        colour[hit] = self.shaded_colour(points, hits["normals"][hit])
        return View(camera, (np.clip(colour, 0, 1) * 255 + 0.5).astype(np.uint8), depth)

    def depth(self, camera: Camera) -> np.ndarray:
        """z-depth only (float32 metres, 0 for no hit), e.g. at a depth sensor's resolution."""
        origins, directions = _camera_rays(camera)
        t_hit = self.cast(np.concatenate([origins, directions], axis=-1))["t_hit"]
        return np.where(np.isfinite(t_hit), t_hit, 0).astype(np.float32)

    @cached_property
    def views(self) -> list[View]:
        return [self.render(camera) for camera in self.cameras]

    def visible_surface_points(self, count: int, min_views: int = 1, seed: int = 0) -> np.ndarray:
        """Points on the truth that at least `min_views` cameras see: what a reconstruction
        from these views can be asked to cover."""
        points, _faces = trimesh.sample.sample_surface(self.truth_mesh, count, seed=seed)
        seen = np.zeros(len(points), dtype=int)
        for camera in self.cameras:
            in_camera = points @ camera.rotation.T + camera.translation
            z = in_camera[:, 2]
            u = camera.fx * in_camera[:, 0] / z + camera.cx
            v = camera.fy * in_camera[:, 1] / z + camera.cy
            inside = (z > 0) & (u > -0.5) & (u < camera.width - 0.5)
            inside &= (v > -0.5) & (v < camera.height - 0.5)
            directions = points - camera.centre
            rays = np.concatenate([np.broadcast_to(camera.centre, points.shape), directions], 1)
            t_hit = self.cast(rays)["t_hit"]
            seen += inside & (t_hit > 1 - 1e-3)
        return points[seen >= min_views]


def make_scene(
    seed: int = 7,
    cameras: int = 24,
    width: int = 640,
    height: int = 480,
    focal: float = 560.0,
    ground: bool = True,
) -> SyntheticScene:
    """A bumpy sphere (about 1 m across, centred 0.4 m above the ground so its base is buried)
    on a 2.4 m ground square, seen by `cameras` cameras on two rings 2.2 m from its centre
    (half at 25° elevation, half at 50°, offset in azimuth)."""
    rng = np.random.default_rng(seed)
    sphere = trimesh.creation.icosphere(subdivisions=5)
    directions = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    radius = np.full(len(directions), 0.5)
    for _bump in range(6):
        frequency = rng.normal(size=3)
        frequency *= rng.uniform(2.0, 4.0) / np.linalg.norm(frequency)
        radius += 0.5 * rng.uniform(0.03, 0.06) * np.sin(directions @ frequency + rng.uniform(0, 6))
    centre = np.array([0.0, 0.4, 0.0])
    bumpy = trimesh.Trimesh(directions * radius[:, None] + centre, sphere.faces, process=False)
    ground_mesh = None
    if ground:
        half = 1.2
        corners = np.array([[-half, 0, -half], [half, 0, -half], [half, 0, half], [-half, 0, half]])
        ground_mesh = trimesh.Trimesh(corners, [[0, 2, 1], [0, 3, 2]], process=False)
    textures = np.stack([_noise_texture(rng) for _plane in range(3)])
    target = centre - [0, 0.05, 0]
    rig = []
    for ring, elevation in enumerate((25.0, 50.0)):
        count = cameras // 2 + (cameras % 2 if ring == 0 else 0)
        for index in range(count):
            azimuth = np.radians(360.0 * index / count + ring * 180.0 / count)
            up_angle = np.radians(elevation)
            offset = np.array(
                [
                    np.cos(up_angle) * np.cos(azimuth),
                    np.sin(up_angle),
                    np.cos(up_angle) * np.sin(azimuth),
                ]
            )
            rig.append(_look_at(target + 2.2 * offset, target, width, height, focal))
    return SyntheticScene(bumpy, ground_mesh, rig, textures, seed)


def write_photo_set(folder: Path, scene: SyntheticScene, exif_focal: bool = True) -> list[Path]:
    """The colour views as JPEGs (`view-00.jpg`, …). With `exif_focal`, each carries its focal
    length exactly: FocalLength in mm with FocalPlaneXResolution (pixels per cm, 10 µm pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, view in enumerate(scene.views):
        path = folder / f"view-{number:02d}.jpg"
        image = Image.fromarray(view.colour)
        exif = Image.Exif()
        if exif_focal:
            details = exif.get_ifd(0x8769)
            pixels_per_cm = 1000  # 10 µm pixels
            details[0x920A] = view.camera.fx / pixels_per_cm * 10  # FocalLength, mm
            details[0xA20E] = float(pixels_per_cm)  # FocalPlaneXResolution
            details[0xA20F] = float(pixels_per_cm)  # FocalPlaneYResolution
            details[0xA210] = 3  # FocalPlaneResolutionUnit: centimetres
        image.save(path, quality=95, exif=exif)
        written.append(path)
    return written


def write_rgbd_folder(
    folder: Path,
    scene: SyntheticScene,
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
    depth_scale: float = 1000.0,
) -> Path:
    """The generic RGB-D layout: `color/NAME.png`, `depth/NAME.png` (uint16, `depth_scale`
    units per metre), `poses/NAME.txt` (4x4 camera-to-world, OpenCV axes, `offset` added as a
    georeferenced capture would have it) and `intrinsics.json`."""
    for part in ("color", "depth", "poses"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    first = scene.cameras[0]
    intrinsics = {
        "fx": first.fx,
        "fy": first.fy,
        "cx": first.cx,
        "cy": first.cy,
        "width": first.width,
        "height": first.height,
        "depth_scale": depth_scale,
    }
    (folder / "intrinsics.json").write_text(json.dumps(intrinsics, indent=2))
    for number, view in enumerate(scene.views):
        name = f"frame-{number:04d}"
        cv2.imwrite(str(folder / "color" / f"{name}.png"), view.colour[..., ::-1])
        cv2.imwrite(str(folder / "depth" / f"{name}.png"), _to_uint16(view.depth * depth_scale))
        pose = view.camera.camera_to_world
        pose[:3, 3] += offset
        np.savetxt(folder / "poses" / f"{name}.txt", pose, fmt="%.9f")
    return folder


def write_polycam_export(
    folder: Path,
    scene: SyntheticScene,
    depth_reduction: int = 4,
    corrected: bool = True,
    confidence_levels: tuple[int, int, int] = (0, 1, 2),
    ghost: bool = True,
    blurry: tuple[int, ...] = (5,),
) -> Path:
    """A Polycam raw-data export under `folder/keyframes/`.

    Depth maps are rendered at 1/`depth_reduction` of the image size (uint16 mm), as ARKit's
    are. Confidence is the high level everywhere except where a floating ghost sphere (radius
    0.15 m, at (0.75, 1.1, 0.35), in front of the object for some views) was "measured": those
    pixels carry the ghost's depth at the low level, so a reader that does not drop low
    confidence fuses a blob that is not there. `confidence_levels` are the values written for
    low, medium, high (ARKit's 0/1/2, or 0/127/255 as Polycam's own documentation gives them).

    With `corrected`, `corrected_cameras/` holds the true poses and `cameras/` the same poses
    shifted by 4 cm of drift (so a reader that ignores the corrected ones does worse), and
    `corrected_images/` holds the images. Keyframes in `blurry` get a blur score a tenth of the
    others'.
    """
    keyframes = folder / "keyframes"
    parts = ["images", "cameras", "depth", "confidence"]
    if corrected:
        parts += ["corrected_images", "corrected_cameras"]
    for part in parts:
        (keyframes / part).mkdir(parents=True, exist_ok=True)
    ghost_scene = _ghost_scene() if ghost else None
    drift_rng = np.random.default_rng(scene.seed + 1)
    low, _medium, high = confidence_levels
    for number, view in enumerate(scene.views):
        name = str(1_650_000_000_000_000 + number * 250_000)  # microsecond timestamps
        camera = view.camera
        small = camera.resized(camera.width // depth_reduction, camera.height // depth_reduction)
        depth = scene.depth(small)
        confidence = np.full(depth.shape, high, np.uint8)
        if ghost_scene is not None:
            origins, directions = _camera_rays(small)
            rays = np.concatenate([origins, directions], -1).astype(np.float32)
            ghost_depth = ghost_scene.cast_rays(_tensor(rays))["t_hit"].numpy()
            in_front = np.isfinite(ghost_depth) & ((depth == 0) | (ghost_depth < depth))
            depth[in_front] = ghost_depth[in_front]
            confidence[in_front] = low
        cv2.imwrite(str(keyframes / "depth" / f"{name}.png"), _to_uint16(depth * 1000))
        cv2.imwrite(str(keyframes / "confidence" / f"{name}.png"), confidence)
        image_bgr = view.colour[..., ::-1]
        cv2.imwrite(
            str(keyframes / "images" / f"{name}.jpg"), image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
        arkit_pose = camera.camera_to_world @ ARKIT_FROM_OPENCV
        blur = 40.0 if number in blurry else 400.0 + number
        record = _polycam_camera(camera, arkit_pose, blur, int(name))
        if corrected:
            cv2.imwrite(
                str(keyframes / "corrected_images" / f"{name}.jpg"),
                image_bgr,
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
            (keyframes / "corrected_cameras" / f"{name}.json").write_text(json.dumps(record))
            drift = drift_rng.normal(size=3)
            arkit_pose = arkit_pose.copy()
            arkit_pose[:3, 3] += 0.04 * drift / np.linalg.norm(drift)
            record = _polycam_camera(camera, arkit_pose, blur, int(name))
        (keyframes / "cameras" / f"{name}.json").write_text(json.dumps(record))
    return folder


def _polycam_camera(camera: Camera, arkit_pose: np.ndarray, blur: float, timestamp: int) -> dict:
    record = {
        "fx": camera.fx,
        "fy": camera.fy,
        "cx": camera.cx,
        "cy": camera.cy,
        "width": camera.width,
        "height": camera.height,
        "blur_score": blur,
        "timestamp": timestamp,
        "center_depth": 2.2,
    }
    for row in range(3):
        for column in range(4):
            record[f"t_{row}{column}"] = float(arkit_pose[row, column])
    return record


def _ghost_scene():
    import open3d as o3d

    ghost = trimesh.creation.icosphere(subdivisions=3, radius=GHOST_RADIUS)
    ghost.apply_translation(GHOST_CENTRE)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        _tensor(ghost.vertices.astype(np.float32)), _tensor(ghost.faces.astype(np.uint32))
    )
    return scene


def _tensor(array: np.ndarray):
    import open3d as o3d

    return o3d.core.Tensor(np.ascontiguousarray(array))


def _look_at(position, target, width, height, focal) -> Camera:
    forward = (target - position) / np.linalg.norm(target - position)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return Camera(
        width,
        height,
        focal,
        focal,
        (width - 1) / 2,
        (height - 1) / 2,
        rotation,
        -rotation @ position,
    )


def _camera_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Origins and world directions (unit camera-Z) through every pixel centre."""
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    in_camera = np.stack(
        [(u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, np.ones(u.shape)], axis=-1
    )
    directions = in_camera @ camera.rotation  # R^T applied to each row
    origins = np.broadcast_to(camera.centre, directions.shape)
    return origins, directions


def _oblique_axes() -> np.ndarray:
    """A rotation (as columns) taking the cube diagonal to +Y: each axis then makes the same
    angle (54.7°) with the vertical."""
    diagonal = np.ones(3) / np.sqrt(3)
    up = np.array([0.0, 1.0, 0.0])
    axis = np.cross(diagonal, up)
    sine, cosine = np.linalg.norm(axis), diagonal @ up
    k = axis / sine
    cross_matrix = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sine * cross_matrix + (1 - cosine) * cross_matrix @ cross_matrix


def _shading(normals: np.ndarray) -> np.ndarray:
    return AMBIENT + (1 - AMBIENT) * np.clip(normals @ SUN, 0, None)


def _noise_texture(rng: np.random.Generator) -> np.ndarray:
    """side x side x RGB, zero mean and unit spread: multi-scale value noise (4 to 256 cells
    across) plus thousands of random discs (5 mm to 5 cm), the blobs feature detectors like."""
    texture = np.zeros((TEXTURE_SIDE, TEXTURE_SIDE, 3), np.float32)
    cells = 4
    while cells <= TEXTURE_SIDE // 4:
        coarse = rng.normal(size=(cells, cells, 3)).astype(np.float32)
        texture += cells**-0.2 * cv2.resize(
            coarse, (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_CUBIC
        )
        cells *= 2
    texture /= texture.std()
    # Discs are added, not painted over, so the noise still shows inside them.
    discs = np.zeros_like(texture)
    for _disc in range(12000):
        centre = rng.integers(0, TEXTURE_SIDE, size=2)
        radius = int(np.exp(rng.uniform(np.log(1.5), np.log(14))))
        colour = rng.normal(0.0, 1.0, size=3) + rng.normal(0.0, 1.0)  # hue and brightness
        cv2.circle(discs, (int(centre[0]), int(centre[1])), radius, colour.tolist(), -1)
    texture += discs
    texture = cv2.GaussianBlur(texture, (0, 0), 0.7)
    texture -= texture.mean(axis=(0, 1))
    texture /= texture.std(axis=(0, 1))
    return texture


def _bilinear(texture: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Texture values at plane coordinates (metres), clamped to the covered span."""
    side = texture.shape[0]
    scale = (side - 1) / (2 * TEXTURE_HALF_SPAN)
    x = np.clip((a + TEXTURE_HALF_SPAN) * scale, 0, side - 1).astype(np.float32)
    y = np.clip((b + TEXTURE_HALF_SPAN) * scale, 0, side - 1).astype(np.float32)
    # cv2.remap wants image-shaped maps with sides under 32768: fold the list into rows.
    width = 1024
    padded = -len(x) % width
    x = np.pad(x, (0, padded)).reshape(-1, width)
    y = np.pad(y, (0, padded)).reshape(-1, width)
    values = cv2.remap(texture, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return values.reshape(-1, 3)[: len(a)].astype(np.float64)


def _to_uint16(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)
