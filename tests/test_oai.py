"""OAI-PMH 2.0 for aggregators: every response is checked against a schema written from the
protocol's specification (the official XSD is not at hand offline), lists page with resumption
tokens, errors are the protocol's, and no coordinates are harvested."""

from __future__ import annotations

import base64
import copy
import json
import shutil

import pytest
from lxml import etree
from starlette.testclient import TestClient

from arkhiv.access.disclosure import coordinate_traces
from arkhiv.ingest.bagging import make_bag
from arkhiv.web.app import create_app
from tests.test_submit import BERLIN, CAPTURE, env, submit

__all__ = ["env"]

OAI = "{http://www.openarchives.org/OAI/2.0/}"
EDM = "{http://www.europeana.eu/schemas/edm/}"
DC = "{http://purl.org/dc/elements/1.1/}"
# The envelope as OAI-PMH 2.0 section 3.2 defines it: responseDate, request, then either
# errors or the verb's element; dates in UTC to the second; headers with identifier and
# datestamp; resumption tokens with their attributes. Record metadata is checked by the tests.
SCHEMA = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
    xmlns:oai="http://www.openarchives.org/OAI/2.0/"
    targetNamespace="http://www.openarchives.org/OAI/2.0/" elementFormDefault="qualified">
  <xs:simpleType name="utc">
    <xs:restriction base="xs:string">
      <xs:pattern value="\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}Z"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="verb">
    <xs:restriction base="xs:string">
      <xs:enumeration value="Identify"/><xs:enumeration value="ListMetadataFormats"/>
      <xs:enumeration value="ListSets"/><xs:enumeration value="GetRecord"/>
      <xs:enumeration value="ListIdentifiers"/><xs:enumeration value="ListRecords"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="errorCode">
    <xs:restriction base="xs:string">
      <xs:enumeration value="cannotDisseminateFormat"/><xs:enumeration value="idDoesNotExist"/>
      <xs:enumeration value="badArgument"/><xs:enumeration value="badVerb"/>
      <xs:enumeration value="noMetadataFormats"/><xs:enumeration value="noRecordsMatch"/>
      <xs:enumeration value="badResumptionToken"/><xs:enumeration value="noSetHierarchy"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="header">
    <xs:sequence>
      <xs:element name="identifier" type="xs:anyURI"/>
      <xs:element name="datestamp" type="oai:utc"/>
      <xs:element name="setSpec" type="xs:string" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:attribute name="status"><xs:simpleType><xs:restriction base="xs:string">
      <xs:enumeration value="deleted"/></xs:restriction></xs:simpleType></xs:attribute>
  </xs:complexType>
  <xs:complexType name="record">
    <xs:sequence>
      <xs:element name="header" type="oai:header"/>
      <xs:element name="metadata" minOccurs="0"><xs:complexType><xs:sequence>
        <xs:any namespace="##other" processContents="skip"/>
      </xs:sequence></xs:complexType></xs:element>
    </xs:sequence>
  </xs:complexType>
  <xs:complexType name="token">
    <xs:simpleContent><xs:extension base="xs:string">
      <xs:attribute name="completeListSize" type="xs:positiveInteger"/>
      <xs:attribute name="cursor" type="xs:nonNegativeInteger"/>
    </xs:extension></xs:simpleContent>
  </xs:complexType>
  <xs:element name="OAI-PMH">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="responseDate" type="oai:utc"/>
        <xs:element name="request">
          <xs:complexType><xs:simpleContent><xs:extension base="xs:anyURI">
            <xs:attribute name="verb" type="oai:verb"/>
            <xs:attribute name="identifier" type="xs:anyURI"/>
            <xs:attribute name="metadataPrefix" type="xs:string"/>
            <xs:attribute name="from" type="xs:string"/>
            <xs:attribute name="until" type="xs:string"/>
            <xs:attribute name="set" type="xs:string"/>
            <xs:attribute name="resumptionToken" type="xs:string"/>
          </xs:extension></xs:simpleContent></xs:complexType>
        </xs:element>
        <xs:choice>
          <xs:element name="error" maxOccurs="unbounded">
            <xs:complexType><xs:simpleContent><xs:extension base="xs:string">
              <xs:attribute name="code" type="oai:errorCode" use="required"/>
            </xs:extension></xs:simpleContent></xs:complexType>
          </xs:element>
          <xs:element name="Identify"><xs:complexType><xs:sequence>
            <xs:element name="repositoryName" type="xs:string"/>
            <xs:element name="baseURL" type="xs:anyURI"/>
            <xs:element name="protocolVersion" fixed="2.0" type="xs:string"/>
            <xs:element name="adminEmail" type="xs:string" maxOccurs="unbounded"/>
            <xs:element name="earliestDatestamp" type="oai:utc"/>
            <xs:element name="deletedRecord" type="xs:string"/>
            <xs:element name="granularity" type="xs:string"/>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="ListMetadataFormats"><xs:complexType><xs:sequence>
            <xs:element name="metadataFormat" maxOccurs="unbounded">
              <xs:complexType><xs:sequence>
                <xs:element name="metadataPrefix" type="xs:string"/>
                <xs:element name="schema" type="xs:anyURI"/>
                <xs:element name="metadataNamespace" type="xs:anyURI"/>
              </xs:sequence></xs:complexType>
            </xs:element>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="ListSets"><xs:complexType><xs:sequence>
            <xs:element name="set" maxOccurs="unbounded"><xs:complexType><xs:sequence>
              <xs:element name="setSpec" type="xs:string"/>
              <xs:element name="setName" type="xs:string"/>
            </xs:sequence></xs:complexType></xs:element>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="GetRecord"><xs:complexType><xs:sequence>
            <xs:element name="record" type="oai:record"/>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="ListIdentifiers"><xs:complexType><xs:sequence>
            <xs:element name="header" type="oai:header" maxOccurs="unbounded"/>
            <xs:element name="resumptionToken" type="oai:token" minOccurs="0"/>
          </xs:sequence></xs:complexType></xs:element>
          <xs:element name="ListRecords"><xs:complexType><xs:sequence>
            <xs:element name="record" type="oai:record" maxOccurs="unbounded"/>
            <xs:element name="resumptionToken" type="oai:token" minOccurs="0"/>
          </xs:sequence></xs:complexType></xs:element>
        </xs:choice>
      </xs:sequence>
    </xs:complexType>
  </xs:element>
</xs:schema>"""


@pytest.fixture(scope="module")
def schema():
    return etree.XMLSchema(etree.fromstring(SCHEMA.encode()))


@pytest.fixture
def catalogue(archive, env, corpora, tmp_path):
    """Five archived objects (the GPS-tagged Berlin photos, under different titles and types)."""
    identifiers = []
    photos = corpora / "photogrammetry" / "opensfm-berlin" / "images"
    for number in range(5):
        capture = copy.deepcopy(CAPTURE)
        capture["object"]["title"] = f"Object {number}"
        capture["object"]["type"] = "building" if number % 2 else "monument"
        folder = tmp_path / f"capture{number}"
        shutil.copytree(photos, folder)
        (folder / "notes.txt").write_text(f"visit {number}\n")  # the same photos twice is refused
        code, report = submit(
            make_bag(folder, tmp_path / f"bag{number}", capture_metadata=capture), env
        )
        assert code == 0, report
        identifiers.append(report["object_id"])
    return identifiers


def harvest(client, schema, **arguments):
    response = client.get("/oai", params=arguments)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    document = etree.fromstring(response.content)
    schema.assertValid(document)
    assert coordinate_traces(response.content, BERLIN.values()) == []
    return document


def test_records_page_with_resumption_tokens_and_carry_no_coordinates(archive, catalogue, schema):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        identify = harvest(client, schema, verb="Identify")
        assert identify.findtext(f"{OAI}Identify/{OAI}baseURL").endswith("/oai")
        formats = harvest(client, schema, verb="ListMetadataFormats")
        prefixes = [e.text for e in formats.iter(f"{OAI}metadataPrefix")]
        assert prefixes == ["oai_dc", "edm"]

        # Pages of 2 (the page size is lowered for the test).
        archive.settings.server.oai_page_size = 2
        seen, cursors, token = [], [], None
        while True:
            arguments = {"resumptionToken": token} if token else {"metadataPrefix": "edm"}
            page = harvest(client, schema, verb="ListRecords", **arguments)
            records = page.findall(f"{OAI}ListRecords/{OAI}record")
            seen += [r.findtext(f"{OAI}header/{OAI}identifier") for r in records]
            token_element = page.find(f"{OAI}ListRecords/{OAI}resumptionToken")
            if token_element is None:
                break
            assert token_element.get("completeListSize") == "5"
            cursors.append(int(token_element.get("cursor")))
            token = token_element.text
            if not token:  # the last page has an empty token
                break
        assert sorted(seen) == sorted(catalogue) and len(seen) == 5  # none twice, none lost
        assert cursors == [0, 2, 4]
        record = harvest(
            client, schema, verb="GetRecord", identifier=catalogue[0], metadataPrefix="edm"
        )
        assert record.findtext(f".//{EDM}type") == "3D"
        assert (
            record.find(f".//{EDM}rights")
            .get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource")
            .startswith("https://creativecommons.org/licenses/by/4.0")
        )
        dc = harvest(
            client, schema, verb="GetRecord", identifier=catalogue[0], metadataPrefix="oai_dc"
        )
        assert "3D" in [e.text for e in dc.iter(f"{DC}type")]
        assert "Berlin-Mitte, DE" in [e.text for e in dc.iter(f"{DC}coverage")]
        buildings = harvest(
            client, schema, verb="ListIdentifiers", metadataPrefix="oai_dc", set="type:building"
        )
        assert len(buildings.findall(f"{OAI}ListIdentifiers/{OAI}header")) == 2


FORGED = base64.urlsafe_b64encode(
    json.dumps(
        {
            "prefix": "edm",
            "from": None,
            "until": None,
            "set": None,
            "after": ["not a time", "x"],
            "cursor": 0,
        }
    ).encode()
).decode()
ERRORS = [
    ({"verb": "Launch"}, "badVerb"),
    ({}, "badVerb"),
    ({"verb": "ListRecords"}, "badArgument"),
    ({"verb": "ListRecords", "metadataPrefix": "marc"}, "cannotDisseminateFormat"),
    (
        {"verb": "GetRecord", "identifier": "ark:99999/b3nosuchthin", "metadataPrefix": "edm"},
        "idDoesNotExist",
    ),
    ({"verb": "ListRecords", "metadataPrefix": "edm", "from": "2199-01-01"}, "noRecordsMatch"),
    ({"verb": "ListRecords", "metadataPrefix": "edm", "from": "yesterday"}, "badArgument"),
    ({"verb": "Identify", "colour": "blue"}, "badArgument"),
    ({"verb": "ListSets", "resumptionToken": "x"}, "badResumptionToken"),
    # Well-formed, but its position is not a time: forged, not a server error.
    ({"verb": "ListRecords", "resumptionToken": FORGED}, "badResumptionToken"),
]


def test_protocol_errors(archive, schema):
    with TestClient(create_app(archive, embedded_worker=False)) as client:
        for arguments, code in ERRORS:
            answer = harvest(client, schema, **arguments)
            assert [e.get("code") for e in answer.iter(f"{OAI}error")] == [code], arguments
        response = client.get("/oai?verb=Identify&verb=Identify")  # repeated: refused
        document = etree.fromstring(response.content)
        schema.assertValid(document)
        assert document.find(f"{OAI}error").get("code") == "badArgument"
