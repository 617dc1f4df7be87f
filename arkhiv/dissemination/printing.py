"""Print-ready replicas: a closed, manifold solid at a requested size, on the build plate.

`print_ready` reads a master (glTF is Y-up; printers are Z-up, so the model is turned), scales it
so that the chosen axis measures `size_mm`, repairs it into a solid, stands it on the build plate
(z = 0, and x, y >= 0 so that it is on the bed whether a slicer's origin is a corner or the
centre) and writes binary STL and 3MF (unit: millimetre), returning a `PrintReport` of everything
it changed.

Repair, in order, with the reasons for each choice:
1. Merge coincident vertices, drop faces that repeat a corner and faces given twice.
2. Drop debris: connected pieces with under 1 % of the largest piece's area (scans carry
   floating fragments; a real multi-part object keeps its parts).
3. Orient every piece consistently (breadth-first over face adjacency, flipping the minority).
4. Fill holes: each boundary loop gets a fan of triangles around its centroid, wound to match
   its neighbours. Scans are open where the scanner could not see (a base, a deep recess), and
   those holes are small next to the surface.
5. Turn pieces that enclose negative volume the right way out.
6. Check: trimesh must find the mesh watertight, consistently wound and a volume, and
   manifold3d must accept it as a manifold. A mesh that fails (non-manifold edges, a
   non-orientable patch) is remeshed: its signed distance, sign by ray voting, sampled on a grid
   of half a nozzle width (coarser if the grid would pass `max_grid_cells` along the longest
   axis) and contoured by marching cubes. Finer than half a nozzle adds nothing a printer can
   reproduce.

An open surface is not a solid: when filling the holes would add more than `max_hole_fraction`
(20 %) of the surface, as for a facade or relief scanned from one side, there is no volume to
print, and `NotPrintable` says so. With `solidify_mm` set, such a surface is printed instead as
a shell of that thickness: the surface of all points within `solidify_mm / 2` of it.

The report's wall thickness is measured by casting rays inwards from points spread over the
surface; `min_wall_mm` is the 1st percentile, which ignores the odd ray that slips through a
crease.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arkhiv.errors import ArkhivError

__all__ = ["FORMATS", "NotPrintable", "PrintOptions", "PrintReport", "print_ready"]

FORMATS = ("stl", "3mf")
AXES = ("longest", "x", "y", "z")
CORE_3MF = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
MODEL_RELATION = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
# a 256-cell cube and its margins; bounds memory (~0.6 GB at the peak) and time
MAX_GRID_POINTS = 20_000_000
THIN_WALL_WARNING = 0.05  # share of sampled walls thinner than the nozzle worth a warning
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # +90° about x


class NotPrintable(ArkhivError):
    """The master cannot become a printable solid; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PrintOptions:
    nozzle_mm: float = 0.4
    up: str = "y"  # the master's up axis: "y" for glTF, "z" for sources already Z-up
    min_component_fraction: float = 0.01
    max_hole_fraction: float = 0.2
    solidify_mm: float | None = None  # shell thickness for open surfaces; solids ignore it
    max_grid_cells: int = 256
    wall_samples: int = 20_000


@dataclass
class PrintReport:
    master: Path
    size_mm: float
    axis: str
    scale: float = 1.0  # master units to millimetres
    dimensions_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    faces_before: int = 0
    faces_after: int = 0
    watertight_before: bool = False
    watertight_after: bool = False
    manifold_after: bool = False
    vertices_merged: int = 0
    degenerate_faces_removed: int = 0
    duplicate_faces_removed: int = 0
    components_found: int = 0
    components_dropped: int = 0
    faces_flipped: int = 0
    components_inverted: int = 0
    holes_found: int = 0
    holes_filled: int = 0
    hole_area_fraction: float = 0.0
    remeshed: bool = False
    remesh_pitch_mm: float | None = None
    solidified_mm: float | None = None
    volume_mm3: float = 0.0
    min_wall_mm: float | None = None
    thin_wall_fraction: float | None = None
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def warnings(self) -> list[str]:
        """What may still go wrong on the printer."""
        found = []
        if self.thin_wall_fraction and self.thin_wall_fraction > THIN_WALL_WARNING:
            found.append(
                f"{self.thin_wall_fraction:.0%} of the walls are thinner than the nozzle "
                f"(thinnest about {self.min_wall_mm:.2g} mm): print larger or expect gaps"
            )
        return found

    @property
    def repairs(self) -> list[str]:
        """What was changed, one plain sentence each."""
        done = []
        if self.vertices_merged:
            done.append(f"merged {self.vertices_merged} duplicate vertices")
        if self.degenerate_faces_removed:
            done.append(f"removed {self.degenerate_faces_removed} degenerate faces")
        if self.duplicate_faces_removed:
            done.append(f"removed {self.duplicate_faces_removed} duplicate faces")
        if self.components_dropped:
            done.append(
                f"dropped {self.components_dropped} of {self.components_found} disconnected "
                "pieces as debris"
            )
        if self.faces_flipped:
            done.append(f"flipped {self.faces_flipped} faces to a consistent winding")
        if self.components_inverted:
            done.append(f"turned {self.components_inverted} inside-out pieces the right way")
        if self.holes_filled:
            done.append(
                f"filled {self.holes_filled} of {self.holes_found} holes "
                f"({self.hole_area_fraction:.1%} of the surface)"
            )
        if self.solidified_mm:
            done.append(f"thickened the open surface into a {self.solidified_mm:g} mm shell")
        elif self.remeshed:
            done.append(f"remeshed as a closed surface on a {self.remesh_pitch_mm:.3g} mm grid")
        return done

    def as_dict(self) -> dict[str, Any]:
        values = {key: getattr(self, key) for key in self.__dataclass_fields__}
        values["master"] = str(self.master)
        values["files"] = {kind: str(path) for kind, path in self.files.items()}
        values["dimensions_mm"] = [round(value, 4) for value in self.dimensions_mm]
        values["repairs"] = self.repairs
        values["warnings"] = self.warnings
        return values


def print_ready(
    master: Path,
    output: Path,
    size_mm: float,
    axis: str = "longest",
    formats: tuple[str, ...] = FORMATS,
    options: PrintOptions = PrintOptions(),
) -> PrintReport:
    """Write `<output>/<master stem>.stl` / `.3mf`, `size_mm` long along `axis` (x, y, z: Z up)."""
    import trimesh

    started = time.perf_counter()
    if size_mm <= 0:
        raise ValueError("size_mm must be positive")
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}")
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format {sorted(unknown)}; known: {FORMATS}")
    master = Path(master)
    report = PrintReport(master=master, size_mm=size_mm, axis=axis)
    source = trimesh.load_mesh(master, process=False)
    vertices = np.asarray(source.vertices, dtype=np.float64)
    if options.up == "y":
        vertices = vertices @ Y_UP_TO_Z_UP.T
    mesh = trimesh.Trimesh(vertices, np.asarray(source.faces), process=False)
    report.faces_before = len(mesh.faces)
    if not len(mesh.faces):
        raise NotPrintable(f"{master.name} holds no triangles")

    report.scale = _scale_to(mesh, size_mm, axis)
    _clean(mesh, report)
    report.watertight_before = bool(mesh.is_watertight)
    _drop_debris(mesh, report, options.min_component_fraction)
    report.faces_flipped = _orient_consistently(mesh)
    area = mesh.area
    holes = _boundary_loops(mesh)
    report.holes_found = len(holes)
    filled = _fill_holes(mesh, holes)
    report.hole_area_fraction = (filled.area - area) / area if area else 0.0
    open_surface = report.hole_area_fraction > options.max_hole_fraction
    if open_surface:
        if options.solidify_mm is None:
            raise NotPrintable(
                f"{master.name} is an open surface, not a solid: closing its holes would add "
                f"{report.hole_area_fraction:.0%} of its area, so it encloses no volume to "
                "print (a facade or relief scanned from one side). Ask for a shell with "
                "solidify_mm to print it as a thickened surface."
            )
        mesh = _solidify(mesh, options, report)
        solid = _is_solid(mesh)
    else:
        mesh = filled
        report.holes_filled = len(holes)
        report.components_inverted = _turn_outwards(mesh)
        solid = _is_solid(mesh)
        if not solid:
            mesh = _remesh(mesh, options, report)
            solid = _is_solid(mesh)
    if not solid:
        raise NotPrintable(f"{master.name} could not be made into a closed manifold solid")

    # the final size is exact: debris and remeshing may have moved the bounds a little
    report.scale *= _scale_to(mesh, size_mm, axis)
    mesh.apply_translation(-mesh.bounds[0])  # on the plate, in the positive octant
    report.dimensions_mm = tuple(float(value) for value in mesh.extents)
    report.faces_after = len(mesh.faces)
    report.watertight_after = bool(mesh.is_watertight)
    report.manifold_after = solid  # scaling and moving keep the topology manifold3d checked
    report.volume_mm3 = float(mesh.volume)
    report.min_wall_mm, report.thin_wall_fraction = _wall_thickness(mesh, options)

    output.mkdir(parents=True, exist_ok=True)
    for kind in formats:
        path = output / f"{master.stem}.{kind}"
        if kind == "stl":
            path.write_bytes(mesh.export(file_type="stl"))  # binary STL
        else:
            _write_3mf(path, mesh.vertices, mesh.faces, title=master.stem)
        report.files[kind] = path
    report.seconds = time.perf_counter() - started
    return report


def _scale_to(mesh: Any, size_mm: float, axis: str) -> float:
    extents = mesh.extents
    length = extents.max() if axis == "longest" else extents["xyz".index(axis)]
    if length <= 0:
        raise NotPrintable(f"the model has no extent along {axis}")
    factor = size_mm / length
    mesh.apply_scale(factor)
    return float(factor)


def _clean(mesh: Any, report: PrintReport) -> None:
    count = len(mesh.vertices)
    mesh.merge_vertices()
    report.vertices_merged = count - len(mesh.vertices)
    # only faces that repeat a corner: a zero-area sliver still closes the surface
    first, second, third = mesh.faces.T
    keep = (first != second) & (second != third) & (first != third)
    report.degenerate_faces_removed = int((~keep).sum())
    mesh.update_faces(keep)
    unique = np.zeros(len(mesh.faces), dtype=bool)
    unique[mesh.unique_faces()] = True
    report.duplicate_faces_removed = int((~unique).sum())
    mesh.update_faces(unique)
    mesh.remove_unreferenced_vertices()


def _face_components(mesh: Any) -> np.ndarray:
    from trimesh.graph import connected_component_labels

    return connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))


def _drop_debris(mesh: Any, report: PrintReport, fraction: float) -> None:
    labels = _face_components(mesh)
    areas = np.bincount(labels, weights=mesh.area_faces)
    report.components_found = len(areas)
    kept = areas >= fraction * areas.max()
    report.components_dropped = int((~kept).sum())
    if report.components_dropped:
        mesh.update_faces(kept[labels])
        mesh.remove_unreferenced_vertices()


def _orient_consistently(mesh: Any) -> int:
    """Flip faces so that neighbours traverse their shared edge in opposite directions.

    A breadth-first tree over face adjacency carries each face's orientation relative to its
    piece's root; in each piece the smaller side is flipped. Returns the number flipped."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    if mesh.is_winding_consistent:
        return 0
    faces = mesh.faces.copy()
    count = len(faces)
    pairs = mesh.face_adjacency
    edges = mesh.face_adjacency_edges
    # a pair disagrees when both faces run along the shared edge the same way
    disagree = _runs_forward(faces[pairs[:, 0]], edges) == _runs_forward(faces[pairs[:, 1]], edges)
    labels = _face_components(mesh)
    roots = np.unique(labels, return_index=True)[1]
    # one extra node joined to a face of every piece makes a single traversal reach them all
    hub = count
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.full(len(roots), hub)])
    columns = np.concatenate([pairs[:, 1], pairs[:, 0], roots])
    graph = coo_matrix((np.ones(len(rows)), (rows, columns)), shape=(count + 1, count + 1)).tocsr()
    _, parent = breadth_first_order(graph, hub, directed=False, return_predecessors=True)
    relation = coo_matrix(
        (
            np.concatenate([disagree, disagree]).astype(np.int8) + 1,
            (
                np.concatenate([pairs[:, 0], pairs[:, 1]]),
                np.concatenate([pairs[:, 1], pairs[:, 0]]),
            ),
        ),
        shape=(count, count),
    ).tocsr()
    child = np.flatnonzero((parent[:count] >= 0) & (parent[:count] != hub))
    step = np.zeros(count + 1, dtype=np.int8)  # 1 where a face disagrees with its parent
    step[child] = (np.asarray(relation[child, parent[child]]).ravel() - 1) % 2
    # pointer doubling: XOR of the steps from each face up to its piece's root
    pointer = np.where(parent[:count] >= 0, parent[:count], hub)
    pointer = np.append(pointer, hub)
    flip = step.copy()
    while np.any(pointer != hub):
        flip = flip ^ flip[pointer]
        pointer = pointer[pointer]
    flip = flip[:count].astype(bool)
    # per piece, flip whichever side is smaller
    flipped = np.bincount(labels, weights=flip)
    sizes = np.bincount(labels)
    flip ^= (flipped > sizes / 2)[labels]
    faces[flip] = faces[flip][:, ::-1]
    mesh.faces = faces
    return int(flip.sum())


def _runs_forward(faces: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Whether each face visits edges[:, 0] right before edges[:, 1]."""
    start = (faces == edges[:, :1]).argmax(axis=1)
    return faces[np.arange(len(faces)), (start + 1) % 3] == edges[:, 1]


def _boundary_loops(mesh: Any) -> list[np.ndarray]:
    """Directed boundary edges (as the faces run along them), grouped into holes."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from trimesh.grouping import group_rows

    boundary = mesh.edges[group_rows(mesh.edges_sorted, require_count=1)]
    if not len(boundary):
        return []
    size = len(mesh.vertices)
    graph = coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), (size, size))
    _, labels = connected_components(graph, directed=False)
    loop_of_edge = labels[boundary[:, 0]]
    order = np.argsort(loop_of_edge, kind="stable")
    splits = np.flatnonzero(np.diff(loop_of_edge[order])) + 1
    return np.split(boundary[order], splits)


def _fill_holes(mesh: Any, holes: list[np.ndarray]) -> Any:
    """A copy of `mesh` with each hole closed by a fan around the centroid of its rim.

    Each rim edge a->b gets the triangle (b, a, centre): it runs the edge the other way from the
    face beside it, which is what consistent winding needs, whatever order the rim is in."""
    import trimesh

    if not holes:
        return mesh.copy()
    vertices = [mesh.vertices]
    faces = [mesh.faces]
    next_vertex = len(mesh.vertices)
    for rim in holes:
        vertices.append(mesh.vertices[np.unique(rim)].mean(axis=0, keepdims=True))
        centre = np.full((len(rim), 1), next_vertex)
        faces.append(np.hstack([rim[:, 1:2], rim[:, 0:1], centre]))
        next_vertex += 1
    return trimesh.Trimesh(np.vstack(vertices), np.vstack(faces), process=False)


def _turn_outwards(mesh: Any) -> int:
    """Flip every closed piece whose signed volume is negative; return how many there were."""
    labels = _face_components(mesh)
    corners = mesh.vertices[mesh.faces]
    signed = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])) / 6.0
    inverted = np.bincount(labels, weights=signed) < 0
    if inverted.any():
        faces = mesh.faces.copy()
        flip = inverted[labels]
        faces[flip] = faces[flip][:, ::-1]
        mesh.faces = faces
    return int(inverted.sum())


def _is_solid(mesh: Any) -> bool:
    return bool(
        len(mesh.faces)
        and mesh.is_watertight
        and mesh.is_winding_consistent
        and mesh.is_volume
        and _manifold3d_accepts(mesh)
    )


def _manifold3d_accepts(mesh: Any) -> bool:
    import manifold3d

    solid = manifold3d.Manifold(
        manifold3d.Mesh(
            vert_properties=np.ascontiguousarray(mesh.vertices, dtype=np.float32),
            tri_verts=np.ascontiguousarray(mesh.faces, dtype=np.uint32),
        )
    )
    return solid.status() == manifold3d.Error.NoError and not solid.is_empty()


def _grid(mesh: Any, pitch: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    # an odd fraction of a cell off the model's bounds, so that flat faces lying on the bounds
    # never fall exactly on grid points (marching cubes emits degenerate sheets there)
    low = mesh.bounds[0] - margin - 0.3719 * pitch
    cells = np.ceil((mesh.bounds[1] + margin - low) / pitch).astype(int) + 1
    if int(np.prod(cells)) > MAX_GRID_POINTS:
        raise NotPrintable(
            f"remeshing at {pitch:.3g} mm needs {int(np.prod(cells)):,} grid points, "
            f"more than {MAX_GRID_POINTS:,}"
        )
    axes = [(low[i] + pitch * np.arange(cells[i])).astype(np.float32) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1), low


def _contour(volume: np.ndarray, level: float, pitch: float, low: np.ndarray) -> Any:
    import trimesh
    from skimage.measure import marching_cubes

    vertices, faces, _, _ = marching_cubes(volume, level=level, spacing=(pitch,) * 3)
    mesh = trimesh.Trimesh(vertices + low, faces, process=False)
    _turn_outwards(mesh)
    return mesh


def _remesh(mesh: Any, options: PrintOptions, report: PrintReport) -> Any:
    import open3d as o3d

    pitch = max(options.nozzle_mm / 2, float(mesh.extents.max()) / options.max_grid_cells)
    points, low = _grid(mesh, pitch, 2 * pitch)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.faces.astype(np.uint32)),
    )
    # several rays vote on inside/outside, which tolerates what is left of holes and folds
    distance = scene.compute_signed_distance(o3d.core.Tensor(points), nsamples=5).numpy()
    report.remeshed = True
    report.remesh_pitch_mm = pitch
    return _contour(distance, 0.0, pitch, low)


def _solidify(mesh: Any, options: PrintOptions, report: PrintReport) -> Any:
    import open3d as o3d

    thickness = float(options.solidify_mm)
    # shrink first so that the shell, which grows by half its thickness all round, ends near size
    longest = float(mesh.extents.max())
    shrink = max(longest - thickness, longest / 2) / longest
    mesh.apply_scale(shrink)
    report.scale *= shrink
    pitch = min(
        max(options.nozzle_mm / 2, float(mesh.extents.max()) / options.max_grid_cells),
        thickness / 3,  # three samples across the wall keep its thickness
    )
    span = mesh.extents + 2 * thickness
    if np.prod(np.ceil(span / pitch) + 1) > MAX_GRID_POINTS:
        # coarser, but never so coarse that the wall falls between two samples
        pitch = float(np.cbrt(np.prod(span) / MAX_GRID_POINTS)) * 1.05
        if pitch > thickness / 2:
            raise NotPrintable(
                f"a {thickness:g} mm shell is too thin to model at this size: ask for a "
                "thicker shell or a smaller print"
            )
    points, low = _grid(mesh, pitch, thickness)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.faces.astype(np.uint32)),
    )
    distance = scene.compute_distance(o3d.core.Tensor(points)).numpy()
    report.solidified_mm = thickness
    report.remeshed = True
    report.remesh_pitch_mm = pitch
    return _contour(distance, thickness / 2, pitch, low)


def _wall_thickness(mesh: Any, options: PrintOptions) -> tuple[float | None, float | None]:
    """(1st percentile of the inward ray distances, share of samples thinner than the nozzle)."""
    import open3d as o3d
    import trimesh

    points, faces = trimesh.sample.sample_surface(mesh, options.wall_samples, seed=0)
    inward = -mesh.face_normals[faces]
    start = points + inward * 1e-4  # off the surface it starts on
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(mesh.vertices.astype(np.float32)),
        o3d.core.Tensor(mesh.faces.astype(np.uint32)),
    )
    rays = o3d.core.Tensor(np.hstack([start, inward]).astype(np.float32))
    hit = scene.cast_rays(rays)["t_hit"].numpy()
    hit = hit[np.isfinite(hit)]
    if not len(hit):
        return None, None
    return float(np.percentile(hit, 1)), float((hit < options.nozzle_mm).mean())


def _write_3mf(path: Path, vertices: np.ndarray, faces: np.ndarray, title: str) -> None:
    """A 3MF package holding one mesh object in millimetres, as 3MF Core 1.x describes."""
    from xml.sax.saxutils import escape, quoteattr

    model = io.StringIO()
    model.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    model.write(f'<model unit="millimeter" xml:lang="en-US" xmlns="{CORE_3MF}">\n')
    model.write(f' <metadata name="Title">{escape(title)}</metadata>\n')
    model.write(f' <resources>\n  <object id="1" type="model" name={quoteattr(title)}>\n')
    model.write("   <mesh>\n    <vertices>\n")
    # one formatting operation per block: several times faster than a line at a time
    row = '     <vertex x="%.5f" y="%.5f" z="%.5f"/>\n'
    model.write(row * len(vertices) % tuple(np.asarray(vertices, dtype=float).ravel().tolist()))
    model.write("    </vertices>\n    <triangles>\n")
    row = '     <triangle v1="%d" v2="%d" v3="%d"/>\n'
    model.write(row * len(faces) % tuple(np.asarray(faces, dtype=int).ravel().tolist()))
    model.write("    </triangles>\n   </mesh>\n  </object>\n </resources>\n")
    model.write(' <build>\n  <item objectid="1"/>\n </build>\n</model>\n')
    types = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" '
        'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="model" '
        'ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
        "</Types>"
    )
    relations = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Target="/3D/3dmodel.model" Id="rel0" Type="{MODEL_RELATION}"/>'
        "</Relationships>"
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as package:
        package.writestr("[Content_Types].xml", types)
        package.writestr("_rels/.rels", relations)
        package.writestr("3D/3dmodel.model", model.getvalue())
