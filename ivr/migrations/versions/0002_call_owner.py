"""Which node owns each live call, so a starting node closes only its own and survivors end a dead node's.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("node_id", sa.String(64)))
        batch.create_index("ix_calls_node_id", ["node_id"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_node_id")
        batch.drop_column("node_id")
