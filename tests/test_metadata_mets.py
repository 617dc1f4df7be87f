"""METS 1.12.1 with PREMIS embedded: schema-valid, every file once with its sha512 and MIME type,
Dublin Core with the public cell only, CRM references, and readable errors when broken."""

from __future__ import annotations

import dataclasses
import re

import pytest
from lxml import etree

from arkhiv.metadata.mets import DC_NS, METS_NS, XLINK_NS, mets_bytes, mets_document
from arkhiv.metadata.premis import PREMIS_NS, premis_document
from arkhiv.metadata.xml_validation import load_schema, validate
from tests.aip_samples import sample_object

NS = {"m": METS_NS, "dc": DC_NS, "p": PREMIS_NS, "xlink": XLINK_NS}
HREF = f"{{{XLINK_NS}}}href"


@pytest.fixture(scope="module")
def mets_schema(corpora):
    return load_schema(corpora / "xml-schemas" / "mets-premis-driver.xsd")


def test_sample_with_embedded_premis_validates(mets_schema):
    assert validate(mets_document(sample_object()), mets_schema) == []
    assert validate(mets_bytes(sample_object()), mets_schema) == []


def test_schema_is_cached(corpora):
    path = corpora / "xml-schemas" / "mets-premis-driver.xsd"
    assert load_schema(path) is load_schema(path)


def test_every_file_once_with_sha512_mime_and_location():
    obj = sample_object()
    doc = mets_document(obj)
    files = doc.findall(".//m:fileSec//m:file", NS)
    assert sorted(f.get("ID") for f in files) == sorted(e.id for e in obj.files)
    by_id = {f.get("ID"): f for f in files}
    for entry in obj.files:
        element = by_id[entry.id]
        assert element.get("CHECKSUM") == entry.digests["sha512"]
        assert element.get("CHECKSUMTYPE") == "SHA-512"
        assert element.get("MIMETYPE") == entry.format.mime_type
        assert element.get("SIZE") == str(entry.size)
        assert element.get("ADMID") == "digiprov-premis"
        (flocat,) = element.findall("m:FLocat", NS)
        assert (flocat.get("LOCTYPE"), flocat.get(HREF)) == ("URL", entry.content_path)
        assert element.getparent().get("USE") == entry.role
    assert doc.find(".//m:digiprovMD[@ID='digiprov-premis']", NS) is not None


def test_struct_map_separates_groups():
    obj = sample_object()
    extra = dataclasses.replace(
        obj.files[0], id="file-0200", role="metadata", content_path="v2/content/metadata/x.json"
    )
    doc = mets_document(dataclasses.replace(obj, files=(*obj.files, extra)))
    (top,) = doc.findall("m:structMap[@TYPE='logical']/m:div", NS)
    groups = {div.get("TYPE"): div.xpath("m:fptr/@FILEID", namespaces=NS) for div in top}
    assert groups == {
        "original": ["file-0001", "file-0002", "file-0003"],
        "derivative": ["file-0100"],
        "metadata": ["file-0200"],
    }
    uses = doc.xpath("//m:fileGrp/@USE", namespaces=NS)
    assert uses == ["original", "derivative", "metadata"]


def test_premis_is_embedded_with_the_derivation():
    doc = mets_document(sample_object())
    (wrap,) = doc.findall(".//m:digiprovMD/m:mdWrap", NS)
    assert wrap.get("MDTYPE") == "PREMIS"
    subtypes = wrap.xpath(".//p:relationshipSubType/@valueURI", namespaces=NS)
    assert "http://id.loc.gov/vocabulary/preservation/relationshipSubType/hss" in subtypes


def test_given_premis_is_used_and_left_intact():
    premis = premis_document(sample_object(), preservation_level="full")
    doc = mets_document(sample_object(), premis)
    assert doc.xpath("string(//p:preservationLevelValue)", namespaces=NS) == "full"
    assert premis.getparent() is None  # copied, not moved out of the caller's hands


def test_dublin_core_and_crm_references():
    obj = sample_object()
    doc = mets_document(obj)
    data = doc.find("m:dmdSec[@ID='dmd-dc']/m:mdWrap[@MDTYPE='DC']/m:xmlData", NS)
    assert data.findtext("dc:title", namespaces=NS) == obj.title
    assert data.findtext("dc:type", namespaces=NS) == "building"
    assert data.findtext("dc:date", namespaces=NS) == "late 18th century"
    assert data.findtext("dc:description", namespaces=NS) == obj.description
    assert "CC-BY-4.0" in data.xpath("dc:rights/text()", namespaces=NS)
    refs = doc.findall("m:dmdSec/m:mdRef", NS)
    assert {r.get(HREF) for r in refs} == {"metadata/crm.jsonld", "metadata/crm.ttl"}
    for ref in refs:
        assert (ref.get("MDTYPE"), ref.get("OTHERMDTYPE")) == ("OTHER", "CIDOC-CRM")


def test_coverage_is_the_public_cell_only():
    obj = sample_object()
    cell = obj.public_location
    data = mets_bytes(obj).decode()
    coverage = etree.fromstring(mets_bytes(obj)).xpath("//dc:coverage/text()", namespaces=NS)
    assert coverage[0] == (
        "name=Zhytomyr Oblast; northlimit=50.3615; southlimit=50.1369; eastlimit=28.9729; "
        "westlimit=28.6271; units=signed decimal degrees"
    )
    # Nothing anywhere looks like a coordinate except the cell's own bounds.
    allowed = {f"{v:.4f}" for v in (cell.north, cell.south, cell.east, cell.west)}
    decimals = set(re.findall(r"(?<![\w.])-?\d{1,3}\.\d{3,}(?![\w.])", data))
    assert decimals == allowed
    # Not even the cell centre, which would read as a point.
    assert f"{cell.latitude}" not in data and "50.2488" not in data


def test_coverage_never_finer_than_the_model():
    obj = sample_object()
    fine = dataclasses.replace(obj.public_location, north=50.361512345678)
    data = mets_bytes(dataclasses.replace(obj, public_location=fine)).decode()
    assert "50.3615" in data and "50.36151" not in data


def test_no_location_no_coverage(mets_schema):
    doc = mets_document(dataclasses.replace(sample_object(), public_location=None))
    assert doc.find(".//dc:coverage", NS) is None
    assert validate(doc, mets_schema) == []


def test_broken_embedded_premis_is_caught(mets_schema):
    doc = mets_document(sample_object())
    event = doc.find(".//p:event", NS)
    event.remove(event.find("p:eventIdentifier", NS))
    errors = validate(doc, mets_schema)
    assert errors and all(e.startswith("line ") for e in errors)
    assert any("eventIdentifier" in e or "eventType" in e for e in errors), errors


def test_missing_required_attribute_gives_readable_error(mets_schema):
    doc = mets_document(sample_object())
    flocat = doc.find(".//m:FLocat", NS)
    del flocat.attrib["LOCTYPE"]
    errors = validate(doc, mets_schema)
    assert len(errors) == 1
    assert re.match(r"line \d+: .*LOCTYPE.*required", errors[0]), errors


def test_invalid_file_id_is_refused():
    obj = sample_object()
    bad = dataclasses.replace(obj.files[0], id="0001")
    with pytest.raises(ValueError, match="NCName"):
        mets_document(dataclasses.replace(obj, files=(bad, *obj.files[1:]), derivations=()))
