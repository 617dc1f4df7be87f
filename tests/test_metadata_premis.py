"""PREMIS 3.0 from the sample object: schema-valid, with LoC vocabulary URIs, the derivation,
events linked to files or to the whole object; and readable errors for a broken document."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from lxml import etree

from arkhiv.metadata.premis import PREMIS_NS, license_uri, premis_bytes, premis_document
from arkhiv.metadata.xml_validation import load_schema, validate
from tests.aip_samples import sample_object

P = {"p": PREMIS_NS}
LOC = "http://id.loc.gov/vocabulary/preservation/"


@pytest.fixture(scope="module")
def premis_schema(corpora):
    return load_schema(corpora / "xml-schemas" / "premis.xsd")


def file_object(doc: etree._Element, file_id: str) -> etree._Element:
    (found,) = doc.xpath(
        "p:object[p:objectIdentifier/p:objectIdentifierValue=$id]", namespaces=P, id=file_id
    )
    return found


def test_sample_validates_against_premis_3(premis_schema):
    assert validate(premis_document(sample_object()), premis_schema) == []


def test_bytes_are_utf8_with_declaration_and_validate(premis_schema):
    data = premis_bytes(sample_object())
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert b"\n  <premis:object" in data  # pretty-printed
    assert validate(data, premis_schema) == []


def test_one_file_object_per_file_with_fixity_and_format():
    obj = sample_object()
    doc = premis_document(obj)
    files = doc.xpath("p:object[@xsi:type='premis:file']", namespaces={**P, "xsi": XSI})
    assert len(files) == len(obj.files)
    photo = file_object(doc, "file-0001")
    algorithms = photo.xpath(".//p:fixity/p:messageDigestAlgorithm", namespaces=P)
    assert algorithms[0].text == "SHA-512"
    assert algorithms[0].get("valueURI") == LOC + "cryptographicHashFunctions/sha512"
    by_label = {a.text: a.get("valueURI") for a in algorithms}
    assert by_label["SHA-256"] == LOC + "cryptographicHashFunctions/sha256"
    assert by_label["MD5"] == LOC + "cryptographicHashFunctions/md5"
    assert photo.xpath(".//p:fixity[1]/p:messageDigest/text()", namespaces=P) == [
        obj.files[0].digests["sha512"]
    ]
    assert photo.xpath("string(.//p:size)", namespaces=P) == str(obj.files[0].size)
    assert photo.xpath("string(.//p:formatRegistryKey)", namespaces=P) == "fmt/43"
    assert photo.xpath("string(.//p:formatVersion)", namespaces=P) == "1.01"
    assert photo.xpath("string(p:originalName)", namespaces=P) == "IMG_0001.JPG"


def test_derivation_links_derivative_and_sources():
    doc = premis_document(sample_object())
    (rel,) = file_object(doc, "file-0100").xpath("p:relationship", namespaces=P)
    rel_type = rel.find("p:relationshipType", P)
    assert (rel_type.text, rel_type.get("valueURI")) == ("derivation", LOC + "relationshipType/der")
    subtype = rel.find("p:relationshipSubType", P)
    assert subtype.get("valueURI") == LOC + "relationshipSubType/hss"
    assert rel.xpath(
        "p:relatedObjectIdentifier/p:relatedObjectIdentifierValue/text()", namespaces=P
    ) == [
        "file-0001",
        "file-0002",
        "file-0003",
    ]
    assert rel.xpath("string(.//p:relatedEventIdentifierValue)", namespaces=P).endswith("0004")
    (back,) = file_object(doc, "file-0002").xpath("p:relationship", namespaces=P)
    assert back.find("p:relationshipSubType", P).get("valueURI") == (
        LOC + "relationshipSubType/iso"
    )


def test_events_use_loc_uris_and_link_agents_and_objects():
    obj = sample_object()
    doc = premis_document(obj)
    events = doc.findall("p:event", P)
    assert len(events) == len(obj.events)
    for element, event in zip(events, obj.events, strict=True):
        event_type = element.find("p:eventType", P)
        assert event_type.get("valueURI").startswith(LOC + "eventType/")
        assert event_type.get("valueURI") == event.type_uri
        assert event_type.text == event.type_label
        stamp = element.findtext("p:eventDateTime", namespaces=P)
        assert datetime.fromisoformat(stamp).utcoffset() is not None
        outcome = element.find(".//p:eventOutcome", P)
        assert outcome.get("valueURI") == LOC + "eventOutcome/suc"
    creation = events[3]
    roles = creation.xpath("p:linkingAgentIdentifier/p:linkingAgentRole/@valueURI", namespaces=P)
    assert roles == [LOC + "eventRelatedAgentRole/exe", LOC + "eventRelatedAgentRole/imp"]
    assert creation.xpath(".//p:linkingObjectIdentifierValue/text()", namespaces=P) == ["file-0100"]
    # An event about no file in particular links the object as a whole (the entity object).
    ingest = events[0]
    assert ingest.xpath(".//p:linkingObjectIdentifierValue/text()", namespaces=P) == [obj.id]
    assert doc.xpath(
        "p:object[@xsi:type='premis:intellectualEntity']//p:objectIdentifierValue/text()",
        namespaces={**P, "xsi": XSI},
    ) == [obj.id]


def test_agents_have_loc_types_and_software_versions():
    doc = premis_document(sample_object())
    agents = {
        a.findtext(".//p:agentIdentifierValue", namespaces=P): a for a in doc.findall("p:agent", P)
    }
    assert agents["agent-clamav"].find("p:agentType", P).get("valueURI") == LOC + "agentType/sof"
    assert agents["agent-clamav"].findtext("p:agentVersion", namespaces=P) == "1.4.6"
    assert agents["agent-citizen"].find("p:agentType", P).get("valueURI") == LOC + "agentType/per"
    assert agents["agent-citizen"].find("p:agentVersion", P) is None
    assert agents["agent-org"].find("p:agentType", P).get("valueURI") == LOC + "agentType/org"


def test_license_rights_statement():
    doc = premis_document(sample_object())
    statements = doc.findall("p:rights/p:rightsStatement", P)
    licence = statements[0]
    assert licence.find("p:rightsBasis", P).get("valueURI") == LOC + "rightsBasis/lic"
    values = licence.xpath(".//p:licenseDocumentationIdentifierValue/text()", namespaces=P)
    assert values == ["CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"]
    assert "CC-BY-4.0" in licence.findtext(".//p:licenseTerms", namespaces=P)
    assert statements[1].find("p:rightsBasis", P).get("valueURI") == LOC + "rightsBasis/oth"


@pytest.mark.parametrize(
    ("spdx", "uri"),
    [
        ("CC-BY-SA-4.0", "https://creativecommons.org/licenses/by-sa/4.0/"),
        ("CC-BY-NC-ND-3.0", "https://creativecommons.org/licenses/by-nc-nd/3.0/"),
        ("CC0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
        ("MIT", "https://spdx.org/licenses/MIT.html"),
        ("all rights reserved", None),
    ],
)
def test_license_uri(spdx, uri):
    assert license_uri(spdx) == uri


def test_object_without_licence_or_format_name_still_validates(premis_schema):
    obj = sample_object()
    unnamed = dataclasses.replace(
        obj.files[0], format=dataclasses.replace(obj.files[0].format, name=None)
    )
    bare = dataclasses.replace(obj, license=None, permission=None, files=(unnamed, *obj.files[1:]))
    doc = premis_document(bare, preservation_level="full")
    assert doc.find("p:rights", P) is None
    assert validate(doc, premis_schema) == []


def test_naive_event_time_is_refused():
    obj = sample_object()
    naive = dataclasses.replace(obj.events[0], date_time=datetime(2024, 5, 18, 9, 42))
    with pytest.raises(ValueError, match="time zone"):
        premis_document(dataclasses.replace(obj, events=(naive, *obj.events[1:])))


def test_broken_document_gives_readable_errors_with_lines(premis_schema):
    doc = premis_document(sample_object())
    event = doc.find("p:event", P)
    event.remove(event.find("p:eventType", P))  # required
    errors = validate(doc, premis_schema)
    assert errors
    assert any("eventType" in e for e in errors), errors
    line = int(errors[0].split(":", 1)[0].removeprefix("line "))
    text_line = premis_bytes_of(doc).splitlines()[line - 1]
    assert b"premis:event" in text_line or b"eventDateTime" in text_line


def test_misordered_elements_are_errors(premis_schema):
    doc = premis_document(sample_object())
    characteristics = doc.find(".//p:objectCharacteristics", P)
    size = characteristics.find("p:size", P)
    characteristics.remove(size)
    characteristics.insert(0, size)  # size before compositionLevel breaks the sequence
    assert validate(doc, premis_schema) != []


def premis_bytes_of(element: etree._Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True, pretty_print=True)


XSI = "http://www.w3.org/2001/XMLSchema-instance"
