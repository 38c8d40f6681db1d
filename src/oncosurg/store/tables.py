"""SQLAlchemy 2 tables of the pathway registry.

A patient row and one table per episode type (therapy lines, MDT reviews, response assessments,
liver procedures, complications, pathology, disease events, contacts), generated from
:mod:`oncosurg.pathway.model` by :mod:`oncosurg.store.episode_tables`; import batches, the change
log, and the web app's accounts, sessions and hash-chained audit trail.  The flat registry row of a
patient is a projection of its episodes (:mod:`oncosurg.store.projection`).

Surrogate ids are never reused, on every backend: SQLite tables use ``AUTOINCREMENT``
(``sqlite_autoincrement=True``; a plain ``INTEGER PRIMARY KEY`` hands a deleted row's id to the next
insert), PostgreSQL sequences never go back.
"""

from __future__ import annotations

import sqlalchemy as sa

from oncosurg.pathway.model import Table
from oncosurg.store.episode_tables import build

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


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

#: The patient and episode tables (oncosurg.store.episode_tables), keyed by pathway.model.Table.
EPISODES: dict[Table, sa.Table] = build(metadata, patient_extra=(
    sa.Column("import_batch_id", sa.Integer, sa.ForeignKey("import_batch.id"), nullable=True),))
patient = EPISODES[Table.PATIENT]
therapy_line = EPISODES[Table.THERAPY_LINE]
mdt_review = EPISODES[Table.MDT_REVIEW]
response_assessment = EPISODES[Table.RESPONSE_ASSESSMENT]
liver_procedure = EPISODES[Table.LIVER_PROCEDURE]
complication = EPISODES[Table.COMPLICATION]
pathology = EPISODES[Table.PATHOLOGY]
disease_event = EPISODES[Table.DISEASE_EVENT]
contact = EPISODES[Table.CONTACT]

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
