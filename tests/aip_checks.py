"""Every AIP the tests write is held to independent checks when its archive is torn down:
ocfl-py validates each storage root (good objects counted, warnings included: its validate()
returns True even with bad objects), and each version's METS and PREMIS are checked against the
LoC schemas, its CIDOC-CRM graph against the SHACL shapes, and its JSON-LD against its Turtle."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import ocfl
from pyld import jsonld
from rdflib import Graph
from rdflib.compare import isomorphic

from arkhiv.aip.ocfl import INVENTORY, Inventory
from arkhiv.metadata.crm import document_loader, validate_shapes
from arkhiv.metadata.xml_validation import load_schema, validate


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


def metadata_problems(root: Path, schemas: Path | None) -> list[str]:
    problems = []
    for inventory_file in sorted(root.glob(f"*/*/*/*/{INVENTORY}")):
        inventory = Inventory.from_json(inventory_file.read_bytes())
        for number, version in sorted(inventory.versions.items()):
            where = f"{inventory.id} v{number}"
            content = partial(_content, inventory_file.parent, inventory, version.logical_files())

            if schemas is not None:
                mets = load_schema(schemas / "mets-premis-driver.xsd")
                premis = load_schema(schemas / "premis.xsd")
                problems += [
                    f"{where} mets.xml {e}" for e in validate(content("metadata/mets.xml"), mets)
                ]
                problems += [
                    f"{where} premis.xml {e}"
                    for e in validate(content("metadata/premis.xml"), premis)
                ]
            turtle = Graph().parse(data=content("metadata/crm.ttl"), format="turtle")
            problems += [f"{where} crm.ttl {e}" for e in validate_shapes(turtle)]
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


def aip_problems(home: Path, schemas: Path | None) -> list[str]:
    problems = []
    for root in storage_roots(home):
        problems += ocfl_problems(root)
        problems += metadata_problems(root, schemas)
    return problems
