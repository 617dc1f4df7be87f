"""Job queue throughput: Arkhiv's worker processes against a minimal raw-driver queue.

Both drain the same number of no-op jobs from the same kind of database with the same number of
processes; the ratio shows what Arkhiv's leases, heartbeats, retries bookkeeping and SQLAlchemy
cost per job."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arkhiv.archive import Archive
from arkhiv.catalog.database import writing
from arkhiv.catalog.queue import enqueue
from arkhiv.jobs import job_handler


@job_handler("bench.noop")
def _noop(_ctx) -> None:
    return None


def arkhiv_worker(home: str, ready, go) -> None:
    from arkhiv.jobs.worker import Worker

    archive = Archive.open(home)
    worker = Worker(archive, ["bench"], burst=True)
    ready.put(1)
    go.wait()
    worker.run()
    archive.close()


def raw_worker(url: str, ready, go) -> None:
    """The baseline: claim and complete with two statements and nothing else."""
    owner = uuid.uuid4().hex
    if url.startswith("sqlite"):
        conn = sqlite3.connect(make_url(url).database, timeout=60, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=60000")
        claim = (
            "UPDATE jobs SET status='running', lease_owner=?, attempts=attempts+1 WHERE id = "
            "(SELECT id FROM jobs WHERE queue='bench' AND status='queued' ORDER BY priority DESC, "
            "run_after, id LIMIT 1) RETURNING id"
        )
        done = "UPDATE jobs SET status='done' WHERE id=? AND lease_owner=?"
        begin = "BEGIN IMMEDIATE"
    else:
        import psycopg

        conn = psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        conn.autocommit = True
        claim = (
            "UPDATE jobs SET status='running', lease_owner=%s, attempts=attempts+1 WHERE id = "
            "(SELECT id FROM jobs WHERE queue='bench' AND status='queued' ORDER BY priority DESC, "
            "run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id"
        )
        done = "UPDATE jobs SET status='done' WHERE id=%s AND lease_owner=%s"
        begin = "BEGIN"
    ready.put(1)
    go.wait()
    while True:
        conn.execute(begin)
        row = conn.execute(claim, (owner,)).fetchone()
        conn.execute("COMMIT")
        if row is None:
            break
        conn.execute(begin)
        conn.execute(done, (row[0], owner))
        conn.execute("COMMIT")
    conn.close()


def drain(target, args, workers: int) -> float:
    ctx = mp.get_context("fork")
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(*args, ready, go)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    started = time.perf_counter()
    go.set()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"a worker failed with exit code {proc.exitcode}")
    return time.perf_counter() - started


def fill(archive: Archive, jobs: int) -> None:
    with writing(archive.engine) as conn:
        for _ in range(jobs):
            enqueue(conn, "bench", "bench.noop")


def new_archive(catalog_url: str | None) -> tuple[Archive, str]:
    home = tempfile.mkdtemp(prefix="arkhiv-bench-")
    os.environ["ARKHIV_HOME"] = home
    if catalog_url:
        os.environ["ARKHIV_CATALOG__URL"] = catalog_url
    os.environ["ARKHIV_JOBS__POLL_INTERVAL_SECONDS"] = "0.01"
    archive, _ = Archive.initialize(home)
    return archive, home


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--postgres", help="server URL; a scratch database is created and dropped")
    args = parser.parse_args()

    catalog_url = None
    admin = None
    if args.postgres:
        name = f"arkhiv_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        catalog_url = make_url(args.postgres).set(database=name).render_as_string(False)

    try:
        archive, home = new_archive(catalog_url)
        url = archive.settings.catalog_url
        print(
            f"catalog: {archive.engine.dialect.name}, {args.jobs} no-op jobs, "
            f"{os.cpu_count()} cores"
        )
        print(f"{'workers':>7} {'arkhiv jobs/s':>14} {'raw jobs/s':>11} {'arkhiv/raw':>11}")
        for workers in (int(w) for w in args.workers.split(",")):
            fill(archive, args.jobs)
            arkhiv_seconds = drain(arkhiv_worker, (home,), workers)
            fill(archive, args.jobs)
            raw_seconds = drain(raw_worker, (url,), workers)
            arkhiv_rate, raw_rate = args.jobs / arkhiv_seconds, args.jobs / raw_seconds
            print(
                f"{workers:>7} {arkhiv_rate:>14.0f} {raw_rate:>11.0f} "
                f"{arkhiv_rate / raw_rate:>11.2f}"
            )
        archive.close()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
