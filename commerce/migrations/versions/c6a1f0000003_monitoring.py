"""monitoring reports and retraining decisions

Revision ID: c6a1f0000003
Revises: c6a1f0000002
Create Date: 2026-12-03 10:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import cartwise.platform.types


revision: str = 'c6a1f0000003'
down_revision: str | None = 'c6a1f0000002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('monitoring_report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('model_name', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=True),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('window_start', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('window_end', cartwise.platform.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reference_rows', sa.Integer(), nullable=False),
    sa.Column('current_rows', sa.Integer(), nullable=False),
    sa.Column('drift_share', sa.Float(), nullable=True),
    sa.Column('drifted_features', sa.Integer(), nullable=False),
    sa.Column('n_features', sa.Integer(), nullable=False),
    sa.Column('prediction_drift', sa.Float(), nullable=True),
    sa.Column('quality', sa.JSON(), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('breach', sa.Boolean(), nullable=False),
    sa.Column('breach_reasons', sa.JSON(), nullable=False),
    sa.Column('html_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('json_key', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('monitoring_report', schema=None) as batch_op:
        batch_op.create_index('ix_monitoring_report_area_created', ['area', 'created_at'], unique=False)

    op.create_table('retrain_decision',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('area', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('created_at', cartwise.platform.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('numbers', sa.JSON(), nullable=False),
    sa.Column('report_id', sa.Integer(), nullable=True),
    sa.Column('version_before', sa.Integer(), nullable=True),
    sa.Column('version_after', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['report_id'], ['monitoring_report.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrain_decision', schema=None) as batch_op:
        batch_op.create_index('ix_retrain_decision_area_created', ['area', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('retrain_decision', schema=None) as batch_op:
        batch_op.drop_index('ix_retrain_decision_area_created')

    op.drop_table('retrain_decision')
    with op.batch_alter_table('monitoring_report', schema=None) as batch_op:
        batch_op.drop_index('ix_monitoring_report_area_created')

    op.drop_table('monitoring_report')
