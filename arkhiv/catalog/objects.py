"""Queries over archived objects."""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from arkhiv.catalog.tables import objects


def count_by_status(conn: Connection) -> dict[str, int]:
    query = select(objects.c.status, func.count()).group_by(objects.c.status)
    return {status: count for status, count in conn.execute(query)}
