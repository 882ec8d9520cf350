"""job counts, the backlog and in-flight indexes, unique list orders

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BACKLOG = sa.text("status = 'PENDING' AND dispatched_at IS NULL")
IN_FLIGHT = sa.text("status IN ('PENDING', 'RUNNING') AND dispatched_at IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        'job_counts',
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('user_id', sa.String(length=64), nullable=False),
        sa.Column('device_type', sa.String(length=16), nullable=False),
        sa.Column('priority_rank', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('project_id', 'user_id', 'device_type', 'priority_rank', 'status'),
    )
    op.execute(
        "INSERT INTO job_counts (project_id, user_id, device_type, priority_rank, status, n) "
        "SELECT project_id, user_id, device_type, priority_rank, status, count(*) FROM jobs "
        "GROUP BY project_id, user_id, device_type, priority_rank, status"
    )
    op.drop_index('ix_jobs_dispatch', table_name='jobs')
    op.drop_index('ix_jobs_status', table_name='jobs')
    op.drop_index('ix_jobs_project_created', table_name='jobs')
    op.drop_index('ix_batches_project_created', table_name='batches')
    op.create_index(
        'ix_jobs_backlog', 'jobs',
        ['device_type', 'priority_rank', 'created_at', 'batch_id', 'creation_order'],
        postgresql_where=BACKLOG, sqlite_where=BACKLOG,
    )
    op.create_index(
        'ix_jobs_in_flight', 'jobs', ['device_type', 'dispatched_at'],
        postgresql_where=IN_FLIGHT, sqlite_where=IN_FLIGHT,
    )
    op.create_index(
        'ix_jobs_project_created', 'jobs',
        ['project_id', 'created_at', 'batch_id', 'creation_order'],
    )
    op.create_index(
        'ix_jobs_project_status_created', 'jobs',
        ['project_id', 'status', 'created_at', 'batch_id', 'creation_order'],
    )
    op.create_index(
        'ix_batches_project_created_id', 'batches', ['project_id', 'created_at', 'id']
    )


def downgrade() -> None:
    op.drop_index('ix_batches_project_created_id', table_name='batches')
    op.drop_index('ix_jobs_project_status_created', table_name='jobs')
    op.drop_index('ix_jobs_project_created', table_name='jobs')
    op.drop_index('ix_jobs_in_flight', table_name='jobs')
    op.drop_index('ix_jobs_backlog', table_name='jobs')
    op.create_index('ix_batches_project_created', 'batches', ['project_id', 'created_at'])
    op.create_index('ix_jobs_project_created', 'jobs', ['project_id', 'created_at'])
    op.create_index('ix_jobs_status', 'jobs', ['status'])
    op.create_index(
        'ix_jobs_dispatch', 'jobs', ['device_type', 'status', 'dispatched_at', 'priority_rank']
    )
    op.drop_table('job_counts')
