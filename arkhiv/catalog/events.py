"""PREMIS events and agents in the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from arkhiv.catalog.database import now
from arkhiv.catalog.tables import agents, event_agents, premis_events


def ensure_agent(
    conn: Connection,
    agent_type: str,
    name: str,
    version: str = "",
    identifier: str | None = None,
) -> int:
    """The agent's id, creating the row the first time it acts (with `identifier`, e.g. the
    address a version's user has in OCFL)."""
    query = select(agents.c.id).where(
        agents.c.agent_type == agent_type, agents.c.name == name, agents.c.version == version
    )
    found = conn.execute(query).scalar()
    if found is not None:
        return found
    try:
        with conn.begin_nested():
            return conn.execute(
                insert(agents)
                .values(
                    agent_type=agent_type,
                    name=name,
                    version=version,
                    identifier=identifier,
                    created_at=now(conn),
                )
                .returning(agents.c.id)
            ).scalar_one()
    except IntegrityError:  # created by another process meanwhile
        return conn.execute(query).scalar_one()


def record_event(
    conn: Connection,
    event_type_uri: str,
    outcome: str,
    detail: str = "",
    *,
    occurred_at: datetime | None = None,
    event_id: str | None = None,
    submission_id: str | None = None,
    object_id: str | None = None,
    version_number: int | None = None,
    outcome_detail: Any = None,
    agents_by_role: Iterable[tuple[int, str]] = (),
) -> str:
    event_id = event_id or str(uuid.uuid4())
    conn.execute(
        insert(premis_events).values(
            id=event_id,
            event_type=event_type_uri,
            outcome=outcome,
            detail=detail,
            occurred_at=occurred_at or now(conn),
            submission_id=submission_id,
            object_id=object_id,
            version_number=version_number,
            outcome_detail=outcome_detail,
        )
    )
    for agent_id, role in agents_by_role:
        conn.execute(insert(event_agents).values(event_id=event_id, agent_id=agent_id, role=role))
    return event_id


def events_for_submission(conn: Connection, submission_id: str) -> list[dict[str, Any]]:
    return _with_agents(conn, premis_events.c.submission_id == submission_id)


def events_for_object(conn: Connection, object_id: str) -> list[dict[str, Any]]:
    """Every event about the object, its submission's included once it is archived."""
    return _with_agents(conn, premis_events.c.object_id == object_id)


def link_to_object(conn: Connection, submission_id: str, object_id: str, version: int) -> None:
    conn.execute(
        update(premis_events)
        .where(premis_events.c.submission_id == submission_id)
        .values(object_id=object_id, version_number=version)
    )


def _with_agents(conn: Connection, condition) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(premis_events)
        .where(condition)
        .order_by(premis_events.c.occurred_at, premis_events.c.id)
    )
    events = [dict(row._mapping) for row in rows]
    if not events:
        return events
    links = conn.execute(
        select(
            event_agents.c.event_id,
            event_agents.c.role,
            agents.c.agent_type,
            agents.c.name,
            agents.c.version,
        )
        .join(agents, agents.c.id == event_agents.c.agent_id)
        .where(event_agents.c.event_id.in_([event["id"] for event in events]))
        .order_by(event_agents.c.role, agents.c.name, agents.c.version)
    )
    by_event: dict[str, list[dict[str, str]]] = {}
    for event_id, role, agent_type, name, version in links:
        by_event.setdefault(event_id, []).append(
            {"role": role, "type": agent_type, "name": name, "version": version}
        )
    for event in events:
        event["agents"] = by_event.get(event["id"], [])
    return events
