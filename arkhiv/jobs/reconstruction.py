"""The `reconstruct` job: an archived capture becomes a 3D model, stored as the next version of
the same object.

1. The capture (the package's payload) is copied from the nearest replica that passes an audit
   on the way (local stores first; a bad replica is recorded and its repair queued).
2. `reconstruct.pipelines` picks the pipeline (mesh upload, depth capture, point cloud, photos)
   and runs it in staging; each stage start is the job's progress message.
3. The model (glTF binary master, PLY, the report and, for photos, the camera poses) becomes
   `derivatives/model/` in a new version, with a PREMIS creation event naming the software,
   its sources and its outputs, and a derivation in the description record from which METS,
   PREMIS relationships and a CRMdig D10 Software Execution are generated.

Working files (the COLMAP database, the local frame's offset) stay in staging and are removed.
A capture that cannot become a model ends the job at once with the reason (no retry; the object
is unchanged and a failed creation event says why). Anything else is retried, up to
`reconstruction.max_attempts`; a worker that dies mid-run loses its lease and another runs the
job again from the start, or, when the version was already planned, finishes writing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, update

from arkhiv.aip.archiving import (
    DERIVATIONS,
    DERIVATIVES,
    GENERATED,
    PACKAGE,
    NewFile,
    VersionPlan,
    metadata_format,
    user_for,
    write_version,
)
from arkhiv.aip.events import PendingEvent, record_outside_version
from arkhiv.aip.model import Format
from arkhiv.archive import Archive
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading
from arkhiv.catalog.queue import enqueue
from arkhiv.catalog.tables import jobs
from arkhiv.errors import ArkhivError
from arkhiv.fixity.audit import NoGoodCopy, audited_copies
from arkhiv.fixity.digests import digest_file
from arkhiv.jobs.registry import JobContext, PermanentJobError, error_signature, job_handler
from arkhiv.metadata.premis_vocabulary import EventType

RECONSTRUCT_KIND = "reconstruct"
RECONSTRUCT_QUEUE = "reconstruct"
PAYLOAD = f"{PACKAGE}/data/"
MODEL_FOLDER = f"{DERIVATIVES}/model"
REPORT_NAME = "reconstruction-report.json"
# The program credited with each pipeline's model in CRMdig (all versions are in the report).
MAIN_SOFTWARE = {
    "photos": "pycolmap",
    "depth": "open3d",
    "point cloud": "open3d",
    "mesh": "trimesh",
}
# Roughly where each pipeline's stages start, for the progress shown while it runs.
STAGES = {
    "photos": (
        "prepare images",
        "features",
        "matching",
        "mapping",
        "undistort",
        "stereo pairs",
        "stereo matching",
        "depth consistency",
        "point grid",
        "surface",
        "clean-up",
        "decimate",
        "colour",
        "local frame",
        "write",
    ),
    "depth": ("read", "depth", "fuse", "extract", "clean-up", "decimate", "write"),
    "point cloud": ("read", "normals", "surface", "clean-up", "decimate", "write"),
    "mesh": ("read", "frame", "clean-up", "write", "validate"),
}

Progress = Callable[[float, str], None]


def queue_reconstruction(
    conn: Connection, archive: Archive, object_id: str, *, force: bool = False
) -> tuple[int, bool]:
    """(job id, created): one reconstruction per object at a time. Asking with `force` while
    one waits turns that one into a forced one."""
    job_id, created = enqueue(
        conn,
        RECONSTRUCT_QUEUE,
        RECONSTRUCT_KIND,
        {"object": object_id, "force": force},
        unique_key=f"{RECONSTRUCT_KIND}:{object_id}",
        max_attempts=archive.settings.reconstruction.max_attempts,
    )
    if force and not created:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == "queued")
            .values(payload={"object": object_id, "force": True})
        )
    return job_id, created


def needs_model(logical_paths: list[str] | set[str]) -> bool:
    """A capture (payload files) without a model made from it yet."""
    return any(p.startswith(PAYLOAD) for p in logical_paths) and not any(
        p.startswith(MODEL_FOLDER + "/") for p in logical_paths
    )


@job_handler(RECONSTRUCT_KIND)
def reconstruct_job(ctx: JobContext) -> dict[str, Any]:
    object_id = ctx.payload["object"]
    try:
        return reconstruct_object(
            ctx.archive,
            object_id,
            ctx.owner,
            force=bool(ctx.payload.get("force")),
            progress=ctx.progress,
            job_id=ctx.job.id,
            lease_lost=ctx.lease_lost,
            earlier_errors=[entry["error"].splitlines()[0] for entry in ctx.job.errors],
        )
    except PermanentJobError:
        raise
    except Exception as exc:
        if ctx.attempt >= ctx.job.max_attempts:  # the last try: say why, leave nothing behind
            reason = f"gave up after {ctx.attempt} attempts: {type(exc).__name__}: {exc}"
            with reading(ctx.archive.engine) as conn:
                row = catalog_objects.get_object(conn, object_id)
            if row is not None and row["head_version"]:
                _record_failure(ctx.archive, object_id, row["head_version"], None, reason, {})
            workdir = _workdir(ctx.archive, object_id, ctx.job.id)
            shutil.rmtree(workdir, ignore_errors=True)
            _lock_of(workdir).unlink(missing_ok=True)
        raise


def reconstruct_object(
    archive: Archive,
    object_id: str,
    holder: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
    job_id: int | None = None,
    lease_lost: threading.Event | None = None,
    earlier_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the reconstruction of one object (see the module's description). Work is kept in
    a staging folder of the job's own between attempts: a retry after the pipeline finished
    only writes the version, and one after the version was planned writes that same version.
    `earlier_errors`: the first lines of the errors earlier attempts ended with; a pipeline
    error met again is not tried a third time."""
    report_progress = progress or (lambda _fraction, _message: None)
    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
        if row is None:
            raise PermanentJobError(f"no object {object_id}")
        if row["head_version"] == 0:
            raise ArkhivError(f"{object_id} is still being archived")
        head = catalog_objects.version_state(conn, object_id, row["head_version"])
    workdir = _workdir(archive, object_id, job_id)
    with _working_alone(workdir):
        return _reconstruct_in(
            archive,
            object_id,
            holder,
            row,
            head,
            workdir,
            force,
            report_progress,
            lease_lost,
            earlier_errors,
        )


@contextmanager
def _working_alone(workdir: Path) -> Iterator[None]:
    """One process at a time in a job's working folder: a worker that lost its lease may still
    be running when the job is claimed again on the same machine (the claimer tries later)."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = _lock_of(workdir)
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArkhivError(
                "an earlier attempt at this job is still running on this machine"
            ) from None
        try:
            yield
        finally:
            if not workdir.exists():  # the job is over: nothing left to guard
                lock_path.unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock_of(workdir: Path) -> Path:
    return workdir.with_name(workdir.name + ".lock")


def _reconstruct_in(
    archive: Archive,
    object_id: str,
    holder: str,
    row: dict[str, Any],
    head: dict[str, Any],
    workdir: Path,
    force: bool,
    report_progress: Progress,
    lease_lost: threading.Event | None,
    earlier_errors: Sequence[str],
) -> dict[str, Any]:
    finished_file = workdir / "finished.json"
    resumed = _resume_planned(archive, object_id, row["head_version"], workdir, holder)
    if resumed is not None:
        return resumed
    if not needs_model(set(head)) and not force and not finished_file.exists():
        has_payload = any(path.startswith(PAYLOAD) for path in head)
        status = "has a model" if has_payload else "no capture"
        return {"object": object_id, "status": status, "version": row["head_version"]}
    if finished_file.exists():  # the pipeline ran in an earlier attempt; its output is here
        finished = json.loads(finished_file.read_text())
    else:
        finished = _run_pipeline(
            archive, object_id, row, head, workdir, report_progress, earlier_errors
        )
        finished_file.write_text(json.dumps(finished))
    if lease_lost is not None and lease_lost.is_set():
        raise ArkhivError("the job's lease was lost; another worker may be running it")
    report_progress(0.96, "writing the new version")
    result = write_version(
        archive,
        object_id,
        lambda _inputs: _plan(archive, object_id, finished, workdir),
        workdir / "aip",
        lease_holder=holder,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        **result.as_dict(),
        "preservation": result.status,  # preserved or at_risk, as after any version
        "status": "reconstructed",
        "pipeline": finished["pipeline"],
        "seconds": finished["report"]["seconds"],
    }


def _workdir(archive: Archive, object_id: str, job_id: int | None) -> Path:
    safe = object_id.replace(":", "_").replace("/", "_")
    return archive.staging_dir / f"reconstruct-{safe}-{job_id if job_id is not None else 'direct'}"


def _resume_planned(
    archive: Archive, object_id: str, head: int, workdir: Path, holder: str
) -> dict[str, Any] | None:
    """Finish a version planned before a crash (same bytes, same events); None when there is
    none. A plan the object has moved past (another version landed first) is dropped and the
    version planned again on top of the new head."""
    plan_file = workdir / "aip" / "plan.json"
    if not plan_file.exists():
        return None
    try:
        saved = VersionPlan.from_json(plan_file.read_text())
    except (OSError, ValueError, KeyError, TypeError):
        saved = None
    if saved is not None:
        with reading(archive.engine) as conn:
            versions = {v["number"]: v for v in catalog_objects.versions_of(conn, object_id)}
        committed = versions.get(saved.number)
        try:
            finished = json.loads((workdir / "finished.json").read_text())
            summary = {"pipeline": finished["pipeline"], "seconds": finished["report"]["seconds"]}
        except (OSError, ValueError, KeyError):
            summary = {"pipeline": None, "seconds": None}
        if committed is not None and committed["created_at"] == saved.created:
            shutil.rmtree(workdir, ignore_errors=True)  # committed; only the clean-up was left
            return {
                "object": object_id,
                "version": saved.number,
                "status": "reconstructed",
                "preservation": None,
                **summary,
            }
        if saved.number == head + 1:
            result = write_version(
                archive, object_id, _unplannable, workdir / "aip", lease_holder=holder
            )
            shutil.rmtree(workdir, ignore_errors=True)
            return {
                **result.as_dict(),
                "preservation": result.status,
                "status": "reconstructed",
                **summary,
            }
    shutil.rmtree(workdir / "aip", ignore_errors=True)
    return None


def _run_pipeline(
    archive: Archive,
    object_id: str,
    row: Mapping[str, Any],
    head: Mapping[str, Mapping[str, Any]],
    workdir: Path,
    report_progress: Progress,
    earlier_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """Copy the capture, run the pipeline into `workdir/output`; what the version needs
    (pipeline, report, sources), with no staging path in it. A pipeline error that will recur
    on the same capture (`_will_recur`) ends the job at once with a failed creation event, like
    a capture that cannot be modelled; others (disk, stores, catalog) are left to the retries."""
    from arkhiv.reconstruct.pipelines import PipelineOptions, choose, run
    from arkhiv.reconstruct.report import ReconstructionFailed, stage_listener

    shutil.rmtree(workdir, ignore_errors=True)
    capture = workdir / "capture"
    report_progress(0.0, "copying the capture from verified replicas")
    destinations: dict[str, list[Path]] = {}  # content path -> files with those bytes
    for logical, entry in head.items():
        if logical.startswith(PAYLOAD):
            destination = capture / logical[len(PAYLOAD) :]
            destination.parent.mkdir(parents=True, exist_ok=True)
            destinations.setdefault(entry["content_path"], []).append(destination)
    try:
        audited_copies(archive, object_id, {key: paths[0] for key, paths in destinations.items()})
    except NoGoodCopy as exc:
        raise ArkhivError(f"{exc}; the capture cannot be read until it is repaired") from exc
    for first, *same in destinations.values():  # OCFL stores identical files once
        for path in same:
            os.link(first, path)
    declared_mode = ((row["description"] or {}).get("capture") or {}).get("mode")
    choice = choose(capture, declared_mode)
    if choice is None:
        reason = "the capture holds no photos, depth frames, point cloud or mesh to model"
        _record_failure(archive, object_id, row["head_version"], None, reason, {})
        shutil.rmtree(workdir, ignore_errors=True)
        raise PermanentJobError(reason)
    stages = STAGES.get(choice.pipeline, ())

    def on_stage(name: str) -> None:
        done = stages.index(name) / len(stages) if name in stages else None
        fraction = 0.05 + 0.9 * done if done is not None else 0.5
        report_progress(fraction, f"{choice.pipeline}: {name}")

    token = stage_listener.set(on_stage)
    try:
        chosen = archive.settings.reconstruction
        report = run(
            choice,
            workdir / "output",
            PipelineOptions(
                chosen.max_image_side,
                chosen.dense,
                chosen.threads,
                archive.settings.ingest.resource_limits(),
            ),
        )
    except ReconstructionFailed as failure:
        partial = getattr(failure, "report", None)
        reason = _without_paths(failure.reason, workdir)
        _record_failure(
            archive,
            object_id,
            row["head_version"],
            choice.pipeline,
            reason,
            _without_paths(partial.as_dict(), workdir) if partial else {},
        )
        shutil.rmtree(workdir, ignore_errors=True)
        raise PermanentJobError(f"{choice.pipeline}: {reason}") from None
    except Exception as exc:
        signature = error_signature(exc)
        if not _will_recur(exc, signature, earlier_errors):
            raise
        reason = _without_paths(
            f"the {choice.pipeline} pipeline failed on this capture and would fail the same "
            f"way again ({signature})",
            workdir,
        )
        _record_failure(archive, object_id, row["head_version"], choice.pipeline, reason, {})
        shutil.rmtree(workdir, ignore_errors=True)
        raise PermanentJobError(f"{choice.pipeline}: {reason}") from None
    finally:
        stage_listener.reset(token)
    sources = sorted(PAYLOAD + p.relative_to(capture).as_posix() for p in choice.sources)
    shutil.rmtree(capture)  # the originals (with their EXIF) are not needed any more
    return {
        "pipeline": choice.pipeline,
        "report": _without_paths(report.as_dict(), workdir),
        "sources": sources,
    }


def _without_paths(value: Any, workdir: Path) -> Any:
    """`value` (text or a JSON-ready document) with the staging folder's paths made relative:
    error messages from libraries name the files they read, and the staging path names the
    object."""
    text = json.dumps(value, default=str)
    for folder in (workdir / "capture", workdir / "output", workdir):
        text = text.replace(json.dumps(str(folder) + "/")[1:-1], "")
        text = text.replace(json.dumps(str(folder))[1:-1], ".")
    return json.loads(text)


def _unplannable(_inputs: Path) -> VersionPlan:
    raise ArkhivError("the interrupted reconstruction's plan is unreadable; remove it from staging")


def _plan(
    archive: Archive, object_id: str, finished: Mapping[str, Any], workdir: Path
) -> VersionPlan:
    """The next version, planned under the object's lease from its head as it is now (a
    metadata edit may have landed while the pipeline ran)."""
    from arkhiv.jobs.ingest import shared_identifier

    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
        head = catalog_objects.version_state(conn, object_id, row["head_version"])
    pipeline, report, sources = finished["pipeline"], finished["report"], finished["sources"]
    output = workdir / "output"
    algorithms = archive.settings.preservation.digest_algorithms
    identifier = shared_identifier()
    new_files: list[NewFile] = []
    for name in report["outputs"]:  # only what the pipeline lists: never its working folder
        produced = output / name
        for path in sorted(produced.rglob("*")) if produced.is_dir() else [produced]:
            if not path.is_file():
                continue
            found = identifier.identify(path)
            new_files.append(
                NewFile(
                    f"{MODEL_FOLDER}/{path.relative_to(output).as_posix()}",
                    path,
                    digest_file(path, algorithms),
                    Format(
                        found.puid,
                        found.mime_type,
                        found.format_name,
                        found.format_version,
                        found.basis,
                    ),
                )
            )
    report_file = workdir / REPORT_NAME
    report_file.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    report_path = f"{MODEL_FOLDER}/{REPORT_NAME}"
    new_files.append(
        NewFile(
            report_path,
            report_file,
            digest_file(report_file, algorithms),
            metadata_format(report_path),
        )
    )
    models = [f.logical_path for f in new_files if f.logical_path.endswith((".glb", ".ply"))]
    created = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    software = {k: v for k, v in report["software"].items() if k != "python"}
    main = MAIN_SOFTWARE[pipeline] if MAIN_SOFTWARE[pipeline] in software else min(software)
    faces = next(
        (s["figures"].get("faces") for s in reversed(report["stages"]) if s["name"] == "write"),
        None,
    )
    event = PendingEvent(
        event_id,
        EventType.CREATION,
        created,
        "success",
        f"3D model made from the {pipeline} capture ({len(sources)} file(s)) in "
        f"{report['seconds']:.0f} s: {faces} faces",
        {
            "pipeline": pipeline,
            "seconds": report["seconds"],
            "faces": faces,
            "linked_files": {"sources": sources, "outcomes": [f.logical_path for f in new_files]},
        },
        [[name, version] for name, version in sorted(software.items())],
    )
    record = dict(row["description"] or {})
    derivations = [
        item
        for item in record.get(DERIVATIONS, [])
        if not item["derivative"].startswith(MODEL_FOLDER + "/")
    ]
    for model in models:
        derivations.append(
            {
                "derivative": model,
                "sources": sources,
                "kind": "reconstruction",
                "software": [main, software[main]],
                "parameters": {"pipeline": pipeline, **report["parameters"]},
                "event": event_id,
            }
        )
    record[DERIVATIONS] = derivations
    user_type, user = user_for(None)
    return VersionPlan(
        object_id=object_id,
        number=row["head_version"] + 1,
        created=created,
        message=f"Reconstruction: 3D model from the {pipeline} capture",
        user_type=user_type,
        user=user,
        record=record,
        carried={
            path: entry["sha512"]
            for path, entry in head.items()
            if path not in GENERATED and not path.startswith(MODEL_FOLDER + "/")
        },
        new_files=new_files,
        events=[event],
    )


# Errors raised by these libraries depend on the data they were given: the same capture makes
# them again (OpenCV's allocation error on an absurd stereo pair, COLMAP, a singular matrix).
DATA_BOUND_LIBRARIES = frozenset(
    {"cv2", "pycolmap", "open3d", "numpy", "scipy", "trimesh", "fast_simplification", "laspy",
     "pye57", "pyproj", "PIL", "skimage", "manifold3d", "DracoPy", "pxr"}
)  # fmt: skip


def _will_recur(exc: Exception, signature: str, earlier_errors: Sequence[str]) -> bool:
    """Whether retrying the pipeline on the same capture is pointless: a numerical or library
    error on this data, or any other error an earlier attempt ended with too. Disk, memory,
    store and catalog errors (and a lost lease) are not: they pass, and are retried."""
    if isinstance(exc, OSError | ArkhivError | MemoryError | TimeoutError):
        return False
    if signature in earlier_errors:
        return True
    if type(exc).__module__.split(".")[0] in DATA_BOUND_LIBRARIES:
        return True
    return isinstance(exc, ArithmeticError | ValueError | LookupError | TypeError)


def _record_failure(
    archive: Archive,
    object_id: str,
    version: int,
    pipeline: str | None,
    reason: str,
    report: dict[str, Any],
) -> None:
    """A failed creation event, in the catalog and every store's journal (so a rebuilt catalog
    keeps it): the object's history shows the attempt and why it could not work. No version is
    written."""
    stages = [
        {"name": s["name"], "seconds": s["seconds"], "figures": s["figures"]}
        for s in report.get("stages", [])
    ]
    event = PendingEvent(
        str(uuid.uuid4()),
        EventType.CREATION,
        datetime.now(UTC),
        "failure",
        f"no 3D model could be made{f' from the {pipeline} capture' if pipeline else ''}: {reason}",
        {"pipeline": pipeline, "reason": reason, "stages": stages},
    )
    record_outside_version(archive, event, object_id, version)
