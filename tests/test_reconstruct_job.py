"""Reconstruction as archive work: an archived capture gets a `reconstruct` job; a worker (the
real `arkhiv worker --queue reconstruct` command) turns it into version 2 of the same object with
the model, the report, a PREMIS creation event and a CRMdig D10 Software Execution; captures that
cannot become models end with a reason and leave the object as it was. (Every AIP is also held
to ocfl-py, the XSDs and the SHACL shapes at teardown: tests/aip_checks.py.)"""

from __future__ import annotations

import copy
import json
import subprocess
import time

import pytest
import trimesh
from lxml import etree
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import RDF

from arkhiv.aip.archiving import file_id
from arkhiv.aip.placement import object_key
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.reconstruction import MODEL_FOLDER, RECONSTRUCT_KIND, REPORT_NAME
from arkhiv.jobs.worker import Worker
from tests.conftest import arkhiv_command
from tests.synthetic_scene import make_scene, write_photo_set, write_polycam_export
from tests.test_submit import CAPTURE, env, submit

__all__ = ["env"]

DIG = Namespace("http://www.ics.forth.gr/isl/CRMdig/")
PREMIS = "{http://www.loc.gov/premis/v3}"


def _capture(mode: str) -> dict:
    capture = copy.deepcopy(CAPTURE)
    capture["capture"]["mode"] = mode
    capture["object"]["title"] = f"Synthetic {mode} capture"
    return capture


def cli(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(arkhiv_command(*args), env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def show(env, object_id: str) -> dict:
    return json.loads(cli(env, "show", object_id, "--json").stdout)


def archived(tmp_path, env, folder, mode: str) -> str:
    bag = make_bag(folder, tmp_path / f"bag-{mode}", capture_metadata=_capture(mode))
    code, report = submit(bag, env)
    assert code == 0, report
    return report["object_id"]


def run_reconstruction_worker(env) -> None:
    cli(env, "worker", "--queue", "reconstruct", "--burst")


def head_file(archive, object_id: str, shown: dict, logical: str) -> bytes:
    entry = next(f for f in shown["files"] if f["logical_path"] == logical)
    root = archive.settings.store("site-a").path
    return (root / object_key(object_id, entry["content_path"])).read_bytes()


def test_a_depth_capture_becomes_version_2_with_its_model_and_provenance(archive, env, tmp_path):
    scene = make_scene(seed=3, cameras=16)
    capture = tmp_path / "capture"
    write_polycam_export(capture, scene)
    object_id = archived(tmp_path, env, capture, "lidar-depth")
    before = show(env, object_id)
    assert before["head_version"] == 1
    [job] = [j for j in before["jobs"] if j["kind"] == RECONSTRUCT_KIND]
    assert job["status"] == "queued"

    run_reconstruction_worker(env)
    after = show(env, object_id)
    assert after["head_version"] == 2 and after["status"] == "preserved", after["jobs"][0]["error"]
    assert after["versions"][-1]["message"] == "Reconstruction: 3D model from the depth capture"
    paths = {f["logical_path"]: f for f in after["files"]}
    for name in ("model.glb", "model.ply", "reconstruction-report.json"):
        assert f"{MODEL_FOLDER}/{name}" in paths
    assert not any("/work/" in path or path.endswith("local-frame.json") for path in paths)
    # v1 is carried, not copied: the capture's files keep their v1 content paths.
    v1 = {f["logical_path"]: f["content_path"] for f in before["files"]}
    for path, content in v1.items():
        if path.startswith("package/"):
            assert paths[path]["content_path"] == content
    assert paths[f"{MODEL_FOLDER}/model.glb"]["format"]["mime_type"] == "model/gltf-binary"
    [job] = [j for j in after["jobs"] if j["kind"] == RECONSTRUCT_KIND]
    assert job["status"] == "done" and job["progress"] == 1.0

    model = head_file(archive, object_id, after, f"{MODEL_FOLDER}/model.glb")
    mesh = trimesh.load(trimesh.util.wrap_as_stream(model), file_type="glb", force="mesh")
    assert len(mesh.faces) > 20_000 and mesh.visual.vertex_colors is not None
    report = json.loads(
        head_file(archive, object_id, after, f"{MODEL_FOLDER}/reconstruction-report.json")
    )
    assert report["pipeline"] == "depth capture" and report["failure"] is None
    assert "open3d" in report["software"] and all(s["seconds"] >= 0 for s in report["stages"])

    # PREMIS: a creation event by open3d linking the capture (sources) and the model.
    premis = etree.fromstring(head_file(archive, object_id, after, "metadata/premis.xml"))
    creations = [
        e
        for e in premis.iter(f"{PREMIS}event")
        if e.find(f"{PREMIS}eventType").get("valueURI").endswith("/cre")
    ]
    [creation] = creations
    linked = [v.text for v in creation.iter(f"{PREMIS}linkingObjectIdentifierValue")]
    frames = [p for p in paths if p.startswith("package/data/keyframes/")]
    outputs = [p for p in paths if p.startswith(MODEL_FOLDER)]
    assert {file_id(p) for p in frames + outputs} <= set(linked) and len(outputs) == 3
    agents = {
        a.findtext(f"{PREMIS}agentName")
        for a in premis.iter(f"{PREMIS}agent")
        if a.findtext(f"{PREMIS}agentType") == "software"
    }
    assert {"Arkhiv", "open3d"} <= agents
    model_object = next(
        o
        for o in premis.iter(f"{PREMIS}object")
        if o.findtext(f"{PREMIS}originalName") == f"{MODEL_FOLDER}/model.glb"
        or any(
            s.text == f"{MODEL_FOLDER}/model.glb" for s in o.iter(f"{PREMIS}contentLocationValue")
        )
    )
    assert model_object.find(f"{PREMIS}relationship") is not None

    # CIDOC-CRM: a D10 Software Execution that used open3d and had the model as output.
    graph = Graph().parse(
        data=head_file(archive, object_id, after, "metadata/crm.ttl"), format="turtle"
    )
    [execution] = list(graph.subjects(RDF.type, DIG["D10_Software_Execution"]))[:1]
    outputs = set(graph.objects(execution, DIG["L11_had_output"]))
    assert outputs and all(isinstance(o, URIRef) for o in outputs)
    software = set(graph.objects(execution, DIG["L23_used_software_or_firmware"]))
    assert any("open3d" in str(label) for s in software for label in graph.objects(s, None))

    # Done is done: another request does nothing, --force makes v3 replacing the model.
    again = json.loads(cli(env, "reconstruct", object_id, "--json").stdout)
    assert again["status"] == "has a model" and show(env, object_id)["head_version"] == 2
    forced = json.loads(cli(env, "reconstruct", object_id, "--force", "--json").stdout)
    assert forced["status"] == "reconstructed" and forced["version"] == 3
    third = show(env, object_id)
    assert sum(p.startswith(MODEL_FOLDER) for p in (f["logical_path"] for f in third["files"])) == 3
    record = third["description"]
    assert len(record["derivations"]) == 2  # glb and ply, the v2 entries replaced


def test_a_capture_that_cannot_be_modelled_fails_once_with_its_reason(archive, env, tmp_path):
    scene = make_scene(seed=4, cameras=2, ground=False)
    photos = tmp_path / "photos"
    write_photo_set(photos, scene)
    object_id = archived(tmp_path, env, photos, "photos")
    run_reconstruction_worker(env)
    shown = show(env, object_id)
    assert shown["head_version"] == 1  # unchanged
    [job] = [j for j in shown["jobs"] if j["kind"] == RECONSTRUCT_KIND]
    assert job["status"] == "dead" and job["attempts"] == "1/3", archive.queue.get(job["id"]).errors
    assert "too few photos: 2 readable" in job["error"]
    [failure] = [e for e in shown["events"] if e["outcome"] == "failure"]
    assert failure["label"] == "creation" and "too few photos" in failure["detail"]
    result = cli(env, "reconstruct", object_id, check=False)
    assert result.returncode == 1 and "too few photos" in result.stderr


def test_a_job_whose_worker_died_is_run_again(archive, env, tmp_path):
    scene = make_scene(seed=5, cameras=12)
    capture = tmp_path / "capture"
    write_polycam_export(capture, scene, ghost=False, blurry=())
    object_id = archived(tmp_path, env, capture, "lidar-depth")
    # A worker claims the job and dies without a word: its lease runs out.
    claimed = archive.queue.claim(["reconstruct"], "dead-worker", lease_seconds=0.2)
    assert claimed is not None and claimed.kind == RECONSTRUCT_KIND
    time.sleep(0.5)
    Worker(archive, ["reconstruct"], burst=True).run()
    job = archive.queue.get(claimed.id)
    assert job.status == "done" and job.attempts == 2
    assert show(env, object_id)["head_version"] == 2


@pytest.mark.slow
# The catalog plays the same part as in the depth test above (run on both); one is enough here.
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_sceaux_photos_become_a_coloured_model_in_version_2(archive, env, corpora, tmp_path):
    photos = corpora / "photogrammetry/sceaux-castle/images"
    object_id = archived(tmp_path, env, photos, "photos")
    run_reconstruction_worker(env)
    shown = show(env, object_id)
    assert shown["head_version"] == 2, shown["jobs"]
    paths = {f["logical_path"] for f in shown["files"]}
    assert {f"{MODEL_FOLDER}/model.glb", f"{MODEL_FOLDER}/sparse/images.bin"} <= paths
    model = head_file(archive, object_id, shown, f"{MODEL_FOLDER}/model.glb")
    mesh = trimesh.load(trimesh.util.wrap_as_stream(model), file_type="glb", force="mesh")
    assert len(mesh.faces) >= 50_000
    report = json.loads(
        head_file(archive, object_id, shown, f"{MODEL_FOLDER}/reconstruction-report.json")
    )
    assert "too few" not in json.dumps(report) and report["pipeline"] == "photos"
    mapping = next(s for s in report["stages"] if s["name"] == "mapping")["figures"]
    assert mapping["registered"] == 11
    # The COLMAP database and working copies stay in staging, which is cleared.
    assert not any("database" in p or "/work/" in p for p in paths)
    assert not list(archive.staging_dir.glob("reconstruct-*"))
    # Where the cameras stood is for the roles trusted with locations only.
    from starlette.testclient import TestClient

    from arkhiv.web.app import create_app

    with TestClient(create_app(archive, embedded_worker=False)) as client:
        listed = client.get(f"/api/v1/objects/{object_id}").json()["files"]
        assert f"{MODEL_FOLDER}/model.glb" in {f["logical_path"] for f in listed}
        assert not [f for f in listed if "/sparse/" in f["logical_path"]]
        poses = client.get(f"/api/v1/objects/{object_id}/files/{MODEL_FOLDER}/sparse/images.bin")
        assert poses.status_code == 403


def test_the_capture_is_read_from_a_replica_that_passes_its_audit(archive, env, tmp_path):
    scene = make_scene(seed=6, cameras=10)
    capture = tmp_path / "capture"
    write_polycam_export(capture, scene, ghost=False, blurry=())
    object_id = archived(tmp_path, env, capture, "lidar-depth")
    shown = show(env, object_id)
    frames = [f for f in shown["files"] if f["logical_path"].startswith("package/data/keyframes/")]
    # Two capture files damaged on two of the three stores: the third has them right.
    for store in ("site-a", "site-b"):
        for entry in frames[:2]:
            path = archive.settings.store(store).path / object_key(object_id, entry["content_path"])
            path.chmod(0o644)
            path.write_bytes(b"bit rot" + path.read_bytes()[7:])
    Worker(archive, ["reconstruct"], burst=True).run()
    after = show(env, object_id)
    assert after["head_version"] == 2
    checks = [e for e in after["events"] if e["label"] == "fixity check"]
    failed = [e for e in checks if e["outcome"] == "failure"]
    # One event per store for the whole capture, naming the damaged files (not one per file).
    assert len(failed) == 2 and all("2 of " in e["detail"] for e in failed), failed
    assert after["status"] == "at_risk"  # the bad replicas count no more; repair is queued
    assert any(j["kind"] == "aip.replicate" for j in after["jobs"])
    Worker(archive, ["replicate"], burst=True).run()
    assert show(env, object_id)["status"] == "preserved"  # repaired from the good copy


def test_a_retry_after_the_model_was_made_only_writes_the_version(
    archive, env, tmp_path, monkeypatch
):
    import arkhiv.reconstruct.pipelines as pipelines
    from arkhiv.aip.preservation import object_lease
    from arkhiv.catalog import leases

    scene = make_scene(seed=7, cameras=8)
    capture = tmp_path / "capture"
    write_polycam_export(capture, scene, ghost=False, blurry=())
    object_id = archived(tmp_path, env, capture, "lidar-depth")
    runs = []
    real_run = pipelines.run
    monkeypatch.setattr(pipelines, "run", lambda *args: runs.append(args) or real_run(*args))
    # A repair holds the object while the model is finished: the version must wait.
    with leases.holding(archive.engine, object_lease(object_id), "a-repair", 60):
        worker = Worker(archive, ["reconstruct"])
        job = archive.queue.claim(["reconstruct"], worker.owner, 60)
        worker.execute(job)
    assert archive.queue.get(job.id).status == "queued"  # to be retried after back-off
    assert "another worker" in archive.queue.get(job.id).last_error
    Worker(archive, ["reconstruct"], burst=True).run()
    assert archive.queue.get(job.id).status == "done"
    assert len(runs) == 1  # the second attempt reused the model the first one made
    assert show(env, object_id)["head_version"] == 2
    assert not list(archive.staging_dir.glob("reconstruct-*"))


def test_progress_follows_the_stages_and_the_settings_reach_the_pipeline(
    archive, env, corpora, tmp_path
):
    from arkhiv.jobs.reconstruction import reconstruct_object

    upload = tmp_path / "scan"
    upload.mkdir()
    (upload / "armadillo.ply").write_bytes(
        (corpora / "3d-models/stanford/armadillo-pointcloud.ply").read_bytes()
    )
    object_id = archived(tmp_path, env, upload, "point-cloud")
    archive.settings.reconstruction.threads = 1
    seen: list[tuple[float, str]] = []
    result = reconstruct_object(
        archive, object_id, "test-worker", progress=lambda f, m: seen.append((f, m))
    )
    assert result["version"] == 2
    messages = [message for _fraction, message in seen]
    for stage in ("read", "normals", "surface", "clean-up", "write"):
        assert f"point cloud: {stage}" in messages, messages
    fractions = [fraction for fraction, _message in seen]
    assert fractions == sorted(fractions) and 0.0 == fractions[0] < fractions[-1] == 0.96
    report = json.loads(
        head_file(archive, object_id, show(env, object_id), f"{MODEL_FOLDER}/{REPORT_NAME}")
    )
    assert report["parameters"]["surface"]["threads"] == 1
    assert f"{MODEL_FOLDER}/points.ply" in {
        f["logical_path"] for f in show(env, object_id)["files"]
    }


# The catalog plays no part in what this checks (the depth test above runs on both).
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
@pytest.mark.damages_aips  # every copy of the capture is spoilt on purpose
def test_a_job_that_keeps_failing_gives_up_after_its_attempts_with_the_reason(
    archive, env, corpora, tmp_path
):
    from tests.test_fixity_audit import flip_a_bit

    upload = tmp_path / "scan"
    upload.mkdir()
    (upload / "terrain.las").write_bytes((corpora / "pointclouds/simple.las").read_bytes())
    object_id = archived(tmp_path, env, upload, "point-cloud")
    # No copy of the scan passes its audit any more: nothing can be read, try after try.
    for store in archive.settings.stores:
        [scan] = [
            p
            for p in (store.path / object_key(object_id)).rglob("terrain.las")
            if "/content/" in p.as_posix()
        ]
        flip_a_bit(scan, __import__("random").Random(1))
    [job] = archive.queue.list(queue="reconstruct")
    deadline = time.monotonic() + 60
    while archive.queue.get(job.id).status not in ("dead", "done"):
        assert time.monotonic() < deadline, archive.queue.get(job.id)
        Worker(archive, ["reconstruct"], burst=True).run()
        time.sleep(0.3)  # the back-off between attempts
    ended = archive.queue.get(job.id)
    assert ended.status == "dead" and ended.attempts == archive.settings.reconstruction.max_attempts
    shown = show(env, object_id)
    assert shown["head_version"] == 1
    [failure] = [e for e in shown["events"] if e["label"] == "creation"]
    assert failure["outcome"] == "failure"
    assert f"gave up after {ended.attempts} attempts" in failure["detail"]
    assert not list(archive.staging_dir.glob("reconstruct-*")), "the working folder is left"


# The catalog plays no part in what this checks (the depth test above runs on both).
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_an_attempt_waits_while_an_earlier_one_still_runs_on_this_machine(
    archive, env, corpora, tmp_path
):
    """A worker that lost its lease may still be running; the job claimed again on the same
    machine must not work in (and wipe) the same folder: it fails this attempt and tries
    later."""
    import fcntl

    from arkhiv.errors import ArkhivError
    from arkhiv.jobs.reconstruction import _workdir, reconstruct_object

    upload = tmp_path / "scan"
    upload.mkdir()
    (upload / "terrain.las").write_bytes((corpora / "pointclouds/simple.las").read_bytes())
    object_id = archived(tmp_path, env, upload, "point-cloud")
    workdir = _workdir(archive, object_id, 7)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    with open(workdir.with_name(workdir.name + ".lock"), "a") as earlier:
        fcntl.flock(earlier, fcntl.LOCK_EX)  # the earlier attempt, still at work
        with pytest.raises(ArkhivError, match="still running on this machine"):
            reconstruct_object(archive, object_id, "second-worker", job_id=7)
        fcntl.flock(earlier, fcntl.LOCK_UN)
    assert reconstruct_object(archive, object_id, "second-worker", job_id=7)["version"] == 2
    assert not list(archive.staging_dir.glob("reconstruct-*"))


# The catalog plays no part in what this checks (the depth test above runs on both).
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_pipeline_error_that_will_recur_is_an_answer_not_a_retry(
    archive, env, corpora, tmp_path, monkeypatch
):
    """OpenCV's allocation error on an iPhone set burned three attempts of 90 s each. A
    library's error on the capture ends the job at once, with a failed creation event; an error
    of unknown kind gets a second attempt, and ends there when it comes again."""
    import cv2
    import laspy

    import arkhiv.reconstruct.pipelines as pipelines

    upload = tmp_path / "scan"
    upload.mkdir()
    (upload / "terrain.las").write_bytes((corpora / "pointclouds/simple.las").read_bytes())
    first = archived(tmp_path, env, upload, "point-cloud")
    other = tmp_path / "other"
    other.mkdir()
    cloud = laspy.read(upload / "terrain.las")
    cloud.x = cloud.x + 1.0  # another capture, not a duplicate of the first
    cloud.write(other / "terrain.las")
    second = archived(tmp_path / "again", env, other, "point-cloud")
    raised = iter(
        [
            cv2.error("OpenCV(5.1.0) alloc.cpp:73: error: (-4:Insufficient memory)"),
            RuntimeError("the mapper found no good initial pair"),
            RuntimeError("the mapper found no good initial pair"),
        ]
    )

    def failing(*_args, **_kwargs):
        raise next(raised)

    monkeypatch.setattr(pipelines, "run", failing)
    jobs = {job.payload["object"]: job.id for job in archive.queue.list(queue="reconstruct")}
    deadline = time.monotonic() + 60
    while any(archive.queue.get(j).status not in ("dead", "done") for j in jobs.values()):
        assert time.monotonic() < deadline
        Worker(archive, ["reconstruct"], burst=True).run()
        time.sleep(0.3)  # the back-off between attempts
    library, unknown = archive.queue.get(jobs[first]), archive.queue.get(jobs[second])
    assert library.status == "dead" and library.attempts == 1, library.errors
    assert unknown.status == "dead" and unknown.attempts == 2, unknown.errors
    assert "would fail the same way again (RuntimeError" in unknown.last_error
    for object_id in (first, second):
        [failure] = [e for e in show(env, object_id)["events"] if e["label"] == "creation"]
        assert failure["outcome"] == "failure" and "would fail the same way" in failure["detail"]
    assert not list(archive.staging_dir.glob("reconstruct-*"))


# Reasons a contributor can act on, as the pipelines word them (never a library's message).
ACTIONABLE = (
    "too few photos",
    "could be placed",
    "could not be put together",
    "too little detail",
    "usable stereo pair",
    "photo pairs",
    "confirmed by more than one view",
)


@pytest.mark.slow
@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_real_phone_set_with_mixed_orientations_and_heic_ends_in_a_model_or_a_reason(
    archive, env, corpora, tmp_path
):
    """Three iPhone photos of a Berlin facade (landscape), one of them stored sideways with an
    EXIF rotation, and an iPhone HEIC in portrait of something else: whatever the set allows,
    the job ends after one attempt in a model or a reason a person can act on."""
    from PIL import Image

    photos = tmp_path / "phone"
    photos.mkdir()
    berlin = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    for name in ("01.jpg", "02.jpg"):
        (photos / name).write_bytes((berlin / name).read_bytes())
    with Image.open(berlin / "03.jpg") as upright:
        exif = upright.getexif()
        exif[0x0112] = 6  # shown turned 90° clockwise: the pixels are stored the other way
        upright.transpose(Image.Transpose.ROTATE_90).save(
            photos / "03-sideways.jpg", quality=92, exif=exif
        )
    (photos / "IMG_5195.HEIC").write_bytes((corpora / "photos-exif/IMG_5195.HEIC").read_bytes())
    object_id = archived(tmp_path, env, photos, "photos")
    started = time.monotonic()
    run_reconstruction_worker(env)
    print(f"phone set reconstructed in {time.monotonic() - started:.1f} s")
    shown = show(env, object_id)
    [job] = [j for j in shown["jobs"] if j["kind"] == RECONSTRUCT_KIND]
    print("outcome:", job["status"], job.get("error") or "")
    if job["status"] == "done":
        assert shown["head_version"] == 2
        return
    assert job["status"] == "dead" and job["attempts"] == "1/3", job
    assert any(reason in job["error"] for reason in ACTIONABLE), job["error"]
    assert "Traceback" not in job["error"] and "cv2" not in job["error"]
    [failure] = [e for e in shown["events"] if e["label"] == "creation"]
    assert failure["outcome"] == "failure"
