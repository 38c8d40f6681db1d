"""Initial pathway registry: centre, patient, one table per pathway stage, import batches, change log.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 14:08:43.954171
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('centre',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_centre')),
    sa.UniqueConstraint('name', name=op.f('uq_centre_name'))
    )
    op.create_table('import_batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_batch'))
    )
    op.create_table('patient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('centre_id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('referral', sa.String(length=32), nullable=False, comment='cetuximab given at the centre, or elsewhere then referred'),
    sa.Column('sex', sa.String(length=32), nullable=True),
    sa.Column('age_at_cetuximab', sa.Float(), nullable=True),
    sa.Column('primary_site', sa.String(length=32), nullable=True),
    sa.Column('primary_side', sa.String(length=32), nullable=True),
    sa.Column('ras_status', sa.String(length=32), nullable=True),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.Column('import_batch_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['centre_id'], ['centre.id'], name=op.f('fk_patient_centre_id_centre')),
    sa.ForeignKeyConstraint(['import_batch_id'], ['import_batch.id'], name=op.f('fk_patient_import_batch_id_import_batch')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_patient')),
    sa.UniqueConstraint('centre_id', 'patient_id', name='uq_patient_centre_patient_id')
    )
    op.create_table('baseline_tumour',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('liver_mets_count', sa.Integer(), nullable=True, comment='at cetuximab start'),
    sa.Column('largest_met_mm', sa.Float(), nullable=True),
    sa.Column('bilobar', sa.Boolean(), nullable=True),
    sa.Column('extrahepatic_disease', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_baseline_tumour_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_baseline_tumour'))
    )
    op.create_table('cetuximab_course',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('cetuximab_start', sa.Date(), nullable=False, comment='time origin of OS and PFS'),
    sa.Column('cetuximab_partner', sa.String(length=32), nullable=False),
    sa.Column('cetuximab_cycles', sa.Integer(), nullable=True, comment='cycles before surgery or stop'),
    sa.Column('best_response', sa.String(length=32), nullable=True, comment='RECIST'),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_cetuximab_course_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_cetuximab_course'))
    )
    op.create_table('change_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_batch_id', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('old_value', sa.Text(), nullable=True),
    sa.Column('new_value', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['import_batch_id'], ['import_batch.id'], name=op.f('fk_change_log_import_batch_id_import_batch')),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_change_log_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_change_log'))
    )
    op.create_table('complication',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('grade', sa.String(length=8), nullable=False),
    sa.Column('grade_rank', sa.Integer(), nullable=False),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_complication_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complication'))
    )
    with op.batch_alter_table('complication', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_complication_patient_pk'), ['patient_pk'], unique=False)

    op.create_table('follow_up',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('progression_date', sa.Date(), nullable=True, comment='first progression or recurrence after cetuximab start'),
    sa.Column('death_date', sa.Date(), nullable=True),
    sa.Column('last_contact_date', sa.Date(), nullable=False, comment='equals death_date when dead'),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_follow_up_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_follow_up'))
    )
    op.create_table('pathology_nontumoral',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('steatosis_pct', sa.Float(), nullable=True, comment='non-tumoral liver, hepatectomy only'),
    sa.Column('steatohepatitis', sa.Boolean(), nullable=True),
    sa.Column('sinusoidal_dilatation_grade', sa.Integer(), nullable=True, comment='Rubbia-Brandt'),
    sa.Column('fibrosis_stage', sa.Integer(), nullable=True),
    sa.Column('nodular_regenerative_hyperplasia', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_pathology_nontumoral_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_pathology_nontumoral'))
    )
    op.create_table('pathology_tumoral',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('tumour_regression_grade', sa.Integer(), nullable=True, comment='Rubbia-Brandt TRG'),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_pathology_tumoral_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_pathology_tumoral'))
    )
    op.create_table('prior_chemotherapy',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('prior_chemo_lines', sa.Integer(), nullable=False, comment='lines failed before cetuximab'),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_prior_chemotherapy_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_prior_chemotherapy'))
    )
    op.create_table('surgery',
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('surgery_date', sa.Date(), nullable=True, comment='empty = not operated'),
    sa.Column('surgery_type', sa.String(length=32), nullable=True),
    sa.Column('resected_segments', sa.String(length=24), nullable=True, comment='major hepatectomy = 3 or more'),
    sa.Column('two_stage', sa.Boolean(), nullable=True),
    sa.Column('portal_vein_embolization', sa.Boolean(), nullable=True),
    sa.Column('margin', sa.String(length=32), nullable=True, comment='hepatectomy only'),
    sa.Column('complications_assessed', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], name=op.f('fk_surgery_patient_pk_patient'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('patient_pk', name=op.f('pk_surgery'))
    )



def downgrade() -> None:

    op.drop_table('surgery')
    op.drop_table('prior_chemotherapy')
    op.drop_table('pathology_tumoral')
    op.drop_table('pathology_nontumoral')
    op.drop_table('follow_up')
    with op.batch_alter_table('complication', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_complication_patient_pk'))

    op.drop_table('complication')
    op.drop_table('change_log')
    op.drop_table('cetuximab_course')
    op.drop_table('baseline_tumour')
    op.drop_table('patient')
    op.drop_table('import_batch')
    op.drop_table('centre')

