"""PREMIS 3.0 for an archived object: a pure function of `arkhiv.aip.model.ObjectDescription`.

The document holds, in the order the schema's sequence demands: one `intellectualEntity` object
for the archived object as a whole (so that events and rights about the whole object link to an
object described in the same document), one `file` object per FileEntry, the events, the agents
and the rights statements. Controlled values carry the id.loc.gov authority, authorityURI and
valueURI where the Library of Congress preservation vocabularies have a term; values without one
are written as plain text.
"""

from __future__ import annotations

import re
from datetime import datetime

from lxml import etree

from arkhiv.aip.model import Agent, Derivation, Event, FileEntry, Format, ObjectDescription

PREMIS_NS = "http://www.loc.gov/premis/v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
PREMIS_SCHEMA_LOCATION = (
    "http://www.loc.gov/premis/v3 https://www.loc.gov/standards/premis/v3/premis.xsd"
)
NSMAP = {"premis": PREMIS_NS, "xsi": XSI_NS}

LOC = "http://id.loc.gov/vocabulary/preservation/"

# Codes checked against the published id.loc.gov vocabularies (code -> authoritative label).
HASH_FUNCTIONS = {  # cryptographicHashFunctions
    "md5": ("md5", "MD5"),
    "sha1": ("sha1", "SHA-1"),
    "sha256": ("sha256", "SHA-256"),
    "sha384": ("sha384", "SHA-384"),
    "sha512": ("sha512", "SHA-512"),
    "crc32": ("crc32", "CRC32"),
    "adler32": ("adler", "Adler-32"),
}
AGENT_TYPES = {"software": "sof", "organization": "org", "person": "per", "hardware": "har"}
AGENT_ROLES = {  # eventRelatedAgentRole
    "authorizer": "aut",
    "executing program": "exe",
    "implementer": "imp",
    "validator": "val",
}
# eventOutcome: the model's "failure" is LoC's "fail".
EVENT_OUTCOMES = {
    "success": ("suc", "success"),
    "failure": ("fai", "fail"),
    "warning": ("war", "warning"),
}
RELATIONSHIP_DERIVATION = ("der", "derivation")  # relationshipType (`der` is not an event here)
# relationshipSubType under derivation: LoC has no "is derived from"; the pair is has/is source.
SUBTYPE_HAS_SOURCE = ("hss", "has Source")
SUBTYPE_IS_SOURCE_OF = ("iso", "is Source Of")
RIGHTS_BASIS = {"license": "lic", "other": "oth"}
FORMAT_REGISTRY_ROLE_SPECIFICATION = ("spe", "specification")

_CC_SPDX = re.compile(r"^CC-(BY(?:-NC)?(?:-SA|-ND)?)-(\d\.\d)$")
_SPDX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")


def _q(name: str) -> str:
    return f"{{{PREMIS_NS}}}{name}"


def _sub(parent: etree._Element, name: str, text: str | None = None, **attrib: str):
    element = etree.SubElement(parent, _q(name), attrib)
    if text is not None:
        element.text = text
    return element


def _authority(
    parent: etree._Element, name: str, vocabulary: str, code: str | None, label: str
) -> etree._Element:
    """A stringPlusAuthority element; the authority attributes only when a LoC code exists."""
    if code is None:
        return _sub(parent, name, label)
    return _sub(
        parent,
        name,
        label,
        authority=vocabulary,
        authorityURI=LOC + vocabulary,
        valueURI=f"{LOC}{vocabulary}/{code}",
    )


def _iso(moment: datetime) -> str:
    # PREMIS dates without a zone are ambiguous for ever; refuse rather than guess.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime without a time zone: {moment.isoformat()}")
    return moment.isoformat()


def object_identifier_type(identifier: str) -> str:
    return "ARK" if identifier.startswith("ark:") else "local"


def event_identifier_type(event: Event) -> str:
    return "UUID"


def license_uri(license_id: str) -> str | None:
    """The licence's canonical URI: Creative Commons' own deed for CC licences, else the SPDX
    list page for anything shaped like an SPDX identifier, else None (free text)."""
    if license_id == "CC0-1.0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    match = _CC_SPDX.match(license_id)
    if match:
        return f"https://creativecommons.org/licenses/{match[1].lower()}/{match[2]}/"
    if _SPDX_ID.match(license_id):
        return f"https://spdx.org/licenses/{license_id}.html"
    return None


def _digests_in_order(entry: FileEntry) -> list[tuple[str, str]]:
    # sha512 first: it is the archive's fixity of record; the others follow in a stable order.
    return sorted(entry.digests.items(), key=lambda item: (item[0] != "sha512", item[0]))


def _fixity(parent: etree._Element, algorithm: str, digest: str) -> None:
    fixity = _sub(parent, "fixity")
    key = algorithm.lower().replace("-", "").replace("_", "")
    code, label = HASH_FUNCTIONS.get(key, (None, algorithm))
    _authority(fixity, "messageDigestAlgorithm", "cryptographicHashFunctions", code, label)
    _sub(fixity, "messageDigest", digest)


def _format(parent: etree._Element, entry: FileEntry) -> None:
    fmt = entry.format
    element = _sub(parent, "format")
    if fmt.name or not fmt.puid:
        # formatName is required in a designation; with neither name nor PUID say "unknown".
        designation = _sub(element, "formatDesignation")
        _sub(designation, "formatName", fmt.name or "unknown")
        if fmt.version:
            _sub(designation, "formatVersion", fmt.version)
    if fmt.puid:
        registry = _sub(element, "formatRegistry")
        _sub(registry, "formatRegistryName", "PRONOM")
        _sub(registry, "formatRegistryKey", fmt.puid)
        code, label = FORMAT_REGISTRY_ROLE_SPECIFICATION
        _authority(registry, "formatRegistryRole", "formatRegistryRole", code, label)
    if fmt.basis:
        _sub(element, "formatNote", f"identification basis: {fmt.basis}")


def _relationship(
    parent: etree._Element,
    subtype: tuple[str, str],
    related: tuple[str, ...],
    event_id: str | None,
) -> None:
    relationship = _sub(parent, "relationship")
    code, label = RELATIONSHIP_DERIVATION
    _authority(relationship, "relationshipType", "relationshipType", code, label)
    _authority(relationship, "relationshipSubType", "relationshipSubType", *subtype)
    for file_id in related:
        identifier = _sub(relationship, "relatedObjectIdentifier")
        _sub(identifier, "relatedObjectIdentifierType", "local")
        _sub(identifier, "relatedObjectIdentifierValue", file_id)
    if event_id:
        identifier = _sub(relationship, "relatedEventIdentifier")
        _sub(identifier, "relatedEventIdentifierType", "UUID")
        _sub(identifier, "relatedEventIdentifierValue", event_id)


def _linking_event(parent: etree._Element, event: Event) -> None:
    link = _sub(parent, "linkingEventIdentifier")
    _sub(link, "linkingEventIdentifierType", event_identifier_type(event))
    _sub(link, "linkingEventIdentifierValue", event.id)


def _file_object(
    parent: etree._Element,
    entry: FileEntry,
    derivations: tuple[Derivation, ...],
    events: tuple[Event, ...],
    preservation_level: str | None,
) -> None:
    element = _sub(parent, "object")
    element.set(f"{{{XSI_NS}}}type", "premis:file")
    identifier = _sub(element, "objectIdentifier")
    _sub(identifier, "objectIdentifierType", "local")
    _sub(identifier, "objectIdentifierValue", entry.id)
    if preservation_level:
        level = _sub(element, "preservationLevel")
        _sub(level, "preservationLevelValue", preservation_level)
    characteristics = _sub(element, "objectCharacteristics")
    _sub(characteristics, "compositionLevel", "0")
    for algorithm, digest in _digests_in_order(entry):
        _fixity(characteristics, algorithm, digest)
    _sub(characteristics, "size", str(entry.size))
    _format(characteristics, entry)
    # The model sets original_name only when it differs from the logical path.
    _sub(element, "originalName", entry.original_name or entry.logical_path)
    for derivation in derivations:
        if derivation.derivative == entry.id:
            _relationship(element, SUBTYPE_HAS_SOURCE, derivation.sources, derivation.event)
    for derivation in derivations:
        if entry.id in derivation.sources:
            related = (derivation.derivative,)
            _relationship(element, SUBTYPE_IS_SOURCE_OF, related, derivation.event)
    for event in events:
        if entry.id in event.objects:
            _linking_event(element, event)


def _entity_object(
    parent: etree._Element, obj: ObjectDescription, rights_ids: list[str]
) -> etree._Element:
    element = _sub(parent, "object")
    element.set(f"{{{XSI_NS}}}type", "premis:intellectualEntity")
    identifier = _sub(element, "objectIdentifier")
    _sub(identifier, "objectIdentifierType", object_identifier_type(obj.id))
    _sub(identifier, "objectIdentifierValue", obj.id)
    for event in obj.events:
        if not event.objects:
            _linking_event(element, event)
    for rights_id in rights_ids:
        link = _sub(element, "linkingRightsStatementIdentifier")
        _sub(link, "linkingRightsStatementIdentifierType", "local")
        _sub(link, "linkingRightsStatementIdentifierValue", rights_id)
    return element


def _event(parent: etree._Element, obj: ObjectDescription, event: Event) -> None:
    element = _sub(parent, "event")
    identifier = _sub(element, "eventIdentifier")
    _sub(identifier, "eventIdentifierType", event_identifier_type(event))
    _sub(identifier, "eventIdentifierValue", event.id)
    event_type = _sub(element, "eventType", event.type_label, valueURI=event.type_uri)
    if event.type_uri.startswith(LOC + "eventType/"):
        event_type.set("authority", "eventType")
        event_type.set("authorityURI", LOC + "eventType")
    _sub(element, "eventDateTime", _iso(event.date_time))
    if event.detail:
        _sub(_sub(element, "eventDetailInformation"), "eventDetail", event.detail)
    outcome = _sub(element, "eventOutcomeInformation")
    code, label = EVENT_OUTCOMES[event.outcome]
    _authority(outcome, "eventOutcome", "eventOutcome", code, label)
    if event.outcome_detail:
        note = _sub(outcome, "eventOutcomeDetail")
        _sub(note, "eventOutcomeDetailNote", event.outcome_detail)
    for agent_id, role in event.agents:
        link = _sub(element, "linkingAgentIdentifier")
        _sub(link, "linkingAgentIdentifierType", "local")
        _sub(link, "linkingAgentIdentifierValue", agent_id)
        _authority(link, "linkingAgentRole", "eventRelatedAgentRole", AGENT_ROLES.get(role), role)
    # An event with no files concerns the object as a whole: link the intellectual entity.
    targets = [("local", file_id) for file_id in event.objects]
    if not targets:
        targets = [(object_identifier_type(obj.id), obj.id)]
    for kind, value in targets:
        link = _sub(element, "linkingObjectIdentifier")
        _sub(link, "linkingObjectIdentifierType", kind)
        _sub(link, "linkingObjectIdentifierValue", value)


def _agent(parent: etree._Element, obj: ObjectDescription, agent: Agent) -> None:
    element = _sub(parent, "agent")
    identifier = _sub(element, "agentIdentifier")
    _sub(identifier, "agentIdentifierType", "local")
    _sub(identifier, "agentIdentifierValue", agent.id)
    _sub(element, "agentName", agent.name)
    _authority(element, "agentType", "agentType", AGENT_TYPES.get(agent.type), agent.type)
    if agent.type == "software" and agent.version:
        _sub(element, "agentVersion", agent.version)
    if agent.note:
        _sub(element, "agentNote", agent.note)
    for event in obj.events:
        if any(agent_id == agent.id for agent_id, _role in event.agents):
            _linking_event(element, event)


def _rights_statement(parent: etree._Element, identifier_value: str, basis: str):
    statement = _sub(_sub(parent, "rights"), "rightsStatement")
    identifier = _sub(statement, "rightsStatementIdentifier")
    _sub(identifier, "rightsStatementIdentifierType", "local")
    _sub(identifier, "rightsStatementIdentifierValue", identifier_value)
    _authority(statement, "rightsBasis", "rightsBasis", RIGHTS_BASIS[basis], basis)
    return statement


def _link_whole_object(statement: etree._Element, obj: ObjectDescription) -> None:
    link = _sub(statement, "linkingObjectIdentifier")
    _sub(link, "linkingObjectIdentifierType", object_identifier_type(obj.id))
    _sub(link, "linkingObjectIdentifierValue", obj.id)


def _license_rights(parent: etree._Element, obj: ObjectDescription, rights_id: str) -> None:
    assert obj.license is not None
    statement = _rights_statement(parent, rights_id, "license")
    info = _sub(statement, "licenseInformation")
    if _SPDX_ID.match(obj.license):
        doc = _sub(info, "licenseDocumentationIdentifier")
        _sub(doc, "licenseDocumentationIdentifierType", "SPDX")
        _sub(doc, "licenseDocumentationIdentifierValue", obj.license)
        _sub(doc, "licenseDocumentationRole", "licence identifier")
    uri = license_uri(obj.license)
    if uri:
        doc = _sub(info, "licenseDocumentationIdentifier")
        _sub(doc, "licenseDocumentationIdentifierType", "URI")
        _sub(doc, "licenseDocumentationIdentifierValue", uri)
        _sub(doc, "licenseDocumentationRole", "licence text")
    _sub(info, "licenseTerms", f"Licensed under {obj.license}")
    if obj.rights_holder:
        _sub(info, "licenseNote", f"Rights holder: {obj.rights_holder}")
    _link_whole_object(statement, obj)


def _permission_rights(parent: etree._Element, obj: ObjectDescription, rights_id: str) -> None:
    assert obj.permission is not None
    statement = _rights_statement(parent, rights_id, "other")
    info = _sub(statement, "otherRightsInformation")
    _sub(info, "otherRightsBasis", "permission")
    _sub(info, "otherRightsNote", obj.permission)
    _link_whole_object(statement, obj)


def premis_document(
    obj: ObjectDescription, *, preservation_level: str | None = None
) -> etree._Element:
    """`<premis version="3.0">` describing `obj`; `preservation_level` (a policy's name) is
    written on every file object when given."""
    known = {entry.id for entry in obj.files}
    for derivation in obj.derivations:
        missing = {derivation.derivative, *derivation.sources} - known
        if missing:
            raise ValueError(f"derivation refers to unknown files: {sorted(missing)}")

    root = etree.Element(_q("premis"), nsmap=NSMAP)
    root.set("version", "3.0")
    root.set(f"{{{XSI_NS}}}schemaLocation", PREMIS_SCHEMA_LOCATION)

    rights_ids = []
    if obj.license:
        rights_ids.append(f"{obj.id}#rights-license")
    if obj.permission:
        rights_ids.append(f"{obj.id}#rights-permission")

    _entity_object(root, obj, rights_ids)
    for entry in obj.files:
        _file_object(root, entry, obj.derivations, obj.events, preservation_level)
    for event in obj.events:
        _event(root, obj, event)
    for agent in obj.agents:
        _agent(root, obj, agent)
    if obj.license:
        _license_rights(root, obj, f"{obj.id}#rights-license")
    if obj.permission:
        _permission_rights(root, obj, f"{obj.id}#rights-permission")
    return root


def serialize(element: etree._Element) -> bytes:
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True, pretty_print=True)


def premis_bytes(obj: ObjectDescription, *, preservation_level: str | None = None) -> bytes:
    """The PREMIS document as UTF-8 bytes with an XML declaration, pretty-printed."""
    return serialize(premis_document(obj, preservation_level=preservation_level))


# --- reading back (the catalog is rebuilt from the AIPs) --------------------------------------

_OUTCOME_LABELS = {label: outcome for outcome, (_code, label) in EVENT_OUTCOMES.items()}
_NS = {"premis": PREMIS_NS}


def _text_of(element: etree._Element, path: str) -> str:
    found = element.find(path, _NS)
    return (found.text or "") if found is not None else ""


def read_events(data: bytes) -> list[Event]:
    """The events of a PREMIS document written by `premis_bytes`, with their agents' ids."""
    root = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    events = []
    for element in root.iterfind("premis:event", _NS):
        event_type = element.find("premis:eventType", _NS)
        outcome = _text_of(element, "premis:eventOutcomeInformation/premis:eventOutcome")
        agents = tuple(
            (
                _text_of(link, "premis:linkingAgentIdentifierValue"),
                _text_of(link, "premis:linkingAgentRole"),
            )
            for link in element.iterfind("premis:linkingAgentIdentifier", _NS)
        )
        events.append(
            Event(
                id=_text_of(element, "premis:eventIdentifier/premis:eventIdentifierValue"),
                type_uri=event_type.get("valueURI") or event_type.text or "",
                type_label=event_type.text or "",
                date_time=datetime.fromisoformat(_text_of(element, "premis:eventDateTime")),
                outcome=_OUTCOME_LABELS.get(outcome, "warning"),
                detail=_text_of(element, "premis:eventDetailInformation/premis:eventDetail"),
                agents=agents,
                outcome_detail=_text_of(
                    element,
                    "premis:eventOutcomeInformation/premis:eventOutcomeDetail"
                    "/premis:eventOutcomeDetailNote",
                ),
            )
        )
    return events


def read_agents(data: bytes) -> dict[str, Agent]:
    root = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    agents = {}
    for element in root.iterfind("premis:agent", _NS):
        agent_id = _text_of(element, "premis:agentIdentifier/premis:agentIdentifierValue")
        agents[agent_id] = Agent(
            id=agent_id,
            type=_text_of(element, "premis:agentType"),  # type: ignore[arg-type]
            name=_text_of(element, "premis:agentName"),
            version=_text_of(element, "premis:agentVersion"),
            note=_text_of(element, "premis:agentNote"),
        )
    return agents


def read_formats(data: bytes) -> dict[str, Format]:
    """file id -> the format recorded for it."""
    root = etree.fromstring(data, etree.XMLParser(no_network=True, resolve_entities=False))
    formats = {}
    for element in root.iterfind("premis:object", _NS):
        if element.get(f"{{{XSI_NS}}}type") != "premis:file":
            continue
        file_id = _text_of(element, "premis:objectIdentifier/premis:objectIdentifierValue")
        fmt = element.find("premis:objectCharacteristics/premis:format", _NS)
        if fmt is None:
            continue
        name = _text_of(fmt, "premis:formatDesignation/premis:formatName")
        note = _text_of(fmt, "premis:formatNote")
        formats[file_id] = Format(
            puid=_text_of(fmt, "premis:formatRegistry/premis:formatRegistryKey") or None,
            mime_type=None,  # METS carries it
            name=None if name in ("", "unknown") else name,
            version=_text_of(fmt, "premis:formatDesignation/premis:formatVersion") or None,
            basis=note.removeprefix("identification basis: "),
        )
    return formats
