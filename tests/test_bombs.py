"""Decompression bombs in point clouds, meshes and pictures, each crafted here: ingest's readers
refuse them with a reason naming the file and the limit, and reading one never makes a process
grow past its memory budget. Peak memory is measured in a fresh interpreter per file, against
the same interpreter's peak on tiny valid files."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
import tomllib
import zipfile
import zlib
from pathlib import Path

import laspy
import numpy as np
import pytest

from arkhiv.config import default_config_toml, settings_from_document
from arkhiv.ingest.bagging import make_bag
from arkhiv.ingest.characterize import characterize
from arkhiv.policies.ingest import IngestPolicy
from arkhiv.policies.resources import (
    ResourceLimitExceeded,
    ResourceLimits,
    check_declared,
    check_zip_members,
)
from tests.conftest import REPO
from tests.test_submit import CAPTURE, env, submit

__all__ = ["env"]

MIB = 1024**2
BUDGET = 256 * MIB
LIMITS = ResourceLimits(memory_budget_bytes=BUDGET)

# -- measuring ---------------------------------------------------------------------------------

# One interpreter reads every file, one job at a time; before each job the peak RSS (VmHWM) is
# reset to the current RSS (Linux 4.0+: "5" to /proc/self/clear_refs), so each job's peak is its
# own. The tiny valid files read first give the baseline. (ru_maxrss cannot be reset, and a
# spawned interpreter's ru_maxrss even keeps the pytest process's, carried across exec.)
_RUNNER = """
import gc, json, sys
from pathlib import Path
import laspy, numpy, trimesh, PIL.Image  # noqa: F401
from arkhiv.policies.resources import ResourceLimits

def status():
    with open("/proc/self/status") as f:
        lines = [line.split() for line in f if line.startswith(("VmHWM:", "VmRSS:"))]
    return {line[0][:-1]: int(line[1]) * 1024 for line in lines}

def reset():
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

results = []
for job in json.load(sys.stdin):
    measured = reset()
    before = status()["VmRSS"]
    outcome = run(Path(job["path"]), job["reader"], ResourceLimits(**job["limits"]))
    peak = status()["VmHWM"] if measured else None
    results.append({**outcome, "before": before, "peak": peak})
print(json.dumps(results, default=str))
"""
_CHARACTERIZE = """
from arkhiv.ingest.characterize.images import characterize_image
from arkhiv.ingest.characterize.meshes import characterize_mesh
from arkhiv.ingest.characterize.pointclouds import characterize_point_cloud

def run(path, reader, limits):
    read = {"image": characterize_image, "mesh": characterize_mesh}.get(
        reader, characterize_point_cloud
    )
    c = read(path, limits=limits)
    simple = (str, int, float, bool)
    properties = {k: v for k, v in c.properties.items() if isinstance(v, simple)}
    return {"valid": c.valid, "problems": c.problems, "properties": properties}
"""
_RECONSTRUCT = """
import open3d  # noqa: F401
from arkhiv.reconstruct.meshes import master_from_mesh
from arkhiv.reconstruct.pointcloud import PointCloudOptions, mesh_from_points
from arkhiv.reconstruct.report import ReconstructionFailed
from arkhiv.reconstruct.surface import SurfaceOptions

# Small surface settings: what is measured is reading, not Poisson.
OPTIONS = PointCloudOptions(
    max_surface_points=20_000, normal_neighbours=10, surface=SurfaceOptions(poisson_depth=7)
)

def run(path, reader, limits):
    out = path.parent / (path.name + "-out")
    try:
        if reader == "cloud":
            report = mesh_from_points(path, out, OPTIONS, limits=limits)
        else:
            report = master_from_mesh(path, out, limits=limits)
    except ReconstructionFailed as failure:
        return {"failure": failure.reason}
    return {"failure": None, "figures": {s.name: s.figures for s in report.stages}}
"""


def run_jobs(reader_code: str, jobs: dict[str, tuple[str, Path, ResourceLimits]]) -> dict:
    """Run named jobs (reader, path, limits) in one fresh interpreter; their outcomes, each
    with `before` (RSS as it started) and `peak` (its peak RSS, None where it cannot be reset)."""
    listed = [
        {"reader": reader, "path": str(path), "limits": limits.__dict__}
        for reader, path, limits in jobs.values()
    ]
    done = subprocess.run(
        [sys.executable, "-c", reader_code + _RUNNER],
        input=json.dumps(listed),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(zip(jobs, json.loads(done.stdout.strip().splitlines()[-1]), strict=True))


def mib(size: int) -> str:
    return f"{size / MIB:.0f} MiB"


def within_budget(outcome: dict, baseline: int | None, budget: int, label: str) -> None:
    """The job's peak RSS stays under the baseline plus the budget (printed for the record)."""
    if outcome["peak"] is None or baseline is None:
        print(f"\n{label}: peak RSS not measurable here (no /proc/self/clear_refs)")
        return
    print(
        f"\n{label}: peak {mib(outcome['peak'])} (started at {mib(outcome['before'])}), "
        f"{mib(outcome['peak'] - baseline)} over the baseline {mib(baseline)}; "
        f"budget {mib(budget)}"
    )
    assert outcome["peak"] < baseline + budget


def baseline_of(outcomes: dict) -> int | None:
    peaks = [o["peak"] for name, o in outcomes.items() if name.startswith("tiny")]
    return None if None in peaks else max(peaks)


# -- crafting -----------------------------------------------------------------------------------


def write_cloud(path: Path, count: int, *, identical: bool = False, version: str = "1.2") -> None:
    """A LAS/LAZ of `count` points on a 10 m sphere in UTM-like coordinates (or all at one
    spot), written in chunks so that making it stays cheap."""
    header = laspy.LasHeader(point_format=2, version=version)
    header.scales, header.offsets = [0.001] * 3, [500_000, 5_400_000, 100]
    rng = np.random.default_rng(7)
    with laspy.open(path, mode="w", header=header) as writer:
        for start in range(0, count, 1_000_000):
            n = min(1_000_000, count - start)
            records = laspy.ScaleAwarePointRecord.zeros(n, header=header)
            if identical:
                direction = np.zeros((n, 3))
            else:
                direction = rng.normal(size=(n, 3))
                direction /= np.linalg.norm(direction, axis=1)[:, None]
            records.x = 500_000 + 10 * direction[:, 0]
            records.y = 5_400_000 + 10 * direction[:, 1]
            records.z = 100 + 10 * direction[:, 2]
            records.red = records.green = records.blue = (direction[:, 0] * 100 + 128).astype(
                np.uint16
            )
            writer.write_points(records)


def write_las_claiming(path: Path, claimed: int) -> None:
    """A valid LAS 1.2 of 1000 points whose header then claims `claimed`."""
    write_cloud(path, 1000)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 107, claimed)  # legacy point count
    path.write_bytes(bytes(data))


def write_e57_claiming(path: Path, claimed: int) -> None:
    """An E57 of 100 points written by pye57 whose XML then declares `claimed` records; pages
    and their CRC-32C are rebuilt, so it is valid but for the lie."""
    import google_crc32c
    import pye57

    plain = path.with_name("plain.e57")
    writer = pye57.E57(str(plain), mode="w")
    xyz = np.random.default_rng(1).uniform(-1, 1, (100, 3))
    writer.write_scan_raw({f"cartesian{a}": xyz[:, i] for i, a in enumerate("XYZ")})
    writer.close()
    data = plain.read_bytes()
    logical = b"".join(data[i : i + 1020] for i in range(0, len(data), 1024))
    _sig, _major, _minor, _length, xml_offset, xml_length, _page = struct.unpack_from(
        "<8sIIQQQQ", logical
    )
    start = xml_offset // 1024 * 1020 + xml_offset % 1024
    xml = re.sub(
        rb'recordCount="\d+"', f'recordCount="{claimed}"'.encode(), logical[start:][:xml_length]
    )
    rebuilt = bytearray(logical[:start] + xml)
    rebuilt += bytes(-len(rebuilt) % 1020)
    pages = len(rebuilt) // 1020
    struct.pack_into("<QQQ", rebuilt, 16, pages * 1024, xml_offset, len(xml))
    path.write_bytes(
        b"".join(
            rebuilt[i : i + 1020] + google_crc32c.value(bytes(rebuilt[i : i + 1020])).to_bytes(4)
            for i in range(0, len(rebuilt), 1020)
        )
    )


def ply_bytes(encoding: str, vertices: int, faces: int | None) -> bytes:
    """A PLY header declaring `vertices` (and `faces`) over three real rows."""
    header = f"ply\nformat {encoding} 1.0\nelement vertex {vertices}\n"
    header += "property float x\nproperty float y\nproperty float z\n"
    if faces is not None:
        header += f"element face {faces}\nproperty list uchar int vertex_indices\n"
    header += "end_header\n"
    if encoding == "ascii":
        body = b"0 0 0\n1 0 0\n0 1 0\n" + (b"3 0 1 2\n" if faces is not None else b"")
    else:
        body = np.eye(3, dtype="<f4").tobytes()
        if faces is not None:
            body += b"\x03" + np.array([0, 1, 2], "<i4").tobytes()
    return header.encode() + body


def glb_bytes(document: dict, binary: bytes) -> bytes:
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    binary += bytes(-len(binary) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text
    chunks += struct.pack("<I4s", len(binary), b"BIN\x00") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def sphere() -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=3)
    return mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32)


def accessor_bomb_glb(count: int) -> bytes:
    """POSITION declares `count` vertices and has no bufferView (all zeros, costing nothing)."""
    indices = np.array([0, 1, 2], "<u4").tobytes()
    document = {
        "asset": {"version": "2.0"},
        "buffers": [{"byteLength": len(indices)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(indices)}],
        "accessors": [
            {"componentType": 5126, "count": count, "type": "VEC3"},
            {"bufferView": 0, "componentType": 5125, "count": 3, "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }
    return glb_bytes(document, indices)


def draco_glb(declared: int | None = None) -> bytes:
    """A sphere compressed with KHR_draco_mesh_compression (DracoPy); its POSITION accessor
    declares `declared` vertices when given."""
    import DracoPy

    vertices, faces = sphere()
    encoded = DracoPy.encode(vertices, faces)
    document = {
        "asset": {"version": "2.0"},
        "extensionsUsed": ["KHR_draco_mesh_compression"],
        "extensionsRequired": ["KHR_draco_mesh_compression"],
        "buffers": [{"byteLength": len(encoded)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(encoded)}],
        "accessors": [
            {
                "componentType": 5126,
                "count": declared or len(vertices),
                "type": "VEC3",
                "min": vertices.min(axis=0).tolist(),
                "max": vertices.max(axis=0).tolist(),
            },
            {"componentType": 5125, "count": faces.size, "type": "SCALAR"},
        ],
        "meshes": [
            {
                "primitives": [
                    {
                        "attributes": {"POSITION": 0},
                        "indices": 1,
                        "extensions": {
                            "KHR_draco_mesh_compression": {
                                "bufferView": 0,
                                "attributes": {"POSITION": 0},
                            }
                        },
                    }
                ]
            }
        ],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }
    return glb_bytes(document, encoded + bytes(-len(encoded) % 4))


def meshopt_glb(declared: int | None = None) -> bytes:
    """A sphere compressed with EXT_meshopt_compression as gltfpack and Arkhiv's own levels of
    detail write it (decoded bytes in a fallback buffer that holds none); its vertex view
    declares `declared` vertices when given."""
    import meshoptimizer

    vertices, faces = sphere()
    meshoptimizer.encode_vertex_version(0)
    meshoptimizer.encode_index_version(1)
    packed_vertices = meshoptimizer.encode_vertex_buffer(vertices, len(vertices), 12)
    packed_indices = meshoptimizer.encode_index_buffer(faces.ravel(), faces.size, len(vertices))
    binary = packed_vertices + bytes(-len(packed_vertices) % 4)
    index_offset = len(binary)
    binary += packed_indices + bytes(-len(packed_indices) % 4)
    count = declared or len(vertices)

    def view(offset, length, stride, n, mode, at):
        return {
            "buffer": 1,
            "byteOffset": at,
            "byteLength": stride * n,
            "extensions": {
                "EXT_meshopt_compression": {
                    "buffer": 0,
                    "byteOffset": offset,
                    "byteLength": length,
                    "byteStride": stride,
                    "mode": mode,
                    "count": n,
                }
            },
        }

    vertex_bytes = 12 * count
    document = {
        "asset": {"version": "2.0"},
        "extensionsUsed": ["EXT_meshopt_compression"],
        "extensionsRequired": ["EXT_meshopt_compression"],
        "buffers": [
            {"byteLength": len(binary)},
            {
                "byteLength": vertex_bytes + 4 * faces.size,
                "extensions": {"EXT_meshopt_compression": {"fallback": True}},
            },
        ],
        "bufferViews": [
            view(0, len(packed_vertices), 12, count, "ATTRIBUTES", 0),
            view(index_offset, len(packed_indices), 4, faces.size, "TRIANGLES", vertex_bytes),
        ],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": count,
                "type": "VEC3",
                "min": vertices.min(axis=0).tolist(),
                "max": vertices.max(axis=0).tolist(),
            },
            {"bufferView": 1, "componentType": 5125, "count": faces.size, "type": "SCALAR"},
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }
    return glb_bytes(document, binary)


def write_obj(path: Path, target_bytes: int) -> None:
    """An honest OBJ of about `target_bytes`: a grid of vertices and its triangles."""
    side = int((target_bytes / 60) ** 0.5)
    u, v = np.meshgrid(np.arange(side, dtype=float), np.arange(side, dtype=float))
    with path.open("w") as f:
        vertices = np.column_stack([u.ravel(), v.ravel(), np.sin(u + v).ravel()])
        np.savetxt(f, vertices, "v %.6f %.6f %.6f")
        index = np.arange(side * side).reshape(side, side) + 1
        a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
        first = np.column_stack([a.ravel(), b.ravel(), c.ravel()])
        second = np.column_stack([b.ravel(), d.ravel(), c.ravel()])
        np.savetxt(f, np.concatenate([first, second]), "f %d %d %d")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header then declares `width` x `height`."""
    from PIL import Image

    encoded = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(encoded, format="JPEG")
    data = bytearray(encoded.getvalue())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def heic_claiming(width: int, height: int) -> bytes:
    """A real 64x48 HEIC (pillow-heif) whose image spatial extent (ispe) then declares
    `width` x `height`."""
    import pillow_heif
    from PIL import Image

    pillow_heif.register_heif_opener()
    encoded = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(encoded, format="HEIF", quality=50)
    data = bytearray(encoded.getvalue())
    ispe = data.index(b"ispe")
    struct.pack_into(">II", data, ispe + 8, width, height)  # after version and flags
    return bytes(data)


def zip_bomb(path: Path, member: str, inflated: int) -> None:
    """A zip whose one member inflates to `inflated` zero bytes (written in 1 MiB pieces)."""
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as packed,
        packed.open(member, "w", force_zip64=True) as stream,
    ):
        for _ in range(inflated // MIB):
            stream.write(bytes(MIB))


# -- the pure check -----------------------------------------------------------------------------


def test_the_check_names_the_file_the_declaration_and_the_limit():
    with pytest.raises(ResourceLimitExceeded) as refused:
        check_declared("bomb.laz", "points", 5_000_000, 5_000_000 * 34, 59_000, held="compressed")
    assert str(refused.value) == (
        "bomb.laz: declares 5,000,000 points (≈170 MB decoded) in 59 KB, a ratio of 2,881:1 "
        "over the limit 200:1 (ingest.max_decoded_ratio): refused as a decompression bomb"
    )
    with pytest.raises(ResourceLimitExceeded, match=r"over the limit of 10 \(ingest.max_points\)"):
        check_declared(
            "a.las",
            "points",
            11,
            0,
            0,
            ResourceLimits(max_points=10),
            held="any",
            limit="max_points",
        )
    with pytest.raises(ResourceLimitExceeded, match="more than the file can hold"):
        check_declared("a.las", "points", 10, 200, 100, held="raw")
    # Small decoded sizes are never refused for their ratio; honest ratios pass.
    check_declared("tiny.laz", "points", 1000, 34_000, 10, held="compressed")
    check_declared("scan.laz", "points", 10**8, 34 * 10**8, 3 * 10**8, held="compressed")


def test_the_limits_come_from_the_configuration(tmp_path, monkeypatch):
    document = tomllib.loads(default_config_toml(tmp_path))
    assert settings_from_document(document, tmp_path, "arkhiv.toml").ingest.resource_limits() == (
        ResourceLimits()
    )
    monkeypatch.setenv("ARKHIV_INGEST__MAX_IMAGE_PIXELS", "1000")
    settings = settings_from_document(document, tmp_path, "arkhiv.toml")
    assert settings.ingest.resource_limits().max_image_pixels == 1000
    assert IngestPolicy(memory_budget_bytes=BUDGET).resource_limits() == LIMITS


def test_a_3mf_or_usdz_member_that_inflates_enormously_is_refused_before_extraction(tmp_path):
    package = tmp_path / "print.3mf"
    zip_bomb(package, "3D/3dmodel.model", 100 * MIB)
    with zipfile.ZipFile(package) as packed:
        members = [(i.filename, i.file_size, i.compress_size) for i in packed.infolist()]
    with pytest.raises(ResourceLimitExceeded, match=r"ingest\.max_decoded_ratio") as refused:
        check_zip_members(package.name, members, package.stat().st_size, LIMITS)
    assert "print.3mf member 3D/3dmodel.model: declares 104,857,600 bytes" in str(refused.value)
    # Ingest reads the containers' directories and refuses both kinds.
    usdz = tmp_path / "scene.usdz"
    zip_bomb(usdz, "scene.usdc", 100 * MIB)
    for path in (package, usdz):
        found = characterize(path, None, limits=LIMITS)
        assert not found.valid and "ingest.max_decoded_ratio" in found.problems[0], found
    honest = tmp_path / "honest.3mf"
    with zipfile.ZipFile(honest, "w") as packed:
        packed.writestr("3D/3dmodel.model", "<model/>")
    assert characterize(honest, None, limits=LIMITS).valid


# -- every kind through ingest characterization, memory measured -------------------------------

BOMBS = {
    # kind: (reader, file name, the configuration key the reason must name)
    "laz-identical-points": ("cloud", "bomb.laz", "ingest.max_decoded_ratio"),
    "las-claims-more-than-it-holds": ("cloud", "claims.las", "ingest.max_decoded_ratio"),
    "e57-absurd-record-count": ("cloud", "bomb.e57", "ingest.max_decoded_ratio"),
    "ply-binary-2-billion-vertices": ("mesh", "cloud.ply", "ingest.max_decoded_ratio"),
    "ply-ascii-2-billion-vertices": ("mesh", "mesh.ply", "ingest.max_decoded_ratio"),
    "glb-accessor-1e9-vertices": ("mesh", "accessor.glb", "ingest.max_decoded_ratio"),
    "glb-draco-absurd-count": ("mesh", "draco.glb", "ingest.max_decoded_ratio"),
    "glb-meshopt-absurd-count": ("mesh", "meshopt.glb", "ingest.max_decoded_ratio"),
    "vrml-gzip-bomb": ("mesh", "scene.wrl", "ingest.max_decoded_ratio"),
    "png-100000x100000": ("image", "huge.png", "ingest.max_image_pixels"),
    "jpeg-60000x60000": ("image", "huge.jpg", "ingest.max_image_pixels"),
    "heic-100000x100000": ("image", "huge.heic", "ingest.max_image_pixels"),
}
OBJ_BUDGET = 96 * MIB  # loading the 12 MB OBJ below whole takes about 140 MiB


def craft(kind: str, path: Path) -> None:
    if kind == "laz-identical-points":
        write_cloud(path, 5_000_000, identical=True)
    elif kind == "las-claims-more-than-it-holds":
        write_las_claiming(path, 4_000_000_000)
    elif kind == "e57-absurd-record-count":
        write_e57_claiming(path, 5_000_000_000)
    elif kind == "ply-binary-2-billion-vertices":
        path.write_bytes(ply_bytes("binary_little_endian", 2_000_000_000, None))
    elif kind == "ply-ascii-2-billion-vertices":
        path.write_bytes(ply_bytes("ascii", 2_000_000_000, 1))
    elif kind == "glb-accessor-1e9-vertices":
        path.write_bytes(accessor_bomb_glb(1_000_000_000))
    elif kind == "glb-draco-absurd-count":
        path.write_bytes(draco_glb(declared=1_000_000_000))
    elif kind == "glb-meshopt-absurd-count":
        path.write_bytes(meshopt_glb(declared=1_000_000_000))
    elif kind == "vrml-gzip-bomb":
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(b"#VRML V2.0 utf8\n")
            for _ in range(100):
                f.write(bytes(MIB))
    elif kind == "png-100000x100000":
        path.write_bytes(png_file(100_000, 100_000, zlib.compress(bytes(1000))))
    elif kind == "jpeg-60000x60000":
        path.write_bytes(jpeg_claiming(60_000, 60_000))
    elif kind == "heic-100000x100000":
        path.write_bytes(heic_claiming(100_000, 100_000))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> Path:
    """Every bomb, crafted once for the module."""
    folder = tmp_path_factory.mktemp("bombs")
    for kind, (_reader, name, _limit) in BOMBS.items():
        craft(kind, folder / name)
    zip_bomb(folder / "model.usdz", "model.usdc", 200 * MIB)
    return folder


@pytest.fixture(scope="module")
def characterized(bombs, tmp_path_factory) -> dict:
    """Ingest's characterization of tiny valid files (the baseline), of every bomb, and of an
    honest OBJ under a small budget and then a roomy one (last: loading it leaves garbage)."""
    tiny = tmp_path_factory.mktemp("tiny")
    write_cloud(tiny / "tiny.laz", 1000)
    (tiny / "tiny.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    (tiny / "tiny.png").write_bytes(png_file(16, 16, zlib.compress(bytes(16 * 49))))
    write_obj(tiny / "big.obj", 12 * MIB)
    jobs = {
        "tiny-cloud": ("cloud", tiny / "tiny.laz", LIMITS),
        "tiny-mesh": ("mesh", tiny / "tiny.obj", LIMITS),
        "tiny-image": ("image", tiny / "tiny.png", LIMITS),
        **{kind: (reader, bombs / name, LIMITS) for kind, (reader, name, _) in BOMBS.items()},
        "obj-small-budget": (
            "mesh",
            tiny / "big.obj",
            ResourceLimits(memory_budget_bytes=OBJ_BUDGET),
        ),
        "obj-roomy-budget": ("mesh", tiny / "big.obj", ResourceLimits()),
    }
    outcomes = run_jobs(_CHARACTERIZE, jobs)
    for name in ("tiny-cloud", "tiny-mesh", "tiny-image"):
        assert outcomes[name]["valid"] is True, outcomes[name]
    return outcomes


@pytest.mark.parametrize("kind", list(BOMBS))
def test_a_bomb_is_refused_at_characterization_within_the_memory_budget(kind, characterized):
    _reader, name, limit = BOMBS[kind]
    outcome = characterized[kind]
    assert outcome["valid"] is False, outcome
    reasons = [p for p in outcome["problems"] if p.startswith(name) and limit in p]
    assert reasons, outcome["problems"]
    within_budget(outcome, baseline_of(characterized), BUDGET, f"{kind}: {reasons[0]}")


def test_honest_draco_and_meshopt_files_are_not_refused(tmp_path):
    from arkhiv.ingest.characterize.meshes import characterize_mesh

    for name, data in (("draco.glb", draco_glb()), ("meshopt.glb", meshopt_glb())):
        path = tmp_path / name
        path.write_bytes(data)
        c = characterize_mesh(path, limits=LIMITS)
        assert c.valid is True, c.problems
        assert c.properties["faces"] == 1280 and c.properties["compression"]


def test_an_obj_too_large_for_the_budget_is_not_loaded_and_memory_stays_within_it(
    characterized,
):
    """An OBJ declares nothing: its size is its honesty. Where loading it whole would need more
    than the budget it is characterized from its statements, not loaded (and not refused); the
    same file with room to spare is loaded, and then takes more than that budget."""
    small, roomy = characterized["obj-small-budget"], characterized["obj-roomy-budget"]
    assert small["valid"] is True and small["properties"]["loaded"] is False
    assert any("ingest.memory_budget_bytes" in p for p in small["problems"]), small
    assert roomy["valid"] is True and roomy["properties"]["loaded"] is True
    baseline = baseline_of(characterized)
    within_budget(small, baseline, OBJ_BUDGET, "obj, not loaded")
    if baseline is not None and roomy["peak"] is not None:
        print(f"obj loaded whole: {mib(roomy['peak'] - baseline)} over the baseline")
        assert roomy["peak"] > baseline + OBJ_BUDGET


# -- reconstruction reads clouds and meshes from uploads ---------------------------------------

HONEST_POINTS = 3_000_000
RECONSTRUCTION_BOMBS = {
    "laz-identical-points": ("cloud", "bomb.laz"),
    "e57-absurd-record-count": ("cloud", "bomb.e57"),
    "usdz-member-inflates": ("mesh", "model.usdz"),
}


@pytest.fixture(scope="module")
def reconstructed(bombs, tmp_path_factory) -> dict:
    """Reconstruction of a tiny valid cloud (the baseline), of the bombs it could be handed,
    and of an honest cloud of three million points."""
    folder = tmp_path_factory.mktemp("clouds")
    write_cloud(folder / "tiny.laz", 2000)
    write_cloud(folder / "site.laz", HONEST_POINTS)
    jobs = {
        "tiny-cloud": ("cloud", folder / "tiny.laz", LIMITS),
        **{
            kind: (reader, bombs / name, LIMITS)
            for kind, (reader, name) in RECONSTRUCTION_BOMBS.items()
        },
        "honest": ("cloud", folder / "site.laz", LIMITS),
    }
    outcomes = run_jobs(_RECONSTRUCT, jobs)
    assert outcomes["tiny-cloud"]["failure"] is None, outcomes["tiny-cloud"]
    outcomes["kept"] = folder / "site.laz-out" / "points.ply"
    return outcomes


@pytest.mark.parametrize("kind", list(RECONSTRUCTION_BOMBS))
def test_reconstruction_refuses_a_bomb_within_the_memory_budget(kind, reconstructed):
    _reader, name = RECONSTRUCTION_BOMBS[kind]
    outcome = reconstructed[kind]
    assert outcome["failure"] and outcome["failure"].startswith(name), outcome
    assert "ingest.max_decoded_ratio" in outcome["failure"]
    baseline = reconstructed["tiny-cloud"]["peak"]
    within_budget(outcome, baseline, BUDGET, f"reconstruct {kind}: {outcome['failure']}")


def test_an_honest_mesh_upload_passes_the_guard_unless_it_needs_more_than_the_budget(tmp_path):
    import trimesh

    from arkhiv.reconstruct.meshes import master_from_mesh
    from arkhiv.reconstruct.report import ReconstructionFailed

    upload = tmp_path / "sphere.glb"
    trimesh.creation.icosphere(subdivisions=4).export(upload)
    report = master_from_mesh(upload, tmp_path / "out", limits=LIMITS)
    assert report.failure is None
    tight = ResourceLimits(memory_budget_bytes=upload.stat().st_size * 10)
    with pytest.raises(ReconstructionFailed, match=r"ingest\.memory_budget_bytes") as refused:
        master_from_mesh(upload, tmp_path / "tight", limits=tight)
    assert refused.value.reason.startswith("sphere.glb: reading this GLB whole needs")


def test_a_big_honest_cloud_is_meshed_in_chunks_and_kept_whole(reconstructed):
    """Three million points: `points.ply` holds every one, while reading grows the process by
    less than two float64 copies of the points (reading it whole grew it by about 380 MB)."""
    outcome = reconstructed["honest"]
    assert outcome["failure"] is None, outcome
    assert outcome["figures"]["read"]["points"] == HONEST_POINTS
    assert outcome["figures"]["read"]["thinned_for_surface"] <= 20_000
    kept = reconstructed["kept"]
    with kept.open("rb") as f:
        head = f.read(400)
    assert f"element vertex {HONEST_POINTS}\n".encode() in head
    header_length = head.index(b"end_header\n") + len(b"end_header\n")
    # every point: x, y, z as doubles and its colour as three bytes
    assert kept.stat().st_size == header_length + HONEST_POINTS * (3 * 8 + 3)
    two_copies = HONEST_POINTS * 3 * 8 * 2
    within_budget(outcome, reconstructed["tiny-cloud"]["peak"], two_copies, "honest 3M points")


# -- the whole path: `arkhiv submit` -----------------------------------------------------------


def test_a_laz_bomb_is_rejected_at_submission_with_the_reason_in_the_report(env, tmp_path):
    folder = tmp_path / "capture"
    folder.mkdir()
    write_cloud(folder / "scan.laz", 5_000_000, identical=True)
    bag = make_bag(folder, tmp_path / "bag", capture_metadata=CAPTURE)
    # The configured policy reaches the reader: the reason quotes the configured ratio.
    code, report = submit(bag, {**env, "ARKHIV_INGEST__MAX_DECODED_RATIO": "150"})
    assert code == 1
    failures = [c for c in report["report"]["checks"] if c["outcome"] == "fail"]
    [bomb] = [c for c in failures if c["path"] == "data/scan.laz"]
    assert "scan.laz: declares 5,000,000 points" in bomb["reason"]
    assert "over the limit 150:1 (ingest.max_decoded_ratio)" in bomb["reason"]
    assert "decompression bomb" in report["report"]["summary"]


# -- pictures decoded whole after ingest: textures, depth maps, copies cleaned for download ---


def flat_png(path: Path, side: int, bits: int = 8, channels: int = 3) -> Path:
    """A real, decodable PNG of side x side flat pixels, compressed row by row (a few hundred
    kilobytes that decode to hundreds of megabytes)."""
    colour = {(8, 3): 2, (16, 1): 0}[(bits, channels)]
    row = b"\x00" + bytes(side * channels * bits // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bits, colour, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
    return path


def test_a_texture_bomb_leaves_the_model_untextured_and_is_never_decoded(tmp_path):
    """A reviewer's 520 KB PNG texture of 13,000 x 13,000 pixels took the mesh pipeline to
    3.4 GB: the texture is now refused by what it declares and the model kept untextured."""
    from arkhiv.reconstruct.meshes import master_from_mesh

    upload = tmp_path / "wall"
    upload.mkdir()
    flat_png(upload / "wall.png", 8000)
    (upload / "wall.mtl").write_text("newmtl wall\nKd 1 1 1\nmap_Kd wall.png\n")
    (upload / "wall.obj").write_text(
        "mtllib wall.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
        "usemtl wall\nf 1/1 2/2 3/3\n"
    )
    report = master_from_mesh(upload / "wall.obj", tmp_path / "out", limits=LIMITS)
    [refused] = [w for w in report.figures("read")["warnings"] if "wall.png" in w]
    assert "ingest.max_decoded_ratio" in refused and refused.endswith("kept untextured")
    assert b"image/png" not in (tmp_path / "out" / "model.glb").read_bytes()


def test_a_depth_map_bomb_ends_the_depth_pipeline_before_opencv_reads_it(tmp_path):
    from arkhiv.reconstruct.depth import mesh_from_depth
    from arkhiv.reconstruct.report import ReconstructionFailed
    from tests.synthetic_scene import make_scene, write_rgbd_folder

    capture = write_rgbd_folder(tmp_path / "rgbd", make_scene(cameras=4, width=160, height=120))
    [first, *_] = sorted((capture / "depth").glob("*.png"))
    flat_png(first, 12000, bits=16, channels=1)  # 288 MB of depth in a few hundred KB
    with pytest.raises(ReconstructionFailed, match=r"ingest\.max_decoded_ratio"):
        mesh_from_depth(capture, tmp_path / "out", limits=LIMITS)


def test_a_picture_bomb_is_not_decoded_to_clean_it_for_a_download(bombs, tmp_path):
    from arkhiv.access.disclosure import ImageError, clean_image

    with pytest.raises(ImageError, match=r"ingest\.max_"):
        clean_image(bombs / "huge.png", tmp_path / "clean.png", LIMITS)
