"""Format identification: real files from ../shared/corpora, and files made here for the cases
the corpora lack (binary STL whose header says "solid", USD, a .glb that is HTML, ...)."""

from __future__ import annotations

import json
import shutil
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from fido.fido import Fido

from arkhiv.ingest import identify as identify_module
from arkhiv.ingest.identify import Identifier, detect_polycam_export

SNIFFER = "arkhiv sniffer"  # basis prefix where Arkhiv's sniffers decided


@pytest.fixture(scope="module")
def identifier() -> Identifier:
    return Identifier()


SIG = "signature"
BUNNY = "3d-models/bunny-multiformat/"
STANFORD = "3d-models/stanford/"
LE = "binary_little_endian"

# relative path, PUID, MIME, version, basis (SIG or SNIFFER), a word of the format name
CORPUS = [
    (BUNNY + "bunny.glb", "fmt/1316", "model/gltf-binary", "2", SIG, "Binary"),
    (BUNNY + "bunny.gltf", "fmt/1315", "model/gltf+json", "2.0", SIG, "Text"),
    # binary STL: PRONOM v109 has no signature for it (fmt/865), the size rule decides
    (BUNNY + "bunny.stl", "fmt/865", "model/stl", None, SNIFFER, "Binary"),
    (BUNNY + "bunny_binary.ply", "fmt/831", "model/x-ply", "1.0", SIG, LE),
    (BUNNY + "bunny.wrl", "fmt/94", "model/vrml", "2.0", SIG, "Virtual Reality"),
    (STANFORD + "bun_zipper.ply", "fmt/831", "model/x-ply", "1.0", SIG, "ascii"),
    (STANFORD + "bun_zipper_res4.ply", "fmt/831", "model/x-ply", "1.0", SIG, "ascii"),
    (STANFORD + "armadillo-pointcloud.ply", "fmt/831", "model/x-ply", "1.0", SIG, "ascii"),
    (STANFORD + "dragon.ply", "fmt/831", "model/x-ply", "1.0", SIG, LE),
    ("pointclouds/simple.las", "fmt/370", "application/vnd.las", "1.2", SIG, "Lidar"),
    # PRONOM v109 stops at LAS 1.2 and has no LAZ or COPC record
    ("pointclouds/simple1_4.las", None, "application/vnd.las", "1.4", SNIFFER, "Lidar"),
    ("pointclouds/simple.laz", None, "application/vnd.laszip", "1.2", SNIFFER, "LAZ"),
    ("pointclouds/simple.copc.laz", None, "application/vnd.laszip", "1.0", SNIFFER, "COPC"),
    ("pointclouds/bunnyDouble.e57", "fmt/643", "model/e57", "1.0", SIG, "E57"),
    # identified, not validated: the bad CRC is characterization's business
    ("pointclouds/bad-crc.e57", "fmt/643", "model/e57", "1.0", SIG, "E57"),
    ("photos-exif/IMG_5195.HEIC", "fmt/1101", "image/heic", None, SIG, "High Efficiency"),
    ("photos-exif/DSCN0010.jpg", "x-fmt/391", "image/jpeg", "2.2", SIG, "Exchangeable"),
    ("photos-exif/Canon_40D.jpg", "fmt/43", "image/jpeg", "1.01", SIG, "JPEG File"),
    ("photos-exif/HMD_Nokia_8.3_5G.jpg", "fmt/41", "image/jpeg", None, SIG, "Raw JPEG"),
]


@pytest.mark.parametrize(
    ("relative", "puid", "mime", "version", "basis", "name"),
    CORPUS,
    ids=[row[0].rsplit("/", 1)[1] for row in CORPUS],
)
def test_corpus_files(corpora, identifier, relative, puid, mime, version, basis, name):
    found = identifier.identify(corpora / relative)
    assert (found.puid, found.mime_type, found.format_version) == (puid, mime, version)
    assert name in found.format_name
    assert found.basis.startswith(basis)
    assert found.tool == (identifier.tool if basis == SIG else SNIFFER)
    assert found.warning is None


def test_tool_names_fido_and_the_pronom_version(identifier):
    assert identifier.tool == "fido 1.6.1 (PRONOM v109)"
    assert identifier.software == ("fido", "1.6.1 (PRONOM v109)")
    assert identifier.signature_file.name == "formats-v109.xml"
    assert identifier.container_signature_file.name == "container-signature-20200121.xml"


def test_missing_signature_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="signature file"):
        Identifier(signature_file=tmp_path / "formats-v999.xml")


# -- STL ------------------------------------------------------------------------------------------

ASCII_STL = """solid cube
  facet normal 0 0 1
    outer loop
      vertex 0 0 0
      vertex 1 0 0
      vertex 0 1 0
    endloop
  endfacet
endsolid cube
"""


def _binary_stl(header: bytes, facets: int) -> bytes:
    facet = struct.pack("<12fH", 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0)
    return header.ljust(80, b" ") + struct.pack("<I", facets) + facet * facets


def test_ascii_stl(identifier, tmp_path):
    path = tmp_path / "cube.stl"
    path.write_text(ASCII_STL)
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.basis) == ("x-fmt/108", "model/stl", "signature")

    # PRONOM's signature wants "solid " with a space; a nameless solid is still ASCII STL
    path.write_text(ASCII_STL.replace("solid cube", "solid"))
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == ("x-fmt/108", "model/stl")
    assert found.basis.startswith(SNIFFER)


def test_binary_stl_whose_header_starts_with_solid(identifier, tmp_path):
    path = tmp_path / "part.stl"
    path.write_bytes(_binary_stl(b"solid part exported by a CAD program", 3))
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.warning) == ("fmt/865", "model/stl", None)
    assert found.basis.startswith(SNIFFER) and "solid" in found.basis


def test_truncated_binary_stl_is_not_stl(identifier, tmp_path):
    path = tmp_path / "part.stl"
    path.write_bytes(_binary_stl(b"binary header", 3)[:-7])
    found = identifier.identify(path)
    assert found.puid is None and found.basis == "unidentified"
    assert ".stl" in found.warning


# -- USD ------------------------------------------------------------------------------------------

USDA = '#usda 1.0\n(\n    defaultPrim = "World"\n)\n\ndef Xform "World"\n{\n}\n'
USDC = b"PXR-USDC" + bytes([0, 8, 0]) + bytes(77)


def test_usda(identifier, tmp_path):
    path = tmp_path / "scene.usda"
    path.write_text(USDA)
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.format_version) == (None, "model/vnd.usda", "1.0")
    assert found.basis.startswith(SNIFFER) and found.warning is None


def test_usdc(identifier, tmp_path):
    path = tmp_path / "scene.usd"
    path.write_bytes(USDC)
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.format_version) == (None, "model/vnd.usd", "0.8.0")
    assert found.warning is None


def _zip(path: Path, compression: int) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("scene.usdc", USDC)
        archive.writestr("textures/albedo.png", _png(2, 2, 8, colour_type=0))
    return path


def test_usdz(identifier, tmp_path):
    found = identifier.identify(_zip(tmp_path / "statue.usdz", zipfile.ZIP_STORED))
    assert (found.puid, found.mime_type) == (None, "model/vnd.usdz+zip")
    assert found.basis == f"{SNIFFER}: zip whose first entry scene.usdc is stored uncompressed"
    assert found.warning is None


def test_usdz_with_compressed_entries_is_only_a_zip(identifier, tmp_path):
    found = identifier.identify(_zip(tmp_path / "statue.usdz", zipfile.ZIP_DEFLATED))
    assert (found.puid, found.mime_type) == ("x-fmt/263", "application/zip")
    assert "compressed" in found.warning and ".usdz" in found.warning


# -- glTF -----------------------------------------------------------------------------------------


def test_gltf_whose_asset_lies_past_fidos_buffer(identifier, tmp_path):
    # exporters that sort keys put "asset" after large accessors and embedded buffers
    document = {
        "accessors": [{"count": n, "componentType": 5126, "type": "VEC3"} for n in range(4000)],
        "asset": {"generator": "test", "version": "2.0"},
        "buffers": [{"uri": "data:application/octet-stream;base64," + "A" * 400_000}],
    }
    path = tmp_path / "model.gltf"
    path.write_text(json.dumps(document))
    assert path.stat().st_size > 3 * 128 * 1024
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.format_version) == (
        "fmt/1315",
        "model/gltf+json",
        "2.0",
    )
    assert found.basis.startswith(SNIFFER)


def test_json_that_is_not_gltf(identifier, tmp_path):
    path = tmp_path / "notes.gltf"
    path.write_text(json.dumps({"meshes": [], "note": "no asset object"}))
    found = identifier.identify(path)
    assert found.puid not in ("fmt/1314", "fmt/1315")
    assert found.mime_type != "model/gltf+json"


# -- extension contradicts content ----------------------------------------------------------------

HTML = (
    "<html><head><title>404 Not Found</title></head>\n"
    "<body><h1>Not Found</h1><p>The requested model was not found.</p></body></html>\n"
)


def test_html_saved_as_glb(identifier, tmp_path):
    path = tmp_path / "model.glb"
    path.write_text(HTML)
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == ("fmt/96", "text/html")
    assert found.format_name == "Hypertext Markup Language"
    assert found.warning.startswith("extension .glb but content is Hypertext Markup Language")
    assert "(fmt/96)" in found.warning


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png(width: int, height: int, bit_depth: int, colour_type: int = 0) -> bytes:
    """A real greyscale (colour type 0) or RGB (2) PNG of zeros."""
    channels = {0: 1, 2: 3}[colour_type]
    row = b"\0" + bytes(width * channels * bit_depth // 8)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * height))
        + _chunk(b"IEND", b"")
    )


def test_png_saved_as_jpg(identifier, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_png(4, 4, 8, colour_type=2))
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == ("fmt/11", "image/png")
    assert found.basis == "signature"
    assert found.warning.startswith("extension .jpg but content is Portable Network Graphics")


def test_laz_saved_as_las(corpora, identifier, tmp_path):
    path = tmp_path / "points.las"
    shutil.copyfile(corpora / "pointclouds" / "simple.laz", path)
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == (None, "application/vnd.laszip")
    assert found.warning.startswith("extension .las but content is LASzip")


def test_matching_extension_in_other_case_is_no_contradiction(corpora, identifier, tmp_path):
    path = tmp_path / "PHOTO.JPEG"
    shutil.copyfile(corpora / "photos-exif" / "DSCN0010.jpg", path)
    assert identifier.identify(path).warning is None


# -- other formats -------------------------------------------------------------------------------


def test_empty_file(identifier, tmp_path):
    path = tmp_path / "empty.glb"
    path.touch()
    found = identifier.identify(path)
    assert (found.puid, found.mime_type, found.format_name) == (None, None, None)
    assert found.basis == "empty file"


def test_heif_brands(identifier, tmp_path):
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        box = b"ftyp" + major + bytes(4) + b"".join(compatible)
        return struct.pack(">I", len(box) + 4) + box + bytes(64)

    path = tmp_path / "image.heif"
    path.write_bytes(ftyp(b"mif1", b"mif1", b"miaf"))
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == ("fmt/1101", "image/heif")

    path.write_bytes(ftyp(b"msf1", b"msf1", b"hevc"))
    assert identifier.identify(path).mime_type == "image/heic-sequence"

    # AVIF is HEIF-based but a format of its own
    path = tmp_path / "image.avif"
    path.write_bytes(ftyp(b"avif", b"mif1", b"miaf", b"avif"))
    found = identifier.identify(path)
    assert found.puid != "fmt/1101"
    assert found.mime_type not in ("image/heif", "image/heic")


def test_obj_and_mtl(identifier, tmp_path):
    obj = tmp_path / "cube.obj"
    obj.write_text("# cube\nmtllib cube.mtl\no cube\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    mtl = tmp_path / "cube.mtl"
    mtl.write_text("newmtl stone\nKa 0.2 0.2 0.2\nKd 0.8 0.7 0.6\nillum 2\nmap_Kd stone.jpg\n")
    assert (identifier.identify(obj).puid, identifier.identify(obj).mime_type) == (
        "fmt/1210",
        "model/obj",
    )
    assert (identifier.identify(mtl).puid, identifier.identify(mtl).mime_type) == (
        "fmt/1211",
        "model/mtl",
    )
    prose = tmp_path / "readme.obj"
    prose.write_text("This folder holds the scans of the statue.\nSee the report.\n")
    assert identifier.identify(prose).puid != "fmt/1210"


def test_ply_generated(identifier, tmp_path):
    path = tmp_path / "tri.ply"
    path.write_bytes(
        b"ply\nformat binary_big_endian 1.0\nelement vertex 3\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + bytes(36)
    )
    found = identifier.identify(path)
    assert (found.puid, found.mime_type) == ("fmt/831", "model/x-ply")
    assert found.format_name == "Polygon File Format (binary_big_endian)"


def test_container_signature(identifier, tmp_path):
    path = tmp_path / "report.docx"
    content_types = (
        '<?xml version="1.0"?><Types><Override PartName="/word/document.xml" ContentType="'
        'application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        "</Types>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("[Content_Types].xml", content_types)
    found = identifier.identify(path)
    assert (found.puid, found.basis) == ("fmt/412", "container")


def test_plain_text_and_unknown_binary(identifier, tmp_path):
    text = tmp_path / "README"
    text.write_text("Scans of the west portal, May 2024.\n")
    found = identifier.identify(text)
    assert (found.puid, found.mime_type) == ("x-fmt/111", "text/plain")

    binary = tmp_path / "blob"
    binary.write_bytes(bytes(range(256)) * 3)
    found = identifier.identify(binary)
    assert (found.puid, found.mime_type, found.basis) == (None, None, "unidentified")


# -- one signature set for many files -------------------------------------------------------------


def test_many_files_share_one_loaded_signature_set(corpora, monkeypatch, capsys):
    loads: list[str] = []
    parses: list[str] = []
    load_fido_xml = Fido.load_fido_xml
    parse = identify_module.ET.parse

    def counting_load(self, file):
        loads.append(file)
        return load_fido_xml(self, file)

    def counting_parse(source, *args, **kwargs):
        parses.append(str(source))
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(Fido, "load_fido_xml", counting_load)
    monkeypatch.setattr(identify_module.ET, "parse", counting_parse)

    started = time.perf_counter()
    identifier = Identifier()
    loaded = time.perf_counter() - started
    files = sorted(
        p
        for folder in ("3d-models", "pointclouds", "photos-exif", "bagit-conformance-suite")
        for p in (corpora / folder).rglob("*")
        if p.is_file() and p.stat().st_size > 0
    )[:100]
    assert len(files) == 100
    started = time.perf_counter()
    results = [identifier.identify(p) for p in files]
    elapsed = time.perf_counter() - started

    assert [Path(f).name for f in loads] == ["formats-v109.xml"]
    assert [Path(f).name for f in parses] == ["container-signature-20200121.xml"]
    assert identifier.files_identified == 100
    assert all(r.basis for r in results)
    rate = len(files) / elapsed
    with capsys.disabled():
        print(f"\nsignatures loaded in {loaded:.2f} s; {rate:.0f} files/s over {len(files)} files")
    assert rate > 10  # fido in-process; a subprocess per file would manage a few per second


# -- Polycam --------------------------------------------------------------------------------------


def _camera(timestamp: int, **changes) -> dict:
    camera = {
        "timestamp": timestamp,
        "width": 1024,
        "height": 768,
        "blur_score": 120.5,
        "fx": 720.1,
        "fy": 720.1,
        "cx": 511.2,
        "cy": 383.9,
        "manual_keyframe": False,
        "neighbors": [],
    }
    for row in range(3):
        for column in range(4):
            camera[f"t_{row}{column}"] = float(row == column)
    camera.update(changes)
    return {k: v for k, v in camera.items() if v is not None}


def _polycam(capture: Path, frames: int = 3, depth_bits: int = 16) -> Path:
    keyframes = capture / "keyframes"
    for folder in ("images", "corrected_images", "cameras", "corrected_cameras", "depth"):
        (keyframes / folder).mkdir(parents=True)
    (keyframes / "confidence").mkdir()
    for n in range(frames):
        stamp = 1_700_000_000_000 + n * 500_000
        for folder in ("images", "corrected_images"):
            (keyframes / folder / f"{stamp}.jpg").write_bytes(b"\xff\xd8\xff\xe0jpeg\xff\xd9")
        for folder in ("cameras", "corrected_cameras"):
            (keyframes / folder / f"{stamp}.json").write_text(json.dumps(_camera(stamp)))
        (keyframes / "depth" / f"{stamp}.png").write_bytes(_png(4, 3, depth_bits))
        (keyframes / "confidence" / f"{stamp}.png").write_bytes(_png(4, 3, 8))
    (capture / "mesh_info.json").write_text('{"faceCount": 1}')
    (capture / "raw.glb").write_bytes(b"glTF\x02\x00\x00\x00")
    return capture


def test_polycam_export_recognised(tmp_path):
    _polycam(tmp_path / "data" / "polycam-raw")
    found = detect_polycam_export(tmp_path / "data")
    assert found is not None
    assert found["layout"] == "polycam-raw-data"
    assert found["root"] == "polycam-raw"
    assert (found["keyframes"], found["images"], found["depth_maps"]) == (3, 3, 3)
    assert (found["confidence_maps"], found["optimized_poses"]) == (3, True)
    assert (found["mesh"], found["mesh_info"], found["video"]) == (
        "raw.glb",
        "mesh_info.json",
        None,
    )
    assert found["problems"] == []
    json.dumps(found)  # goes into the ingest report as it is


def test_polycam_export_problems_are_listed(tmp_path):
    capture = _polycam(tmp_path / "capture", depth_bits=8)
    keyframes = capture / "keyframes"
    first, second, _third = sorted(p.stem for p in (keyframes / "cameras").iterdir())
    (keyframes / "cameras" / f"{first}.json").write_text(json.dumps(_camera(1, fx=None)))
    (keyframes / "images" / f"{second}.jpg").unlink()
    (keyframes / "corrected_images" / f"{second}.jpg").unlink()
    found = detect_polycam_export(capture)
    assert found is not None and found["root"] == "."
    problems = "\n".join(found["problems"])
    assert f"{first}.json lacks fx" in problems
    assert "8-bit greyscale, expected 16-bit" in problems
    assert "1 cameras without an image" in problems


def test_not_a_polycam_export(corpora, tmp_path):
    assert detect_polycam_export(corpora / "photogrammetry") is None
    # the folder names alone are not enough: cameras must hold intrinsics and a pose
    capture = _polycam(tmp_path / "look-alike")
    for camera in (capture / "keyframes" / "cameras").iterdir():
        camera.write_text(json.dumps({"name": "not a camera"}))
    assert detect_polycam_export(tmp_path) is None


def test_a_deflate_bomb_in_an_office_container_is_not_read_whole(identifier, tmp_path):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as packed:
        packed.writestr("[Content_Types].xml", b"\0" * (65 * 1024**2))  # 65 MiB of zeros
        packed.writestr("word/document.xml", "<w:document/>")
    bomb = tmp_path / "report.docx"
    bomb.write_bytes(buffer.getvalue())
    assert bomb.stat().st_size < 1024**2
    found = identifier.identify(bomb)
    assert found.basis != "container"  # container matching skipped: the member is too large
