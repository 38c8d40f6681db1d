"""Code systems, canonical URLs and standard codes of oncosurg's FHIR R4 bundles (mCODE STU4).

One place for every URI the writer (:mod:`oncosurg.export.fhir`) emits and the reader
(:mod:`oncosurg.ingest.fhir`) recognises:

* oncosurg's own code systems, extensions and identifier systems live under the canonical base
  :data:`CANONICAL`; each code system is generated here from the episode model's vocabularies
  (:func:`code_system_resources`) and shipped as FHIR ``CodeSystem`` resources with the package
  (``export/fhir/definitions/``, an NPM-style FHIR package);
* standard codes (SNOMED CT, LOINC, ICD-10, ATC, RxNorm, HGNC, UCUM) are given where they are exact;
  every resource also carries the local code, which the reader trusts first;
* the mCODE STU4 (``hl7.fhir.us.mcode`` 4.0.0) profiles each resource claims in ``meta.profile``.

Standard codes were chosen from the code systems' published releases (ATC 2024, RxNorm ingredient
concepts, HGNC gene ids, LOINC 2.7x); a terminology review before production exchange is advised
(``docs/interop.md``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from oncosurg.pathway.model import (
    AGENT_LABELS,
    AGENTS,
    APPROACHES,
    EVENT_KINDS,
    GIVEN_AT,
    GRADES,
    INTENTS,
    MDT_DECISIONS,
    MSI_STATUS,
    MUTATION_STATUS,
    PROCEDURE_LABELS,
    PROCEDURE_TYPES,
    SCHEDULES,
    SITES,
    STOP_REASONS,
    VITAL_STATUS,
)
from oncosurg.schema import MARGINS, RESPONSES

#: Canonical base of oncosurg's FHIR artefacts (code systems, extensions, identifier systems).
CANONICAL = "https://oncosurg.org/fhir"
#: Version of the definitions (CodeSystem.version, package.json).
DEFINITIONS_VERSION = "0.2.0"

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HGNC = "http://www.genenames.org/geneId"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
DATA_ABSENT_EXT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
#: R4 core extension "condition-related" (mCODE STU4's relatedPrimaryCancerCondition is this URL).
CONDITION_RELATED = "http://hl7.org/fhir/StructureDefinition/condition-related"
#: R4 core extension "condition-dueTo" (a complication's cause: its procedure).
CONDITION_DUE_TO = "http://hl7.org/fhir/StructureDefinition/condition-dueTo"

MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
PROFILE = {
    "patient": f"{MCODE}/mcode-cancer-patient",
    "primary": f"{MCODE}/mcode-primary-cancer-condition",
    "secondary": f"{MCODE}/mcode-secondary-cancer-condition",
    "procedure": f"{MCODE}/mcode-cancer-related-surgical-procedure",
    "administration": f"{MCODE}/mcode-cancer-related-medication-administration",
    "tumor_marker": f"{MCODE}/mcode-tumor-marker-test",
    "tumor_size": f"{MCODE}/mcode-tumor-size",
    "tumor": f"{MCODE}/mcode-tumor",
    "disease_status": f"{MCODE}/mcode-cancer-disease-status",
}
EXT_TREATMENT_INTENT = f"{MCODE}/mcode-procedure-intent"
EXT_NORMALIZATION_BASIS = f"{MCODE}/mcode-normalization-basis"

#: Earlier releases wrote local URIs under this URN; the reader names it when it meets it.
LEGACY = "urn:oncosurg:fhir"


def code_system(name: str) -> str:
    """Canonical URL of one of oncosurg's code systems (e.g. ``…/CodeSystem/agent``)."""
    return f"{CANONICAL}/CodeSystem/{name}"


def extension(name: str) -> str:
    """Canonical URL of one of oncosurg's extensions."""
    return f"{CANONICAL}/StructureDefinition/{name}"


PATIENT_ID_SYSTEM = f"{CANONICAL}/sid/patient-id"
RECORD_ID_SYSTEM = f"{CANONICAL}/sid/record-id"
#: Identifiers of the tumours oncosurg describes (``<centre>::<patient_id>/liver-metastases``).
TUMOUR_ID_SYSTEM = f"{CANONICAL}/sid/tumour"


def patient_id_system(centre: str) -> str:
    """The naming system of a centre's pseudonyms: ``…/sid/patient-id/<centre, percent-encoded>``
    (the bare ``…/sid/patient-id`` without a centre), so one pseudonym in two centres is two
    identifiers."""
    return f"{PATIENT_ID_SYSTEM}/{quote(centre, safe='')}" if centre else PATIENT_ID_SYSTEM


def centre_of_system(uri: str) -> str | None:
    """The centre named by a :func:`patient_id_system` URI (``""`` for the bare one, ``None`` otherwise)."""
    if uri == PATIENT_ID_SYSTEM:
        return ""
    prefix = PATIENT_ID_SYSTEM + "/"
    return unquote(uri[len(prefix):]) if uri.startswith(prefix) and "/" not in uri[len(prefix):] else None


# ---------------------------------------------------------------------------------- local code systems

#: Codes of oncosurg's observations and their components (the registry element each one carries).
ELEMENTS: dict[str, str] = {
    "age_at_rescue": "age at the start of the rescue (conversion) line",
    "ras_status": "KRAS/NRAS mutation status", "braf_status": "BRAF V600E mutation status",
    "msi_status": "microsatellite instability / mismatch-repair status",
    "tumour_burden": "liver tumour burden at the start of a therapy line",
    "liver_mets_count": "number of liver metastases", "largest_met_mm": "largest liver metastasis",
    "bilobar": "bilobar liver metastases", "extrahepatic_disease": "extrahepatic disease",
    "best_response": "best RECIST response to a therapy line",
    "mdt_review": "multidisciplinary team review (resectability decision)",
    "cycles_at_review": "cycles given at the time of the review",
    "response_assessment": "RECIST 1.1 response assessment",
    "baseline_sum_mm": "sum of target-lesion diameters at baseline", "current_sum_mm": "current sum of diameters",
    "nadir_sum_mm": "smallest sum of diameters so far", "new_lesions": "new lesions",
    "pathology": "pathology of a liver resection specimen",
    "steatosis_pct": "steatosis of the non-tumoral liver", "steatohepatitis": "steatohepatitis",
    "sinusoidal_dilatation_grade": "sinusoidal dilatation grade (Rubbia-Brandt)",
    "fibrosis_stage": "fibrosis stage", "nodular_regenerative_hyperplasia": "nodular regenerative hyperplasia",
    "tumour_regression_grade": "tumour regression grade (Rubbia-Brandt)",
    "lesion_count": "metastases in the specimen", "largest_lesion_mm": "largest lesion in the specimen",
    "margin_mm": "closest resection margin",
    "complication": "postoperative complication", "contact": "follow-up contact (vital status)",
    "disease_event": "progression or recurrence",
}


def _labelled(codes: tuple[str, ...], labels: dict[str, str] | None = None) -> list[tuple[str, str]]:
    return [(c, (labels or {}).get(c, c.replace("_", " "))) for c in codes]


#: name → (title, description, concepts (code, display)).  Generated from the episode model.
CODE_SYSTEMS: dict[str, tuple[str, str, list[tuple[str, str]]]] = {
    "element": ("oncosurg registry elements", "Codes of oncosurg's observations and observation components "
                "(one per registry element).", list(ELEMENTS.items())),
    "agent": ("Therapy-line agents", "Targeted and cytotoxic agents of a therapy line (fluoropyrimidine: "
              "5-FU, capecitabine and the like; hai: hepatic arterial infusion; other: any other agent).",
              _labelled(AGENTS, AGENT_LABELS)),
    "intent": ("Therapy-line intent", "conversion = rescue therapy given to make unresectable liver "
               "metastases resectable.", _labelled(INTENTS)),
    "given-at": ("Where a therapy line was given", "At the registering centre or elsewhere.", _labelled(GIVEN_AT)),
    "stop-reason": ("Why a therapy line stopped", "Reason a therapy line ended.", _labelled(STOP_REASONS)),
    "schedule": ("Targeted-agent schedule", "weekly (250 mg/m², 400 loading) or every two weeks (500 mg/m²).",
                 _labelled(SCHEDULES)),
    "recist-response": ("RECIST 1.1 response", "Complete response, partial response, stable disease, "
                        "progressive disease, not evaluable.",
                        list(zip(RESPONSES, ("complete response", "partial response", "stable disease",
                                             "progressive disease", "not evaluable"), strict=True))),
    "mdt-decision": ("MDT resectability decision", "Decision of a multidisciplinary team review.",
                     _labelled(MDT_DECISIONS)),
    "procedure-type": ("Liver procedure type", "Liver surgery and interventional procedures of the pathway.",
                       _labelled(PROCEDURE_TYPES, PROCEDURE_LABELS)),
    "approach": ("Surgical approach", "Open, laparoscopic or robotic.", _labelled(APPROACHES)),
    "margin": ("Resection margin", "R0: microscopically free; R1: microscopic tumour at the margin; R2: "
               "macroscopic tumour left.", _labelled(MARGINS)),
    "couinaud-segment": ("Couinaud liver segment", "Liver segments 1-8 (Couinaud).",
                         [(str(s), f"Couinaud segment {s}") for s in range(1, 9)]),
    "clavien-dindo": ("Clavien-Dindo grade", "Grade of a postoperative complication (Dindo et al., Ann Surg "
                      "2004).", [(g, f"Clavien-Dindo grade {g}") for g in GRADES]),
    "event-kind": ("Disease event kind", "Progression of known disease, or recurrence after resection.",
                   _labelled(EVENT_KINDS)),
    "disease-site": ("Site of disease", "Site of a progression or recurrence.", _labelled(SITES)),
    "vital-status": ("Vital status", "Vital status at a follow-up contact.", _labelled(VITAL_STATUS)),
    "mutation-status": ("Mutation status", "Result of a RAS or BRAF mutation test.", _labelled(MUTATION_STATUS)),
    "msi-status": ("Microsatellite status", "mss: microsatellite stable / MMR proficient; msi_high: MSI-high / "
                   "MMR deficient.", _labelled(MSI_STATUS)),
    "referral": ("Referral", "in_house: the pathway began at the centre; referred: sent by another hospital.",
                 _labelled(("in_house", "referred"))),
    "primary-site": ("Primary tumour site", "Colon or rectum.", _labelled(("colon", "rectum"))),
    "primary-side": ("Primary tumour side", "Left- or right-sided colorectal primary.", _labelled(("left", "right"))),
}

#: Extensions oncosurg defines: name → (value type, meaning, resource types it is used on).
EXTENSIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "episode-number": ("integer", "The episode's number within its patient (review_no, procedure_no, complication_no, "
                       "event_no, contact_no, assessment_no).", ("Observation", "Procedure", "Condition")),
    "therapy-line": ("integer", "The clinical line number of the therapy line a resource belongs to.",
                     ("MedicationAdministration", "Observation")),
    "procedure-number": ("integer", "The procedure_no of the liver procedure a resource belongs to.",
                         ("Condition", "Observation")),
    "given-at": ("Coding", "Where the therapy line was given (code system given-at).", ("MedicationAdministration",)),
    "cycles": ("integer", "Cycles given in the therapy line.", ("MedicationAdministration",)),
    "schedule": ("Coding", "Targeted-agent schedule (code system schedule).", ("MedicationAdministration",)),
    "body-surface-area": ("Quantity", "Body-surface area used for the dose, in m2.", ("MedicationAdministration",)),
    "approach": ("Coding", "Surgical approach (code system approach).", ("Procedure",)),
    "two-stage": ("boolean", "Part of a two-stage hepatectomy strategy.", ("Procedure",)),
    "portal-vein-embolization": ("boolean", "Preceded by portal vein embolisation.", ("Procedure",)),
    "complications-assessed": ("boolean", "Complications were assessed (none recorded means none occurred).",
                               ("Procedure",)),
    "referral": ("Coding", "How the patient came to the centre (code system referral).", ("Patient",)),
    "referral-date": ("date", "Date of the referral.", ("Patient",)),
    "disease-site": ("Coding", "A site of a progression or recurrence (code system disease-site); repeats.",
                     ("Observation",)),
}


def local(name: str, code: str, display: str | None = None) -> dict[str, str]:
    """A coding of one of oncosurg's code systems (display from the code system when known)."""
    if display is None:
        display = next((d for c, d in CODE_SYSTEMS[name][2] if c == code), None)
    coding = {"system": code_system(name), "code": code}
    if display:
        coding["display"] = display
    return coding


def code_system_resources() -> list[dict[str, Any]]:
    """oncosurg's code systems as FHIR R4 ``CodeSystem`` resources (what ``definitions/`` ships)."""
    out = []
    for name, (title, description, concepts) in CODE_SYSTEMS.items():
        out.append({
            "resourceType": "CodeSystem", "id": f"oncosurg-{name}", "url": code_system(name),
            "version": DEFINITIONS_VERSION, "name": "Oncosurg" + "".join(p.title() for p in name.split("-")),
            "title": title, "status": "active", "experimental": False, "publisher": "oncosurg",
            "description": description, "caseSensitive": True, "content": "complete", "count": len(concepts),
            "concept": [{"code": c, "display": d} for c, d in concepts],
        })
    return out


# ---------------------------------------------------------------------------------- standard codes

PRIMARY_SITE = {
    "colon": [{"system": SNOMED, "code": "363406005", "display": "Malignant neoplasm of colon"},
              {"system": ICD10, "code": "C18.9", "display": "Malignant neoplasm of colon, unspecified"}],
    "rectum": [{"system": SNOMED, "code": "363351006", "display": "Malignant neoplasm of rectum"},
               {"system": ICD10, "code": "C20", "display": "Malignant neoplasm of rectum"}],
}
LIVER_METASTASES = [{"system": SNOMED, "code": "94381002", "display": "Secondary malignant neoplasm of liver"},
                    {"system": ICD10, "code": "C78.7", "display": "Secondary malignant neoplasm of liver"}]
LIVER = {"system": SNOMED, "code": "10200004", "display": "Liver structure"}

#: ATC (2024) and RxNorm ingredient codes of the agents that are one drug.  fluoropyrimidine is a
#: class (ATC L01BC, no RxNorm ingredient); hai (a route) and other have only the local code.
AGENT_ATC = {"cetuximab": "L01FE01", "panitumumab": "L01FE02", "bevacizumab": "L01FG01", "aflibercept": "L01XX44",
             "oxaliplatin": "L01XA03", "irinotecan": "L01CE02", "fluoropyrimidine": "L01BC"}
AGENT_RXNORM = {"cetuximab": "318341", "panitumumab": "263034", "bevacizumab": "253337", "aflibercept": "1232150",
                "oxaliplatin": "32592", "irinotecan": "51499"}
#: ATC codes the reader maps to an agent besides :data:`AGENT_ATC` (codes before the 2022 revision,
#: the fluoropyrimidines one by one).
ATC_ALIASES = {"L01XC06": "cetuximab", "L01XC08": "panitumumab", "L01XC07": "bevacizumab", "L01XX19": "irinotecan",
               "L01BC02": "fluoropyrimidine", "L01BC03": "fluoropyrimidine", "L01BC06": "fluoropyrimidine",
               "L01BC09": "fluoropyrimidine", "L01BC52": "fluoropyrimidine", "L01BC53": "fluoropyrimidine",
               "L01BC59": "fluoropyrimidine"}
RXNORM_ALIASES = {"4492": "fluoropyrimidine", "194000": "fluoropyrimidine"}  # fluorouracil, capecitabine
#: Supportive and premedication drugs given with chemotherapy: read and ignored (counted), never an agent.
#: ATC classes: A02 acid disorders, A03 antispasmodics (atropine), A04 antiemetics, B05 infusion
#: solutions, H02 corticosteroids (dexamethasone), N02 analgesics, R06 antihistamines, V03AF
#: detoxifying agents for antineoplastic treatment (folinic acid, mesna).
SUPPORTIVE_ATC = ("A02", "A03", "A04", "B05", "H02", "N02", "R06", "V03AF")
#: RxNorm ingredients of the same drugs (RxNorm codes carry no class: an RxNorm code neither here nor
#: an agent's is refused).  dexamethasone, ondansetron, granisetron, palonosetron, aprepitant,
#: diphenhydramine, atropine, leucovorin.
SUPPORTIVE_RXNORM = {"3264": "dexamethasone", "26225": "ondansetron", "26237": "granisetron",
                     "70561": "palonosetron", "358255": "aprepitant", "3498": "diphenhydramine",
                     "1223": "atropine", "6313": "leucovorin"}


def agent_codings(agent: str) -> list[dict[str, str]]:
    """The codings of an agent: the local code, then ATC and RxNorm where one drug is meant."""
    label = AGENT_LABELS[agent]
    codings = [local("agent", agent, label)]
    if agent in AGENT_ATC:
        codings.append({"system": ATC, "code": AGENT_ATC[agent], "display": label})
    if agent in AGENT_RXNORM:
        codings.append({"system": RXNORM, "code": AGENT_RXNORM[agent], "display": label})
    return codings


#: HGNC gene ids of the mutation tests (mCODE/genomics reporting: component "gene studied", LOINC 48018-6).
GENES = {"KRAS": "HGNC:6407", "NRAS": "HGNC:7989", "BRAF": "HGNC:1097"}
GENE_COLUMN = {"HGNC:6407": "ras_status", "HGNC:7989": "ras_status", "HGNC:1097": "braf_status"}
GENE_STUDIED = {"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}
VARIANT_ASSESSMENT = {"system": LOINC, "code": "69548-6", "display": "Genetic variant assessment"}
MSI_TEST = {"system": LOINC, "code": "81695-9",
            "display": "Microsatellite instability [Interpretation] in Cancer specimen Qualitative"}
#: LOINC answers of 69548-6 (variant present / absent).
PRESENT = {"system": LOINC, "code": "LA9633-4", "display": "Present"}
ABSENT = {"system": LOINC, "code": "LA9634-2", "display": "Absent"}
AGE = {"system": LOINC, "code": "30525-0", "display": "Age"}
TUMOR_SIZE = {"system": LOINC, "code": "21889-1", "display": "Size Tumor"}
LONGEST_DIMENSION = {"system": LOINC, "code": "33728-7", "display": "Size.maximum dimension in Tumor"}
DISEASE_STATUS = {"system": LOINC, "code": "97509-4", "display": "Cancer disease status"}
WORSENED = {"system": SNOMED, "code": "271299001", "display": "Patient's condition worsened (finding)"}
PALLIATIVE = {"system": SNOMED, "code": "363676003", "display": "Palliative - procedure intent"}
BSA_BASIS = {"system": SNOMED, "code": "301898006", "display": "Body surface area (observable entity)"}
#: mCODE's treatment-termination reasons beside the local stop reasons.
STOP_REASON_SNOMED = {
    "progression": {"system": SNOMED, "code": "266721009", "display": "No response to treatment (situation)"},
    "toxicity": {"system": SNOMED, "code": "407563006", "display": "Treatment not tolerated (situation)"},
}
LABORATORY = {"system": OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}
PROBLEM_LIST_ITEM = {"system": CONDITION_CATEGORY, "code": "problem-list-item", "display": "Problem List Item"}
ENCOUNTER_DIAGNOSIS = {"system": CONDITION_CATEGORY, "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}
ACTIVE = {"system": CONDITION_CLINICAL, "code": "active", "display": "Active"}
CONFIRMED = {"system": CONDITION_VERIFICATION, "code": "confirmed", "display": "Confirmed"}

#: UCUM code of each registry unit, and the conversions the reader accepts (factor to the registry unit).
UCUM_OF_UNIT = {"years": "a", "mm": "mm", "%": "%", "mg/m²": "mg/m2", "m²": "m2"}
UCUM_CONVERSIONS: dict[str, dict[str, str]] = {
    "mm": {"mm": "1", "cm": "10", "m": "1000"},
    "a": {"a": "1"},
    "%": {"%": "1"},
    "mg/m2": {"mg/m2": "1", "g/m2": "1000"},
    "m2": {"m2": "1"},
}
