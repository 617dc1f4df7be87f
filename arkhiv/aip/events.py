"""Events Arkhiv itself performs on an object (package creation, replication, fixity checks,
metadata edits): recorded in the catalog and, when they happen outside a version, in every
store's journal, in one shape."""

from __future__ import annotations

from dataclasses import dataclass
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

    def record(self, conn: Connection, object_id: str, version: int | None) -> None:
        agent = catalog_events.ensure_agent(conn, "software", "Arkhiv", __version__)
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
            agents_by_role=[(agent, EXECUTING_PROGRAM)],
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
                {
                    "type": "software",
                    "name": "Arkhiv",
                    "version": __version__,
                    "role": EXECUTING_PROGRAM,
                }
            ],
        }
