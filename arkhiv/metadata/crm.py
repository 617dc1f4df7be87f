"""CIDOC-CRM 7.1.2 / CRMdig graphs of an archived object, as Turtle and compacted JSON-LD.

Pure functions of `arkhiv.aip.model.ObjectDescription`; the only files read are Arkhiv's own
JSON-LD context and SHACL shapes in `arkhiv/schemas`.

Namespaces. CRM terms use `http://www.cidoc-crm.org/cidoc-crm/`. CRMdig terms use the namespace
found in practice, `http://www.ics.forth.gr/isl/CRMdig/` (Linked Art, data in the wild), not the
`.../CRMext/CRMdig.rdfs/` base of the CRMdig 3.2.2 RDFS file; the local names are those of 3.2.2.

URI scheme. Everything about one object is minted under
`https://arkhiv.org/id/{quote(object id, safe="")}` (so `ark:/99999/a1` becomes
`https://arkhiv.org/id/ark%3A%2F99999%2Fa1`):

    /object                     E22 Human-Made Object (the monument, building, ...)
    /condition                  E3 Condition State (type from vocab condition/{status})
    /production                 E12 Production, with the period as the text of its E52
    /rights/license             E30 Right (the licence) every D9 is subject to
    /identifier, /title         E42 Identifier, E35 Title
    /place/cell                 E53 the public grid cell (WKT polygon)
    /place/region               E53 the public place name, when given
    /place/precise              E53 the precise point: RESTRICTED graph only
    /capture                    D2 Digitization Process; /capture/time-span E52,
                                /capture/device D8, /capture/app D14
    /agent/{agent id}           E21 Person (by pseudonym) or E74 Group
    /file/{file id}             D9 Data Object (one per file of the object)
    /derivation/{derivative id} D10 Software Execution (reconstruction) or D3 Formal Derivation
                                (conversion); .../time-span E52, .../parameters D1
    /software/{agent id}        D14 Software

Shared vocabulary lives under `https://arkhiv.org/vocab/`: `object-type/{type}` and
`condition/{status}` (E55), and
`country/{ISO code}` (E53). Path segments are percent-encoded with `quote(..., safe="")`.

Decisions:
- Geometry: P168 place is defined by takes the E94 Space Primitive as a literal (CRM 7.1.2's RDF
  has no E94 class; P168's range is rdfs:Literal), typed `geo:wktLiteral` (GeoSPARQL), default CRS
  (CRS84: longitude before latitude). The cell is a POLYGON of its bounds, the restricted point a
  POINT.
- Software version: D14 has rdfs:label "name version" and P3 has note "version X" (CRMdig 3.2.2
  has no version property).
- Parameters: L13 used parameters -> a D1 Digital Object (L13's range) whose P190 has symbolic
  content is the parameters as canonical JSON (sorted keys).
- Names: rdfs:label on actors, devices, software, places and files, as Linked Art does.
- Capture time: P82a/P82b as xsd:dateTime (a bare date spans that whole day, no zone); any other
  text goes to P82 at some time within as given.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import quote

import pyshacl
from pyld import jsonld
from rdflib import RDF, RDFS, XSD, Graph, Literal, Namespace, URIRef
from rdflib.namespace import SH

from arkhiv.aip.model import Agent, Derivation, ObjectDescription
from arkhiv.policies.location import CoarseLocation

CRM = Namespace("http://www.cidoc-crm.org/cidoc-crm/")
DIG = Namespace("http://www.ics.forth.gr/isl/CRMdig/")
# The base the CRMdig 3.2.2 RDFS file declares; only for checking terms against that file.
DIG_RDFS = Namespace("http://www.ics.forth.gr/isl/CRMext/CRMdig.rdfs/")
GEO = Namespace("http://www.opengis.net/ont/geosparql#")
ID_BASE = "https://arkhiv.org/id/"
VOCAB = Namespace("https://arkhiv.org/vocab/")
CONTEXT_URL = "https://arkhiv.org/ns/arkhiv-context.jsonld"
_CONTEXT_FILE = "arkhiv-context.jsonld"
_SHAPES_FILE = "crm-shapes.ttl"
PUBLIC_PLACE_SHAPE = URIRef("https://arkhiv.org/shapes/crm#PublicPlaceShape")

__all__ = [
    "CONTEXT_URL",
    "CRM",
    "DIG",
    "DIG_RDFS",
    "GEO",
    "crm_graph",
    "crm_jsonld",
    "crm_turtle",
    "document_loader",
    "jsonld_context",
    "object_base",
    "validate_shapes",
]


def _seg(value: str) -> str:
    return quote(value, safe="")


def object_base(object_id: str) -> str:
    """The URI prefix for everything minted for one object (no trailing slash)."""
    return ID_BASE + _seg(object_id)


def _num(value: float) -> str:
    # repr gives the shortest text that round-trips, never an exponent for coordinates.
    return repr(float(value))


def _cell_wkt(loc: CoarseLocation) -> str:
    w, s, e, n = (_num(v) for v in (loc.west, loc.south, loc.east, loc.north))
    return f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))"


def _wkt(text: str) -> Literal:
    return Literal(text, datatype=GEO.wktLiteral)


def _time_literals(given: str) -> list[tuple[URIRef, Literal]]:
    """P82a/P82b for an ISO 8601 date-time or date; P82 with the text otherwise."""
    text = given.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is not None and "T" in text.upper():
        stamp = Literal(moment.isoformat(), datatype=XSD.dateTime)
        return [(CRM["P82a_begin_of_the_begin"], stamp), (CRM["P82b_end_of_the_end"], stamp)]
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return [(CRM["P82_at_some_time_within"], Literal(text))]
    return [
        (CRM["P82a_begin_of_the_begin"], Literal(f"{day}T00:00:00", datatype=XSD.dateTime)),
        (CRM["P82b_end_of_the_end"], Literal(f"{day}T23:59:59", datatype=XSD.dateTime)),
    ]


def _new_graph() -> Graph:
    graph = Graph(bind_namespaces="none")
    for prefix, ns in (("crm", CRM), ("dig", DIG), ("geo", GEO), ("rdfs", RDFS), ("xsd", XSD)):
        graph.bind(prefix, ns)
    return graph


def crm_graph(obj: ObjectDescription, precise_location: tuple[float, float] | None = None) -> Graph:
    """The object as CIDOC-CRM/CRMdig. Without `precise_location` (latitude, longitude) this is
    the PUBLIC graph, with the coarse cell only; with it, the RESTRICTED graph, which adds an
    E53 with the precise POINT. Raises ValueError on references the model does not resolve."""
    g = _new_graph()
    base = object_base(obj.id)
    agents = {a.id: a for a in obj.agents}
    files = {f.id: f for f in obj.files}

    def agent(agent_id: str) -> Agent:
        if agent_id not in agents:
            raise ValueError(f"{obj.id}: unknown agent {agent_id!r}")
        return agents[agent_id]

    def file_node(file_id: str) -> URIRef:
        if file_id not in files:
            raise ValueError(f"{obj.id}: unknown file {file_id!r}")
        return URIRef(f"{base}/file/{_seg(file_id)}")

    def label(node: URIRef, text: str) -> None:
        g.add((node, RDFS.label, Literal(text)))

    def vocabulary_type(scheme: str, value: str) -> URIRef:
        node = VOCAB[f"{scheme}/{_seg(value)}"]
        g.add((node, RDF.type, CRM["E55_Type"]))
        label(node, value)
        return node

    def time_span(node: URIRef, pairs: list[tuple[URIRef, Literal]]) -> URIRef:
        g.add((node, RDF.type, CRM["E52_Time-Span"]))
        for prop, value in pairs:
            g.add((node, prop, value))
        return node

    def software(agent_id: str) -> URIRef:
        sw = agent(agent_id)
        node = URIRef(f"{base}/software/{_seg(agent_id)}")
        g.add((node, RDF.type, DIG["D14_Software"]))
        label(node, f"{sw.name} {sw.version}".strip())
        if sw.version:
            g.add((node, CRM["P3_has_note"], Literal(f"version {sw.version}")))
        return node

    # The object.
    thing = URIRef(f"{base}/object")
    g.add((thing, RDF.type, CRM["E22_Human-Made_Object"]))
    label(thing, obj.title)
    identifier = URIRef(f"{base}/identifier")
    g.add((thing, CRM["P1_is_identified_by"], identifier))
    g.add((identifier, RDF.type, CRM["E42_Identifier"]))
    g.add((identifier, CRM["P190_has_symbolic_content"], Literal(obj.id)))
    title = URIRef(f"{base}/title")
    g.add((thing, CRM["P102_has_title"], title))
    g.add((title, RDF.type, CRM["E35_Title"]))
    g.add((title, CRM["P190_has_symbolic_content"], Literal(obj.title)))
    g.add((thing, CRM["P2_has_type"], vocabulary_type("object-type", obj.object_type)))
    if obj.description:
        g.add((thing, CRM["P3_has_note"], Literal(obj.description)))
    if obj.condition:
        state = URIRef(f"{base}/condition")
        g.add((thing, CRM["P44_has_condition"], state))
        g.add((state, RDF.type, CRM["E3_Condition_State"]))
        g.add((state, CRM["P2_has_type"], vocabulary_type("condition", obj.condition)))
        if obj.condition_note:
            g.add((state, CRM["P3_has_note"], Literal(obj.condition_note)))
    if obj.period:
        production = URIRef(f"{base}/production")
        g.add((thing, CRM["P108i_was_produced_by"], production))
        g.add((production, RDF.type, CRM["E12_Production"]))
        span = time_span(
            URIRef(f"{base}/production/time-span"),
            [(CRM["P82_at_some_time_within"], Literal(obj.period))],
        )
        g.add((production, CRM["P4_has_time-span"], span))
    rights = None
    if obj.license:
        rights = URIRef(f"{base}/rights/license")
        g.add((rights, RDF.type, CRM["E30_Right"]))
        label(rights, obj.license)

    # Where: the coarse public cell, inside its region and country.
    cell: URIRef | None = None
    loc = obj.public_location
    if loc is not None:
        cell = URIRef(f"{base}/place/cell")
        g.add((cell, RDF.type, CRM["E53_Place"]))
        label(cell, f"{loc.cell_km:g} km grid cell")
        g.add((cell, CRM["P168_place_is_defined_by"], _wkt(_cell_wkt(loc))))
        g.add((thing, CRM["P55_has_current_location"], cell))
        g.add((thing, CRM["P53_has_former_or_current_location"], cell))
        country = None
        if loc.country:
            country = VOCAB[f"country/{_seg(loc.country)}"]
            g.add((country, RDF.type, CRM["E53_Place"]))
            label(country, loc.country)
            g.add((cell, CRM["P89_falls_within"], country))
        if obj.place_name:
            region = URIRef(f"{base}/place/region")
            g.add((region, RDF.type, CRM["E53_Place"]))
            label(region, obj.place_name)
            g.add((cell, CRM["P89_falls_within"], region))
            if country is not None:
                g.add((region, CRM["P89_falls_within"], country))

    if precise_location is not None:
        lat, lon = (float(v) for v in precise_location)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"{obj.id}: precise location out of range")
        precise = URIRef(f"{base}/place/precise")
        g.add((precise, RDF.type, CRM["E53_Place"]))
        g.add((precise, CRM["P168_place_is_defined_by"], _wkt(f"POINT({_num(lon)} {_num(lat)})")))
        g.add((thing, CRM["P53_has_former_or_current_location"], precise))
        if cell is not None:
            g.add((precise, CRM["P89_falls_within"], cell))

    # Every file is a D9; labels are logical paths (never the submitted name or digests).
    for entry in obj.files:
        node = file_node(entry.id)
        g.add((node, RDF.type, DIG["D9_Data_Object"]))
        label(node, entry.logical_path)
        if rights is not None:
            g.add((node, CRM["P104_is_subject_to"], rights))

    # The capture.
    cap = obj.capture
    if cap is not None:
        capture = URIRef(f"{base}/capture")
        g.add((capture, RDF.type, DIG["D2_Digitization_Process"]))
        label(capture, f"capture ({cap.mode})")
        g.add((capture, DIG["L1_digitized"], thing))
        if cap.device:
            device = URIRef(f"{base}/capture/device")
            g.add((device, RDF.type, DIG["D8_Digital_Device"]))
            label(device, cap.device)
            g.add((capture, DIG["L12_happened_on_device"], device))
        if cap.app:
            app = URIRef(f"{base}/capture/app")
            g.add((app, RDF.type, DIG["D14_Software"]))
            label(app, cap.app)
            g.add((capture, DIG["L23_used_software_or_firmware"], app))
        for actor_id in (cap.contributor, cap.organization):
            if actor_id is None:
                continue
            actor = agent(actor_id)
            node = URIRef(f"{base}/agent/{_seg(actor_id)}")
            cls = CRM["E74_Group"] if actor.type == "organization" else CRM["E21_Person"]
            g.add((node, RDF.type, cls))
            label(node, actor.name)
            g.add((capture, CRM["P14_carried_out_by"], node))
        if cap.captured_at:
            span = time_span(URIRef(f"{base}/capture/time-span"), _time_literals(cap.captured_at))
            g.add((capture, CRM["P4_has_time-span"], span))
        for entry in obj.files:
            if entry.role == "original":
                g.add((capture, DIG["L11_had_output"], file_node(entry.id)))

    # Derivatives.
    events = {e.id: e for e in obj.events}
    for derivation in obj.derivations:
        _add_derivation(g, base, derivation, events, file_node, software, time_span)
    return g


def _add_derivation(g, base, derivation: Derivation, events, file_node, software, time_span):
    node = URIRef(f"{base}/derivation/{_seg(derivation.derivative)}")
    output = file_node(derivation.derivative)
    sources = [file_node(s) for s in derivation.sources]
    if derivation.kind == "reconstruction":
        g.add((node, RDF.type, DIG["D10_Software_Execution"]))
        g.add((node, DIG["L11_had_output"], output))
        for source in sources:
            g.add((node, DIG["L2_used_as_source"], source))
    else:
        g.add((node, RDF.type, DIG["D3_Formal_Derivation"]))
        g.add((node, DIG["L22_created_derivative"], output))
        for source in sources:
            g.add((node, DIG["L21_used_as_derivation_source"], source))
    if derivation.software:
        g.add((node, DIG["L23_used_software_or_firmware"], software(derivation.software)))
    if derivation.parameters:
        params = URIRef(f"{node}/parameters")
        g.add((params, RDF.type, DIG["D1_Digital_Object"]))
        text = json.dumps(derivation.parameters, sort_keys=True, ensure_ascii=False, default=str)
        g.add((params, CRM["P190_has_symbolic_content"], Literal(text)))
        g.add((node, DIG["L13_used_parameters"], params))
    event = events.get(derivation.event) if derivation.event else None
    if event is not None:
        g.add((node, RDFS.label, Literal(event.detail or event.type_label)))
        stamp = Literal(event.date_time.isoformat(), datatype=XSD.dateTime)
        pairs = [(CRM["P82a_begin_of_the_begin"], stamp), (CRM["P82b_end_of_the_end"], stamp)]
        g.add((node, CRM["P4_has_time-span"], time_span(URIRef(f"{node}/time-span"), pairs)))


def crm_turtle(graph: Graph) -> bytes:
    return graph.serialize(format="turtle", encoding="utf-8")


@lru_cache(maxsize=1)
def _context_text() -> str:
    return resources.files("arkhiv.schemas").joinpath(_CONTEXT_FILE).read_text(encoding="utf-8")


def jsonld_context() -> dict[str, Any]:
    """Arkhiv's JSON-LD context document (a fresh copy: pyld may hold on to what it is given)."""
    return json.loads(_context_text())


def document_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyld document loader that serves Arkhiv's context from the package and refuses every
    other URL, so that JSON-LD processing never touches the network."""
    if url != CONTEXT_URL:
        raise jsonld.JsonLdError(
            f"refusing to load {url!r}: only {CONTEXT_URL} is available offline",
            "jsonld.LoadDocumentError",
            code="loading document failed",
        )
    return {"contextUrl": None, "documentUrl": url, "document": jsonld_context()}


def crm_jsonld(graph: Graph) -> dict[str, Any]:
    """The graph compacted against Arkhiv's context, referenced as `CONTEXT_URL`."""
    # Sorted lines: the same graph always gives the same document.
    lines = graph.serialize(format="nt", encoding="utf-8").decode("utf-8").splitlines()
    nquads = "\n".join(sorted(line for line in lines if line.strip())) + "\n"
    options = {"format": "application/n-quads", "documentLoader": document_loader}
    expanded = jsonld.from_rdf(nquads, options)
    return jsonld.compact(expanded, CONTEXT_URL, {"documentLoader": document_loader})


@lru_cache(maxsize=1)
def _shapes_text() -> str:
    return resources.files("arkhiv.schemas").joinpath(_SHAPES_FILE).read_text(encoding="utf-8")


def validate_shapes(graph: Graph, *, restricted: bool = False) -> list[str]:
    """SHACL problems of the graph against crm-shapes.ttl, one readable line each ([] when it
    conforms). `restricted=True` allows the precise point of a restricted graph."""
    shapes = Graph().parse(data=_shapes_text(), format="turtle")
    if restricted:
        shapes.add((PUBLIC_PLACE_SHAPE, SH.deactivated, Literal(True)))
    conforms, report, _text = pyshacl.validate(
        graph, shacl_graph=shapes, inference="none", do_owl_imports=False, allow_warnings=False
    )
    if conforms:
        return []
    names = _new_graph().namespace_manager

    def short(term: Any) -> str:
        if term is None:
            return "-"
        if isinstance(term, URIRef):
            try:
                return names.normalizeUri(term)
            except Exception:
                return f"<{term}>"
        return str(term)

    problems = []
    for result in report.subjects(RDF.type, SH.ValidationResult):
        focus = short(report.value(result, SH.focusNode))
        path = short(report.value(result, SH.resultPath))
        message = report.value(result, SH.resultMessage)
        value = report.value(result, SH.value)
        line = f"{focus}: {path}: {message}"
        # A geometry value is never quoted: the violation may be a precise point that leaked.
        if value is not None and not (
            isinstance(value, Literal) and value.datatype == GEO.wktLiteral
        ):
            line += f" (value: {short(value)})"
        problems.append(line)
    return sorted(problems)
