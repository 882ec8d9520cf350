"""fair share (project weights, caps, usage), webhooks (secrets, outbox), jobs' size

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 19:00:00
"""

from __future__ import annotations

import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BACKLOG = sa.text("status = 'PENDING' AND dispatched_at IS NULL")
DUE = sa.text("status = 'PENDING'")
DONE = sa.text("status = 'DONE'")


def upgrade() -> None:
    op.add_column('projects', sa.Column('weight', sa.Float(), server_default='1', nullable=False))
    op.add_column('projects', sa.Column('max_running_per_device', sa.Integer(), nullable=True))
    op.add_column('projects', sa.Column('max_waiting_jobs', sa.Integer(), nullable=True))
    op.add_column('projects', sa.Column('max_jobs_per_batch', sa.Integer(), nullable=True))
    op.add_column('projects', sa.Column('webhook_secret', sa.String(length=100), nullable=True))
    op.add_column('projects', sa.Column('previous_webhook_secret', sa.String(length=100), nullable=True))
    op.add_column('projects', sa.Column('webhook_secret_rotated_at', sa.DateTime(timezone=True), nullable=True))
    connection = op.get_bind()
    for (project_id,) in connection.execute(sa.text("SELECT id FROM projects")).all():
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        connection.execute(
            sa.text("UPDATE projects SET webhook_secret = :s WHERE id = :id"),
            {"s": secret, "id": project_id},
        )
    op.create_table(
        'project_usage',
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('device_type', sa.String(length=16), nullable=False),
        sa.Column('decayed_run_s', sa.Float(), nullable=False),
        sa.Column('decayed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('jobs', sa.Integer(), nullable=False),
        sa.Column('run_s', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('project_id', 'device_type'),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('batch_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=36), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_deliveries_batch', 'webhook_deliveries', ['batch_id', 'created_at'])
    op.create_index(
        'ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'],
        postgresql_where=DUE, sqlite_where=DUE,
    )
    op.add_column('jobs', sa.Column('atoms', sa.Integer(), nullable=True))
    op.add_column('jobs', sa.Column('duration_ns', sa.Integer(), nullable=True))
    op.create_index(
        'ix_jobs_done_by_end', 'jobs', ['device_type', 'end_timestamp'],
        postgresql_where=DONE, sqlite_where=DONE,
    )
    # The backlog per (device, level, project), in FIFO order: fair share walks it per
    # project; strict priority merges the projects' heads.
    op.drop_index('ix_jobs_backlog', table_name='jobs')
    op.create_index(
        'ix_jobs_backlog', 'jobs',
        ['device_type', 'priority_rank', 'project_id', 'created_at', 'batch_id', 'creation_order'],
        postgresql_where=BACKLOG, sqlite_where=BACKLOG,
    )


def downgrade() -> None:
    op.drop_index('ix_jobs_backlog', table_name='jobs')
    op.create_index(
        'ix_jobs_backlog', 'jobs',
        ['device_type', 'priority_rank', 'created_at', 'batch_id', 'creation_order'],
        postgresql_where=BACKLOG, sqlite_where=BACKLOG,
    )
    op.drop_index('ix_jobs_done_by_end', table_name='jobs')
    op.drop_column('jobs', 'duration_ns')
    op.drop_column('jobs', 'atoms')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_batch', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('project_usage')
    for column in ('webhook_secret_rotated_at', 'previous_webhook_secret', 'webhook_secret',
                   'max_jobs_per_batch', 'max_waiting_jobs', 'max_running_per_device', 'weight'):
        op.drop_column('projects', column)
