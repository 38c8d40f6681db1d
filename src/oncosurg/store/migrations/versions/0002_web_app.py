"""Web app: accounts, centre grants, sessions, login attempts, the hash-chained audit trail,
MDT reviews, response assessments and the cetuximab regimen.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:22:39.558307
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('app_user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('all_centres', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_app_user')),
    sa.UniqueConstraint('username', name=op.f('uq_app_user_username'))
    )
    head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=True),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_head'))
    )
    # the chain starts from 64 zeros (oncosurg.store.audit.GENESIS)
    op.bulk_insert(head, [{'id': 1, 'last_id': None, 'last_hash': '0' * 64}])
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('entity', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.Integer(), nullable=True),
    sa.Column('patient_pk', sa.Integer(), nullable=True),
    sa.Column('centre', sa.String(length=120), nullable=True),
    sa.Column('patient_id', sa.String(length=64), nullable=True),
    sa.Column('field', sa.String(length=64), nullable=True),
    sa.Column('old_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('hash', name=op.f('uq_audit_log_hash'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_patient_pk'), ['patient_pk'], unique=False)

    op.create_table('login_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempt'))
    )
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_login_attempt_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_login_attempt_username'), ['username'], unique=False)

    op.create_table('web_setting',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_web_setting'))
    )
    op.create_table('user_centre',
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('centre_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['centre_id'], ['centre.id'], name=op.f('fk_user_centre_centre_id_centre'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_user_centre_user_id_app_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'centre_id', name=op.f('pk_user_centre'))
    )
    op.create_table('web_session',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_web_session_user_id_app_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_web_session'))
    )
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_web_session_user_id'), ['user_id'], unique=False)

    op.create_table('pending_upload',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=255), nullable=False),
    sa.Column('centre', sa.String(length=120), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['app_user.id'], name=op.f('fk_pending_upload_user_id_app_user'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_pending_upload'))
    )
    op.create_table('cetuximab_regimen',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('schedule', sa.String(length=16), nullable=True),
    sa.Column('dose_mg_m2', sa.Float(), nullable=True),
    sa.Column('bsa_m2', sa.Float(), nullable=True),
    sa.Column('stop_date', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_cetuximab_regimen_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_cetuximab_regimen'))
    )
    op.create_table('mdt_review',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('review_date', sa.Date(), nullable=False),
    sa.Column('decision', sa.String(length=32), nullable=False),
    sa.Column('cycles_at_review', sa.Integer(), nullable=True),
    sa.Column('notes', sa.String(length=2000), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_mdt_review_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mdt_review'))
    )
    with op.batch_alter_table('mdt_review', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mdt_review_patient_pk'), ['patient_pk'], unique=False)

    op.create_table('response_assessment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('assessment_date', sa.Date(), nullable=False),
    sa.Column('category', sa.String(length=4), nullable=False),
    sa.Column('baseline_sum_mm', sa.Float(), nullable=True),
    sa.Column('current_sum_mm', sa.Float(), nullable=True),
    sa.Column('nadir_sum_mm', sa.Float(), nullable=True),
    sa.Column('new_lesions', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_response_assessment_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_response_assessment'))
    )
    with op.batch_alter_table('response_assessment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_response_assessment_patient_pk'), ['patient_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('response_assessment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_response_assessment_patient_pk'))

    op.drop_table('response_assessment')
    with op.batch_alter_table('mdt_review', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mdt_review_patient_pk'))

    op.drop_table('mdt_review')
    op.drop_table('cetuximab_regimen')
    op.drop_table('pending_upload')
    with op.batch_alter_table('web_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_web_session_user_id'))

    op.drop_table('web_session')
    op.drop_table('user_centre')
    op.drop_table('web_setting')
    with op.batch_alter_table('login_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_login_attempt_username'))
        batch_op.drop_index(batch_op.f('ix_login_attempt_at'))

    op.drop_table('login_attempt')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_patient_pk'))

    op.drop_table('audit_log')
    op.drop_table('audit_head')
    op.drop_table('app_user')
