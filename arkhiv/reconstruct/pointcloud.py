"""Point cloud → mesh: PLY, LAS/LAZ or E57 → normals → screened Poisson, trimmed where the
points were too sparse to support it → the largest pieces → a glTF binary master and a PLY.
The cloud itself is kept beside the mesh (`points.ply`, every point, in the same local frame):
researchers who work on points get them without the site's georeference.

Models are written in a local frame: the cloud is moved to its centroid first, so no
georeferenced coordinate (a site's position) reaches the outputs. The offset is kept only in the
restricted working folder.

The cloud is never held whole: LAS/LAZ, E57 and binary PLY are read in chunks, twice (the first
pass finds the centroid, the second writes `points.ply` in the local frame as it reads and keeps
an evenly thinned subsample for the surface), so memory is bounded by a chunk and the subsample,
not by the file. The counts a file declares are checked against the resource limits first
(policies/resources.py); only ASCII PLY and PLY with list properties before the vertices are
read whole, and then only within the memory budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    ResourceLimitExceeded,
    ResourceLimits,
    check_declared,
    check_memory,
)
from arkhiv.reconstruct.report import ReconstructionFailed, ReconstructionReport
from arkhiv.reconstruct.surface import MIN_POINTS, SurfaceOptions, surface_from_points, write_master

CLOUD_SUFFIXES = {".ply", ".las", ".laz", ".e57"}
CLOUD_FILE = "points.ply"
CHUNK_POINTS = 250_000  # about 50 MB of working arrays a chunk
# Peak bytes per point of a whole read by open3d (points, colours and normals as float64, and the
# copies made on the way to the local frame).
WHOLE_READ_BYTES_PER_POINT = 200


@dataclass(frozen=True)
class PointCloudOptions:
    normal_neighbours: int = 30
    # Normal orientation and Poisson grow faster than the point count; a denser cloud is thinned
    # evenly for the surface (the kept cloud still has every point).
    max_surface_points: int = 2_000_000
    surface: SurfaceOptions = field(default_factory=SurfaceOptions)


def mesh_from_points(
    cloud: Path,
    output: Path,
    options: PointCloudOptions = PointCloudOptions(),
    *,
    limits: ResourceLimits = DEFAULT_LIMITS,
) -> ReconstructionReport:
    """A mesh of the cloud in `output/model.glb` and `output/model.ply`. A cloud declaring more
    than `limits` allow ends with the reason, unread."""
    import open3d as o3d

    report = ReconstructionReport("point cloud", asdict(options))
    report.software["open3d"] = o3d.__version__
    work = output / "work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        with report.stage("read") as stage:
            source = _open(cloud, limits)
            count, read, origin, colour_scale = _survey(source)
            stage.figures.update(points=read, colours=source.colours)
            if count < MIN_POINTS:
                raise ReconstructionFailed(
                    f"the cloud has {count} usable points; at least {MIN_POINTS} are needed"
                )
            (work / "local-frame.json").write_text(json.dumps({"origin": origin.tolist()}))
            every = -(-count // options.max_surface_points)
            points, colours, normals = _write_local(
                source, output / CLOUD_FILE, count, origin, colour_scale, every
            )
            report.outputs.append(CLOUD_FILE)
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
            if colours is not None:
                pcd.colors = o3d.utility.Vector3dVector(colours)
            if normals is not None:
                pcd.normals = o3d.utility.Vector3dVector(normals)
            if every > 1:
                stage.figures["thinned_for_surface"] = len(pcd.points)
        with report.stage("normals") as stage:
            stage.figures["from_file"] = source.normals
            if not source.normals:
                pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(options.normal_neighbours))
                pcd.orient_normals_consistent_tangent_plane(options.normal_neighbours)
        mesh = surface_from_points(pcd, options.surface, report)
        write_master(mesh, output, report)
    except ReconstructionFailed as failure:
        raise report.failed(failure) from None
    return report


# One chunk: (points, raw colours or None, normals or None), float64 points and normals.
Chunk = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


@dataclass
class _Source:
    """A cloud that can be read in chunks, as many times as needed."""

    name: str
    chunks: Callable[[], Iterator[Chunk]]
    colours: bool
    normals: bool


def _survey(source: _Source) -> tuple[int, int, np.ndarray, float]:
    """First pass: (finite points, points read, their centroid, the colour scale). Colours are
    taken as 16-bit when any channel exceeds 255 (LAS stores 16 bits, many writers put 8-bit
    values in them; E57 declares limits that are almost always 0-255)."""
    count = read = 0
    total = np.zeros(3)
    brightest = 0.0
    for points, colours, _normals in _guarded(source):
        finite = np.isfinite(points).all(axis=1)
        read += len(points)
        count += int(finite.sum())
        total += points[finite].sum(axis=0)
        if colours is not None and len(colours):
            brightest = max(brightest, float(colours.max()))
    origin = total / count if count else total
    return count, read, origin, 65535.0 if brightest > 255 else 255.0


def _write_local(
    source: _Source, path: Path, count: int, origin: np.ndarray, colour_scale: float, every: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Second pass: every finite point, moved to the local frame, streamed into a binary PLY;
    returns every `every`-th of them (as open3d's uniform_down_sample would) for the surface."""
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if source.normals:
        fields += [("nx", "<f8"), ("ny", "<f8"), ("nz", "<f8")]
    if source.colours:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    types = {"<f8": "double", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    header += [f"property {types[kind]} {name}" for name, kind in fields]
    header.append("end_header\n")
    kept: list[Chunk] = []
    seen = 0
    with path.open("wb") as out:
        out.write("\n".join(header).encode("ascii"))
        for points, colours, normals in _guarded(source):
            finite = np.isfinite(points).all(axis=1)
            rows = np.empty(int(finite.sum()), dtype=fields)
            local = points[finite] - origin
            rows["x"], rows["y"], rows["z"] = local.T
            unit = None
            if normals is not None:
                normals = normals[finite]
                rows["nx"], rows["ny"], rows["nz"] = normals.T
            if colours is not None:
                unit = np.clip(colours[finite] / colour_scale, 0.0, 1.0)
                eight = np.rint(unit * 255).astype(np.uint8)
                rows["red"], rows["green"], rows["blue"] = eight.T
            out.write(rows.tobytes())
            # Global index i of the finite points is kept when i % every == 0.
            chosen = np.arange(seen, seen + len(rows)) % every == 0
            seen += len(rows)
            kept.append(
                (
                    local[chosen],
                    None if unit is None else unit[chosen],
                    None if normals is None else normals[chosen],
                )
            )
    if seen != count:
        raise ReconstructionFailed(
            f"{source.name}: {count} usable points on a first reading, {seen} on a second"
        )
    points = np.concatenate([k[0] for k in kept]) if kept else np.zeros((0, 3))
    colours = np.concatenate([k[1] for k in kept]) if source.colours and kept else None
    normals = np.concatenate([k[2] for k in kept]) if source.normals and kept else None
    return points, colours, normals


def _guarded(source: _Source) -> Iterator[Chunk]:
    """The source's chunks; a third-party parser's failure becomes a reason."""
    try:
        yield from source.chunks()
    except (ReconstructionFailed, ResourceLimitExceeded):
        raise
    except Exception as exc:  # untrusted input read by third-party parsers
        raise ReconstructionFailed(
            f"{source.name}: cannot be read as a point cloud: {exc}"
        ) from exc


def _open(cloud: Path, limits: ResourceLimits) -> _Source:
    """The cloud as a chunked source, once what it declares passed the resource limits."""
    suffix = cloud.suffix.lower()
    if suffix not in CLOUD_SUFFIXES:
        raise ReconstructionFailed(f"{cloud.name}: not a point cloud Arkhiv reads ({suffix})")
    try:
        if suffix == ".ply":
            return _ply(cloud, limits)
        if suffix in (".las", ".laz"):
            return _las(cloud, limits)
        return _e57(cloud, limits)
    except ResourceLimitExceeded as refused:
        raise ReconstructionFailed(str(refused)) from None
    except ReconstructionFailed:
        raise
    except Exception as exc:  # untrusted input read by third-party parsers
        raise ReconstructionFailed(f"{cloud.name}: cannot be read as a point cloud: {exc}") from exc


def _las(cloud: Path, limits: ResourceLimits) -> _Source:
    import laspy

    size = cloud.stat().st_size
    with laspy.open(cloud) as reader:
        header = reader.header
        declared = int(header.point_count)
        check_declared(
            cloud.name,
            "points",
            declared,
            declared * header.point_format.size,
            size if header.are_points_compressed else size - header.offset_to_point_data,
            limits,
            # Uncompressed, every declared record must be in the file.
            held="compressed" if header.are_points_compressed else "raw",
            limit="max_points",
        )
        colours = {"red", "green", "blue"} <= set(header.point_format.dimension_names)

    def chunks() -> Iterator[Chunk]:
        with laspy.open(cloud) as reader:
            for data in reader.chunk_iterator(CHUNK_POINTS):
                points = np.column_stack([data.x, data.y, data.z]).astype(np.float64, copy=False)
                rgb = np.column_stack([data.red, data.green, data.blue]) if colours else None
                yield points, rgb, None

    return _Source(cloud.name, chunks, colours, False)


def _e57(cloud: Path, limits: ResourceLimits) -> _Source:
    import pye57

    size = cloud.stat().st_size
    scans = pye57.E57(str(cloud))
    try:
        declared = [
            (int(h.point_count), set(h.point_fields))
            for h in (scans.get_header(i) for i in range(scans.scan_count))
        ]
    finally:
        scans.close()
    total = 0
    for number, (count, fields) in enumerate(declared):
        total += count
        # pye57 decodes every field to 8 bytes; E57 bit-packs them, a constant field in no bits.
        check_declared(
            f"{cloud.name} scan {number}",
            "points",
            count,
            count * 8 * len(fields),
            size,
            limits,
            held="compressed",
            limit="max_points",
        )
    check_declared(cloud.name, "points", total, 0, size, limits, held="any", limit="max_points")
    colours = bool(declared) and all(
        {"colorRed", "colorGreen", "colorBlue"} <= fields for _count, fields in declared
    )

    def chunks() -> Iterator[Chunk]:
        reader_file = pye57.E57(str(cloud))
        try:
            for index in range(reader_file.scan_count):
                yield from _e57_scan(reader_file, index, colours)
        finally:
            reader_file.close()

    return _Source(cloud.name, chunks, colours, False)


def _e57_scan(scans: Any, index: int, colours: bool) -> Iterator[Chunk]:
    """One scan in chunks, as pye57's read_scan gives it whole: invalid points dropped,
    spherical coordinates converted, the scan's pose applied."""
    from pye57.e57 import COORDINATE_SYSTEMS, convert_spherical_to_cartesian

    header = scans.get_header(index)
    system = header.get_coordinate_system(COORDINATE_SYSTEMS)
    spherical = system is COORDINATE_SYSTEMS.SPHERICAL
    if spherical:
        fields = ["sphericalRange", "sphericalAzimuth", "sphericalElevation"]
        state = "sphericalInvalidState"
    else:
        fields = ["cartesianX", "cartesianY", "cartesianZ"]
        state = "cartesianInvalidState"
    if colours:
        fields += ["colorRed", "colorGreen", "colorBlue"]
    present = set(header.point_fields)
    if state in present:
        fields.append(state)
    fields = [f for f in fields if f in present]
    data, buffers = scans.make_buffers(fields, min(CHUNK_POINTS, max(header.point_count, 1)))
    reader = header.points.reader(buffers)
    try:
        while read := reader.read():
            part = {name: values[:read] for name, values in data.items()}
            if state in part:
                valid = ~part.pop(state).astype(bool)
                part = {name: values[valid] for name, values in part.items()}
            xyz = np.column_stack([part[f] for f in fields[:3]]).astype(np.float64)
            if spherical:
                xyz = convert_spherical_to_cartesian(xyz)
            if header.has_pose():
                xyz = scans.to_global(xyz, header.rotation, header.translation)
            rgb = (
                np.column_stack([part[f] for f in ("colorRed", "colorGreen", "colorBlue")])
                if colours
                else None
            )
            yield np.asarray(xyz, dtype=np.float64), rgb, None
    finally:
        reader.close()


_PLY_COLOURS = (
    ("red", "green", "blue"),
    ("r", "g", "b"),
    ("diffuse_red", "diffuse_green", "diffuse_blue"),
)
_PLY_SCALE = {"u1": 255.0, "i1": 127.0, "u2": 65535.0, "i2": 32767.0}


def _ply(cloud: Path, limits: ResourceLimits) -> _Source:
    from arkhiv.ingest.characterize.meshes import ply_declared_check, read_ply_header

    size = cloud.stat().st_size
    try:
        header = read_ply_header(cloud)
    except ValueError as exc:
        raise ReconstructionFailed(
            f"{cloud.name}: cannot be read as a point cloud: {exc}"
        ) from None
    ply_declared_check(cloud.name, header, size, limits, limit="max_points")
    vertex = header.element("vertex")
    if vertex is None or not vertex.has("x", "y", "z"):
        return _Source(cloud.name, lambda: iter(()), False, False)
    before = header.elements[: header.elements.index(vertex)]
    types = {p.name: p.type for p in vertex.properties}
    colour = next((names for names in _PLY_COLOURS if vertex.has(*names)), None)
    normals = vertex.has("nx", "ny", "nz")
    if (
        header.encoding == "ascii"
        or vertex.fixed_size is None
        or any(e.fixed_size is None for e in before)
    ):
        # Rows cannot be located without parsing what precedes them: read whole, if it fits.
        check_memory(cloud.name, "its points", vertex.count * WHOLE_READ_BYTES_PER_POINT, limits)
        return _Source(cloud.name, lambda: _ply_whole(cloud), colour is not None, normals)
    order = "<" if header.encoding == "binary_little_endian" else ">"
    dtype = np.dtype([(p.name, order + p.type) for p in vertex.properties])
    start = header.length + sum(e.count * (e.fixed_size or 0) for e in before)
    check_declared(
        cloud.name,
        "points",
        vertex.count,
        vertex.count * dtype.itemsize,
        size - start,
        limits,
        held="raw",  # binary rows must all be in the file
        limit="max_points",
    )
    scale = _PLY_SCALE.get(types[colour[0]], 1.0) if colour else 1.0

    def chunks() -> Iterator[Chunk]:
        with cloud.open("rb") as f:
            f.seek(start)
            left = vertex.count
            while left:
                rows = np.fromfile(f, dtype=dtype, count=min(CHUNK_POINTS, left))
                if len(rows) == 0:
                    break
                left -= len(rows)
                points = np.column_stack([rows[a].astype(np.float64) for a in "xyz"])
                rgb = None
                if colour:
                    # Raw values on a 0-255 scale, as _survey expects of 8-bit colours.
                    rgb = np.column_stack([rows[c].astype(np.float64) for c in colour])
                    rgb = rgb * (255.0 / scale)
                normal = (
                    np.column_stack([rows[n].astype(np.float64) for n in ("nx", "ny", "nz")])
                    if normals
                    else None
                )
                yield points, rgb, normal

    return _Source(cloud.name, chunks, colour is not None, normals)


def _ply_whole(cloud: Path) -> Iterator[Chunk]:
    import open3d as o3d

    pcd = o3d.io.read_point_cloud(str(cloud))
    points = np.asarray(pcd.points, dtype=np.float64)
    colours = np.asarray(pcd.colors) * 255.0 if pcd.has_colors() else None
    normals = np.asarray(pcd.normals) if pcd.has_normals() else None
    yield points, colours, normals
