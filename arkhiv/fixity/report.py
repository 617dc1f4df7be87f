"""`arkhiv report fixity`: what a preservation officer signs off on — per store and per object:
copies, regions, last audit and its outcome, objects at risk or damaged (with the files), repairs
done, and bytes audited per day. JSON, CSV (one row per store, then one per object) or HTML."""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from arkhiv.archive import Archive
from arkhiv.catalog.tables import files, objects, premis_events, replicas, stores
from arkhiv.fixity.audit import due_before
from arkhiv.metadata.premis_vocabulary import EventType


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _audit_interval(archive: Archive, store_name: str) -> float:
    settings = next((s for s in archive.settings.stores if s.name == store_name), None)
    if settings is not None and settings.audit_interval_days:
        return settings.audit_interval_days
    return archive.settings.preservation.audit_interval_days


def fixity_report(conn: Connection, archive: Archive) -> dict[str, Any]:
    policy = archive.settings.preservation
    rows = conn.execute(
        select(
            files.c.object_id,
            files.c.content_path,
            files.c.size,
            stores.c.name,
            stores.c.region,
            replicas.c.status,
            replicas.c.last_audit_at,
            replicas.c.last_audit_outcome,
        )
        .join(replicas, replicas.c.file_id == files.c.id)
        .join(stores, stores.c.id == replicas.c.store_id)
    ).all()
    store_rows = {row.name: row for row in conn.execute(select(stores).order_by(stores.c.name))}
    per_store: dict[str, dict[str, Any]] = {}
    per_file: dict[tuple[str, str], list[Any]] = defaultdict(list)
    intervals = {name: _audit_interval(archive, name) for name in store_rows}
    due = {name: due_before(days) for name, days in intervals.items()}
    for row in rows:
        entry = per_store.setdefault(
            row.name,
            {
                "region": row.region,
                "jurisdiction": store_rows[row.name].jurisdiction,
                "replicas": 0,
                "bytes": 0,
                "by_status": defaultdict(int),
                "never_audited": 0,
                "oldest_audit": None,
                "latest_audit": None,
                "last_failures": 0,
                "audited_in_interval": 0,  # progress against the audit schedule
            },
        )
        entry["replicas"] += 1
        entry["bytes"] += row.size
        entry["by_status"][row.status] += 1
        if row.last_audit_at is None:
            entry["never_audited"] += 1
        else:
            if row.last_audit_at >= due[row.name]:
                entry["audited_in_interval"] += 1
            if entry["oldest_audit"] is None or row.last_audit_at < entry["oldest_audit"]:
                entry["oldest_audit"] = row.last_audit_at
            if entry["latest_audit"] is None or row.last_audit_at > entry["latest_audit"]:
                entry["latest_audit"] = row.last_audit_at
        if row.last_audit_outcome not in (None, "ok"):
            entry["last_failures"] += 1
        per_file[(row.object_id, row.content_path)].append(row)
    for name, entry in per_store.items():
        entry["by_status"] = dict(entry["by_status"])
        for key in ("oldest_audit", "latest_audit"):
            entry[key] = _iso(entry[key])
        entry["audit_interval_days"] = intervals[name]

    per_object: dict[str, dict[str, Any]] = {}
    for row in conn.execute(
        select(objects).where(objects.c.head_version > 0).order_by(objects.c.id)
    ):
        per_object[row.id] = {
            "title": row.title,
            "status": row.status,
            "files": 0,
            "min_copies": None,
            "min_regions": None,
            "oldest_audit": None,
            "files_without_good_copy": [],
            "files_short_of_policy": [],
        }
    for (object_id, content_path), replica_rows in sorted(per_file.items()):
        entry = per_object.get(object_id)
        if entry is None:
            continue
        good = [r for r in replica_rows if r.status == "verified"]
        copies, regions = len(good), len({r.region for r in good})
        entry["files"] += 1
        entry["min_copies"] = (
            copies if entry["min_copies"] is None else min(entry["min_copies"], copies)
        )
        entry["min_regions"] = (
            regions if entry["min_regions"] is None else min(entry["min_regions"], regions)
        )
        if not good:
            entry["files_without_good_copy"].append(content_path)
        elif copies < policy.min_copies or regions < policy.min_regions:
            entry["files_short_of_policy"].append(content_path)
        audits = [r.last_audit_at for r in replica_rows if r.last_audit_at is not None]
        if len(audits) < len(replica_rows):
            entry["oldest_audit"] = "never"
        elif audits and entry["oldest_audit"] != "never":
            oldest = min(audits).isoformat()
            if entry["oldest_audit"] is None or oldest < entry["oldest_audit"]:
                entry["oldest_audit"] = oldest

    fixity_events = conn.execute(
        select(premis_events.c.occurred_at, premis_events.c.outcome_detail).where(
            premis_events.c.event_type == EventType.FIXITY_CHECK.uri
        )
    ).all()
    per_day: dict[str, dict[str, int]] = defaultdict(lambda: {"checks": 0, "bytes": 0, "failed": 0})
    last_outcome: dict[str, str] = {}
    for at, detail in fixity_events:
        day = per_day[at.date().isoformat()]
        detail = detail or {}
        day["checks"] += len(detail.get("files", [])) + len(detail.get("failed", {}))
        day["bytes"] += int(detail.get("bytes", 0))
        day["failed"] += len(detail.get("failed", {}))
    for object_id, outcome in conn.execute(
        select(premis_events.c.object_id, premis_events.c.outcome)
        .where(premis_events.c.event_type == EventType.FIXITY_CHECK.uri)
        .order_by(premis_events.c.occurred_at)
    ):
        last_outcome[object_id] = outcome
    for object_id, entry in per_object.items():
        entry["last_audit_outcome"] = last_outcome.get(object_id)

    repairs = conn.execute(
        select(
            premis_events.c.object_id,
            premis_events.c.occurred_at,
            premis_events.c.outcome,
            premis_events.c.detail,
        )
        .where(
            premis_events.c.event_type == EventType.REPLICATION.uri,
            # Catch-up and repair copies name their files; a version's first placement does not.
            premis_events.c.detail.like("store % brought up to %"),
        )
        .order_by(premis_events.c.occurred_at)
    ).all()
    counts = dict(
        conn.execute(select(objects.c.status, func.count()).group_by(objects.c.status)).all()
    )
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "policy": {
            "min_copies": policy.min_copies,
            "min_regions": policy.min_regions,
            "audit_interval_days": policy.audit_interval_days,
        },
        "objects_by_status": counts,
        "stores": per_store,
        "objects": per_object,
        "at_risk": sorted(k for k, v in per_object.items() if v["status"] == "at_risk"),
        "damaged": sorted(k for k, v in per_object.items() if v["status"] == "damaged"),
        "repairs": [
            {
                "object": r.object_id,
                "at": r.occurred_at.isoformat(),
                "outcome": r.outcome,
                "detail": r.detail,
            }
            for r in repairs
        ],
        "audited_per_day": dict(sorted(per_day.items())),
    }


STORE_COLUMNS = (
    "region",
    "jurisdiction",
    "replicas",
    "bytes",
    "verified",
    "missing",
    "mismatch",
    "never_audited",
    "audited_in_interval",
    "oldest_audit",
    "latest_audit",
    "audit_interval_days",
)
OBJECT_COLUMNS = (
    "title",
    "status",
    "files",
    "min_copies",
    "min_regions",
    "oldest_audit",
    "last_audit_outcome",
    "files_without_good_copy",
    "files_short_of_policy",
)


def _store_row(entry: dict[str, Any]) -> dict[str, Any]:
    row = {key: entry.get(key) for key in STORE_COLUMNS}
    for status in ("verified", "missing", "mismatch"):
        row[status] = entry["by_status"].get(status, 0)
    return row


def _object_row(entry: dict[str, Any]) -> dict[str, Any]:
    row = {key: entry.get(key) for key in OBJECT_COLUMNS}
    for key in ("files_without_good_copy", "files_short_of_policy"):
        row[key] = " ".join(entry[key])
    return row


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["kind", "name", *STORE_COLUMNS, *OBJECT_COLUMNS])
    for name, entry in sorted(report["stores"].items()):
        row = _store_row(entry)
        writer.writerow(
            ["store", name, *(row[c] for c in STORE_COLUMNS), *[""] * len(OBJECT_COLUMNS)]
        )
    for name, entry in sorted(report["objects"].items()):
        row = _object_row(entry)
        writer.writerow(
            ["object", name, *[""] * len(STORE_COLUMNS), *(row[c] for c in OBJECT_COLUMNS)]
        )
    return out.getvalue()


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in ("name", *columns))
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(name)}</td>"
        + "".join(f"<td>{html.escape('' if row[c] is None else str(row[c]))}</td>" for c in columns)
        + "</tr>"
        for name, row in rows
    )
    return (
        f"<h2>{html.escape(title)}</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _alert(name: str, entry: dict[str, Any]) -> str:
    named = entry["files_without_good_copy"] or entry["files_short_of_policy"]
    return (
        f"<li class='bad'>{html.escape(name)}: {html.escape(entry['status'])} — "
        f"{html.escape(' '.join(named))}</li>"
    )


def to_html(report: dict[str, Any]) -> str:
    policy = report["policy"]
    summary = ", ".join(f"{k} {v}" for k, v in sorted(report["objects_by_status"].items()))
    days = [
        (day, {"checks": v["checks"], "bytes": v["bytes"], "failed": v["failed"]})
        for day, v in report["audited_per_day"].items()
    ]
    repairs = [
        (r["object"], {"at": r["at"], "outcome": r["outcome"], "detail": r["detail"]})
        for r in report["repairs"]
    ]
    alerts = "".join(_alert(name, report["objects"][name]) for name in report["damaged"])
    alerts += "".join(_alert(name, report["objects"][name]) for name in report["at_risk"])
    alerts = alerts or "<li>none</li>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Arkhiv fixity report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #999;padding:.25em .5em;text-align:left}.bad{color:#a00}"
        "</style></head><body>"
        f"<h1>Fixity report</h1><p>Generated {html.escape(report['generated_at'])}. Policy: "
        f"{policy['min_copies']} verified copies in {policy['min_regions']} regions, every "
        f"replica audited within {policy['audit_interval_days']:g} days. Objects: "
        f"{html.escape(summary or 'none')}.</p>"
        f"<h2>Damaged and at-risk objects</h2><ul>{alerts}</ul>"
        + _table(
            "Stores",
            STORE_COLUMNS,
            [(n, _store_row(e)) for n, e in sorted(report["stores"].items())],
        )
        + _table(
            "Objects",
            OBJECT_COLUMNS,
            [(n, _object_row(e)) for n, e in sorted(report["objects"].items())],
        )
        + _table("Repairs", ("at", "outcome", "detail"), repairs)
        + _table("Audited per day", ("checks", "bytes", "failed"), days)
        + "</body></html>\n"
    )
