"""OAI-PMH 2.0 (https://www.openarchives.org/OAI/openarchivesprotocol.html), so that aggregators
such as Europeana harvest the catalogue: `oai_dc` (simple Dublin Core) and `edm` (Europeana
Data Model, `edm:type` 3D).

Only public metadata is served: the description record's public fields, the place name and
country, never coordinates of any precision (not even the public grid cell: aggregators
republish, and a harvested cell outlives a later change of the location policy). Records are
objects with at least one version; withdrawn ones are answered as deleted (`transient`).
Lists page by resumption tokens that carry the query and the last (datestamp, identifier)
seen, so pages stay consistent while the catalogue grows.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree
from sqlalchemy import Connection, and_, func, or_, select

from arkhiv.catalog.tables import objects
from arkhiv.metadata.premis import license_uri

OAI = "http://www.openarchives.org/OAI/2.0/"
OAI_DC = "http://www.openarchives.org/OAI/2.0/oai_dc/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
EDM = "http://www.europeana.eu/schemas/edm/"
ORE = "http://www.openarchives.org/ore/terms/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
FORMATS = {
    "oai_dc": (OAI_DC, "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"),
    "edm": (EDM, "http://www.europeana.eu/schemas/edm/EDM.xsd"),
}
VERBS = {
    "Identify": set(),
    "ListMetadataFormats": {"identifier"},
    "ListSets": {"resumptionToken"},
    "ListIdentifiers": {"metadataPrefix", "from", "until", "set", "resumptionToken"},
    "ListRecords": {"metadataPrefix", "from", "until", "set", "resumptionToken"},
    "GetRecord": {"identifier", "metadataPrefix"},
}
PUBLISHED = ("preserved", "at_risk", "damaged")
UNWRITABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML 1.0
WITHDRAWN = "withdrawn"
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)


class OaiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Repository:
    name: str
    base_url: str  # the OAI endpoint, as harvesters call it
    admin_email: str
    resolver: str  # ARK resolver, for dc:identifier
    object_url: str  # where an object's page is: "{base}/objects/{ark}"
    page_size: int = 100


def respond(
    conn: Connection,
    repository: Repository,
    arguments: Mapping[str, str],
    repeated: bool = False,
) -> bytes:
    """The OAI-PMH response document for one request (errors included, as the protocol
    wants: HTTP 200 with an <error> element). `repeated`: an argument was given twice."""
    root = etree.Element(f"{{{OAI}}}OAI-PMH", nsmap={None: OAI, "xsi": XSI})
    root.set(f"{{{XSI}}}schemaLocation", f"{OAI} http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd")
    _text(root, "responseDate", _stamp(datetime.now(UTC)))
    request = _text(root, "request", repository.base_url)
    verb = arguments.get("verb", "")
    if UNWRITABLE.search(verb):
        verb = ""  # reported as a bad verb, without echoing it
    try:
        if repeated:
            raise OaiError("badArgument", "an argument is repeated")
        _check_arguments(verb, arguments)
        for key, value in arguments.items():
            request.set(key, value)
        handler = {
            "Identify": _identify,
            "ListMetadataFormats": _list_formats,
            "ListSets": _list_sets,
            "ListIdentifiers": _list,
            "ListRecords": _list,
            "GetRecord": _get_record,
        }[verb]
        root.append(handler(conn, repository, verb, arguments))
    except OaiError as error:
        _text(root, "error", str(error)).set("code", error.code)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _check_arguments(verb: str, arguments: Mapping[str, str]) -> None:
    if any(UNWRITABLE.search(key + value) for key, value in arguments.items()):
        raise OaiError("badArgument", "an argument holds characters XML cannot carry")
    if verb not in VERBS:
        raise OaiError("badVerb", f"{verb or 'no verb'}: not an OAI-PMH verb")
    given = set(arguments) - {"verb"}
    unknown = given - VERBS[verb]
    if unknown:
        raise OaiError("badArgument", f"{verb} takes no {', '.join(sorted(unknown))}")
    if "resumptionToken" in given and given != {"resumptionToken"}:
        raise OaiError("badArgument", "resumptionToken is an exclusive argument")
    if verb == "GetRecord" and given != {"identifier", "metadataPrefix"}:
        raise OaiError("badArgument", "GetRecord needs identifier and metadataPrefix")
    if verb in ("ListIdentifiers", "ListRecords") and not (
        "metadataPrefix" in given or "resumptionToken" in given
    ):
        raise OaiError("badArgument", f"{verb} needs metadataPrefix or resumptionToken")


def _identify(conn, repository: Repository, _verb, _arguments) -> etree._Element:
    element = etree.Element(f"{{{OAI}}}Identify")
    _text(element, "repositoryName", repository.name)
    _text(element, "baseURL", repository.base_url)
    _text(element, "protocolVersion", "2.0")
    _text(element, "adminEmail", repository.admin_email)
    earliest = conn.execute(select(func.min(objects.c.updated_at))).scalar()
    _text(element, "earliestDatestamp", _stamp(earliest or EARLIEST))
    _text(element, "deletedRecord", "transient")
    _text(element, "granularity", "YYYY-MM-DDThh:mm:ssZ")
    return element


def _list_formats(conn, _repository, _verb, arguments) -> etree._Element:
    if "identifier" in arguments:
        _object(conn, arguments["identifier"])
    element = etree.Element(f"{{{OAI}}}ListMetadataFormats")
    for prefix, (namespace, schema) in FORMATS.items():
        entry = _text(element, "metadataFormat")
        _text(entry, "metadataPrefix", prefix)
        _text(entry, "schema", schema)
        _text(entry, "metadataNamespace", namespace)
    return element


def _list_sets(conn, _repository, _verb, arguments) -> etree._Element:
    if "resumptionToken" in arguments:
        raise OaiError("badResumptionToken", "sets come in one list")
    element = etree.Element(f"{{{OAI}}}ListSets")
    kinds = conn.execute(
        select(objects.c.object_type).where(objects.c.head_version > 0).distinct()
    ).scalars()
    for kind in sorted(k for k in kinds if k):
        entry = _text(element, "set")
        _text(entry, "setSpec", f"type:{kind}")
        _text(entry, "setName", f"Objects of type {kind}")
    return element


def _get_record(conn, repository, _verb, arguments) -> etree._Element:
    prefix = _prefix(arguments["metadataPrefix"])
    row = _object(conn, arguments["identifier"])
    element = etree.Element(f"{{{OAI}}}GetRecord")
    element.append(_record(repository, row, prefix))
    return element


def _list(conn, repository: Repository, verb: str, arguments) -> etree._Element:
    if "resumptionToken" in arguments:
        query = _decode(arguments["resumptionToken"])
    else:
        query = {
            "prefix": _prefix(arguments["metadataPrefix"]),
            "from": _date_argument(arguments.get("from"), "from"),
            "until": _date_argument(arguments.get("until"), "until", end=True),
            "set": arguments.get("set"),
            "after": None,
            "cursor": 0,
        }
        if query["from"] and query["until"] and query["from"] > query["until"]:
            raise OaiError("badArgument", "from is later than until")
        if len(arguments.get("from", "")) != len(arguments.get("until", "")) and (
            "from" in arguments and "until" in arguments
        ):
            raise OaiError("badArgument", "from and until must have the same granularity")
    conditions = [objects.c.head_version > 0, objects.c.status.in_((*PUBLISHED, WITHDRAWN))]
    if query["from"]:
        conditions.append(objects.c.updated_at >= _parse(query["from"]))
    if query["until"]:  # the whole second: datestamps have no fractions
        conditions.append(objects.c.updated_at < _parse(query["until"]) + timedelta(seconds=1))
    if query["set"]:
        kind = query["set"].removeprefix("type:")
        if not query["set"].startswith("type:"):
            raise OaiError("noRecordsMatch", f"no set {query['set']}")
        conditions.append(objects.c.object_type == kind)
    total = conn.execute(select(func.count()).select_from(objects).where(*conditions)).scalar()
    if query["after"]:
        stamp, identifier = datetime.fromisoformat(query["after"][0]), query["after"][1]
        conditions.append(
            or_(
                objects.c.updated_at > stamp,
                and_(objects.c.updated_at == stamp, objects.c.id > identifier),
            )
        )
    rows = conn.execute(
        select(objects)
        .where(*conditions)
        .order_by(objects.c.updated_at, objects.c.id)
        .limit(repository.page_size + 1)
    ).all()
    if not rows:
        if query["after"]:
            raise OaiError("badResumptionToken", "the list this token continues has changed")
        raise OaiError("noRecordsMatch", "no records match")
    page, more = rows[: repository.page_size], len(rows) > repository.page_size
    element = etree.Element(f"{{{OAI}}}{verb}")
    for row in page:
        row = row._mapping
        if verb == "ListIdentifiers":
            element.append(_header(row))
        else:
            element.append(_record(repository, row, query["prefix"]))
    if more or query["after"]:
        token = _text(element, "resumptionToken")
        token.set("completeListSize", str(total))
        token.set("cursor", str(query["cursor"]))
        if more:
            last = page[-1]._mapping
            token.text = _encode(
                {
                    **query,
                    # exact, not the datestamp: rows in the same second must not repeat
                    "after": [_exact(last["updated_at"]), last["id"]],
                    "cursor": query["cursor"] + len(page),
                }
            )
    return element


def _record(repository: Repository, row: Mapping[str, Any], prefix: str) -> etree._Element:
    record = etree.Element(f"{{{OAI}}}record")
    record.append(_header(row))
    if row["status"] == WITHDRAWN:
        return record
    metadata = _text(record, "metadata")
    description = row["description"] or {}
    if prefix == "oai_dc":
        metadata.append(_dublin_core(repository, row, description))
    else:
        metadata.append(_edm(repository, row, description))
    return record


def _header(row: Mapping[str, Any]) -> etree._Element:
    header = etree.Element(f"{{{OAI}}}header")
    if row["status"] == WITHDRAWN:
        header.set("status", "deleted")
    _text(header, "identifier", row["id"])
    _text(header, "datestamp", _stamp(row["updated_at"]))
    if row["object_type"]:
        _text(header, "setSpec", f"type:{row['object_type']}")
    return header


def _public_fields(description: Mapping[str, Any]) -> dict[str, Any]:
    """What the harvest carries of the record: descriptive fields only (no coordinates)."""
    place = ", ".join(filter(None, (description.get("place_name"), description.get("country"))))
    dates = "/".join(filter(None, (description.get("date_start"), description.get("date_end"))))
    return {
        "title": description.get("title"),
        "description": description.get("description"),
        "type": description.get("object_type"),
        "place": place or None,
        "period": description.get("period"),
        "dates": dates or None,
        "contributor": description.get("contributor"),
        "organization": description.get("organization"),
        "rights": license_uri(description["license"]) if description.get("license") else None,
        "rights_text": description.get("license_text") or description.get("license"),
        "language": description.get("language"),
    }


def _dublin_core(repository, row, description) -> etree._Element:
    fields = _public_fields(description)
    dc = etree.Element(f"{{{OAI_DC}}}dc", nsmap={"oai_dc": OAI_DC, "dc": DC, "xsi": XSI})
    dc.set(f"{{{XSI}}}schemaLocation", f"{OAI_DC} {FORMATS['oai_dc'][1]}")

    def add(name: str, value: str | None) -> None:
        if value:
            etree.SubElement(dc, f"{{{DC}}}{name}").text = value

    add("title", fields["title"] or row["title"])
    add("description", fields["description"])
    add("type", "3D")
    add("type", fields["type"])
    add("coverage", fields["place"])
    add("coverage", fields["period"])
    add("date", fields["dates"])
    add("contributor", fields["contributor"])
    add("publisher", fields["organization"])
    add("rights", fields["rights"] or fields["rights_text"])
    add("language", fields["language"])
    add("identifier", repository.resolver + row["id"])
    add("identifier", repository.object_url.format(ark=row["id"]))
    return dc


def _edm(repository, row, description) -> etree._Element:
    fields = _public_fields(description)
    rdf = etree.Element(
        f"{{{RDF}}}RDF",
        nsmap={"rdf": RDF, "edm": EDM, "ore": ORE, "dc": DC, "dcterms": DCTERMS},
    )
    thing = repository.resolver + row["id"]
    page = repository.object_url.format(ark=row["id"])
    cho = etree.SubElement(rdf, f"{{{EDM}}}ProvidedCHO")
    cho.set(f"{{{RDF}}}about", thing)

    def add(parent, tag: str, value: str | None, resource: bool = False) -> None:
        if not value:
            return
        element = etree.SubElement(parent, tag)
        if resource:
            element.set(f"{{{RDF}}}resource", value)
        else:
            element.text = value

    add(cho, f"{{{DC}}}title", fields["title"] or row["title"])
    add(cho, f"{{{DC}}}description", fields["description"])
    add(cho, f"{{{DC}}}type", fields["type"])
    add(cho, f"{{{DCTERMS}}}spatial", fields["place"])
    add(cho, f"{{{DCTERMS}}}temporal", fields["period"])
    add(cho, f"{{{DC}}}date", fields["dates"])
    add(cho, f"{{{DC}}}contributor", fields["contributor"])
    add(cho, f"{{{DC}}}language", fields["language"])
    add(cho, f"{{{EDM}}}type", "3D")
    aggregation = etree.SubElement(rdf, f"{{{ORE}}}Aggregation")
    aggregation.set(f"{{{RDF}}}about", page + "#aggregation")
    add(aggregation, f"{{{EDM}}}aggregatedCHO", thing, resource=True)
    add(aggregation, f"{{{EDM}}}dataProvider", fields["organization"] or repository.name)
    add(aggregation, f"{{{EDM}}}provider", repository.name)
    add(aggregation, f"{{{EDM}}}isShownAt", page, resource=True)
    add(aggregation, f"{{{EDM}}}rights", fields["rights"], resource=True)
    return rdf


def _object(conn: Connection, identifier: str) -> Mapping[str, Any]:
    row = conn.execute(
        select(objects).where(
            objects.c.id == identifier,
            objects.c.head_version > 0,
            objects.c.status.in_((*PUBLISHED, WITHDRAWN)),
        )
    ).first()
    if row is None:
        raise OaiError("idDoesNotExist", f"no record {identifier}")
    return row._mapping


def _prefix(prefix: str) -> str:
    if prefix not in FORMATS:
        raise OaiError("cannotDisseminateFormat", f"{prefix}: not one of {', '.join(FORMATS)}")
    return prefix


def _date_argument(value: str | None, name: str, end: bool = False) -> str | None:
    if value is None:
        return None
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            moment = day.replace(hour=23, minute=59, second=59) if end else day
        else:
            moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise OaiError("badArgument", f"{name}: not YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ") from None
    return _stamp(moment)


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _exact(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _stamp(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query, separators=(",", ":")).encode()).decode()


def _decode(token: str) -> dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(token.encode()))
        _prefix(query["prefix"])
        assert isinstance(query["cursor"], int) and query["cursor"] >= 0
        stamp, identifier = query["after"]
        datetime.fromisoformat(stamp)
        assert isinstance(identifier, str)
        for bound in ("from", "until"):
            if query[bound] is not None:
                _parse(query[bound])
        assert query["set"] is None or isinstance(query["set"], str)
        return query
    except (ValueError, KeyError, TypeError, AssertionError, OaiError):
        raise OaiError("badResumptionToken", "not a resumption token of this repository") from None


def _text(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{OAI}}}{name}")
    if text is not None:
        element.text = text
    return element
