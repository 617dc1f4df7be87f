import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from arkhiv.catalog import audit_log, migrate
from arkhiv.catalog.database import create_catalog_engine, reading, writing
from arkhiv.catalog.stores import list_stores, sync_stores
from arkhiv.catalog.tables import audit_log as audit_log_table
from arkhiv.catalog.tables import metadata, objects, versions

REQUIRED_TABLES = {
    "objects",
    "versions",
    "files",
    "version_files",
    "premis_events",
    "event_agents",
    "agents",
    "stores",
    "replicas",
    "jobs",
    "users",
    "api_tokens",
    "audit_log",
    "leases",
    "schedule",
}


@pytest.fixture
def engine(catalog_url):
    engine = create_catalog_engine(catalog_url)
    yield engine
    engine.dispose()


def test_migrations_build_exactly_the_declared_schema(engine):
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) >= REQUIRED_TABLES
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []


def test_downgrade_to_nothing_and_back(engine):
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert not REQUIRED_TABLES & set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= REQUIRED_TABLES


def test_ensure_current_is_idempotent_and_safe_when_raced(engine, catalog_url):
    errors = []

    def start_up():
        try:
            other = create_catalog_engine(catalog_url)
            migrate.ensure_current(other)
            other.dispose()
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=start_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert migrate.ensure_current(engine) is False


def test_sqlite_catalog_uses_wal_and_foreign_keys(tmp_path):
    engine = create_catalog_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    migrate.upgrade(engine)
    with reading(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_foreign_keys_are_enforced(engine):
    migrate.upgrade(engine)
    with pytest.raises(IntegrityError), writing(engine) as conn:
        conn.execute(
            versions.insert().values(
                object_id="ark:/99999/missing",
                number=1,
                created_at=_now(conn),
            )
        )


def test_failed_transaction_leaves_nothing(engine):
    migrate.upgrade(engine)
    with pytest.raises(RuntimeError), writing(engine) as conn:
        at = _now(conn)
        conn.execute(
            objects.insert().values(
                id="ark:/99999/a1", status="ingesting", created_at=at, updated_at=at
            )
        )
        raise RuntimeError("ingest failed half-way")
    with reading(engine) as conn:
        assert conn.execute(select(objects)).all() == []


def test_audit_log_is_append_only_and_hash_chained(engine):
    migrate.upgrade(engine)
    with writing(engine) as conn:
        first = audit_log.append(conn, "officer:ana", "location.precise.view", "ark:/1/x", {"n": 1})
        audit_log.append(conn, "partner:icom", "location.precise.view", "ark:/1/y")
        audit_log.append(conn, "admin", "policy.change", "", {"min_copies": [3, 4]})
    assert audit_log.verify(engine) is None

    with pytest.raises(DBAPIError, match="append-only"), writing(engine) as conn:
        conn.execute(update(audit_log_table).values(actor="nobody"))
    with pytest.raises(DBAPIError, match="append-only"), writing(engine) as conn:
        conn.execute(audit_log_table.delete().where(audit_log_table.c.seq == first))
    assert audit_log.verify(engine) is None

    # Someone with the database owner's rights removes the guard and edits history:
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(
            update(audit_log_table)
            .where(audit_log_table.c.seq == first)
            .values(target="ark:/1/other")
        )
    assert audit_log.verify(engine) == first


def test_store_sync_adds_updates_and_retires(engine, tmp_path):
    from arkhiv.config import LocalStoreSettings

    migrate.upgrade(engine)

    def local(name, region):
        return LocalStoreSettings(kind="local", name=name, region=region, path=tmp_path / name)

    with writing(engine) as conn:
        sync_stores(conn, [local("a", "r1"), local("b", "r2")])
    with writing(engine) as conn:
        sync_stores(conn, [local("a", "r9"), local("c", "r3")])
    with reading(engine) as conn:
        rows = {row["name"]: row for row in list_stores(conn)}
    assert rows["a"]["region"] == "r9" and rows["a"]["active"]
    assert not rows["b"]["active"]
    assert rows["c"]["active"]


def _now(conn):
    from arkhiv.catalog.database import now

    return now(conn)
