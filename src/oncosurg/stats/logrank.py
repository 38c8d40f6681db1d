"""Log-rank test as R ``survdiff(Surv(time, status) ~ group [+ strata(s)], rho = 0)``.

Our own code for the same reasons as :mod:`oncosurg.stats.km` (R's exact definitions, speed):
the counts per (distinct time, group) come from one radix sort (float times) or one counting pass
(integer-valued times), then everything is array arithmetic.  Per stratum, at each distinct
time t_j with n_j at risk and d_j events (n_gj, d_gj in group g):

* observed  O_g = sum_j d_gj
* expected  E_g = sum_j n_gj d_j / n_j
* variance  V_gh = sum_j d_j (n_j - d_j) / (n_j^2 (n_j - 1)) * n_gj (delta_gh n_j - n_hj)   (n_j > 1)

O, E and V are summed over strata; the statistic is (O - E)' V^- (O - E) on the groups with
E > 0, dropping the first (R's ``solve(vv, temp2)``), df = #(E > 0) - 1.
"""

from __future__ import annotations

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
)
from oncosurg.stats.km import _RADIX_MIN, _integer_times, _radix_sort_pairs
from oncosurg.stats.results import LogRankResult

__all__ = ["counts_by_group", "logrank_test"]


@nb.njit(cache=True, nogil=True)
def _group_sorted_codes(sk, pay, ng):  # pragma: no cover - compiled
    """Sorted keys + payload (2*group + event) -> distinct keys, rows (m, ng), events (m, ng)."""
    n = sk.shape[0]
    m = 1
    for i in range(1, n):
        if sk[i] != sk[i - 1]:
            m += 1
    keys = np.empty(m, np.uint64)
    tot = np.zeros((m, ng), np.int64)
    dev = np.zeros((m, ng), np.int64)
    j = 0
    keys[0] = sk[0]
    for i in range(n):
        if i > 0 and sk[i] != sk[i - 1]:
            j += 1
            keys[j] = sk[i]
        g = pay[i] >> 1
        tot[j, g] += 1
        dev[j, g] += pay[i] & 1
    return keys, tot, dev


def counts_by_group(t: np.ndarray, e: np.ndarray, codes: np.ndarray, ng: int):
    """Distinct times and per-group (rows, events) matrices of shape (n_times, ng)."""
    pay_dtype = np.uint8 if ng < 128 else np.int64
    ti = _integer_times(t)
    if ti is not None:  # counting pass
        key = ti * (2 * ng) + codes * 2 + e
        cnt = np.bincount(key, minlength=(int(ti.max()) + 1) * 2 * ng).reshape(-1, ng, 2)
        tot = cnt.sum(axis=2)
        present = np.flatnonzero(tot.sum(axis=1))
        return present.astype(np.float64), tot[present], cnt[present, :, 1]
    tf = t.astype(np.float64, copy=False)
    pay = (codes * 2 + e).astype(pay_dtype)
    if tf.shape[0] >= _RADIX_MIN:
        sk, sp = _radix_sort_pairs(tf.view(np.uint64), pay)
    else:
        order = np.argsort(tf, kind="stable")
        sk, sp = (tf[order] + 0.0).view(np.uint64), pay[order]
    keys, tot, dev = _group_sorted_codes(sk, sp, ng)
    return keys.view(np.float64), tot, dev


def logrank_test(
    time: Any, event: Any, group: Any, *, strata: Any = None, names: dict[str, str] | None = None
):
    """Log-rank test (``survdiff``, rho = 0) comparing ``group`` levels, optionally stratified.

    Returns a :class:`~oncosurg.stats.results.LogRankResult` with ``chisq``, ``df``, ``p`` and per
    group ``n``, ``observed``, ``expected`` and the variance matrix (groups in sorted label order).
    """
    t = check_time(time, "time", names)
    n = t.shape[0]
    e = check_event(event, n, "event", names).view(np.uint8)
    levels, codes = check_group(group, n, "group", names, min_levels=2)
    ng = len(levels)
    if strata is None:
        s_codes = None
        n_strata = 1
    else:
        s_levels, s_codes = check_group(strata, n, "strata", names)
        n_strata = len(s_levels)
    obs = np.zeros(ng)
    exp = np.zeros(ng)
    var = np.zeros((ng, ng))
    for s in range(n_strata):
        if s_codes is None:
            ts, es, cs = t, e, codes
        else:
            m = s_codes == s
            ts, es, cs = t[m], e[m], codes[m]
        _, tot, dev = counts_by_group(ts, es, cs, ng)
        # at risk per group: rows with time >= t_j (reverse cumulative sum over time)
        nrisk = tot[::-1].cumsum(axis=0)[::-1].astype(np.float64)
        keep = dev.any(axis=1)
        nr = nrisk[keep]
        d = dev[keep].astype(np.float64)
        dj = d.sum(axis=1)
        nj = nr.sum(axis=1)
        obs += d.sum(axis=0)
        exp += (nr * (dj / nj)[:, None]).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            wj = np.where(nj > 1, dj * (nj - dj) / (nj * nj * (nj - 1)), 0.0)
        var += np.diag((nr * (wj * nj)[:, None]).sum(axis=0)) - (nr * wj[:, None]).T @ nr
    df_mask = exp > 0
    if df_mask.sum() < 2:
        chi = 0.0
    else:
        diff = (obs - exp)[df_mask][1:]
        vv = var[np.ix_(df_mask, df_mask)][1:, 1:]
        try:
            chi = float(np.sum(np.linalg.solve(vv, diff) * diff))
        except np.linalg.LinAlgError:
            raise SurvivalInputError(
                f"{label('group', names)}: the log-rank variance matrix is singular (a group has no "
                "patients at risk at any event time); drop or merge that group."
            ) from None
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
