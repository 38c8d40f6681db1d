"""Derive tests/reference/episodes/ties/ from sim-2: the same registry with the ties that decide how a
time-dependent exposure and delayed entry are counted (run by make_episode_registries.py).

* 6 patients die on the day of their first hepatectomy (exposure = event time: the death counts as
  unexposed, as in R ``tmerge``; a grade V complication is recorded, as the rules require);
* 8 patients are resected on their index date (exposed from time zero);
* 6 patients are referred on the day of their hepatectomy (entry = exposure);
* 3 in-house patients become referred 10 days after their last contact (entry after the end of
  follow-up: left out of delayed-entry analyses).

Lines given before a referral are marked as given elsewhere, episodes after a death are dropped.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd

RESECTION = "hepatectomy"


def write_ties(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(target / name, dtype=str, keep_default_na=False)

    def write(frame: pd.DataFrame, name: str) -> None:
        frame.to_csv(target / name, index=False, lineterminator="\n")

    contacts, procs, lines, patients = (read("contacts.csv"), read("liver_procedures.csv"),
                                        read("therapy_lines.csv"), read("patients.csv"))
    first = procs[procs.procedure_type == RESECTION].drop_duplicates("patient_id")
    ids = list(first.patient_id)
    resected_on = dict(zip(first.patient_id, first.procedure_date, strict=True))
    # death on the day of the hepatectomy
    for pid in ids[:6]:
        day = resected_on[pid]
        contacts = contacts[~((contacts.patient_id == pid) & (contacts.contact_date >= day))]
        centre = first[first.patient_id == pid].centre.iloc[0]
        contacts = pd.concat([contacts, pd.DataFrame([{"centre": centre, "patient_id": pid, "contact_no": "99",
                                                       "contact_date": day, "vital_status": "dead"}])])
    # hepatectomy on the index date (the first conversion line with cetuximab)
    conversion = lines[(lines.intent == "conversion") & lines.agents.str.contains("cetuximab")]
    index = conversion.sort_values("start_date", kind="stable").drop_duplicates("patient_id") \
        .set_index("patient_id").start_date
    for pid in ids[6:14]:
        if pid in index.index:
            procs.loc[(procs.patient_id == pid) & (procs.procedure_type == RESECTION)
                      & (procs.procedure_date == resected_on[pid]), "procedure_date"] = index[pid]
    # referred on the day of the hepatectomy
    for pid in ids[14:20]:
        patients.loc[patients.patient_id == pid, ["referral", "referral_date"]] = ["referred", resected_on[pid]]
    # referred after the last contact
    for pid in patients[patients.referral == "in_house"].patient_id.iloc[:3]:
        last = dt.date.fromisoformat(contacts[contacts.patient_id == pid].contact_date.max())
        patients.loc[patients.patient_id == pid, ["referral", "referral_date"]] = \
            ["referred", (last + dt.timedelta(days=10)).isoformat()]
    referral = patients[patients.referral == "referred"].set_index("patient_id").referral_date
    before = lines.patient_id.isin(referral.index) & (lines.start_date < lines.patient_id.map(referral))
    lines.loc[before, "given_at"] = "elsewhere"
    write(contacts, "contacts.csv")
    write(procs, "liver_procedures.csv")
    write(lines, "therapy_lines.csv")
    write(patients, "patients.csv")
    # nothing after a death; a grade V complication exactly when death follows within 60 days
    death = contacts[contacts.vital_status == "dead"].set_index("patient_id").contact_date
    for name, column in (("therapy_lines.csv", "start_date"), ("disease_events.csv", "event_date"),
                         ("mdt_reviews.csv", "review_date"), ("liver_procedures.csv", "procedure_date"),
                         ("response_assessments.csv", "assessment_date"), ("complications.csv", "complication_date")):
        frame = read(name)
        if column in frame:
            late = frame.patient_id.isin(death.index) & (frame[column] > frame.patient_id.map(death))
            write(frame[~late], name)
    procs, complications = read("liver_procedures.csv"), read("complications.csv")
    when = {(r.patient_id, r.procedure_no): r.procedure_date for r in procs.itertuples()}

    def postoperative_death(pid: str, number: str) -> bool:
        day = when.get((pid, number))
        return day is not None and pid in death.index and \
            0 <= (dt.date.fromisoformat(death[pid]) - dt.date.fromisoformat(day)).days <= 60

    keep = [grade != "V" or postoperative_death(pid, number)
            for pid, number, grade in zip(complications.patient_id, complications.procedure_no, complications.grade,
                                          strict=True)]
    complications = complications[keep]
    added = []
    for r in procs[procs.procedure_type == RESECTION].itertuples():
        graded = (complications.patient_id == r.patient_id) & (complications.procedure_no == r.procedure_no)
        if postoperative_death(r.patient_id, r.procedure_no) and not (graded & (complications.grade == "V")).any():
            added.append({"centre": r.centre, "patient_id": r.patient_id, "procedure_no": r.procedure_no,
                          "complication_no": "9", "grade": "V", "complication_date": death[r.patient_id],
                          "description": ""})
    write(pd.concat([complications, pd.DataFrame(added, columns=complications.columns)]), "complications.csv")
