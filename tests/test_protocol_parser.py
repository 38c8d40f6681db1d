"""Protocol files and filter expressions: what is accepted, and every refusal with its key path."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from oncosurg.protocol.engine import compile_protocol
from oncosurg.protocol.expr import ColumnType, Compiler, ExpressionError, parse
from oncosurg.protocol.model import ProtocolError, load_protocol, protocol_from_dict
from oncosurg.protocol.view import build_view

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "studies" / "rescue-cetuximab-2007.toml"


def seed_dict() -> dict[str, Any]:
    return tomllib.loads(SEED.read_text(encoding="utf-8"))


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ProtocolError) as info:
        compile_protocol(protocol_from_dict(data, source="p.toml"))
    return info.value.problems


def test_seed_protocol_loads_by_id_and_path() -> None:
    by_id = load_protocol("rescue-cetuximab-2007")
    by_path = load_protocol(str(SEED))
    assert by_id.id == by_path.id == "rescue-cetuximab-2007"
    ids = [e.id for e in by_id.endpoints]
    assert ids == ["evaluated", "in_house", "referred", "operated", "hepatectomy", "partner_irinotecan",
                   "partner_oxaliplatin", "partner_both", "cycles_before_surgery", "two_or_more_prior_lines",
                   "resectability_in_house", "resectability_referred", "postoperative_mortality",
                   "complications", "liver_abnormality", "pathologic_complete_response", "alive_at_last_contact",
                   "disease_free_at_last_contact", "os_median", "os_observed_median", "pfs_median",
                   "followup_median"]
    compile_protocol(by_id)


def test_unknown_protocol_id_lists_known_ids() -> None:
    with pytest.raises(ProtocolError, match="rescue-cetuximab-2007"):
        load_protocol("no-such-study")


def test_invalid_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[protocol\nid = 1", encoding="utf-8")
    with pytest.raises(ProtocolError, match="not valid TOML"):
        load_protocol(str(bad))


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["protocol"].pop("id"), "protocol.id: missing"),
    (lambda d: d.__setitem__("extra", {}), "extra: unknown key"),
    (lambda d: d["cohort"].__setitem__("accrual_start", "2004-02-01"), "cohort.accrual_start: must be a TOML date"),
    (lambda d: d["endpoints"][0].__setitem__("kind", "mean"), "endpoints[0] (evaluated).kind: 'mean' is not one of"),
    (lambda d: d["endpoints"][0].__setitem__("populaton", "all"), "populaton: unknown key"),
    (lambda d: d["endpoints"][1].__setitem__("id", "evaluated"), "duplicate endpoint id"),
    (lambda d: d["endpoints"][5].pop("numerator"), "numerator: required for kind 'proportion'"),
    (lambda d: d["endpoints"][5].__setitem__("population", "nobody"), "unknown population 'nobody'"),
    (lambda d: d["endpoints"][5].__setitem__("ci", "exact"), "ci: 'exact' is not one of"),
    (lambda d: d["endpoints"][18].__setitem__("conf_type", "arcsin"), "conf_type: 'arcsin' is not one of"),
    (lambda d: d["endpoints"][5].__setitem__("conf_level", 95), "conf_level: must be a number strictly between"),
    (lambda d: d.__setitem__("endpoints", []), "declare at least one"),
    (lambda d: d["parameters"].__setitem__("postop_window_days", -1), "postop_window_days"),
])
def test_structural_refusals(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = seed_dict()
    mutate(data)
    with pytest.raises(ProtocolError) as info:
        protocol_from_dict(data, source="p.toml")
    assert any(expected in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["endpoints"][5].__setitem__("numerator", "cetuximab_partner = 'irinotecn'"),
     "'irinotecn' is not a possible value"),
    (lambda d: d["endpoints"][5].__setitem__("numerator", "cetuximab_parter = 'irinotecan'"),
     "did you mean 'cetuximab_partner'"),
    (lambda d: d["populations"].__setitem__("operated", "surgery_date > 5"), "cannot compare date with int"),
    (lambda d: d["populations"].__setitem__("operated", "operated and"), "expected"),
    (lambda d: d["populations"].__setitem__("operated", "__import__('os').system('x')"), "unknown function"),
    (lambda d: d["populations"].__setitem__("operated", "operated; DROP TABLE patient"), "unexpected character"),
    (lambda d: d["populations"].__setitem__("operated", "age_at_cetuximab"), "not yes/no"),
    (lambda d: d["populations"].__setitem__("loop", "loop or operated"), "refers to itself"),
    (lambda d: d["derived"].__setitem__("liver_abnormality", "steatosis_pct > $nope"), "unknown parameter"),
    (lambda d: d["endpoints"][18].update(time="referral", event="os_event") or d["endpoints"][18].pop("outcome"),
     "is text, expected int or float"),
    (lambda d: d["endpoints"][18].update(time="os_months", event="os_months") or d["endpoints"][18].pop("outcome"),
     "is float, expected bool"),
    (lambda d: d["endpoints"][18].__setitem__("outcome", "overall"), "unknown outcome 'overall'"),
    (lambda d: d["endpoints"][8].__setitem__("column", "no_such"), "unknown column 'no_such'"),
    (lambda d: d.__setitem__("eligibility", [{"label": "x", "where": "sex = 'X'"}]), "'X' is not a possible"),
    (lambda d: d["index"].__setitem__("episode", "therapy_lines where intent = 'conversion'"),
     "unknown episode table 'therapy_lines'"),
    (lambda d: d["index"].__setitem__("episode", "therapy_line where agents = 'cetuximab;x'"), "'x' is not a possible"),
    (lambda d: d["outcomes"]["os"].__setitem__("events", ["deaths"]), "outcomes.os.events[0]: unknown column"),
    (lambda d: d["outcomes"]["pfs"].__setitem__("origin", "sex"), "expected a date"),
])
def test_expression_refusals(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    data = copy.deepcopy(seed_dict())
    mutate(data)
    found = problems(data)
    assert any(expected in p for p in found), found


def test_several_problems_reported_together() -> None:
    data = seed_dict()
    data["endpoints"][5]["numerator"] = "nope = 1"
    data["endpoints"][6]["numerator"] = "cetuximab_partner = 'x'"
    assert len(problems(data)) == 2


VIEW = build_view(postop_window_days=60)


def compile_text(text: str, params: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return Compiler(VIEW.columns, VIEW.types, params).compile(text)


def test_expression_grammar() -> None:
    c = compile_text("referral = 'in_house' and (prior_chemo_lines >= 2 or not bilobar) "
                     "and cetuximab_partner in ('irinotecan', 'both') and death_date is null "
                     "and cetuximab_start between date '2004-02-01' and date '2006-04-30'")
    assert c.inputs == ("referral", "prior_chemo_lines", "bilobar", "cetuximab_partner", "cetuximab_start")
    assert "death_date" in c.columns and "death_date" not in c.inputs


def test_sql_uses_bound_parameters_not_pasted_text() -> None:
    c = compile_text("centre = 'x\\' OR 1=1 --'")
    sql = str(c.sql.compile(compile_kwargs={}))
    assert "OR 1=1" not in sql and ":" in sql


@pytest.mark.parametrize("text", ["", "   ", "a ==", "(operated", "operated)", "'x'", "1 < 2 <", "not",
                                  "x" * 3000, "(" * 80 + "operated" + ")" * 80])
def test_malformed_expressions(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_text(text)


def test_error_points_at_the_position() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_text("operated and referral = 'inhouse'")
    assert "^" in str(info.value)


def test_parameters_are_typed() -> None:
    compile_text("steatosis_pct > $t", {"t": 30})
    with pytest.raises(ExpressionError, match="cannot compare"):
        compile_text("steatosis_pct > $t", {"t": "thirty"})


def test_parse_returns_ast() -> None:
    assert parse("a = 1").__class__.__name__ == "Compare"


def test_types_are_checked_for_ordering_of_text() -> None:
    compiler = Compiler(VIEW.columns, {**VIEW.types, "referral": ColumnType("text", ("in_house", "referred"))})
    with pytest.raises(ExpressionError, match="not defined for text"):
        compiler.compile("referral < 'referred'")
