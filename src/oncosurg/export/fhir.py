"""Registry records → HL7 FHIR R4 transaction Bundles, one per patient, shaped after mCODE.

Resources (each validated with the ``fhir.resources`` models, see :func:`validate_bundle`):

* ``Patient`` — the pseudonym as an identifier in its centre's naming system
  (:func:`patient_id_system`) and the registry-wide record id ``centre::patient_id``
  (:data:`RECORD_ID_SYSTEM`, as REDCap's record id), centre (``managingOrganization.display``),
  gender, ``deceasedDateTime`` (``deceasedBoolean = false`` when alive at last contact);
* ``Condition`` *PrimaryCancerCondition* — colon (ICD-10 C18.9) or rectum (C20), sidedness as
  ``bodySite``; ``Condition`` *SecondaryCancerCondition* — liver metastases (SNOMED 94381002, ICD-10
  C78.7) with mCODE's ``relatedPrimaryCancerCondition`` extension;
* ``MedicationAdministration`` — cetuximab (cycles and the in-house/referred setting as extensions)
  and its partner drug(s), from ``cetuximab_start``;
* ``Procedure`` — the operation: type, date, resected Couinaud segments (``bodySite``), margin
  (``outcome``), two-stage/PVE (extensions), complications with their Clavien-Dindo grade;
* ``Observation`` *CancerDiseaseStatus* (LOINC 97509-4) — first progression (worsening) and last
  contact (status undetermined);
* ``Observation`` per remaining registry field (age, RAS, baseline tumour, prior lines, best
  response, worst Clavien-Dindo grade, non-tumoral and tumour pathology), coded with the local
  registry code system (:data:`REGISTRY_FIELD_SYSTEM`, code = registry column) plus a standard code
  where one fits.

Standard codes are used where we are confident of them; everything else is a local code system
under ``urn:oncosurg:fhir``.  The resources follow mCODE's structure but do not claim its profiles in
``meta.profile``: the registry holds no names and some values only have local codes.
``fhir.resources`` ships no strict-R4 (4.0.1) models in its pydantic-2 releases; the R4B models are
used, and R4B is identical to R4 for every resource written here.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fhir.resources.R4B.bundle import Bundle

from oncosurg.export import cell_text
from oncosurg.schema import FIELD_BY_NAME, Kind

LOCAL = "urn:oncosurg:fhir"
REGISTRY_FIELD_SYSTEM = f"{LOCAL}:CodeSystem:registry-field"
PATIENT_ID_SYSTEM = f"{LOCAL}:NamingSystem:patient-id"
RECORD_ID_SYSTEM = f"{LOCAL}:NamingSystem:record-id"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"
ATC = "http://www.whocc.no/atc"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
MCODE_RELATED_PRIMARY = "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-related-primary-cancer-condition"

EXT_CYCLES = f"{LOCAL}:StructureDefinition:cetuximab-cycles"
EXT_REFERRAL = f"{LOCAL}:StructureDefinition:referral"
EXT_TWO_STAGE = f"{LOCAL}:StructureDefinition:two-stage"
EXT_PVE = f"{LOCAL}:StructureDefinition:portal-vein-embolization"


def system(name: str) -> str:
    """The local code system of a registry column's codes (e.g. ``…:CodeSystem:surgery_type``)."""
    return f"{LOCAL}:CodeSystem:{name}"


DISEASE_STATUS = {"system": LOINC, "code": "97509-4", "display": "Cancer disease status"}
WORSENED = {"system": SNOMED, "code": "271299001", "display": "Patient's condition worsened"}
UNDETERMINED = {"system": SNOMED, "code": "709137006", "display": "Patient condition undetermined"}

PRIMARY_SITE = {
    "colon": [{"system": ICD10, "code": "C18.9", "display": "Malignant neoplasm of colon, unspecified"},
              {"system": SNOMED, "code": "363406005", "display": "Malignant neoplasm of colon"}],
    "rectum": [{"system": ICD10, "code": "C20", "display": "Malignant neoplasm of rectum"},
               {"system": SNOMED, "code": "363351006", "display": "Malignant neoplasm of rectum"}],
}
LIVER_METASTASES = [{"system": SNOMED, "code": "94381002", "display": "Secondary malignant neoplasm of liver"},
                    {"system": ICD10, "code": "C78.7", "display": "Secondary malignant neoplasm of liver"}]
LIVER = {"system": SNOMED, "code": "10200004", "display": "Liver structure"}
DRUGS = {
    "cetuximab": {"system": ATC, "code": "L01FE01", "display": "cetuximab"},
    "irinotecan": {"system": ATC, "code": "L01CE02", "display": "irinotecan"},
    "oxaliplatin": {"system": ATC, "code": "L01XA03", "display": "oxaliplatin"},
    "other": {"system": system("cetuximab_partner"), "code": "other", "display": "other chemotherapy"},
}
PARTNER_DRUGS = {"irinotecan": ("irinotecan",), "oxaliplatin": ("oxaliplatin",),
                 "both": ("irinotecan", "oxaliplatin"), "none": (), "other": ("other",)}
GENDER = {"F": "female", "M": "male"}

#: Registry columns carried by their own Observation: column → extra standard coding (or None).
OBSERVED: dict[str, dict[str, str] | None] = {
    "age_at_cetuximab": {"system": LOINC, "code": "30525-0", "display": "Age"},
    "ras_status": {"system": LOINC, "code": "69548-6", "display": "Genetic variant assessment"},
    "liver_mets_count": None,
    "largest_met_mm": {"system": LOINC, "code": "33728-7", "display": "Size.maximum dimension in Tumor"},
    "bilobar": None, "extrahepatic_disease": None, "prior_chemo_lines": None, "best_response": None,
    "clavien_dindo_max": None,
    "steatosis_pct": None, "steatohepatitis": None, "sinusoidal_dilatation_grade": None, "fibrosis_stage": None,
    "nodular_regenerative_hyperplasia": None, "tumour_regression_grade": None,
}
#: Extra codings of enum values (e.g. LOINC answers for RAS), beside the local code.
VALUE_CODINGS: dict[tuple[str, str], dict[str, str]] = {
    ("ras_status", "mutant"): {"system": LOINC, "code": "LA9633-4", "display": "Present"},
    ("ras_status", "wild_type"): {"system": LOINC, "code": "LA9634-2", "display": "Absent"},
}
UCUM_UNITS = {"years": ("a", "years"), "mm": ("mm", "mm"), "%": ("%", "%")}
_NS = uuid.uuid5(uuid.NAMESPACE_URL, LOCAL)


def patient_id_system(centre: str) -> str:
    """The naming system of a centre's pseudonyms: ``…:patient-id:<centre, percent-encoded>`` (the
    bare ``…:patient-id`` without a centre), so one pseudonym in two centres is two identifiers."""
    return f"{PATIENT_ID_SYSTEM}:{quote(centre, safe='')}" if centre else PATIENT_ID_SYSTEM


def centre_of_system(system_uri: str) -> str | None:
    """The centre named by a :func:`patient_id_system` URI (``None`` for the bare or another system)."""
    prefix = PATIENT_ID_SYSTEM + ":"
    return unquote(system_uri[len(prefix):]) if system_uri.startswith(prefix) else None


def resource_id(centre: str, patient_id: str, role: str) -> str:
    """A stable UUID for one resource of one patient (same registry record → same ids)."""
    return str(uuid.uuid5(_NS, f"{centre}\x1f{patient_id}\x1f{role}"))


def _coding_for(name: str, code: str) -> dict[str, Any]:
    return {"system": system(name), "code": code}


def _concept(name: str, code: str) -> dict[str, Any]:
    codings = [_coding_for(name, code)]
    if (name, code) in VALUE_CODINGS:
        codings.append(VALUE_CODINGS[(name, code)])
    return {"coding": codings, "text": code}


def _quantity(name: str, value: float) -> dict[str, Any]:
    unit = FIELD_BY_NAME[name].unit
    code, shown = UCUM_UNITS.get(unit, ("1", unit or "1"))
    number = int(value) if float(value).is_integer() and abs(value) < 1e15 else value  # 71, not 71.0
    return {"value": number, "unit": shown, "system": UCUM, "code": code}


class _Builder:
    """Builds the entries of one patient's bundle."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.r = record
        self.centre = str(record.get("centre") or "")
        self.pid = str(record["patient_id"])
        self.entries: list[dict[str, Any]] = []

    def ref(self, role: str) -> dict[str, str]:
        return {"reference": f"urn:uuid:{resource_id(self.centre, self.pid, role)}"}

    def add(self, role: str, resource: dict[str, Any]) -> None:
        rid = resource_id(self.centre, self.pid, role)
        resource = {"resourceType": resource.pop("resourceType"), "id": rid, **resource}
        self.entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource,
                             "request": {"method": "PUT", "url": f"{resource['resourceType']}/{rid}"}})

    def date(self, name: str) -> str | None:
        value = self.r.get(name)
        return value.isoformat() if isinstance(value, dt.date) else None

    def build(self) -> dict[str, Any]:
        self.patient()
        self.conditions()
        self.medications()
        self.procedure()
        self.observations()
        self.disease_status()
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}

    def patient(self) -> None:
        pseudonym: dict[str, Any] = {"system": patient_id_system(self.centre), "value": self.pid}
        record_id = f"{self.centre}::{self.pid}" if self.centre else self.pid
        patient: dict[str, Any] = {"resourceType": "Patient",
                                   "identifier": [pseudonym, {"system": RECORD_ID_SYSTEM, "value": record_id}]}
        if self.centre:
            pseudonym["assigner"] = {"display": self.centre}
            patient["managingOrganization"] = {"display": self.centre}
        if self.r.get("sex") in GENDER:
            patient["gender"] = GENDER[self.r["sex"]]
        death = self.date("death_date")
        patient.update({"deceasedDateTime": death} if death else {"deceasedBoolean": False})
        self.add("patient", patient)

    def conditions(self) -> None:
        site, side = self.r.get("primary_site"), self.r.get("primary_side")
        code: dict[str, Any] = {"text": f"Malignant neoplasm of {site}" if site else "Colorectal cancer"}
        if site:
            code["coding"] = PRIMARY_SITE[site]
        primary: dict[str, Any] = {"resourceType": "Condition", "subject": self.ref("patient"), "code": code}
        if side:
            primary["bodySite"] = [{"coding": [_coding_for("primary_side", side)], "text": f"{side}-sided"}]
        self.add("primary", primary)
        self.add("liver-metastases", {
            "resourceType": "Condition", "subject": self.ref("patient"),
            "extension": [{"url": MCODE_RELATED_PRIMARY, "valueReference": self.ref("primary")}],
            "code": {"coding": LIVER_METASTASES, "text": "Colorectal liver metastases"},
            "bodySite": [{"coding": [LIVER]}]})

    def medications(self) -> None:
        start = self.date("cetuximab_start")
        common = {"status": "completed", "subject": self.ref("patient"), "effectivePeriod": {"start": start},
                  "reasonReference": [self.ref("liver-metastases")]}
        extensions: list[dict[str, Any]] = [{"url": EXT_REFERRAL, "valueCode": self.r["referral"]}]
        if self.r.get("cetuximab_cycles") is not None:
            extensions.append({"url": EXT_CYCLES, "valueInteger": int(self.r["cetuximab_cycles"])})
        self.add("cetuximab", {"resourceType": "MedicationAdministration", "extension": extensions,
                               "medicationCodeableConcept": {"coding": [DRUGS["cetuximab"]], "text": "cetuximab"},
                               **common})
        for drug in PARTNER_DRUGS[self.r["cetuximab_partner"]]:
            self.add(f"partner-{drug}", {
                "resourceType": "MedicationAdministration", "partOf": [self.ref("cetuximab")],
                "medicationCodeableConcept": {"coding": [DRUGS[drug]], "text": DRUGS[drug]["display"]}, **common})

    def procedure(self) -> None:
        date = self.date("surgery_date")
        if date is None:
            return
        kind = self.r.get("surgery_type")
        procedure: dict[str, Any] = {"resourceType": "Procedure", "status": "completed", "subject": self.ref("patient"),
                                     "performedDateTime": date, "reasonReference": [self.ref("liver-metastases")]}
        procedure["code"] = ({"coding": [_coding_for("surgery_type", kind)], "text": kind.replace("_", " ")}
                             if kind else {"text": "liver surgery"})
        extensions = [{"url": url, "valueBoolean": bool(self.r[name])}
                      for name, url in (("two_stage", EXT_TWO_STAGE), ("portal_vein_embolization", EXT_PVE))
                      if self.r.get(name) is not None]
        if extensions:
            procedure["extension"] = extensions
        segments = cell_text(self.r.get("resected_segments"))
        if segments:
            procedure["bodySite"] = [{"coding": [_coding_for("resected_segments", s)], "text": f"Couinaud segment {s}"}
                                     for s in segments.split(";")]
        if self.r.get("margin"):
            procedure["outcome"] = {"coding": [_coding_for("margin", self.r["margin"])],
                                    "text": f"resection margin {self.r['margin']}"}
        grade = self.r.get("clavien_dindo_max")
        if grade not in (None, "none"):
            procedure["complication"] = [{"coding": [_coding_for("clavien_dindo_max", grade)],
                                          "text": f"postoperative complication, Clavien-Dindo grade {grade}"}]
        self.add("surgery", procedure)

    def observations(self) -> None:
        for name, standard in OBSERVED.items():
            value = self.r.get(name)
            if value is None:
                continue
            f = FIELD_BY_NAME[name]
            codings = [{"system": REGISTRY_FIELD_SYSTEM, "code": name, "display": name}]
            if standard:
                codings.insert(0, standard)
            obs: dict[str, Any] = {"resourceType": "Observation", "status": "final",
                                   "code": {"coding": codings, "text": name.replace("_", " ")},
                                   "subject": self.ref("patient")}
            if f.stage.value.startswith("pathology") or name == "clavien_dindo_max":
                obs["partOf"] = [self.ref("surgery")]
                obs["effectiveDateTime"] = self.date("surgery_date")
            elif name == "best_response":
                obs["partOf"] = [self.ref("cetuximab")]
            else:
                obs["effectiveDateTime"] = self.date("cetuximab_start")
            if f.stage.value in ("baseline_tumour", "pathology_tumoral"):
                obs["focus"] = [self.ref("liver-metastases")]
            if name == "ras_status" and value == "not_tested":
                obs["dataAbsentReason"] = {"coding": [{"system": DATA_ABSENT, "code": "not-performed"}],
                                           "text": "not_tested"}
            elif f.kind is Kind.ENUM:
                obs["valueCodeableConcept"] = _concept(name, value)
            elif f.kind is Kind.BOOL:
                obs["valueBoolean"] = bool(value)
            elif f.kind is Kind.INTEGER:
                obs["valueInteger"] = int(value)
            else:
                obs["valueQuantity"] = _quantity(name, value)
            self.add(f"observation-{name}", obs)

    def disease_status(self) -> None:
        for role, name, value in (("progression", "progression_date", WORSENED),
                                  ("last-contact", "last_contact_date", UNDETERMINED)):
            date = self.date(name)
            if date is not None:
                self.add(role, {"resourceType": "Observation", "status": "final",
                                "code": {"coding": [DISEASE_STATUS]}, "subject": self.ref("patient"),
                                "focus": [self.ref("liver-metastases")], "effectiveDateTime": date,
                                "valueCodeableConcept": {"coding": [value]}})


def record_bundle(record: Mapping[str, Any]) -> dict[str, Any]:
    """One registry record as a FHIR transaction Bundle (a JSON-ready dict)."""
    return _Builder(record).build()


def validate_bundle(bundle: Mapping[str, Any]) -> Bundle:
    """Validate a bundle and every resource in it with the ``fhir.resources`` R4B models."""
    return Bundle.model_validate(bundle)


def bundle_filename(index: int, record: Mapping[str, Any]) -> str:
    """``00001-PB-0001.json``: unique in the directory, sorted in export order."""
    return f"{index:05d}-{record['patient_id']}.json"


def write_bundles(records: Iterable[Mapping[str, Any]], folder: str | Path, *, validate: bool = True) -> int:
    """Write one ``*.json`` transaction Bundle per record into ``folder``; returns the count."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, record in enumerate(records, start=1):
        bundle = record_bundle(record)
        if validate:
            validate_bundle(bundle)
        (folder / bundle_filename(count, record)).write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n",
                                                             encoding="utf-8")
    return count
