"""``oncosurg survival``: Kaplan-Meier, log-rank, Cox and RMST on a CSV file.

Reads the CSV with the standard ``csv`` module (pandas is not a runtime dependency), prints a
readable summary with ``rich`` or, with ``--json``, the JSON shape of issue 3 (R's NA = null).
Bad input gives a one-line error naming the column and the rule, exit status 2.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from typing import TYPE_CHECKING, Any

import click

from oncosurg.cli import cli

if TYPE_CHECKING:
    import numpy as np

MISSING = {"", "na", "nan", "null", "none", "<na>", "."}


class InputProblem(Exception):
    """A user-facing input error (printed on one line, exit status 2)."""


def _read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except OSError as exc:
        raise InputProblem(f"cannot read {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputProblem(f"{path} is not a readable CSV file: {exc}") from None
    if not header:
        raise InputProblem(f"{path} is empty: expected a header line and one row per patient.")
    if not rows:
        raise InputProblem(f"{path} has a header but no data rows: there is nothing to analyse.")
    return header, rows


def _need(header: list[str], col: str, path: str) -> None:
    if col not in header:
        raise InputProblem(f"column '{col}' not found in {path} (columns: {', '.join(header)}).")


def _numeric(rows: list[dict[str, str]], col: str) -> np.ndarray:
    import numpy as np

    out = np.empty(len(rows), dtype=np.float64)
    for i, r in enumerate(rows):
        v = (r.get(col) or "").strip()
        if v.lower() in MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except ValueError:
            raise InputProblem(
                f"column '{col}' must be numeric; line {i + 2} holds {v!r}. Convert it to numbers."
            ) from None
    return out


def _labels(rows: list[dict[str, str]], col: str) -> list[Any]:
    raw = [(r.get(col) or "").strip() for r in rows]
    for i, v in enumerate(raw):
        if v.lower() in MISSING:
            raise InputProblem(
                f"column '{col}' (group) has a missing label at line {i + 2}; label or drop the row."
            )
    try:
        nums = [float(v) for v in raw]
    except ValueError:
        return raw
    return [int(x) if x.is_integer() else x for x in nums]


def _key(label: Any) -> str:
    return str(label)


def _floats(text: str | None, opt: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputProblem(f"{opt} must be a comma-separated list of numbers; got {text!r}.") from None


def _med(q: Any) -> dict[str, Any]:
    return {"median": q.estimate, "lower": q.lower, "upper": q.upper}


def _fin(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def analyse(
    path: str,
    time_col: str,
    event_col: str,
    group_col: str | None = None,
    covariates: list[str] | None = None,
    start_col: str | None = None,
    at: list[float] | None = None,
    rmst_tau: float | None = None,
    conf_level: float = 0.95,
    id_col: str | None = None,
) -> dict[str, Any]:
    """Everything ``oncosurg survival`` reports, as the JSON-ready dict of issue 3."""
    import numpy as np

    from oncosurg.stats import logrank_test, rmst
    from oncosurg.stats._checks import SurvivalData, check_survival_input, r_level_order
    from oncosurg.stats.km import _fit

    header, rows = _read_csv(path)
    for col in [time_col, event_col, group_col, start_col, id_col, *(covariates or [])]:
        if col:
            _need(header, col, path)
    names: dict[str, Any] = {
        "time": time_col,
        "event": event_col,
        "entry": start_col,
        "group": group_col,
        "_rows": "csv",
    }
    time = _numeric(rows, time_col)
    event = _numeric(rows, event_col)
    entry = _numeric(rows, start_col) if start_col else None
    data = check_survival_input(time, event, entry=entry, names=names)
    out: dict[str, Any] = {"n": data.n_rows, "events": int(np.count_nonzero(data.event))}

    def km_of(mask: np.ndarray | None = None, reverse: bool = False) -> Any:
        t = data.time if mask is None else data.time[mask]
        e = data.event if mask is None else data.event[mask]
        s = data.entry if (mask is None or data.entry is None) else data.entry[mask]
        return _fit(SurvivalData(t, ~e if reverse else e, None, s), "log", conf_level)

    km = km_of()
    out_km: dict[str, Any] = {"median": {ct: _med(km.median(ct)) for ct in ("log", "log-log")}}
    if at:
        rows_at = {ct: km.at(at, ct, extend=True) for ct in ("log", "log-log")}
        out_km["at_times"] = [
            {
                "time": a.time,
                "n_risk": a.n_risk,
                "surv": a.surv,
                "std_err": a.std_err,
                "log": {"lower": a.lower, "upper": a.upper},
                "log-log": {"lower": b.lower, "upper": b.upper},
            }
            for a, b in zip(rows_at["log"], rows_at["log-log"], strict=True)
        ]
    labels: list[Any] = []
    codes = None
    if group_col:
        glab = _labels(rows, group_col)
        labels = r_level_order(list(set(glab)))  # R's factor() order (numbers, or collated strings)
        index = {v: i for i, v in enumerate(labels)}
        codes = np.array([index[v] for v in glab], dtype=np.intp)
        out["groups"] = labels
    out["km"] = out_km
    if group_col and codes is not None:
        by = {}
        for i, lab in enumerate(labels):
            g = km_of(codes == i)
            by[_key(lab)] = {
                "n": g.n,
                "events": g.events,
                "median": {ct: _med(g.median(ct)) for ct in ("log", "log-log")},
            }
        out["km_by_group"] = by
        if data.entry is not None:
            out["logrank"] = None  # survdiff handles right-censored data only
        else:
            lr = logrank_test(data.time, data.event, glab, names=names)
            out["logrank"] = {
                "chisq": lr.chisq,
                "df": lr.df,
                "p": lr.p,
                "groups": {
                    _key(g): {"observed": float(lr.observed[i]), "expected": float(lr.expected[i])}
                    for i, g in enumerate(lr.groups)
                },
            }
    rk, n_pat = _followup(data, rows, id_col, conf_level)
    out["reverse_km_followup"] = {"median": {"log": _med(rk.median("log"))}, "n_patients": n_pat}
    if covariates:
        out["cox"] = _cox(rows, covariates, data, names, conf_level)
    if rmst_tau is not None:
        res = rmst(
            data.time,
            data.event,
            rmst_tau,
            entry=data.entry,
            names=names,
            group=None if codes is None else codes,
        )
        r: dict[str, Any] = {"tau": res.tau, "overall": {"rmst": res.overall.rmst, "se": res.overall.se}}
        if res.by_group is not None:
            r["by_group"] = {
                _key(labels[int(k)]): {"rmst": v.rmst, "se": v.se} for k, v in res.by_group.items()
            }
        out["rmst"] = r
    return json.loads(json.dumps(out, default=_fin), parse_constant=lambda c: None)


def _followup(data: Any, rows: list[dict[str, str]], id_col: str | None, conf_level: float) -> tuple[Any, int]:
    """Reverse Kaplan-Meier of the follow-up, one observation per patient.

    Right-censored rows are patients.  (start, stop] rows are grouped into patients by ``--id``, or
    without it by contiguity (a row whose start equals the previous row's stop continues that
    patient, as ``tmerge`` writes them); a patient's follow-up is the stop time of its last interval
    and its status that interval's event (R: ``survfit(Surv(stop, 1 - event) ~ 1)`` on one row per
    patient).
    """
    import numpy as np

    from oncosurg.stats._checks import SurvivalData
    from oncosurg.stats.km import _fit

    t, e = data.time, data.event
    if data.entry is None and id_col is None:
        return _fit(SurvivalData(t, ~e, None, None), "log", conf_level), int(t.shape[0])
    if id_col is not None:
        ids = [(r.get(id_col) or "").strip() for r in rows]
        for i, v in enumerate(ids):
            if v.lower() in MISSING:
                raise InputProblem(f"column '{id_col}' (id) has a missing value at line {i + 2}; fill it.")
        index: dict[str, int] = {}
        pid = np.array([index.setdefault(v, len(index)) for v in ids], dtype=np.int64)
    else:
        s = data.entry
        new = np.ones(t.shape[0], dtype=bool)
        new[1:] = s[1:] != t[:-1]
        pid = np.cumsum(new) - 1
    npat = int(pid.max()) + 1
    # the last interval of each patient: the largest stop (ties: the later row)
    order = np.lexsort((np.arange(t.shape[0]), t, pid))
    last = order[np.r_[pid[order][1:] != pid[order][:-1], True]]
    fu = SurvivalData(t[last].astype(np.float64), ~e[last], None, None)
    return _fit(fu, "log", conf_level), npat


def _cox(
    rows: list[dict[str, str]], covariates: list[str], data: Any, names: dict[str, Any], conf_level: float
) -> dict[str, Any]:
    import numpy as np

    try:
        from oncosurg.stats.cox import coxph
    except ImportError:  # pragma: no cover - cox module is part of the package
        raise InputProblem(
            "--covariates needs oncosurg.stats.cox, which is not installed in this build."
        ) from None
    X = np.column_stack([_numeric(rows, c) for c in covariates])
    # R's coxph default na.action = na.omit: rows with a missing covariate are left out of the Cox fit
    ok = ~np.isnan(X).any(axis=1)
    if not ok.any():
        raise InputProblem(f"every row has a missing value in the covariates {', '.join(covariates)}.")
    t, e = data.time[ok], data.event[ok]
    s = None if data.entry is None else data.entry[ok]
    out: dict[str, Any] = {"covariates": covariates}
    for ties in ("efron", "breslow"):
        fit = coxph(
            t,
            e.astype(np.int8),
            X[ok],
            ties=ties,
            entry=s,
            names=covariates,
            conf_level=conf_level,
            column_names={k: v for k, v in names.items() if isinstance(v, str) and not k.startswith("_")},
        )
        d = fit.to_dict()
        out["n"], out["events"] = d.get("n"), d.get("events")
        out[ties] = {
            k: d[k]
            for k in (
                "coefficients",
                "loglik_null",
                "loglik",
                "lr_chisq",
                "lr_df",
                "lr_p",
                "concordance",
                "extra",
            )
            if k in d
        }
        if d.get("warnings"):
            out.setdefault("warnings", []).extend(f"{ties}: {w}" for w in d["warnings"])
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "NR"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _print_rich(res: dict[str, Any], path: str) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    con.print(f"[bold]{path}[/bold]: n = {res['n']}, events = {res['events']} (NR = not reached)")
    t = Table(title="Kaplan-Meier median survival (95% CI by conf type)")
    for c in ("curve", "n", "events", "median", "log CI", "log-log CI"):
        t.add_column(c)

    def row(name: str, n: Any, ev: Any, med: dict[str, Any]) -> None:
        lg, ll = med["log"], med["log-log"]
        t.add_row(
            name,
            str(n),
            str(ev),
            _fmt(lg["median"]),
            f"{_fmt(lg['lower'])} - {_fmt(lg['upper'])}",
            f"{_fmt(ll['lower'])} - {_fmt(ll['upper'])}",
        )

    row("all", res["n"], res["events"], res["km"]["median"])
    for lab, g in (res.get("km_by_group") or {}).items():
        row(lab, g["n"], g["events"], g["median"])
    con.print(t)
    if res["km"].get("at_times"):
        t = Table(title="Survival at requested times")
        for c in ("time", "n at risk", "S(t)", "SE", "log CI", "log-log CI"):
            t.add_column(c)
        for a in res["km"]["at_times"]:
            t.add_row(
                _fmt(a["time"]),
                str(a["n_risk"]),
                _fmt(a["surv"]),
                _fmt(a["std_err"]),
                f"{_fmt(a['log']['lower'])} - {_fmt(a['log']['upper'])}",
                f"{_fmt(a['log-log']['lower'])} - {_fmt(a['log-log']['upper'])}",
            )
        con.print(t)
    if res.get("logrank"):
        lr = res["logrank"]
        t = Table(title=f"Log-rank: chi2 = {lr['chisq']:.4g}, df = {lr['df']}, p = {_fmt(lr['p'])}")
        for c in ("group", "observed", "expected"):
            t.add_column(c)
        for lab, g in lr["groups"].items():
            t.add_row(lab, _fmt(g["observed"]), _fmt(g["expected"]))
        con.print(t)
    fu = res["reverse_km_followup"]["median"]["log"]
    con.print(
        f"Median follow-up (reverse Kaplan-Meier): {_fmt(fu['median'])} "
        f"(95% CI {_fmt(fu['lower'])} - {_fmt(fu['upper'])})"
    )
    if res.get("cox"):
        cx = res["cox"]
        for ties in ("efron", "breslow"):
            f = cx[ties]
            t = Table(
                title=f"Cox ({ties} ties): n = {cx['n']}, events = {cx['events']}, "
                f"LR chi2 = {_fmt(f['lr_chisq'])} (p = {_fmt(f['lr_p'])}), C = {_fmt(f['concordance'])}"
            )
            for c in ("covariate", "coef", "se", "HR", "95% CI", "p"):
                t.add_column(c)
            for name, c in f["coefficients"].items():
                t.add_row(
                    name,
                    _fmt(c["coef"]),
                    _fmt(c["se"]),
                    _fmt(c["hr"]),
                    f"{_fmt(c['hr_lower'])} - {_fmt(c['hr_upper'])}",
                    _fmt(c["p"]),
                )
            con.print(t)
        for w in cx.get("warnings", []):
            con.print(f"[yellow]warning[/yellow]: {w}")
    if res.get("rmst"):
        r = res["rmst"]
        t = Table(title=f"Restricted mean survival time up to {r['tau']:g}")
        for c in ("curve", "RMST", "SE"):
            t.add_column(c)
        t.add_row("all", _fmt(r["overall"]["rmst"]), _fmt(r["overall"]["se"]))
        for lab, g in (r.get("by_group") or {}).items():
            t.add_row(lab, _fmt(g["rmst"]), _fmt(g["se"]))
        con.print(t)


@cli.command("survival")
@click.argument("file", metavar="FILE.csv")
@click.option("--time", "time_col", required=True, metavar="COL", help="Follow-up time column (stop time).")
@click.option(
    "--event", "event_col", required=True, metavar="COL", help="Event column: 1 = event, 0 = censored."
)
@click.option("--group", "group_col", metavar="COL", help="Group column: KM per group and the log-rank test.")
@click.option(
    "--covariates", metavar="A,B,...", help="Numeric covariates for a Cox model (Efron and Breslow)."
)
@click.option(
    "--start", "start_col", metavar="COL", help="Entry / start time column (left truncation, (start, stop])."
)
@click.option(
    "--id", "id_col", metavar="COL",
    help="Patient id column: with --start, follow-up is computed per patient (default: contiguous rows).",
)
@click.option("--at", "at_text", metavar="T1,T2,...", help="Report S(t) and numbers at risk at these times.")
@click.option("--rmst-tau", type=float, metavar="T", help="Restricted mean survival time up to T.")
@click.option(
    "--conf-level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True,
    help="Confidence level of all CIs, strictly between 0 and 1 (R conf.int).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (R's NA = null) instead of tables.")
def survival_command(
    file: str,
    time_col: str,
    event_col: str,
    group_col: str | None,
    covariates: str | None,
    start_col: str | None,
    id_col: str | None,
    at_text: str | None,
    rmst_tau: float | None,
    conf_level: float,
    as_json: bool,
) -> None:
    """Kaplan-Meier (medians, CIs), log-rank, Cox and RMST for FILE.csv, matching R's survival."""
    from oncosurg.stats import SurvivalInputError

    try:
        covs = [c.strip() for c in covariates.split(",") if c.strip()] if covariates else None
        res = analyse(
            file,
            time_col,
            event_col,
            group_col,
            covs,
            start_col,
            _floats(at_text, "--at"),
            rmst_tau,
            conf_level,
            id_col,
        )
    except (InputProblem, SurvivalInputError) as exc:
        click.echo(f"Error: {' '.join(str(exc).split())}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        _print_rich(res, file)
