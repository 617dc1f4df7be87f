"""The archive as one thing: settings, catalog engine and stores, opened together.
The CLI and the web build on this; pipeline steps receive what they need from it."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from arkhiv import __version__
from arkhiv.catalog import migrate
from arkhiv.catalog.database import create_catalog_engine, reading, redact, writing
from arkhiv.catalog.objects import count_by_status
from arkhiv.catalog.queue import JobQueue, RetryPolicy
from arkhiv.catalog.stores import (
    empty_holdings,
    list_stores,
    replica_summary,
    store_location,
    sync_stores,
)
from arkhiv.config import (
    CONFIG_FILE_NAME,
    LocalStoreSettings,
    Settings,
    StoreSettings,
    default_config_toml,
    load_settings,
    resolve_home,
)
from arkhiv.errors import ConfigError
from arkhiv.security.sealing import ArchiveKey, SealingError
from arkhiv.storage import LocalStore, Store


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in entry.items()}


def open_store(store: StoreSettings) -> Store:
    """The Store a configuration entry describes."""
    if isinstance(store, LocalStoreSettings):
        return LocalStore(store.name, store.path)
    try:
        import boto3  # noqa: F401  (the s3 extra)
    except ImportError:
        raise ConfigError(
            f"stores({store.name}): S3 stores need boto3: pip install 'arkhiv[s3]'"
        ) from None
    from arkhiv.storage.s3 import S3Store

    secret = store.secret_access_key.get_secret_value() if store.secret_access_key else None
    return S3Store(
        store.name,
        store.bucket,
        store.prefix,
        endpoint_url=store.endpoint_url,
        region_name=store.region_name,
        access_key_id=store.access_key_id,
        secret_access_key=secret,
        max_attempts=store.max_attempts,
        trust_checksums=store.trust_checksums,
    )


class Archive:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    @classmethod
    def open(cls, home: Path | str | None = None, *, upgrade: bool = True) -> Archive:
        """Open an initialized archive, bringing its catalog schema up to date."""
        settings = load_settings(home)
        engine = create_catalog_engine(settings.catalog_url, settings.catalog.echo)
        archive = cls(settings, engine)
        if upgrade:
            migrate.ensure_current(engine)
            with writing(engine) as conn:
                sync_stores(conn, settings.stores)
        return archive

    @classmethod
    def initialize(cls, home: Path | str | None = None) -> tuple[Archive, bool]:
        """Create ARKHIV_HOME with the default configuration (an existing one is kept), its
        local stores and the catalog. Returns the archive and whether the config was new."""
        home = resolve_home(home)
        config_file = home / CONFIG_FILE_NAME
        created = not config_file.exists()
        if created:
            try:
                home.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with open(fd, "w", encoding="utf-8") as handle:
                    handle.write(default_config_toml(home))
            except OSError as exc:
                raise ConfigError(f"cannot create the archive at {home}: {exc}") from None
        settings = load_settings(home)
        # Only the archive's own user may enter it (catalog, staging, packages, keys).
        home.chmod(0o700)
        archive_key = home / "keys" / "archive.key"
        try:
            ArchiveKey.load_or_create(archive_key)
        except (OSError, SealingError) as exc:
            raise ConfigError(f"archive key {archive_key}: {exc}") from None
        for store in settings.stores:
            if isinstance(store, LocalStoreSettings):
                try:
                    LocalStore(store.name, store.path).ensure()
                except OSError as exc:
                    raise ConfigError(f"stores({store.name}).path: cannot create: {exc}") from None
        return cls.open(home), created

    @property
    def staging_dir(self) -> Path:
        return self.settings.home / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.settings.home / "quarantine"

    @property
    def key_file(self) -> Path:
        return self.settings.home / "keys" / "archive.key"

    @cached_property
    def key(self) -> ArchiveKey:
        """The key that seals precise locations. Never recreated silently: without the original,
        sealed locations are lost, so a missing key is an error to fix from backup."""
        try:
            return ArchiveKey.load(self.key_file)
        except SealingError as exc:
            raise ConfigError(f"{exc}; restore it from your key backup") from None

    @cached_property
    def queue(self) -> JobQueue:
        jobs = self.settings.jobs
        return JobQueue(
            self.engine,
            RetryPolicy(jobs.max_attempts, jobs.backoff_base_seconds, jobs.backoff_max_seconds),
        )

    @cached_property
    def stores(self) -> dict[str, Store]:
        """The configured stores, by name, in configuration order."""
        return {store.name: open_store(store) for store in self.settings.stores}

    def check_catalog(self) -> None:
        with reading(self.engine) as conn:
            conn.execute(text("SELECT 1"))

    def status(self) -> dict[str, Any]:
        """Everything an operator asks first: catalog, stores, queues, objects, policy."""
        settings = self.settings
        with reading(self.engine) as conn:
            objects = count_by_status(conn)
            catalog_stores = {row["name"]: row for row in list_stores(conn)}
            held = replica_summary(conn)
        revision = migrate.current_revision(self.engine)
        head = migrate.head_revision()
        stores = []
        for store in settings.stores:
            entry: dict[str, Any] = {
                "name": store.name,
                "kind": store.kind,
                "location": store_location(store),
                "region": store.region,
                "jurisdiction": store.jurisdiction,
                "description": store.description,
                "registered": store.name in catalog_stores,
                "holdings": _jsonable(held.get(store.name) or empty_holdings()),
            }
            health = self.stores[store.name].health()
            entry.update(
                reachable=health.reachable,
                writable=health.writable,
                free_bytes=health.free_bytes,
                detail=health.detail,
            )
            stores.append(entry)
        depth = self.queue.depth()
        totals: dict[str, int] = {"queued": 0, "running": 0, "done": 0, "dead": 0}
        for states in depth.values():
            for state, count in states.items():
                totals[state] = totals.get(state, 0) + count
        return {
            "arkhiv": {"version": __version__, "home": str(settings.home)},
            "catalog": {
                "dialect": self.engine.dialect.name,
                "url": redact(settings.catalog_url),
                "revision": revision,
                "head": head,
                "up_to_date": revision == head,
            },
            "objects": {"total": sum(objects.values()), "by_status": objects},
            "stores": stores,
            "regions": sorted({store.region for store in settings.stores}),
            "jobs": {"totals": totals, "queues": depth},
            "policy": {
                "preservation": settings.preservation.model_dump(mode="json"),
                "location": settings.location.model_dump(mode="json"),
                "access": settings.access.model_dump(mode="json"),
            },
        }

    def close(self) -> None:
        self.engine.dispose()
