"""Store tables of the episode model (:mod:`oncosurg.pathway.model`): a patient row and one table per
episode type, each row with its own id, its key within the patient and its own ``version``.

Columns are generated from the model's field declarations, so a field is declared once.  Children
refer to their parent by surrogate key (``procedure_pk``, ``therapy_line_pk``); the files' keys
(``procedure_no``, ``line_number``) are joined back when reading.  Deleting a patient cascades to
its episodes in the database; every other removal is done — and audited — by the application.
"""

from __future__ import annotations

import sqlalchemy as sa

from oncosurg.pathway.model import (
    COMPLICATION,
    CONTACT,
    DISEASE_EVENT,
    LIVER_PROCEDURE,
    MDT_REVIEW,
    PATHOLOGY,
    PATIENT,
    RESPONSE_ASSESSMENT,
    THERAPY_LINE,
    EpisodeTable,
    Table,
)
from oncosurg.schema import Kind


def sa_type(kind: Kind, max_length: int) -> sa.types.TypeEngine:
    """The column type of a field kind."""
    return {
        Kind.TEXT: sa.String(max_length),
        Kind.ENUM: sa.String(32),
        Kind.INTEGER: sa.Integer(),
        Kind.NUMBER: sa.Float(),
        Kind.DATE: sa.Date(),
        Kind.BOOL: sa.Boolean(create_constraint=False),
        Kind.SEGMENTS: sa.String(24),
        Kind.CODES: sa.String(200),
    }[kind]


def field_columns(spec: EpisodeTable, *, skip: tuple[str, ...] = ()) -> list[sa.Column]:
    """One column per field of ``spec`` (required fields NOT NULL), except ``skip``."""
    return [sa.Column(f.name, sa_type(f.kind, f.max_length), nullable=f.required != "yes")
            for f in spec.fields if f.name not in skip]  # descriptions live in the model and the docs


def build(metadata: sa.MetaData, *, patient_extra: tuple[sa.Column, ...] = (),
          autoincrement: bool = True) -> dict[Table, sa.Table]:
    """Declare the patient and episode tables on ``metadata``; ``patient_extra`` adds columns to the
    patient table (import batch, …).  Ids are never reused (SQLite ``AUTOINCREMENT``)."""
    kw = {"sqlite_autoincrement": autoincrement}

    def patient_fk() -> sa.Column:
        return sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"),
                         nullable=False, index=True)

    def version() -> sa.Column:
        return sa.Column("version", sa.Integer, nullable=False, server_default="1")

    out: dict[Table, sa.Table] = {}
    out[Table.PATIENT] = sa.Table(
        "patient", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("centre_id", sa.Integer, sa.ForeignKey("centre.id"), nullable=False),
        *field_columns(PATIENT),
        version(), *patient_extra,
        sa.UniqueConstraint("centre_id", "patient_id", name="uq_patient_centre_patient_id"),
        **kw)
    for spec in (THERAPY_LINE, LIVER_PROCEDURE, DISEASE_EVENT, CONTACT):
        out[spec.table] = sa.Table(
            spec.table.value, metadata,
            sa.Column("id", sa.Integer, primary_key=True), patient_fk(), *field_columns(spec), version(),
            sa.UniqueConstraint("patient_pk", spec.own_key, name=f"uq_{spec.table.value}_key"),
            **kw)
    for spec in (MDT_REVIEW, RESPONSE_ASSESSMENT):
        out[spec.table] = sa.Table(
            spec.table.value, metadata,
            sa.Column("id", sa.Integer, primary_key=True), patient_fk(),
            sa.Column("therapy_line_pk", sa.Integer, sa.ForeignKey("therapy_line.id"), nullable=True, index=True),
            *field_columns(spec, skip=("line_number",)), version(),
            sa.UniqueConstraint("patient_pk", spec.own_key, name=f"uq_{spec.table.value}_key"),
            **kw)
    out[Table.COMPLICATION] = sa.Table(
        "complication", metadata,
        sa.Column("id", sa.Integer, primary_key=True), patient_fk(),
        sa.Column("procedure_pk", sa.Integer, sa.ForeignKey("liver_procedure.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        *field_columns(COMPLICATION, skip=("procedure_no",)),
        sa.Column("grade_rank", sa.Integer, nullable=False),  # 1 = I … 7 = V (schema.CLAVIEN_DINDO index)
        version(),
        sa.UniqueConstraint("procedure_pk", "complication_no", name="uq_complication_key"),
        **kw)
    out[Table.PATHOLOGY] = sa.Table(
        "pathology", metadata,
        sa.Column("id", sa.Integer, primary_key=True), patient_fk(),
        sa.Column("procedure_pk", sa.Integer, sa.ForeignKey("liver_procedure.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        *field_columns(PATHOLOGY, skip=("procedure_no",)), version(),
        **kw)
    return out


#: Columns of each episode table that are references to a parent by surrogate key, and the file column
#: (the parent's key) they stand for.
PARENT_REFS: dict[Table, tuple[str, Table, str]] = {
    Table.COMPLICATION: ("procedure_pk", Table.LIVER_PROCEDURE, "procedure_no"),
    Table.PATHOLOGY: ("procedure_pk", Table.LIVER_PROCEDURE, "procedure_no"),
    Table.MDT_REVIEW: ("therapy_line_pk", Table.THERAPY_LINE, "line_number"),
    Table.RESPONSE_ASSESSMENT: ("therapy_line_pk", Table.THERAPY_LINE, "line_number"),
}
