"""Point cloud characterization and validation: LAS/LAZ/COPC against laspy read independently,
E57 page checksums and XML against pye57, vertex-only PLY against numpy, and broken copies made in
tmp_path (cut LAS, flipped E57 byte, synthetic georeferenced E57)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import laspy
import numpy as np
import pytest

from arkhiv.ingest.characterize.pointclouds import characterize_point_cloud, parse_wkt

try:
    import pyproj
except ImportError:
    pyproj = None
needs_pyproj = pytest.mark.skipif(pyproj is None, reason="pyproj not installed")


@pytest.fixture(scope="module")
def clouds(corpora: Path) -> Path:
    return corpora / "pointclouds"


@pytest.fixture
def no_pyproj(monkeypatch):
    """As on an install without pyproj: importing it fails."""
    monkeypatch.setitem(sys.modules, "pyproj", None)


def errors(c) -> list[str]:
    return [p for p in c.problems if not p.startswith("note:")]


# -- LAS, LAZ, COPC -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple.las", "simple.laz", "simple.copc.laz", "simple1_4.las"])
def test_las_family_matches_laspy(clouds, name):
    path = clouds / name
    points = laspy.read(path)
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["point_count"] == p["point_count_header"] == len(points) == points.header.point_count
    assert p["bounds_min"] == pytest.approx([points.x.min(), points.y.min(), points.z.min()])
    assert p["bounds_max"] == pytest.approx([points.x.max(), points.y.max(), points.z.max()])
    assert p["bounds_header_min"] == pytest.approx(list(points.header.mins))
    assert p["point_format"] == points.header.point_format.id
    assert p["las_version"] == f"{points.header.version.major}.{points.header.version.minor}"
    assert p["scales"] == pytest.approx(list(points.header.scales))
    assert p["offsets"] == pytest.approx(list(points.header.offsets))


def test_las_and_laz_hold_the_same_cloud(clouds):
    las = characterize_point_cloud(clouds / "simple.las").properties
    laz = characterize_point_cloud(clouds / "simple.laz").properties
    assert (las["format"], laz["format"]) == ("LAS", "LAZ")
    assert (las["compressed"], laz["compressed"]) == (False, True)
    assert las["point_count"] == laz["point_count"] == 1065
    assert las["bounds_min"] == laz["bounds_min"] and las["bounds_max"] == laz["bounds_max"]
    assert "crs" not in las  # no CRS declared: no location
    assert characterize_point_cloud(clouds / "simple.las").locations == []


def test_geographic_las_gives_its_centre(clouds):
    c = characterize_point_cloud(clouds / "simple1_4.las")
    p = c.properties
    assert (p["las_version"], p["point_format"], p["point_count"]) == ("1.4", 7, 22600)
    assert p["crs_kind"] == "geographic" and p["crs"] == "EPSG:4326"
    assert p["crs_wkt"].startswith("GEOGCS[")
    [location] = c.locations
    assert (location.kind, location.crs) == ("las-crs", "EPSG:4326")
    assert location.longitude == pytest.approx((1 + 226) / 2)
    assert location.latitude == pytest.approx((1 + 100) / 2)
    assert location.altitude == pytest.approx((44 + 254) / 2)
    assert "note: coordinates exceed longitude/latitude ranges: is the CRS right?" in c.problems


def test_geographic_las_without_pyproj(clouds, no_pyproj):
    c = characterize_point_cloud(clouds / "simple1_4.las")
    [location] = c.locations
    assert location.latitude == pytest.approx(50.5) and location.longitude == pytest.approx(113.5)
    assert "pyproj" not in c.tool


@needs_pyproj
def test_projected_copc_is_converted_with_pyproj(clouds):
    c = characterize_point_cloud(clouds / "simple.copc.laz")
    assert c.valid is True, c.problems
    p = c.properties
    assert p["format"] == "COPC" and p["copc"] is True
    assert p["vlrs"][0] == "copc/1"
    assert p["copc_spacing"] > 0
    assert p["crs_kind"] == "projected" and p["crs"] == "EPSG:2991"
    centre = p["centre"]
    expected_lon, expected_lat = pyproj.Transformer.from_crs(
        "EPSG:2991", "EPSG:4326", always_xy=True
    ).transform(centre[0], centre[1])
    [location] = c.locations
    assert (location.kind, location.crs, location.altitude) == ("las-crs", "EPSG:2991", None)
    assert location.longitude == pytest.approx(expected_lon, abs=1e-6)
    assert location.latitude == pytest.approx(expected_lat, abs=1e-6)


def test_projected_copc_without_pyproj_keeps_the_centre(clouds, no_pyproj):
    c = characterize_point_cloud(clouds / "simple.copc.laz")
    p = c.properties
    assert c.locations == []
    assert p["has_location"] is True
    assert p["crs"] == "EPSG:2991"  # from the WKT's AUTHORITY, no pyproj needed
    assert p["centre"] == pytest.approx(
        [(a + b) / 2 for a, b in zip(p["bounds_min"], p["bounds_max"], strict=True)]
    )
    assert any("pyproj is not installed" in n for n in c.problems)


def write_las(path: Path, count: int) -> laspy.LasHeader:
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales = [0.01, 0.01, 0.01]
    header.offsets = [500000, 4500000, 0]
    las = laspy.LasData(header)
    rng = np.random.default_rng(7)
    las.x = 500000 + rng.uniform(0, 100, count)
    las.y = 4500000 + rng.uniform(0, 100, count)
    las.z = rng.uniform(0, 10, count)
    las.write(path)
    return laspy.read(path).header


def write_geokeys_las(path: Path) -> None:
    """A LAS 1.2 whose only CRS is a GeoTIFF key directory: projected, EPSG:32635."""
    from laspy.vlrs.known import GeoKeyDirectoryVlr, GeoKeyEntryStruct

    vlr = GeoKeyDirectoryVlr()
    vlr.geo_keys_header.key_directory_version = 1
    vlr.geo_keys_header.key_revision = 1
    vlr.geo_keys_header.number_of_keys = 2
    keys = []
    for key_id, value in ((1024, 1), (3072, 32635)):  # model type projected; projected CRS
        key = GeoKeyEntryStruct()
        key.id, key.tiff_tag_location, key.count, key.value_offset = key_id, 0, 1, value
        keys.append(key)
    vlr.geo_keys = keys
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.vlrs.append(vlr)
    header.scales = [0.01, 0.01, 0.01]
    header.offsets = [500000, 4500000, 0]
    las = laspy.LasData(header)
    las.x = np.array([499990.0, 500010.0])
    las.y = np.array([4500000.0, 4500020.0])
    las.z = np.array([1.0, 2.0])
    las.write(path)


@pytest.mark.parametrize("pyproj_present", [True, False])
def test_geotiff_keys_las(tmp_path, monkeypatch, pyproj_present):
    if not pyproj_present:
        monkeypatch.setitem(sys.modules, "pyproj", None)
    elif pyproj is None:
        pytest.skip("pyproj not installed")
    path = tmp_path / "utm.las"
    write_geokeys_las(path)
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert (p["crs"], p["crs_kind"], p["has_location"]) == ("EPSG:32635", "projected", True)
    assert p["centre"] == pytest.approx([500000.0, 4500010.0, 1.5])
    if pyproj_present:
        [location] = c.locations
        assert (location.kind, location.crs) == ("las-crs", "EPSG:32635")
        assert location.longitude == pytest.approx(27.0)  # zone 35N's central meridian
        assert location.latitude == pytest.approx(40.651, abs=1e-3)
    else:
        assert c.locations == []


def test_las_cut_mid_points_is_invalid(tmp_path):
    whole = tmp_path / "whole.las"
    header = write_las(whole, 10_000)
    data = whole.read_bytes()
    cut = header.offset_to_point_data + 4321 * header.point_format.size + 17  # mid-record
    path = tmp_path / "cut.las"
    path.write_bytes(data[:cut])
    c = characterize_point_cloud(path, chunk_points=1000)
    assert c.valid is False
    assert errors(c) == ["cut.las: the header promises 10000 points but the file holds only 4321"]
    assert c.properties["point_count"] == 4321
    assert characterize_point_cloud(whole, chunk_points=1000).valid is True


def test_laz_cut_short_is_invalid(tmp_path, clouds):
    data = (clouds / "simple.laz").read_bytes()
    path = tmp_path / "cut.laz"
    path.write_bytes(data[: len(data) * 2 // 3])
    c = characterize_point_cloud(path)
    assert c.valid is False
    [problem] = errors(c)
    assert problem.startswith("cut.laz: the header promises 1065 points but only ")
    assert c.properties["point_count"] < 1065


def test_not_a_point_cloud(tmp_path):
    path = tmp_path / "scan.las"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100))
    c = characterize_point_cloud(path)
    assert c.valid is False
    assert c.problems == ["scan.las: claims to be LAS by its name but its content is a JPEG image"]


def test_wkt_parsing_without_pyproj():
    compound = parse_wkt(
        'COMPD_CS["x",PROJCS["NAD83 / Oregon",GEOGCS["NAD83",AUTHORITY["EPSG","4269"]],'
        'UNIT["metre",1],AUTHORITY["EPSG","2991"]],VERT_CS["h",AUTHORITY["EPSG","6360"]]]'
    )
    assert (compound.kind, compound.epsg, compound.name) == ("projected", 2991, "NAD83 / Oregon")
    wkt2 = parse_wkt('GEOGCRS["WGS 84",CS[ellipsoidal,2],ID["EPSG",4326]]')
    assert (wkt2.kind, wkt2.epsg) == ("geographic", 4326)
    assert parse_wkt('VERT_CS["h"]') is None
    assert parse_wkt("not wkt") is None


# -- E57 ----------------------------------------------------------------------------------------


def test_crc_package_is_crc32c():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_bunny_e57_is_sound_and_matches_pye57(clouds):
    pye57 = pytest.importorskip("pye57")
    path = clouds / "bunnyDouble.e57"
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["pages_checked"] == path.stat().st_size // 1024 == 726
    assert p["crc_failures"] == 0 and p["bad_page_offsets"] == []
    e57 = pye57.E57(str(path))
    assert p["scan_count"] == e57.scan_count == 1
    header = e57.get_header(0)
    assert p["point_count"] == header.point_count == 30571
    assert p["scans"][0]["name"] == "bunny" and p["scans"][0]["coordinates"] == "cartesian"
    bounds = header.cartesianBounds
    assert p["bounds_min"] == pytest.approx([bounds[f"{a}Minimum"].value() for a in "xyz"])
    assert p["bounds_max"] == pytest.approx([bounds[f"{a}Maximum"].value() for a in "xyz"])
    assert p["library_version"].startswith("InteliSum")
    assert c.locations == [] and "has_location" not in p


def test_corpus_bad_crc_e57_names_its_page(clouds):
    c = characterize_point_cloud(clouds / "bad-crc.e57")
    assert c.valid is False
    assert c.properties["bad_page_offsets"] == [0]
    [problem] = errors(c)
    assert problem.startswith("bad-crc.e57: page 0 at byte offset 0 fails its CRC-32C check")


def test_flipped_byte_in_page_3(tmp_path, clouds):
    data = bytearray((clouds / "bunnyDouble.e57").read_bytes())
    data[3 * 1024 + 500] ^= 0x10
    path = tmp_path / "flipped.e57"
    path.write_bytes(bytes(data))
    c = characterize_point_cloud(path)
    assert c.valid is False
    assert c.properties["bad_page_offsets"] == [3072]
    [problem] = errors(c)
    assert problem.startswith("flipped.e57: page 3 at byte offset 3072 fails its CRC-32C check")
    assert c.properties["point_count"] == 30571  # the XML pages are intact and still read


def test_truncated_e57(tmp_path, clouds):
    data = (clouds / "bunnyDouble.e57").read_bytes()
    path = tmp_path / "cut.e57"
    path.write_bytes(data[: 100 * 1024])
    c = characterize_point_cloud(path)
    assert c.valid is False
    assert f"cut.e57: header says {len(data)} bytes but the file has {100 * 1024} (truncated)" in (
        c.problems
    )


def write_e57(path: Path, xml: str) -> None:
    """A one-section E57 written as the standard lays it out: a logical stream of header,
    an (empty) compressed vector section and the XML, cut into 1020-byte payloads, each page
    closed by the big-endian CRC-32C of its payload."""
    import google_crc32c

    section = 48
    xml_logical = section + 32
    body = xml.encode()

    def physical(logical: int) -> int:
        return logical // 1020 * 1024 + logical % 1020

    stream_length = xml_logical + len(body)
    pages = -(-stream_length // 1020)
    header = struct.pack(
        "<8sIIQQQQ",
        b"ASTM-E57",
        1,
        0,
        pages * 1024,
        physical(xml_logical),
        len(body),
        1024,
    )
    section_header = struct.pack("<B7xQQQ", 1, 32, 0, 0)
    stream = (header + section_header + body).ljust(pages * 1020, b"\0")
    out = bytearray()
    for n in range(pages):
        payload = stream[n * 1020 : (n + 1) * 1020]
        out += payload + google_crc32c.value(payload).to_bytes(4, "big")
    path.write_bytes(bytes(out))


def georeferenced_xml(crs: str, translation: tuple[float, float, float]) -> str:
    x, y, z = translation
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<e57Root type="Structure" xmlns="http://www.astm.org/COMMIT/E57/2010-e57-v1.0">
  <formatName type="String"><![CDATA[ASTM E57 3D Imaging Data File]]></formatName>
  <guid type="String"><![CDATA[{{test}}]]></guid>
  <versionMajor type="Integer">1</versionMajor>
  <versionMinor type="Integer"/>
  <coordinateMetadata type="String"><![CDATA[{crs}]]></coordinateMetadata>
  <data3D type="Vector" allowHeterogeneousChildren="1">
    <vectorChild type="Structure">
      <name type="String"><![CDATA[station 1]]></name>
      <sensorVendor type="String"><![CDATA[Leica Geosystems]]></sensorVendor>
      <sensorModel type="String"><![CDATA[RTC360]]></sensorModel>
      <cartesianBounds type="Structure">
        <xMinimum type="Float">-10</xMinimum><xMaximum type="Float">10</xMaximum>
        <yMinimum type="Float">-4</yMinimum><yMaximum type="Float">4</yMaximum>
        <zMinimum type="Float"/><zMaximum type="Float">2</zMaximum>
      </cartesianBounds>
      <pose type="Structure">
        <rotation type="Structure">
          <w type="Float">1</w><x type="Float"/><y type="Float"/><z type="Float"/>
        </rotation>
        <translation type="Structure">
          <x type="Float">{x}</x><y type="Float">{y}</y><z type="Float">{z}</z>
        </translation>
      </pose>
      <points type="CompressedVector" fileOffset="48" recordCount="0">
        <prototype type="Structure">
          <cartesianX type="Float"/><cartesianY type="Float"/><cartesianZ type="Float"/>
          <intensity type="Float"/>
        </prototype>
        <codecs type="Vector" allowHeterogeneousChildren="1"/>
      </points>
    </vectorChild>
  </data3D>
  <images2D type="Vector" allowHeterogeneousChildren="1"/>
</e57Root>
"""


def test_written_e57_round_trips_through_pye57(tmp_path):
    pye57 = pytest.importorskip("pye57")
    path = tmp_path / "station.e57"
    write_e57(path, georeferenced_xml("EPSG:32635", (500000.0, 4500000.0, 100.0)))
    e57 = pye57.E57(str(path))  # the reference library accepts the file and its checksums
    assert e57.scan_count == 1
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["sensor_vendors"] == ["Leica Geosystems"] and p["sensor_models"] == ["RTC360"]
    assert p["scans"][0]["has_intensity"] is True
    assert p["scan_positions"] == [[500000.0, 4500000.0, 100.0]]
    assert p["coordinate_metadata"] == "EPSG:32635"
    assert p["bounds_min"] == [499990.0, 4499996.0, 100.0]  # the pose applied


@needs_pyproj
def test_e57_projected_georeference(tmp_path):
    path = tmp_path / "utm.e57"
    write_e57(path, georeferenced_xml("EPSG:32635", (500000.0, 4500000.0, 100.0)))
    c = characterize_point_cloud(path)
    [location] = c.locations
    assert (location.kind, location.crs) == ("e57-georef", "EPSG:32635")
    # UTM zone 35N: the central meridian is 27 E; northing 4,500,000 m is about 40.65 N.
    assert location.longitude == pytest.approx(27.0, abs=1e-9)
    assert location.latitude == pytest.approx(40.6509, abs=1e-3)


def test_e57_projected_georeference_without_pyproj(tmp_path, no_pyproj):
    path = tmp_path / "utm.e57"
    write_e57(path, georeferenced_xml("EPSG:32635", (500000.0, 4500000.0, 100.0)))
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    assert c.locations == [] and c.properties["has_location"] is True
    assert c.properties["centre"] == [500000.0, 4500000.0, 101.0]


@pytest.mark.parametrize("pyproj_present", [True, False])
def test_e57_geographic_georeference(tmp_path, monkeypatch, pyproj_present):
    if not pyproj_present:
        monkeypatch.setitem(sys.modules, "pyproj", None)
    elif pyproj is None:
        pytest.skip("pyproj not installed")
    path = tmp_path / "athens.e57"
    write_e57(path, georeferenced_xml("EPSG:4326", (23.7275, 37.9838, 70.0)))
    c = characterize_point_cloud(path)
    [location] = c.locations
    assert (location.kind, location.crs) == ("e57-georef", "EPSG:4326")
    assert (location.latitude, location.longitude) == pytest.approx((37.9838, 23.7275))
    assert location.altitude == pytest.approx(70.0)


def test_e57_with_a_points_offset_outside_the_file(tmp_path):
    path = tmp_path / "lost.e57"
    xml = georeferenced_xml("", (0, 0, 0)).replace('fileOffset="48"', 'fileOffset="999999"')
    write_e57(path, xml)
    c = characterize_point_cloud(path)
    assert errors(c) == ["lost.e57: scan 0: points section at byte 999999 lies outside the file"]


# -- PLY point clouds ---------------------------------------------------------------------------


def test_armadillo_ply_point_cloud(corpora):
    path = corpora / "3d-models" / "stanford" / "armadillo-pointcloud.ply"
    lines = path.read_text().splitlines()
    body = np.loadtxt(lines[lines.index("end_header") + 1 :], ndmin=2)
    c = characterize_point_cloud(path)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["point_count"] == p["point_count_header"] == len(body) == 38294
    assert p["has_normals"] is True and p["has_colors"] is False
    assert p["bounds_min"] == pytest.approx(body[:, :3].min(axis=0).tolist())
    assert p["bounds_max"] == pytest.approx(body[:, :3].max(axis=0).tolist())


def binary_cloud(path: Path, count: int) -> np.ndarray:
    dtype = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    rows = np.zeros(count, dtype=dtype)
    rng = np.random.default_rng(3)
    for axis in "xyz":
        rows[axis] = rng.uniform(-5, 5, count)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {count}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path.write_bytes(header.encode() + rows.tobytes())
    return rows


def test_binary_ply_cloud_and_its_truncation(tmp_path):
    path = tmp_path / "cloud.ply"
    rows = binary_cloud(path, 5000)
    c = characterize_point_cloud(path, chunk_points=700)
    assert c.valid is True, c.problems
    p = c.properties
    assert p["point_count"] == 5000 and p["has_colors"] is True and p["has_normals"] is False
    assert p["bounds_min"] == pytest.approx([float(rows[a].min()) for a in "xyz"])
    data = path.read_bytes()
    cut = tmp_path / "cut.ply"
    cut.write_bytes(data[: len(data) - 15 * 10])  # ten points short
    c = characterize_point_cloud(cut, chunk_points=700)
    assert c.valid is False
    assert "cut.ply: the header declares 5000 vertices but the file holds 4990" in c.problems


@pytest.mark.parametrize("name", ["simple.las", "simple.copc.laz", "bunnyDouble.e57"])
def test_damaged_copies_never_raise(tmp_path, clouds, name):
    data = (clouds / name).read_bytes()
    for n, cut in enumerate([0, 3, 47, 100, 400, 2000, len(data) // 2, len(data) - 1]):
        path = tmp_path / f"{n}-{name}"
        path.write_bytes(data[:cut])
        c = characterize_point_cloud(path)
        assert c.valid is False, (cut, c.properties)
        assert c.problems
