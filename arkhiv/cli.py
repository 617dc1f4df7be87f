"""The command line: `arkhiv COMMAND`. Exit status 0 success, 1 the archive found a problem,
2 usage or configuration error. Read commands take `--json` and print one JSON document."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from arkhiv import __version__
from arkhiv.errors import ArkhivError, ConfigError

app = typer.Typer(
    name="arkhiv",
    help="Arkhiv, a preservation archive for 3D cultural heritage.\n\n"
    "The archive lives in ARKHIV_HOME (default ./arkhiv-data): arkhiv.toml, the embedded catalog "
    "and the default local stores. ARKHIV_<SECTION>__<KEY> environment variables override the "
    "configuration file.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The catalog database schema.", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and steer the job queue.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")

out = Console()
err = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON document instead of tables.")


class _State:
    home: Path | None = None


state = _State()


def _version(value: bool) -> None:
    if value:
        out.print(f"arkhiv {__version__}")
        raise typer.Exit()


PRIVATE_UMASK = 0o077  # files 0600, folders 0700


@app.callback()
def _main(
    home: Path | None = typer.Option(
        None, "--home", envvar="ARKHIV_HOME", help="Archive folder (default ./arkhiv-data)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    state.home = home
    # Catalogs, packages, reports and bags hold names and precise locations: nothing an Arkhiv
    # command writes is for the machine's other users.
    os.umask(PRIVATE_UMASK)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )
    if not verbose:
        for noisy in ("alembic", "apscheduler", "sqlalchemy"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def _opened(upgrade: bool = True) -> Iterator[Any]:
    """The archive in ARKHIV_HOME, closed when the command is done."""
    from arkhiv.archive import Archive

    archive = Archive.open(state.home, upgrade=upgrade)
    try:
        yield archive
    finally:
        archive.close()


def _find_submissions(status: str | None, limit: int) -> list[dict[str, Any]]:
    from arkhiv.catalog import submissions
    from arkhiv.catalog.database import reading

    with _opened() as archive, reading(archive.engine) as conn:
        return submissions.find(conn, status, limit)


def _print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")


@app.command()
def init(as_json: bool = JSON_OPTION) -> None:
    """Create an archive in ARKHIV_HOME: arkhiv.toml with three local stores labelled as
    separate sites, the embedded SQLite catalog, and the store folders. An existing archive is
    kept as it is and its catalog upgraded."""
    from arkhiv.archive import Archive

    archive, created = Archive.initialize(state.home)
    try:
        report = {
            "home": str(archive.settings.home),
            "config": str(archive.settings.config_file),
            "created": created,
            "catalog": archive.status()["catalog"],
            "stores": [store.name for store in archive.settings.stores],
        }
    finally:
        archive.close()
    if as_json:
        _print_json(report)
        return
    verb = "Created" if created else "Found existing"
    out.print(f"{verb} archive at [bold]{report['home']}[/bold]")
    out.print(f"  configuration: {report['config']}")
    out.print(f"  catalog: {report['catalog']['url']} (schema {report['catalog']['revision']})")
    out.print(f"  stores: {', '.join(report['stores'])}")


@app.command()
def status(as_json: bool = JSON_OPTION) -> None:
    """Catalog, stores, job queues, object counts and the policies in force."""
    with _opened() as archive:
        report = archive.status()
    if as_json:
        _print_json(report)
        return
    catalog = report["catalog"]
    out.print(f"[bold]Arkhiv {report['arkhiv']['version']}[/bold] at {report['arkhiv']['home']}")
    schema = "up to date" if catalog["up_to_date"] else f"behind (head {catalog['head']})"
    out.print(
        f"Catalog: {catalog['dialect']} {catalog['url']}, schema {catalog['revision']} {schema}"
    )
    objects = report["objects"]
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(objects["by_status"].items()))
    out.print(f"Objects: {objects['total']}" + (f" ({by_status})" if by_status else ""))

    table = Table(title="Stores")
    for column in (
        "name",
        "kind",
        "region",
        "state",
        "free",
        "replicas",
        "verified",
        "failed",
        "oldest audit",
    ):
        table.add_column(column)
    for store in report["stores"]:
        if store["reachable"] is None:
            health = store["detail"]
        elif store["reachable"] and store["writable"]:
            health = "[green]ok[/green]"
        else:
            health = f"[red]{store['detail']}[/red]"
        table.add_row(
            store["name"],
            store["kind"],
            store["region"],
            health,
            _bytes(store["free_bytes"]),
            str(store["holdings"]["replicas"]),
            str(store["holdings"]["by_status"].get("verified", 0)),
            str(store["holdings"]["replicas"] - store["holdings"]["by_status"].get("verified", 0)),
            "never"
            if store["holdings"]["never_audited"]
            else (store["holdings"]["oldest_audit"] or "—")[:19],
        )
    out.print(table)

    queues = Table(title="Job queues")
    states = ("queued", "running", "done", "dead")
    queues.add_column("queue")
    for state_name in states:
        queues.add_column(state_name, justify="right")
    for name, counts in sorted(report["jobs"]["queues"].items()):
        queues.add_row(name, *(str(counts.get(s, 0)) for s in states))
    queues.add_row("[bold]all[/bold]", *(str(report["jobs"]["totals"].get(s, 0)) for s in states))
    out.print(queues)

    policy = report["policy"]["preservation"]
    out.print(
        f"Policy: {policy['min_copies']} copies in at least {policy['min_regions']} regions, "
        f"audited every {policy['audit_interval_days']:g} days, "
        f"digests {', '.join(policy['digest_algorithms'])}; public locations to "
        f"{report['policy']['location']['public_precision_km']:g} km"
    )


@app.command()
def worker(
    queue: list[str] = typer.Option(
        None, "--queue", "-q", help="Queue to take jobs from (repeatable; default: all)."
    ),
    burst: bool = typer.Option(
        False,
        "--burst",
        help="Exit once the queues hold nothing queued or running (retries that are backing off "
        "are waited for).",
    ),
    scheduler: bool | None = typer.Option(
        None,
        "--scheduler/--no-scheduler",
        help="Also run the periodic scheduler (default: on, off with --burst). Only one "
        "process in the fleet enqueues at a time.",
    ),
) -> None:
    """Run jobs from the catalog's queue until stopped (SIGTERM/Ctrl-C finish the current job)."""
    from arkhiv.jobs.scheduler import Scheduler
    from arkhiv.jobs.worker import Worker

    with _opened() as archive:
        runner = Worker(archive, queue or None, burst=burst)
        runner.install_signal_handlers()
        periodic = None
        wanted = scheduler if scheduler is not None else not burst
        if wanted and archive.settings.scheduler.enabled:
            periodic = Scheduler(archive, holder=runner.owner)
            periodic.start()
        queues = ", ".join(queue) if queue else "all queues"
        err.print(
            f"worker {runner.owner} taking jobs from {queues}" + (" (burst)" if burst else "")
        )
        try:
            count = runner.run()
        finally:
            if periodic is not None:
                periodic.shutdown()
    err.print(f"worker {runner.owner} stopped after {count} job(s)")


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Address to listen on (default: server.host)."),
    port: int | None = typer.Option(None, help="Port (default: server.port)."),
    embedded_worker: bool | None = typer.Option(
        None,
        "--worker/--no-worker",
        help="Run jobs and the scheduler inside the server (default: server.embedded_worker).",
    ),
) -> None:
    """Serve the HTTP API (and the embedded worker for the one-machine archive)."""
    import uvicorn

    from arkhiv.web.app import create_app

    with _opened() as archive:
        settings = archive.settings.server
        host = host or settings.host
        port = port or settings.port
        application = create_app(archive, embedded_worker=embedded_worker)
        display_host = f"[{host}]" if ":" in host else host
        out.print(
            f"Arkhiv is serving {archive.settings.home} at [bold]http://{display_host}:{port}[/bold]"
        )
        uvicorn.run(application, host=host, port=port, log_level="info")


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply catalog migrations (also done automatically at start-up)."""
    from arkhiv.catalog import migrate

    with _opened(upgrade=False) as archive:
        before = migrate.current_revision(archive.engine)
        with err.status("upgrading the catalog schema"):
            migrate.upgrade(archive.engine, revision)
        after = migrate.current_revision(archive.engine)
    out.print(f"catalog schema: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(as_json: bool = JSON_OPTION) -> None:
    """Show the catalog's schema revision and the newest this version knows."""
    from arkhiv.catalog import migrate

    with _opened(upgrade=False) as archive:
        report = {
            "revision": migrate.current_revision(archive.engine),
            "head": migrate.head_revision(),
        }
    if as_json:
        _print_json(report)
    else:
        out.print(f"revision {report['revision'] or 'none'} (head {report['head']})")


@jobs_app.command("list")
def jobs_list(
    queue: str | None = typer.Option(None, "--queue", "-q"),
    job_status: str | None = typer.Option(None, "--status", help="queued, running, done or dead"),
    limit: int = typer.Option(50, min=1),
    as_json: bool = JSON_OPTION,
) -> None:
    """The newest jobs, optionally of one queue or state."""
    with _opened() as archive:
        found = archive.queue.list(queue, job_status, limit)
    if as_json:
        _print_json([job.as_dict() for job in found])
        return
    table = Table()
    for column in ("id", "queue", "kind", "status", "attempts", "progress", "last error"):
        table.add_column(column)
    for job in found:
        progress = f"{job.progress:.0%}" if job.progress is not None else ""
        error = (job.last_error or "").splitlines()[0][:60] if job.last_error else ""
        table.add_row(
            str(job.id),
            job.queue,
            job.kind,
            job.status,
            f"{job.attempts}/{job.max_attempts}",
            progress,
            error,
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(job_id: int, as_json: bool = JSON_OPTION) -> None:
    """One job, with its payload, progress and every error it met."""
    with _opened() as archive:
        job = archive.queue.get(job_id)
    if job is None:
        raise ArkhivError(f"no job {job_id}")
    if as_json:
        _print_json(job.as_dict())
        return
    for key, value in job.as_dict().items():
        if key == "errors":
            continue
        out.print(f"[bold]{key}[/bold]: {value}")
    for entry in job.errors:
        out.print(f"[red]attempt {entry['attempt']}[/red] at {entry['at']} on {entry['worker']}:")
        out.print(entry["error"], markup=False)


@jobs_app.command("retry")
def jobs_retry(job_id: int) -> None:
    """Give a dead job a fresh set of attempts."""
    with _opened() as archive:
        requeued = archive.queue.requeue(job_id)
    if not requeued:
        raise ArkhivError(f"job {job_id} is not dead (or does not exist); nothing to retry")
    out.print(f"job {job_id} queued again")


class SubmissionStatus(StrEnum):
    received = "received"
    ingesting = "ingesting"
    accepted = "accepted"
    archived = "archived"
    rejected = "rejected"
    purged = "purged"


quarantine_app = typer.Typer(help="Rejected packages and their reports.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
submissions_app = typer.Typer(help="Packages received, accepted or not.", no_args_is_help=True)
app.add_typer(submissions_app, name="submissions")


@app.command()
def submit(
    path: Path = typer.Argument(..., exists=True, help="A bag: a folder, .zip, .tar or .tar.gz."),
    wait: bool = typer.Option(False, "--wait", help="Run the ingest now and wait for its outcome."),
    submitted_by: str = typer.Option("", "--as", help="Who submits (recorded in the catalog)."),
    plain: bool = typer.Option(
        False, "--plain", help="PATH holds plain files (photos, a Polycam export): bag them first."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Submit a package: it is unpacked into staging, validated, virus-checked, identified and
    characterized; precise locations are sealed. Exit 1 if it is rejected."""
    from arkhiv.jobs.ingest import receive_submission

    with _opened() as archive:
        submission_id, job_id, problems = receive_submission(
            archive, path, submitted_by, plain=plain
        )
        if job_id is not None and wait:
            with err.status(f"ingesting {path.name}"):
                done = _run_until_finished(archive, job_id)
            follow_up = (done.result or {}).get("archive_job")
            if follow_up is not None:
                with err.status(f"archiving {path.name}"):
                    _run_until_finished(archive, follow_up)
        report = _submission_report(archive, submission_id)
    if as_json:
        _print_json(report)
    else:
        out.print(f"submission [bold]{submission_id}[/bold]: {report['status']}")
        if report.get("summary"):
            out.print(report["summary"], markup=False, highlight=False)
    if report["status"] == "rejected" or problems:
        sys.exit(1)


def _run_until_finished(archive, job_id: int):
    """Run the job here whenever it is due (its first attempt and retries after back-off),
    or wait while a worker elsewhere runs it."""
    import time

    from arkhiv.jobs.worker import Worker

    worker = Worker(archive, [])
    lease = archive.settings.jobs.lease_seconds
    while (job := archive.queue.get(job_id)) is not None and job.status in ("queued", "running"):
        claimed = archive.queue.claim_job(job_id, worker.owner, lease)
        if claimed is not None:
            worker.execute(claimed)
        else:
            time.sleep(0.5)
    if job is not None and job.status == "dead":
        first_line = (job.last_error or "").splitlines()[0] if job.last_error else ""
        raise ArkhivError(f"{job.kind} job {job_id} failed: {first_line}")
    return job


def _submission_report(archive, submission_id: str) -> dict[str, Any]:
    from arkhiv.catalog import events, submissions
    from arkhiv.catalog.database import reading

    with reading(archive.engine) as conn:
        row = submissions.get(conn, submission_id)
        if row is None:
            raise ArkhivError(f"no submission {submission_id}")
        row["events"] = events.events_for_submission(conn, submission_id)
        row["sealed_locations"] = [
            {"source": s["source_path"], "kind": s["kind"], "key_id": s["key_id"]}
            for s in submissions.sealed_locations_of(conn, submission_id)
        ]
    return row


@app.command()
def bag(
    source: Path = typer.Argument(..., help="A plain folder: photos, a Polycam export, scans."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the new bag."),
    info: list[str] = typer.Option(
        None, "--info", help="A bag-info.txt field, LABEL=VALUE (repeatable)."
    ),
    metadata: Path | None = typer.Option(
        None,
        "--metadata",
        help="A capture-metadata.json to include (see docs/submission-format.md).",
    ),
) -> None:
    """Turn a plain folder into a BagIt 1.0 bag (sha512 and sha256 manifests), leaving the
    folder untouched."""
    from arkhiv.ingest.bagging import make_bag
    from arkhiv.ingest.capture_metadata import check_capture_document
    from arkhiv.ingest.model import IntakeError, Outcome

    document = None
    if metadata is not None:
        try:
            document = json.loads(metadata.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArkhivError(f"{metadata}: {exc}") from None
        _, checks = check_capture_document(document)
        problems = [c.reason for c in checks if c.outcome == Outcome.FAIL]
        if problems:
            raise ArkhivError(f"{metadata}: " + "; ".join(problems))

    fields = {}
    for item in info or []:
        label, sep, value = item.partition("=")
        if not sep or not label.strip():
            raise typer.BadParameter(f"{item!r} is not LABEL=VALUE", param_hint="--info")
        fields[label.strip()] = value.strip()
    if not source.is_dir():
        raise typer.BadParameter(f"{source}: not a folder", param_hint="SOURCE")
    try:
        made = make_bag(source, output, fields, capture_metadata=document)
    except IntakeError as exc:
        raise ArkhivError(f"cannot bag {source}: {exc}") from None
    out.print(f"bag written to {made}")


@submissions_app.command("list")
def submissions_list(
    submission_status: SubmissionStatus | None = typer.Option(None, "--status"),
    limit: int = typer.Option(50, min=1),
    as_json: bool = JSON_OPTION,
) -> None:
    """The newest submissions."""
    _print_submissions(_find_submissions(submission_status, limit), as_json)


@submissions_app.command("show")
def submissions_show(submission_id: str, as_json: bool = JSON_OPTION) -> None:
    """One submission: its report, PREMIS events and where its locations are sealed."""
    with _opened() as archive:
        report = _submission_report(archive, submission_id)
    _print_submission(report, as_json)


@quarantine_app.command("list")
def quarantine_list(as_json: bool = JSON_OPTION) -> None:
    """Rejected packages kept in quarantine."""
    _print_submissions(_find_submissions("rejected", 1000), as_json)


@quarantine_app.command("show")
def quarantine_show(submission_id: str, as_json: bool = JSON_OPTION) -> None:
    """Why a package was rejected, check by check."""
    with _opened() as archive:
        report = _submission_report(archive, submission_id)
    if report["status"] not in ("rejected", "purged"):
        raise ArkhivError(f"submission {submission_id} is {report['status']}, not quarantined")
    _print_submission(report, as_json)


@quarantine_app.command("purge")
def quarantine_purge(
    submission_id: str | None = typer.Argument(None, help="One submission."),
    older_than: float | None = typer.Option(
        None, "--older-than", min=0, help="Every package rejected more than this many days ago."
    ),
    everything: bool = typer.Option(False, "--all", help="Every quarantined package."),
) -> None:
    """Delete quarantined packages; their reports and events stay in the catalog."""
    from datetime import UTC, datetime, timedelta

    from arkhiv.catalog import submissions
    from arkhiv.catalog.database import reading
    from arkhiv.jobs.ingest import purge

    with _opened() as archive:
        if sum((submission_id is not None, older_than is not None, everything)) != 1:
            raise typer.BadParameter("name one of: a submission ID, --older-than DAYS, --all")
        if submission_id:
            targets = [submission_id]
        else:
            with reading(archive.engine) as conn:
                rows = submissions.find(conn, "rejected", 100_000)
            cutoff = datetime.now(UTC) - timedelta(days=older_than or 0)
            targets = [r["id"] for r in rows if (r["finished_at"] or r["received_at"]) <= cutoff]
        for target in targets:
            purge(archive, target)
    out.print(f"purged {len(targets)} quarantined package(s)")


def _print_submissions(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json([{k: v for k, v in r.items() if k != "report"} for r in rows])
        return
    table = Table()
    for column in ("id", "status", "source", "received", "files", "summary"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["id"],
            r["status"],
            r["source_name"],
            r["received_at"].isoformat(timespec="seconds"),
            str(r["file_count"] or ""),
            (r["summary"] or "").splitlines()[0][:70] if r["summary"] else "",
        )
    out.print(table)


def _print_submission(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(report)
        return
    out.print(f"[bold]{report['id']}[/bold] {report['status']} ({report['source_name']})")
    out.print(report.get("summary") or "", markup=False, highlight=False)
    if report.get("quarantine_path"):
        out.print(f"quarantined at {report['quarantine_path']}")
    if report.get("public_location"):
        loc = report["public_location"]
        out.print(
            f"public location: cell of {loc['cell_km']:g} km around "
            f"{loc['latitude']}, {loc['longitude']}"
        )
    for event in report["events"]:
        label = event["event_type"].rsplit("/", 1)[-1]
        out.print(
            f"  {event['occurred_at'].isoformat(timespec='seconds')} {label} "
            f"{event['outcome']}: {event['detail']}",
            markup=False,
            highlight=False,
        )


def _bytes(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


# --- objects -----------------------------------------------------------------------------------


def _object_id(text: str) -> str:
    from arkhiv.identifiers import IdentifierError, normalize

    try:
        return normalize(text)
    except IdentifierError as exc:
        raise typer.BadParameter(str(exc), param_hint="ID") from None


@app.command()
def show(
    object_id: str = typer.Argument(..., metavar="ID", help="The object's ARK."),
    as_json: bool = JSON_OPTION,
) -> None:
    """An archived object: versions, the head version's files with formats and digests, its
    PREMIS events and the state of its copies on each store."""
    from arkhiv.aip.show import object_document
    from arkhiv.catalog.database import reading

    identifier = _object_id(object_id)
    with _opened() as archive, reading(archive.engine) as conn:
        document = object_document(conn, identifier)
        # Work under way or done on the object (the catalog's, not the AIP's: kept apart).
        jobs = [
            {
                "id": job.id,
                "kind": job.kind,
                "status": job.status,
                "attempts": f"{job.attempts}/{job.max_attempts}",
                "progress": job.progress,
                "message": job.progress_message,
                "error": (job.last_error or "").splitlines()[0] if job.last_error else None,
            }
            for job in archive.queue.of_object(identifier)
        ]
    if document is None:
        raise ArkhivError(f"no object {identifier}")
    if as_json:
        _print_json({**document, "jobs": jobs})
        return
    out.print(f"[bold]{document['id']}[/bold]  {document['title']}", markup=True)
    out.print(
        f"  {document['object_type']}, {document['status']}, v{document['head_version']}, "
        f"created {document['created_at']}, submission {document['submission']}"
    )
    versions = Table(title="Versions")
    for column in ("version", "created", "user", "message"):
        versions.add_column(column)
    for version in document["versions"]:
        versions.add_row(
            f"v{version['number']}",
            version["created_at"],
            version["user"]["name"] or "",
            version["message"],
        )
    out.print(versions)
    files = Table(title=f"Files in v{document['head_version']}")
    for column in ("path", "role", "size", "format", "sha512", "copies"):
        files.add_column(column)
    for entry in document["files"]:
        fmt = entry["format"]
        copies = ", ".join(f"{store} {state}" for store, state in sorted(entry["replicas"].items()))
        files.add_row(
            entry["logical_path"],
            entry["role"],
            _bytes(entry["size"]),
            " ".join(filter(None, (fmt["puid"], fmt["mime_type"]))),
            entry["digests"]["sha512"][:16] + "…",
            copies,
        )
    out.print(files)
    events = Table(title="Events")
    for column in ("time", "event", "outcome", "detail"):
        events.add_column(column)
    for event in document["events"]:
        events.add_row(event["occurred_at"], event["label"], event["outcome"], event["detail"])
    out.print(events)
    if jobs:
        table = Table(title="Jobs")
        for column in ("job", "kind", "status", "attempts", "progress"):
            table.add_column(column)
        for job in jobs:
            shown = f"{job['progress']:.0%} {job['message'] or ''}" if job["progress"] else ""
            table.add_row(
                str(job["id"]),
                job["kind"],
                job["status"],
                job["attempts"],
                job["error"] if job["status"] == "dead" else shown,
            )
        out.print(table)


@app.command()
def objects(
    status_filter: str | None = typer.Option(None, "--status", help="Only objects in this state."),
    limit: int = typer.Option(100, "--limit", min=1),
    as_json: bool = JSON_OPTION,
) -> None:
    """List archived objects, most recently changed first."""
    from arkhiv.catalog.database import reading
    from arkhiv.catalog.objects import list_objects

    with _opened() as archive, reading(archive.engine) as conn:
        rows = list_objects(conn, status_filter, limit)
    if as_json:
        _print_json(rows)
        return
    table = Table()
    for column in ("id", "status", "head", "type", "title"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["id"], row["status"], f"v{row['head_version']}", row["object_type"], row["title"]
        )
    out.print(table)


@app.command()
def describe(
    object_id: str = typer.Argument(..., metavar="ID", help="The object's ARK."),
    assignments: list[str] = typer.Option(
        ..., "--set", help="FIELD=VALUE (repeatable); an empty VALUE clears an optional field."
    ),
    user: str | None = typer.Option(None, "--as", help="Who makes the edit (default: you)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Edit an object's description. The change becomes a new version with regenerated METS,
    PREMIS and CIDOC-CRM and a PREMIS metadata-modification event. Fields: title, object_type,
    type_detail, description, inventory_number, place_name, country, period, date_start,
    date_end, condition, condition_note, license, license_text, rights_holder."""
    import getpass

    from arkhiv.aip.description import DescriptionError
    from arkhiv.jobs.archiving import describe_object

    identifier = _object_id(object_id)
    edits: dict[str, str] = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--set")
        edits[name.strip()] = value
    with _opened() as archive:
        try:
            result, changes = describe_object(archive, identifier, edits, user or getpass.getuser())
        except DescriptionError as exc:
            raise ArkhivError(f"{identifier}: {exc}") from None
    document = {
        "object": identifier,
        "changed": {name: {"from": old, "to": new} for name, (old, new) in changes.items()},
        "version": result.as_dict() if result else None,
    }
    if as_json:
        _print_json(document)
    elif result is None:
        out.print(f"{identifier}: nothing changed")
    else:
        out.print(f"{identifier}: v{result.number} written ({', '.join(sorted(changes))})")
    if result is not None and result.status != "preserved":
        sys.exit(1)


@app.command()
def reconstruct(
    object_id: str = typer.Argument(..., metavar="ID", help="The object's ARK."),
    force: bool = typer.Option(
        False, "--force", help="Make the model again, replacing the one the object has."
    ),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Run it here now (default), or only queue it for workers."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make the object's 3D model from its capture (photos, depth frames, point cloud or an
    uploaded mesh) and store it as a new version with the reconstruction report. Exit 1 when
    the capture cannot become a model; the reason is printed and the object is unchanged."""
    from arkhiv.catalog import objects as catalog_objects
    from arkhiv.catalog.database import reading, writing
    from arkhiv.jobs.reconstruction import queue_reconstruction

    identifier = _object_id(object_id)
    with _opened() as archive:
        with reading(archive.engine) as conn:
            if catalog_objects.get_object(conn, identifier) is None:
                raise ArkhivError(f"no object {identifier}")
        with writing(archive.engine) as conn:
            job_id, created = queue_reconstruction(conn, archive, identifier, force=force)
        queued = archive.queue.get(job_id)
        if force and not queued.payload.get("force"):
            err.print(
                f"a reconstruction of {identifier} is already running (job {job_id}); "
                "run this again with --force once it has finished",
                markup=False,
            )
        if not wait:
            document = {"object": identifier, "job": job_id, "queued": created}
            if as_json:
                _print_json(document)
            else:
                state = "queued" if created else "already queued"
                out.print(f"{identifier}: reconstruction job {job_id} {state}")
            return
        with err.status(f"reconstructing {identifier}"):
            job = _run_until_finished(archive, job_id)
    result = job.result or {}
    if as_json:
        _print_json({"job": job_id, **result})
    elif result.get("status") == "reconstructed":
        made = f"from the {result['pipeline']} capture " if result.get("pipeline") else ""
        took = f"in {result['seconds']:.0f} s" if result.get("seconds") is not None else ""
        out.print(f"{identifier}: v{result['version']} written: 3D model {made}{took}")
    else:
        out.print(f"{identifier}: {result.get('status', job.status)}; nothing to do")


@app.command()
def export(
    object_id: str = typer.Argument(..., metavar="ID", help="The object's ARK."),
    fmt: str = typer.Option(..., "--format", "-f", help="glb, gltf, obj, ply, stl, 3mf, usdz..."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write it."),
) -> None:
    """Write the object's model in a format (made from the glTF master; formats with textures
    beside the model come as a ZIP). `arkhiv export --format list` shows the formats."""
    import getpass
    import shutil

    from arkhiv.access.exports import export_object
    from arkhiv.access.viewers import Viewer
    from arkhiv.dissemination.formats import describe_formats

    if fmt == "list":
        for item in describe_formats():
            out.print(f"{item['name']:10s} {item['title']}", markup=False, highlight=False)
        return
    identifier = _object_id(object_id)
    with _opened() as archive:
        # Whoever runs the command holds the archive's home: an administrator.
        operator = Viewer(f"cli:{getpass.getuser()}", "admin", archive.settings.access)
        made = export_object(archive, operator, identifier, fmt)
        shutil.copyfile(made.path, output)
    out.print(f"{identifier}: {fmt} written to {output} ({_bytes(output.stat().st_size)})")


@app.command()
def dip(
    object_id: str = typer.Argument(..., metavar="ID", help="The object's ARK."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the .zip."),
    formats: str = typer.Option("glb,obj,ply,stl", "--formats", help="Comma-separated."),
    role: str = typer.Option("researcher", "--role", help="Make it as this role would receive it."),
    originals: bool = typer.Option(False, "--originals", help="Add the capture as submitted."),
    recipient: str = typer.Option("", "--for", help="Who receives it (recorded in PREMIS)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Make a dissemination package: a BagIt zip with the model in the formats asked for, the
    public metadata (JSON-LD, Dublin Core), a README with citation and licence, a METS and
    checksums. A PREMIS dissemination event records who received what."""
    import getpass

    from arkhiv.access.dips import build_dip
    from arkhiv.access.viewers import Viewer

    identifier = _object_id(object_id)
    with _opened() as archive:
        if role not in archive.settings.access.roles:
            raise ArkhivError(
                f"no role {role}; the roles are {', '.join(archive.settings.access.roles)}"
            )
        viewer = Viewer(recipient or f"cli:{getpass.getuser()}", role, archive.settings.access)
        chosen = tuple(item.strip() for item in formats.split(",") if item.strip())
        result = build_dip(archive, viewer, identifier, output, chosen, originals)
    if as_json:
        _print_json(result.as_dict())
    else:
        out.print(
            f"{output}: {len(result.files)} files, {_bytes(result.bytes)}, "
            f"sha256 {result.sha256[:16]}…"
        )
        for item in result.left_out:
            err.print(f"left out {item['file']}: {item['why']}", markup=False)


@app.command("rebuild-catalog")
def rebuild_catalog(as_json: bool = JSON_OPTION) -> None:
    """Rebuild an empty catalog from the OCFL objects and event journals on the stores: objects,
    versions, files, events, submissions, sealed locations and replicas. Move the old catalog
    aside first (the catalog is an index; the AIPs are the truth). Exit 1 if anything could not
    be restored."""
    from arkhiv.aip.rebuild import rebuild_catalog as rebuild

    with _opened() as archive:
        report = rebuild(archive)
    if as_json:
        _print_json(report.as_dict())
    else:
        out.print(f"{len(report.objects)} object(s) restored from the stores")
        for problem in report.problems:
            err.print(f"problem: {problem}", markup=False, highlight=False)
    if report.problems:
        sys.exit(1)


@app.command()
def audit(
    store: str | None = typer.Option(None, "--store", help="Only this store's replicas."),
    object_id: str | None = typer.Option(None, "--object", help="Only this object (an ARK)."),
    repair: bool = typer.Option(True, "--repair/--no-repair", help="Repair failures (default)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Read replicas back and compare every digest with the inventory; repair failures from a
    good copy. Exit 1 when anything is left damaged or at risk, or a check could not be made."""
    from arkhiv.fixity.audit import audit as run_audit

    identifier = _object_id(object_id) if object_id else None
    with _opened() as archive:
        if store is not None:
            archive.settings.store(store)  # an unknown name is a usage error
        report = run_audit(archive, store=store, object_id=identifier, repair=repair)
    document = report.as_dict()
    if as_json:
        _print_json(document)
    else:
        out.print(
            f"{document['checked']} replica(s) checked, {document['bytes_read']} bytes read in "
            f"{document['seconds']:.1f} s; {len(report.failures)} failed, "
            f"{len(report.repaired)} repaired"
        )
        for check in report.failures:
            out.print(
                f"  {check.outcome.upper()} {check.store}: {check.object_id} "
                f"{check.content_path} ({check.detail})",
                markup=False,
            )
        for entry in report.damaged_files:
            out.print(
                f"  DAMAGED {entry['object']}: {entry['file']} has no good copy", markup=False
            )
        for object_key_, status_ in sorted(report.objects.items()):
            if status_ != "preserved":
                out.print(f"  {object_key_}: {status_}", markup=False)
    if not report.clean:
        sys.exit(1)


users_app = typer.Typer(help="People who use the archive, and their roles.", no_args_is_help=True)
app.add_typer(users_app, name="users")
tokens_app = typer.Typer(help="API tokens (shown once when created).", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


PASSWORD_STDIN_OPTION = typer.Option(
    False, "--password-stdin", help="Read the password from the first line of standard input."
)


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    return typer.prompt("New password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    username: str = typer.Argument(..., help="A sign-in name: letters, digits, . _ @ -"),
    role: str = typer.Option(..., "--role", help="One of the access policy's roles."),
    display_name: str = typer.Option("", "--name", help="How the person is shown."),
    password_stdin: bool = PASSWORD_STDIN_OPTION,
) -> None:
    """Add a user with a role from the access policy (public, researcher, museum, partner,
    officer, admin by default). Without a password the user can use API tokens but not sign in
    to the web pages (see `arkhiv users passwd`)."""
    from arkhiv.access.accounts import check_new_password, set_password
    from arkhiv.access.viewers import create_user
    from arkhiv.catalog.database import writing

    password = _new_password(True) if password_stdin else None
    if password is not None:
        check_new_password(username, password)  # before opening the archive: nothing to undo
    with _opened() as archive, writing(archive.engine) as conn:
        create_user(conn, archive.settings.access, username, role, display_name)
        if password is not None:
            set_password(conn, username, password, actor="cli")
    out.print(f"user {username} added with role {role}")


@users_app.command("passwd")
def users_passwd(
    username: str = typer.Argument(..., help="Whose password to set."),
    password_stdin: bool = PASSWORD_STDIN_OPTION,
    revoke_tokens: bool = typer.Option(
        False, "--revoke-tokens", help="Also revoke all of the user's API tokens."
    ),
) -> None:
    """Set a user's password for signing in to the web pages (asked twice unless read from
    standard input). Ends the user's web sessions, and with --revoke-tokens their tokens."""
    from arkhiv.access.accounts import check_new_password, set_password
    from arkhiv.access.viewers import revoke_all_tokens
    from arkhiv.catalog.database import writing

    password = _new_password(password_stdin)
    check_new_password(username, password)
    with _opened() as archive, writing(archive.engine) as conn:
        ended = set_password(conn, username, password, actor="cli")
        revoked = revoke_all_tokens(conn, username, actor="cli") if revoke_tokens else 0
    tokens = f", {revoked} API token(s) revoked" if revoke_tokens else ""
    out.print(f"password of {username} set; {ended} web session(s) ended{tokens}")


@users_app.command("role")
def users_role(
    username: str = typer.Argument(..., help="Whose role to change."),
    role: str = typer.Argument(..., help="The new role (see [access.roles])."),
) -> None:
    """Give a user another role, from their next request on. Packages built for the old role
    are refused to them where their contents need what the new role lacks."""
    from arkhiv.access.accounts import set_role
    from arkhiv.catalog.database import writing

    with _opened() as archive, writing(archive.engine) as conn:
        old = set_role(conn, archive.settings.access, username, role, actor="cli")
    out.print(f"user {username}: role {old} -> {role}")


@users_app.command("disable")
def users_disable(username: str = typer.Argument(..., help="Who to shut out.")) -> None:
    """Disable a user at once: web sessions end and API tokens stop working."""
    from arkhiv.access.accounts import set_disabled
    from arkhiv.catalog.database import writing

    with _opened() as archive, writing(archive.engine) as conn:
        ended = set_disabled(conn, username, True, actor="cli")
    out.print(f"user {username} disabled; {ended} web session(s) ended")


@users_app.command("enable")
def users_enable(username: str = typer.Argument(..., help="Who to let in again.")) -> None:
    """Enable a disabled user again (their old sessions stay ended)."""
    from arkhiv.access.accounts import set_disabled
    from arkhiv.catalog.database import writing

    with _opened() as archive, writing(archive.engine) as conn:
        set_disabled(conn, username, False, actor="cli")
    out.print(f"user {username} enabled")


@tokens_app.command("create")
def tokens_create(
    username: str = typer.Argument(..., help="Whose token it is."),
    name: str = typer.Option("", "--name", help="What it is for, e.g. the machine using it."),
    days: float | None = typer.Option(None, "--days", min=0.001, help="Expires after this."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API token for a user; it is printed once and cannot be shown again."""
    from datetime import timedelta

    from arkhiv.access.viewers import issue_token
    from arkhiv.catalog.database import writing

    valid_for = timedelta(days=days) if days else None
    with _opened() as archive, writing(archive.engine) as conn:
        token_id, token = issue_token(conn, username, name, valid_for, actor="cli")
    if as_json:
        _print_json({"id": token_id, "user": username, "token": token})
    else:
        out.print(f"token {token_id} for {username} (shown once, keep it secret):")
        out.print(token, markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(
    username: str = typer.Argument(..., help="Whose tokens."), as_json: bool = JSON_OPTION
) -> None:
    """A user's tokens: number, what for, made, expires, last used, state (never the tokens)."""
    from arkhiv.access.viewers import tokens_of
    from arkhiv.catalog.database import reading

    with _opened() as archive, reading(archive.engine) as conn:
        found = tokens_of(conn, username)
    if as_json:
        _print_json(found)
        return
    for token in found:
        state = "valid" if token["valid"] else ("revoked" if token["revoked_at"] else "expired")
        expires = token["expires_at"].isoformat()[:10] if token["expires_at"] else "never"
        used = token["last_used_at"].isoformat()[:16] if token["last_used_at"] else "never"
        out.print(
            f"{token['id']:>5}  {state:8s} expires {expires}  used {used}  {token['name']}",
            markup=False,
            highlight=False,
        )


@tokens_app.command("revoke")
def tokens_revoke(token_id: int = typer.Argument(..., help="The token's number.")) -> None:
    """Revoke a token at once. Exit 1 if there is no such token still valid."""
    from arkhiv.access.viewers import revoke_token
    from arkhiv.catalog.database import writing

    with _opened() as archive, writing(archive.engine) as conn:
        revoked = revoke_token(conn, token_id, actor="cli")
    if not revoked:
        raise ArkhivError(f"no valid token {token_id}")
    out.print(f"token {token_id} revoked")


keys_app = typer.Typer(
    help="The archive key that seals precise locations: escrow on paper and recovery.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("split")
def keys_split(
    shares: int = typer.Option(..., "--shares", help="How many shares to make (at most 16)."),
    threshold: int = typer.Option(..., "--threshold", help="How many rebuild the key."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the archive key as SLIP-39 mnemonic shares, for officers to keep on paper in
    different places: any THRESHOLD of them rebuild it (`arkhiv keys recover`), fewer give
    nothing. Whoever gathers THRESHOLD shares holds every location: choose the holders as you
    would partners. The shares are printed once and stored nowhere."""
    from arkhiv.catalog import audit_log
    from arkhiv.catalog.database import writing
    from arkhiv.security.escrow import EscrowError, split_key

    with _opened() as archive:
        try:
            mnemonics = split_key(archive.key_file.read_bytes(), shares, threshold)
        except EscrowError as exc:
            raise ArkhivError(str(exc)) from None
        except OSError as exc:
            raise ArkhivError(f"the archive key cannot be read: {exc}") from None
        with writing(archive.engine) as conn:
            audit_log.append(
                conn,
                "cli",
                "keys.split",
                archive.key.key_id,
                {"shares": shares, "threshold": threshold},
            )
    if as_json:
        _print_json({"key_id": archive.key.key_id, "threshold": threshold, "shares": mnemonics})
        return
    out.print(
        f"Archive key {archive.key.key_id}: {shares} shares, any {threshold} of which rebuild it.",
        highlight=False,
    )
    for number, mnemonic in enumerate(mnemonics, 1):
        out.print(f"\nShare {number} of {shares}:\n{mnemonic}", highlight=False, soft_wrap=True)


@keys_app.command("recover")
def keys_recover(
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Rebuild a lost archive key from SLIP-39 shares read from standard input (one share per
    line) and put it back in ARKHIV_HOME/keys/archive.key; then say how many sealed locations
    it opens. Refused, changing nothing, with too few shares or over a different key."""
    from arkhiv.security.escrow import EscrowError, combine_shares, install_key

    lines = sys.stdin.read().splitlines()
    with _opened() as archive:
        try:
            recovered = combine_shares(lines)
            written = install_key(recovered, archive.key_file)
        except EscrowError as exc:
            raise ArkhivError(str(exc)) from None
        opened, sealed = _sealed_under(archive, recovered.key_id)
    document = {
        "key_id": recovered.key_id,
        "shares_used": recovered.shares_used,
        "written": written,
        "sealed_locations": sealed,
        "sealed_under_this_key": opened,
    }
    if as_json:
        _print_json(document)
    else:
        where = "written to" if written else "already in"
        out.print(
            f"archive key {recovered.key_id} rebuilt from {recovered.shares_used} shares, "
            f"{where} {archive.key_file}; {opened} of {sealed} sealed locations are under it",
            highlight=False,
        )
    if sealed and not opened:
        raise ArkhivError(
            "the rebuilt key seals none of this archive's locations: these shares belong to "
            "another archive or an earlier key"
        )


@keys_app.command("status")
def keys_status(as_json: bool = typer.Option(False, "--json")) -> None:
    """The archive key in use (its id, never the key) and the sealed locations under each key."""
    with _opened() as archive:
        try:
            key_id = archive.key.key_id
        except ConfigError as exc:
            key_id, problem = None, str(exc)
        else:
            problem = None
        counts = _sealed_by_key(archive)
    document = {
        "key_file": str(archive.key_file),
        "key_id": key_id,
        "problem": problem,
        "sealed_locations_by_key": counts,
    }
    if as_json:
        _print_json(document)
    else:
        out.print(f"archive key: {key_id or problem}", highlight=False)
        for each, count in counts.items():
            mark = " (this key)" if each == key_id else " (NOT this key)"
            out.print(f"  {count} sealed location(s) under {each}{mark}", highlight=False)
    if problem or any(each != key_id for each in counts):
        raise ArkhivError("some sealed locations cannot be opened with the key in place")


def _sealed_by_key(archive) -> dict[str, int]:
    from sqlalchemy import func, select

    from arkhiv.catalog.database import reading
    from arkhiv.catalog.tables import sealed_locations

    with reading(archive.engine) as conn:
        rows = conn.execute(
            select(sealed_locations.c.key_id, func.count()).group_by(sealed_locations.c.key_id)
        ).all()
    return {key_id: count for key_id, count in rows}


def _sealed_under(archive, key_id: str) -> tuple[int, int]:
    counts = _sealed_by_key(archive)
    return counts.get(key_id, 0), sum(counts.values())


report_app = typer.Typer(help="Reports for preservation officers.", no_args_is_help=True)
app.add_typer(report_app, name="report")


class ReportFormat(StrEnum):
    json = "json"
    csv = "csv"
    html = "html"


@report_app.command("fixity")
def report_fixity(
    output_format: ReportFormat = typer.Option(ReportFormat.json, "--format", "-f"),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write here, not stdout."),
) -> None:
    """Per store and per object: copies, regions, last audit and outcome, at-risk and damaged
    objects (naming their files), repairs done, bytes audited per day. Exit 1 when any object is
    at risk or damaged."""
    from arkhiv.catalog.database import reading
    from arkhiv.fixity.report import fixity_report, to_csv, to_html

    with _opened() as archive, reading(archive.engine) as conn:
        report = fixity_report(conn, archive)
    if output_format == ReportFormat.json:
        text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    elif output_format == ReportFormat.csv:
        text = to_csv(report)
    else:
        text = to_html(report)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    if report["at_risk"] or report["damaged"]:
        sys.exit(1)


def main() -> None:
    try:
        app()
    except ArkhivError as exc:
        err.print(f"arkhiv: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
