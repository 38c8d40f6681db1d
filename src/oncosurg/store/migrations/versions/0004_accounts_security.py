"""Accounts and security: TOTP second factor, password-reset links, idle sessions, per-client sign-in
throttling, the access trail (who read or exported what), and a state baseline for the audit trail.

The baseline itself (one ``baseline`` row per patient in the hash chain, carrying the patient's
current values, so that ``oncosurg audit verify`` can recompute every patient's state from the trail
from now on) is written by :func:`oncosurg.store.audit_state.write_pending_baselines` right after the
last migration, with the code of the schema at head; this migration only asks for it.

Revision ID: 0004_accounts_security
Revises: 0002
Create Date: 2026-11-30 19:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_accounts_security'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('password_changed_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_seen_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('client', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('user_agent', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('pending', sa.String(length=8), nullable=True))
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device', sa.String(length=32), nullable=True))

    op.create_table('password_reset',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('issued_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_password_reset_user_id_app_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_password_reset'))
    )
    with op.batch_alter_table('password_reset', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_password_reset_user_id'), ['user_id'], unique=False)

    op.create_table('access_trail',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('resource', sa.String(length=32), nullable=False),
    sa.Column('format', sa.String(length=8), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('centre', sa.String(length=120), nullable=True),
    sa.Column('patients', sa.Integer(), nullable=True),
    sa.Column('client', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.String(length=300), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_trail'))
    )
    with op.batch_alter_table('access_trail', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_trail_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_trail_centre'), ['centre'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_trail_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_trail_username'), ['username'], unique=False)

    # ask for the audit-state baseline (written after the last migration, see the module docstring)
    web_setting = sa.table('web_setting', sa.column('key', sa.String), sa.column('value', sa.Text))
    op.execute(sa.delete(web_setting).where(web_setting.c.key == 'audit_baseline'))
    op.bulk_insert(web_setting, [{'key': 'audit_baseline', 'value': 'pending'}])


def downgrade() -> None:
    web_setting = sa.table('web_setting', sa.column('key', sa.String), sa.column('value', sa.Text))
    op.execute(sa.delete(web_setting).where(web_setting.c.key == 'audit_baseline'))
    with op.batch_alter_table('access_trail', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_trail_username'))
        batch_op.drop_index(batch_op.f('ix_access_trail_patient_pk'))
        batch_op.drop_index(batch_op.f('ix_access_trail_centre'))
        batch_op.drop_index(batch_op.f('ix_access_trail_at'))
    op.drop_table('access_trail')
    with op.batch_alter_table('password_reset', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_password_reset_user_id'))
    op.drop_table('password_reset')
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.drop_column('device')
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_column('pending')
        batch_op.drop_column('user_agent')
        batch_op.drop_column('client')
        batch_op.drop_column('last_seen_at')
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.drop_column('password_changed_at')
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_secret')
