"""Dissemination information packages (DIPs) for researchers: a BagIt bag, zipped, with the
model in the formats asked for, the public metadata (JSON-LD, Dublin Core), a README with the
citation and the licence, a DIP METS, and SHA-256 and SHA-512 manifests.

Everything in it passes through the same rules as any download (`access.files`,
`access.exports`): originals only when asked for and allowed, pictures without metadata for
roles not trusted with locations, no location-bearing file for them at all, and no coordinate
in any metadata. A PREMIS dissemination event records who received what (catalog and every
store's journal).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lxml import etree

from arkhiv import __version__
from arkhiv.access.disclosure import object_view
from arkhiv.access.exports import export_object
from arkhiv.access.files import prepare_download
from arkhiv.access.viewers import Forbidden, Viewer, anonymous
from arkhiv.aip.events import PendingEvent, record_outside_version
from arkhiv.aip.show import object_document
from arkhiv.archive import Archive
from arkhiv.catalog import audit_log
from arkhiv.catalog.database import reading, writing
from arkhiv.errors import ArkhivError
from arkhiv.metadata.premis import license_uri
from arkhiv.metadata.premis_vocabulary import EventType
from arkhiv.policies.access import Permission

DEFAULT_FORMATS = ("glb", "obj", "ply", "stl")
METS = "http://www.loc.gov/METS/"
XLINK = "http://www.w3.org/1999/xlink"
DC = "http://purl.org/dc/elements/1.1/"


@dataclass
class DipResult:
    path: Path
    role: str = ""  # the role it was built for
    files: list[str] = field(default_factory=list)  # paths inside the bag's data/
    bytes: int = 0
    sha256: str = ""
    left_out: list[dict[str, str]] = field(default_factory=list)  # file, why
    originals: list[str] = field(default_factory=list)  # logical paths of originals put in
    located: list[str] = field(default_factory=list)  # of those, the ones as submitted

    @property
    def needs(self) -> list[str]:
        """The permissions its contents took: whoever downloads it must still hold them all
        (a partner downgraded since the package was built gets nothing of it)."""
        needed = [Permission.REQUEST_DIPS]
        if self.originals:
            needed.append(Permission.DOWNLOAD_ORIGINALS)
        if self.located:
            needed.append(Permission.PRECISE_LOCATION)
        return [str(permission) for permission in needed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "role": self.role,
            "needs": self.needs,
            "files": self.files,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "left_out": self.left_out,
            "originals": self.originals,
            "located": self.located,
        }


def build_dip(
    archive: Archive,
    viewer: Viewer,
    object_id: str,
    output: Path,
    formats: tuple[str, ...] = DEFAULT_FORMATS,
    originals: bool = False,
) -> DipResult:
    """Write the DIP of `object_id` for `viewer` to `output` (a .zip)."""
    import bagit

    viewer.require(Permission.REQUEST_DIPS, "request dissemination packages")
    formats = tuple(dict.fromkeys(formats))  # each format once
    if originals:
        viewer.require(Permission.DOWNLOAD_ORIGINALS, "receive originals")
    with reading(archive.engine) as conn:
        document = object_document(conn, object_id)
    if document is None:
        raise ArkhivError(f"no object {object_id}")
    # The metadata is the public record, whoever asks: a package travels.
    public = object_view(document, anonymous(viewer.policy))
    stem = object_id.rsplit("/", 1)[-1]
    result = DipResult(output, viewer.role)
    work = Path(tempfile.mkdtemp(prefix="dip-", dir=archive.staging_dir))
    try:
        payload = work / f"{stem}-dip"
        payload.mkdir()
        for fmt in formats:
            made = export_object(archive, viewer, object_id, fmt)
            target = payload / "model" / fmt
            target.mkdir(parents=True)
            if made.media_type == "application/zip":
                with zipfile.ZipFile(made.path) as bundle:
                    _extract_safely(bundle, target)
            else:
                shutil.copyfile(made.path, target / made.filename)
        if originals:
            _add_originals(archive, viewer, object_id, document, payload / "originals", result)
        metadata = payload / "metadata"
        metadata.mkdir()
        record = public["description"]
        (metadata / "description.json").write_text(
            json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        )
        (metadata / "object.jsonld").write_text(
            json.dumps(_json_ld(archive, public), indent=2, ensure_ascii=False) + "\n"
        )
        (metadata / "dublin-core.xml").write_bytes(_dublin_core(archive, public))
        (payload / "README.md").write_text(_readme(archive, public, formats, originals))
        files = sorted(p.relative_to(payload).as_posix() for p in payload.rglob("*") if p.is_file())
        (metadata / "mets.xml").write_bytes(_mets(archive, public, payload, files))
        bag = bagit.make_bag(
            str(payload),
            {
                "Source-Organization": archive.settings.server.name,
                "Contact-Email": archive.settings.server.admin_email,
                "External-Identifier": object_id,
                "External-Description": f"Dissemination package of {public['title']}",
                "Bagging-Date": datetime.now(UTC).date().isoformat(),
                "Bag-Software-Agent": f"Arkhiv {__version__}",
            },
            processes=2,
            checksums=["sha256", "sha512"],
        )
        bag.validate()  # every checksum, not only sizes
        result.files = sorted(
            p.relative_to(payload / "data").as_posix()
            for p in (payload / "data").rglob("*")
            if p.is_file()
        )
        partial = output.with_name(output.name + ".partial")
        # Its recipient's alone (originals, names): not readable by other users of the machine.
        partial.touch(mode=0o600)
        partial.chmod(0o600)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
            for path in sorted(payload.rglob("*")):
                if path.is_file():
                    bundle.write(path, path.relative_to(work).as_posix())
        partial.replace(output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        output.with_name(output.name + ".partial").unlink(missing_ok=True)
    result.bytes = output.stat().st_size
    digest = hashlib.sha256()
    with output.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    result.sha256 = digest.hexdigest()
    _record(archive, viewer, object_id, document["head_version"], formats, result)
    return result


def check_recipient(viewer: Viewer, request: dict[str, Any], built: dict[str, Any]) -> None:
    """Raise Forbidden unless `viewer` may have the package a `dip.prepare` job built (`request`
    is the job's payload, `built` its result): only its recipient, and only while their role
    still holds every permission its contents took (`DipResult.needs`): a package built for a
    partner holds originals and their locations, which a partner downgraded since may no longer
    have. A package made before its needs were recorded is treated as holding located originals
    if it was asked with originals."""
    if request.get("recipient") != viewer.name:
        raise Forbidden("a dissemination package is downloaded only by whoever asked for it")
    needs = _needs_of(request, built)
    built_for = built.get("role") or request.get("role") or "another"
    for permission in needs:
        if not viewer.may(Permission(permission)):
            raise Forbidden(
                f"this package was built for the {built_for} role and holds what needs "
                f"{permission}, which the {viewer.role} role does not have: ask for a new one"
            )


def release_dip(
    archive: Archive, viewer: Viewer, job_id: int, request: dict[str, Any], built: dict[str, Any]
) -> None:
    """`check_recipient`, then the audit entry: a package with originals as submitted is a
    disclosure of precise locations, and each download of one is written to the audit log."""
    check_recipient(viewer, request, built)
    located = built.get("located")
    if located or (located is None and Permission.PRECISE_LOCATION in _needs_of(request, built)):
        with writing(archive.engine) as conn:
            audit_log.append(
                conn,
                viewer.name,
                "precise-location.dip-served",
                request.get("object", ""),
                {"role": viewer.role, "job": job_id, "files": located or "unknown"},
            )


def _needs_of(request: dict[str, Any], built: dict[str, Any]) -> list[str]:
    needs = built.get("needs")
    if needs is None:  # made before needs were recorded: assume the most it could hold
        needs = [Permission.REQUEST_DIPS]
        if request.get("originals"):
            needs += [Permission.DOWNLOAD_ORIGINALS, Permission.PRECISE_LOCATION]
    return [str(permission) for permission in needs]


def _add_originals(archive, viewer, object_id, document, folder: Path, result: DipResult) -> None:
    for entry in document["files"]:
        if entry["role"] != "original":
            continue
        logical = entry["logical_path"]
        try:
            download = prepare_download(archive, viewer, object_id, logical)
        except Forbidden as refused:
            result.left_out.append({"file": logical, "why": str(refused)})
            continue
        try:
            target = folder / Path(logical).relative_to("package").parent / download.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(download.path, target)
            result.originals.append(logical)
            # Whatever goes in as submitted may carry a location ingest could not read (a
            # survey in projected coordinates without a CRS): only cleaned copies are free.
            if not download.cleaned:
                result.located.append(logical)
        finally:
            if download.temporary:
                shutil.rmtree(download.temporary, ignore_errors=True)


def _extract_safely(bundle: zipfile.ZipFile, target: Path) -> None:
    """The export's ZIP (made by Arkhiv) unpacked without its top folder."""
    for info in bundle.infolist():
        if info.is_dir():
            continue
        parts = Path(info.filename).parts[1:]
        if not parts or any(part in ("..", "") for part in parts):
            continue
        destination = target.joinpath(*parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with bundle.open(info) as source, destination.open("wb") as sink:
            shutil.copyfileobj(source, sink)


def _citation(archive: Archive, public: dict) -> str:
    record = public["description"]
    who = record.get("rights_holder") or record.get("contributor") or archive.settings.server.name
    year = (public.get("updated_at") or "")[:4]
    link = archive.settings.identifiers.resolver + public["id"]
    title = record.get("title") or public["title"]
    return f"{who} ({year}). {title}. 3D model. {archive.settings.server.name}. {link}"


def _readme(archive: Archive, public: dict, formats, originals: bool) -> str:
    from arkhiv.dissemination.formats import FORMATS

    record = public["description"]
    licence = record.get("license") or "not stated"
    uri = license_uri(record["license"]) if record.get("license") else None
    lines = [
        f"# {record.get('title') or public['title']}",
        "",
        f"Dissemination package from {archive.settings.server.name}, version "
        f"{public['head_version']} of {public['id']}, made "
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}.",
        "",
        "## Cite as",
        "",
        _citation(archive, public),
        "",
        "## Licence",
        "",
        f"{licence}"
        + (f" ({uri})" if uri else "")
        + (f". Rights holder: {record['rights_holder']}." if record.get("rights_holder") else "."),
        "",
        "## Contents",
        "",
    ]
    for fmt in formats:
        chosen = FORMATS[fmt]
        lines.append(
            f"- `data/model/{fmt}/`: {chosen.title}. Carries {', '.join(chosen.carries)}; "
            f"loses {', '.join(chosen.loses) or 'nothing'}."
        )
    if originals:
        lines.append("- `data/originals/`: the capture as submitted, as your role may have it.")
    lines += [
        "- `data/metadata/`: the public description (JSON and JSON-LD), Dublin Core, this "
        "package's METS.",
        "",
        "Models are in a local frame: their coordinates do not say where the object stands. "
        "The location given is a grid cell or a place name, never the site's coordinates.",
        "",
        "The bag's manifests (SHA-256, SHA-512) let you check that nothing changed on the way.",
        "",
    ]
    return "\n".join(lines)


def _json_ld(archive: Archive, public: dict) -> dict[str, Any]:
    record = public["description"]
    place = ", ".join(filter(None, (record.get("place_name"), record.get("country"))))
    document = {
        "@context": "https://schema.org/",
        "@type": "3DModel",
        "@id": archive.settings.identifiers.resolver + public["id"],
        "identifier": public["id"],
        "name": record.get("title") or public["title"],
        "description": record.get("description"),
        "about": {"@type": "Thing", "additionalType": record.get("object_type")},
        "temporalCoverage": record.get("period"),
        "contentLocation": {"@type": "Place", "name": place} if place else None,
        "creator": record.get("contributor"),
        "copyrightHolder": record.get("rights_holder"),
        "license": license_uri(record["license"]) if record.get("license") else None,
        "publisher": archive.settings.server.name,
        "dateModified": public.get("updated_at"),
    }
    return {key: value for key, value in document.items() if value}


def _dublin_core(archive: Archive, public: dict) -> bytes:
    from arkhiv.access.oai import Repository, _dublin_core

    repository = Repository(
        archive.settings.server.name,
        "",
        archive.settings.server.admin_email,
        archive.settings.identifiers.resolver,
        archive.settings.identifiers.resolver + "{ark}",
    )
    row = {"id": public["id"], "title": public["title"]}
    element = _dublin_core(repository, row, public["description"])
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _mets(archive: Archive, public: dict, payload: Path, files: list[str]) -> bytes:
    """The package's own METS: a Dublin Core description, every file with its SHA-256, and a
    structure of model formats, originals and metadata."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = etree.Element(
        f"{{{METS}}}mets",
        nsmap={"mets": METS, "xlink": XLINK, "dc": DC},
        OBJID=public["id"],
        TYPE="DIP",
        LABEL=public["title"],
    )
    header = etree.SubElement(root, f"{{{METS}}}metsHdr", CREATEDATE=now)
    agent = etree.SubElement(header, f"{{{METS}}}agent", ROLE="CREATOR", TYPE="ORGANIZATION")
    etree.SubElement(agent, f"{{{METS}}}name").text = archive.settings.server.name
    dmd = etree.SubElement(root, f"{{{METS}}}dmdSec", ID="dmd-dc")
    wrap = etree.SubElement(dmd, f"{{{METS}}}mdWrap", MDTYPE="DC")
    xml_data = etree.SubElement(wrap, f"{{{METS}}}xmlData")
    xml_data.append(etree.fromstring(_dublin_core(archive, public)))
    file_sec = etree.SubElement(root, f"{{{METS}}}fileSec")
    groups: dict[str, etree._Element] = {}
    struct_map = etree.SubElement(root, f"{{{METS}}}structMap", TYPE="physical")
    top = etree.SubElement(struct_map, f"{{{METS}}}div", TYPE="DIP", DMDID="dmd-dc")
    for number, relative in enumerate(files, start=1):
        use = relative.split("/", 1)[0] if "/" in relative else "documentation"
        if use not in groups:
            groups[use] = etree.SubElement(file_sec, f"{{{METS}}}fileGrp", USE=use)
        path = payload / relative
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        file_id = f"file-{number:04d}"
        entry = etree.SubElement(
            groups[use],
            f"{{{METS}}}file",
            ID=file_id,
            SIZE=str(path.stat().st_size),
            CHECKSUM=digest,
            CHECKSUMTYPE="SHA-256",
        )
        etree.SubElement(
            entry,
            f"{{{METS}}}FLocat",
            LOCTYPE="URL",
            **{f"{{{XLINK}}}href": f"data/{relative}", f"{{{XLINK}}}type": "simple"},
        )
        div = etree.SubElement(top, f"{{{METS}}}div", TYPE=use, LABEL=relative)
        etree.SubElement(div, f"{{{METS}}}fptr", FILEID=file_id)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _record(archive, viewer: Viewer, object_id: str, version: int, formats, result: DipResult):
    """The PREMIS dissemination event: who received what."""
    event = PendingEvent(
        str(uuid.uuid4()),
        EventType.DISSEMINATION,
        datetime.now(UTC),
        "success",
        f"dissemination package for {viewer.name} ({viewer.role}): formats "
        f"{', '.join(formats)}, {len(result.files)} files, {result.bytes} bytes",
        {
            "recipient": viewer.name,
            "role": viewer.role,
            "formats": list(formats),
            "files": result.files,
            "left_out": result.left_out,
            "located": result.located,
            "sha256": result.sha256,
        },
    )
    record_outside_version(archive, event, object_id, version)
