"""Characterization and validation of point clouds: LAS, LAZ and COPC (laspy), E57 (ASTM E2807,
read here: every page's CRC-32C and the XML section), and vertex-only PLY.

Everything streams: points are read in chunks, E57 pages one block at a time, so a file of any
size is checked in bounded memory. Before any points are read, the counts a file declares are
checked against the resource limits (policies/resources.py): a LAZ, an E57 compressed vector or a
PLY that declares far more data than its bytes could hold is refused as a decompression bomb.
A location comes only from a declared CRS: the cloud's centre, in WGS84 when it is geographic or
when pyproj can convert it."""

from __future__ import annotations

import math
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arkhiv.ingest.characterize.findings import Findings
from arkhiv.ingest.characterize.meshes import (
    NOT_MESH_CONTENT,
    PlyHeader,
    ply_declared_check,
    ply_size_problem,
    ply_vertex_flags,
    read_ply_header,
    sniff,
)
from arkhiv.ingest.model import Characterization, GeoLocation
from arkhiv.policies.resources import (
    DEFAULT_LIMITS,
    ResourceLimitExceeded,
    ResourceLimits,
    check_declared,
)

CHUNK_POINTS = 1_000_000
E57_PAGE_SIZE = 1024  # ASTM E2807 fixes the physical page size
MAX_E57_XML_BYTES = 256 * 1024**2
_REPORTED_BAD_PAGES = 10  # problem lines for bad pages; the property keeps more offsets
_KEPT_BAD_OFFSETS = 1000


@dataclass(kw_only=True)
class _Result(Findings):
    tools: list[str] = field(default_factory=lambda: ["arkhiv point cloud reader"])
    limits: ResourceLimits = DEFAULT_LIMITS

    def fail(self, message: str) -> None:
        super().fail(f"{self.name}: {message}")


def characterize_point_cloud(
    path: Path, *, chunk_points: int = CHUNK_POINTS, limits: ResourceLimits = DEFAULT_LIMITS
) -> Characterization:
    """Characterize and validate one LAS/LAZ/COPC, E57 or vertex-only PLY file; one that
    declares more than `limits` allow is refused before its points are read."""
    path = Path(path)
    result = _Result(path=path, limits=limits)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        result.fail(f"cannot be read: {exc.strerror or exc}")
        return result.build()
    content = sniff(head, size)
    suffix = path.suffix.lower()
    handlers = {"las": _las, "e57": _e57, "ply": _ply}
    if content in handlers:
        try:
            handlers[content](result, size, chunk_points)
        except ResourceLimitExceeded as refused:
            result.problems.append(str(refused))  # the message names the file already
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, struct.error) as exc:
            # Mangled structure (a non-number where a count belongs, say) is a finding.
            result.fail(f"malformed {content.upper()} structure: {exc!r}")
    else:
        claimed = {".las": "LAS", ".laz": "LAZ", ".e57": "E57", ".ply": "PLY"}.get(suffix, suffix)
        what = NOT_MESH_CONTENT.get(content, f"{content} data")
        result.props["content"] = content
        result.fail(
            f"claims to be {claimed or 'a point cloud'} by its name but its content is {what}"
        )
        return result.build()
    expected = {"las": (".las", ".laz"), "e57": (".e57",), "ply": (".ply",)}[content]
    if suffix and suffix not in expected:
        result.fail(f"its name ends {suffix} but its content is {result.props.get('format')}")
    return result.build()


# -- LAS, LAZ, COPC -----------------------------------------------------------------------------


def _las(result: _Result, size: int, chunk_points: int) -> None:
    import laspy

    result.tools.append(f"laspy {laspy.__version__}")
    try:
        reader = laspy.open(str(result.path))
    except Exception as exc:  # laspy raises its own and plain errors for broken headers
        result.props["format"] = "LAS"
        result.fail(f"not a readable LAS/LAZ file: {exc}")
        return
    with reader:
        header = reader.header
        vlrs = list(header.vlrs) + list(header.evlrs or [])
        copc = any(v.user_id == "copc" and v.record_id == 1 for v in vlrs)
        compressed = bool(header.are_points_compressed)
        fmt = header.point_format
        props = result.props
        props.update(
            format="COPC" if copc else "LAZ" if compressed else "LAS",
            las_version=f"{header.version.major}.{header.version.minor}",
            point_format=fmt.id,
            point_record_length=fmt.size,
            point_count_header=int(header.point_count),
            dimensions=list(fmt.dimension_names),
            extra_dimensions=list(fmt.extra_dimension_names),
            has_colors="red" in fmt.dimension_names,
            has_gps_time="gps_time" in fmt.dimension_names,
            compressed=compressed,
            copc=copc,
            scales=[float(v) for v in header.scales],
            offsets=[float(v) for v in header.offsets],
            bounds_header_min=[float(v) for v in header.mins],
            bounds_header_max=[float(v) for v in header.maxs],
            system_identifier=header.system_identifier.strip("\x00 ") or None,
            generating_software=header.generating_software.strip("\x00 ") or None,
            creation_date=header.creation_date.isoformat() if header.creation_date else None,
            vlrs=[f"{v.user_id}/{v.record_id}" for v in vlrs],
        )
        if copc:
            info = next(v for v in vlrs if v.user_id == "copc" and v.record_id == 1)
            props["copc_center"] = [float(v) for v in info.center]
            props["copc_halfsize"] = float(info.halfsize)
            props["copc_spacing"] = float(info.spacing)
            first = header.vlrs[0] if len(header.vlrs) else None
            if first is not info:
                result.fail("COPC info VLR is not the first VLR (COPC 1.0 requires it)")
        elif result.path.name.lower().endswith(".copc.laz"):
            result.fail("named .copc.laz but it has no COPC info VLR (user 'copc', record 1)")
        # Before any point is decoded: LAZ of identical points compresses thousands of times.
        # Uncompressed LAS is held to the same ratio; a shortfall within it is a cut file,
        # read as far as it goes below.
        promised = int(header.point_count)
        check_declared(
            result.name,
            "points",
            promised,
            promised * fmt.size,
            size,
            result.limits,
            held="compressed",
            limit="max_points",
        )

        _check_evlrs(result, header, size)
        readable = int(header.point_count)
        if compressed:
            # A cut LAZ fails within the call that reaches the cut: LAZ chunk-sized calls
            # (50,000 points by default) bound how many readable points go uncounted.
            chunk_points = min(chunk_points, 50_000)
        else:
            readable = _las_records_present(result, header, size)
        counted, low, high, error = _read_las_points(
            reader, min(readable, header.point_count), chunk_points
        )
    props["point_count"] = counted
    promised = int(header.point_count)
    if error is not None and counted < promised:
        result.fail(
            f"the header promises {promised} points but only {counted} could be read ({error})"
        )
    elif counted < promised:
        result.fail(f"the header promises {promised} points but the file holds only {counted}")
    if promised == 0:
        result.fail("no points")
    if low is not None and high is not None:
        props["bounds_min"], props["bounds_max"] = low, high
        _compare_bounds(result, header, low, high)
    crs = _las_crs(vlrs)
    if crs is not None:
        if low is None or high is None:
            low, high = props["bounds_header_min"], props["bounds_header_max"]
        if crs.kind == "geographic" and not (
            -180 <= low[0] <= high[0] <= 180 and -90 <= low[1] <= high[1] <= 90
        ):
            result.note("coordinates exceed longitude/latitude ranges: is the CRS right?")
        _locate(result, crs, _centre(low, high), kind="las-crs")


def _las_records_present(result: _Result, header: Any, size: int) -> int:
    """Uncompressed LAS: how many whole point records the bytes hold (points end where the
    EVLRs start, or at the end of the file)."""
    start = int(header.offset_to_point_data)
    end = size
    evlr_start = int(getattr(header, "start_of_first_evlr", 0) or 0)
    if getattr(header, "number_of_evlrs", 0) and start <= evlr_start <= size:
        end = evlr_start
    record = header.point_format.size
    present = max(end - start, 0) // record
    spare = max(end - start, 0) - header.point_count * record
    if present >= header.point_count and spare > 0:
        result.note(f"{spare} bytes after the last point record")
    return present


def _check_evlrs(result: _Result, header: Any, size: int) -> None:
    """LAS 1.4 extended VLRs follow the points (COPC keeps its hierarchy there): each 60-byte
    header and its payload must lie within the file."""
    count = int(getattr(header, "number_of_evlrs", 0) or 0)
    position = int(getattr(header, "start_of_first_evlr", 0) or 0)
    if not count:
        return
    with result.path.open("rb") as f:
        for number in range(count):
            f.seek(position)
            raw = f.read(60)
            if len(raw) < 60:
                result.fail(f"EVLR {number} at byte {position} lies past the end of the file")
                return
            (length,) = struct.unpack_from("<Q", raw, 20)
            position += 60 + length
            if position > size:
                result.fail(f"EVLR {number} ends at byte {position} but the file has {size} bytes")
                return


def _read_las_points(
    reader: Any, limit: int, chunk_points: int
) -> tuple[int, list[float] | None, list[float] | None, str | None]:
    counted = 0
    low = high = None
    try:
        while counted < limit:
            points = reader.read_points(min(chunk_points, limit - counted))
            if len(points) == 0:
                break
            counted += len(points)
            xyz = [np.asarray(points.x), np.asarray(points.y), np.asarray(points.z)]
            lo = [float(a.min()) for a in xyz]
            hi = [float(a.max()) for a in xyz]
            low = lo if low is None else [min(a, b) for a, b in zip(low, lo, strict=True)]
            high = hi if high is None else [max(a, b) for a, b in zip(high, hi, strict=True)]
    except Exception as exc:  # lazrs and numpy errors on cut-off data
        return counted, low, high, str(exc) or type(exc).__name__
    return counted, low, high, None


def _compare_bounds(result: _Result, header: Any, low: list[float], high: list[float]) -> None:
    for axis, name in enumerate("xyz"):
        tolerance = float(header.scales[axis]) * 1.01
        if (
            low[axis] < float(header.mins[axis]) - tolerance
            or high[axis] > float(header.maxs[axis]) + tolerance
        ):
            result.note(f"points lie outside the header's {name} bounds")
        elif (
            low[axis] > float(header.mins[axis]) + tolerance
            or high[axis] < float(header.maxs[axis]) - tolerance
        ):
            result.note(f"the header's {name} bounds are wider than the points")


# -- coordinate reference systems ---------------------------------------------------------------


@dataclass
class Crs:
    kind: str | None  # geographic, projected, geocentric; None when not known
    epsg: int | None = None
    name: str | None = None
    wkt: str | None = None

    @property
    def label(self) -> str | None:
        if self.epsg:
            return f"EPSG:{self.epsg}"
        return self.name


def _las_crs(vlrs: list[Any]) -> Crs | None:
    wkt = None
    keys: dict[int, int] = {}
    for vlr in vlrs:
        if vlr.user_id == "LASF_Projection" and vlr.record_id == 2112 and hasattr(vlr, "string"):
            wkt = vlr.string.strip("\x00 ")
        elif vlr.user_id == "LASF_Projection" and vlr.record_id == 34735:
            keys = {
                k.id: k.value_offset
                for k in getattr(vlr, "geo_keys", [])
                if k.count == 1 and k.tiff_tag_location == 0  # the value itself, not a pointer
            }
    crs = parse_wkt(wkt) if wkt else None
    # GeoTIFF keys: 1024 model type (1 projected, 2 geographic, 3 geocentric); 3072 projected
    # and 2048 geographic EPSG codes; 32767 means user-defined.
    model = {1: "projected", 2: "geographic", 3: "geocentric"}.get(keys.get(1024, 0))
    code = keys.get(3072) if model == "projected" else keys.get(2048)
    code = code if code and code != 32767 else None
    if crs is None and (model or code):
        return Crs(model, code)
    if crs is not None and crs.epsg is None and code and model == crs.kind:
        crs.epsg = code
    return crs


def parse_wkt(text: str) -> Crs | None:
    """Kind, name and EPSG code of a WKT1 or WKT2 CRS, without pyproj. None if unparseable."""
    try:
        tree = _wkt_tree(text)
    except (ValueError, IndexError):
        return None
    node = tree
    if node[0] in ("COMPD_CS", "COMPOUNDCRS"):
        horizontal = [c for c in node[1:] if isinstance(c, list) and c[0] in _WKT_KINDS]
        if not horizontal:
            return None
        node = horizontal[0]
    kind = _WKT_KINDS.get(node[0])
    if kind is None:
        return None
    if node[0] in ("GEODCRS", "GEODETICCRS"):
        cs = next((c for c in node[1:] if isinstance(c, list) and c[0] == "CS"), None)
        kind = "geographic" if cs and str(cs[1]).lower() == "ellipsoidal" else "geocentric"
    name = node[1] if len(node) > 1 and isinstance(node[1], str) else None
    epsg = None
    for child in node[1:]:
        if (
            isinstance(child, list)
            and child[0] in ("AUTHORITY", "ID")
            and len(child) > 2
            and str(child[1]).upper() == "EPSG"
            and str(child[2]).isdigit()
        ):
            epsg = int(child[2])
    return Crs(kind, epsg, name, text)


_WKT_KINDS = {
    "GEOGCS": "geographic",
    "GEOGCRS": "geographic",
    "GEOGRAPHICCRS": "geographic",
    "PROJCS": "projected",
    "PROJCRS": "projected",
    "PROJECTEDCRS": "projected",
    "GEOCCS": "geocentric",
    "GEODCRS": "geographic",
    "GEODETICCRS": "geographic",
}
_WKT_TOKEN = re.compile(r'\s*("(?:[^"]|"")*"|[\[\](),]|[^\s\[\](),"]+)')


def _wkt_tree(text: str) -> list[Any]:
    tokens = _WKT_TOKEN.findall(text)
    position = 0

    def node() -> list[Any]:
        nonlocal position
        keyword = tokens[position].upper()
        position += 1
        if tokens[position] not in ("[", "("):
            raise ValueError("expected [")
        position += 1
        out: list[Any] = [keyword]
        while tokens[position] not in ("]", ")"):
            token = tokens[position]
            if token == ",":
                position += 1
            elif token.startswith('"'):
                out.append(token[1:-1].replace('""', '"'))
                position += 1
            elif position + 1 < len(tokens) and tokens[position + 1] in ("[", "("):
                out.append(node())
            else:
                out.append(token)
                position += 1
        position += 1
        return out

    return node()


def _centre(low: list[float], high: list[float]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(low, high, strict=True)]


def _locate(result: _Result, crs: Crs, centre: list[float], *, kind: str) -> None:
    """Record the CRS; derive the centre's WGS84 position when the CRS allows it."""
    props = result.props
    props["crs"] = crs.label
    props["crs_kind"] = crs.kind
    if crs.wkt:
        props["crs_wkt"] = crs.wkt
    props["centre"] = centre
    try:
        import pyproj
    except ImportError:
        pyproj = None
    latitude = longitude = None
    altitude: float | None = None
    if pyproj is not None:
        result.tools.append(f"pyproj {pyproj.__version__}")
        try:
            source = pyproj.CRS.from_user_input(crs.wkt or crs.label)
            horizontal = source.sub_crs_list[0] if source.is_compound else source
            if crs.epsg is None and horizontal.to_epsg():
                props["crs"] = f"EPSG:{horizontal.to_epsg()}"
            transformer = pyproj.Transformer.from_crs(horizontal, "EPSG:4326", always_xy=True)
            longitude, latitude = transformer.transform(centre[0], centre[1])
            if horizontal.is_geographic:
                altitude = centre[2]
        except Exception as exc:  # pyproj raises CRSError, ProjError and others
            result.note(f"the CRS could not be converted to WGS84: {exc}")
    elif crs.kind == "geographic":
        longitude, latitude, altitude = centre[0], centre[1], centre[2]
    else:
        result.note("pyproj is not installed: the projected centre is kept, not converted")
    props["has_location"] = True
    if latitude is None or longitude is None:
        return
    if not (math.isfinite(latitude) and math.isfinite(longitude)) or abs(latitude) > 90:
        result.note("the CRS gives no position on Earth for the centre: no location derived")
        return
    longitude = (longitude + 180) % 360 - 180
    result.locations.append(
        GeoLocation(
            latitude=float(latitude),
            longitude=float(longitude),
            altitude=None if altitude is None else float(altitude),
            kind=kind,
            crs=props["crs"],
        )
    )


# -- E57 ----------------------------------------------------------------------------------------


def _crc32c() -> tuple[Any, str] | None:
    try:
        import google_crc32c

        return google_crc32c.value, f"google-crc32c {_version('google-crc32c')}"
    except ImportError:
        pass
    try:
        import crc32c

        return crc32c.crc32c, f"crc32c {_version('crc32c')}"
    except ImportError:
        return None


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "?"


def _e57(result: _Result, size: int, _chunk_points: int) -> None:
    props = result.props
    props["format"] = "E57"
    with result.path.open("rb") as f:
        raw = f.read(48)
        if len(raw) < 48:
            result.fail(f"E57 header cut off ({len(raw)} bytes, 48 needed)")
            return
        _sig, major, minor, physical, xml_offset, xml_length, page = struct.unpack("<8sIIQQQQ", raw)
        props.update(e57_version=f"{major}.{minor}", page_size=page)
        if major != 1:
            result.fail(f"E57 major version {major}; ASTM E2807 defines version 1")
        if physical != size:
            state = "truncated" if size < physical else "has trailing data"
            result.fail(f"header says {physical} bytes but the file has {size} ({state})")
        if page != E57_PAGE_SIZE:
            result.fail(f"page size {page}; ASTM E2807 uses {E57_PAGE_SIZE}-byte pages")
            page = E57_PAGE_SIZE
        if size % page:
            result.fail(f"{size} bytes is not a whole number of {page}-byte pages")
        _check_pages(result, f, size, page)
        if xml_offset + xml_length > size:
            result.fail(f"XML section (byte {xml_offset}, {xml_length} bytes) runs past the end")
            return
        if xml_length > MAX_E57_XML_BYTES:
            result.fail(f"XML section of {xml_length} bytes is over the limit")
            return
        try:
            text = _logical_read(f, xml_offset, xml_length, page)
        except ValueError as exc:
            result.fail(f"XML section: {exc}")
            return
        _e57_xml(result, text, f, size, page)


def _check_pages(result: _Result, f: Any, size: int, page: int) -> None:
    """Every physical page ends with the big-endian CRC-32C of its first page - 4 bytes."""
    found = _crc32c()
    if found is None:
        result.props["pages_checked"] = 0
        result.note("no CRC-32C package installed (google-crc32c): page checksums not verified")
        return
    crc, tool = found
    result.tools.append(tool)
    payload = page - 4
    block = page * 1024
    bad: list[int] = []
    checked = 0
    offset = 0
    f.seek(0)
    while offset < size:
        data = f.read(block)
        if not data:
            break
        for start in range(0, len(data) - page + 1, page):
            stored = int.from_bytes(data[start + payload : start + page], "big")
            computed = crc(data[start : start + payload])
            checked += 1
            if stored != computed:
                at = offset + start
                if len(bad) < _KEPT_BAD_OFFSETS:
                    bad.append(at)
                if len(bad) <= _REPORTED_BAD_PAGES:
                    result.fail(
                        f"page {at // page} at byte offset {at} fails its CRC-32C check "
                        f"(stored 0x{stored:08x}, computed 0x{computed:08x})"
                    )
                result.props["crc_failures"] = result.props.get("crc_failures", 0) + 1
        offset += len(data)
    failures = result.props.setdefault("crc_failures", 0)
    if failures > _REPORTED_BAD_PAGES:
        result.fail(f"{failures - _REPORTED_BAD_PAGES} more pages fail their CRC-32C check")
    result.props["pages_checked"] = checked
    result.props["bad_page_offsets"] = bad


def _logical_read(f: Any, physical: int, length: int, page: int) -> bytes:
    """Read `length` logical bytes from a physical offset, skipping each page's checksum."""
    payload = page - 4
    if physical % page >= payload:
        raise ValueError(f"offset {physical} points into a page checksum")
    out = bytearray()
    position = physical
    while len(out) < length:
        within = position % page
        take = min(payload - within, length - len(out))
        f.seek(position)
        data = f.read(take)
        if len(data) < take:
            raise ValueError(f"cut off at byte {position + len(data)}")
        out += data
        position += take
        if position % page == payload:
            position += 4
    return bytes(out)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == name), None)


def _number(element: ET.Element | None, default: float | None = None) -> float | None:
    if element is None:
        return default
    text = (element.text or "").strip()
    try:
        return float(text) if text else 0.0  # E57 writes zero as an empty element
    except ValueError:
        return default


def _text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    return (element.text or "").strip() or None


def _e57_xml(result: _Result, text: bytes, f: Any, size: int, page: int) -> None:
    props = result.props
    if re.search(rb"<!(DOCTYPE|ENTITY)", text[:65536]):
        result.fail("XML section declares a DOCTYPE or entities, which E57 does not use")
        return
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        result.fail(f"XML section is not well-formed: {exc}")
        return
    if _local(root.tag) != "e57Root":
        result.fail(f"XML root is <{_local(root.tag)}>, not <e57Root>")
        return
    props["guid"] = _text(_child(root, "guid"))
    props["library_version"] = _text(_child(root, "e57LibraryVersion"))
    coordinate_metadata = _text(_child(root, "coordinateMetadata"))
    props["coordinate_metadata"] = coordinate_metadata
    images = _child(root, "images2D")
    props["images_2d"] = len(list(images)) if images is not None else 0

    data3d = _child(root, "data3D")
    scans = list(data3d) if data3d is not None else []
    summaries: list[dict[str, Any]] = []
    scan_bounds: list[dict[str, list[float]]] = []
    positions: list[list[float]] = []
    centres: list[list[float]] = []
    total = 0
    low: list[float] | None = None
    high: list[float] | None = None
    for number, scan in enumerate(scans):
        points = _child(scan, "points")
        count = int(points.get("recordCount", "0")) if points is not None else 0
        total += count
        proto = _child(points, "prototype")
        prototype = {_local(c.tag) for c in proto} if proto is not None else set()
        summaries.append(
            {
                "name": _text(_child(scan, "name")),
                "points": count,
                "coordinates": "cartesian"
                if "cartesianX" in prototype
                else "spherical"
                if "sphericalRange" in prototype
                else None,
                "has_colors": "colorRed" in prototype,
                "has_intensity": "intensity" in prototype,
                "sensor_vendor": _text(_child(scan, "sensorVendor")),
                "sensor_model": _text(_child(scan, "sensorModel")),
                "sensor_serial": _text(_child(scan, "sensorSerialNumber")),
            }
        )
        if points is not None:
            _check_section(result, f, points, number, size, page, count, len(prototype))
        rotation, translation = _pose(_child(scan, "pose"))
        if _child(scan, "pose") is not None:
            positions.append(translation)
        box = _child(scan, "cartesianBounds")
        if box is not None:
            lo = [_number(_child(box, f"{a}Minimum"), 0.0) or 0.0 for a in "xyz"]
            hi = [_number(_child(box, f"{a}Maximum"), 0.0) or 0.0 for a in "xyz"]
            scan_bounds.append({"min": lo, "max": hi})
            corners = [
                _apply(rotation, translation, [x, y, z])
                for x in (lo[0], hi[0])
                for y in (lo[1], hi[1])
                for z in (lo[2], hi[2])
            ]
            c_lo = [min(c[a] for c in corners) for a in range(3)]
            c_hi = [max(c[a] for c in corners) for a in range(3)]
            low = c_lo if low is None else [min(a, b) for a, b in zip(low, c_lo, strict=True)]
            high = c_hi if high is None else [max(a, b) for a, b in zip(high, c_hi, strict=True)]
            centres.append(_apply(rotation, translation, _centre(lo, hi)))
        elif _child(scan, "pose") is not None:
            centres.append(translation)

    check_declared(
        result.name, "points", total, 0, size, result.limits, held="any", limit="max_points"
    )
    props.update(scan_count=len(scans), point_count=total, scans=summaries)
    if not scans:
        result.note("no 3D scans (data3D is empty)")
    props["sensor_vendors"] = sorted({s["sensor_vendor"] for s in summaries if s["sensor_vendor"]})
    props["sensor_models"] = sorted({s["sensor_model"] for s in summaries if s["sensor_model"]})
    props["scan_bounds"] = scan_bounds
    if positions:
        props["scan_positions"] = positions
    if low is not None and high is not None:
        props["bounds_min"], props["bounds_max"] = low, high  # scan poses applied
    if coordinate_metadata and centres:
        crs = _e57_crs(coordinate_metadata)
        if crs is None:
            result.note("coordinateMetadata is not a CRS this reader understands")
            props["has_location"] = True  # georeferenced all the same: treat as locating
        else:
            if crs.kind == "geographic":
                # Degrees plus metres make no sense: a geographic frame's position is the pose.
                centres = positions or centres
            centre = [sum(c[a] for c in centres) / len(centres) for a in range(3)]
            _locate(result, crs, centre, kind="e57-georef")


def _e57_crs(text: str) -> Crs | None:
    match = re.fullmatch(r"\s*(?:urn:ogc:def:crs:)?EPSG:{1,2}(?:[\d.]*:)?(\d+)\s*", text, re.I)
    if match:
        code = int(match.group(1))
        kind = _known_epsg_kind(code)
        return Crs(kind, code, wkt=None)
    return parse_wkt(text)


def _known_epsg_kind(code: int) -> str | None:
    try:
        import pyproj

        crs = pyproj.CRS.from_epsg(code)
        if crs.is_geographic:
            return "geographic"
        return "projected" if crs.is_projected else "geocentric" if crs.is_geocentric else None
    except Exception:  # pyproj missing or an unknown code
        if code in (4326, 4258, 4269, 4979, 4937, 4283, 4167, 4612, 4617, 4230, 4267, 4277):
            return "geographic"
        if 32601 <= code <= 32660 or 32701 <= code <= 32760:
            return "projected"
        return None


def _pose(pose: ET.Element | None) -> tuple[list[float], list[float]]:
    if pose is None:
        return [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    rotation = _child(pose, "rotation")
    translation = _child(pose, "translation")
    q = [_number(_child(rotation, k), None) for k in "wxyz"] if rotation is not None else []
    t = [_number(_child(translation, k), 0.0) or 0.0 for k in "xyz"]
    if len(q) != 4 or any(v is None for v in q):
        return [1.0, 0.0, 0.0, 0.0], t
    return [float(v) for v in q if v is not None], t


def _apply(q: list[float], t: list[float], p: list[float]) -> list[float]:
    """Rotate p by the unit quaternion q (w, x, y, z), then translate by t."""
    w, x, y, z = q
    norm = math.sqrt(w * w + x * x + y * y + z * z) or 1.0
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return [sum(r[i] * p[i] for i in range(3)) + t[k] for k, r in enumerate(rows)]


def _check_section(
    result: _Result,
    f: Any,
    points: ET.Element,
    number: int,
    size: int,
    page: int,
    count: int,
    fields: int,
) -> None:
    """A scan's points live in a compressed vector binary section; its header must be there, and
    its declared record count must be one its bytes can hold (E57 bit-packs fields: one whose
    limits are equal takes no bits at all, so a count alone costs nothing to declare)."""
    offset_text = points.get("fileOffset")
    if offset_text is None or not offset_text.isdigit():
        result.fail(f"scan {number}: points have no fileOffset")
        return
    offset = int(offset_text)
    if offset + 32 > size or offset % page >= page - 4:
        result.fail(f"scan {number}: points section at byte {offset} lies outside the file")
        return
    raw = _logical_read(f, offset, 16, page)  # the header may straddle a page's checksum
    if raw[:1] != b"\x01":
        result.fail(f"scan {number}: byte {offset} does not start a compressed vector section")
        return
    # Section header: id, 7 reserved bytes, then the section's logical length (uint64).
    (section_length,) = struct.unpack_from("<Q", raw, 8)
    # pye57 decodes every field to 8 bytes.
    check_declared(
        f"{result.name} scan {number}",
        "points",
        count,
        count * 8 * max(fields, 1),
        min(section_length, size),
        result.limits,
        held="compressed",
        limit="max_points",
    )


# -- PLY point clouds ---------------------------------------------------------------------------


def _ply(result: _Result, size: int, chunk_points: int) -> None:
    props = result.props
    props["format"] = "PLY"
    try:
        header = read_ply_header(result.path)
    except ValueError as exc:
        result.fail(f"PLY header: {exc}")
        return
    vertex = header.element("vertex")
    if vertex is None or not vertex.has("x", "y", "z"):
        result.fail("no vertex element with x, y and z")
        return
    face = header.element("face")
    ply_declared_check(result.name, header, size, result.limits, limit="max_points")
    flags = ply_vertex_flags(vertex)
    props.update(
        ply_encoding=header.encoding,
        ply_elements={e.name: e.count for e in header.elements},
        point_count_header=vertex.count,
        has_normals=flags["has_normals"],
        has_colors=flags["has_vertex_colors"],
        vertex_properties=[p.name for p in vertex.properties],
        faces=face.count if face else 0,
    )
    problem = ply_size_problem(header, size)
    if problem:
        result.fail(problem)
    counted, low, high, error = _read_ply_vertices(result.path, header, chunk_points)
    props["point_count"] = counted
    if error:
        result.fail(error)
    elif counted < vertex.count:
        result.fail(f"the header declares {vertex.count} vertices but the file holds {counted}")
    if vertex.count == 0:
        result.fail("no points")
    if low is not None and high is not None:
        props["bounds_min"], props["bounds_max"] = low, high


def _read_ply_vertices(
    path: Path, header: PlyHeader, chunk_points: int
) -> tuple[int, list[float] | None, list[float] | None, str | None]:
    vertex = header.element("vertex")
    assert vertex is not None
    before = header.elements[: header.elements.index(vertex)]
    names = [p.name for p in vertex.properties]
    columns = [names.index(a) for a in "xyz"]
    counted = 0
    low = high = None

    def extend(xyz: np.ndarray) -> None:
        nonlocal low, high
        lo, hi = xyz.min(axis=0).tolist(), xyz.max(axis=0).tolist()
        low = lo if low is None else [min(a, b) for a, b in zip(low, lo, strict=True)]
        high = hi if high is None else [max(a, b) for a, b in zip(high, hi, strict=True)]

    with path.open("rb") as f:
        f.seek(header.length)
        if header.encoding == "ascii":
            for element in before:  # one line per row
                for _ in range(element.count):
                    f.readline()
            while counted < vertex.count:
                lines = []
                for _ in range(min(chunk_points, vertex.count - counted)):
                    line = f.readline()
                    if not line:
                        break
                    lines.append(line)
                if not lines:
                    break
                try:
                    rows = np.loadtxt(lines, usecols=columns, ndmin=2, dtype=np.float64)
                except ValueError as exc:
                    return counted, low, high, f"vertex data near row {counted + 1}: {exc}"
                counted += len(rows)
                extend(rows)
        else:
            order = "<" if header.encoding == "binary_little_endian" else ">"
            if vertex.fixed_size is None or any(e.fixed_size is None for e in before):
                return counted, low, high, None  # list properties: rows cannot be located
            f.seek(header.length + sum(e.count * (e.fixed_size or 0) for e in before))
            dtype = np.dtype([(p.name, order + p.type) for p in vertex.properties])
            while counted < vertex.count:
                want = min(chunk_points, vertex.count - counted)
                rows = np.fromfile(f, dtype=dtype, count=want)
                if len(rows) == 0:
                    break
                counted += len(rows)
                extend(np.column_stack([rows[a].astype(np.float64) for a in "xyz"]))
                if len(rows) < want:
                    break
    return counted, low, high, None
