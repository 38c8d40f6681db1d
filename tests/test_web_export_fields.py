"""Every field a user can enter in the web app leaves the system in the long export (issue 11).

The test enumerates the fields of every form of the registration page and of the patient page (and
the form fields the OpenAPI spec declares for every write under /patients), fills each data field
of each episode type with a value, exports with ``oncosurg export --format long`` and fails on any
field that has no column in the export or whose value does not come out of it.
"""

from __future__ import annotations

import csv
import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.pathway.model import TABLES
from web_helpers import CENTRE_A, Api, add_user, fixed_today, make_app, verify_chain

#: Fields that steer a write and carry no data.
CONTROL = {"csrf_token", "version", "patient_version", "reason", "token", "mode"}
FILES = {spec.table.value: spec.file.removesuffix(".csv") for spec in TABLES}  # therapy_line → therapy_lines

#: Registration (the flat CSV's columns and the regimen): each field → (long file, column), by hand, so that
#: a new field without a destination fails here.
FLAT_TO_LONG: dict[str, tuple[str, str]] = {
    "patient_id": ("patients", "patient_id"), "centre": ("patients", "centre"), "referral": ("patients", "referral"),
    "sex": ("patients", "sex"), "age_at_cetuximab": ("patients", "age_at_rescue"),
    "primary_site": ("patients", "primary_site"), "primary_side": ("patients", "primary_side"),
    "ras_status": ("patients", "ras_status"),
    **{c: ("therapy_lines", c) for c in ("liver_mets_count", "largest_met_mm", "bilobar", "extrahepatic_disease",
                                         "best_response", "schedule", "dose_mg_m2", "bsa_m2", "stop_date")},
    "prior_chemo_lines": ("therapy_lines", "line_number"), "cetuximab_start": ("therapy_lines", "start_date"),
    "cetuximab_partner": ("therapy_lines", "agents"), "cetuximab_cycles": ("therapy_lines", "cycles"),
    "surgery_date": ("liver_procedures", "procedure_date"), "surgery_type": ("liver_procedures", "procedure_type"),
    **{c: ("liver_procedures", c) for c in ("resected_segments", "two_stage", "portal_vein_embolization", "margin")},
    "clavien_dindo_max": ("complications", "grade"),
    **{c: ("pathology", c) for c in ("steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade",
                                     "fibrosis_stage", "nodular_regenerative_hyperplasia", "tumour_regression_grade")},
    "progression_date": ("disease_events", "event_date"), "death_date": ("contacts", "contact_date"),
    "last_contact_date": ("contacts", "contact_date"),
}
REGISTRATION = {
    "centre": CENTRE_A, "patient_id": "PB-0777", "referral": "referred", "sex": "M", "age_at_cetuximab": "61",
    "primary_site": "rectum", "primary_side": "left", "ras_status": "wild_type", "liver_mets_count": "7",
    "largest_met_mm": "48", "bilobar": "yes", "extrahepatic_disease": "no", "prior_chemo_lines": "2",
    "cetuximab_start": "2005-03-01", "cetuximab_partner": "irinotecan", "cetuximab_cycles": "6",
    "best_response": "PR", "last_contact_date": "2005-05-20", "schedule": "biweekly", "dose_mg_m2": "500",
    "bsa_m2": "1.85", "stop_date": "2005-04-25",
}
#: What the registration values become in the long files (the rest come out as entered).
REGISTRATION_OUT = {"prior_chemo_lines": "3", "cetuximab_partner": "cetuximab;irinotecan"}
PATIENT = {"sex": "M", "birth_year": "1944", "age_at_rescue": "61", "primary_site": "rectum", "primary_side": "left",
           "ras_status": "wild_type", "braf_status": "mutant", "msi_status": "mss", "referral": "referred",
           "referral_date": "2005-02-14"}
#: One value for every field of every episode form (a new form field without a value here fails the test).
EPISODES: dict[str, dict[str, str]] = {
    "therapy_line": {"line_number": "4", "start_date": "2005-04-26", "stop_date": "2005-05-10",
                     "agents": "bevacizumab;oxaliplatin;fluoropyrimidine", "intent": "palliative",
                     "given_at": "centre", "cycles": "2", "best_response": "SD", "stop_reason": "toxicity",
                     "schedule": "weekly", "dose_mg_m2": "5", "bsa_m2": "1.8", "liver_mets_count": "5",
                     "largest_met_mm": "31", "bilobar": "no", "extrahepatic_disease": "yes"},
    "mdt_review": {"review_date": "2005-04-20", "decision": "potentially_resectable", "line_number": "3",
                   "cycles_at_review": "5", "notes": "reassess after two more cycles"},
    "response_assessment": {"assessment_date": "2005-04-18", "line_number": "3", "category": "PR",
                            "baseline_sum_mm": "110", "current_sum_mm": "70", "nadir_sum_mm": "110",
                            "new_lesions": "no"},
    "liver_procedure": {"procedure_date": "2005-05-12", "procedure_type": "two_stage_first",
                        "resected_segments": "2;3", "margin": "R1", "approach": "laparoscopic", "two_stage": "yes",
                        "portal_vein_embolization": "no", "complications_assessed": "yes"},
    "complication": {"procedure_no": "1", "grade": "IIIa", "complication_date": "2005-05-14",
                     "description": "biliary leak, drained"},
    "pathology": {"procedure_no": "1", "steatosis_pct": "35", "steatohepatitis": "yes",
                  "sinusoidal_dilatation_grade": "2", "fibrosis_stage": "1", "nodular_regenerative_hyperplasia": "no",
                  "tumour_regression_grade": "3", "lesion_count": "2", "largest_lesion_mm": "22", "margin_mm": "1.5"},
    "disease_event": {"event_date": "2005-05-18", "event_kind": "recurrence", "sites": "liver;lung"},
    "contact": {"contact_date": "2005-05-25", "vital_status": "alive"},
}


class _Forms(HTMLParser):
    """Every <form>'s action and the names of its input, select and textarea elements."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, set[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append((a.get("action") or "", set()))
        elif tag in ("input", "select", "textarea") and a.get("name") and self.forms:
            self.forms[-1][1].add(str(a["name"]))


def forms_of(html: str) -> list[tuple[str, set[str]]]:
    parser = _Forms()
    parser.feed(html)
    return [(action, names - CONTROL) for action, names in parser.forms]


def destination(action: str, name: str) -> tuple[str, str] | None:
    """Where a form field is kept in the long export; ``None`` = nowhere known."""
    parts = action.strip("/").split("/")
    if parts == ["patients"]:
        return FLAT_TO_LONG.get(name)
    if len(parts) >= 4 and parts[2] == "episodes":
        return (FILES[parts[3]], name)
    if len(parts) == 3 and parts[2] == "details":
        return ("patients", name)
    return None


def _same(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def test_every_field_of_every_form_leaves_the_system_in_the_long_export(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fields.db'}"
    app = make_app(url, today=fixed_today(dt.date(2005, 6, 1)))
    add_user(app, "dm", "data_manager", CENTRE_A)
    dm = Api(app, "dm")
    pk = dm.register(**REGISTRATION)
    version = dm.patient(pk)["version"]
    assert dm.post(f"/patients/{pk}/details", {"version": str(version), **PATIENT}).status_code == 200
    for table, values in EPISODES.items():
        response = dm.add(pk, table, **values)
        assert response.status_code == 200, (table, response.text)

    # the forms a user sees: registration and the patient page (one episode of each type on it)
    registration = dm.client.get("/patients/new", headers={"accept": "text/html"}).text
    page = dm.client.get(f"/patients/{pk}", headers={"accept": "text/html"}).text
    forms = forms_of(registration) + forms_of(page)
    entered: dict[str, set[str]] = {}
    for action, names in forms:
        if not names or action in ("/logout",) or action.endswith("/delete"):
            assert not names or (action.endswith("/delete") and names <= {"reason"}), (action, names)
            continue
        for name in names:
            where = destination(action, name)
            assert where is not None, f"form {action}: field {name!r} has no column in the long export"
            entered.setdefault(where[0], set()).add(where[1])
    add_forms = {a.rsplit("/", 1)[1]: names for a, names in forms_of(page) if a.endswith(tuple(
        f"/episodes/{t}" for t in EPISODES))}
    for table, names in add_forms.items():
        assert names == set(EPISODES[table]), f"{table}: give the test a value for {names ^ set(EPISODES[table])}"
    assert {n for a, names in forms_of(page) if a.endswith("/details") for n in names} == set(PATIENT)
    assert {n for a, names in forms_of(registration) if a == "/patients" for n in names} == set(REGISTRATION)

    # every form field the API accepts (legacy item endpoints and the flat stage API included)
    spec = app.openapi()
    for path, methods in spec["paths"].items():
        body = methods.get("post", {}).get("requestBody", {}).get("content", {})
        schema = body.get("application/x-www-form-urlencoded", {}).get("schema", {})
        if not path.startswith("/patients"):
            continue
        for name in set(schema.get("properties", {})) - CONTROL:
            long_columns = {c for t in TABLES for c in t.columns}
            assert name in FLAT_TO_LONG or name in long_columns, f"POST {path}: {name!r} cannot leave the system"

    # export, then find every value entered
    out = tmp_path / "long"
    result = CliRunner().invoke(cli, ["export", "--db", url, "--format", "long", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files: dict[str, list[dict[str, str]]] = {}
    for path in out.glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as handle:
            files[path.stem] = [r for r in csv.DictReader(handle) if r["patient_id"] == REGISTRATION["patient_id"]]
    for file, columns in entered.items():
        header = set(files[file][0]) if files[file] else set()
        assert columns <= header, f"{file}.csv lacks {columns - header}"
    missing = []
    for table, values in EPISODES.items():
        rows = files[FILES[table]]
        if not any(all(_same(row[c], v) for c, v in values.items()) for row in rows):
            missing.append((table, values, rows))
    for name, value in REGISTRATION.items():
        file, column = FLAT_TO_LONG[name]
        want = REGISTRATION_OUT.get(name, value)
        if not any(_same(row[column], want) for row in files[file]):
            missing.append((name, want, [r[column] for r in files[file]]))
    (patient,) = files["patients"]
    missing += [(n, v, patient[n]) for n, v in PATIENT.items() if not _same(patient[n], v)]
    assert not missing, missing
    assert verify_chain(app).ok
    app.state.store.dispose()
