"""SQLAlchemy 2 tables of the pathway registry.

One table per pathway stage, keyed by the patient's surrogate key; the stage columns are generated
from :mod:`oncosurg.schema`, so a registry field is declared once.  Complications are one row per
complication; the worst Clavien-Dindo grade is derived from them (the registry CSV's
``clavien_dindo_max`` adds a row standing for that grade, never removes an itemised one); the
surgery row says whether complications were assessed at all (``none`` = assessed, no complication).

Surrogate ids are never reused, on every backend: SQLite tables use ``AUTOINCREMENT``
(``sqlite_autoincrement=True``; a plain ``INTEGER PRIMARY KEY`` hands a deleted row's id to the next
insert), PostgreSQL sequences never go back.
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
    sqlite_autoincrement=True,
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
    sqlite_autoincrement=True,
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
    sqlite_autoincrement=True,
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
    # True: the row only stands for a worst grade given by a flat record (registry CSV, surgery card);
    # False: a complication recorded one by one.  See oncosurg.store.complications.
    sa.Column("from_worst_grade", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.false()),
    sqlite_autoincrement=True,
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
    sqlite_autoincrement=True,
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

# --------------------------------------------------------------------------------------------------
# The registry web app (issue 5): accounts, sessions, the audit trail, and pathway details that the
# one-row-per-patient registry CSV does not carry (MDT reviews, response assessments, cetuximab
# regimen).  Timestamps are naive UTC (the same Python values on SQLite and PostgreSQL).

app_user = sa.Table(
    "app_user",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # admin | data_manager | investigator | auditor
    sa.Column("all_centres", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.false()),
    sa.Column("active", sa.Boolean(create_constraint=False), nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("totp_secret", sa.String(64), nullable=True),  # base32 RFC 6238 secret; NULL = no second factor
    sa.Column("totp_last_step", sa.Integer, nullable=True),  # last accepted 30-s step (a code is used once)
    sa.Column("password_changed_at", sa.DateTime(), nullable=True),
    sqlite_autoincrement=True,
)

user_centre = sa.Table(
    "user_centre",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("centre_id", sa.Integer, sa.ForeignKey("centre.id", ondelete="CASCADE"), primary_key=True),
)

web_session = sa.Table(
    "web_session",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),  # sha256 of the cookie value
    sa.Column("user_id", sa.Integer, sa.ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),  # absolute end (session_hours after sign-in)
    sa.Column("last_seen_at", sa.DateTime(), nullable=True),  # idle timeout; NULL = created_at
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(200), nullable=True),
    sa.Column("pending", sa.String(8), nullable=True),  # 'totp' | 'enrol': password checked, second factor not yet
)

login_attempt = sa.Table(
    "login_attempt",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, index=True),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(), nullable=False, index=True),
    sa.Column("success", sa.Boolean(create_constraint=False), nullable=False),
    sa.Column("device", sa.String(32), nullable=True),  # device-cookie id: the client key when present
    sqlite_autoincrement=True,
)

#: One-time password-reset links issued by an administrator (only the token's SHA-256 is kept).
password_reset = sa.Table(
    "password_reset",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("issued_by", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("expires_at", sa.DateTime(), nullable=False),
    sa.Column("used_at", sa.DateTime(), nullable=True),
)

#: Who read which patient record, and who exported what (not hash-chained; append-only by the app).
access_trail = sa.Table(
    "access_trail",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime(), nullable=False, index=True),
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("username", sa.String(64), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),  # read | export
    sa.Column("resource", sa.String(32), nullable=False),  # patient | patient_audit | registry | audit | access
    sa.Column("format", sa.String(8), nullable=False),  # html | json | csv
    sa.Column("patient_pk", sa.Integer, nullable=True, index=True),  # no FK: the trail outlives deletions
    sa.Column("patient_id", sa.String(64), nullable=True),
    sa.Column("centre", sa.String(120), nullable=True, index=True),
    sa.Column("patients", sa.Integer, nullable=True),  # how many patients the read or export covered
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("detail", sa.String(300), nullable=True),
    sqlite_autoincrement=True,
)

web_setting = sa.Table(
    "web_setting",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

#: Append-only, hash-chained: ``hash = sha256(prev_hash + canonical row)`` (see oncosurg.store.audit).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.String(32), nullable=False),  # ISO 8601 UTC, part of the hashed row
    sa.Column("user_id", sa.Integer, nullable=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # create | update | delete
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("entity_id", sa.Integer, nullable=True),
    sa.Column("patient_pk", sa.Integer, nullable=True, index=True),  # no FK: the trail outlives deletions
    sa.Column("centre", sa.String(120), nullable=True),
    sa.Column("patient_id", sa.String(64), nullable=True),
    sa.Column("field", sa.String(64), nullable=True),
    sa.Column("old_value", sa.Text, nullable=True),
    sa.Column("new_value", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),  # the patient's version after the change
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sqlite_autoincrement=True,
)

#: One row (id = 1): the chain's last entry; locked by every write transaction (one writer at a time).
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.Integer, nullable=True),
    sa.Column("last_hash", sa.String(64), nullable=False),
)

mdt_review = sa.Table(
    "mdt_review",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("review_date", sa.Date, nullable=False),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("cycles_at_review", sa.Integer, nullable=True),
    sa.Column("notes", sa.String(2000), nullable=True),
    sqlite_autoincrement=True,
)

response_assessment = sa.Table(
    "response_assessment",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("assessment_date", sa.Date, nullable=False),
    sa.Column("category", sa.String(4), nullable=False),  # RECIST CR | PR | SD | PD | NE
    sa.Column("baseline_sum_mm", sa.Float, nullable=True),
    sa.Column("current_sum_mm", sa.Float, nullable=True),
    sa.Column("nadir_sum_mm", sa.Float, nullable=True),
    sa.Column("new_lesions", sa.Boolean(create_constraint=False), nullable=True),
    sqlite_autoincrement=True,
)

cetuximab_regimen = sa.Table(
    "cetuximab_regimen",
    metadata,
    _patient_fk(),
    sa.Column("schedule", sa.String(16), nullable=True),  # weekly | biweekly
    sa.Column("dose_mg_m2", sa.Float, nullable=True),
    sa.Column("bsa_m2", sa.Float, nullable=True),
    sa.Column("stop_date", sa.Date, nullable=True),
)

#: A validated CSV upload waiting for the uploader's confirmation (re-validated when confirmed).
pending_upload = sa.Table(
    "pending_upload",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("centre", sa.String(120), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # insert | update
    sa.Column("data", sa.LargeBinary, nullable=False),
)
