"""A realistic two-version object for the metadata builders' tests: photos and a capture from a
citizen, a reconstructed GLB in v2."""

from __future__ import annotations

from datetime import UTC, datetime

from arkhiv.aip.model import (
    Agent,
    Capture,
    Derivation,
    Event,
    FileEntry,
    Format,
    ObjectDescription,
    Version,
)
from arkhiv.policies.location import CoarseLocation

EVENT = "http://id.loc.gov/vocabulary/preservation/eventType/"
JPEG = Format("fmt/43", "image/jpeg", "JPEG File Interchange Format", "1.01", "signature")
GLB = Format("fmt/1316", "model/gltf-binary", "GL Transmission Format (Binary)", "2.0", "signature")
T0 = datetime(2024, 5, 18, 9, 42, tzinfo=UTC)
T1 = datetime(2024, 5, 19, 12, 0, tzinfo=UTC)


def photo(number: int) -> FileEntry:
    return FileEntry(
        id=f"file-{number:04d}",
        logical_path=f"data/photos/{number:02d}.jpg",
        content_path=f"v1/content/data/photos/{number:02d}.jpg",
        size=1_250_000 + number,
        digests={"sha512": f"{number:0128x}", "sha256": f"{number:064x}", "md5": f"{number:032x}"},
        format=JPEG,
        role="original",
        original_name=f"IMG_{number:04d}.JPG",
        created=T0,
    )


def sample_object() -> ObjectDescription:
    agents = (
        Agent("agent-arkhiv", "software", "Arkhiv", "0.1.0"),
        Agent("agent-clamav", "software", "ClamAV", "1.4.6"),
        Agent("agent-colmap", "software", "COLMAP", "3.11"),
        Agent("agent-citizen", "person", "bell-keeper"),
        Agent("agent-org", "organization", "Volunteer Heritage Documentation Network"),
    )
    photos = tuple(photo(n) for n in (1, 2, 3))
    model = FileEntry(
        id="file-0100",
        logical_path="derivatives/model.glb",
        content_path="v2/content/derivatives/model.glb",
        size=8_400_000,
        digests={"sha512": "f" * 128, "sha256": "e" * 64},
        format=GLB,
        role="derivative",
        created=T1,
    )
    events = (
        Event(
            "2f1c6a0e-0001-4000-8000-000000000001",
            EVENT + "ins",
            "ingestion start",
            T0,
            "success",
            "package received",
            (("agent-arkhiv", "executing program"),),
        ),
        Event(
            "2f1c6a0e-0001-4000-8000-000000000002",
            EVENT + "vir",
            "virus check",
            T0,
            "success",
            "no virus found",
            (("agent-clamav", "executing program"),),
            tuple(p.id for p in photos),
        ),
        Event(
            "2f1c6a0e-0001-4000-8000-000000000003",
            EVENT + "ine",
            "ingestion end",
            T0,
            "success",
            "accepted",
            (("agent-arkhiv", "executing program"),),
        ),
        Event(
            "2f1c6a0e-0001-4000-8000-000000000004",
            EVENT + "cre",
            "creation",
            T1,
            "success",
            "3D model reconstructed from 3 photos",
            (("agent-colmap", "executing program"), ("agent-arkhiv", "implementer")),
            (model.id,),
        ),
    )
    return ObjectDescription(
        id="ark:/99999/a1b2c3d4",
        title="Bell tower of the Church of the Nativity of the Virgin",
        object_type="building",
        description="Three-tier wooden bell tower with carved eaves.",
        period="late 18th century",
        condition="damaged",
        condition_note="Shell damage to the bell tower, 2022",
        license="CC-BY-4.0",
        rights_holder="bell-keeper",
        permission="The parish priest allowed photography for preservation and publication.",
        public_location=CoarseLocation(
            50.2488, 28.8, 25.0, 50.1369, 28.6271, 50.3615, 28.9729, "UA"
        ),
        place_name="Zhytomyr Oblast",
        capture=Capture(
            "photos",
            "2024-05-18T09:42:00+03:00",
            "Apple iPhone 13 Pro",
            "Polycam 3.4.2",
            "agent-citizen",
            "agent-org",
        ),
        versions=(
            Version(1, T0, "ingest of submission 1234", "agent-arkhiv"),
            Version(2, T1, "reconstructed model", "agent-arkhiv"),
        ),
        files=(*photos, model),
        events=events,
        agents=agents,
        derivations=(
            Derivation(
                model.id,
                tuple(p.id for p in photos),
                "reconstruction",
                "agent-colmap",
                {"max_image_size": 1600, "matcher": "exhaustive"},
                events[3].id,
            ),
        ),
    )
