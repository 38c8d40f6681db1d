"""Episodes: the one-row-per-patient stages become episode tables (therapy lines, liver procedures with
their complications and pathology, disease events, contacts); MDT reviews and response assessments
get their keys and their line.

Every value is kept: the flat registry row of each patient is the same before and after (the flat
projection, ``oncosurg.store.projection``), and the migration is audited — one ``migrate`` row per
patient in the hash chain, carrying the patient's rows after the migration.  It also asks for the
audit-state baseline (``web_setting`` ``audit_baseline`` = ``pending``), which the application writes
once the schema is at head (``oncosurg.store.audit_state.write_pending_baselines``): ``oncosurg audit
verify`` checks each patient's state from there on.

The SQL here is frozen (it does not import the application's model), so later changes to the
model cannot change what this migration did.

Revision ID: 0005_episodes
Revises: 0003_ids_never_reused
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005_episodes"
down_revision = "0003_ids_never_reused"
branch_labels = None
depends_on = None

V1_STAGES = ("baseline_tumour", "prior_chemotherapy", "cetuximab_course", "surgery", "pathology_nontumoral",
             "pathology_tumoral", "follow_up", "cetuximab_regimen")
AUTO = {"sqlite_autoincrement": True}


def _patient_fk() -> sa.Column:
    return sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id", ondelete="CASCADE"), nullable=False)


def _version() -> sa.Column:
    return sa.Column("version", sa.Integer, nullable=False, server_default="1")


def _bool(name: str) -> sa.Column:
    return sa.Column(name, sa.Boolean(create_constraint=False), nullable=True)


def _create(name: str, *columns: Any, unique: tuple[str, ...] | None = None, index: tuple[str, ...] = (),
            constraints: tuple[Any, ...] = ()) -> None:
    cols = []
    for c in columns:  # constraint names follow oncosurg.store.tables' naming convention
        if c.foreign_keys:
            target = next(iter(c.foreign_keys)).target_fullname
            ondelete = next(iter(c.foreign_keys)).ondelete
            c = sa.Column(c.name, c.type, sa.ForeignKey(target, ondelete=ondelete,
                                                        name=f"fk_{name}_{c.name}_{target.split('.')[0]}"),
                          nullable=c.nullable)
        cols.append(c)
    extra: list[Any] = [sa.PrimaryKeyConstraint("id", name=f"pk_{name}")]
    if unique:
        extra.append(sa.UniqueConstraint(*unique, name=f"uq_{name}_key"))
    extra += constraints
    op.create_table(name, sa.Column("id", sa.Integer, nullable=False), *cols, *extra, **AUTO)
    for column in index:
        op.create_index(f"ix_{name}_{column}", name, [column])


def _sequence(bind: sa.Connection, table: str, entity: str) -> int:
    """The highest id a table ever handed out (its ids must never be reused)."""
    high = bind.execute(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one()
    audited = bind.execute(sa.text("SELECT COALESCE(MAX(entity_id), 0) FROM audit_log WHERE entity = :e"),
                           {"e": entity}).scalar_one()
    seq = 0
    if bind.dialect.name == "sqlite" and bind.execute(sa.text(
            "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first():
        seq = bind.execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = :t"),
                           {"t": table}).scalar_one()
    return int(max(high, audited, seq))


def _keep_sequence(bind: sa.Connection, table: str, at_least: int) -> None:
    """Make the next id of ``table`` larger than ``at_least`` (SQLite sqlite_sequence, PostgreSQL sequence)."""
    if at_least <= 0:
        return
    if bind.dialect.name == "sqlite":
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
                     {"t": table, "s": max(at_least, _max_id(bind, table))})
    else:
        bind.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :s)"),
                     {"s": max(at_least, _max_id(bind, table))})


def _max_id(bind: sa.Connection, table: str) -> int:
    return int(bind.execute(sa.text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one())


def upgrade() -> None:
    bind = op.get_bind()
    sequences = {name: _sequence(bind, name, name) for name in ("complication", "mdt_review", "response_assessment")}

    # ---------------------------------------------------------------- patient: new columns, renamed age
    op.execute("ALTER TABLE patient RENAME COLUMN age_at_cetuximab TO age_at_rescue")
    if bind.dialect.name == "postgresql":  # descriptions live in the model and the docs, not in column comments
        op.execute("COMMENT ON COLUMN patient.referral IS NULL")
    op.add_column("patient", sa.Column("birth_year", sa.Integer, nullable=True))
    op.add_column("patient", sa.Column("braf_status", sa.String(32), nullable=True))
    op.add_column("patient", sa.Column("msi_status", sa.String(32), nullable=True))
    op.add_column("patient", sa.Column("referral_date", sa.Date, nullable=True))

    # ---------------------------------------------------------------- new episode tables
    _create("therapy_line", _patient_fk(),
            sa.Column("line_number", sa.Integer, nullable=False), sa.Column("start_date", sa.Date),
            sa.Column("stop_date", sa.Date), sa.Column("agents", sa.String(200), nullable=False),
            sa.Column("intent", sa.String(32)), sa.Column("given_at", sa.String(32)), sa.Column("cycles", sa.Integer),
            sa.Column("best_response", sa.String(32)), sa.Column("stop_reason", sa.String(32)),
            sa.Column("schedule", sa.String(32)), sa.Column("dose_mg_m2", sa.Float), sa.Column("bsa_m2", sa.Float),
            sa.Column("liver_mets_count", sa.Integer), sa.Column("largest_met_mm", sa.Float), _bool("bilobar"),
            _bool("extrahepatic_disease"), _version(), unique=("patient_pk", "line_number"), index=("patient_pk",))
    _create("liver_procedure", _patient_fk(),
            sa.Column("procedure_no", sa.Integer, nullable=False),
            sa.Column("procedure_date", sa.Date, nullable=False),
            sa.Column("procedure_type", sa.String(32), nullable=False), sa.Column("resected_segments", sa.String(24)),
            sa.Column("margin", sa.String(32)), sa.Column("approach", sa.String(32)), _bool("two_stage"),
            _bool("portal_vein_embolization"), _bool("complications_assessed"), _version(),
            unique=("patient_pk", "procedure_no"), index=("patient_pk",))
    _create("disease_event", _patient_fk(),
            sa.Column("event_no", sa.Integer, nullable=False), sa.Column("event_date", sa.Date, nullable=False),
            sa.Column("event_kind", sa.String(32), nullable=False), sa.Column("sites", sa.String(200)), _version(),
            unique=("patient_pk", "event_no"), index=("patient_pk",))
    _create("contact", _patient_fk(),
            sa.Column("contact_no", sa.Integer, nullable=False), sa.Column("contact_date", sa.Date, nullable=False),
            sa.Column("vital_status", sa.String(32), nullable=False), _version(),
            unique=("patient_pk", "contact_no"), index=("patient_pk",))

    # ---------------------------------------------------------------- move the stages
    partner_agents = ("CASE c.cetuximab_partner WHEN 'irinotecan' THEN 'cetuximab;irinotecan' "
                      "WHEN 'oxaliplatin' THEN 'cetuximab;oxaliplatin' "
                      "WHEN 'both' THEN 'cetuximab;oxaliplatin;irinotecan' "
                      "WHEN 'other' THEN 'cetuximab;other' ELSE 'cetuximab' END")
    op.execute(f"""
        INSERT INTO therapy_line (patient_pk, line_number, start_date, stop_date, agents, intent, given_at, cycles,
                                  best_response, schedule, dose_mg_m2, bsa_m2, liver_mets_count, largest_met_mm,
                                  bilobar, extrahepatic_disease, version)
        SELECT p.id, COALESCE(pc.prior_chemo_lines, 0) + 1, c.cetuximab_start, r.stop_date, {partner_agents},
               'conversion', CASE p.referral WHEN 'in_house' THEN 'centre' ELSE 'elsewhere' END,
               c.cetuximab_cycles, c.best_response, r.schedule, r.dose_mg_m2, r.bsa_m2, b.liver_mets_count,
               b.largest_met_mm, b.bilobar, b.extrahepatic_disease, 1
        FROM patient p
        JOIN cetuximab_course c ON c.patient_pk = p.id
        LEFT JOIN prior_chemotherapy pc ON pc.patient_pk = p.id
        LEFT JOIN baseline_tumour b ON b.patient_pk = p.id
        LEFT JOIN cetuximab_regimen r ON r.patient_pk = p.id
        ORDER BY p.id""")
    op.execute("""
        INSERT INTO liver_procedure (patient_pk, procedure_no, procedure_date, procedure_type, resected_segments,
                                     margin, two_stage, portal_vein_embolization, complications_assessed, version)
        SELECT s.patient_pk, 1, s.surgery_date,
               CASE s.surgery_type WHEN 'ablation_only' THEN 'ablation' ELSE s.surgery_type END,
               s.resected_segments, s.margin, s.two_stage, s.portal_vein_embolization, s.complications_assessed, 1
        FROM surgery s WHERE s.surgery_date IS NOT NULL ORDER BY s.patient_pk""")
    op.execute("""
        INSERT INTO disease_event (patient_pk, event_no, event_date, event_kind, version)
        SELECT f.patient_pk, 1, f.progression_date,
               CASE WHEN s.surgery_type = 'hepatectomy' AND s.margin IN ('R0', 'R1')
                         AND s.surgery_date <= f.progression_date THEN 'recurrence' ELSE 'progression' END, 1
        FROM follow_up f LEFT JOIN surgery s ON s.patient_pk = f.patient_pk
        WHERE f.progression_date IS NOT NULL ORDER BY f.patient_pk""")
    # the last contact, and the death as its own contact when (against the rules) it differs from it
    op.execute("""
        INSERT INTO contact (patient_pk, contact_no, contact_date, vital_status, version)
        SELECT f.patient_pk, 1, COALESCE(f.last_contact_date, f.death_date),
               CASE WHEN f.death_date IS NOT NULL AND f.death_date = COALESCE(f.last_contact_date, f.death_date)
                    THEN 'dead' ELSE 'alive' END, 1
        FROM follow_up f WHERE COALESCE(f.death_date, f.last_contact_date) IS NOT NULL ORDER BY f.patient_pk""")
    op.execute("""
        INSERT INTO contact (patient_pk, contact_no, contact_date, vital_status, version)
        SELECT f.patient_pk, 2, f.death_date, 'dead', 1
        FROM follow_up f WHERE f.death_date IS NOT NULL AND f.last_contact_date IS NOT NULL
                           AND f.death_date <> f.last_contact_date ORDER BY f.patient_pk""")

    # complications, MDT reviews and response assessments: rebuilt with their keys, ids kept
    for name in ("complication", "mdt_review", "response_assessment"):
        op.execute(f"CREATE TABLE v1_{name} AS SELECT * FROM {name}")
        op.drop_table(name)
    _create("complication", _patient_fk(),
            sa.Column("procedure_pk", sa.Integer, sa.ForeignKey("liver_procedure.id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("complication_no", sa.Integer, nullable=False), sa.Column("grade", sa.String(32), nullable=False),
            sa.Column("complication_date", sa.Date), sa.Column("description", sa.String(200)),
            sa.Column("grade_rank", sa.Integer, nullable=False), _version(),
            unique=("procedure_pk", "complication_no"), index=("patient_pk", "procedure_pk"))
    op.execute("""
        INSERT INTO complication (id, patient_pk, procedure_pk, complication_no, grade, complication_date,
                                  description, grade_rank, version)
        SELECT c.id, c.patient_pk, lp.id, ROW_NUMBER() OVER (PARTITION BY c.patient_pk ORDER BY c.id), c.grade, NULL,
               c.description, c.grade_rank, 1
        FROM v1_complication c JOIN liver_procedure lp ON lp.patient_pk = c.patient_pk""")
    for name, number, date, columns in (
            ("mdt_review", "review_no", "review_date",
             (sa.Column("review_date", sa.Date, nullable=False), sa.Column("decision", sa.String(32), nullable=False),
              sa.Column("cycles_at_review", sa.Integer), sa.Column("notes", sa.String(2000)))),
            ("response_assessment", "assessment_no", "assessment_date",
             (sa.Column("assessment_date", sa.Date, nullable=False), sa.Column("category", sa.String(32)),
              sa.Column("baseline_sum_mm", sa.Float), sa.Column("current_sum_mm", sa.Float),
              sa.Column("nadir_sum_mm", sa.Float), _bool("new_lesions")))):
        _create(name, _patient_fk(),
                sa.Column("therapy_line_pk", sa.Integer, sa.ForeignKey("therapy_line.id"), nullable=True),
                sa.Column(number, sa.Integer, nullable=False), *columns, _version(),
                unique=("patient_pk", number), index=("patient_pk", "therapy_line_pk"))
        names = ", ".join(c.name for c in columns)
        op.execute(f"""
            INSERT INTO {name} (id, patient_pk, therapy_line_pk, {number}, {names}, version)
            SELECT v.id, v.patient_pk, (SELECT tl.id FROM therapy_line tl WHERE tl.patient_pk = v.patient_pk),
                   ROW_NUMBER() OVER (PARTITION BY v.patient_pk ORDER BY v.{date}, v.id),
                   {", ".join("v." + c.name for c in columns)}, 1
            FROM v1_{name} v""")
    _create_pathology_and_fill()
    for name, high in sequences.items():
        op.drop_table(f"v1_{name}")
        _keep_sequence(bind, name, high)
    for name in V1_STAGES:
        op.drop_table(name)
    _audit(bind)
    _ask_for_baseline(bind)


def _ask_for_baseline(bind: sa.Connection) -> None:
    done = bind.execute(sa.text("UPDATE web_setting SET value = 'pending' WHERE key = 'audit_baseline'")).rowcount
    if not done:
        bind.execute(sa.text("INSERT INTO web_setting (key, value) VALUES ('audit_baseline', 'pending')"))


def _create_pathology_and_fill() -> None:
    _create("pathology", _patient_fk(),
            sa.Column("procedure_pk", sa.Integer, sa.ForeignKey("liver_procedure.id", ondelete="CASCADE"),
                      nullable=False),
            sa.Column("steatosis_pct", sa.Float), _bool("steatohepatitis"),
            sa.Column("sinusoidal_dilatation_grade", sa.Integer), sa.Column("fibrosis_stage", sa.Integer),
            _bool("nodular_regenerative_hyperplasia"), sa.Column("tumour_regression_grade", sa.Integer),
            sa.Column("lesion_count", sa.Integer), sa.Column("largest_lesion_mm", sa.Float),
            sa.Column("margin_mm", sa.Float), _version(), index=("patient_pk",),
            constraints=(sa.UniqueConstraint("procedure_pk", name="uq_pathology_procedure_pk"),))
    op.execute("""
        INSERT INTO pathology (patient_pk, procedure_pk, steatosis_pct, steatohepatitis, sinusoidal_dilatation_grade,
                               fibrosis_stage, nodular_regenerative_hyperplasia, tumour_regression_grade, version)
        SELECT lp.patient_pk, lp.id, n.steatosis_pct, n.steatohepatitis, n.sinusoidal_dilatation_grade,
               n.fibrosis_stage, n.nodular_regenerative_hyperplasia, tt.tumour_regression_grade, 1
        FROM liver_procedure lp
        LEFT JOIN pathology_nontumoral n ON n.patient_pk = lp.patient_pk
        LEFT JOIN pathology_tumoral tt ON tt.patient_pk = lp.patient_pk
        WHERE n.steatosis_pct IS NOT NULL OR n.steatohepatitis IS NOT NULL OR n.sinusoidal_dilatation_grade IS NOT NULL
           OR n.fibrosis_stage IS NOT NULL OR n.nodular_regenerative_hyperplasia IS NOT NULL
           OR tt.tumour_regression_grade IS NOT NULL
        ORDER BY lp.patient_pk""")


# ------------------------------------------------------------------------------------------ audit
# The chain's row format (oncosurg.store.audit), frozen here: hash = sha256(prev_hash + canonical(row)).
_HASHED = ("id", "at", "user_id", "username", "action", "entity", "entity_id", "patient_pk", "centre", "patient_id",
           "field", "old_value", "new_value", "reason", "version")
_SNAPSHOT_TABLES = ("therapy_line", "mdt_review", "response_assessment", "liver_procedure", "complication",
                    "pathology", "disease_event", "contact")


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _audit(bind: sa.Connection) -> None:
    """One ``migrate`` row per patient, carrying the patient's episode rows after the migration."""
    head = bind.execute(sa.text("SELECT last_id, last_hash FROM audit_head WHERE id = 1")).one()
    last_id, prev = head[0] or 0, head[1]
    at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patients = bind.execute(sa.text(
        "SELECT p.*, c.name AS centre_name FROM patient p JOIN centre c ON c.id = p.centre_id ORDER BY p.id")
    ).mappings().all()
    episodes: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for table in _SNAPSHOT_TABLES:
        for row in bind.execute(sa.text(f"SELECT * FROM {table} ORDER BY patient_pk, id")).mappings():
            episodes.setdefault(row["patient_pk"], {}).setdefault(table, []).append(
                {k: _json_value(v) for k, v in row.items() if k != "patient_pk"})
    rows = []
    for p in patients:
        last_id += 1
        snapshot = {"patient": {k: _json_value(v) for k, v in p.items() if k != "centre_name"},
                    **episodes.get(p["id"], {})}
        row = {"id": last_id, "at": at, "user_id": None, "username": "migration", "action": "migrate",
               "entity": "patient", "entity_id": p["id"], "patient_pk": p["id"], "centre": p["centre_name"],
               "patient_id": p["patient_id"], "field": None, "old_value": None,
               "new_value": json.dumps(snapshot, sort_keys=True, separators=(",", ":"), ensure_ascii=False),
               "reason": "schema 0005_episodes: the pathway stages became episode tables (every value kept)",
               "version": p["version"]}
        canonical = json.dumps({k: row.get(k) for k in _HASHED}, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)
        row["prev_hash"] = prev
        row["hash"] = prev = hashlib.sha256((prev + canonical).encode("utf-8")).hexdigest()
        rows.append(row)
    if rows:
        bind.execute(sa.text(
            "INSERT INTO audit_log (id, at, user_id, username, action, entity, entity_id, patient_pk, centre, "
            "patient_id, field, old_value, new_value, reason, version, prev_hash, hash) VALUES (:id, :at, :user_id, "
            ":username, :action, :entity, :entity_id, :patient_pk, :centre, :patient_id, :field, :old_value, "
            ":new_value, :reason, :version, :prev_hash, :hash)"), rows)
        bind.execute(sa.text("UPDATE audit_head SET last_id = :i, last_hash = :h WHERE id = 1"),
                     {"i": last_id, "h": prev})


def downgrade() -> None:
    """Back to the one-row-per-patient stages, for an empty registry only (episodes cannot go back)."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT COUNT(*) FROM patient")).scalar_one():
        raise RuntimeError("a registry with patients cannot go back to the one-row-per-patient schema (episodes "
                           "would be lost); restore the backup taken before upgrading")
    for name in ("pathology", "complication", "mdt_review", "response_assessment", "disease_event", "contact",
                 "liver_procedure", "therapy_line"):
        op.drop_table(name)
    for column in ("birth_year", "braf_status", "msi_status", "referral_date"):
        op.execute(f"ALTER TABLE patient DROP COLUMN {column}")
    op.execute("ALTER TABLE patient RENAME COLUMN age_at_rescue TO age_at_cetuximab")

    def stage(name: str, *columns: sa.Column) -> None:
        op.create_table(name, sa.Column("patient_pk", sa.Integer(), nullable=False), *columns,
                        sa.ForeignKeyConstraint(["patient_pk"], ["patient.id"], name=f"fk_{name}_patient_pk_patient",
                                                ondelete="CASCADE"),
                        sa.PrimaryKeyConstraint("patient_pk", name=f"pk_{name}"))

    def items(name: str, *columns: sa.Column) -> None:
        op.create_table(name, sa.Column("id", sa.Integer(), nullable=False),
                        sa.Column("patient_pk", sa.Integer(), nullable=False), *columns,
                        sa.ForeignKeyConstraint(["patient_pk"], ["patient.id"], name=f"fk_{name}_patient_pk_patient",
                                                ondelete="CASCADE"),
                        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"), **AUTO)
        op.create_index(f"ix_{name}_patient_pk", name, ["patient_pk"])

    stage("baseline_tumour", sa.Column("liver_mets_count", sa.Integer()), sa.Column("largest_met_mm", sa.Float()),
          _bool("bilobar"), _bool("extrahepatic_disease"))
    stage("prior_chemotherapy", sa.Column("prior_chemo_lines", sa.Integer(), nullable=False))
    stage("cetuximab_course", sa.Column("cetuximab_start", sa.Date(), nullable=False),
          sa.Column("cetuximab_partner", sa.String(32), nullable=False), sa.Column("cetuximab_cycles", sa.Integer()),
          sa.Column("best_response", sa.String(32)))
    stage("surgery", sa.Column("surgery_date", sa.Date()), sa.Column("surgery_type", sa.String(32)),
          sa.Column("resected_segments", sa.String(24)), _bool("two_stage"), _bool("portal_vein_embolization"),
          sa.Column("margin", sa.String(32)),
          sa.Column("complications_assessed", sa.Boolean(), server_default=sa.false(), nullable=False))
    stage("pathology_nontumoral", sa.Column("steatosis_pct", sa.Float()), _bool("steatohepatitis"),
          sa.Column("sinusoidal_dilatation_grade", sa.Integer()), sa.Column("fibrosis_stage", sa.Integer()),
          _bool("nodular_regenerative_hyperplasia"))
    stage("pathology_tumoral", sa.Column("tumour_regression_grade", sa.Integer()))
    stage("follow_up", sa.Column("progression_date", sa.Date()), sa.Column("death_date", sa.Date()),
          sa.Column("last_contact_date", sa.Date(), nullable=False))
    stage("cetuximab_regimen", sa.Column("schedule", sa.String(16)), sa.Column("dose_mg_m2", sa.Float()),
          sa.Column("bsa_m2", sa.Float()), sa.Column("stop_date", sa.Date()))
    items("complication", sa.Column("grade", sa.String(8), nullable=False),
          sa.Column("grade_rank", sa.Integer(), nullable=False), sa.Column("description", sa.String(200)),
          sa.Column("from_worst_grade", sa.Boolean(), server_default=sa.false(), nullable=False))  # as 0003 left it
    items("mdt_review", sa.Column("review_date", sa.Date(), nullable=False),
          sa.Column("decision", sa.String(32), nullable=False), sa.Column("cycles_at_review", sa.Integer()),
          sa.Column("notes", sa.String(2000)))
    items("response_assessment", sa.Column("assessment_date", sa.Date(), nullable=False),
          sa.Column("category", sa.String(4), nullable=False), sa.Column("baseline_sum_mm", sa.Float()),
          sa.Column("current_sum_mm", sa.Float()), sa.Column("nadir_sum_mm", sa.Float()), _bool("new_lesions"))
