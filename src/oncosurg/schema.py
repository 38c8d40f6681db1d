"""The pathway data model: one place for every registry field, its type, enum, range and unit.

The registry CSV (``docs/registry-columns.md``), the validation rules (:mod:`oncosurg.rules`), the
store tables (:mod:`oncosurg.store.tables`) and the analysis view all read this module, so a field
is declared once.  The order of :data:`FIELDS` is the column order of exported CSV files.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Value types of the registry CSV."""

    TEXT = "text"
    ENUM = "enum"
    INTEGER = "integer"
    NUMBER = "number"
    DATE = "date"
    BOOL = "bool"
    SEGMENTS = "segments"  # Couinaud segments 1-8, ';'-separated
    CODES = "codes"  # a set of codes from ``choices``, ';'-separated (stored in choice order)


class Stage(StrEnum):
    """Pathway stage (and store table) a field belongs to."""

    PATIENT = "patient"
    BASELINE = "baseline_tumour"
    PRIOR_CHEMO = "prior_chemotherapy"
    CETUXIMAB = "cetuximab_course"
    SURGERY = "surgery"
    COMPLICATIONS = "complication"
    PATHOLOGY_NONTUMORAL = "pathology_nontumoral"
    PATHOLOGY_TUMORAL = "pathology_tumoral"
    FOLLOW_UP = "follow_up"
    # episode tables (oncosurg.pathway.model)
    THERAPY_LINE = "therapy_line"
    MDT_REVIEW = "mdt_review"
    RESPONSE_ASSESSMENT = "response_assessment"
    LIVER_PROCEDURE = "liver_procedure"
    PATHOLOGY = "pathology"
    DISEASE_EVENT = "disease_event"
    CONTACT = "contact"


@dataclass(frozen=True, slots=True)
class Field:
    """One registry column.

    ``required`` is ``"yes"``, ``"no"`` or ``"with_surgery"`` (required if and only if a
    surgery_date is given).  ``minimum``/``maximum`` are inclusive unless ``exclusive_minimum``.
    """

    name: str
    kind: Kind
    stage: Stage
    required: str = "no"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    max_length: int = 64
    unit: str = ""
    description: str = ""

    def describe_type(self) -> str:
        """Human description of the accepted values, used in error hints and docs."""
        if self.kind is Kind.ENUM:
            return "one of " + ", ".join(f"'{c}'" for c in self.choices)
        if self.kind is Kind.DATE:
            return "an ISO date YYYY-MM-DD"
        if self.kind is Kind.BOOL:
            return "'yes' or 'no'"
        if self.kind is Kind.SEGMENTS:
            return "Couinaud segments 1-8 separated by ';' (e.g. 4;5;6)"
        if self.kind is Kind.CODES:
            return "codes separated by ';' from " + ", ".join(f"'{c}'" for c in self.choices)
        if self.kind in (Kind.INTEGER, Kind.NUMBER):
            word = "an integer" if self.kind is Kind.INTEGER else "a number"
            if self.minimum is not None and self.maximum is not None:
                return f"{word} from {_fmt(self.minimum)} to {_fmt(self.maximum)}"
            if self.minimum is not None:
                op = ">" if self.exclusive_minimum else ">="
                return f"{word} {op} {_fmt(self.minimum)}"
            return word
        if self.name == "patient_id":
            return "1-64 characters from A-Z a-z 0-9 _ . -"
        return f"text of at most {self.max_length} characters"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


YES_NO = ("yes", "no")
REFERRAL = ("in_house", "referred")
PARTNERS = ("irinotecan", "oxaliplatin", "both", "none", "other")
RESPONSES = ("CR", "PR", "SD", "PD", "NE")
SURGERY_TYPES = ("hepatectomy", "exploration_only", "ablation_only")
MARGINS = ("R0", "R1", "R2")
#: Clavien-Dindo grades in increasing severity (Dindo et al., Ann Surg 2004); index = rank.
CLAVIEN_DINDO = ("none", "I", "II", "IIIa", "IIIb", "IVa", "IVb", "V")

S = Stage
FIELDS: tuple[Field, ...] = (
    Field("patient_id", Kind.TEXT, S.PATIENT, "yes", description="pseudonym, unique per centre"),
    Field("centre", Kind.TEXT, S.PATIENT, max_length=120, description="default given at import"),
    Field("referral", Kind.ENUM, S.PATIENT, "yes", REFERRAL,
          description="cetuximab given at the centre, or elsewhere then referred"),
    Field("sex", Kind.ENUM, S.PATIENT, choices=("F", "M")),
    Field("age_at_cetuximab", Kind.NUMBER, S.PATIENT, minimum=18, maximum=100, unit="years"),
    Field("primary_site", Kind.ENUM, S.PATIENT, choices=("colon", "rectum")),
    Field("primary_side", Kind.ENUM, S.PATIENT, choices=("left", "right")),
    Field("ras_status", Kind.ENUM, S.PATIENT, choices=("wild_type", "mutant", "not_tested")),
    Field("liver_mets_count", Kind.INTEGER, S.BASELINE, minimum=1, description="at cetuximab start"),
    Field("largest_met_mm", Kind.NUMBER, S.BASELINE, minimum=0, exclusive_minimum=True, unit="mm"),
    Field("bilobar", Kind.BOOL, S.BASELINE, choices=YES_NO),
    Field("extrahepatic_disease", Kind.BOOL, S.BASELINE, choices=YES_NO),
    Field("prior_chemo_lines", Kind.INTEGER, S.PRIOR_CHEMO, "yes", minimum=1,
          description="lines failed before cetuximab"),
    Field("cetuximab_start", Kind.DATE, S.CETUXIMAB, "yes", description="time origin of OS and PFS"),
    Field("cetuximab_partner", Kind.ENUM, S.CETUXIMAB, "yes", PARTNERS),
    Field("cetuximab_cycles", Kind.INTEGER, S.CETUXIMAB, minimum=0, description="cycles before surgery or stop"),
    Field("best_response", Kind.ENUM, S.CETUXIMAB, choices=RESPONSES, description="RECIST"),
    Field("surgery_date", Kind.DATE, S.SURGERY, description="empty = not operated"),
    Field("surgery_type", Kind.ENUM, S.SURGERY, "with_surgery", SURGERY_TYPES),
    Field("resected_segments", Kind.SEGMENTS, S.SURGERY, description="major hepatectomy = 3 or more"),
    Field("two_stage", Kind.BOOL, S.SURGERY, choices=YES_NO),
    Field("portal_vein_embolization", Kind.BOOL, S.SURGERY, choices=YES_NO),
    Field("margin", Kind.ENUM, S.SURGERY, choices=MARGINS, description="hepatectomy only"),
    Field("clavien_dindo_max", Kind.ENUM, S.COMPLICATIONS, "with_surgery", CLAVIEN_DINDO,
          description="worst complication"),
    Field("steatosis_pct", Kind.NUMBER, S.PATHOLOGY_NONTUMORAL, minimum=0, maximum=100, unit="%",
          description="non-tumoral liver, hepatectomy only"),
    Field("steatohepatitis", Kind.BOOL, S.PATHOLOGY_NONTUMORAL, choices=YES_NO),
    Field("sinusoidal_dilatation_grade", Kind.INTEGER, S.PATHOLOGY_NONTUMORAL, minimum=0, maximum=3,
          description="Rubbia-Brandt"),
    Field("fibrosis_stage", Kind.INTEGER, S.PATHOLOGY_NONTUMORAL, minimum=0, maximum=4),
    Field("nodular_regenerative_hyperplasia", Kind.BOOL, S.PATHOLOGY_NONTUMORAL, choices=YES_NO),
    Field("tumour_regression_grade", Kind.INTEGER, S.PATHOLOGY_TUMORAL, minimum=1, maximum=5,
          description="Rubbia-Brandt TRG"),
    Field("progression_date", Kind.DATE, S.FOLLOW_UP,
          description="first progression or recurrence after cetuximab start"),
    Field("death_date", Kind.DATE, S.FOLLOW_UP),
    Field("last_contact_date", Kind.DATE, S.FOLLOW_UP, "yes", description="equals death_date when dead"),
)
del S

#: The stages of the flat registry CSV (its fields' groups), in pathway order; the other Stage members
#: name the episode tables (oncosurg.pathway.model).
FLAT_STAGES: tuple[Stage, ...] = (Stage.PATIENT, Stage.BASELINE, Stage.PRIOR_CHEMO, Stage.CETUXIMAB, Stage.SURGERY,
                                  Stage.COMPLICATIONS, Stage.PATHOLOGY_NONTUMORAL, Stage.PATHOLOGY_TUMORAL,
                                  Stage.FOLLOW_UP)

FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required == "yes")

#: Columns that only make sense with a surgery_date.
SURGERY_COLUMNS: tuple[str, ...] = (
    "surgery_type", "resected_segments", "two_stage", "portal_vein_embolization", "margin",
    "clavien_dindo_max",
)
#: Columns that only make sense for a hepatectomy (what was resected, the margin and the pathology of
#: the specimen): an exploration or an ablation resects no segment.
HEPATECTOMY_COLUMNS: tuple[str, ...] = (
    "resected_segments", "margin", "steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade", "fibrosis_stage",
    "nodular_regenerative_hyperplasia", "tumour_regression_grade",
)

#: Days per month used for every month figure (docs/analysis-view.md: months = days / 30.4375).
DAYS_PER_MONTH = 30.4375
#: Default postoperative mortality window, days (Paul Brousse tradition; a protocol parameter).
DEFAULT_POSTOP_WINDOW_DAYS = 60
#: Centre of rows that name none, in a registry without named centres.
DEFAULT_CENTRE = "main"
