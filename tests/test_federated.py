"""Federated analysis (issue 15): the reference cohort split into registries, pooled from aggregates only.

* at threshold 1 (full resolution) the federated result equals ``analyze`` on the pooled registry:
  counts and proportions exactly, survival estimates and comparisons to 1e-9, for the three-centre
  split and for splits the code was not written against (uneven, by a patient attribute);
* the Cox model stratified by centre equals R ``coxph(... + strata(centre))`` on the pooled rows to 1e-6
  (tests/reference/federated_cox_reference.R);
* a site failing mid-run stops the run and is named; a small site is refused or suppressed;
* every payload a site sends is inspected for row-level data.
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from federated_helpers import build_split, cox_model_rows, direct_ask, round_robin, split_reference, write_registry
from oncosurg.cli import cli
from oncosurg.federated.central import (
    FederationError,
    federate,
    float_key,
    key_float,
    order_statistics,
    quantile_ranks,
    quantiles_from_ranks,
)
from oncosurg.federated.disclosure import coarsen
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol, resolve_protocol
from oncosurg.store.engine import open_store

REF = Path(__file__).parent / "reference"
SEED = "rescue-cetuximab-2007"
SECOND = "crlm-first-hepatectomy"


def _uneven(number: int, record: Any) -> str:
    """Two centres of very different size, by a hash of the pseudonym."""
    return "big" if zlib.crc32(record.patient_id.encode()) % 5 else "small"


def _by_sex(_number: int, record: Any) -> str:
    """One centre per sex: every covariate-free estimate must still pool exactly."""
    return f"sex-{record.patient.get('sex') or 'unknown'}"


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], str]:
    return build_split(tmp_path_factory.mktemp("split3"), round_robin)


def _federate(urls: dict[str, str], protocol: str = SEED, log: list[Any] | None = None, **kw: Any) -> dict[str, Any]:
    path = resolve_protocol(protocol)
    return federate(direct_ask(list(urls.values()), log), path.read_text(), source=str(path), sites=list(urls), **kw)


def _analyze(url: str, protocol: str = SEED) -> dict[str, Any]:
    engine = open_store(url)
    try:
        return run_protocol(engine, load_protocol(protocol))
    finally:
        engine.dispose()


def assert_same(fed: Any, ref: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 (relative); integers, strings and None exactly."""
    if isinstance(ref, dict):
        for key, value in ref.items():
            assert key in fed, f"{path}.{key} missing from the federated result"
            assert_same(fed[key], value, f"{path}.{key}")
    elif isinstance(ref, list):
        assert isinstance(fed, list) and len(fed) == len(ref), f"{path}: {fed!r} != {ref!r}"
        for i, (a, b) in enumerate(zip(fed, ref, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(ref, float) and not isinstance(fed, bool) and isinstance(fed, (int, float)):
        assert math.isclose(fed, ref, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {fed!r} != {ref!r}"
    else:
        assert fed == ref, f"{path}: {fed!r} != {ref!r}"


def _compare(fed: dict[str, Any], ref: dict[str, Any]) -> None:
    assert_same(fed["cohort"]["flow"], ref["cohort"]["flow"], "cohort.flow")
    assert fed["cohort"]["n"] == ref["cohort"]["n"]
    for key in ("data_cut", "index_first", "index_last", "last_contact"):
        assert fed["cohort"][key] == ref["cohort"][key], key
    assert_same(fed["endpoints"], ref["endpoints"], "endpoints")
    assert_same(fed["comparisons"], ref["comparisons"], "comparisons")
    assert sorted(w["code"] for w in fed["warnings"]) == sorted(w["code"] for w in ref["warnings"])
    for ep in fed["endpoints"].values():  # counts and proportions: exactly the pooled integers
        for key in ("n", "numerator", "denominator"):
            if key in ep:
                assert ep[key] is None or isinstance(ep[key], int)


def test_three_centres_equal_pooled_analyze(split: tuple[dict[str, str], str]) -> None:
    urls, pooled = split
    fed = _federate(urls, threshold=1)
    ref = _analyze(pooled)
    _compare(fed, ref)
    assert fed["endpoints"]["evaluated"]["n"] == 151 and fed["endpoints"]["hepatectomy"]["n"] == 25
    assert [s["status"] for s in fed["sites"]] == ["ok"] * 3
    assert sum(s["cohort_n"] for s in fed["sites"]) == 151
    assert fed["disclosure"]["threshold"] == 1
    assert not [i for i in fed["disclosure"]["items"] if i["action"] in ("coarsened", "refused")]
    assert fed["disclosure"]["rounds"]["partial_order_counts"] <= 8  # bisection: 2^64 in 1024-fold steps


@pytest.mark.slow
@pytest.mark.parametrize("assign", [_uneven, _by_sex], ids=["uneven", "by-sex"])
@pytest.mark.parametrize("protocol", [SEED, SECOND])
def test_other_splits_equal_pooled_analyze(tmp_path: Path, assign: Any, protocol: str) -> None:
    urls, pooled = build_split(tmp_path, assign)
    assert len(urls) >= 2
    fed = _federate(urls, protocol, threshold=1)
    _compare(fed, _analyze(pooled, protocol))
    if protocol == SEED:  # the stratified Cox model against oncosurg's coxph(..., strata=centre) on the pooled rows
        import numpy as np

        from oncosurg.stats import coxph

        rows = cox_model_rows(urls)
        (cox,) = fed["cox_stratified"]
        X = {}
        for term in cox["terms"]:
            name, _, level = term["name"].partition("=")
            X[term["name"]] = np.asarray([float(r[name] == level) if level else float(r[name]) for r in rows])
        fit = coxph([r["time"] for r in rows], [r["status"] for r in rows], X, entry=[r["entry"] for r in rows],
                    strata=[r["centre"] for r in rows])
        assert [t["name"] for t in cox["terms"]] == [c.name for c in fit.coefficients]
        for term, co in zip(cox["terms"], fit.coefficients, strict=True):
            assert math.isclose(term["coef"], co.coef, rel_tol=1e-6, abs_tol=1e-9)
            assert math.isclose(term["se"], co.se, rel_tol=1e-6)
        if assign is _by_sex:
            assert any("sex does not vary within any centre" in w for w in cox["warnings"])


def test_cox_stratified_by_centre_equals_r(split: tuple[dict[str, str], str]) -> None:
    urls, _ = split
    expected = json.loads((REF / "federated_cox_expected.json").read_text())
    # the rows R fitted are this split's rows
    with open(REF / "datasets" / "federated_cox_rows.csv", newline="") as fh:
        committed = list(csv.DictReader(fh))
    rows = cox_model_rows(urls)
    assert len(rows) == len(committed) == expected["n"]
    for got, want in zip(rows, committed, strict=True):
        assert {k: str(v) if not isinstance(v, float) else repr(v) for k, v in got.items()} == want
    fed = _federate(urls, threshold=1)
    (cox,) = fed["cox_stratified"]
    assert cox["converged"] and cox["n"] == expected["n"] and cox["events"] == expected["events"]
    assert cox["sites"] == ["A", "B", "C"]
    for got, want in zip(cox["terms"], expected["terms"], strict=True):
        assert got["name"] == want["name"]
        for key in ("coef", "se", "p"):
            assert math.isclose(got[key], want[key], rel_tol=1e-6, abs_tol=1e-9), (got["name"], key)
    for got, want in zip(cox["loglik"], expected["loglik"], strict=True):
        assert math.isclose(got, want, rel_tol=1e-9)


def test_site_failing_mid_run_is_named_and_nothing_is_pooled(split: tuple[dict[str, str], str]) -> None:
    urls, _ = split
    ask = direct_ask(list(urls.values()))
    calls = {"partial_cox": 0}

    def failing(method: str, kwargs: dict[str, Any], sites: list[int]) -> list[Any]:
        replies = ask(method, kwargs, sites)
        if method == "partial_cox":
            calls["partial_cox"] += 1
            if calls["partial_cox"] == 3:  # site B's registry goes away during Newton-Raphson
                replies[1] = {"error": "OperationalError: server closed the connection unexpectedly"}
        return replies

    path = resolve_protocol(SEED)
    with pytest.raises(FederationError) as err:
        federate(failing, path.read_text(), source=str(path), sites=list(urls), threshold=1)
    message = str(err.value)
    assert "site B failed: OperationalError" in message and "partial_cox" in message
    assert "silently" in message
    assert err.value.sites == {"A": "ok", "B": "failed: OperationalError: server closed the connection unexpectedly",
                               "C": "ok"}


def test_cli_failing_site_exits_4_and_names_it(split: tuple[dict[str, str], str], tmp_path: Path) -> None:
    urls, _ = split
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    args = ["federate", "--site", f"A={urls['A']}", "--site", f"B=sqlite:///{broken}", "--threshold", "1", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 4, res.output
    out = json.loads(res.stdout)
    assert out["sites"]["A"] == "ok" and out["sites"]["B"].startswith("failed: DatabaseError")
    assert "site B failed" in out["error"]
    missing = CliRunner().invoke(cli, ["federate", "--site", f"A=sqlite:///{tmp_path / 'nowhere.db'}"])
    assert missing.exit_code == 2 and "no registry file" in missing.output
    assert not (tmp_path / "nowhere.db").exists()  # a read-only command creates nothing


def test_cli_runs_through_vantage6_mock_client(split: tuple[dict[str, str], str], tmp_path: Path) -> None:
    urls, pooled = split
    args = ["federate", "--threshold", "1", "--json", "--out", str(tmp_path / "fed.json")]
    for name, url in urls.items():
        args += ["--site", f"{name}={url}"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    fed = json.loads(res.stdout)  # vantage6's own chatter stays off stdout
    assert json.loads((tmp_path / "fed.json").read_text()) == fed
    _compare(fed, _analyze(pooled))
    sites = [a for a in args if "=" in a and not a.startswith("-")]
    text = CliRunner().invoke(cli, ["federate"] + [x for s in sites for x in ("--site", s)])
    assert text.exit_code == 0, text.output
    assert "withheld (disclosure)" in text.output and "Sites:" in text.output


@pytest.fixture(scope="module")
def with_small_site(split: tuple[dict[str, str], str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    urls, _ = split
    folder = tmp_path_factory.mktemp("small")
    few = split_reference(lambda n, _r: "tiny" if n < 2 else "rest")["tiny"]
    return {**urls, "tiny": write_registry(f"sqlite:///{folder / 'tiny.db'}", few)}


def test_small_site_refused(with_small_site: dict[str, str]) -> None:
    with pytest.raises(FederationError) as err:
        _federate(with_small_site, threshold=3)
    assert "site tiny refused" in str(err.value) and "fewer than 3 patients" in str(err.value)
    assert err.value.sites["tiny"].startswith("refused") and err.value.sites["A"] == "ok"


def test_small_site_suppressed_and_named(with_small_site: dict[str, str], split: tuple[dict[str, str], str]) -> None:
    fed = _federate(with_small_site, threshold=3, small_site="suppress")
    tiny = next(s for s in fed["sites"] if s["name"] == "tiny")
    assert tiny["status"].startswith("suppressed") and "cohort_n" not in tiny
    assert any(w["code"] == "site-suppressed" and "tiny" in w["message"] for w in fed["warnings"])
    assert {"site": "tiny", "quantity": "everything", "action": "refused"}.items() <= next(
        i for i in fed["disclosure"]["items"] if i["site"] == "tiny").items()
    assert fed["endpoints"]["evaluated"]["n"] == 151  # the three other sites, not the tiny one's 2 patients


def test_threshold_coarsens_and_withholds_and_says_so(split: tuple[dict[str, str], str]) -> None:
    urls, _ = split
    fed = _federate(urls, threshold=3)
    items = fed["disclosure"]["items"]
    coarsened = [i for i in items if i["action"] == "coarsened" and "width" in i]
    assert coarsened and all(i["width"] > 0 and (i["moved"] is None or i["moved"] >= 3) for i in coarsened)
    withheld = {i["quantity"] for i in items if i["action"] == "withheld"}
    assert "endpoints.cycles_before_surgery.min" in withheld and "endpoints.cycles_before_surgery.max" in withheld
    assert fed["endpoints"]["cycles_before_surgery"]["min"] is None
    assert fed["endpoints"]["cycles_before_surgery"]["median"] == 6.0  # exact: enough patients on each side
    for ep in fed["endpoints"].values():
        if ep.get("withheld"):
            assert any(w["code"] == "withheld" for w in fed["warnings"])
    assert fed["endpoints"]["evaluated"]["n"] == 151  # counts that pass are still exact
    assert fed["cohort"]["data_cut"].endswith(("-30", "-31", "-28", "-29"))  # released to the month's end


def _walk_ints(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):  # group keys (1/0) and widths are not counts; in tables only the last column is
        out = [n for k, v in value.items() if k not in ("key", "width", "rows", "entries") for n in _walk_ints(v)]
        return out + [int(r[-1]) for k in ("rows", "entries") for r in value.get(k) or ()]
    if isinstance(value, list):
        return [n for v in value for n in _walk_ints(v)]
    return []


def test_no_row_level_data_leaves_a_site(split: tuple[dict[str, str], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every payload sent through the vantage6 mock at threshold 3: counts are 0 or >= 3, no identifier,
    no exact date, tables only (time, status, count >= 3); the bisection replies are counts at the central's
    probes, never values."""
    import v6_oncosurg.partial as partial

    urls, _ = split
    payloads: list[tuple[str, dict[str, Any]]] = []
    real = partial.run_partial

    def spy(method: str, uri: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        reply = real(method, uri, kwargs)
        payloads.append((method, reply))
        return reply

    monkeypatch.setattr(partial, "run_partial", spy)
    args = ["federate", "--json"]
    for name, url in urls.items():
        args += ["--site", f"{name}={url}"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    methods = {m for m, _ in payloads}
    assert methods == {"partial_summary", "partial_order_counts", "partial_cox"}
    ids = {r.patient_id for recs in split_reference(round_robin).values() for r in recs}
    for method, reply in payloads:
        text = json.dumps(reply)
        assert not any(pid in text for pid in ids), f"{method}: a patient identifier left the site"
        if method == "partial_summary":
            for key in ("flow", "endpoints", "comparisons", "cox"):
                assert all(n == 0 or n >= 3 for n in _walk_ints(reply[key])), f"{key}: a count of 1 or 2 left"
            for ep in reply["endpoints"].values():
                table = ep.get("table")
                if table:
                    assert all(len(r) == 3 and r[2] >= 3 for r in table["rows"])
            for day in (reply["dates"][k] for k in ("last_contact", "index_first", "index_last")):
                assert day is None or day.endswith("-01") or day[-2:] in ("28", "29", "30", "31")
        elif method == "partial_order_counts":
            assert all(isinstance(v, list) and all(isinstance(n, int) for n in v) for v in reply.values())
        else:
            assert set(reply) == {"loglik", "score", "information"}


# --------------------------------------------------------------------------------------------- units
def test_order_statistics_exact_on_awkward_values() -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    sites = [np.sort(rng.normal(size=n) * 10.0 ** rng.integers(-3, 4, size=n)) for n in (5, 40, 17)]
    sites.append(np.sort(np.array([-0.0, 0.0, 1e-300, -1e300, 5.0, 5.0, 5.0])))
    pooled = np.sort(np.concatenate(sites))

    def count(probes: dict[str, list[float]]) -> dict[str, list[int]]:
        return {"x": [int(sum(np.searchsorted(s, p, side="right") for s in sites)) for p in probes["x"]]}

    n = pooled.size
    ranks = quantile_ranks(n)
    targets = sorted({k for r in ranks.values() for k in r})
    found = order_statistics(count, {"x": targets})
    for k in targets:
        assert found[("x", k)] == pooled[k - 1]
    q = quantiles_from_ranks(n, {k: found[("x", k)] for k in targets})
    assert [q["q1"], q["median"], q["q3"]] == list(np.quantile(pooled, [0.25, 0.5, 0.75]))
    for x in (0.0, -0.0, 1.5, -2.5e-310, 1e308):
        assert key_float(float_key(x)) == x


def test_coarsen_keeps_intervals_valid_and_cells_above_threshold() -> None:
    rows = [[1.0, 1, 1], [1.2, 0, 2], [2.5, 1, 3], [7.9, 0, 1], [30.0, 1, 4]]
    entries = [[0.0, 8], [0.4, 2], [6.0, 1]]
    assert coarsen(rows, 1, entries=entries).width is None  # full resolution
    out = coarsen(rows, 3, entries=entries)
    assert out is not None and out.width is not None
    assert all(n >= 3 for *_x, n in out.rows) and all(n >= 3 for _t, n in out.entries)
    assert sum(n for *_x, n in out.rows) == 11 and sum(n for _t, n in out.entries) == 11
    assert out.moved == 11 + 3  # every exit moves to the end of its year; entries at 0 stay
    assert coarsen([[1.0, 1, 1]], 3) is None  # one event can never be released


def test_report_renders_a_federated_result(split: tuple[dict[str, str], str], tmp_path: Path) -> None:
    urls, _ = split
    args = ["federate", "--out", str(tmp_path / "fed.json")]
    for name, url in urls.items():
        args += ["--site", f"{name}={url}"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "fed.json"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    fed = json.loads((tmp_path / "fed.json").read_text())
    assert "Disclosure" in html and "Cox model stratified by centre" in html and "withheld (disclosure)" in html
    for item in fed["disclosure"]["items"]:
        assert item["quantity"] in html
    assert ">151<" in html  # the pooled cohort
    plain = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "rep" / "results.json"), "--out",
                                     str(tmp_path / "again")])
    assert plain.exit_code == 0
    (tmp_path / "not-federated.json").write_text(json.dumps(_analyze(urls["A"])))
    refused = CliRunner().invoke(cli, ["report", "--results", str(tmp_path / "not-federated.json")])
    assert refused.exit_code == 2 and "not a federated result" in refused.output


def test_site_with_a_rare_covariate_level_leaves_the_cox_model(tmp_path: Path) -> None:
    """One referred patient at site A: which levels A holds is a count of 1, so A's stratum stays home."""
    referred = iter(range(100))

    def assign(_n: int, record: Any) -> str:
        if record.patient.get("referral") == "referred":
            return "A" if next(referred) == 0 else "B"
        return "AB"[_n % 2]

    urls, _ = build_split(tmp_path, assign)
    fed = _federate(urls, threshold=3)
    (cox,) = fed["cox_stratified"]
    assert cox["sites"] == ["B"]
    assert any("site A does not take part" in w for w in cox["warnings"])
    assert any(i["site"] == "A" and i["quantity"] == "cox[0] (this site's stratum)" and "referral" in i["reason"]
               for i in fed["disclosure"]["items"])
    # and the site itself refuses a Newton-Raphson round it is asked for anyway
    from oncosurg.federated.site import run_partial

    path = resolve_protocol(SEED)
    reply = run_partial("partial_cox", urls["A"], {"protocol_toml": path.read_text(), "session": "z", "model": 0,
                                                   "levels": {"referral": ["in_house", "referred"]},
                                                   "beta": [0.0], "threshold": 3})
    assert "error" in reply and "referral" in reply["error"]
