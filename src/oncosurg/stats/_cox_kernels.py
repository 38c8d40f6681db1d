"""Numba-compiled inner loops for the Cox model (private).

Why numba: the Cox partial likelihood, its score and its information matrix are sums over risk
sets.  With the data sorted once by time, one backward sweep accumulates the running sums
``sum exp(xb)``, ``sum x exp(xb)`` and ``sum x x' exp(xb)`` and applies Efron's tie correction per
distinct event time.  That sweep is inherently sequential (each distinct time depends on the running
sums), branches on ties and strata, and must not allocate n x p x p temporaries; in numpy it would
need ``cumsum`` of an (n, p, p) array (200 MB per iteration at 1e6 rows and 5 covariates) plus
Python-level loops over tie groups, and the counting-process sweep (rows leave the risk set at
their start time) has no vectorised form at all.  A compiled loop does it in O(n p^2) time with O(p^2)
memory, which is what R's C code (coxfit6.c, agfit4.c) does.  The same holds for Harrell's
concordance, which needs a balanced-tree (here a Fenwick tree) sweep over the sorted times.

All kernels are ``cache=True`` so the compilation cost (a few seconds) is paid once per machine.

The algorithms follow R survival 3.5.3: ``coxfit6_iter`` (right-censored), ``agfit4``
(counting-process, add-at-stop / remove-at-start sweep) and ``concordance3`` / ``concordance4``
(Harrell's C and the influence terms that give its standard error).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def cox_right_iter(time, status, strat, X, beta, efron, wt):  # pragma: no cover - compiled
    """Loglik, score and information at ``beta`` for right-censored data.

    Rows must be sorted by (stratum, time) ascending; ``X`` is (n, p) C-contiguous, already centred
    and scaled; ``wt`` are the case weights.  Mirrors ``coxfit6_iter`` (survival/src/coxfit6.c).
    Returns (loglik, u[p], imat[p, p]) with imat full symmetric.
    """
    n, p = X.shape
    u = np.zeros(p)
    imat = np.zeros((p, p))
    a = np.zeros(p)
    a2 = np.zeros(p)
    cmat = np.zeros((p, p))
    cmat2 = np.zeros((p, p))
    loglik = 0.0
    denom = 0.0
    person = n - 1
    while person >= 0:
        if person == n - 1 or strat[person] != strat[person + 1]:
            denom = 0.0
            for i in range(p):
                a[i] = 0.0
                for j in range(p):
                    cmat[i, j] = 0.0
        dtime = time[person]
        cur = strat[person]
        ndead = 0
        deadwt = 0.0
        denom2 = 0.0
        while person >= 0 and time[person] == dtime and strat[person] == cur:
            zbeta = 0.0
            for i in range(p):
                zbeta += beta[i] * X[person, i]
            w = wt[person]
            risk = math.exp(zbeta) * w
            if status[person] == 0:
                denom += risk
                for i in range(p):
                    xi = risk * X[person, i]
                    a[i] += xi
                    for j in range(i + 1):
                        cmat[i, j] += xi * X[person, j]
            else:
                ndead += 1
                deadwt += w
                denom2 += risk
                loglik += w * zbeta
                for i in range(p):
                    xi = risk * X[person, i]
                    u[i] += w * X[person, i]
                    a2[i] += xi
                    for j in range(i + 1):
                        cmat2[i, j] += xi * X[person, j]
            person -= 1
        if ndead > 0:
            if efron == 0 or ndead == 1:
                denom += denom2
                loglik -= deadwt * math.log(denom)
                for i in range(p):
                    a[i] += a2[i]
                    temp2 = a[i] / denom
                    u[i] -= deadwt * temp2
                    for j in range(i + 1):
                        cmat[i, j] += cmat2[i, j]
                        imat[j, i] += deadwt * (cmat[i, j] - temp2 * a[j]) / denom
            else:
                wtave = deadwt / ndead
                for _k in range(ndead):
                    denom += denom2 / ndead
                    loglik -= wtave * math.log(denom)
                    for i in range(p):
                        a[i] += a2[i] / ndead
                        temp2 = a[i] / denom
                        u[i] -= wtave * temp2
                        for j in range(i + 1):
                            cmat[i, j] += cmat2[i, j] / ndead
                            imat[j, i] += wtave * (cmat[i, j] - temp2 * a[j]) / denom
            for i in range(p):
                a2[i] = 0.0
                for j in range(p):
                    cmat2[i, j] = 0.0
    for i in range(p):
        for j in range(i):
            imat[i, j] = imat[j, i]
    return loglik, u, imat


@njit(cache=True, nogil=True)
def cox_counting_iter(start, stop, event, strat, X, beta, sort1, sort2, nused, efron, wt):  # pragma: no cover
    """Loglik, score and information for counting-process (start, stop] data.

    ``sort2`` orders rows by (ignored, stratum, -stop), ``sort1`` by (ignored, stratum, -start);
    only the first ``nused`` entries are used.  Mirrors the accumulation loop of ``agfit4``:
    rows enter the risk set at their stop time and leave once the current event time is <= start.
    """
    n, p = X.shape
    eta = np.zeros(n)
    for k in range(nused):
        r = sort2[k]
        z = 0.0
        for i in range(p):
            z += beta[i] * X[r, i]
        eta[r] = z
    u = np.zeros(p)
    imat = np.zeros((p, p))
    a = np.zeros(p)
    a2 = np.zeros(p)
    cmat = np.zeros((p, p))
    cmat2 = np.zeros((p, p))
    newlk = 0.0
    person = 0
    indx1 = 0
    recenter = 0.0
    denom = 0.0
    nrisk = 0
    etasum = 0.0
    dtime = 0.0
    if nused == 0:
        return newlk, u, imat
    istrat = strat[sort2[0]]
    while person < nused:
        k = person
        while k < nused:
            r = sort2[k]
            if strat[r] != istrat:
                istrat = strat[r]
                denom = 0.0
                nrisk = 0
                etasum = 0.0
                for i in range(p):
                    a[i] = 0.0
                    for j in range(p):
                        cmat[i, j] = 0.0
                person = k
                indx1 = k
            if event[r] == 1:
                dtime = stop[r]
                break
            k += 1
        if k == nused:
            break
        # remove subjects whose start time is >= the event time
        while indx1 < nused:
            r1 = sort1[indx1]
            if start[r1] < dtime or strat[r1] != istrat:
                break
            nrisk -= 1
            if nrisk == 0:
                etasum = 0.0
                denom = 0.0
                for i in range(p):
                    a[i] = 0.0
                    for j in range(i + 1):
                        cmat[i, j] = 0.0
            else:
                etasum -= eta[r1]
                risk = math.exp(eta[r1] - recenter) * wt[r1]
                denom -= risk
                for i in range(p):
                    xi = risk * X[r1, i]
                    a[i] -= xi
                    for j in range(i + 1):
                        cmat[i, j] -= xi * X[r1, j]
            indx1 += 1
        # add the subjects at risk from this stop time
        denom2 = 0.0
        deaths = 0
        meanwt = 0.0
        for i in range(p):
            a2[i] = 0.0
            for j in range(p):
                cmat2[i, j] = 0.0
        while person < nused:
            r = sort2[person]
            if strat[r] != istrat or stop[r] < dtime:
                break
            nrisk += 1
            etasum += eta[r]
            if abs(etasum / nrisk - recenter) > 200.0:
                temp = etasum / nrisk - recenter
                recenter = etasum / nrisk
                if denom > 0:
                    temp = math.exp(-temp)
                    denom *= temp
                    for i in range(p):
                        a[i] *= temp
                        for j in range(p):
                            cmat[i, j] *= temp
            risk = math.exp(eta[r] - recenter) * wt[r]
            if event[r] == 1:
                deaths += 1
                meanwt += wt[r]
                denom2 += risk
                newlk += wt[r] * (eta[r] - recenter)
                for i in range(p):
                    xi = risk * X[r, i]
                    u[i] += wt[r] * X[r, i]
                    a2[i] += xi
                    for j in range(i + 1):
                        cmat2[i, j] += xi * X[r, j]
            else:
                denom += risk
                for i in range(p):
                    xi = risk * X[r, i]
                    a[i] += xi
                    for j in range(i + 1):
                        cmat[i, j] += xi * X[r, j]
            person += 1
        if efron == 0 or deaths == 1:
            denom += denom2
            newlk -= meanwt * math.log(denom)
            for i in range(p):
                a[i] += a2[i]
                temp = a[i] / denom
                u[i] -= meanwt * temp
                for j in range(i + 1):
                    cmat[i, j] += cmat2[i, j]
                    imat[j, i] += meanwt * ((cmat[i, j] - temp * a[j]) / denom)
        else:
            meanwt /= deaths
            for _k in range(deaths):
                denom += denom2 / deaths
                newlk -= meanwt * math.log(denom)
                for i in range(p):
                    a[i] += a2[i] / deaths
                    temp = a[i] / denom
                    u[i] -= meanwt * temp
                    for j in range(i + 1):
                        cmat[i, j] += cmat2[i, j] / deaths
                        imat[j, i] += meanwt * ((cmat[i, j] - temp * a[j]) / denom)
    for i in range(p):
        for j in range(i):
            imat[i, j] = imat[j, i]
    return newlk, u, imat


# ----------------------------------------------------------------------------------------------
# Concordance (Harrell's C as survival::concordancefit computes it, timewt = "n", unit weights).
# R keeps the risk scores in a balanced binary tree; a Fenwick tree over the ranks gives the same
# three sums (weight with larger score, smaller score, equal score) in O(log m).
# ----------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _fw_add(tree, node, r, w):  # pragma: no cover
    node[r] += w
    m = tree.shape[0] - 1
    i = r + 1
    while i <= m:
        tree[i] += w
        i += i & (-i)


@njit(cache=True, nogil=True, inline="always")
def _fw_prefix(tree, r):  # pragma: no cover
    """Sum of weights of ranks < r."""
    s = 0.0
    i = r
    while i > 0:
        s += tree[i]
        i -= i & (-i)
    return s


@njit(cache=True, nogil=True, inline="always")
def _fw_clear(tree, node, r):  # pragma: no cover
    node[r] = 0.0
    m = tree.shape[0] - 1
    i = r + 1
    while i <= m:
        tree[i] = 0.0
        i += i & (-i)


@njit(cache=True, nogil=True)
def concordance_kernel(start, stop, status, rank, strat, sort_stop, sort_start, nrank, counting, wt):

    """Counts (concordant, discordant, tied.x, tied.y, tied.xy) and per-row influence columns 0-2.

    ``sort_stop`` orders rows by (stratum, -stop, status, rank); ``sort_start`` by
    (stratum, -start) (counting-process data only).  Port of concordance3 / concordance4 with case
    weights ``wt``, and without the residual / Cox-variance outputs, which coxph does not report.
    The counts are "larger score survives longer" orientation, as in R before ``reverse=TRUE``.
    """
    n = stop.shape[0]
    count = np.zeros(5)
    imat = np.zeros((n, 3))
    tw = np.zeros(nrank + 1)
    nw = np.zeros(nrank)
    dtw = np.zeros(nrank + 1)
    dnw = np.zeros(nrank)
    ttot = 0.0  # total weight in the risk-set tree
    dtot = 0.0  # total weight in the event tree
    i = 0
    i2 = 0
    while i < n:
        s = strat[sort_stop[i]]
        # find the end of this stratum
        send = i
        while send < n and strat[sort_stop[send]] == s:
            send += 1
        sstart = i
        while i < send:
            ii = sort_stop[i]
            if status[ii] == 0:
                r = rank[ii]
                less = _fw_prefix(dtw, r)
                eq = dnw[r]
                tot = dtot
                imat[ii, 0] -= less
                imat[ii, 1] -= tot - less - eq
                imat[ii, 2] -= eq
                _fw_add(tw, nw, r, wt[ii])
                ttot += wt[ii]
                i += 1
            else:
                if counting:
                    while i2 < send and start[sort_start[i2]] >= stop[ii]:
                        jj = sort_start[i2]
                        r = rank[jj]
                        less = _fw_prefix(dtw, r)
                        eq = dnw[r]
                        tot = dtot
                        imat[jj, 0] += less
                        imat[jj, 1] += tot - less - eq
                        imat[jj, 2] += eq
                        _fw_add(tw, nw, r, -wt[jj])
                        ttot -= wt[jj]
                        i2 += 1
                ndeath = 0
                dwt = 0.0
                dwt2 = 0.0
                xsave = rank[ii]
                j = i
                while j < send and stop[sort_stop[j]] == stop[ii]:
                    jj = sort_stop[j]
                    ndeath += 1
                    count[3] += wt[jj] * dwt
                    dwt += wt[jj]
                    if rank[jj] != xsave:
                        dwt2 = 0.0
                        xsave = rank[jj]
                    count[4] += wt[jj] * dwt2
                    dwt2 += wt[jj]
                    r = rank[jj]
                    less = _fw_prefix(tw, r)
                    eq = nw[r]
                    greater = ttot - less - eq
                    count[0] += wt[jj] * greater
                    count[1] += wt[jj] * less
                    count[2] += wt[jj] * eq
                    imat[jj, 0] += greater
                    imat[jj, 1] += less
                    imat[jj, 2] += eq
                    _fw_add(dtw, dnw, r, wt[jj])
                    dtot += wt[jj]
                    j += 1
                for j in range(i, i + ndeath):
                    jj = sort_stop[j]
                    r = rank[jj]
                    less = _fw_prefix(dtw, r)
                    eq = dnw[r]
                    tot = dtot
                    imat[jj, 0] -= less
                    imat[jj, 1] -= tot - less - eq
                    imat[jj, 2] -= eq
                    _fw_add(tw, nw, r, wt[jj])
                    ttot += wt[jj]
                i += ndeath
        # finish the influence of this stratum (rows still in the risk set)
        if counting:
            while i2 < send:
                jj = sort_start[i2]
                r = rank[jj]
                less = _fw_prefix(dtw, r)
                eq = dnw[r]
                tot = dtot
                imat[jj, 0] += less
                imat[jj, 1] += tot - less - eq
                imat[jj, 2] += eq
                i2 += 1
        else:
            for k in range(sstart, send):
                jj = sort_stop[k]
                r = rank[jj]
                less = _fw_prefix(dtw, r)
                eq = dnw[r]
                tot = dtot
                imat[jj, 0] += less
                imat[jj, 1] += tot - less - eq
                imat[jj, 2] += eq
        # clear both trees for the next stratum
        for k in range(sstart, send):
            r = rank[sort_stop[k]]
            _fw_clear(tw, nw, r)
            _fw_clear(dtw, dnw, r)
        ttot = 0.0
        dtot = 0.0
    count[3] -= count[4]
    return count, imat


# ----------------------------------------------------------------------------------------------
# Score residuals (R's residuals.coxph(type = "score")), the basis of dfbeta and the robust variance
# ----------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def cox_score_resid(time, status, strat, X, score, wt, efron):  # pragma: no cover - compiled
    """Port of ``coxscore2`` (survival/src/coxscore2.c): rows sorted by (stratum, time, -status),
    ``score = exp(linear predictor)``; returns the (n, p) unweighted score residuals."""
    n, p = X.shape
    resid = np.zeros((n, p))
    a = np.zeros(p)
    a2 = np.zeros(p)
    xhaz = np.zeros(p)
    denom = 0.0
    cumhaz = 0.0
    stratastart = n - 1
    currentstrata = strat[n - 1]
    i = n - 1
    while i >= 0:
        newtime = time[i]
        deaths = 0
        e_denom = 0.0
        meanwt = 0.0
        for j in range(p):
            a2[j] = 0.0
        while i >= 0 and time[i] == newtime and strat[i] == currentstrata:
            risk = score[i] * wt[i]
            denom += risk
            for j in range(p):
                resid[i, j] = score[i] * (X[i, j] * cumhaz - xhaz[j])
                a[j] += risk * X[i, j]
            if status[i] == 1:
                deaths += 1
                e_denom += risk
                meanwt += wt[i]
                for j in range(p):
                    a2[j] += risk * X[i, j]
            i -= 1
        if deaths > 0:
            if deaths < 2 or efron == 0:
                hazard = meanwt / denom
                cumhaz += hazard
                for j in range(p):
                    xbar = a[j] / denom
                    xhaz[j] += xbar * hazard
                    for k in range(i + 1, i + deaths + 1):
                        resid[k, j] += X[k, j] - xbar
            else:
                meanwt /= deaths
                for dd in range(deaths):
                    downwt = dd / deaths
                    temp = denom - downwt * e_denom
                    hazard = meanwt / temp
                    cumhaz += hazard
                    for j in range(p):
                        xbar = (a[j] - downwt * a2[j]) / temp
                        xhaz[j] += xbar * hazard
                        for k in range(i + 1, i + deaths + 1):
                            temp2 = X[k, j] - xbar
                            resid[k, j] += temp2 / deaths
                            resid[k, j] += temp2 * score[k] * hazard * downwt
        if i < 0 or strat[i] != currentstrata:
            for k in range(stratastart, i, -1):
                for j in range(p):
                    resid[k, j] += score[k] * (xhaz[j] - X[k, j] * cumhaz)
            denom = 0.0
            cumhaz = 0.0
            for j in range(p):
                a[j] = 0.0
                xhaz[j] = 0.0
            stratastart = i
            if i >= 0:
                currentstrata = strat[i]
    return resid


@njit(cache=True, nogil=True)
def cox_score_resid_counting(start, stop, event, strat, X, score, wt, sort1, efron):  # pragma: no cover
    """Port of ``agscore3`` (survival/src/agscore3.c): rows sorted by (stratum, stop, -event),
    ``sort1`` = order(stratum, start) of those rows; returns the (n, p) score residuals."""
    n, p = X.shape
    resid = np.zeros((n, p))
    a = np.zeros(p)
    a2 = np.zeros(p)
    mean = np.zeros(p)
    mh1 = np.zeros(p)
    mh2 = np.zeros(p)
    mh3 = np.zeros(p)
    xhaz = np.zeros(p)
    cumhaz = 0.0
    denom = 0.0
    i1 = n - 1
    currentstrata = strat[n - 1]
    person = n - 1
    while person >= 0:
        dtime = stop[person]
        if strat[person] != currentstrata:
            while i1 >= 0 and sort1[i1] > person:
                k = sort1[i1]
                for j in range(p):
                    resid[k, j] -= score[k] * (cumhaz * X[k, j] - xhaz[j])
                i1 -= 1
            cumhaz = 0.0
            denom = 0.0
            for j in range(p):
                a[j] = 0.0
                xhaz[j] = 0.0
            currentstrata = strat[person]
        else:
            while i1 >= 0 and start[sort1[i1]] >= dtime:
                k = sort1[i1]
                if strat[k] != currentstrata:
                    break
                risk = score[k] * wt[k]
                denom -= risk
                for j in range(p):
                    resid[k, j] -= score[k] * (cumhaz * X[k, j] - xhaz[j])
                    a[j] -= risk * X[k, j]
                i1 -= 1
        e_denom = 0.0
        meanwt = 0.0
        deaths = 0
        for j in range(p):
            a2[j] = 0.0
        while person >= 0 and stop[person] == dtime:
            if strat[person] != currentstrata:
                break
            for j in range(p):
                resid[person, j] = (X[person, j] * cumhaz - xhaz[j]) * score[person]
            risk = score[person] * wt[person]
            denom += risk
            for j in range(p):
                a[j] += risk * X[person, j]
            if event[person] == 1:
                deaths += 1
                e_denom += risk
                meanwt += wt[person]
                for j in range(p):
                    a2[j] += risk * X[person, j]
            person -= 1
        if deaths > 0:
            if deaths < 2 or efron == 0:
                hazard = meanwt / denom
                cumhaz += hazard
                for j in range(p):
                    mean[j] = a[j] / denom
                    xhaz[j] += mean[j] * hazard
                    for k in range(person + 1, person + deaths + 1):
                        resid[k, j] += X[k, j] - mean[j]
            else:
                for j in range(p):
                    mh1[j] = 0.0
                    mh2[j] = 0.0
                    mh3[j] = 0.0
                meanwt /= deaths
                for dd in range(deaths):
                    downwt = dd / deaths
                    d2 = denom - downwt * e_denom
                    hazard = meanwt / d2
                    cumhaz += hazard
                    for j in range(p):
                        mean[j] = (a[j] - downwt * a2[j]) / d2
                        xhaz[j] += mean[j] * hazard
                        mh1[j] += hazard * downwt
                        mh2[j] += mean[j] * hazard * downwt
                        mh3[j] += mean[j] / deaths
                for k in range(person + 1, person + deaths + 1):
                    for j in range(p):
                        resid[k, j] += (X[k, j] - mh3[j]) + score[k] * (X[k, j] * mh1[j] - mh2[j])
    while i1 >= 0:
        k = sort1[i1]
        for j in range(p):
            resid[k, j] -= score[k] * (X[k, j] * cumhaz - xhaz[j])
        i1 -= 1
    return resid


# ----------------------------------------------------------------------------------------------
# Proportional-hazards test (R's cox.zph: zph1.c / zph2.c)
# ----------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def zph_kernel(start, stop, status, strat, X, eta, wt, gt, sort1, sort2, efron):  # pragma: no cover
    """Score and information of the model with the extra covariates ``g(t) x`` at their zero
    coefficients, plus the Schoenfeld residuals: a port of ``zph2`` (``zph1`` is its special case
    with every start before the first time).

    ``sort2`` orders rows by (-stratum, -stop), ``sort1`` by (-stratum, -start); ``gt`` is the
    centred transformed time of each row.  Returns (u (2p), imat (2p, 2p), schoen (nevent, p),
    rows (nevent,)) with the residuals in increasing (stratum, time) order, as R's.
    """
    n, p = X.shape
    nevent = 0
    for i in range(n):
        nevent += status[i]
    u = np.zeros(2 * p)
    imat = np.zeros((2 * p, 2 * p))
    schoen = np.zeros((nevent, p))
    rows = np.zeros(nevent, np.int64)
    a = np.zeros(p)
    a2 = np.zeros(p)
    cmat = np.zeros((p, p))
    cmat2 = np.zeros((p, p))
    keep = np.zeros(n, np.bool_)
    person = 0
    indx1 = 0
    denom = 0.0
    nrisk = 0
    etasum = 0.0
    cstrat = -1
    recenter = 0.0
    dtime = 0.0
    timewt = 0.0
    while person < n:
        k = person
        while k < n:
            if strat[sort2[k]] != cstrat:
                cstrat = strat[sort2[k]]
                denom = 0.0
                nrisk = 0
                etasum = 0.0
                for i in range(p):
                    a[i] = 0.0
                    for j in range(p):
                        cmat[i, j] = 0.0
                person = k
                indx1 = k
            r = sort2[k]
            if status[r] == 1:
                dtime = stop[r]
                timewt = gt[r]
                break
            k += 1
        if k == n:
            break
        while indx1 < n:
            p1 = sort1[indx1]
            if strat[p1] != cstrat or start[p1] < dtime:
                break
            indx1 += 1
            if not keep[p1]:
                continue
            nrisk -= 1
            if nrisk == 0:
                etasum = 0.0
                denom = 0.0
                for i in range(p):
                    a[i] = 0.0
                    for j in range(i + 1):
                        cmat[i, j] = 0.0
            else:
                etasum -= eta[p1]
                risk = math.exp(eta[p1] - recenter) * wt[p1]
                denom -= risk
                for i in range(p):
                    a[i] -= risk * X[p1, i]
                    for j in range(i + 1):
                        cmat[i, j] -= risk * X[p1, i] * X[p1, j]
        denom2 = 0.0
        ndead = 0
        meanwt = 0.0
        for i in range(p):
            a2[i] = 0.0
            for j in range(p):
                cmat2[i, j] = 0.0
        while person < n:
            r = sort2[person]
            if strat[r] != cstrat or stop[r] < dtime:
                break
            etasum += eta[r]
            nrisk += 1
            if abs(etasum / nrisk - recenter) > 200.0:
                temp = etasum / nrisk - recenter
                recenter = etasum / nrisk
                if denom > 0:
                    temp = math.exp(-temp)
                    denom *= temp
                    for i in range(p):
                        a[i] *= temp
                        for j in range(p):
                            cmat[i, j] *= temp
            risk = math.exp(eta[r] - recenter) * wt[r]
            if status[r] == 1:
                nevent -= 1
                keep[r] = True
                ndead += 1
                denom2 += risk
                meanwt += wt[r]
                rows[nevent] = r
                for i in range(p):
                    u[i] += wt[r] * X[r, i]
                    u[i + p] += wt[r] * X[r, i] * timewt
                    a2[i] += risk * X[r, i]
                    schoen[nevent, i] = X[r, i]
                    for j in range(i + 1):
                        cmat2[i, j] += risk * X[r, i] * X[r, j]
            elif start[r] < dtime:
                keep[r] = True
                denom += risk
                for i in range(p):
                    a[i] += risk * X[r, i]
                    for j in range(i + 1):
                        cmat[i, j] += risk * X[r, i] * X[r, j]
            person += 1
        if efron == 0 or ndead == 1:
            denom += denom2
            for i in range(p):
                a[i] += a2[i]
                temp = a[i] / denom
                u[i] -= meanwt * temp
                u[i + p] -= meanwt * temp * timewt
                for j in range(i + 1):
                    cmat[i, j] += cmat2[i, j]
                    temp2 = meanwt * ((cmat[i, j] - temp * a[j]) / denom)
                    imat[j, i] += temp2
                    imat[j, i + p] += temp2 * timewt
                    imat[j + p, i + p] += temp2 * timewt * timewt
                for j in range(ndead):
                    schoen[nevent + j, i] -= temp
        else:
            meanwt /= ndead
            for i in range(p):
                tmean = 0.0
                for kk in range(ndead):
                    temp = (kk + 1) / ndead
                    tmean += (a[i] + a2[i] * temp) / (denom + denom2 * temp)
                for j in range(ndead):
                    schoen[nevent + j, i] -= tmean / ndead
            for _kk in range(ndead):
                denom += denom2 / ndead
                for i in range(p):
                    a[i] += a2[i] / ndead
                    temp = a[i] / denom
                    u[i] -= meanwt * temp
                    u[i + p] -= meanwt * temp * timewt
                    for j in range(i + 1):
                        cmat[i, j] += cmat2[i, j] / ndead
                        temp2 = meanwt * ((cmat[i, j] - temp * a[j]) / denom)
                        imat[j, i] += temp2
                        imat[j, i + p] += temp2 * timewt
                        imat[j + p, i + p] += temp2 * timewt * timewt
    for i in range(p):
        for j in range(i):
            imat[i, j] = imat[j, i]
            imat[i, j + p] = imat[j, i + p]
            imat[i + p, j + p] = imat[j + p, i + p]
    for i in range(p):
        for j in range(p):
            imat[i + p, j] = imat[j, i + p]
    return u, imat, schoen, rows
