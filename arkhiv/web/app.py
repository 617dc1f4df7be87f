"""The FastAPI application that `arkhiv serve` runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse

from arkhiv import __version__
from arkhiv.archive import Archive
from arkhiv.errors import ArkhivError, CatalogUnavailable, ConfigError
from arkhiv.jobs.scheduler import Scheduler
from arkhiv.jobs.worker import Worker

log = logging.getLogger("arkhiv.web")


def create_app(archive: Archive, *, embedded_worker: bool | None = None) -> FastAPI:
    """`embedded_worker` (default: the `server.embedded_worker` setting) runs jobs and the
    scheduler inside the server, for the one-machine archive."""
    if embedded_worker is None:
        embedded_worker = archive.settings.server.embedded_worker

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        background = _Background(archive, embedded_worker)
        background.start()
        try:
            yield
        finally:
            background.stop()

    app = FastAPI(
        title="Arkhiv",
        version=__version__,
        description="Preservation archive for 3D cultural heritage.",
        lifespan=lifespan,
    )
    app.state.archive = archive

    @app.exception_handler(CatalogUnavailable)
    async def _catalog_down(_request: Request, exc: CatalogUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(ConfigError)
    async def _misconfigured(_request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(ArkhivError)
    async def _archive_error(_request: Request, exc: ArkhivError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/api/v1/status")

    @app.get("/health", summary="Liveness and catalog reachability")
    def health() -> JSONResponse:
        try:
            archive.check_catalog()
        except CatalogUnavailable as exc:
            return JSONResponse({"status": "unavailable", "catalog": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "catalog": "ok", "version": __version__})

    @app.get("/api/v1/status", summary="Catalog, stores, job queues, object counts and policy")
    def status() -> dict[str, Any]:
        return archive.status()

    return app


class _Background:
    """The embedded worker and scheduler, on threads beside the server."""

    def __init__(self, archive: Archive, enabled: bool) -> None:
        self.archive = archive
        self.enabled = enabled
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.scheduler: Scheduler | None = None

    def start(self) -> None:
        if not self.enabled:
            return
        worker = Worker(self.archive, stop=self.stop_event)
        self.thread = threading.Thread(target=worker.run, name="embedded-worker", daemon=True)
        self.thread.start()
        if self.archive.settings.scheduler.enabled:
            self.scheduler = Scheduler(self.archive)
            self.scheduler.start()
        log.info("embedded worker %s started", worker.owner)

    def stop(self) -> None:
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if self.thread is not None:
            self.thread.join(timeout=30)
