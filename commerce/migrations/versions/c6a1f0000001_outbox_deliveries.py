"""outbox deliveries (exactly-once sends)

Revision ID: c6a1f0000001
Revises: c5a1f0000002
Create Date: 2026-12-03 10:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = 'c6a1f0000001'
down_revision: str | None = 'c5a1f0000002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
