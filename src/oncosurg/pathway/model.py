"""The episode model of the pathway: a patient and the dated episodes of their care.

A centre's registry holds, per patient, several therapy lines, MDT reviews, response assessments,
liver procedures (each with its complications and the pathology of its specimen), disease events
(progression, recurrence) and contacts.  This module declares each episode table once — its key,
its parent, its fields with their types, vocabularies, ranges and units — for the store, the long
registry format (``docs/registry-long.md``), REDCap, FHIR, Excel, the web forms and the validation
rules alike.  Field declarations reuse :class:`oncosurg.schema.Field`, so single-value checks are
the registry's :func:`oncosurg.rules.parse_cell`.

Keys: every episode has a key within its patient that users see and that every format round-trips:
``line_number`` for therapy lines (the clinical line number) and an instance number ``*_no`` for the
others (REDCap's repeat instance: assigned once, never renumbered; dates order episodes, numbers
only name them).  A child names its parent by the parent's key (``procedure_no``); pathology is
one-to-one with its procedure.

Derived, never stored: last contact, death and vital status (from contacts), the worst
Clavien-Dindo grade of a procedure (from its complications), repeat hepatectomy, the rescue line.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from oncosurg.schema import CLAVIEN_DINDO, MARGINS, RESPONSES, YES_NO, Field, Kind, Stage

#: Targeted and cytotoxic agents of a therapy line, in canonical (storage) order.
AGENTS = ("cetuximab", "panitumumab", "bevacizumab", "aflibercept", "oxaliplatin", "irinotecan",
          "fluoropyrimidine", "hai", "other")
AGENT_LABELS = {
    "cetuximab": "cetuximab", "panitumumab": "panitumumab", "bevacizumab": "bevacizumab",
    "aflibercept": "aflibercept", "oxaliplatin": "oxaliplatin", "irinotecan": "irinotecan",
    "fluoropyrimidine": "fluoropyrimidine (5-FU, capecitabine)", "hai": "hepatic arterial infusion",
    "other": "other agent",
}
ANTI_EGFR = ("cetuximab", "panitumumab")
INTENTS = ("palliative", "conversion", "neoadjuvant", "adjuvant")
GIVEN_AT = ("centre", "elsewhere")
STOP_REASONS = ("progression", "toxicity", "surgery", "completed", "other")
SCHEDULES = ("weekly", "biweekly")
MDT_DECISIONS = ("resectable", "potentially_resectable", "unresectable_continue", "unresectable_stop")
PROCEDURE_TYPES = ("hepatectomy", "ablation", "exploration_only", "pve", "two_stage_first", "two_stage_second",
                   "alpps_1", "alpps_2")
PROCEDURE_LABELS = {
    "hepatectomy": "hepatectomy", "ablation": "ablation", "exploration_only": "exploration only",
    "pve": "portal vein embolisation", "two_stage_first": "two-stage hepatectomy, first stage",
    "two_stage_second": "two-stage hepatectomy, second stage", "alpps_1": "ALPPS stage 1",
    "alpps_2": "ALPPS stage 2",
}
#: Procedures that remove liver tissue and so have a specimen (pathology, margin).  A two-stage first
#: stage may be a clearance resection: it counts as a resection when segments are recorded.
RESECTIONS = ("hepatectomy", "two_stage_second", "alpps_2")
MAYBE_RESECTION = ("two_stage_first", "alpps_1")
#: Operations (laparotomy or laparoscopy) for the liver disease: every type but portal vein embolisation.
OPERATIONS = tuple(p for p in PROCEDURE_TYPES if p != "pve")
#: The stage that must precede each second stage.
FIRST_STAGE_OF = {"two_stage_second": "two_stage_first", "alpps_2": "alpps_1"}
APPROACHES = ("open", "laparoscopic", "robotic")
EVENT_KINDS = ("progression", "recurrence")
SITES = ("liver", "lung", "peritoneum", "nodes", "bone", "brain", "other")
VITAL_STATUS = ("alive", "dead")
MUTATION_STATUS = ("wild_type", "mutant", "not_tested")
MSI_STATUS = ("mss", "msi_high", "not_tested")
GRADES = CLAVIEN_DINDO[1:]


class Table(StrEnum):
    """Store table (and long-format file stem) of each part of a patient's record."""

    PATIENT = "patient"
    THERAPY_LINE = "therapy_line"
    MDT_REVIEW = "mdt_review"
    RESPONSE_ASSESSMENT = "response_assessment"
    LIVER_PROCEDURE = "liver_procedure"
    COMPLICATION = "complication"
    PATHOLOGY = "pathology"
    DISEASE_EVENT = "disease_event"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class EpisodeTable:
    """One table of the episode model.

    ``key`` names the columns that identify a row within its patient (the parent's key first for a
    child table); ``parent`` is the table whose key the child repeats; ``date`` is the column that
    places the episode in time (``None`` for pathology, dated by its procedure).
    """

    table: Table
    file: str
    title: str
    key: tuple[str, ...]
    fields: tuple[Field, ...]
    parent: Table | None = None
    date: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of the long-format file, in order: centre, patient_id, the key, then the fields."""
        head = ("centre", "patient_id", *self.key)
        return tuple(dict.fromkeys((*head, *(f.name for f in self.fields))))

    @property
    def field_by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @property
    def own_key(self) -> str:
        """The column that is this table's own part of the key (``procedure_no`` for pathology)."""
        return self.key[-1]


def _f(name: str, kind: Kind, stage: Stage, required: str = "no", choices: tuple[str, ...] = (), **kw: object
       ) -> Field:
    return Field(name, kind, stage, required, choices, **kw)  # type: ignore[arg-type]


S = Stage
K = Kind
_KEY = {"minimum": 1, "maximum": 10_000}

PATIENT = EpisodeTable(Table.PATIENT, "patients.csv", "Patients", ("patient_id",), (
    _f("patient_id", K.TEXT, S.PATIENT, "yes", description="pseudonym, unique per centre"),
    _f("sex", K.ENUM, S.PATIENT, choices=("F", "M")),
    _f("birth_year", K.INTEGER, S.PATIENT, minimum=1900, maximum=2100, unit="year"),
    _f("age_at_rescue", K.NUMBER, S.PATIENT, minimum=18, maximum=100, unit="years",
       description="age at the start of the rescue (conversion) line; the flat CSV's age_at_cetuximab"),
    _f("primary_site", K.ENUM, S.PATIENT, choices=("colon", "rectum")),
    _f("primary_side", K.ENUM, S.PATIENT, choices=("left", "right")),
    _f("ras_status", K.ENUM, S.PATIENT, choices=MUTATION_STATUS, description="KRAS/NRAS"),
    _f("braf_status", K.ENUM, S.PATIENT, choices=MUTATION_STATUS, description="BRAF V600E"),
    _f("msi_status", K.ENUM, S.PATIENT, choices=MSI_STATUS, description="microsatellite instability / MMR"),
    _f("referral", K.ENUM, S.PATIENT, "yes", ("in_house", "referred"),
       description="in_house: the pathway began at the centre; referred: sent by another hospital"),
    _f("referral_date", K.DATE, S.PATIENT, description="date of the referral (referred patients)"),
))

THERAPY_LINE = EpisodeTable(Table.THERAPY_LINE, "therapy_lines.csv", "Therapy lines", ("line_number",), (
    _f("line_number", K.INTEGER, S.THERAPY_LINE, "yes", **_KEY,
       description="clinical line number (1 = first line); earlier lines may be left out"),
    _f("start_date", K.DATE, S.THERAPY_LINE, description="first administration; may be empty only for an "
       "earlier line known only by its number"),
    _f("stop_date", K.DATE, S.THERAPY_LINE, description="last administration; empty while on treatment"),
    _f("agents", K.CODES, S.THERAPY_LINE, "yes", AGENTS, description="agents of the line, ';'-separated"),
    _f("intent", K.ENUM, S.THERAPY_LINE, choices=INTENTS,
       description="conversion = rescue therapy given to make unresectable metastases resectable"),
    _f("given_at", K.ENUM, S.THERAPY_LINE, choices=GIVEN_AT),
    _f("cycles", K.INTEGER, S.THERAPY_LINE, minimum=0, maximum=200, description="cycles given in this line"),
    _f("best_response", K.ENUM, S.THERAPY_LINE, choices=RESPONSES, description="best RECIST response"),
    _f("stop_reason", K.ENUM, S.THERAPY_LINE, choices=STOP_REASONS),
    _f("schedule", K.ENUM, S.THERAPY_LINE, choices=SCHEDULES,
       description="targeted agent: weekly 250 mg/m² (400 loading) or every two weeks 500 mg/m²"),
    _f("dose_mg_m2", K.NUMBER, S.THERAPY_LINE, minimum=0, maximum=1000, exclusive_minimum=True, unit="mg/m²",
       description="targeted agent dose per administration"),
    _f("bsa_m2", K.NUMBER, S.THERAPY_LINE, minimum=0.5, maximum=3.5, unit="m²", description="body-surface area"),
    _f("liver_mets_count", K.INTEGER, S.THERAPY_LINE, minimum=1, description="liver metastases at the line's start"),
    _f("largest_met_mm", K.NUMBER, S.THERAPY_LINE, minimum=0, exclusive_minimum=True, unit="mm",
       description="largest liver metastasis at the line's start"),
    _f("bilobar", K.BOOL, S.THERAPY_LINE, choices=YES_NO, description="at the line's start"),
    _f("extrahepatic_disease", K.BOOL, S.THERAPY_LINE, choices=YES_NO, description="at the line's start"),
), date="start_date")

MDT_REVIEW = EpisodeTable(Table.MDT_REVIEW, "mdt_reviews.csv", "MDT reviews", ("review_no",), (
    _f("review_no", K.INTEGER, S.MDT_REVIEW, "yes", **_KEY),
    _f("review_date", K.DATE, S.MDT_REVIEW, "yes"),
    _f("decision", K.ENUM, S.MDT_REVIEW, "yes", MDT_DECISIONS, description="MDT resectability decision"),
    _f("line_number", K.INTEGER, S.MDT_REVIEW, **_KEY, description="the therapy line under review"),
    _f("cycles_at_review", K.INTEGER, S.MDT_REVIEW, minimum=0, maximum=200, description="cycles given so far"),
    _f("notes", K.TEXT, S.MDT_REVIEW, max_length=2000),
), date="review_date")

RESPONSE_ASSESSMENT = EpisodeTable(
    Table.RESPONSE_ASSESSMENT, "response_assessments.csv", "Response assessments", ("assessment_no",), (
        _f("assessment_no", K.INTEGER, S.RESPONSE_ASSESSMENT, "yes", **_KEY),
        _f("assessment_date", K.DATE, S.RESPONSE_ASSESSMENT, "yes"),
        _f("line_number", K.INTEGER, S.RESPONSE_ASSESSMENT, **_KEY, description="the therapy line assessed"),
        _f("category", K.ENUM, S.RESPONSE_ASSESSMENT, choices=RESPONSES, description="RECIST 1.1"),
        _f("baseline_sum_mm", K.NUMBER, S.RESPONSE_ASSESSMENT, minimum=0, maximum=2000, unit="mm",
           description="sum of target-lesion diameters at baseline"),
        _f("current_sum_mm", K.NUMBER, S.RESPONSE_ASSESSMENT, minimum=0, maximum=2000, unit="mm"),
        _f("nadir_sum_mm", K.NUMBER, S.RESPONSE_ASSESSMENT, minimum=0, maximum=2000, unit="mm"),
        _f("new_lesions", K.BOOL, S.RESPONSE_ASSESSMENT, choices=YES_NO),
    ), date="assessment_date")

LIVER_PROCEDURE = EpisodeTable(Table.LIVER_PROCEDURE, "liver_procedures.csv", "Liver procedures", ("procedure_no",), (
    _f("procedure_no", K.INTEGER, S.LIVER_PROCEDURE, "yes", **_KEY),
    _f("procedure_date", K.DATE, S.LIVER_PROCEDURE, "yes"),
    _f("procedure_type", K.ENUM, S.LIVER_PROCEDURE, "yes", PROCEDURE_TYPES),
    _f("resected_segments", K.SEGMENTS, S.LIVER_PROCEDURE, description="Couinaud segments; major = 3 or more"),
    _f("margin", K.ENUM, S.LIVER_PROCEDURE, choices=MARGINS, description="resections only"),
    _f("approach", K.ENUM, S.LIVER_PROCEDURE, choices=APPROACHES),
    _f("two_stage", K.BOOL, S.LIVER_PROCEDURE, choices=YES_NO,
       description="part of a two-stage strategy (the flat CSV's flag; implied by the two-stage types)"),
    _f("portal_vein_embolization", K.BOOL, S.LIVER_PROCEDURE, choices=YES_NO,
       description="preceded by portal vein embolisation (the flat CSV's flag)"),
    _f("complications_assessed", K.BOOL, S.LIVER_PROCEDURE, choices=YES_NO,
       description="yes = complications were assessed (none recorded means none occurred)"),
), date="procedure_date")

COMPLICATION = EpisodeTable(Table.COMPLICATION, "complications.csv", "Complications",
                            ("procedure_no", "complication_no"), (
    _f("procedure_no", K.INTEGER, S.COMPLICATIONS, "yes", **_KEY),
    _f("complication_no", K.INTEGER, S.COMPLICATIONS, "yes", **_KEY),
    _f("grade", K.ENUM, S.COMPLICATIONS, "yes", GRADES, description="Clavien-Dindo"),
    _f("complication_date", K.DATE, S.COMPLICATIONS),
    _f("description", K.TEXT, S.COMPLICATIONS, max_length=200),
), parent=Table.LIVER_PROCEDURE, date="complication_date")

PATHOLOGY = EpisodeTable(Table.PATHOLOGY, "pathology.csv", "Pathology", ("procedure_no",), (
    _f("procedure_no", K.INTEGER, S.PATHOLOGY, "yes", **_KEY, description="the resection the specimen comes from"),
    _f("steatosis_pct", K.NUMBER, S.PATHOLOGY, minimum=0, maximum=100, unit="%", description="non-tumoral liver"),
    _f("steatohepatitis", K.BOOL, S.PATHOLOGY, choices=YES_NO),
    _f("sinusoidal_dilatation_grade", K.INTEGER, S.PATHOLOGY, minimum=0, maximum=3, description="Rubbia-Brandt"),
    _f("fibrosis_stage", K.INTEGER, S.PATHOLOGY, minimum=0, maximum=4),
    _f("nodular_regenerative_hyperplasia", K.BOOL, S.PATHOLOGY, choices=YES_NO),
    _f("tumour_regression_grade", K.INTEGER, S.PATHOLOGY, minimum=1, maximum=5, description="Rubbia-Brandt TRG"),
    _f("lesion_count", K.INTEGER, S.PATHOLOGY, minimum=0, maximum=200, description="metastases in the specimen"),
    _f("largest_lesion_mm", K.NUMBER, S.PATHOLOGY, minimum=0, exclusive_minimum=True, maximum=400, unit="mm"),
    _f("margin_mm", K.NUMBER, S.PATHOLOGY, minimum=0, maximum=200, unit="mm", description="closest margin"),
), parent=Table.LIVER_PROCEDURE)

DISEASE_EVENT = EpisodeTable(Table.DISEASE_EVENT, "disease_events.csv", "Disease events", ("event_no",), (
    _f("event_no", K.INTEGER, S.DISEASE_EVENT, "yes", **_KEY),
    _f("event_date", K.DATE, S.DISEASE_EVENT, "yes"),
    _f("event_kind", K.ENUM, S.DISEASE_EVENT, "yes", EVENT_KINDS,
       description="progression of known disease, or recurrence after resection"),
    _f("sites", K.CODES, S.DISEASE_EVENT, choices=SITES, description="';'-separated"),
), date="event_date")

CONTACT = EpisodeTable(Table.CONTACT, "contacts.csv", "Contacts", ("contact_no",), (
    _f("contact_no", K.INTEGER, S.CONTACT, "yes", **_KEY),
    _f("contact_date", K.DATE, S.CONTACT, "yes"),
    _f("vital_status", K.ENUM, S.CONTACT, "yes", VITAL_STATUS,
       description="dead: the contact records the death, on its date"),
), date="contact_date")
del S, K

#: Every table of the model in pathway order (parents before children).
TABLES: tuple[EpisodeTable, ...] = (PATIENT, THERAPY_LINE, MDT_REVIEW, RESPONSE_ASSESSMENT, LIVER_PROCEDURE,
                                    COMPLICATION, PATHOLOGY, DISEASE_EVENT, CONTACT)
TABLE_BY_NAME: dict[Table, EpisodeTable] = {t.table: t for t in TABLES}
EPISODE_TABLES: tuple[EpisodeTable, ...] = TABLES[1:]


def join_list(values: list[str] | tuple[str, ...] | set[str], vocabulary: tuple[str, ...]) -> str:
    """Canonical ``;``-joined text of a set of codes, in vocabulary order."""
    chosen = set(values)
    return ";".join(v for v in vocabulary if v in chosen)


def split_list(text: str | None) -> tuple[str, ...]:
    """Codes of a canonical ``;``-joined text (empty tuple for ``None``)."""
    return tuple(text.split(";")) if text else ()


def is_resection(procedure_type: str | None, resected_segments: str | None = None) -> bool:
    """Whether a procedure removes liver tissue (has a specimen, a margin and pathology)."""
    if procedure_type in RESECTIONS:
        return True
    return procedure_type in MAYBE_RESECTION and bool(resected_segments)
