"""chargebacks (payment disputes)

Revision ID: c7a1f0000001
Revises: c6a1f0000003
Create Date: 2026-12-03 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = "c7a1f0000001"
down_revision: str | None = "c6a1f0000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chargeback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dispute_id", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("order_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["order.id"],
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dispute_id"),
    )
    with op.batch_alter_table("chargeback", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chargeback_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_chargeback_payment_id"), ["payment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("chargeback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chargeback_payment_id"))
        batch_op.drop_index(batch_op.f("ix_chargeback_order_id"))

    op.drop_table("chargeback")
