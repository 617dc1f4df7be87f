"""METS 1.12.1 for an archived object: a pure function of `arkhiv.aip.model.ObjectDescription`.

Layout: metsHdr; a Dublin Core dmdSec (public description only: the location is the public
cell, never anything finer); two dmdSecs referring to the CIDOC-CRM graphs written beside the
METS (JSON-LD and Turtle, grouped by GROUPID); one amdSec whose digiprovMD wraps the whole PREMIS
document; a fileSec with one fileGrp per role present (original, derivative, metadata); a
logical structMap with one div per group.
"""

from __future__ import annotations

import re

from lxml import etree

from arkhiv.aip.model import FileEntry, ObjectDescription
from arkhiv.metadata.premis import premis_document, serialize
from arkhiv.policies.location import CoarseLocation

METS_NS = "http://www.loc.gov/METS/"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
DC_NS = "http://purl.org/dc/elements/1.1/"
NSMAP = {"mets": METS_NS, "xlink": XLINK_NS, "xsi": XSI_NS, "dc": DC_NS}
METS_SCHEMA_LOCATION = "http://www.loc.gov/METS/ http://www.loc.gov/standards/mets/mets.xsd"

ROLES = ("original", "derivative", "metadata")
GROUP_LABELS = {"original": "Originals", "derivative": "Derivatives", "metadata": "Metadata"}
# The CIDOC-CRM graphs, relative to the METS file (both live in the object's metadata folder).
CRM_DOCUMENTS = (
    ("dmd-crm-jsonld", "metadata/crm.jsonld", "application/ld+json"),
    ("dmd-crm-ttl", "metadata/crm.ttl", "text/turtle"),
)
DMD_DC = "dmd-dc"
DIGIPROV_PREMIS = "digiprov-premis"
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


def _m(name: str) -> str:
    return f"{{{METS_NS}}}{name}"


def _sub(parent: etree._Element, name: str, attrib: dict[str, str] | None = None):
    return etree.SubElement(parent, _m(name), attrib or {})


def _dc(parent: etree._Element, name: str, text: str) -> None:
    etree.SubElement(parent, f"{{{DC_NS}}}{name}").text = text


def _xml_id(file_id: str) -> str:
    # METS IDs are xs:ID; a file id that is not an NCName would make the document invalid.
    if not _NCNAME.match(file_id):
        raise ValueError(f"file id {file_id!r} cannot be a METS ID (must be an XML NCName)")
    return file_id


def coverage_text(location: CoarseLocation, place_name: str | None = None) -> str:
    """The public cell as a DCMI Box (its corners, never the capture point), 4 decimals: no finer
    than the cell the model gives, whose bounds are at most that precise."""
    parts = []
    if place_name:
        parts.append(f"name={place_name}")
    parts += [
        f"northlimit={location.north:.4f}",
        f"southlimit={location.south:.4f}",
        f"eastlimit={location.east:.4f}",
        f"westlimit={location.west:.4f}",
        "units=signed decimal degrees",
    ]
    return "; ".join(parts)


def _dublin_core(parent: etree._Element, obj: ObjectDescription) -> None:
    dmd = _sub(parent, "dmdSec", {"ID": DMD_DC})
    wrap = _sub(dmd, "mdWrap", {"MDTYPE": "DC", "LABEL": "Dublin Core description"})
    data = _sub(wrap, "xmlData")
    _dc(data, "identifier", obj.id)
    _dc(data, "title", obj.title)
    _dc(data, "type", obj.object_type)
    if obj.description:
        _dc(data, "description", obj.description)
    if obj.period:
        _dc(data, "date", obj.period)
    if obj.condition:
        note = f": {obj.condition_note}" if obj.condition_note else ""
        _dc(data, "description", f"Condition: {obj.condition}{note}")
    location = obj.public_location
    if location is not None:
        _dc(data, "coverage", coverage_text(location, obj.place_name))
        named = ", ".join(filter(None, (obj.place_name, location.country)))
        if named:
            _dc(data, "coverage", named)
    if obj.license:
        _dc(data, "rights", obj.license)
    if obj.rights_holder:
        _dc(data, "rights", f"Rights holder: {obj.rights_holder}")


def _crm_references(parent: etree._Element) -> None:
    for dmd_id, href, mime in CRM_DOCUMENTS:
        dmd = _sub(parent, "dmdSec", {"ID": dmd_id, "GROUPID": "crm"})
        ref = _sub(
            dmd,
            "mdRef",
            {
                "LOCTYPE": "URL",
                "MDTYPE": "OTHER",
                "OTHERMDTYPE": "CIDOC-CRM",
                "MIMETYPE": mime,
                f"{{{XLINK_NS}}}type": "simple",
                f"{{{XLINK_NS}}}href": href,
            },
        )
        ref.set("LABEL", f"CIDOC-CRM / CRMdig graph ({mime})")


def _file(parent: etree._Element, entry: FileEntry) -> None:
    sha512 = entry.digests.get("sha512")
    if not sha512:
        raise ValueError(f"file {entry.id} has no sha512 digest")
    attrib = {"ID": _xml_id(entry.id)}
    if entry.format.mime_type:
        attrib["MIMETYPE"] = entry.format.mime_type
    attrib["SIZE"] = str(entry.size)
    if entry.created is not None:
        if entry.created.utcoffset() is None:
            raise ValueError(f"file {entry.id}: creation time without a time zone")
        attrib["CREATED"] = entry.created.isoformat()
    attrib.update(CHECKSUM=sha512, CHECKSUMTYPE="SHA-512", ADMID=DIGIPROV_PREMIS)
    element = _sub(parent, "file", attrib)
    _sub(
        element,
        "FLocat",
        {
            "LOCTYPE": "URL",
            f"{{{XLINK_NS}}}type": "simple",
            f"{{{XLINK_NS}}}href": entry.content_path,
        },
    )


def _header(parent: etree._Element, obj: ObjectDescription) -> None:
    # Dates come from the model (no clock here): created with the first version, modified with
    # the latest one.
    times = sorted(version.created for version in obj.versions)
    attrib = {}
    if times:
        attrib["CREATEDATE"] = times[0].isoformat()
        if len(times) > 1:
            attrib["LASTMODDATE"] = times[-1].isoformat()
    attrib["RECORDSTATUS"] = "NEW" if len(obj.versions) <= 1 else "REVISED"
    header = _sub(parent, "metsHdr", attrib)
    agent = _sub(header, "agent", {"ROLE": "CREATOR", "TYPE": "OTHER", "OTHERTYPE": "SOFTWARE"})
    etree.SubElement(agent, _m("name")).text = "Arkhiv"


def mets_document(obj: ObjectDescription, premis: etree._Element | None = None) -> etree._Element:
    """The METS document for `obj`, embedding `premis` (built from `obj` when not given)."""
    if not obj.files:
        # fileSec needs a fileGrp; an object without files is a caller error, not a METS.
        raise ValueError("object has no files")
    if premis is None:
        premis = premis_document(obj)
    seen: set[str] = set()
    for entry in obj.files:
        if entry.id in seen:
            raise ValueError(f"file id {entry.id} appears twice")
        seen.add(entry.id)

    root = etree.Element(_m("mets"), nsmap=NSMAP)
    root.set("OBJID", obj.id)
    root.set("LABEL", obj.title)
    root.set("TYPE", obj.object_type)
    root.set(f"{{{XSI_NS}}}schemaLocation", METS_SCHEMA_LOCATION)

    _header(root, obj)
    _dublin_core(root, obj)
    _crm_references(root)

    amd = _sub(root, "amdSec", {"ID": "amd"})
    digiprov = _sub(amd, "digiprovMD", {"ID": DIGIPROV_PREMIS})
    wrap = _sub(digiprov, "mdWrap", {"MDTYPE": "PREMIS", "MDTYPEVERSION": "3.0"})
    # A copy: the caller's PREMIS tree stays theirs (append would move it).
    _sub(wrap, "xmlData").append(etree.fromstring(etree.tostring(premis)))

    groups = {role: [entry for entry in obj.files if entry.role == role] for role in ROLES}
    unknown = [entry.id for entry in obj.files if entry.role not in ROLES]
    if unknown:
        raise ValueError(f"files with an unknown role: {unknown}")
    file_sec = _sub(root, "fileSec")
    for role, entries in groups.items():
        if entries:
            group = _sub(file_sec, "fileGrp", {"ID": f"grp-{role}", "USE": role})
            for entry in entries:
                _file(group, entry)

    struct_map = _sub(root, "structMap", {"TYPE": "logical", "LABEL": "Arkhiv object"})
    dmd_ids = " ".join([DMD_DC, *(document[0] for document in CRM_DOCUMENTS)])
    top = _sub(
        struct_map,
        "div",
        {"TYPE": obj.object_type, "LABEL": obj.title, "DMDID": dmd_ids, "ADMID": DIGIPROV_PREMIS},
    )
    for role, entries in groups.items():
        if entries:
            div = _sub(top, "div", {"TYPE": role, "LABEL": GROUP_LABELS[role]})
            for entry in entries:
                _sub(div, "fptr", {"FILEID": entry.id})
    return root


def mets_bytes(obj: ObjectDescription, premis: etree._Element | None = None) -> bytes:
    """The METS document as UTF-8 bytes with an XML declaration, pretty-printed."""
    return serialize(mets_document(obj, premis))


def read_file_locations(data: bytes) -> dict[str, tuple[str, str | None]]:
    """file id -> (content path, MIME type) from a METS document written by `mets_bytes`."""
    root = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    found = {}
    for element in root.iterfind(f".//{_m('fileSec')}//{_m('file')}"):
        location = element.find(_m("FLocat"))
        if location is None:
            continue
        found[element.get("ID")] = (
            location.get(f"{{{XLINK_NS}}}href"),
            element.get("MIMETYPE"),
        )
    return found
