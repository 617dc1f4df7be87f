"""Submissions (every package received), precise locations sealed with the archive key, and
PREMIS events tied to a submission before it becomes an object.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from arkhiv.catalog.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("submitted_by", sa.String(length=255), server_default="", nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("staging_path", sa.Text(), nullable=True),
        sa.Column("quarantine_path", sa.Text(), nullable=True),
        sa.Column("file_count", sa.Integer(), nullable=True),
        sa.Column("payload_bytes", sa.BigInteger(), nullable=True),
        sa.Column("payload_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("summary", sa.Text(), server_default="", nullable=False),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("public_location", sa.JSON(), nullable=True),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["object_id"], ["objects.id"], name=op.f("fk_submissions_object_id_objects")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_submissions_payload_fingerprint"), ["payload_fingerprint"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_submissions_status"), ["status"], unique=False)

    op.create_table(
        "sealed_locations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("submission_id", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["object_id"], ["objects.id"], name=op.f("fk_sealed_locations_object_id_objects")
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["submissions.id"],
            name=op.f("fk_sealed_locations_submission_id_submissions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_locations")),
    )
    with op.batch_alter_table("sealed_locations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sealed_locations_object_id"), ["object_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_sealed_locations_submission_id"), ["submission_id"], unique=False
        )

    with op.batch_alter_table("premis_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submission_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_premis_events_submission_id"), ["submission_id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_premis_events_submission_id_submissions"),
            "submissions",
            ["submission_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("premis_events", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_premis_events_submission_id_submissions"), type_="foreignkey"
        )
        batch_op.drop_index(batch_op.f("ix_premis_events_submission_id"))
        batch_op.drop_column("submission_id")

    with op.batch_alter_table("sealed_locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_locations_submission_id"))
        batch_op.drop_index(batch_op.f("ix_sealed_locations_object_id"))

    op.drop_table("sealed_locations")
    with op.batch_alter_table("submissions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_submissions_status"))
        batch_op.drop_index(batch_op.f("ix_submissions_payload_fingerprint"))

    op.drop_table("submissions")
