"""The FHIR resources of one patient's record: one resource per episode (mCODE STU4 where it has a profile).

:class:`PatientResources` turns a :class:`~oncosurg.pathway.flat.PatientRecord` into resources
with stable ids (:func:`resource_id`: the same centre, patient and episode key give the same id in
every export), each tagged with the episode's key so the reader puts it back in its place:

=========================  =============================================================================
episode                    resources
=========================  =============================================================================
patient                    Patient (CancerPatient); Condition (PrimaryCancerCondition: site, side);
                           Condition (SecondaryCancerCondition: the liver metastases); Observations of
                           the age at the rescue line, RAS, BRAF (TumorMarkerTest with the gene studied)
                           and MSI
therapy line               one MedicationAdministration (CancerRelatedMedicationAdministration) per agent;
                           Observations of the tumour burden at its start (count, bilobar, extrahepatic),
                           of the largest metastasis (TumorSize) and of the best response
MDT review                 Observation (decision, cycles so far, notes)
response assessment        Observation (RECIST category, sums of diameters, new lesions)
liver procedure            Procedure (CancerRelatedSurgicalProcedure)
complication               Condition (Clavien-Dindo grade as severity, dueTo the Procedure)
pathology                  Observation with one component per value, partOf the Procedure
disease event              Observation (CancerDiseaseStatus: worsened; kind and sites)
contact                    Observation (vital status); the death also in Patient.deceasedDateTime
=========================  =============================================================================
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from oncosurg.export.fhir import terminology as tx
from oncosurg.pathway.flat import PatientRecord, rescue_line
from oncosurg.pathway.model import AGENT_LABELS, TABLE_BY_NAME, Table, split_list
from oncosurg.schema import Field, Kind

#: Namespace of the resource ids (unchanged since the first FHIR export, so Patient ids stay stable).
_NS = uuid.uuid5(uuid.NAMESPACE_URL, tx.LEGACY)
#: Registry column → the local code system of its values.
VALUE_SYSTEM = {
    "best_response": "recist-response", "category": "recist-response", "decision": "mdt-decision",
    "ras_status": "mutation-status", "braf_status": "mutation-status", "msi_status": "msi-status",
    "vital_status": "vital-status", "event_kind": "event-kind", "grade": "clavien-dindo", "margin": "margin",
    "procedure_type": "procedure-type", "approach": "approach", "intent": "intent", "given_at": "given-at",
    "stop_reason": "stop-reason", "schedule": "schedule", "referral": "referral", "primary_site": "primary-site",
    "primary_side": "primary-side",
}
#: The agents a line's regimen (schedule, dose, body-surface area) belongs to, in order of preference.
TARGETED = ("cetuximab", "panitumumab", "bevacizumab", "aflibercept")
#: Observation components: table → columns carried as components of the episode's Observation.
COMPONENTS = {
    Table.THERAPY_LINE: ("liver_mets_count", "bilobar", "extrahepatic_disease"),
    Table.MDT_REVIEW: ("cycles_at_review",),
    Table.RESPONSE_ASSESSMENT: ("baseline_sum_mm", "current_sum_mm", "nadir_sum_mm", "new_lesions"),
    Table.PATHOLOGY: tuple(f.name for f in TABLE_BY_NAME[Table.PATHOLOGY].fields if f.name != "procedure_no"),
}
#: Observation codes of the episodes carried by one Observation each (local element code).
EPISODE_OBSERVATION = {Table.MDT_REVIEW: "mdt_review", Table.RESPONSE_ASSESSMENT: "response_assessment",
                       Table.PATHOLOGY: "pathology", Table.CONTACT: "contact"}
#: Id role of the episodes carried by one Observation each.
ROLE = {Table.MDT_REVIEW: "review", Table.RESPONSE_ASSESSMENT: "assessment", Table.CONTACT: "contact"}
#: Patient columns carried by an Observation of their own.
PATIENT_OBSERVED = ("age_at_rescue", "ras_status", "braf_status", "msi_status")


def resource_id(centre: str, patient_id: str, role: str) -> str:
    """A stable UUID for one resource of one patient (same registry record → same ids)."""
    return str(uuid.uuid5(_NS, f"{centre}\x1f{patient_id}\x1f{role}"))


def number(value: Any) -> int | float:
    """A JSON number as written: whole numbers without a decimal point (``71``, never ``71.0``)."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def quantity(fld: Field, value: Any) -> dict[str, Any]:
    """A UCUM Quantity of a numeric registry value in the field's unit."""
    code = tx.UCUM_OF_UNIT.get(fld.unit, "1")
    return {"value": number(value), "unit": code, "system": tx.UCUM, "code": code}


def concept(column: str, code: str, *extra: Mapping[str, str]) -> dict[str, Any]:
    """A CodeableConcept of a coded registry value: the local code first, then standard codes."""
    coding = tx.local(VALUE_SYSTEM[column], code)
    return {"coding": [coding, *extra], "text": coding.get("display", code)}


def element(column: str, *standard: Mapping[str, str]) -> dict[str, Any]:
    """The code of an observation (or component) carrying a registry element."""
    coding = tx.local("element", column)
    return {"coding": [*standard, coding], "text": coding.get("display", column)}


def value_of(fld: Field, value: Any, prefix: str = "value") -> dict[str, Any]:
    """``{"value[x]": …}`` of one registry value, by the field's kind."""
    kind = fld.kind
    if kind is Kind.ENUM:
        return {f"{prefix}CodeableConcept": concept(fld.name, value)}
    if kind is Kind.BOOL:
        return {f"{prefix}Boolean": bool(value)}
    if kind is Kind.INTEGER:
        return {f"{prefix}Integer": int(value)}
    if kind is Kind.NUMBER:
        return {f"{prefix}Quantity": quantity(fld, value)}
    if kind is Kind.DATE:
        return {f"{prefix}DateTime": value.isoformat()}
    return {f"{prefix}String": str(value)}


def ext(name: str, **value: Any) -> dict[str, Any]:
    """One of oncosurg's extensions, e.g. ``ext("cycles", valueInteger=6)``."""
    return {"url": tx.extension(name), **value}


def _iso(value: dt.date | None) -> str | None:
    return None if value is None else value.isoformat()


class PatientResources:
    """The resources of one patient, in a fixed order; ``entries`` are (role, resource)."""

    def __init__(self, record: PatientRecord) -> None:
        self.record = record
        self.centre = record.centre or ""
        self.pid = str(record.patient_id)
        self.entries: list[tuple[str, dict[str, Any]]] = []
        self.fields = {t: TABLE_BY_NAME[t].field_by_name for t in Table}

    # -- helpers -----------------------------------------------------------------------------------

    def rid(self, role: str) -> str:
        return resource_id(self.centre, self.pid, role)

    def ref(self, role: str) -> dict[str, str]:
        return {"reference": f"urn:uuid:{self.rid(role)}"}

    def add(self, role: str, kind: str, body: dict[str, Any], profile: str | None = None) -> None:
        resource: dict[str, Any] = {"resourceType": kind, "id": self.rid(role)}
        if profile:
            resource["meta"] = {"profile": [profile]}
        resource.update({k: v for k, v in body.items() if v not in (None, [], {})})
        self.entries.append((role, resource))

    def observation(self, role: str, code: dict[str, Any], *, extensions: list[dict[str, Any]] | None = None,
                    effective: dt.date | None = None, value: dict[str, Any] | None = None,
                    components: list[dict[str, Any]] | None = None, profile: str | None = None,
                    **more: Any) -> None:
        body: dict[str, Any] = {"extension": extensions, "status": "final", **more, "code": code,
                                "subject": self.ref("patient"), "effectiveDateTime": _iso(effective)}
        body.update(value or {})
        body["component"] = components
        self.add(role, "Observation", body, profile)

    def components(self, table: Table, row: Mapping[str, Any], columns: tuple[str, ...]) -> list[dict[str, Any]]:
        fields = self.fields[table]
        return [{"code": element(c), **value_of(fields[c], row[c])} for c in columns if row.get(c) is not None]

    # -- the record --------------------------------------------------------------------------------

    def build(self) -> list[tuple[str, dict[str, Any]]]:
        record = self.record
        self.patient()
        self.conditions()
        self.patient_observations()
        if any(ln.get("largest_met_mm") is not None for ln in record.rows(Table.THERAPY_LINE)):
            self.tumour()
        for line in record.rows(Table.THERAPY_LINE):
            self.therapy_line(line)
        for review in record.rows(Table.MDT_REVIEW):
            self.keyed_observation(Table.MDT_REVIEW, review, "review_no", "decision")
        for assessment in record.rows(Table.RESPONSE_ASSESSMENT):
            self.keyed_observation(Table.RESPONSE_ASSESSMENT, assessment, "assessment_no", "category")
        procedures = {p["procedure_no"]: p for p in record.rows(Table.LIVER_PROCEDURE)}
        for procedure in procedures.values():
            self.procedure(procedure)
        for complication in record.rows(Table.COMPLICATION):
            self.complication(complication)
        for pathology in record.rows(Table.PATHOLOGY):
            self.pathology(pathology, procedures.get(pathology["procedure_no"]))
        for event in record.rows(Table.DISEASE_EVENT):
            self.disease_event(event)
        for contact in record.rows(Table.CONTACT):
            self.keyed_observation(Table.CONTACT, contact, "contact_no", "vital_status")
        return self.entries

    def patient(self) -> None:
        get = self.record.patient.get
        pseudonym: dict[str, Any] = {"use": "usual", "system": tx.patient_id_system(self.centre), "value": self.pid}
        record_id = f"{self.centre}::{self.pid}" if self.centre else self.pid
        body: dict[str, Any] = {
            "extension": [ext("referral", valueCoding=tx.local("referral", get("referral")))
                          if get("referral") else None,
                          ext("referral-date", valueDate=_iso(get("referral_date"))) if get("referral_date") else None],
            "identifier": [pseudonym, {"system": tx.RECORD_ID_SYSTEM, "value": record_id}],
            # a pseudonymised registry holds no names: US Core's data-absent-reason "masked"
            "name": [{"extension": [{"url": tx.DATA_ABSENT_EXT, "valueCode": "masked"}]}],
            "gender": {"F": "female", "M": "male"}.get(get("sex"), "unknown"),
            "birthDate": None if get("birth_year") is None else f"{int(get('birth_year')):04d}",
        }
        body["extension"] = [e for e in body["extension"] if e]
        if self.centre:
            pseudonym["assigner"] = {"display": self.centre}
        contacts = self.record.rows(Table.CONTACT)
        death = next((c["contact_date"] for c in contacts if c.get("vital_status") == "dead"), None)
        if death is not None:
            body["deceasedDateTime"] = death.isoformat()
        elif contacts:
            body["deceasedBoolean"] = False
        if self.centre:
            body["managingOrganization"] = {"display": self.centre}
        self.add("patient", "Patient", body, tx.PROFILE["patient"])

    def conditions(self) -> None:
        get = self.record.patient.get
        site, side = get("primary_site"), get("primary_side")
        statuses = {"clinicalStatus": {"coding": [tx.ACTIVE]}, "verificationStatus": {"coding": [tx.CONFIRMED]},
                    "category": [{"coding": [tx.PROBLEM_LIST_ITEM]}]}
        code = ({"coding": tx.PRIMARY_SITE[site], "text": f"Malignant neoplasm of {site}"} if site
                else {"text": "Malignant neoplasm of colon or rectum"})
        self.add("primary", "Condition", {
            **statuses, "code": code,
            "bodySite": [concept("primary_side", side)] if side else None,
            "subject": self.ref("patient")}, tx.PROFILE["primary"])
        self.add("liver-metastases", "Condition", {
            "extension": [{"url": tx.CONDITION_RELATED, "valueReference": self.ref("primary")}],
            **statuses, "code": {"coding": tx.LIVER_METASTASES, "text": "Colorectal liver metastases"},
            "bodySite": [{"coding": [tx.LIVER]}], "subject": self.ref("patient")}, tx.PROFILE["secondary"])

    def tumour(self) -> None:
        """The liver metastases as an mCODE Tumor (BodyStructure): what TumorSize observations measure."""
        record_id = f"{self.centre}::{self.pid}" if self.centre else self.pid
        self.add("liver-tumour", "BodyStructure", {
            "extension": [{"url": f"{tx.MCODE}/mcode-related-condition",
                           "valueReference": self.ref("liver-metastases")}],
            "identifier": [{"use": "usual", "type": {"coding": [{"system": "http://hl7.org/fhir/resource-types",
                                                                  "code": "BodyStructure"}]},
                            "system": tx.TUMOUR_ID_SYSTEM, "value": f"{record_id}/liver-metastases"}],
            "location": {"coding": [tx.LIVER]}, "patient": self.ref("patient")}, tx.PROFILE["tumor"])

    def patient_observations(self) -> None:
        get = self.record.patient.get
        fields = self.fields[Table.PATIENT]
        if get("age_at_rescue") is not None:
            line = rescue_line(self.record.rows(Table.THERAPY_LINE))
            self.observation("age-at-rescue", element("age_at_rescue", tx.AGE),
                             effective=None if line is None else line.get("start_date"),
                             value={"valueQuantity": quantity(fields["age_at_rescue"], get("age_at_rescue"))})
        for column, genes in (("ras_status", ("KRAS", "NRAS")), ("braf_status", ("BRAF",))):
            status = get(column)
            if status is None:
                continue
            gene_components = [{"code": {"coding": [tx.GENE_STUDIED]},
                                "valueCodeableConcept": {"coding": [{"system": tx.HGNC, "code": tx.GENES[g],
                                                                     "display": g}], "text": g}} for g in genes]
            self.marker(column, element(column, tx.VARIANT_ASSESSMENT), status, gene_components,
                        {"mutant": tx.PRESENT, "wild_type": tx.ABSENT})
        if get("msi_status") is not None:
            self.marker("msi_status", element("msi_status", tx.MSI_TEST), get("msi_status"), [], {})

    def marker(self, column: str, code: dict[str, Any], status: str, components: list[dict[str, Any]],
               answers: Mapping[str, Mapping[str, str]]) -> None:
        """A tumour-marker test (mCODE TumorMarkerTest), or a test not performed (no profile)."""
        role = column.replace("_status", "")
        if status == "not_tested":  # TumorMarkerTest requires a value: a test not done claims no profile
            self.observation(role, code, status="cancelled", category=[{"coding": [tx.LABORATORY]}],
                             dataAbsentReason={"coding": [{"system": tx.DATA_ABSENT, "code": "not-performed"}],
                                               "text": "not tested"}, components=components)
            return
        value = concept(column, status, *((answers[status],) if status in answers else ()))
        self.observation(role, code, category=[{"coding": [tx.LABORATORY]}], value={"valueCodeableConcept": value},
                         components=components, profile=tx.PROFILE["tumor_marker"])

    # -- therapy lines -----------------------------------------------------------------------------

    def therapy_line(self, line: Mapping[str, Any]) -> None:
        n = line["line_number"]
        agents = split_list(line.get("agents"))
        regimen_agent = next((a for a in TARGETED if a in agents), agents[0] if agents else None)
        common: list[dict[str, Any]] = [ext("therapy-line", valueInteger=n)]
        if line.get("intent"):
            extra = (tx.PALLIATIVE,) if line["intent"] == "palliative" else ()
            common.append({"url": tx.EXT_TREATMENT_INTENT, "valueCodeableConcept": concept("intent", line["intent"],
                                                                                          *extra)})
        if line.get("given_at"):
            common.append(ext("given-at", valueCoding=tx.local("given-at", line["given_at"])))
        if line.get("cycles") is not None:
            common.append(ext("cycles", valueInteger=int(line["cycles"])))
        start, stop = line.get("start_date"), line.get("stop_date")
        period: dict[str, Any] = {"start": _iso(start), "end": _iso(stop)}
        period = {k: v for k, v in period.items() if v}
        if start is None:  # an earlier line known only by its number
            period["extension"] = [{"url": tx.DATA_ABSENT_EXT, "valueCode": "unknown"}]
        reason = line.get("stop_reason")
        fields = self.fields[Table.THERAPY_LINE]
        for agent in agents:  # each resource gets its own copies (callers may edit one resource)
            extensions = copy.deepcopy(common)
            dosage = None
            if agent == regimen_agent:
                if line.get("schedule"):
                    extensions.append(ext("schedule", valueCoding=tx.local("schedule", line["schedule"])))
                if line.get("bsa_m2") is not None:
                    extensions.append(ext("body-surface-area", valueQuantity=quantity(fields["bsa_m2"],
                                                                                      line["bsa_m2"])))
                if line.get("dose_mg_m2") is not None:
                    extensions.append({"url": tx.EXT_NORMALIZATION_BASIS,
                                       "valueCodeableConcept": {"coding": [tx.BSA_BASIS]}})
                    dosage = {"dose": quantity(fields["dose_mg_m2"], line["dose_mg_m2"])}
            self.add(f"line-{n}-{agent}", "MedicationAdministration", {
                # mCODE: a termination reason coded in SNOMED CT (progression, toxicity) means "stopped"
                "extension": extensions, "status": "stopped" if reason in tx.STOP_REASON_SNOMED
                else "completed" if stop is not None else "unknown",
                "statusReason": [concept("stop_reason", reason, *([tx.STOP_REASON_SNOMED[reason]]
                                                                   if reason in tx.STOP_REASON_SNOMED else []))]
                if reason else None,
                "medicationCodeableConcept": {"coding": tx.agent_codings(agent), "text": AGENT_LABELS[agent]},
                "subject": self.ref("patient"), "effectivePeriod": copy.deepcopy(period),
                "reasonReference": [self.ref("liver-metastases")], "dosage": dosage,
            }, tx.PROFILE["administration"])
        tag = [ext("therapy-line", valueInteger=n)]
        components = self.components(Table.THERAPY_LINE, line, COMPONENTS[Table.THERAPY_LINE])
        if components:
            self.observation(f"line-{n}-burden", element("tumour_burden"), extensions=tag, effective=start,
                             components=components, focus=[self.ref("liver-metastases")])
        if line.get("largest_met_mm") is not None:
            self.observation(f"line-{n}-tumour-size", element("largest_met_mm", tx.TUMOR_SIZE), extensions=tag,
                             effective=start, profile=tx.PROFILE["tumor_size"], focus=[self.ref("liver-tumour")],
                             components=[
                                 {"code": {"coding": [tx.LONGEST_DIMENSION]},
                                  "valueQuantity": quantity(fields["largest_met_mm"], line["largest_met_mm"])}])
        if line.get("best_response"):
            self.observation(f"line-{n}-best-response", element("best_response"), extensions=tag,
                             value={"valueCodeableConcept": concept("best_response", line["best_response"])})

    # -- reviews, assessments, contacts ------------------------------------------------------------

    def keyed_observation(self, table: Table, row: Mapping[str, Any], key: str, value_column: str) -> None:
        spec = TABLE_BY_NAME[table]
        n = row[key]
        extensions = [ext("episode-number", valueInteger=n)]
        if row.get("line_number") is not None:
            extensions.append(ext("therapy-line", valueInteger=row["line_number"]))
        value = row.get(value_column)
        notes = row.get("notes")
        self.observation(f"{ROLE[table]}-{n}",
                         element(EPISODE_OBSERVATION[table]), extensions=extensions, effective=row.get(spec.date),
                         value=None if value is None else value_of(spec.field_by_name[value_column], value),
                         components=self.components(table, row, COMPONENTS.get(table, ())),
                         note=[{"text": notes}] if notes else None)

    # -- procedures --------------------------------------------------------------------------------

    def procedure(self, p: Mapping[str, Any]) -> None:
        n = p["procedure_no"]
        extensions = [ext("episode-number", valueInteger=n)]
        if p.get("approach"):
            extensions.append(ext("approach", valueCoding=tx.local("approach", p["approach"])))
        for column, name in (("two_stage", "two-stage"), ("portal_vein_embolization", "portal-vein-embolization"),
                             ("complications_assessed", "complications-assessed")):
            if p.get(column) is not None:
                extensions.append(ext(name, valueBoolean=bool(p[column])))
        kind = p.get("procedure_type")
        segments = [s for s in (p.get("resected_segments") or "").split(";") if s]
        self.add(f"procedure-{n}", "Procedure", {
            "extension": extensions, "status": "completed",
            "code": concept("procedure_type", kind) if kind else {"text": "liver procedure"},
            "subject": self.ref("patient"), "performedDateTime": _iso(p.get("procedure_date")),
            "reasonReference": [self.ref("liver-metastases")],
            "bodySite": [{"coding": [tx.local("couinaud-segment", s)], "text": f"Couinaud segment {s}"}
                         for s in segments],
            "outcome": concept("margin", p["margin"]) if p.get("margin") else None,
        }, tx.PROFILE["procedure"])

    def complication(self, c: Mapping[str, Any]) -> None:
        p, n = c["procedure_no"], c["complication_no"]
        self.add(f"procedure-{p}-complication-{n}", "Condition", {
            "extension": [ext("procedure-number", valueInteger=p), ext("episode-number", valueInteger=n),
                          {"url": tx.CONDITION_DUE_TO, "valueReference": self.ref(f"procedure-{p}")}],
            "verificationStatus": {"coding": [tx.CONFIRMED]}, "category": [{"coding": [tx.ENCOUNTER_DIAGNOSIS]}],
            "severity": concept("grade", c["grade"]) if c.get("grade") else None,
            "code": element("complication"), "subject": self.ref("patient"),
            "onsetDateTime": _iso(c.get("complication_date")),
            "note": [{"text": c["description"]}] if c.get("description") else None,
        })

    def pathology(self, row: Mapping[str, Any], procedure: Mapping[str, Any] | None) -> None:
        p = row["procedure_no"]
        self.observation(f"procedure-{p}-pathology", element("pathology"),
                         extensions=[ext("procedure-number", valueInteger=p)],
                         partOf=[self.ref(f"procedure-{p}")],
                         effective=None if procedure is None else procedure.get("procedure_date"),
                         components=self.components(Table.PATHOLOGY, row, COMPONENTS[Table.PATHOLOGY]))

    def disease_event(self, e: Mapping[str, Any]) -> None:
        n = e["event_no"]
        extensions = [ext("episode-number", valueInteger=n)]
        extensions += [ext("disease-site", valueCoding=tx.local("disease-site", s)) for s in split_list(e.get("sites"))]
        kind = e.get("event_kind")
        self.observation(f"event-{n}", element("disease_event", tx.DISEASE_STATUS), extensions=extensions,
                         effective=e.get("event_date"), profile=tx.PROFILE["disease_status"],
                         focus=[self.ref("liver-metastases")],
                         value={"valueCodeableConcept": {"coding": [tx.WORSENED, tx.local("event-kind", kind)],
                                                         "text": kind}} if kind else None)
