"""XML Schema validation for the metadata documents (METS, PREMIS).

The caller passes the schema path: this module never looks for schemas on its own, so importing
it reads nothing. Schemas are parsed once per path; their imports must resolve to local files
(network access is off)."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path

from lxml import etree

# libxml2 schema validation keeps per-validation state in the XMLSchema object: one at a time.
_validation_lock = threading.Lock()


@lru_cache(maxsize=32)
def _load(path: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(path), parser))


def load_schema(path: Path) -> etree.XMLSchema:
    """The schema at `path`, parsed once and cached (keyed by the resolved path)."""
    return _load(Path(path).resolve())


def validate(
    document: etree._Element | etree._ElementTree | bytes, schema: etree.XMLSchema
) -> list[str]:
    """Every schema error as 'line N: message (at XPATH)'; empty when the document is valid.

    A tree built in memory has no line numbers, so it is serialized pretty-printed (as the
    *_bytes functions write it) and parsed again: the lines are those of the written file."""
    if isinstance(document, bytes):
        data = document
    else:
        data = etree.tostring(document, encoding="UTF-8", xml_declaration=True, pretty_print=True)
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    try:
        tree = etree.fromstring(data, parser).getroottree()
    except etree.XMLSyntaxError as exc:
        return [f"line {exc.lineno}: not well-formed XML: {exc.msg}"]
    with _validation_lock:
        schema.validate(tree)
        log = list(schema.error_log)
    return [f"line {entry.line}: {entry.message} (at {entry.path})" for entry in log]
