"""Every AIP the tests write is held to independent checks when its archive is torn down:
ocfl-py validates each storage root (good objects counted, warnings included: its validate()
returns True even with bad objects), and each version's METS and PREMIS are checked against the
LoC schemas, its CIDOC-CRM graph against the SHACL shapes and the CRM 7.1.2 / CRMdig 3.2.2
definitions, and its JSON-LD against its Turtle."""

from __future__ import annotations

import json
import logging
from functools import lru_cache, partial
from pathlib import Path

import ocfl
from pyld import jsonld
from rdflib import OWL, RDF, RDFS, Graph, URIRef
from rdflib.compare import isomorphic

from arkhiv.aip.ocfl import INVENTORY, Inventory
from arkhiv.metadata.crm import CRM, DIG, DIG_RDFS, document_loader, validate_shapes
from arkhiv.metadata.xml_validation import load_schema, validate


@lru_cache(maxsize=1)
def crm_ontology(folder: Path) -> tuple[frozenset[URIRef], frozenset[URIRef]]:
    """(classes, properties) defined by CRM 7.1.2 and CRMdig 3.2.2, read in place."""
    graph = Graph()
    graph.parse(folder / "CIDOC_CRM_v7.1.2.rdf", format="xml")
    graph.parse(folder / "CRMdig_v3.2.2.rdfs", format="xml")
    classes = set(graph.subjects(RDF.type, RDFS.Class)) | set(graph.subjects(RDF.type, OWL.Class))
    properties = set(graph.subjects(RDF.type, RDF.Property))
    return frozenset(c for c in classes if isinstance(c, URIRef)), frozenset(properties)


def _in_file_namespace(term: URIRef) -> URIRef:
    # CORPUS_NOTES: the RDFS file declares CRMdig under another base than the one used in practice.
    if str(term).startswith(str(DIG)):
        return DIG_RDFS[str(term)[len(str(DIG)) :]]
    return term


def undefined_terms(graph: Graph, ontology) -> tuple[set[URIRef], set[URIRef]]:
    classes, properties = ontology
    ours = (str(CRM), str(DIG), str(DIG_RDFS))
    used_classes = {o for o in graph.objects(None, RDF.type) if str(o).startswith(ours)}
    used_props = {p for p in graph.predicates() if str(p).startswith(ours)}
    return (
        {c for c in used_classes if _in_file_namespace(c) not in classes},
        {p for p in used_props if _in_file_namespace(p) not in properties},
    )


def storage_roots(home: Path) -> list[Path]:
    return sorted(p.parent for p in (home / "stores").glob("*/ocfl/0=ocfl_1.1"))


def ocfl_problems(root: Path) -> list[str]:
    logging.getLogger().setLevel(logging.WARNING)  # ocfl-py logs the layout at INFO
    storage = ocfl.StorageRoot(root=str(root))
    storage.validate(log_warnings=True)
    problems = [f"{root}: {message}" for _path, message in storage.errors]
    if storage.good_objects != storage.num_objects:
        problems.append(f"{root}: {storage.good_objects} of {storage.num_objects} objects valid")
    if str(storage.log).strip():
        problems.append(f"{root}: {storage.log}")
    return problems


def metadata_problems(root: Path, corpora: Path | None) -> list[str]:
    problems = []
    for inventory_file in sorted(root.glob(f"*/*/*/*/{INVENTORY}")):
        inventory = Inventory.from_json(inventory_file.read_bytes())
        for number, version in sorted(inventory.versions.items()):
            where = f"{inventory.id} v{number}"
            content = partial(_content, inventory_file.parent, inventory, version.logical_files())

            if corpora is not None:
                mets = load_schema(corpora / "xml-schemas" / "mets-premis-driver.xsd")
                premis = load_schema(corpora / "xml-schemas" / "premis.xsd")
                problems += [
                    f"{where} mets.xml {e}" for e in validate(content("metadata/mets.xml"), mets)
                ]
                problems += [
                    f"{where} premis.xml {e}"
                    for e in validate(content("metadata/premis.xml"), premis)
                ]
            turtle = Graph().parse(data=content("metadata/crm.ttl"), format="turtle")
            problems += [f"{where} crm.ttl {e}" for e in validate_shapes(turtle)]
            if corpora is not None:
                classes, properties = undefined_terms(turtle, crm_ontology(corpora / "cidoc-crm"))
                if classes or properties:
                    problems.append(f"{where}: undefined CRM terms {sorted(classes | properties)}")
            # Expanded by pyld through Arkhiv's loader: the context URL is never fetched.
            nquads = jsonld.to_rdf(
                json.loads(content("metadata/crm.jsonld")),
                {"format": "application/n-quads", "documentLoader": document_loader},
            )
            jsonld_graph = Graph().parse(data=nquads, format="nquads")
            if not isomorphic(turtle, jsonld_graph):
                problems.append(f"{where}: crm.jsonld and crm.ttl are different graphs")
    return problems


def _content(object_root: Path, inventory: Inventory, files: dict, logical: str) -> bytes:
    return (object_root / inventory.content_path_of(files[logical])).read_bytes()


def aip_problems(home: Path, corpora: Path | None) -> list[str]:
    """Every problem of every AIP under `home`; the checks that need ../shared/corpora (XSDs,
    ontologies) run when it is there."""
    problems = []
    for root in storage_roots(home):
        problems += ocfl_problems(root)
        problems += metadata_problems(root, corpora)
    return problems


def store_problems(store, workdir: Path, corpora: Path | None) -> list[str]:
    """The same checks for a store that is not a folder (S3): its storage root is copied into
    `workdir` through the Store protocol first."""
    for item in store.list("ocfl/"):
        target = workdir / item.key
        target.parent.mkdir(parents=True, exist_ok=True)
        with store.open(item.key) as source, target.open("wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    root = workdir / "ocfl"
    if not (root / "0=ocfl_1.1").is_file():
        return [f"{store.name}: no OCFL storage root"]
    return ocfl_problems(root) + metadata_problems(root, corpora)
