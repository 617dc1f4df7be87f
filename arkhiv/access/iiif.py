"""A IIIF Presentation 3 manifest per object that has a 3D model: one Canvas painted with the
glTF master (a `Model` body, as Presentation 3 allows for 3D), with the public description as
label, summary and metadata, the licence as `rights`. (The Presentation 4 draft's Scenes are
not followed yet.) No location of any precision is put in (no navPlace): manifests are copied
into other collections and outlive a later, coarser location policy."""

from __future__ import annotations

import json
from typing import Any

from arkhiv.metadata.premis import license_uri

MODEL_PATH = "derivatives/model/model.glb"


def manifest(
    document: dict[str, Any], base_url: str, provider: str, resolver: str
) -> dict[str, Any] | None:
    """The manifest of an object as `access.disclosure.object_view` shows it to the public;
    None when it has no model to show."""
    from iiif_prezi3 import (
        Annotation,
        AnnotationBody,
        AnnotationPage,
        Canvas,
        KeyValueString,
        Manifest,
    )

    if not any(entry["logical_path"] == MODEL_PATH for entry in document["files"]):
        return None
    ark = document["id"]
    here = f"{base_url}/iiif/{ark}"
    description = document["description"]
    title = description.get("title") or document["title"]
    item = Manifest(id=f"{here}/manifest", label={"none": [title]})
    if description.get("description"):
        item.summary = {"none": [description["description"]]}
    fields = [
        ("Type", description.get("object_type")),
        (
            "Place",
            ", ".join(filter(None, (description.get("place_name"), description.get("country")))),
        ),
        ("Period", description.get("period")),
        ("Condition", description.get("condition")),
        ("Contributor", description.get("contributor")),
        ("Licence", description.get("license")),
        ("Identifier", resolver + ark),
    ]
    item.metadata = [KeyValueString(label=label, value=value) for label, value in fields if value]
    rights = license_uri(description["license"]) if description.get("license") else None
    if rights and rights.startswith("https://creativecommons.org/"):
        item.rights = "http://" + rights.removeprefix("https://")  # the form IIIF lists
    holder = description.get("rights_holder") or description.get("contributor") or provider
    item.requiredStatement = KeyValueString(label="Attribution", value=holder)
    canvas = Canvas(id=f"{here}/canvas/model", label={"none": [title]}, height=1000, width=1000)
    body = AnnotationBody(
        id=f"{base_url}/api/v1/objects/{ark}/files/{MODEL_PATH}",
        type="Model",
        format="model/gltf-binary",
    )
    painting = Annotation(
        id=f"{here}/annotation/model", motivation="painting", body=body, target=canvas.id
    )
    canvas.items = [AnnotationPage(id=f"{here}/page/model", items=[painting])]
    item.items = [canvas]
    return json.loads(item.json())  # plain JSON types (the model holds URL objects)
