"""An object's model in the format someone asks for.

Conversions are made on demand from the preserved glTF master and kept in a cache
(`HOME/cache/exports/<object>/v<version>/`), not archived: every format is reproducible from the
master by the pinned converters, so storing a dozen copies of each model three times over would
buy nothing a preservation officer needs. A new version of the object gets new exports; the
cache can be deleted at any time.

An object made from a point cloud also keeps the cloud (`points.ply`, in the model's local frame):
the point-cloud formats (XYZ, LAS/LAZ, E57) are made from it, the mesh formats from the mesh.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from arkhiv.access.files import NotFound, prepare_download
from arkhiv.access.viewers import Viewer
from arkhiv.archive import Archive
from arkhiv.catalog import objects as catalog_objects
from arkhiv.catalog.database import reading
from arkhiv.errors import ArkhivError
from arkhiv.policies.access import Permission

MASTER = "derivatives/model/model.glb"
CLOUD_MASTER = "derivatives/model/points.ply"


def master_of(fmt) -> str:
    """The archived file an export format is made from: the mesh wherever the format holds
    meshes, the kept cloud for the point-cloud-only formats."""
    from arkhiv.dissemination.formats import MESH

    return MASTER if MESH in fmt.masters else CLOUD_MASTER


def available_formats(logical_paths) -> list[dict]:
    """The export formats (as plain data) an object with these head files can be had in."""
    from arkhiv.dissemination.formats import FORMATS

    paths = set(logical_paths)
    return [fmt.as_dict() for fmt in FORMATS.values() if master_of(fmt) in paths]


@dataclass
class Export:
    path: Path  # one file: the model, or a ZIP of a model with its textures
    filename: str
    media_type: str
    format: str
    cached: bool


def export_object(archive: Archive, viewer: Viewer, object_id: str, fmt: str) -> Export:
    """The object's model as `fmt`, for a viewer allowed derivatives (ExportError for a format
    that does not exist or cannot hold this model)."""
    from arkhiv.dissemination.formats import FOLDER, FORMATS, ExportError, export, zip_export

    viewer.require(Permission.DOWNLOAD_ACCESS_COPIES, "download access copies")
    chosen = FORMATS.get(fmt)
    if chosen is None:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    folder = _cache(archive, viewer, object_id) / "formats" / fmt
    stem = object_id.rsplit("/", 1)[-1]
    packed = chosen.layout == FOLDER
    name = f"{stem}-{fmt}.zip" if packed else f"{stem}{chosen.suffix}"
    media_type = "application/zip" if packed else chosen.mime
    if (folder / name).is_file():
        return Export(folder / name, name, media_type, fmt, cached=True)
    # The master goes through the same rules as any file (role, verified replica).
    with _master(archive, viewer, object_id, master_of(chosen)) as master:

        def make(work: Path) -> None:
            (work / "model").mkdir()
            made = export(master, fmt, work / "model" / (stem if packed else name))
            if packed:
                zip_export(made, work / name)
            else:
                made.output.rename(work / name)
            shutil.rmtree(work / "model", ignore_errors=True)

        _made_whole(folder, make)
    return Export(folder / name, name, media_type, fmt, cached=False)


LEVELS = ("thumb", "low", "medium", "high")
COMPRESSIONS = {"none": ".glb", "draco": ".draco.glb", "meshopt": ".meshopt.glb"}


def web_level(
    archive: Archive, viewer: Viewer, object_id: str, level: str, compression: str = "none"
) -> Export:
    """One of the model's levels of detail for web viewers (`dissemination.lod`): all levels
    and variants are made together the first time one is asked for, then cached."""
    from arkhiv.dissemination.lod import levels_of_detail

    viewer.require(Permission.DOWNLOAD_ACCESS_COPIES, "download access copies")
    if level not in LEVELS or compression not in COMPRESSIONS:
        raise ArkhivError(
            f"levels are {', '.join(LEVELS)} and compressions {', '.join(COMPRESSIONS)}"
        )
    folder = _cache(archive, viewer, object_id) / "lod"
    target = folder / f"{level}{COMPRESSIONS[compression]}"
    if target.is_file():
        return Export(target, target.name, "model/gltf-binary", f"{level}/{compression}", True)
    with _master(archive, viewer, object_id) as master:
        _made_whole(folder, lambda work: levels_of_detail(master, work))
    return Export(target, target.name, "model/gltf-binary", f"{level}/{compression}", False)


def print_replica(
    archive: Archive,
    viewer: Viewer,
    object_id: str,
    size_mm: float,
    fmt: str = "stl",
    axis: str = "longest",
    solidify_mm: float | None = None,
) -> tuple[Export, dict]:
    """A print-ready file (watertight, manifold, `size_mm` long on `axis`, on the build plate)
    and the report of what was repaired (`dissemination.printing`). NotPrintable says why a
    surface without volume (a facade) cannot be printed unless it is thickened."""
    from arkhiv.dissemination.printing import FORMATS, PrintOptions, print_ready

    viewer.require(Permission.DOWNLOAD_ACCESS_COPIES, "download access copies")
    if fmt not in FORMATS:
        raise ArkhivError(f"print formats are {', '.join(FORMATS)}")
    if not 1 <= size_mm <= 5000 or (solidify_mm is not None and not 0.2 <= solidify_mm <= 50):
        raise ArkhivError("size_mm must be 1-5000 and solidify_mm 0.2-50")
    # Whole millimetres and tenths for shells: any finer is below what a printer makes, and
    # each distinct request costs a repair and a cache entry.
    size_mm = float(round(size_mm))
    solidify_mm = round(solidify_mm, 1) if solidify_mm else None
    key = f"{size_mm:g}mm-{axis}" + (f"-shell{solidify_mm:g}" if solidify_mm else "")
    folder = _cache(archive, viewer, object_id) / "print" / key
    report_file = folder / "report.json"
    if not report_file.is_file():
        with _master(archive, viewer, object_id) as master:

            def make(work: Path) -> None:
                try:
                    report = print_ready(
                        master, work, size_mm, axis, options=PrintOptions(solidify_mm=solidify_mm)
                    )
                except ValueError as exc:
                    raise ArkhivError(str(exc)) from exc
                (work / "report.json").write_text(json.dumps(report.as_dict(), default=str))

            _made_whole(folder, make)
    report = json.loads(report_file.read_text())
    made = next(folder.glob(f"*.{fmt}"))
    media = "model/stl" if fmt == "stl" else "model/3mf"
    return Export(made, made.name, media, fmt, True), report


def _cache(archive: Archive, viewer: Viewer, object_id: str) -> Path:
    """The object's cache folder for its head version (withdrawn objects: officers only)."""
    with reading(archive.engine) as conn:
        row = catalog_objects.get_object(conn, object_id)
    withdrawn = row is not None and row["status"] == "withdrawn"
    if row is None or (withdrawn and not viewer.may(Permission.MANAGE_PRESERVATION)):
        raise NotFound(f"no object {object_id}")
    safe = object_id.replace(":", "_").replace("/", "_")
    return archive.settings.home / "cache" / "exports" / safe / f"v{row['head_version']}"


@contextmanager
def _master(
    archive: Archive, viewer: Viewer, object_id: str, logical_path: str = MASTER
) -> Iterator[Path]:
    try:
        master = prepare_download(archive, viewer, object_id, logical_path)
    except NotFound:
        if logical_path != CLOUD_MASTER:
            raise
        from arkhiv.dissemination.formats import ExportError

        raise ExportError(
            "this format holds point clouds and this object's model is a mesh (it was not "
            "made from a point cloud)"
        ) from None
    try:
        yield master.path
    finally:
        if master.temporary:
            shutil.rmtree(master.temporary, ignore_errors=True)


def _made_whole(folder: Path, make) -> None:
    """Run `make(work_folder)` and put its result at `folder` in one rename: readers see all
    of it or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".making-{folder.name}-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    try:
        make(work)
        try:
            work.rename(folder)
        except OSError:
            if not folder.is_dir():  # not "made meanwhile by another request": a real failure
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
