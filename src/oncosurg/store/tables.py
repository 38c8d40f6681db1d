"""SQLAlchemy 2 tables of the pathway registry.

One table per pathway stage, keyed by the patient's surrogate key; the stage columns are generated
from :mod:`oncosurg.schema`, so a registry field is declared once.  Complications are one row per
complication (the registry CSV carries only the worst grade, stored as one row); the surgery row
says whether complications were assessed at all (``none`` = assessed, no complication).
"""

from __future__ import annotations

import sqlalchemy as sa

from oncosurg.schema import FIELDS, Kind, Stage

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _sa_type(kind: Kind, max_length: int) -> sa.types.TypeEngine:
    return {
        Kind.TEXT: sa.String(max_length),
        Kind.ENUM: sa.String(32),
        Kind.INTEGER: sa.Integer(),
        Kind.NUMBER: sa.Float(),
        Kind.DATE: sa.Date(),
        Kind.BOOL: sa.Boolean(create_constraint=False),
        Kind.SEGMENTS: sa.String(24),
    }[kind]


def _stage_columns(stage: Stage) -> list[sa.Column]:
    return [
        sa.Column(f.name, _sa_type(f.kind, f.max_length), nullable=f.required != "yes", comment=f.description or None)
        for f in FIELDS
        if f.stage is stage and f.name not in ("patient_id", "centre")
    ]


def _patient_fk() -> sa.Column:
    return sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), primary_key=True)


centre = sa.Table(
    "centre",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(120), nullable=False, unique=True),
)

import_batch = sa.Table(
    "import_batch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # insert | update
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("created", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
)

patient = sa.Table(
    "patient",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("centre_id", sa.Integer, sa.ForeignKey("centre.id"), nullable=False),
    sa.Column("patient_id", sa.String(64), nullable=False),
    *_stage_columns(Stage.PATIENT),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("import_batch_id", sa.Integer, sa.ForeignKey("import_batch.id"), nullable=True),
    sa.UniqueConstraint("centre_id", "patient_id", name="uq_patient_centre_patient_id"),
)

baseline_tumour = sa.Table("baseline_tumour", metadata, _patient_fk(), *_stage_columns(Stage.BASELINE))
prior_chemotherapy = sa.Table("prior_chemotherapy", metadata, _patient_fk(), *_stage_columns(Stage.PRIOR_CHEMO))
cetuximab_course = sa.Table("cetuximab_course", metadata, _patient_fk(), *_stage_columns(Stage.CETUXIMAB))
surgery = sa.Table(
    "surgery",
    metadata,
    _patient_fk(),
    *_stage_columns(Stage.SURGERY),
    sa.Column("complications_assessed", sa.Boolean(create_constraint=False), nullable=False,
              server_default=sa.false()),
)
complication = sa.Table(
    "complication",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("grade", sa.String(8), nullable=False),
    sa.Column("grade_rank", sa.Integer, nullable=False),  # 1 = I … 7 = V (schema.CLAVIEN_DINDO index)
    sa.Column("description", sa.String(200), nullable=True),
)
pathology_nontumoral = sa.Table(
    "pathology_nontumoral", metadata, _patient_fk(), *_stage_columns(Stage.PATHOLOGY_NONTUMORAL)
)
pathology_tumoral = sa.Table("pathology_tumoral", metadata, _patient_fk(), *_stage_columns(Stage.PATHOLOGY_TUMORAL))
follow_up = sa.Table("follow_up", metadata, _patient_fk(), *_stage_columns(Stage.FOLLOW_UP))

change_log = sa.Table(
    "change_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("import_batch_id", sa.Integer, sa.ForeignKey("import_batch.id"), nullable=False),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), nullable=False),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
)

#: One-to-one stage tables (joined on patient_pk) in pathway order.
STAGE_TABLES: dict[Stage, sa.Table] = {
    Stage.BASELINE: baseline_tumour,
    Stage.PRIOR_CHEMO: prior_chemotherapy,
    Stage.CETUXIMAB: cetuximab_course,
    Stage.SURGERY: surgery,
    Stage.PATHOLOGY_NONTUMORAL: pathology_nontumoral,
    Stage.PATHOLOGY_TUMORAL: pathology_tumoral,
    Stage.FOLLOW_UP: follow_up,
}
