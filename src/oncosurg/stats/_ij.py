"""Aalen-Johansen / Kaplan-Meier estimates with R's infinitesimal-jackknife (IJ) variance (private).

One compiled pass over the distinct times computes, for the competing-risks model (event-free
state plus k absorbing causes), ``S(t)``, ``F_k(t)`` and the IJ variance
``var = sum_c (sum_{i in c} w_i U_i(t))^2`` over clusters ``c`` (each row its own cluster by
default), where ``U_i`` is the derivative of the estimate with respect to row i's case weight --
what R's ``survfit`` reports for multi-state data, for weighted Kaplan-Meier with non-integer
weights and for ``robust = TRUE`` / ``cluster =``.

Why this is O(n k): all rows at risk over the same stretch share their influence up to two
row-specific constants.  With ``A_j`` and ``AF_kj`` the influence of a row at risk since the first
time (recursions below), a row that entered after time index ``e`` (left truncation) has
``U(S_j) = A_j - u S_j`` and ``U(F_kj) = AF_kj - u F_kj - c_k`` (``u = A_e / S_e``,
``c_k = AF_ke - u F_ke``); once it has left at index ``x`` it has ``U(S_j) = v S_j`` and
``U(F_kj) = g_k + v F_kj`` (``v = U(S_x) / S_x``, ``g_k = U(F_kx) - v F_kx``).  A cluster's
influence is therefore ``a A_j + b S_j`` and ``a AF_kj + b F_kj + d_k`` with coefficients that
change only when one of its rows enters or leaves, so the sum of squares over clusters is kept as
six running totals.  After a time where everyone at risk has the event (S = 0) every influence on
S is 0 and those on F are frozen (the recursion multiplies them by 1 - dL = 0).

Recursions (R's ``survfitaj.c`` updates, per row still at risk):
``A_j = A_{j-1} (1 - dL_j) + S_{j-1} dL_j / n_j`` and
``AF_kj = AF_k,j-1 + A_{j-1} dL_kj - S_{j-1} dL_kj / n_j``; a row leaving by an event of
cause k at t_j adds ``-S_{j-1} / n_j`` to ``U(S_j)`` and ``+S_{j-1} / n_j`` to ``U(F_kj)``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_NOISE = 1e-13  # relative round-off of the expanded sum of squares


@nb.njit(cache=True, nogil=True, error_model="numpy")
def aj_ij(n_risk, d, entry_idx, exit_idx, cause, w, cluster, ncluster):  # pragma: no cover - compiled
    """State probabilities and IJ variances.

    ``n_risk`` (m,) and ``d`` (m, k) are the weighted numbers at risk and events per cause at the m
    distinct times; per row: ``entry_idx`` = number of distinct times <= entry (0 without
    truncation), ``exit_idx`` = 1-based index of its exit time, ``cause`` (0 = censored), weight
    ``w`` and cluster code.  Returns (S, F (m, k), var_S, var_F (m, k)).
    """
    m, k = d.shape
    n = w.shape[0]
    S = np.empty(m + 1)
    F = np.zeros((m + 1, k))
    A = np.zeros(m + 1)
    AF = np.zeros((m + 1, k))
    S[0] = 1.0
    for j in range(1, m + 1):
        nr = n_risk[j - 1]
        dl = 0.0
        for c in range(k):
            dl += d[j - 1, c]
        if nr > 0:
            dl /= nr
        else:
            dl = 0.0
        sp = S[j - 1]
        S[j] = sp * (1.0 - dl)
        A[j] = A[j - 1] * (1.0 - dl) + (sp * dl / nr if nr > 0 else 0.0)
        for c in range(k):
            dlk = d[j - 1, c] / nr if nr > 0 else 0.0
            F[j, c] = F[j - 1, c] + sp * dlk
            AF[j, c] = AF[j - 1, c] + A[j - 1] * dlk - (sp * dlk / nr if nr > 0 else 0.0)
    # rows ordered by entry and by exit (counting sorts)
    by_entry = np.argsort(entry_idx, kind="mergesort")
    by_exit = np.argsort(exit_idx, kind="mergesort")
    ca = np.zeros(ncluster)
    cb = np.zeros(ncluster)
    cd = np.zeros((ncluster, k))
    taa = 0.0
    tab = 0.0
    tbb = 0.0
    tad = np.zeros(k)
    tbd = np.zeros(k)
    tdd = np.zeros(k)
    rb = np.zeros(n)  # row's current b (-u active, v exited)
    rd = np.zeros((n, k))
    dead = np.zeros(n, np.bool_)  # entered when S = 0: no influence
    var_s = np.zeros(m)
    var_f = np.zeros((m, k))
    pe = 0
    px = 0
    frozen = -1
    for j in range(1, m + 1):
        if frozen >= 0:
            var_s[j - 1] = 0.0
            for c in range(k):
                var_f[j - 1, c] = var_f[frozen, c]
            continue
        # rows entering: active from time j (entry index j - 1)
        while pe < n and entry_idx[by_entry[pe]] <= j - 1:
            i = by_entry[pe]
            pe += 1
            e = entry_idx[i]
            if S[e] <= 0.0:
                dead[i] = True
                continue
            u = A[e] / S[e]
            g = cluster[i]
            wi = w[i]
            # remove the cluster's old contribution
            taa -= ca[g] * ca[g]
            tab -= ca[g] * cb[g]
            tbb -= cb[g] * cb[g]
            for c in range(k):
                tad[c] -= ca[g] * cd[g, c]
                tbd[c] -= cb[g] * cd[g, c]
                tdd[c] -= cd[g, c] * cd[g, c]
            ca[g] += wi
            cb[g] -= wi * u
            rb[i] = -u
            for c in range(k):
                ck = AF[e, c] - u * F[e, c]
                cd[g, c] -= wi * ck
                rd[i, c] = -ck
            taa += ca[g] * ca[g]
            tab += ca[g] * cb[g]
            tbb += cb[g] * cb[g]
            for c in range(k):
                tad[c] += ca[g] * cd[g, c]
                tbd[c] += cb[g] * cd[g, c]
                tdd[c] += cd[g, c] * cd[g, c]
        # rows leaving at time j
        sj = S[j]
        nr = n_risk[j - 1]
        while px < n and exit_idx[by_exit[px]] <= j:
            i = by_exit[px]
            px += 1
            if dead[i]:
                continue
            g = cluster[i]
            wi = w[i]
            cz = cause[i]
            us = A[j] + rb[i] * sj
            if cz > 0:
                us -= S[j - 1] / nr
            taa -= ca[g] * ca[g]
            tab -= ca[g] * cb[g]
            tbb -= cb[g] * cb[g]
            for c in range(k):
                tad[c] -= ca[g] * cd[g, c]
                tbd[c] -= cb[g] * cd[g, c]
                tdd[c] -= cd[g, c] * cd[g, c]
            v = us / sj if sj > 0 else 0.0
            ca[g] -= wi
            cb[g] += wi * (v - rb[i])
            for c in range(k):
                uf = AF[j, c] + rb[i] * F[j, c] + rd[i, c]
                if cz == c + 1:
                    uf += S[j - 1] / nr
                gk = uf - v * F[j, c]
                cd[g, c] += wi * (gk - rd[i, c])
            taa += ca[g] * ca[g]
            tab += ca[g] * cb[g]
            tbb += cb[g] * cb[g]
            for c in range(k):
                tad[c] += ca[g] * cd[g, c]
                tbd[c] += cb[g] * cd[g, c]
                tdd[c] += cd[g, c] * cd[g, c]
        # the expansion cancels when the true variance is ~0 (e.g. F = 1 at the end): values within
        # round-off of the terms' size are 0
        a_ = A[j]
        t1 = a_ * a_ * taa
        t2 = 2.0 * a_ * sj * tab
        t3 = sj * sj * tbb
        vs = t1 + t2 + t3
        var_s[j - 1] = vs if vs > _NOISE * (abs(t1) + abs(t2) + abs(t3)) else 0.0
        for c in range(k):
            af = AF[j, c]
            f = F[j, c]
            u1 = af * af * taa
            u2 = f * f * tbb
            u3 = tdd[c]
            u4 = 2.0 * af * f * tab
            u5 = 2.0 * af * tad[c]
            u6 = 2.0 * f * tbd[c]
            vf = u1 + u2 + u3 + u4 + u5 + u6
            scale = abs(u1) + abs(u2) + abs(u3) + abs(u4) + abs(u5) + abs(u6)
            var_f[j - 1, c] = vf if vf > _NOISE * scale else 0.0
        if sj <= 0.0:
            var_s[j - 1] = 0.0
            frozen = j - 1
    return S[1:], F[1:], var_s, var_f
