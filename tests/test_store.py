"""The store on SQLite and on a real PostgreSQL server: migrations, import, update, atomicity."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.schema import COLUMNS
from oncosurg.store import repository
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from oncosurg.store.repository import ImportOptions, import_records, iter_records

HEADER = ",".join(COLUMNS)


def row(**values: str) -> str:
    base = {"patient_id": "P1", "centre": "A", "referral": "in_house", "prior_chemo_lines": "2",
            "cetuximab_start": "2005-01-10", "cetuximab_partner": "irinotecan", "last_contact_date": "2006-01-10"}
    base.update(values)
    return ",".join(base.get(c, "") for c in COLUMNS)


def parse(*rows: str):  # type: ignore[no-untyped-def]
    parsed = parse_registry_csv(("\n".join([HEADER, *rows]) + "\n").encode(), source="t.csv")
    assert parsed.ok, [i.format() for i in parsed.issues]
    return parsed


def do_import(engine: sa.Engine, *rows: str, update: bool = False, **options: bool):  # type: ignore[no-untyped-def]
    parsed = parse(*rows)
    return import_records(engine, parsed.records, source="t.csv", sha256=parsed.sha256, rows=parsed.rows,
                          options=ImportOptions(update=update, **options))


def test_migrations_create_every_table(store: sa.Engine) -> None:
    names = set(sa.inspect(store).get_table_names())
    assert {"patient", "centre", "therapy_line", "mdt_review", "response_assessment", "liver_procedure",
            "complication", "pathology", "disease_event", "contact", "import_batch", "change_log",
            "alembic_version"} <= names
    open_store(store.url.render_as_string(hide_password=False)).dispose()  # second open is a no-op


def test_round_trip_every_column(store: sa.Engine) -> None:
    full = row(sex="F", age_at_cetuximab="61.5", primary_site="colon", primary_side="left", ras_status="not_tested",
               liver_mets_count="7", largest_met_mm="45", bilobar="yes", extrahepatic_disease="no",
               cetuximab_cycles="6", best_response="PR", surgery_date="2005-06-01", surgery_type="hepatectomy",
               resected_segments="6;5;7", two_stage="no", portal_vein_embolization="yes", margin="R1",
               clavien_dindo_max="IIIa", steatosis_pct="35", steatohepatitis="no", sinusoidal_dilatation_grade="2",
               fibrosis_stage="1", nodular_regenerative_hyperplasia="no", tumour_regression_grade="3",
               progression_date="2005-12-01")
    result = do_import(store, full)
    assert result.created == 1 and not result.issues
    with store.connect() as conn:
        (record,) = list(iter_records(conn))
    assert record["resected_segments"] == "5;6;7"
    assert record["clavien_dindo_max"] == "IIIa"
    assert record["bilobar"] is True and record["extrahepatic_disease"] is False
    assert record["surgery_date"] == dt.date(2005, 6, 1)
    assert record["age_at_cetuximab"] == 61.5 and record["liver_mets_count"] == 7


def test_none_grade_is_assessed_without_complication(store: sa.Engine) -> None:
    do_import(store, row(surgery_date="2005-06-01", surgery_type="exploration_only", clavien_dindo_max="none"),
              row(patient_id="P2"))
    with store.connect() as conn:
        records = {r["patient_id"]: r for r in iter_records(conn)}
        assert conn.execute(sa.select(sa.func.count()).select_from(t.complication)).scalar_one() == 0
    assert records["P1"]["clavien_dindo_max"] == "none"
    assert records["P2"]["clavien_dindo_max"] is None


def test_already_registered_is_refused_and_nothing_changes(store: sa.Engine) -> None:
    do_import(store, row())
    result = do_import(store, row(patient_id="P2"), row(cetuximab_cycles="3"))
    assert [i.code for i in result.issues] == ["X411"]
    assert result.issues[0].line == 3
    with store.connect() as conn:
        assert [r["patient_id"] for r in iter_records(conn)] == ["P1"]  # P2 was not written either


def test_same_id_in_another_centre_is_refused_unless_said_to_be_a_different_patient(store: sa.Engine) -> None:
    do_import(store, row())
    refused = do_import(store, row(centre="B"))
    assert [(i.code, i.line, i.column) for i in refused.issues] == [("X414", 2, "patient_id")]
    assert "'A'" in refused.issues[0].message and "--centre 'A'" in refused.issues[0].hint
    result = do_import(store, row(centre="B"), allow_id_in_other_centre=True)
    assert result.created == 1


def test_update_records_what_changed(store: sa.Engine) -> None:
    do_import(store, row())
    result = do_import(store, row(cetuximab_cycles="4", death_date="2006-01-10"), row(patient_id="P9"), update=True,
                       allow_new=True)
    assert result.updated == 1 and result.created == 1
    assert sorted((c[2], c[3], c[4]) for c in result.changes) == [
        ("cetuximab_cycles", None, 4), ("death_date", None, dt.date(2006, 1, 10))]
    with store.connect() as conn:
        log = conn.execute(sa.select(t.change_log.c.field, t.change_log.c.old_value, t.change_log.c.new_value)
                           .order_by(t.change_log.c.field)).all()
        version = conn.execute(sa.select(t.patient.c.version).where(t.patient.c.patient_id == "P1")).scalar_one()
    assert [tuple(r) for r in log] == [("cetuximab_cycles", None, "4"), ("death_date", None, "2006-01-10")]
    assert version == 2
    again = do_import(store, row(cetuximab_cycles="4", death_date="2006-01-10"), update=True)
    assert again.unchanged == 1 and again.updated == 0


def test_failure_mid_import_rolls_back(store: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the rows are written (the disk fills up) leaves nothing behind."""
    original = repository.insert_records

    def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
        original(*args, **kwargs)  # the rows are written, then the disk fills up
        raise RuntimeError("disk full")

    monkeypatch.setattr(repository, "insert_records", explode)
    with pytest.raises(RuntimeError):
        do_import(store, row(), row(patient_id="P2"), row(patient_id="P3"))
    with store.connect() as conn:
        for table in (t.patient, t.import_batch, t.contact, t.centre, t.audit_log):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0, table.name
    monkeypatch.undo()
    assert do_import(store, row(), row(patient_id="P2")).created == 2  # and nothing is left in the way


def test_partial_update_is_checked_on_the_merged_record(store: sa.Engine) -> None:
    do_import(store, row(surgery_date="2005-06-01", surgery_type="hepatectomy", clavien_dindo_max="none"))
    columns = ("patient_id", "centre", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner",
               "last_contact_date")  # no surgery columns: they keep their stored values
    text = ",".join(columns) + "\nP1,A,in_house,2,2005-07-01,irinotecan,2006-01-10\n"
    parsed = parse_registry_csv(text.encode(), source="u.csv")
    assert parsed.ok  # the file alone cannot see the stored surgery_date ...
    result = import_records(store, parsed.records, source="u.csv", sha256=parsed.sha256, rows=1, update=True)
    assert [(i.code, i.line, i.column) for i in result.issues] == [("X401", 2, "surgery_date")]  # ... the merge can
    with store.connect() as conn:
        (record,) = list(iter_records(conn))
    assert record["cetuximab_start"] == dt.date(2005, 1, 10)


def test_imports_enter_the_hash_chained_audit_trail(store: sa.Engine) -> None:
    from oncosurg.store import audit

    do_import(store, row(), row(patient_id="P2"))
    do_import(store, row(cetuximab_cycles="4"), update=True)
    with store.connect() as conn:
        entries = conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id)).mappings().all()
        check = audit.verify(conn)
    assert check.ok and check.rows == 4
    assert [(e["action"], e["patient_id"], e["entity"], e["field"]) for e in entries] == [
        ("create", "P1", "patient", None), ("create", "P2", "patient", None),
        ("update", "P1", "therapy_line", "cycles"),  # the flat cetuximab_cycles is the rescue line's cycles
        ("state", "P1", "patient", "state")]  # the record after the change, for audit verify
    assert '"therapy_line":[' in entries[0]["new_value"]  # a new patient's audit row carries its whole record
    assert entries[2]["old_value"] is None and entries[2]["new_value"] == "4" and entries[2]["version"] == 2
    assert entries[0]["username"].startswith("cli:") and "import batch 1" in entries[0]["reason"]
    # create and state rows carry the patient's values, so verify can compare the trail with the tables
    assert json.loads(entries[0]["new_value"])["therapy_line"][0]["start_date"] == "2005-01-10"
    assert json.loads(entries[3]["new_value"])["therapy_line"][0]["cycles"] == "4" and entries[3]["version"] == 2
    assert check.patients_checked == 2 and not check.mismatches


def test_update_keeps_complications_recorded_one_by_one(store: sa.Engine) -> None:
    from oncosurg.store import audit

    do_import(store, row(surgery_date="2005-06-01", surgery_type="hepatectomy", clavien_dindo_max="IIIa"))
    with store.begin() as conn:  # as the web app records them: several complications with details
        pk = conn.execute(sa.select(t.patient.c.id)).scalar_one()
        op = conn.execute(sa.select(t.liver_procedure.c.id)).scalar_one()
        conn.execute(sa.delete(t.complication))
        conn.execute(sa.insert(t.complication), [
            {"patient_pk": pk, "procedure_pk": op, "complication_no": 1, "grade": "II", "grade_rank": 2,
             "description": "transfusion"},
            {"patient_pk": pk, "procedure_pk": op, "complication_no": 2, "grade": "IIIa", "grade_rank": 3,
             "description": "drained collection"}])
    do_import(store, row(surgery_date="2005-06-01", surgery_type="hepatectomy", clavien_dindo_max="IIIa",
                         cetuximab_cycles="7"), update=True)
    with store.connect() as conn:
        kept = sorted(conn.execute(sa.select(t.complication.c.grade, t.complication.c.description)).all())
    assert kept == [("II", "transfusion"), ("IIIa", "drained collection")]
    surgery = {"surgery_date": "2005-06-01", "surgery_type": "hepatectomy"}
    for lower in ({**surgery, "clavien_dindo_max": "II"}, {**surgery, "clavien_dindo_max": "none"}):
        # lowering the worst grade would delete a complication recorded one by one: refused, naming it
        refused = do_import(store, row(**lower, cetuximab_cycles="8"), update=True)
        assert [(i.code, i.line, i.column) for i in refused.issues] == [("X418", 2, "clavien_dindo_max")]
        assert "IIIa (drained collection)" in refused.issues[0].message
    with store.connect() as conn:
        after = sorted(conn.execute(sa.select(t.complication.c.grade, t.complication.c.description)).all())
        (record,) = list(iter_records(conn))
    assert after == kept and record["clavien_dindo_max"] == "IIIa" and record["cetuximab_cycles"] == 7
    # a higher worst grade adds a row standing for it (no date, no description); the itemised rows stay
    do_import(store, row(**surgery, clavien_dindo_max="IVa", cetuximab_cycles="7"), update=True)
    with store.connect() as conn:
        rows = sorted(conn.execute(sa.select(t.complication.c.grade, t.complication.c.description)).all())
        assert audit.verify(conn).ok
    assert rows == [("II", "transfusion"), ("IIIa", "drained collection"), ("IVa", None)]
    # ... and it follows the file down to the itemised worst grade, not below
    do_import(store, row(**surgery, clavien_dindo_max="IIIa", cetuximab_cycles="7"), update=True)
    with store.connect() as conn:
        rows = sorted(conn.execute(sa.select(t.complication.c.grade, t.complication.c.description)).all())
    assert rows == kept


def test_a_worst_grade_from_a_file_follows_the_file_and_every_row_change_is_audited(store: sa.Engine) -> None:
    from oncosurg.store import audit

    surgery = {"surgery_date": "2005-06-01", "surgery_type": "hepatectomy"}
    do_import(store, row(**surgery, clavien_dindo_max="IIIa"))
    for grade in ("II", "IVa", "none"):
        assert not do_import(store, row(**surgery, clavien_dindo_max=grade), update=True).issues
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.complication)).scalar_one() == 0
        (record,) = list(iter_records(conn))
        trail = conn.execute(sa.select(t.audit_log.c.action, t.audit_log.c.entity, t.audit_log.c.field,
                                       t.audit_log.c.old_value, t.audit_log.c.new_value)
                             .where(t.audit_log.c.entity == "complication").order_by(t.audit_log.c.id)).all()
        assert audit.verify(conn).ok
    assert record["clavien_dindo_max"] == "none"
    assert [tuple(r)[:3] for r in trail] == [("update", "complication", "grade"), ("update", "complication", "grade"),
                                             ("delete", "complication", None)]
    assert [(r[3], r[4]) for r in trail[:2]] == [("IIIa", "II"), ("II", "IVa")]
    assert '"grade":"IVa"' in trail[2][3]  # the row removed, with its values
