"""The catalog's tables (SQLAlchemy Core). Alembic migrations in `migrations/versions` create them;
`tests/test_catalog_schema.py` proves the two agree."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every dialect (SQLite keeps naive text otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Identity ------------------------------------------------------------------------------------

agents = Table(
    "agents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("agent_type", String(32), nullable=False),  # software, organization, person
    Column("name", String(512), nullable=False),
    Column("version", String(128), nullable=False, server_default=""),
    Column("identifier", String(512), nullable=True),  # e.g. ISNI, ROR, a software URL
    Column("note", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("agent_type", "name", "version", name="uq_agents_identity"),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("display_name", String(256), nullable=False, server_default=""),
    Column("role", String(64), nullable=False),
    Column("password_hash", String(512), nullable=True),
    Column("agent_id", Integer, ForeignKey("agents.id"), nullable=True),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False, server_default=""),
    Column("token_hash", String(128), nullable=False, unique=True),  # never the token itself
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# Signed-in web pages: one row per session cookie, kept as its SHA-256 (like the tokens).
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_hash", String(128), nullable=False, unique=True),  # never the cookie itself
    Column(
        "user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # Signed in with an API token: the session ends when the token does.
    Column("token_id", Integer, ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True),
)

# Objects, versions, files ---------------------------------------------------------------------

objects = Table(
    "objects",
    metadata,
    Column("id", String(255), primary_key=True),  # Arkhiv's persistent identifier
    Column("title", Text, nullable=False, server_default=""),
    Column("object_type", String(128), nullable=False, server_default=""),
    # ingesting, preserved, at_risk, damaged, withdrawn
    Column("status", String(32), nullable=False, index=True),
    Column("head_version", Integer, nullable=False, server_default=text("0")),
    Column("description", JSON, nullable=True),  # the head version's description.json
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("object_id", String(255), ForeignKey("objects.id"), nullable=False),
    Column("number", Integer, nullable=False),  # OCFL v1, v2, ...
    Column("message", Text, nullable=False, server_default=""),
    Column("agent_id", Integer, ForeignKey("agents.id"), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("inventory_sha512", String(128), nullable=True),
    UniqueConstraint("object_id", "number", name="uq_versions_object_number"),
)

# One row per distinct content file of an object: OCFL stores unchanged content once, so later
# versions point at the same row through version_files.
files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("object_id", String(255), ForeignKey("objects.id"), nullable=False),
    Column("content_path", Text, nullable=False),  # path inside the OCFL object
    Column("size", BigInteger, nullable=False),
    Column("sha512", String(128), nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("fixity", JSON, nullable=False, default=dict),  # other algorithms, e.g. bag md5
    Column("puid", String(32), nullable=True),
    Column("mime_type", String(255), nullable=True),
    Column("format_name", String(255), nullable=True),
    Column("format_version", String(64), nullable=True),
    Column("format_basis", Text, nullable=True),
    Column("role", String(32), nullable=False),  # original, derivative, metadata
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("object_id", "content_path", name="uq_files_object_content_path"),
)
Index("ix_files_sha512", files.c.sha512)

version_files = Table(
    "version_files",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("logical_path", Text, primary_key=True),
    Column("file_id", Integer, ForeignKey("files.id"), nullable=False, index=True),
)

# Stores and replicas --------------------------------------------------------------------------

stores = Table(
    "stores",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("location", Text, nullable=False),
    Column("region", String(128), nullable=False),
    Column("jurisdiction", String(64), nullable=False, server_default=""),
    Column("active", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, ForeignKey("files.id"), nullable=False),
    Column("store_id", Integer, ForeignKey("stores.id"), nullable=False),
    # pending, verified, missing, mismatch, repaired
    Column("status", String(32), nullable=False),
    Column("verified_at", UTCDateTime, nullable=True),
    Column("last_audit_at", UTCDateTime, nullable=True),
    Column("last_audit_outcome", String(32), nullable=True),
    Column("last_audit_detail", Text, nullable=True),
    UniqueConstraint("file_id", "store_id", name="uq_replicas_file_store"),
)
Index("ix_replicas_store_last_audit", replicas.c.store_id, replicas.c.last_audit_at)

# Submissions: every package received, accepted or not -----------------------------------------

submissions = Table(
    "submissions",
    metadata,
    Column("id", String(64), primary_key=True),  # UUID
    # received, ingesting, accepted, rejected (in quarantine), archived, purged
    Column("status", String(32), nullable=False, index=True),
    Column("source_name", Text, nullable=False),  # the file or folder name as submitted
    Column("submitted_by", String(255), nullable=False, server_default=""),
    Column("received_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("staging_path", Text, nullable=True),
    Column("quarantine_path", Text, nullable=True),
    Column("file_count", Integer, nullable=True),
    Column("payload_bytes", BigInteger, nullable=True),
    # sha256 over the sorted (path, sha512) list of the payload: the same package twice
    Column("payload_fingerprint", String(64), nullable=True, index=True),
    Column("summary", Text, nullable=False, server_default=""),
    Column("report", JSON, nullable=True),
    Column("public_location", JSON, nullable=True),  # coarse only
    Column("object_id", String(255), ForeignKey("objects.id"), nullable=True),
)

# Precise locations, sealed with the archive key (AES-GCM); never stored in clear.
sealed_locations = Table(
    "sealed_locations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_id", String(64), ForeignKey("submissions.id"), nullable=False, index=True),
    Column("object_id", String(255), ForeignKey("objects.id"), nullable=True, index=True),
    Column("source_path", Text, nullable=False),  # which file carries it (to strip on access)
    Column("kind", String(64), nullable=False),  # exif-gps, xmp-gps, capture-metadata, ...
    Column("key_id", String(32), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# PREMIS events --------------------------------------------------------------------------------

premis_events = Table(
    "premis_events",
    metadata,
    Column("id", String(64), primary_key=True),  # a UUID, also the PREMIS eventIdentifier
    Column("object_id", String(255), ForeignKey("objects.id"), nullable=True, index=True),
    Column("submission_id", String(64), ForeignKey("submissions.id"), nullable=True, index=True),
    Column("version_number", Integer, nullable=True),
    Column("file_id", Integer, ForeignKey("files.id"), nullable=True),
    Column("event_type", String(255), nullable=False),  # id.loc.gov eventType URI
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("outcome", String(32), nullable=False),  # success, failure, warning
    Column("outcome_detail", JSON, nullable=True),
)

event_agents = Table(
    "event_agents",
    metadata,
    Column("event_id", String(64), ForeignKey("premis_events.id"), primary_key=True),
    Column("agent_id", Integer, ForeignKey("agents.id"), primary_key=True),
    Column("role", String(64), primary_key=True),  # implementer, executing program, authorizer
)

# Jobs -----------------------------------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("queue", String(64), nullable=False),
    Column("kind", String(128), nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
    # A job with the same key is not queued twice while one is queued or running.
    Column("unique_key", String(512), nullable=True),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("run_after", UTCDateTime, nullable=False),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("progress", Float, nullable=True),
    Column("progress_message", Text, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("errors", JSON, nullable=False, default=list),  # one entry per failed attempt
    Column("result", JSON, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
)
Index("ix_jobs_claim", jobs.c.queue, jobs.c.status, jobs.c.run_after)
Index(
    "uq_jobs_unique_key_active",
    jobs.c.unique_key,
    unique=True,
    sqlite_where=jobs.c.status.in_(("queued", "running")),
    postgresql_where=jobs.c.status.in_(("queued", "running")),
)

# Coordination between machines: one row per named lease (e.g. the scheduler's leadership).
leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

schedule = Table(
    "schedule",
    metadata,
    Column("task", String(128), primary_key=True),
    Column("next_run_at", UTCDateTime, nullable=False),
    Column("last_run_at", UTCDateTime, nullable=True),
    Column("last_job_id", BigInteger().with_variant(Integer, "sqlite"), nullable=True),
)

# Audit log: append-only (database triggers refuse UPDATE and DELETE), hash-chained. ------------

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(128), nullable=False),
    Column("target", String(512), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False, default=dict),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False, unique=True),
)
