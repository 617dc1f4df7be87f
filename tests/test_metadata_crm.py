"""CIDOC-CRM / CRMdig graphs: SHACL, terms defined in the ontologies, no precise location in
public output, offline JSON-LD round trip."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
from pyld import jsonld
from rdflib import RDF, RDFS, Graph, URIRef
from rdflib.compare import isomorphic

from arkhiv.aip.model import Derivation
from arkhiv.metadata.crm import (
    CONTEXT_URL,
    CRM,
    DIG,
    crm_graph,
    crm_jsonld,
    crm_turtle,
    document_loader,
    jsonld_context,
    object_base,
    validate_shapes,
)
from tests.aip_checks import crm_ontology, undefined_terms
from tests.aip_samples import sample_object

PRECISE = (50.2512, 28.6634)
PRECISE_DIGITS = ("50.2512", "28.6634")
BASE = "https://arkhiv.org/id/ark%3A%2F99999%2Fa1b2c3d4"


@pytest.fixture(scope="module")
def ontology(corpora: Path) -> tuple[frozenset[URIRef], frozenset[URIRef]]:
    return crm_ontology(corpora / "cidoc-crm")


@pytest.fixture
def public() -> Graph:
    return crm_graph(sample_object())


@pytest.fixture
def restricted() -> Graph:
    return crm_graph(sample_object(), PRECISE)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a connection, or to use pyld's default loader, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(jsonld, "_default_document_loader", refuse)


def test_sample_graph_passes_shacl(public, restricted):
    assert validate_shapes(public) == []
    assert validate_shapes(restricted, restricted=True) == []


def test_graph_models_object_capture_and_reconstruction(public):
    thing = URIRef(f"{BASE}/object")
    assert object_base("ark:/99999/a1b2c3d4") == BASE
    assert (thing, RDF.type, CRM["E22_Human-Made_Object"]) in public
    ident = public.value(thing, CRM["P1_is_identified_by"])
    assert str(public.value(ident, CRM["P190_has_symbolic_content"])) == "ark:/99999/a1b2c3d4"
    title = public.value(thing, CRM["P102_has_title"])
    assert str(public.value(title, CRM["P190_has_symbolic_content"])).startswith("Bell tower")
    assert public.value(thing, CRM["P2_has_type"]) == URIRef(
        "https://arkhiv.org/vocab/object-type/building"
    )

    capture = URIRef(f"{BASE}/capture")
    assert (capture, RDF.type, DIG["D2_Digitization_Process"]) in public
    assert (capture, DIG["L1_digitized"], thing) in public
    device = public.value(capture, DIG["L12_happened_on_device"])
    assert str(public.value(device, RDFS.label)) == "Apple iPhone 13 Pro"
    actors = {public.value(a, RDF.type) for a in public.objects(capture, CRM["P14_carried_out_by"])}
    assert actors == {CRM["E21_Person"], CRM["E74_Group"]}
    span = public.value(capture, CRM["P4_has_time-span"])
    assert str(public.value(span, CRM["P82a_begin_of_the_begin"])) == "2024-05-18T09:42:00+03:00"
    outputs = set(public.objects(capture, DIG["L11_had_output"]))
    assert outputs == {URIRef(f"{BASE}/file/file-000{n}") for n in (1, 2, 3)}

    run = URIRef(f"{BASE}/derivation/file-0100")
    assert (run, RDF.type, DIG["D10_Software_Execution"]) in public
    assert set(public.objects(run, DIG["L2_used_as_source"])) == outputs
    assert (run, DIG["L11_had_output"], URIRef(f"{BASE}/file/file-0100")) in public
    software = public.value(run, DIG["L23_used_software_or_firmware"])
    assert (software, RDF.type, DIG["D14_Software"]) in public
    assert str(public.value(software, RDFS.label)) == "COLMAP 3.11"
    params = public.value(run, DIG["L13_used_parameters"])
    recorded = json.loads(public.value(params, CRM["P190_has_symbolic_content"]))
    assert recorded == {"max_image_size": 1600, "matcher": "exhaustive"}


def test_every_crm_and_crmdig_term_is_defined_in_the_ontologies(public, restricted, ontology):
    for graph in (public, restricted):
        assert undefined_terms(graph, ontology) == (set(), set())
    used = {str(p) for p in public.predicates()} | {str(o) for o in public.objects(None, RDF.type)}
    assert any(u.startswith(str(CRM)) for u in used) and any(u.startswith(str(DIG)) for u in used)
    # The checker itself catches a term the ontologies lack and the file-only CRMdig base.
    public.add((URIRef(f"{BASE}/object"), CRM["P999_is_made_up"], URIRef(f"{BASE}/title")))
    public.add((URIRef(f"{BASE}/object"), RDF.type, DIG["D99_Not_A_Class"]))
    bad_classes, bad_props = undefined_terms(public, ontology)
    assert bad_classes == {DIG["D99_Not_A_Class"]}
    assert bad_props == {CRM["P999_is_made_up"]}


def test_public_output_never_holds_the_precise_location(public, restricted, offline):
    public_texts = [
        crm_turtle(public).decode(),
        public.serialize(format="nt"),
        json.dumps(crm_jsonld(public)),
    ]
    for text in public_texts:
        for digits in PRECISE_DIGITS:
            assert digits not in text
        assert "POINT" not in text
    restricted_turtle = crm_turtle(restricted).decode()
    restricted_json = json.dumps(crm_jsonld(restricted))
    for digits in PRECISE_DIGITS:
        assert digits in restricted_turtle and digits in restricted_json
    assert "POINT(28.6634 50.2512)" in restricted_turtle  # WKT: longitude first
    # The public graph is exactly the restricted one less the precise place.
    assert set(public) < set(restricted)
    extra = set(restricted) - set(public)
    assert {s for s, _p, _o in extra} | {o for _s, _p, o in extra} >= {
        URIRef(f"{BASE}/place/precise")
    }


def test_public_cell_polygon_and_country(public):
    cell = URIRef(f"{BASE}/place/cell")
    wkt = public.value(cell, CRM["P168_place_is_defined_by"])
    assert str(wkt).startswith("POLYGON((28.6271 50.1369, 28.9729 50.1369")
    assert str(wkt.datatype) == "http://www.opengis.net/ont/geosparql#wktLiteral"
    assert (cell, CRM["P89_falls_within"], URIRef("https://arkhiv.org/vocab/country/UA")) in public
    assert (URIRef(f"{BASE}/object"), CRM["P55_has_current_location"], cell) in public


def test_jsonld_is_compacted_offline_and_round_trips(public, restricted, offline):
    for graph in (public, restricted):
        document = crm_jsonld(graph)
        assert document["@context"] == CONTEXT_URL
        types = {node.get("type") for node in document["@graph"]}
        assert {"HumanMadeObject", "DigitizationProcess", "SoftwareExecution"} <= types
        # rdflib parses it with the context inlined (it would fetch the URL otherwise).
        inline = {**document, "@context": jsonld_context()["@context"]}
        parsed = Graph().parse(data=json.dumps(inline), format="json-ld")
        assert isomorphic(parsed, graph)
        # pyld expands it back through the package's loader.
        nquads = jsonld.to_rdf(
            document, {"format": "application/n-quads", "documentLoader": document_loader}
        )
        assert isomorphic(Graph().parse(data=nquads, format="nquads"), graph)


def test_document_loader_refuses_other_urls():
    assert document_loader(CONTEXT_URL)["document"]["@context"]["crm"] == str(CRM)
    with pytest.raises(jsonld.JsonLdError):
        document_loader("https://linked.art/ns/v1/linked-art.json")


def test_context_covers_every_term_used(public):
    # A term missing from the context would come out as a full or prefixed IRI instead.
    document = crm_jsonld(public)
    context = jsonld_context()["@context"]
    for node in document["@graph"]:
        for key in node:
            assert key in context or key.startswith("@"), key
        for name in [node["type"]] if isinstance(node["type"], str) else node["type"]:
            assert name in context, name


def test_missing_title_gives_readable_errors(public):
    thing = URIRef(f"{BASE}/object")
    public.remove((thing, CRM["P102_has_title"], None))
    problems = validate_shapes(public)
    assert len(problems) == 1
    assert "object" in problems[0] and "crm:P102_has_title" in problems[0]
    assert "exactly one title" in problems[0]


def test_shape_violations_for_capture_and_software(public):
    public.remove((URIRef(f"{BASE}/capture"), CRM["P4_has_time-span"], None))
    public.remove(
        (URIRef(f"{BASE}/derivation/file-0100"), DIG["L23_used_software_or_firmware"], None)
    )
    problems = "\n".join(validate_shapes(public))
    assert "a digitization needs exactly one time-span" in problems
    assert "a software execution needs the software it used" in problems


def test_restricted_graph_fails_public_shapes(restricted):
    problems = validate_shapes(restricted)
    assert len(problems) == 1 and "precise location leak" in problems[0]


def test_conversion_is_a_formal_derivation_and_dates_span_the_day():
    obj = sample_object()
    conversion = Derivation("file-0100", ("file-0001",), "conversion", "agent-arkhiv")
    obj = replace(
        obj,
        derivations=(conversion,),
        capture=replace(obj.capture, captured_at="2024-05-18"),
    )
    graph = crm_graph(obj)
    assert validate_shapes(graph) == []
    step = URIRef(f"{BASE}/derivation/file-0100")
    assert (step, RDF.type, DIG["D3_Formal_Derivation"]) in graph
    assert (step, DIG["L22_created_derivative"], URIRef(f"{BASE}/file/file-0100")) in graph
    span = graph.value(URIRef(f"{BASE}/capture"), CRM["P4_has_time-span"])
    assert str(graph.value(span, CRM["P82a_begin_of_the_begin"])) == "2024-05-18T00:00:00"
    assert str(graph.value(span, CRM["P82b_end_of_the_end"])) == "2024-05-18T23:59:59"


def test_unknown_references_and_bad_coordinates_are_refused():
    obj = sample_object()
    with pytest.raises(ValueError, match="unknown agent"):
        crm_graph(replace(obj, capture=replace(obj.capture, contributor="agent-nobody")))
    with pytest.raises(ValueError, match="unknown file"):
        crm_graph(replace(obj, derivations=(Derivation("file-9999", (), "conversion"),)))
    with pytest.raises(ValueError, match="out of range"):
        crm_graph(obj, (95.0, 10.0))


def test_shape_errors_never_quote_a_leaked_point():
    from tests.aip_samples import sample_object

    graph = crm_graph(sample_object(), precise_location=(50.2512, 28.6634))
    errors = validate_shapes(graph)  # validated as public: the point is a leak
    assert any("precise location leak" in error for error in errors)
    assert not any("50.2512" in error or "28.6634" in error for error in errors)
