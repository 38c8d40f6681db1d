"""The protocol language on hand-built multi-episode patients: index events, look-back eligibility,
the data cut, outcome derivation (origins, events, competing events, censoring), timing refusals and
error messages.  Every expected value is worked out by hand in the comments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import Table
from oncosurg.protocol.engine import compile_protocol, run_protocol
from oncosurg.protocol.model import ProtocolError, protocol_from_dict
from oncosurg.store.repository import import_patients

D = dt.date.fromisoformat
MONTH = 30.4375


def patient(pid: str, *, referral: str = "in_house", referral_date: str | None = None, lines=(), reviews=(),
            procedures=(), complications=(), events=(), contacts=()) -> PatientRecord:
    record = PatientRecord("Lang (synthetic)", {"patient_id": pid, "referral": referral,
                                                "referral_date": D(referral_date) if referral_date else None})

    def rows(items: Any, key: str, **fixed: Any) -> list[dict[str, Any]]:
        out = []
        for i, item in enumerate(items, start=1):
            row = {key: i, **fixed, **item}
            out.append({k: D(v) if k.endswith("_date") and isinstance(v, str) else v for k, v in row.items()})
        return out

    record.episodes[Table.THERAPY_LINE] = rows(lines, "line_number")
    record.episodes[Table.MDT_REVIEW] = rows(reviews, "review_no")
    record.episodes[Table.LIVER_PROCEDURE] = rows(procedures, "procedure_no", complications_assessed=True)
    record.episodes[Table.COMPLICATION] = [{"complication_no": 1, **{k: D(v) if k.endswith("_date") else v
                                                                     for k, v in c.items()}} for c in complications]
    record.episodes[Table.DISEASE_EVENT] = rows(events, "event_no")
    record.episodes[Table.CONTACT] = rows(contacts, "contact_no")
    return record


FOLFOX = {"agents": "oxaliplatin;fluoropyrimidine", "intent": "palliative", "stop_reason": "progression"}
CETUXIMAB = {"agents": "cetuximab;irinotecan", "intent": "conversion"}
PANITUMUMAB = {"agents": "panitumumab;fluoropyrimidine", "intent": "conversion"}
HEP = {"procedure_type": "hepatectomy", "resected_segments": "5;6", "margin": "R0"}

PATIENTS = [
    # A: a failed line, then cetuximab (index 2010-03-01); unresectable at the review before; resected
    # 2010-07-01; recurrence 2011-01-01; repeat hepatectomy 2011-03-01; alive at 2012-06-01
    patient("A", lines=[{"start_date": "2009-09-01", "stop_date": "2010-02-01", **FOLFOX},
                        {"start_date": "2010-03-01", **CETUXIMAB}],
            reviews=[{"review_date": "2010-02-20", "decision": "unresectable_continue"},
                     {"review_date": "2010-06-15", "decision": "resectable"}],
            procedures=[{"procedure_date": "2010-07-01", **HEP}, {"procedure_date": "2011-03-01", **HEP}],
            events=[{"event_date": "2011-01-01", "event_kind": "recurrence"}],
            contacts=[{"contact_date": "2012-06-01", "vital_status": "alive"}]),
    # B: cetuximab as the first line: no failed line before, so no index
    patient("B", lines=[{"start_date": "2010-05-01", **CETUXIMAB}],
            contacts=[{"contact_date": "2011-01-01", "vital_status": "dead"}]),
    # C: panitumumab after a failed line (index 2010-06-01), resectable at the last review before; dies
    # 2010-12-01 without recurrence
    patient("C", lines=[{"start_date": "2009-12-01", "stop_date": "2010-05-01", **FOLFOX},
                        {"start_date": "2010-06-01", **PANITUMUMAB}],
            reviews=[{"review_date": "2010-05-20", "decision": "resectable"}],
            contacts=[{"contact_date": "2010-12-01", "vital_status": "dead"}]),
    # D: a hepatectomy before the index (2010-04-01): excluded by 'no hepatectomy before the index'
    patient("D", lines=[{"start_date": "2009-06-01", "stop_date": "2009-12-01", **FOLFOX},
                        {"start_date": "2010-04-01", **CETUXIMAB}],
            reviews=[{"review_date": "2010-03-15", "decision": "unresectable_stop"}],
            procedures=[{"procedure_date": "2009-01-10", **HEP}],
            contacts=[{"contact_date": "2011-04-01", "vital_status": "alive"}]),
    # E: referred on 2010-05-01 after cetuximab elsewhere (index 2010-02-01); progression 2010-08-01 and
    # death 2013-02-01 (after the data cut of 2012-12-31: censored at the cut)
    patient("E", referral="referred", referral_date="2010-05-01",
            lines=[{"start_date": "2009-08-01", "stop_date": "2010-01-01", "given_at": "elsewhere", **FOLFOX},
                   {"start_date": "2010-02-01", "given_at": "elsewhere", **CETUXIMAB}],
            reviews=[{"review_date": "2010-05-02", "decision": "unresectable_continue"}],
            events=[{"event_date": "2010-08-01", "event_kind": "progression"}],
            contacts=[{"contact_date": "2012-01-01", "vital_status": "alive"},
                      {"contact_date": "2013-02-01", "vital_status": "dead"}]),
    # F: index after the data cut (2013-01-15): excluded, as if not yet in the registry
    patient("F", lines=[{"start_date": "2012-01-01", "stop_date": "2012-12-01", **FOLFOX},
                        {"start_date": "2013-01-15", **CETUXIMAB}],
            contacts=[{"contact_date": "2013-06-01", "vital_status": "alive"}]),
]

BASE: dict[str, Any] = {
    "protocol": {"format": 2, "id": "lang", "title": "Language"},
    "index": {"label": "Start of an anti-EGFR antibody after a failed line",
              "episode": "therapy_line where has(agents, 'cetuximab', 'panitumumab') "
                         "and exists(therapy_line where stop_reason = 'progression' and start_date < index_date)"},
    "cohort": {"data_cut": dt.date(2012, 12, 31)},
    "eligibility": [
        {"label": "No hepatectomy before the index",
         "where": "not exists(liver_procedure where procedure_type = 'hepatectomy' and procedure_date < index_date)"},
    ],
    "derived": {"last_decision": "last(mdt_review.decision where review_date <= index_date)",
                "lines_before": "count(therapy_line where start_date < index_date)"},
    "populations": {"resected": "exists(liver_procedure where procedure_date >= index_date)",
                    "unresectable_at_index": "last_decision in ('unresectable_continue', 'unresectable_stop')"},
    "outcomes": {
        "os": {"label": "Overall survival", "events": ["death"]},
        "pfs": {"label": "Progression-free survival", "events": ["disease_event", "death"]},
        "recurrence": {"label": "Recurrence", "events": ["disease_event"], "competing": ["death"]},
        "repeat": {"label": "Repeat hepatectomy",
                   "origin": "liver_procedure where procedure_type = 'hepatectomy'",
                   "events": ["liver_procedure where procedure_type = 'hepatectomy'"], "competing": ["death"]},
    },
    "endpoints": [{"id": "n", "kind": "count", "label": "n", "definition": "cohort"}],
}


@pytest.fixture
def loaded(store: sa.Engine) -> sa.Engine:
    result = import_patients(store, PATIENTS, source="lang", sha256="0" * 64, rows=len(PATIENTS))
    assert not result.issues, [i.format() for i in result.issues]
    return store


def rows(engine: sa.Engine, data: dict[str, Any], *columns: str) -> dict[str, tuple[Any, ...]]:
    cp = compile_protocol(protocol_from_dict(data))
    c = cp.view.subquery.c
    with engine.connect() as conn:
        found = conn.execute(sa.select(c.patient_id, *[c[x] for x in columns]).where(cp.cohort)).all()
    return {r[0]: tuple(r[1:]) for r in found}


def test_index_eligibility_data_cut_and_flow(loaded: sa.Engine) -> None:
    results = run_protocol(loaded, protocol_from_dict(BASE))
    # 6 registered; B (no failed line before) and F (index after the cut) have no index; D resected before
    assert [s["n"] for s in results["cohort"]["flow"]] == [6, 4, 3]
    assert results["cohort"]["data_cut"] == "2012-12-31" and results["cohort"]["data_cut_declared"]
    got = rows(loaded, BASE, "index_date", "index_agents", "index_line_number", "last_decision", "lines_before")
    assert got == {"A": (D("2010-03-01"), "cetuximab;irinotecan", 2, "unresectable_continue", 1),
                   "C": (D("2010-06-01"), "panitumumab;fluoropyrimidine", 2, "resectable", 1),
                   "E": (D("2010-02-01"), "cetuximab;irinotecan", 2, None, 1)}


def test_outcomes_are_derived_from_their_declarations(loaded: sa.Engine) -> None:
    got = rows(loaded, BASE, "os_days", "os_event", "pfs_days", "pfs_event", "recurrence_cause",
               "recurrence_days", "repeat_origin", "repeat_days", "repeat_cause")
    # A: alive 2012-06-01 → 823 days; recurrence 2011-01-01 → 306 days; repeat hepatectomy 243 days after
    #    the first (2010-07-01 → 2011-03-01), never the origin itself
    assert got["A"] == (823, False, 306, True, 1, 306, D("2010-07-01"), 243, 1)
    # C: death 2010-12-01 = 183 days; no recurrence: death competes; never resected: no origin
    assert got["C"] == (183, True, 183, True, 2, 183, None, None, None)
    # E: death after the cut → censored at the cut (2012-12-31: 1064 days); progression at 181 days
    assert got["E"] == (1064, False, 181, True, 1, 181, None, None, None)


def test_a_cut_before_an_event_hides_it(loaded: sa.Engine) -> None:
    data = {**BASE, "cohort": {"data_cut": dt.date(2010, 12, 31)}}
    got = rows(loaded, data, "os_days", "os_event", "pfs_event", "repeat_days", "repeat_cause")
    # A: seen alive after the cut → followed to the cut (305 days), the recurrence and repeat hepatectomy
    # of 2011 do not exist yet
    assert got["A"] == (305, False, False, 183, 0)


def test_eligibility_that_reads_the_future_is_flagged(loaded: sa.Engine) -> None:
    data = {**BASE, "eligibility": [{"label": "resected later", "where": "resected"}]}
    results = run_protocol(loaded, protocol_from_dict(data))
    assert any(w["code"] == "eligibility-reads-the-future" and "liver_procedure after the index" in w["message"]
               for w in results["warnings"])
    bounded = {**BASE, "eligibility": [{"label": "unresectable", "where": "unresectable_at_index"}]}
    results = run_protocol(loaded, protocol_from_dict(bounded))
    assert not any(w["code"] == "eligibility-reads-the-future" for w in results["warnings"])
    assert results["cohort"]["n"] == 2  # A and D; E has no review on or before its index


def test_cumulative_incidence_with_death_competing(loaded: sa.Engine) -> None:
    data = {**BASE, "endpoints": [{"id": "rec", "kind": "cumulative_incidence", "label": "r", "definition": "d",
                                   "outcome": "recurrence", "at": [6, 10, 12]}]}
    ep = run_protocol(loaded, protocol_from_dict(data))["endpoints"]["rec"]
    # times: A 306 d (event), C 183 d (death), E 181 d (event); at 6 months (182.6 d) E's progression only:
    # Aalen-Johansen 1/3, no death yet; at 10 months (304.4 d) C's death competes: 1/3 and 1/3; 12 months
    # (365 d) is after the last follow-up (306 d): not estimated (R summary without extend)
    assert (ep["n"], ep["events"], ep["competing"]) == (3, 2, 1)
    six, ten, twelve = ep["at"]
    assert (six["cif"], six["competing_cif"]) == (pytest.approx(1 / 3), 0.0)
    assert (ten["cif"], ten["competing_cif"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert twelve["cif"] is None


@pytest.mark.parametrize(("change", "expected"), [
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "kaplan_meier", "groups": "resected"}]},
     "comparisons[0] (x).groups: groups 'resected' is decided after time zero (it reads liver_procedure after the "
     "index)"),
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "kaplan_meier", "groups": "hepatectomy"}]},
     "groups 'hepatectomy' is decided after time zero"),
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "kaplan_meier", "groups": "referral"}]},
     "Add entry = \"referral_date\""),
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "clone_censor_weight"}]},
     "needs Cox models with case weights and a robust (sandwich) variance"),
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "landmark", "exposure": "resected"}]},
     "landmark: required for method 'landmark'"),
    ({"comparisons": [{"id": "x", "label": "x", "outcome": "os", "method": "landmark", "landmark": 3,
                       "exposure": "liver_procedures"}]}, "unknown column 'liver_procedures'"),
    ({"index": {"label": "x", "episode": "therapy_lines where intent = 'conversion'"}},
     "unknown episode table 'therapy_lines'; did you mean 'therapy_line'?"),
    ({"derived": {"x": "first(therapy_line where intent = 'conversion')"}}, "expected '.' and a column"),
    ({"derived": {"x": "exists(therapy_line.agents)"}}, "takes a table, not a column"),
    ({"derived": {"x": "has(sex, 'F')"}}, "has(…) needs a list column"),
    ({"derived": {"x": "has(agents, 'cetuximb')"}}, "unknown column 'agents'"),
    ({"derived": {"x": "exists(therapy_line where has(agents, 'cetuximb'))"}}, "'cetuximb' is not a possible code"),
    ({"derived": {"x": "first(therapy_line.agent where intent = 'conversion')"}},
     "unknown column 'agent' of therapy_line; did you mean 'agents'?"),
    ({"derived": {"x": "max(mdt_review.decision)"}}, "needs a number or date column, not text"),
    ({"derived": {"x": "therapy_line"}}, "'therapy_line' is an episode table: use exists(therapy_line where …)"),
    ({"outcomes": {"os": {"label": "os", "events": ["deaths"]}}}, "outcomes.os.events[0]: unknown column 'deaths'"),
    ({"outcomes": {"os": {"label": "os", "events": ["death"], "origin": "sex"}}}, "expected a date"),
    ({"index": None, "outcomes": {"os": {"label": "os", "events": ["death"]}}}, "'index' needs an [index] table"),
    ({"outcomes": {"os": {"label": "os", "events": ["death"], "competing": ["death"]}}},
     "outcomes.os.competing: 'death' is also an event"),
    ({"index": {**BASE["index"], "entry": "every"}}, "index.entry: 'every' is not supported yet: a patient enters "
     "once, at the first qualifying index"),
])
def test_refusals_name_the_key_and_the_fix(change: dict[str, Any], expected: str) -> None:
    data = {**BASE, **change}
    if data.get("index") is None:
        data.pop("index")
        data["cohort"] = {}
    with pytest.raises(ProtocolError) as info:
        compile_protocol(protocol_from_dict(data))
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_baseline_groups_and_referral_with_entry_are_compared(loaded: sa.Engine) -> None:
    data = {**BASE, "comparisons": [
        {"id": "by_decision", "label": "x", "outcome": "os", "method": "kaplan_meier",
         "groups": "unresectable_at_index"},
        {"id": "by_referral", "label": "x", "outcome": "os", "method": "kaplan_meier", "groups": "referral",
         "entry": "referral_date"}]}
    results = run_protocol(loaded, protocol_from_dict(data))["comparisons"]
    assert [g["n"] for g in results["by_decision"]["groups"]] == [1, 2]  # A | C, E
    referral = results["by_referral"]
    assert {g["key"]: g["n"] for g in referral["groups"]} == {"in_house": 2, "referred": 1}
    assert any("1 patient(s) enter the risk set at their referral date" in n for n in referral["notes"])


def test_referred_patients_without_delayed_entry_are_flagged(loaded: sa.Engine) -> None:
    # E was referred on 2010-05-01, three months after its index (cetuximab elsewhere, 2010-02-01): without
    # delayed entry its first three months are immortal, whether the groups are fixed at time zero or not
    comparisons = [
        {"id": "by_decision", "label": "x", "outcome": "os", "method": "kaplan_meier",
         "groups": "unresectable_at_index"},
        {"id": "td", "label": "x", "outcome": "os", "method": "time_dependent_cox",
         "exposure": "liver_procedure where procedure_type = 'hepatectomy'"}]
    results = run_protocol(loaded, protocol_from_dict({**BASE, "comparisons": comparisons}))
    flagged = {w["comparison"]: w["message"] for w in results["warnings"] if w["code"] == "referral-after-origin"}
    assert set(flagged) == {"by_decision", "td"}
    assert "1 referred patient(s) were referred after the origin" in flagged["td"]
    with_entry = [{**c, "entry": "referral_date"} for c in comparisons]
    results = run_protocol(loaded, protocol_from_dict({**BASE, "comparisons": with_entry}))
    assert not any(w["code"] == "referral-after-origin" for w in results["warnings"])


def test_an_origin_before_the_index_is_flagged_not_silently_lost(loaded: sa.Engine) -> None:
    # the first line of A, C and E started before their index (the anti-EGFR line); the referral of E
    # (2010-05-01) follows its index (2010-02-01)
    data = {**BASE, "derived": {**BASE["derived"], "first_line": "first(therapy_line.start_date)"},
            "outcomes": {"from_first_line": {"label": "x", "origin": "first_line", "events": ["death"]},
                         "from_referral": {"label": "x", "origin": "referral_date", "events": ["death"]}}}
    results = run_protocol(loaded, protocol_from_dict(data))
    flagged = [w["message"] for w in results["warnings"] if w["code"] == "origin-before-index"]
    assert flagged == ["outcomes.from_first_line: 3 patient(s) of the cohort have their origin (first_line) before "
                       "the index; an origin counts only on or after the index (time zero), so they are left out of "
                       "'from_first_line'"]
    got = rows(loaded, data, "from_first_line_origin", "from_referral_origin")
    assert got["E"] == (None, D("2010-05-01"))


def test_an_empty_cohort_names_the_data_cut(loaded: sa.Engine) -> None:
    data = {**BASE, "cohort": {"data_cut": dt.date(2009, 1, 1)}}  # before every index
    warnings = run_protocol(loaded, protocol_from_dict(data))["warnings"]
    assert [w["message"] for w in warnings if w["code"] == "cohort-empty"] == [
        "the cohort is empty: all 6 registered patient(s) were excluded (6 by 'Start of an anti-EGFR antibody after "
        "a failed line': episodes dated after the data cut (2009-01-01) are ignored)"]


def test_a_comparison_of_an_outcome_with_competing_events_says_how_they_are_counted(loaded: sa.Engine) -> None:
    data = {**BASE, "comparisons": [{"id": "rec", "label": "x", "outcome": "recurrence", "method": "kaplan_meier",
                                     "groups": "unresectable_at_index"}]}
    notes = run_protocol(loaded, protocol_from_dict(data))["comparisons"]["rec"]["notes"]
    assert "Competing events (death) are treated as censoring: the curves overstate the probability of the event " \
           "(1 - Kaplan-Meier), and the hazard ratio is cause-specific." in notes
