"""The command line: `arkhiv COMMAND`. Exit status 0 success, 1 the archive found a problem,
2 usage or configuration error. Read commands take `--json` and print one JSON document."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from arkhiv import __version__
from arkhiv.errors import ArkhivError

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


@app.callback()
def _main(
    home: Path | None = typer.Option(
        None, "--home", envvar="ARKHIV_HOME", help="Archive folder (default ./arkhiv-data)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    state.home = home
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )
    if not verbose:
        for noisy in ("alembic", "apscheduler", "sqlalchemy"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _open():
    from arkhiv.archive import Archive

    return Archive.open(state.home)


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
    archive = _open()
    try:
        report = archive.status()
    finally:
        archive.close()
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
    for column in ("name", "kind", "region", "jurisdiction", "location", "state", "free"):
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
            store["jurisdiction"],
            store["location"],
            health,
            _bytes(store["free_bytes"]),
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

    archive = _open()
    runner = Worker(archive, queue or None, burst=burst)
    runner.install_signal_handlers()
    periodic = None
    if (scheduler if scheduler is not None else not burst) and archive.settings.scheduler.enabled:
        periodic = Scheduler(archive, holder=runner.owner)
        periodic.start()
    queues = ", ".join(queue) if queue else "all queues"
    err.print(f"worker {runner.owner} taking jobs from {queues}" + (" (burst)" if burst else ""))
    try:
        count = runner.run()
    finally:
        if periodic is not None:
            periodic.shutdown()
        archive.close()
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

    archive = _open()
    settings = archive.settings.server
    host = host or settings.host
    port = port or settings.port
    application = create_app(archive, embedded_worker=embedded_worker)
    display_host = f"[{host}]" if ":" in host else host
    out.print(
        f"Arkhiv is serving {archive.settings.home} at [bold]http://{display_host}:{port}[/bold]"
    )
    try:
        uvicorn.run(application, host=host, port=port, log_level="info")
    finally:
        archive.close()


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Option("head", help="Target revision."),
) -> None:
    """Apply catalog migrations (also done automatically at start-up)."""
    from arkhiv.archive import Archive
    from arkhiv.catalog import migrate

    archive = Archive.open(state.home, upgrade=False)
    try:
        before = migrate.current_revision(archive.engine)
        with err.status("upgrading the catalog schema"):
            migrate.upgrade(archive.engine, revision)
        after = migrate.current_revision(archive.engine)
    finally:
        archive.close()
    out.print(f"catalog schema: {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(as_json: bool = JSON_OPTION) -> None:
    """Show the catalog's schema revision and the newest this version knows."""
    from arkhiv.archive import Archive
    from arkhiv.catalog import migrate

    archive = Archive.open(state.home, upgrade=False)
    try:
        report = {
            "revision": migrate.current_revision(archive.engine),
            "head": migrate.head_revision(),
        }
    finally:
        archive.close()
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
    archive = _open()
    try:
        found = archive.queue.list(queue, job_status, limit)
    finally:
        archive.close()
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
    archive = _open()
    try:
        job = archive.queue.get(job_id)
    finally:
        archive.close()
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
    archive = _open()
    try:
        requeued = archive.queue.requeue(job_id)
    finally:
        archive.close()
    if not requeued:
        raise ArkhivError(f"job {job_id} is not dead (or does not exist); nothing to retry")
    out.print(f"job {job_id} queued again")


def _bytes(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def main() -> None:
    try:
        app()
    except ArkhivError as exc:
        err.print(f"arkhiv: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
