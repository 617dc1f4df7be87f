"""Events Arkhiv itself performs on an object (package creation, replication, fixity checks,
metadata edits): recorded in the catalog and, when they happen outside a version, in every
store's journal, in one shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from arkhiv import __version__
from arkhiv.catalog import events as catalog_events
from arkhiv.metadata.premis_vocabulary import EventType

EXECUTING_PROGRAM = "executing program"


@dataclass
class PendingEvent:
    id: str
    type: EventType
    occurred_at: datetime
    outcome: str  # success, failure, warning
    detail: str
    outcome_detail: dict[str, Any] | None = None
    # Other programs that did the work with Arkhiv, as [name, version] (e.g. pycolmap).
    software: list[list[str]] = field(default_factory=list)

    def programs(self) -> list[tuple[str, str]]:
        return [("Arkhiv", __version__), *((name, version) for name, version in self.software)]

    def record(self, conn: Connection, object_id: str, version: int | None) -> None:
        agents = [
            (catalog_events.ensure_agent(conn, "software", name, version), EXECUTING_PROGRAM)
            for name, version in self.programs()
        ]
        catalog_events.record_event(
            conn,
            self.type.uri,
            self.outcome,
            self.detail,
            occurred_at=self.occurred_at,
            event_id=self.id,
            object_id=object_id,
            version_number=version,
            outcome_detail=self.outcome_detail,
            agents_by_role=agents,
        )

    def journal_entry(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.uri,
            "occurred_at": self.occurred_at.isoformat(),
            "outcome": self.outcome,
            "detail": self.detail,
            "outcome_detail": self.outcome_detail,
            "agents": [
                {"type": "software", "name": name, "version": version, "role": EXECUTING_PROGRAM}
                for name, version in self.programs()
            ],
        }


def record_outside_version(archive, event: PendingEvent, object_id: str, version: int) -> None:
    """An event about an object that writes no version (a dissemination, a failed
    reconstruction): in the catalog and in every store's journal, so a catalog rebuilt from the
    stores keeps it."""
    from arkhiv.aip.placement import write_journal
    from arkhiv.catalog.database import writing

    with writing(archive.engine) as conn:
        event.record(conn, object_id, version)
    write_journal(
        list(archive.stores.values()),
        object_id,
        event.occurred_at,
        f"{event.type.name.lower()}-{event.id}",
        {"version": version, "events": [event.journal_entry()]},
    )
