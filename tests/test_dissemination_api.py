"""A model in every format, the web's levels of detail and a print-ready replica, through the
API and the command line: made on demand from the glTF master, cached, refused to roles
without access copies, and a surface that cannot be printed says why."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import zipfile

import numpy as np
import pytest
import trimesh
from starlette.testclient import TestClient

from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.worker import Worker
from arkhiv.policies.access import Permission, RoleGrant
from arkhiv.web.app import create_app
from tests.conftest import arkhiv_command
from tests.test_access_files import tokens
from tests.test_submit import CAPTURE, env, submit

__all__ = ["env"]


def archived_model(archive, env, tmp_path, mesh_file, name: str, mode: str = "mesh") -> str:
    """An object whose capture is an uploaded mesh (or point cloud), with its glTF master made."""
    upload = tmp_path / f"upload-{name}"
    upload.mkdir()
    (upload / mesh_file.name).write_bytes(mesh_file.read_bytes())
    capture = copy.deepcopy(CAPTURE)
    capture["capture"]["mode"] = mode
    capture["object"]["title"] = name
    code, report = submit(make_bag(upload, tmp_path / f"bag-{name}", capture_metadata=capture), env)
    assert code == 0, report
    Worker(archive, ["reconstruct"], burst=True).run()
    return report["object_id"]


@pytest.fixture
def bunny(archive, env, corpora, tmp_path) -> str:
    return archived_model(
        archive, env, tmp_path, corpora / "3d-models/bunny-multiformat/bunny.glb", "bunny"
    )


def test_every_format_levels_and_a_print_through_the_api(archive, bunny, env):
    archive.settings.access.roles["visitor"] = RoleGrant(permissions=[Permission.VIEW_PUBLIC])
    headers = tokens(archive, vi="visitor")
    base = f"/api/v1/objects/{bunny}"
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        formats = client.get("/api/v1/formats").json()
        mesh_formats = [f["name"] for f in formats if "mesh" in f["masters"]]
        assert len({f["name"] for f in formats}) >= 12
        for fmt in mesh_formats:
            made = client.get(f"{base}/export/{fmt}")
            assert made.status_code == 200, (fmt, made.text[:300])
            assert len(made.content) > 1000, fmt
            if made.headers["content-type"] == "application/zip":
                names = zipfile.ZipFile(io.BytesIO(made.content)).namelist()
                assert any(name.endswith(fmt if fmt != "gltf" else ".gltf") for name in names)
        stl = trimesh.load(io.BytesIO(client.get(f"{base}/export/stl").content), file_type="stl")
        whole = client.get(f"{base}/export/glb").content
        part = client.get(f"{base}/export/glb", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == whole[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(whole)}"
        assert len(stl.faces) == 69_451
        refused = client.get(f"{base}/export/xyz")  # a point-cloud format, and no cloud kept
        assert refused.status_code == 422 and "point clouds" in refused.json()["detail"]
        assert client.get(f"{base}/export/blend").status_code == 422
        assert client.get(f"{base}/export/stl", headers=headers["visitor"]).status_code == 403

        thumb = client.get(f"{base}/lod/thumb")
        assert thumb.status_code == 200 and len(thumb.content) < 200_000
        draco = client.get(f"{base}/lod/low", params={"compression": "draco"})
        assert draco.status_code == 200 and b"KHR_draco_mesh_compression" in draco.content[:4000]
        assert client.get(f"{base}/lod/huge").status_code == 422

        printed = client.get(f"{base}/print", params={"size_mm": 80, "format": "3mf"})
        assert printed.status_code == 200, printed.text
        report = json.loads(printed.headers["x-arkhiv-print-report"])
        assert report["watertight_after"] and report["holes_filled"] >= 1
        replica = trimesh.load(io.BytesIO(printed.content), file_type="3mf", force="mesh")
        assert replica.is_watertight and abs(np.ptp(replica.vertices, axis=0).max() - 80) < 0.5


# The catalog's part (which files the head has) is the same as for meshes, run on both above.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_scanned_point_cloud_comes_in_the_point_cloud_formats_without_its_georeference(
    archive, env, corpora, tmp_path
):
    import laspy
    import pye57

    source = corpora / "pointclouds/simple.las"
    scan = laspy.read(source)
    original = np.column_stack([scan.x, scan.y, scan.z])
    local = original - original.mean(axis=0)
    object_id = archived_model(archive, env, tmp_path, source, "terrain", mode="point-cloud")
    base = f"/api/v1/objects/{object_id}"
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        page = client.get(f"/objects/{object_id}").text
        for fmt in ("las", "laz", "xyz", "e57", "glb", "stl"):
            assert f"/export/{fmt}" in page, fmt
        for fmt in ("las", "laz", "xyz", "e57"):
            made = client.get(f"{base}/export/{fmt}")
            assert made.status_code == 200, (fmt, made.text[:300])
            path = tmp_path / f"export.{fmt}"
            path.write_bytes(made.content)
            if fmt in ("las", "laz"):
                back = laspy.read(path)
                points = np.column_stack([back.x, back.y, back.z])
            elif fmt == "e57":
                read = pye57.E57(str(path)).read_scan(0, ignore_missing_fields=True)
                points = np.column_stack(
                    [read["cartesianX"], read["cartesianY"], read["cartesianZ"]]
                )
            else:
                points = np.loadtxt(path, usecols=(0, 1, 2))
            assert len(points) == len(original), fmt
            # Every point, where the model has it: in the local frame, far from the site.
            assert np.allclose(np.sort(points, axis=0), np.sort(local, axis=0), atol=0.01), fmt
            assert np.abs(points).max() < np.abs(original).max() / 10, fmt
        mesh = trimesh.load(io.BytesIO(client.get(f"{base}/export/stl").content), file_type="stl")
        assert len(mesh.faces) > 0


def test_an_open_surface_cannot_be_printed_unless_thickened(archive, env, tmp_path):
    sheet = trimesh.creation.box(extents=(1, 1, 1))
    sheet.update_faces(sheet.face_normals[:, 2] > 0.5)  # only the top: no volume
    sheet = trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(sheet.vertices, sheet.faces, 0.05))
    sheet.vertices[:, 2] += 0.2 * np.sin(3 * sheet.vertices[:, 0])  # a bent facade
    path = tmp_path / "facade.glb"
    sheet.export(path)
    object_id = archived_model(archive, env, tmp_path, path, "facade")
    base = f"/api/v1/objects/{object_id}/print"
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        refused = client.get(base, params={"size_mm": 100})
        assert refused.status_code == 422 and "solidify" in refused.json()["detail"]
        shell = client.get(base, params={"size_mm": 100, "solidify_mm": 3})
        assert shell.status_code == 200, shell.text
        assert trimesh.load(io.BytesIO(shell.content), file_type="stl").is_watertight


def test_export_from_the_command_line(archive, archive_env, bunny, tmp_path):
    from tests.conftest import subprocess_env

    output = tmp_path / "bunny.ply"
    result = subprocess.run(
        arkhiv_command("export", bunny, "--format", "ply", "-o", str(output)),
        env=subprocess_env(archive_env),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert len(trimesh.load(output).faces) == 69_451
