"""Log-rank test as R ``survdiff(Surv(time, status) ~ group [+ strata(s)], rho = 0)``.

Our own code for the same reasons as :mod:`oncosurg.stats.km` (R's exact definitions, speed), and
compiled with numba (``cache=True``) for the same reason: at 1e6+ rows the cost is memory traffic,
and numpy would need ``np.unique`` label encoding, a sort plus gathers, and (n_times x n_groups)
count matrices.  Here the rows are sorted once by the radix sort of :mod:`oncosurg.stats.km` (the
event rides in the key, the group code is the only payload) -- or, for integer-valued times with
a small range, counted in one pass with no sort -- and a single compiled pass over the distinct
times accumulates O, E and V, so nothing of size (n_times x n_groups) is ever built.  Per stratum,
at each distinct time t_j with n_j at risk and d_j events (n_gj, d_gj in group g):

* observed  O_g = sum_j d_gj
* expected  E_g = sum_j n_gj d_j / n_j
* variance  V_gh = sum_j d_j (n_j - d_j) / (n_j^2 (n_j - 1)) * n_gj (delta_gh n_j - n_hj)   (n_j > 1)

O - E is accumulated as sum_j (d_gj - n_gj d_j / n_j), not as the difference of two large sums
(at 1e6 rows O and E agree to ~3 digits, and the difference would lose them), and the sums over
time are blocked with a compensated (Neumaier) total, so chi-square is accurate to ~1e-13
relative.  O, E and V are summed over strata; the statistic is (O - E)' V^- (O - E) on the
groups with E > 0, dropping the first (R's ``solve(vv, temp2)``), df = #(E > 0) - 1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numba as nb
import numpy as np
from scipy.special import chdtrc

from oncosurg.stats._checks import (
    SurvivalInputError,
    check_event,
    check_group,
    check_time,
    label,
    show,
)
from oncosurg.stats._timefix import aeq_surv, integer_range_needs_timefix, timefix_sorted_keys
from oncosurg.stats.km import integer_time_bins, sort_time_event
from oncosurg.stats.results import LogRankResult

__all__ = ["logrank_test"]


_BLOCK = 128  # event times summed plainly before a compensated add to the totals


@nb.njit(cache=True, nogil=True, inline="always")
def _add_time(nr, d, part):  # pragma: no cover - compiled
    """Add one distinct time with events (per-group at risk ``nr``, events ``d``) to the block sums
    ``part``: row 0 holds O - E (sum of d_g - n_g d / n, which does not lose digits to the
    cancellation of O and E), rows 1 + g the variance row V_g."""
    ng = nr.shape[0]
    nj = 0.0
    dj = 0.0
    for g in range(ng):
        nj += nr[g]
        dj += d[g]
    r = dj / nj
    for g in range(ng):
        part[0, g] += d[g] - nr[g] * r
    if nj > 1.0:
        wj = dj * (nj - dj) / (nj * nj * (nj - 1.0))
        for g in range(ng):
            if nr[g] == 0.0:
                continue
            a = wj * nr[g]
            for h in range(ng):
                if h == g:
                    part[1 + g, g] += a * (nj - nr[g])
                elif nr[h] != 0.0:
                    part[1 + g, h] -= a * nr[h]


@nb.njit(cache=True, nogil=True, inline="always")
def _flush(part, acc, comp):  # pragma: no cover - compiled
    """Neumaier-compensated acc += part; part = 0."""
    for r in range(part.shape[0]):
        for g in range(part.shape[1]):
            x = part[r, g]
            a = acc[r, g]
            t = a + x
            if abs(a) >= abs(x):
                comp[r, g] += (a - t) + x
            else:
                comp[r, g] += (x - t) + a
            acc[r, g] = t
            part[r, g] = 0.0


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _scan_sorted(sk, lo, codes, n_g, obs, acc, comp):  # pragma: no cover - compiled
    """One pass over rows sorted by (time, event) with their group codes."""
    ng = n_g.shape[0]
    nr = n_g.astype(np.float64)
    d = np.zeros(ng)
    c = np.zeros(ng)
    part = np.zeros(acc.shape)
    n = sk.shape[0]
    one = np.uint64(1)
    nblock = 0
    n_ev = 0
    for i in range(n):
        k = sk[i] + lo
        g = np.int64(codes[i])
        ev = np.int64(k & one)  # branch-free
        c[g] += 1.0
        d[g] += ev
        obs[g] += ev
        n_ev += ev
        if i + 1 == n or ((sk[i + 1] + lo) >> one) != (k >> one):  # last row at this time
            if n_ev:
                _add_time(nr, d, part)
                nblock += 1
                if nblock == _BLOCK:
                    _flush(part, acc, comp)
                    nblock = 0
            for h in range(ng):
                nr[h] -= c[h]
                c[h] = 0.0
                d[h] = 0.0
            n_ev = 0
    _flush(part, acc, comp)


@nb.njit(cache=True, nogil=True)
def _bin_counts_by_group(t, e, codes, tot, dev):  # pragma: no cover - compiled
    for i in range(t.shape[0]):
        k = np.int64(t[i])
        g = codes[i]
        tot[k, g] += 1
        dev[k, g] += np.int64(e[i])


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _scan_bins(tot, dev, n_g, obs, acc, comp):  # pragma: no cover - compiled
    """One pass over integer time bins (rows x groups counts)."""
    ng = n_g.shape[0]
    nr = n_g.astype(np.float64)
    d = np.zeros(ng)
    part = np.zeros(acc.shape)
    nblock = 0
    for b in range(tot.shape[0]):
        n_ev = 0
        for g in range(ng):
            d[g] = dev[b, g]
            obs[g] += dev[b, g]
            n_ev += dev[b, g]
        if n_ev:
            _add_time(nr, d, part)
            nblock += 1
            if nblock == _BLOCK:
                _flush(part, acc, comp)
                nblock = 0
        for g in range(ng):
            nr[g] -= tot[b, g]
    _flush(part, acc, comp)


def _accumulate(t: np.ndarray, e: np.ndarray, codes: np.ndarray, ng: int, obs, acc, comp, *,
                check_ties: bool = False) -> bool:
    """Add one stratum's contributions to ``obs`` and the compensated sums ``acc`` + ``comp``.

    With ``check_ties``, practically-equal times are merged as R's ``aeqSurv`` does: in place on the
    sorted keys, or, for huge integer times (never in practice), by returning False (adding nothing)
    so that the caller merges them and calls again.
    """
    n = t.shape[0]
    n_g = np.bincount(codes, minlength=ng).astype(np.int64)
    hi = integer_time_bins(t)
    if hi is not None and (hi + 1) * ng <= max(4 * n, 1 << 20):  # counting pass, no sort
        if check_ties and integer_range_needs_timefix(hi):
            return False
        tot = np.zeros((hi + 1, ng), np.int64)
        dev = np.zeros((hi + 1, ng), np.int64)
        _bin_counts_by_group(t, e, codes, tot, dev)
        _scan_bins(tot, dev, n_g, obs, acc, comp)
        return True
    pay_dtype = np.uint8 if ng <= 256 else (np.uint16 if ng <= 65536 else np.int64)
    pay = codes.astype(pay_dtype)  # a fresh array: the sort uses it as a buffer
    sk, lo, sp = sort_time_event(t.astype(np.float64, copy=False), e, pay)
    del pay
    if check_ties:
        timefix_sorted_keys(sk, lo)  # R survdiff: timefix = TRUE (aeqSurv), in place on the sorted keys
    _scan_sorted(sk, lo, sp, n_g, obs, acc, comp)
    return True


def _fh_stratum(t: np.ndarray, e: np.ndarray, codes: np.ndarray, ng: int, rho: float, gamma: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One stratum of the weighted test (``survdiff2.c`` with weights S(t-)^rho (1 - S(t-))^gamma,
    S the left-continuous Kaplan-Meier of the stratum's pooled rows): weighted O, O - E and V."""
    times, inv = np.unique(t, return_inverse=True)
    inv = inv.ravel()
    m = times.shape[0]
    at = np.zeros((m, ng))
    np.add.at(at, (inv, codes), 1.0)
    dg = np.zeros((m, ng))
    np.add.at(dg, (inv[e], codes[e]), 1.0)
    nr = at[::-1].cumsum(axis=0)[::-1]  # at risk per group: time >= t_j
    n = nr.sum(axis=1)
    d = dg.sum(axis=1)
    km = np.concatenate(([1.0], np.cumprod((n - d) / n)[:-1]))  # left-continuous, as survdiff2.c
    w = km**rho * (1.0 - km) ** gamma
    obs = (w[:, None] * dg).sum(axis=0)
    ome = (w[:, None] * (dg - nr * (d / n)[:, None])).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(n > 1, w * w * d * (n - d) / (n * n * (n - 1.0)), 0.0)
    var = np.diag((f[:, None] * nr * n[:, None]).sum(axis=0)) - (nr * f[:, None]).T @ nr
    return obs, ome, var


def logrank_test(
    time: Any, event: Any, group: Any, *, strata: Any = None, rho: float = 0.0, gamma: float = 0.0,
    names: dict[str, str] | None = None,
):
    """Log-rank family comparing ``group`` levels, optionally stratified: R's
    ``survdiff(Surv(time, event) ~ group [+ strata(s)], rho = rho)``.

    ``rho = 0, gamma = 0`` is the log-rank test, ``rho = 1`` the Peto & Peto modification of the
    Gehan-Wilcoxon test (R's ``rho = 1``), and in general the Fleming-Harrington G(rho, gamma) test
    with weights S(t-)^rho (1 - S(t-))^gamma, S the pooled left-continuous Kaplan-Meier of each
    stratum (``gamma`` > 0 stresses late differences; R's survdiff has gamma = 0 only).
    Returns a :class:`~oncosurg.stats.results.LogRankResult` with ``chisq``, ``df``, ``p`` and per
    group ``n``, ``observed`` and ``expected`` (weighted, as R's, when rho or gamma is not 0) and the
    variance matrix (groups in R's factor order).
    """
    for nm, v in (("rho", rho), ("gamma", gamma)):
        if not (isinstance(v, int | float | np.number) and np.isfinite(v) and v >= 0):
            raise SurvivalInputError(f"argument '{nm}' must be a finite number >= 0; got {show(v)}.")
    t = check_time(time, "time", names)
    n = t.shape[0]
    e = check_event(event, n, "event", names)
    levels, codes = check_group(group, n, "group", names, min_levels=2)
    ng = len(levels)
    obs_n = np.zeros(ng, np.int64)
    acc = np.zeros((1 + ng, ng))
    comp = np.zeros((1 + ng, ng))
    if rho != 0 or gamma != 0:
        t = aeq_surv(t.astype(np.float64, copy=False))[0]
        s_codes = np.zeros(n, np.intp) if strata is None else check_group(strata, n, "strata", names)[1]
        n_strata = int(s_codes.max()) + 1
        obs_w = np.zeros(ng)
        for s in range(n_strata):
            m = s_codes == s
            o, ome, v = _fh_stratum(t[m], e[m], codes[m], ng, float(rho), float(gamma))
            obs_w += o
            acc[0] += ome
            acc[1:] += v
        res = _finish(obs_w, acc, codes, ng, levels, n_strata, names)
        return dataclasses.replace(res, rho=float(rho), gamma=float(gamma))
    if strata is None:
        n_strata = 1
        if not _accumulate(t, e, codes, ng, obs_n, acc, comp, check_ties=True):
            t = aeq_surv(t.astype(np.float64, copy=False))[0]  # R survdiff: timefix = TRUE
            _accumulate(t, e, codes, ng, obs_n, acc, comp)
    else:
        t = aeq_surv(t.astype(np.float64, copy=False))[0]  # on all rows, before splitting by stratum
        s_levels, s_codes = check_group(strata, n, "strata", names)
        n_strata = len(s_levels)
        for s in range(n_strata):
            m = s_codes == s
            _accumulate(t[m], e[m], codes[m], ng, obs_n, acc, comp)
    return _finish(obs_n.astype(np.float64), acc + comp, codes, ng, levels, n_strata, names)


def _finish(obs: np.ndarray, tot: np.ndarray, codes: np.ndarray, ng: int, levels: list[Any], n_strata: int,
            names: dict[str, str] | None) -> LogRankResult:
    """Chi-square from O, O - E (row 0 of ``tot``) and V (rows 1..): R's ``solve(vv, temp2)``."""
    exp = obs - tot[0]  # E = O - (O - E)
    var = tot[1:]
    df_mask = exp > 0
    if df_mask.sum() < 2:
        chi = 0.0
    else:
        diff = (obs - exp)[df_mask][1:]
        vv = var[np.ix_(df_mask, df_mask)][1:, 1:]
        try:
            chi = float(np.sum(np.linalg.solve(vv, diff) * diff))
        except np.linalg.LinAlgError:
            if not np.any(var):
                why = (
                    "at every event time everyone at risk had the event (no patient at risk survived "
                    "an event time), so the variance of O - E is zero and the test is undefined; "
                    "R's survdiff stops here too. Check the event coding (all 1?) or compare the groups "
                    "by their Kaplan-Meier curves instead."
                )
            else:
                why = (
                    "the log-rank variance matrix is singular (the groups' contributions are linearly "
                    "dependent: e.g. a group whose patients are only at risk at event times where "
                    "everyone at risk had the event); drop or merge that group."
                )
            raise SurvivalInputError(f"{label('group', names)}: {why}") from None
    df = int(df_mask.sum()) - 1
    p = float(chdtrc(df, chi)) if df > 0 else float("nan")
    n_per = np.bincount(codes, minlength=ng)
    return LogRankResult(
        chisq=chi,
        df=df,
        p=p,
        groups=levels,
        n=n_per,
        observed=obs,
        expected=exp,
        variance=var,
        n_strata=n_strata,
    )
