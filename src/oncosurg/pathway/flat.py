"""The flat registry CSV (one row per patient, 33 columns) as a projection of the episode model.

Both directions are defined here, once, and mirrored in SQL by the analysis view
(:mod:`oncosurg.protocol.view`), which a test keeps in step:

* :func:`from_flat` maps a flat record onto a patient with at most one rescue line, one liver
  procedure (with its complications and pathology), one disease event and one contact.  Earlier
  therapy lines are not invented: the flat ``prior_chemo_lines`` is the rescue line's number − 1.
* :func:`to_flat` projects a patient's episodes back onto the flat columns: the rescue line, the
  operation that follows it, the first disease event after its start and the last contact.
  What the flat row cannot carry (other lines, procedures, events) is listed, so that ``export``
  can say which patients need the long format.

``from_flat`` followed by ``to_flat`` gives back the flat record exactly (the round trip the
flat CSV promises).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oncosurg.pathway.model import (
    AGENTS,
    OPERATIONS,
    Table,
    join_list,
    split_list,
)
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS

#: The flat partner drug ↔ the agents of the rescue line besides cetuximab.
PARTNER_AGENTS: dict[str, tuple[str, ...]] = {
    "irinotecan": ("irinotecan",),
    "oxaliplatin": ("oxaliplatin",),
    "both": ("irinotecan", "oxaliplatin"),
    "none": (),
    "other": ("other",),
}
#: Flat surgery_type ↔ procedure_type.
FLAT_TO_PROCEDURE = {"hepatectomy": "hepatectomy", "exploration_only": "exploration_only", "ablation_only": "ablation"}
PROCEDURE_TO_FLAT = {"hepatectomy": "hepatectomy", "two_stage_second": "hepatectomy", "alpps_2": "hepatectomy",
                     "ablation": "ablation_only", "exploration_only": "exploration_only",
                     "two_stage_first": "exploration_only", "alpps_1": "exploration_only"}
#: Flat columns that move to the patient table unchanged (``age_at_cetuximab`` is renamed).
PATIENT_COLUMNS = ("patient_id", "sex", "primary_site", "primary_side", "ras_status", "referral")
LINE_BURDEN = ("liver_mets_count", "largest_met_mm", "bilobar", "extrahepatic_disease")
PROCEDURE_COLUMNS = ("resected_segments", "margin", "two_stage", "portal_vein_embolization")
PATHOLOGY_COLUMNS = ("steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade", "fibrosis_stage",
                     "nodular_regenerative_hyperplasia", "tumour_regression_grade")


@dataclass(slots=True)
class PatientRecord:
    """A patient and their episodes: ``episodes[table]`` is a list of rows (column → value).

    Rows carry their key columns (``line_number``, ``procedure_no``…) but not centre/patient_id,
    which are the record's.  ``carried`` says which columns of which tables the source held, for
    updates: a table or column the source did not carry is left unchanged by ``import --update``
    (``None`` = the record is complete, e.g. a new patient).  ``where`` maps ``(table, key)`` to the
    ``(file, line)`` the row came from, for messages.
    """

    centre: str
    patient: dict[str, Any]
    episodes: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    carried: dict[Table, frozenset[str]] | None = None
    where: dict[tuple[Table, tuple[Any, ...]], tuple[str | None, int | None]] = field(default_factory=dict)

    @property
    def patient_id(self) -> str:
        return self.patient["patient_id"]

    def rows(self, table: Table) -> list[dict[str, Any]]:
        return self.episodes.get(table, [])


def partner_of(agents: Sequence[str]) -> str:
    """The flat ``cetuximab_partner`` of a line's agents (irinotecan and/or oxaliplatin, else other/none)."""
    chemo = {a for a in agents if a in ("irinotecan", "oxaliplatin")}
    if len(chemo) == 2:
        return "both"
    if chemo:
        return chemo.pop()
    return "other" if "other" in agents else "none"


def from_flat(values: Mapping[str, Any]) -> PatientRecord:
    """The episode form of one complete, validated flat record."""
    get = values.get
    patient = {c: get(c) for c in PATIENT_COLUMNS}
    patient["age_at_rescue"] = get("age_at_cetuximab")
    record = PatientRecord(get("centre"), patient)
    referral = get("referral")
    line = {
        "line_number": (get("prior_chemo_lines") or 0) + 1,
        "start_date": get("cetuximab_start"),
        "agents": join_list(("cetuximab", *PARTNER_AGENTS[get("cetuximab_partner") or "none"]), AGENTS),
        "intent": "conversion",
        "given_at": None if referral is None else ("centre" if referral == "in_house" else "elsewhere"),
        "cycles": get("cetuximab_cycles"),
        "best_response": get("best_response"),
        **{c: get(c) for c in LINE_BURDEN},
    }
    record.episodes[Table.THERAPY_LINE] = [line]
    surgery = get("surgery_date")
    if surgery is not None:
        grade = get("clavien_dindo_max")
        procedure = {"procedure_no": 1, "procedure_date": surgery,
                     "procedure_type": FLAT_TO_PROCEDURE.get(get("surgery_type") or ""),
                     **{c: get(c) for c in PROCEDURE_COLUMNS},
                     "complications_assessed": grade is not None}
        record.episodes[Table.LIVER_PROCEDURE] = [procedure]
        if grade not in (None, "none"):
            record.episodes[Table.COMPLICATION] = [{"procedure_no": 1, "complication_no": 1, "grade": grade}]
        pathology = {c: get(c) for c in PATHOLOGY_COLUMNS}
        if any(v is not None for v in pathology.values()):
            record.episodes[Table.PATHOLOGY] = [{"procedure_no": 1, **pathology}]
    progression = get("progression_date")
    if progression is not None:
        resected_before = (surgery is not None and surgery <= progression and get("surgery_type") == "hepatectomy"
                           and get("margin") in ("R0", "R1"))
        record.episodes[Table.DISEASE_EVENT] = [{"event_no": 1, "event_date": progression,
                                                 "event_kind": "recurrence" if resected_before else "progression"}]
    death, contact = get("death_date"), get("last_contact_date")
    if death is not None or contact is not None:
        record.episodes[Table.CONTACT] = [{"contact_no": 1, "contact_date": death or contact,
                                           "vital_status": "dead" if death is not None else "alive"}]
    return record


@dataclass(frozen=True, slots=True)
class Projection:
    """Which episodes the flat row is made of (``None`` where the patient has none)."""

    rescue_line: dict[str, Any] | None
    procedure: dict[str, Any] | None
    disease_event: dict[str, Any] | None
    last_contact: dict[str, Any] | None
    death: dict[str, Any] | None


def rescue_line(lines: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The line the flat row describes: the lowest-numbered conversion line containing cetuximab, else
    the lowest-numbered conversion line (``None`` when the patient has no conversion line)."""
    conversion = sorted((ln for ln in lines if ln.get("intent") == "conversion"), key=lambda ln: ln["line_number"])
    with_cetuximab = [ln for ln in conversion if "cetuximab" in split_list(ln.get("agents"))]
    return (with_cetuximab or conversion or [None])[0]


def _first_on_or_after(rows: Sequence[Mapping[str, Any]], column: str, start: dt.date | None,
                       key: str) -> Mapping[str, Any] | None:
    eligible = [r for r in rows if r.get(column) is not None and (start is None or r[column] >= start)]
    return min(eligible, key=lambda r: (r[column], r[key]), default=None)


def project(record: PatientRecord) -> Projection:
    """Select the episodes of the flat projection (mirrored in SQL by the analysis view)."""
    line = rescue_line(record.rows(Table.THERAPY_LINE))
    start = None if line is None else line.get("start_date")
    operations = [p for p in record.rows(Table.LIVER_PROCEDURE) if p.get("procedure_type") in OPERATIONS]
    procedure = _first_on_or_after(operations, "procedure_date", start, "procedure_no")
    if procedure is not None and procedure.get("procedure_type") in ("two_stage_first", "alpps_1"):
        second = {"two_stage_first": "two_stage_second", "alpps_1": "alpps_2"}[procedure["procedure_type"]]
        later = [p for p in operations if p.get("procedure_type") == second
                 and p["procedure_date"] >= procedure["procedure_date"]]
        procedure = min(later, key=lambda p: (p["procedure_date"], p["procedure_no"]), default=procedure)
    event = _first_on_or_after(record.rows(Table.DISEASE_EVENT), "event_date", start, "event_no")
    contacts = record.rows(Table.CONTACT)
    last = max(contacts, key=lambda c: (c["contact_date"], c["vital_status"] == "dead", c["contact_no"]),
               default=None)
    death = next((c for c in contacts if c.get("vital_status") == "dead"), None)
    return Projection(line, procedure, event, last, death)


def to_flat(record: PatientRecord) -> dict[str, Any]:
    """The flat registry columns of a patient (``None`` where the episodes say nothing)."""
    proj = project(record)
    get = record.patient.get
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update({c: get(c) for c in PATIENT_COLUMNS})
    out["centre"] = record.centre
    out["age_at_cetuximab"] = get("age_at_rescue")
    line = proj.rescue_line
    if line is not None:
        agents = split_list(line.get("agents"))
        out.update({
            "prior_chemo_lines": line["line_number"] - 1,
            "cetuximab_start": line.get("start_date"),
            "cetuximab_partner": partner_of(agents),
            "cetuximab_cycles": line.get("cycles"),
            "best_response": line.get("best_response"),
            **{c: line.get(c) for c in LINE_BURDEN},
        })
    procedure = proj.procedure
    if procedure is not None:
        number = procedure["procedure_no"]
        out["surgery_date"] = procedure["procedure_date"]
        out["surgery_type"] = PROCEDURE_TO_FLAT.get(procedure.get("procedure_type"))
        out.update({c: procedure.get(c) for c in PROCEDURE_COLUMNS})
        if procedure.get("procedure_type") in ("two_stage_second", "two_stage_first") and out["two_stage"] is None:
            out["two_stage"] = True
        grades = [c["grade"] for c in record.rows(Table.COMPLICATION) if c["procedure_no"] == number]
        if grades:
            out["clavien_dindo_max"] = max(grades, key=CLAVIEN_DINDO.index)
        elif procedure.get("complications_assessed"):
            out["clavien_dindo_max"] = "none"
        pathology = next((p for p in record.rows(Table.PATHOLOGY) if p["procedure_no"] == number), None)
        if pathology is not None:
            out.update({c: pathology.get(c) for c in PATHOLOGY_COLUMNS})
    if proj.disease_event is not None:
        out["progression_date"] = proj.disease_event["event_date"]
    if proj.last_contact is not None:
        out["last_contact_date"] = proj.last_contact["contact_date"]
    if proj.death is not None:
        out["death_date"] = proj.death["contact_date"]
    return out


def dropped_by_flat(record: PatientRecord) -> list[str]:
    """What the flat row of ``record`` leaves out, in words (empty when the flat row holds everything)."""
    proj = project(record)
    notes: list[str] = []
    lines = record.rows(Table.THERAPY_LINE)
    if proj.rescue_line is None and lines:
        notes.append("no conversion (rescue) therapy line")
    extra_lines = len(lines) - (proj.rescue_line is not None)
    if extra_lines:
        notes.append(f"{extra_lines} other therapy line(s)")
    kept = None if proj.procedure is None else proj.procedure["procedure_no"]
    extra = [p for p in record.rows(Table.LIVER_PROCEDURE) if p["procedure_no"] != kept]
    if extra:
        notes.append(f"{len(extra)} other liver procedure(s)")
    numbered = [c for c in record.rows(Table.COMPLICATION) if c["procedure_no"] == kept]
    if len(numbered) > 1 or any(c.get("description") or c.get("complication_date") for c in numbered):
        notes.append("itemised complications (only the worst grade is kept)")
    for table, label, picked in ((Table.DISEASE_EVENT, "disease event", proj.disease_event),
                                 (Table.CONTACT, "contact", proj.last_contact)):
        count = len(record.rows(table)) - (picked is not None) - (
            table is Table.CONTACT and proj.death is not None and proj.death is not proj.last_contact)
        if count > 0:
            notes.append(f"{count} other {label}(s)")
    for table, label in ((Table.MDT_REVIEW, "MDT review"), (Table.RESPONSE_ASSESSMENT, "response assessment")):
        if record.rows(table):
            notes.append(f"{len(record.rows(table))} {label}(s)")
    extra_patient = [c for c in ("birth_year", "braf_status", "msi_status", "referral_date")
                     if record.patient.get(c) is not None]
    if extra_patient:
        notes.append("patient fields " + ", ".join(extra_patient))
    if any(p.get(c) is not None for p in record.rows(Table.PATHOLOGY)
           for c in ("lesion_count", "largest_lesion_mm", "margin_mm")):
        notes.append("pathology lesion count, size or margin")
    if proj.rescue_line is not None and any(proj.rescue_line.get(c) is not None for c in
                                            ("stop_date", "stop_reason", "schedule", "dose_mg_m2", "bsa_m2")):
        notes.append("the rescue line's stop date, stop reason or regimen")
    return notes

