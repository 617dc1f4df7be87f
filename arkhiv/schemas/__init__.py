"""Arkhiv's own schemas: BagIt profile, capture-metadata JSON Schema, SHACL shapes,
JSON-LD context."""
