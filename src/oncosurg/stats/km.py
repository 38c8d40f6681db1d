"""Kaplan-Meier estimation, reverse Kaplan-Meier and median / quantiles, matching R ``survival``.

Why our own code instead of lifelines or statsmodels: every published survival figure comes out of
this module, users check it against R's ``survival`` (3.5.3), and the two Python libraries differ
from R in small but visible ways (CI type defaults, the median rule when S(t) equals 0.5 on an
interval, NA handling of the bands, ``summary(times=)`` semantics).  So the formulas below are R's,
ported line by line (the R function each block replicates is named in the comments), and they are
vectorised for registry-scale data:

* distinct float times: one LSD radix sort of the IEEE-754 bit patterns (non-negative doubles sort
  like their unsigned-integer bits) carrying the event flag along, compiled with numba -- cheaper
  than ``np.sort`` and gives the events in the same pass (no ``argsort`` + gather);
* non-negative integer times with a small range (days, months): a counting pass with
  ``np.bincount`` (no sort at all);
* weights / left truncation: ``argsort`` + ``np.add.reduceat``.

Then the estimator is a few cumulative sums:

* number at risk  n_j = sum_i w_i [entry_i < t_j <= time_i]
* Kaplan-Meier    S(t) = prod_{t_j <= t} (1 - d_j / n_j)
* Greenwood       var(log S(t)) = sum_{t_j <= t} d_j / (n_j (n_j - d_j))   (R ``fit$std.err``^2)
* SE of S         S(t) * sqrt(var(log S))                                  (R ``summary(fit)$std.err``)
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from scipy.special import ndtri

from oncosurg.stats._checks import (
    SurvivalData,
    check_conf_level,
    check_conf_type,
    check_survival_input,
)
from oncosurg.stats.results import AtTime, KaplanMeier, Quantile

__all__ = ["confint", "kaplan_meier", "km_counts", "reverse_kaplan_meier"]

TOL = math.sqrt(np.finfo(np.float64).eps)  # R: sqrt(.Machine$double.eps)
_RADIX_MIN = 20_000  # below this np.argsort is as fast and needs no compiled kernel


# --------------------------------------------------------------------------------------------
# counting: distinct times, number at risk, events, censorings
# --------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _radix_sort_pairs(keys, ev):  # pragma: no cover - compiled
    """Stable LSD radix sort (8-bit digits) of uint64 keys carrying a bool payload.

    Keys are the bit patterns of non-negative doubles (the order of the bits is the numeric
    order); -0.0 is mapped to +0.0.  Digits that are constant over the data are skipped.
    """
    n = keys.shape[0]
    bits = 8
    nd = 8
    nbk = 256
    mask = np.uint64(255)
    negzero = np.uint64(0x8000000000000000)
    hist = np.zeros((nd, nbk), np.int64)
    src_k = np.empty_like(keys)
    for i in range(n):
        k = keys[i]
        if k == negzero:
            k = np.uint64(0)
        src_k[i] = k
        for d in range(nd):
            hist[d, (k >> np.uint64(d * bits)) & mask] += 1
    src_e = ev.copy()
    dst_k = np.empty_like(keys)
    dst_e = np.empty_like(ev)
    off = np.empty(nbk, np.int64)
    for d in range(nd):
        h = hist[d]
        skip = False
        for b in range(nbk):
            if h[b] == n:
                skip = True
                break
            if h[b] != 0:
                break
        if skip:
            continue
        s = 0
        for b in range(nbk):
            off[b] = s
            s += h[b]
        sh = np.uint64(d * bits)
        for i in range(n):
            k = src_k[i]
            b = (k >> sh) & mask
            j = off[b]
            off[b] = j + 1
            dst_k[j] = k
            dst_e[j] = src_e[i]
        src_k, dst_k = dst_k, src_k
        src_e, dst_e = dst_e, src_e
    return src_k, src_e


@nb.njit(cache=True, nogil=True)
def _group_sorted(sk, se):  # pragma: no cover - compiled
    """Distinct sorted keys -> (keys, rows per key, events per key)."""
    n = sk.shape[0]
    m = 1
    for i in range(1, n):
        if sk[i] != sk[i - 1]:
            m += 1
    keys = np.empty(m, np.uint64)
    tot = np.zeros(m, np.int64)
    dev = np.zeros(m, np.int64)
    j = 0
    keys[0] = sk[0]
    for i in range(n):
        if i > 0 and sk[i] != sk[i - 1]:
            j += 1
            keys[j] = sk[i]
        tot[j] += 1
        if se[i]:
            dev[j] += 1
    return keys, tot, dev


def _integer_times(t: np.ndarray) -> np.ndarray | None:
    """``t`` as int64 if it holds non-negative integers with a small range (for a counting pass)."""
    n = t.shape[0]
    limit = max(4 * n, 1 << 20)
    if t.dtype.kind in "iu":
        hi = int(t.max())
        return t.astype(np.int64, copy=False) if hi <= limit else None
    head = t[:1024]
    if not np.array_equal(head, np.floor(head)):  # cheap rejection before a full pass
        return None
    hi = float(t.max())
    if hi > limit:
        return None
    ti = t.astype(np.int64)
    if not np.array_equal(ti, t):
        return None
    return ti


def km_counts(data: SurvivalData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(time, n_risk, n_event, n_censor) at the distinct times, as R ``survfit``'s KM counts."""
    t, e, w, s = data.time, data.event, data.weights, data.entry
    n = t.shape[0]
    if w is None and s is None:
        ti = _integer_times(t)
        if ti is not None:  # counting pass: no sort
            tot = np.bincount(ti)
            dev = np.bincount(ti[e], minlength=tot.shape[0])
            idx = np.flatnonzero(tot)
            total = tot[idx]
            n_event = dev[idx]
            times = idx.astype(np.float64)
        else:
            tf = t.astype(np.float64, copy=False)
            if n >= _RADIX_MIN:
                sk, sev = _radix_sort_pairs(tf.view(np.uint64), e)
                keys, total, n_event = _group_sorted(sk, sev)
                del sk, sev
                times = keys.view(np.float64)
            else:
                order = np.argsort(tf, kind="stable")
                sk = tf[order] + 0.0  # -0.0 -> 0.0
                keys, total, n_event = _group_sorted(sk.view(np.uint64), e[order])
                times = keys.view(np.float64)
        # n_j = number of rows with time >= t_j (reverse cumulative sum)
        n_risk = n - np.cumsum(total) + total
        n_censor = total - n_event
        return times, n_risk, n_event, n_censor
    # weighted and/or left-truncated: argsort + reduceat
    tf = t.astype(np.float64, copy=False)
    ww = np.ones(n) if w is None else w
    order = np.argsort(tf, kind="stable")
    ts = tf[order] + 0.0
    flag = np.empty(n, dtype=bool)
    flag[0] = True
    np.not_equal(ts[1:], ts[:-1], out=flag[1:])
    starts = np.flatnonzero(flag)
    times = ts[starts]
    wo = ww[order]
    total = np.add.reduceat(wo, starts)
    n_event = np.add.reduceat(np.where(e[order], wo, 0.0), starts)
    wsum = float(ww.sum())
    # rows with time >= t_j
    n_risk = wsum - np.cumsum(total) + total
    if s is not None:
        # minus rows not yet entered: entry >= t_j  (risk set is entry < t <= time)
        eo = np.argsort(s, kind="stable")
        es = s[eo]
        cw = np.concatenate(([0.0], np.cumsum(ww[eo])))
        n_risk = n_risk - (wsum - cw[np.searchsorted(es, times, side="left")])
    n_censor = total - n_event
    if w is None or np.array_equal(ww, np.round(ww)):
        total, n_event, n_censor, n_risk = (
            np.rint(a).astype(np.int64) for a in (total, n_event, n_censor, n_risk)
        )
    return times, n_risk, n_event, n_censor


# --------------------------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------------------------
def _km_from_counts(n_risk: np.ndarray, n_event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S and Greenwood SE of log S (R ``fit$std.err``; Inf once S = 0)."""
    nr = n_risk.astype(np.float64)
    d = n_event.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Kaplan-Meier product-limit: S(t) = prod (1 - d_j/n_j)
        surv = np.cumprod(1.0 - d / nr)
        # Greenwood: var(log S) = sum d_j / (n_j (n_j - d_j)); d_j = n_j gives Inf as in R
        term = nr - d
        term *= nr
        np.divide(d, term, out=term)
        term[d == 0] = 0.0
        np.cumsum(term, out=term)
        np.sqrt(term, out=term)
    return surv, term


def _z(conf_level: float) -> float:
    return float(ndtri(1.0 - (1.0 - conf_level) / 2.0))  # R: qnorm(1 - (1 - conf.int)/2)


def confint(
    surv: np.ndarray, se: np.ndarray, conf_type: str, conf_level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise bands as R ``survival:::survfit_confint`` with ``logse = TRUE``.

    ``se`` is the SE of log S.  NA (NaN) where S = 0 (log, log-log), S = 1 (log-log) or the SE is
    not finite (plain).
    """
    check_conf_type(conf_type)
    z = _z(conf_level)
    p = np.asarray(surv, dtype=np.float64)
    se = np.asarray(se, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "plain":
            # se2 <- se * p * zval; list(lower = pmax(p - se2, 0), upper = pmin(p + se2, 1))
            se2 = se * p * z
            return np.maximum(p - se2, 0.0), np.minimum(p + se2, 1.0)
        if conf_type == "log":
            # xx <- ifelse(p == 0, NA, p); exp(log(xx) -/+ zval*se), upper capped at 1
            xx = np.where(p == 0, np.nan, p)
            lx = np.log(xx)
            se2 = z * se
            return np.exp(lx - se2), np.minimum(np.exp(lx + se2), 1.0)
        # log-log: xx <- ifelse(p == 0 | p == 1, NA, p); se2 <- zval*se/log(xx)
        xx = np.where((p == 0) | (p == 1), np.nan, p)
        lx = np.log(xx)
        se2 = z * se / lx
        ll = np.log(-lx)
        return np.exp(-np.exp(ll - se2)), np.exp(-np.exp(ll + se2))


def kaplan_meier(
    time: Any,
    event: Any,
    *,
    weights: Any = None,
    entry: Any = None,
    conf_type: str = "log",
    conf_level: float = 0.95,
    names: dict[str, str] | None = None,
) -> KaplanMeier:
    """Kaplan-Meier estimate as R ``survfit(Surv([entry,] time, event) ~ 1, weights=, conf.type=)``.

    ``weights`` are case counts (rows with identical (time, event) may be aggregated: the result
    equals the expanded data).  ``entry`` gives left-truncation times (risk set entry < t <= time).
    ``names`` maps argument names to CSV column names for error messages.
    """
    check_conf_type(conf_type)
    conf_level = check_conf_level(conf_level)
    data = check_survival_input(time, event, weights=weights, entry=entry, names=names)
    return _fit(data, conf_type, conf_level)


def _fit(data: SurvivalData, conf_type: str, conf_level: float) -> KaplanMeier:
    times, n_risk, n_event, n_censor = km_counts(data)
    surv, se_log = _km_from_counts(n_risk, n_event)
    if data.weights is None:
        n_tot: int | float = data.n_rows
        ev: int | float = int(np.count_nonzero(data.event))
    else:
        n_tot = _num(data.weights.sum())
        ev = _num(data.weights[data.event].sum())
    return KaplanMeier(
        time=times,
        n_risk=n_risk,
        n_event=n_event,
        n_censor=n_censor,
        surv=surv,
        std_err_log=se_log,
        n=n_tot,
        events=ev,
        conf_type=conf_type,
        conf_level=conf_level,
    )


def _num(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def reverse_kaplan_meier(
    time: Any,
    event: Any,
    *,
    conf_type: str = "log-log",
    conf_level: float = 0.95,
    names: dict[str, str] | None = None,
) -> KaplanMeier:
    """Reverse Kaplan-Meier (Schemper & Smith 1996): censoring is the event.

    Same as R ``survfit(Surv(time, 1 - event) ~ 1)``; its median is the median follow-up.
    """
    check_conf_type(conf_type)
    conf_level = check_conf_level(conf_level)
    data = check_survival_input(time, event, names=names)
    rev = SurvivalData(data.time, ~data.event, None, None)
    return _fit(rev, conf_type, conf_level)


# --------------------------------------------------------------------------------------------
# median (print.survfit rule) and quantiles (quantile.survfit rule)
# --------------------------------------------------------------------------------------------
def _minmin_scan(values, x: np.ndarray) -> float | None:
    """R ``survival:::survmean``'s ``minmin(y, x)`` (the median printed by ``print(fit)``).

    keep <- !is.na(y) & y < 0.5 + tol; first kept point; if it equals 0.5 within tol and the curve
    drops below it later, the midpoint of the two times, else its time.  ``values(a, b)`` returns
    y[a:b] so that the bands are only computed up to the crossing (blocks of growing size).
    """
    n = x.shape[0]
    start, block, k = 0, 4096, -1
    y1 = math.nan
    while start < n:
        stop = min(n, start + block)
        y = values(start, stop)
        hit = np.flatnonzero(y < 0.5 + TOL)  # NaN compares False
        if hit.size:
            k = start + int(hit[0])
            y1 = float(y[hit[0]])
            break
        start, block = stop, block * 2
    if k < 0:
        return None
    if abs(y1 - 0.5) >= TOL:
        return float(x[k])
    start, block = k + 1, 4096
    while start < n:
        stop = min(n, start + block)
        y = values(start, stop)
        lower = np.flatnonzero(y < y1)
        if lower.size:
            return (float(x[k]) + float(x[start + int(lower[0])])) / 2.0
        start, block = stop, block * 2
    return float(x[k])


def median_print(km: KaplanMeier, conf_type: str | None = None) -> Quantile:
    """Median and CI exactly as R ``print(fit)`` / ``summary(fit)$table`` (``survmean``)."""
    ct = km.conf_type if conf_type is None else check_conf_type(conf_type)
    x = km.time
    est = _minmin_scan(lambda a, b: km.surv[a:b], x)
    if ct in km._cache:
        lo_all, up_all = km._cache[ct]
        lo = _minmin_scan(lambda a, b: lo_all[a:b], x)
        up = _minmin_scan(lambda a, b: up_all[a:b], x)
    else:

        def band(i: int):
            return lambda a, b: confint(km.surv[a:b], km.std_err_log[a:b], ct, km.conf_level)[i]

        lo = _minmin_scan(band(0), x)
        up = _minmin_scan(band(1), x)
    return Quantile(0.5, est, lo, up, ct)


def _approx_const_f1(yy: np.ndarray, p: float) -> int | None:
    """R ``approx(yy, 1:n, p, method="constant", f=1)$y`` (rule 1): index of the smallest yy >= p."""
    ok = ~np.isnan(yy)
    if not ok.any():
        return None
    v = yy[ok]
    if p < v.min() or p > v.max():
        return None
    idx = np.flatnonzero(ok)
    cand = np.flatnonzero(v >= p)
    return int(idx[cand[np.argmin(v[cand])]])


def findq(x: np.ndarray, y: np.ndarray, p: float, tol: float = TOL) -> float | None:
    """Port of R ``survival:::findq`` (used by ``quantile.survfit``)."""
    with np.errstate(invalid="ignore"):
        if np.isnan(y).all() or np.nanmax(y) < p:
            return None
    xmax = float(x[-1])
    # dups <- duplicated(y): keep first occurrences (NA counts as a value)
    nan = np.isnan(y)
    if not nan.any() and (y.shape[0] < 2 or bool(np.all(y[1:] >= y[:-1]))):
        keep = np.ones(y.shape[0], dtype=bool)
        keep[1:] = y[1:] != y[:-1]
        x, y = x[keep], y[keep]
    else:
        _, first = np.unique(y, return_index=True)  # NaNs collapse into one, like duplicated()
        first = np.sort(first)
        x, y = x[first], y[first]
    n = y.shape[0]
    i1 = _approx_const_f1(y + tol, p)
    i2 = _approx_const_f1(y - tol, p)
    quant = None if (i1 is None or i2 is None) else (float(x[i1]) + float(x[i2])) / 2.0
    if p == 0:
        quant = float(x[0])
    if not np.isnan(y[n - 1]) and abs(p - y[n - 1]) < tol:
        quant = None if i1 is None else (float(x[i1]) + xmax) / 2.0
    return quant


def quantile_findq(km: KaplanMeier, p: float, conf_type: str | None = None) -> Quantile:
    """R ``quantile(fit, p)`` via ``doquant``: estimate, then the same rule on the bands."""
    if not (0.0 <= float(p) <= 1.0) or math.isnan(float(p)):
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    ct = km.conf_type if conf_type is None else check_conf_type(conf_type)
    x = np.concatenate(([0.0], km.time))  # firstx = 0 (no start.time)
    lo, up = km.bands(ct)
    est = findq(x, np.concatenate(([0.0], 1.0 - km.surv)), p)
    ql = findq(x, np.concatenate(([0.0], 1.0 - lo)), p)
    qu = findq(x, np.concatenate(([0.0], 1.0 - up)), p)
    return Quantile(float(p), est, ql, qu, ct)


# --------------------------------------------------------------------------------------------
# summary(fit, times=)
# --------------------------------------------------------------------------------------------
def at_times(
    km: KaplanMeier, times: Any, conf_type: str | None = None, *, extend: bool = False
) -> list[AtTime]:
    """Port of ``summary.survfit(fit, times=)`` (``survfit0`` + ``findrow``)."""
    ct = km.conf_type if conf_type is None else check_conf_type(conf_type)
    lo, up = km.bands(ct)
    t0, nr, ne, nc = km.time, km.n_risk, km.n_event, km.n_censor
    s, se, std = km.surv, km.std_err_log, km.std_err
    # survfit0: add a time-0 row (S = 1, bands 1, se 0, n.risk = first n.risk) unless time[1] == 0
    if t0.shape[0] == 0 or t0[0] != 0:
        t0 = np.concatenate(([0.0], t0))
        nr = np.concatenate((nr[:1], nr))
        ne = np.concatenate(([0], ne))
        nc = np.concatenate(([0], nc))
        s = np.concatenate(([1.0], s))
        std = np.concatenate(([0.0], std))
        lo = np.concatenate(([1.0], lo))
        up = np.concatenate(([1.0], up))
        del se
    req = np.sort(np.asarray(times, dtype=np.float64).reshape(-1))
    req = req[np.isfinite(req)]
    if not extend:
        req = req[req <= t0[-1]]
    i1 = np.searchsorted(t0, req, side="right")  # findInterval(times, time)
    i2 = np.searchsorted(t0, req, side="left")  # findInterval(..., left.open=TRUE); +1 -1 (0-based)
    r = np.maximum(i1, 1) - 1  # ssub: x[pmax(1, indx)]
    nr_ext = np.concatenate((nr, [0]))

    def delta(v: np.ndarray) -> np.ndarray:
        cs = np.concatenate(([0], np.cumsum(v)))
        vals = cs[i1]
        return np.diff(np.concatenate(([0], vals)))

    d_ev, d_ce = delta(ne), delta(nc)
    out = []
    for j in range(req.shape[0]):
        k = int(r[j])
        out.append(
            AtTime(
                time=float(req[j]),
                n_risk=_num(nr_ext[i2[j]]),
                n_event=_num(d_ev[j]),
                n_censor=_num(d_ce[j]),
                surv=float(s[k]),
                std_err=_nan_none(std[k]),
                lower=_nan_none(lo[k]),
                upper=_nan_none(up[k]),
            )
        )
    return out


def _nan_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
