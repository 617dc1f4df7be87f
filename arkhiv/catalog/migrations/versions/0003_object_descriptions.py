"""The descriptive record of each object (title, type, dating, rights... as archived in the
object's metadata/description.json), kept in the catalog for listing and search; the format
version of each file (PRONOM's, e.g. JFIF 1.01).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("description", sa.JSON(), nullable=True))
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("format_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_column("format_version")
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_column("description")
