"""list indexes per project: counts of dates, runs, origin, id prefixes and batch sizes
read indexes only

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 18:00:00

Lists are read one ordered walk per project (scheduler.listing), and a filter without a
maintained total is counted: these indexes lead with project_id, so such a count reads
the index alone (dates, runs, origin, id prefixes, jobs per batch). Duplicates keep the
dates, runs and origin ones small: a batch's jobs share created_at. ix_jobs_created
served lists over several projects only through an incremental sort that could read
every job; ix_jobs_project_created orders each project's jobs, as
ix_batches_project_created_id does batches (so ix_batches_created goes too).
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_batches_created', table_name='batches')
    op.drop_index('ix_batches_jobs_count', table_name='batches')
    op.create_index('ix_batches_project_jobs_count', 'batches', ['project_id', 'jobs_count'])
    op.drop_index('ix_jobs_created', table_name='jobs')
    op.drop_index('ix_jobs_runs', table_name='jobs')
    op.drop_index('ix_jobs_origin', table_name='jobs')
    op.create_index('ix_jobs_project_created_at', 'jobs', ['project_id', 'created_at'])
    op.create_index('ix_jobs_project_runs', 'jobs', ['project_id', 'runs'])
    op.create_index('ix_jobs_project_origin', 'jobs', ['project_id', 'origin'])
    op.drop_index('ix_jobs_id_prefix', table_name='jobs')
    op.create_index(
        'ix_jobs_project_id_prefix', 'jobs', ['project_id', 'id'],
        postgresql_ops={'id': 'varchar_pattern_ops'},
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_project_id_prefix', table_name='jobs')
    op.create_index(
        'ix_jobs_id_prefix', 'jobs', ['id'], postgresql_ops={'id': 'varchar_pattern_ops'}
    )
    op.drop_index('ix_jobs_project_origin', table_name='jobs')
    op.drop_index('ix_jobs_project_runs', table_name='jobs')
    op.drop_index('ix_jobs_project_created_at', table_name='jobs')
    op.create_index('ix_jobs_origin', 'jobs', ['origin'])
    op.create_index('ix_jobs_runs', 'jobs', ['runs'])
    op.create_index('ix_jobs_created', 'jobs', ['created_at'])
    op.drop_index('ix_batches_project_jobs_count', table_name='batches')
    op.create_index('ix_batches_jobs_count', 'batches', ['jobs_count'])
    op.create_index('ix_batches_created', 'batches', ['created_at'])
