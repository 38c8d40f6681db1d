"""R's ``aeqSurv`` (``timefix = TRUE``, the default of survfit, survdiff and coxph), shared by every estimator.

Times that differ by at most ``sqrt(.Machine$double.eps)``, absolutely or relative to the mean of
the absolute distinct times, are the same time: each is replaced by the smallest member of its
run (``findInterval(x, cuts)``).  This matters for times computed in floating point (months =
days / 30.4375 from different origins, unit conversions): without it, R and we would disagree on
which deaths are tied.

The fast paths only pay one pass over the distinct times to learn that nothing needs merging.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

TOL = math.sqrt(np.finfo(np.float64).eps)  # R: sqrt(.Machine$double.eps)
_U1 = np.uint64(1)


def mean_abs(y: np.ndarray) -> float:
    """R's ``mean(abs(y))`` without overflow: R sums in long double (times near 1e308 do not overflow
    there); a plain float64 sum would be Inf, and every ``dy / Inf`` would count as a tie."""
    a = np.abs(y)
    with np.errstate(over="ignore"):
        m = float(np.mean(a))
    if not math.isfinite(m) and a.size:
        top = float(a.max())
        m = top * float(np.mean(a / top))
    return m


def _tied_mask(y: np.ndarray) -> np.ndarray:
    """R: dy <- diff(y); tied <- (dy <= tol) | (dy / mean(abs(y)) <= tol), on sorted distinct y."""
    dy = np.diff(y)
    return (dy <= TOL) | (dy / mean_abs(y) <= TOL)


@nb.njit(cache=True, nogil=True)
def _gap_stats(y):  # pragma: no cover - compiled
    """(smallest gap, mean |y|) of sorted distinct values, one pass, no temporaries."""
    m = y.shape[0]
    gap = np.inf
    total = 0.0
    top = 0.0
    for i in range(m):
        total += abs(y[i])
        top = max(top, abs(y[i]))
        if i > 0:
            gap = min(gap, y[i] - y[i - 1])
    if not np.isfinite(total) and top > 0:  # times near 1e308: scale (R sums in long double)
        total = 0.0
        for i in range(m):
            total += abs(y[i]) / top
        return gap, top * (total / m)
    return gap, total / m


def _suspect(gap: float, mean: float) -> bool:
    # conservative pre-check (a hair wider than R's test); the exact test follows when it fires
    return gap <= TOL or gap <= TOL * mean * (1 + 1e-9)


def tie_keep(y: np.ndarray) -> np.ndarray | None:
    """For sorted distinct times ``y``: a mask of the times that start a run (the cuts), or
    ``None`` when no two times are practically equal (the common case)."""
    if y.shape[0] < 2:
        return None
    yf = np.ascontiguousarray(y, dtype=np.float64)
    if not _suspect(*_gap_stats(yf)):
        return None
    tied = _tied_mask(yf)
    if not tied.any():
        return None
    return np.concatenate(([True], ~tied))


@nb.njit(cache=True, nogil=True)
def _merge_runs(times, n_risk, n_event, n_censor, mean, tol):  # pragma: no cover - compiled
    """Merge runs of practically-equal times in place; returns the new length.  Writes never pass
    reads, and ``dy`` is taken between consecutive original times, as R's ``diff(y)``."""
    m = times.shape[0]
    j = 0
    for i in range(1, m):
        dy = times[i] - times[i - 1]
        if dy <= tol or dy / mean <= tol:
            n_event[j] += n_event[i]
            n_censor[j] += n_censor[i]
        else:
            j += 1
            times[j] = times[i]
            n_risk[j] = n_risk[i]
            n_event[j] = n_event[i]
            n_censor[j] = n_censor[i]
    return j + 1


def merge_tied_counts(times: np.ndarray, n_risk: np.ndarray, n_event: np.ndarray, n_censor: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Counts at sorted distinct times → counts at merged times (a run's risk set is its first's),
    computed in place (the results are views of the inputs); ``None`` when nothing merges."""
    if times.shape[0] < 2:
        return None
    gap, mean = _gap_stats(times)  # no temporaries: this runs on every Kaplan-Meier
    if not _suspect(gap, mean):
        return None
    m = _merge_runs(times, n_risk, n_event, n_censor, mean, TOL)
    if m == times.shape[0]:
        return None
    return times[:m], n_risk[:m], n_event[:m], n_censor[:m]


def aeq_surv(*columns: np.ndarray) -> list[np.ndarray]:
    """R's ``aeqSurv`` on time columns taken together (``(start, stop)`` or ``time``)."""
    allt, inv = np.unique(np.concatenate(columns), return_inverse=True)
    finite = allt[np.isfinite(allt)]
    if finite.size < 2:
        return list(columns)
    tied = _tied_mask(finite)
    if not tied.any():
        return list(columns)
    cuts = finite[np.concatenate(([True], ~tied))]
    # findInterval(x, cuts) -> cuts[z]: the largest cut <= x
    merged = cuts[np.searchsorted(cuts, allt, side="right") - 1][inv.ravel()]
    out, k = [], 0
    for c in columns:
        out.append(merged[k : k + c.shape[0]].reshape(c.shape))
        k += c.shape[0]
    return out


@nb.njit(cache=True, nogil=True)
def _sorted_key_gap_stats(sk, lo):  # pragma: no cover - compiled
    """:func:`_gap_stats` over the distinct times of sorted ``bits(t) << 1 | event`` keys."""
    n = sk.shape[0]
    gap = np.inf
    total = 0.0
    m = 0
    prev_bits = np.uint64(0)
    prev = 0.0
    buf = np.empty(1, np.uint64)
    fbuf = buf.view(np.float64)  # reinterpret the time bits as float64
    top = 0.0
    for i in range(n):
        bits = (sk[i] + lo) >> _U1
        if m == 0 or bits != prev_bits:
            buf[0] = bits
            cur = fbuf[0]
            total += abs(cur)
            top = max(top, abs(cur))
            if m > 0:
                gap = min(gap, cur - prev)
            prev, prev_bits = cur, bits
            m += 1
    if m and not np.isfinite(total) and top > 0:  # times near 1e308 (R sums in long double)
        total = 0.0
        prev_bits = np.uint64(0)
        first = True
        for i in range(n):
            bits = (sk[i] + lo) >> _U1
            if first or bits != prev_bits:
                buf[0] = bits
                total += abs(fbuf[0]) / top
                prev_bits, first = bits, False
        return gap, top * (total / m)
    return gap, (total / m if m else 0.0)


def integer_range_needs_timefix(hi: int) -> bool:
    """Integer times 0..hi differ by >= 1, so they can only be 'tied' when the mean exceeds 1 / tol."""
    return hi * TOL >= 1.0


@nb.njit(cache=True, nogil=True)
def _remap_keys(sk, lo, mean, tol):  # pragma: no cover - compiled
    """Rewrite sorted ``bits(t) << 1 | event`` keys so each time becomes the first of its run
    (a monotone map: the keys stay sorted)."""
    buf = np.empty(1, np.uint64)
    fbuf = buf.view(np.float64)
    prev_bits = np.uint64(0)
    prev = 0.0
    cut_bits = np.uint64(0)
    first = True
    for i in range(sk.shape[0]):
        k = sk[i] + lo
        bits = k >> _U1
        if first or bits != prev_bits:
            buf[0] = bits
            cur = fbuf[0]
            if first:
                cut_bits = bits
            else:
                dy = cur - prev
                if not (dy <= tol or dy / mean <= tol):
                    cut_bits = bits
            prev, prev_bits, first = cur, bits, False
        sk[i] = ((cut_bits << _U1) | (k & _U1)) - lo


def timefix_sorted_keys(sk: np.ndarray, lo: np.uint64) -> bool:
    """Apply R's ``aeqSurv`` to sorted keys in place; returns whether anything changed."""
    if sk.shape[0] < 2:
        return False
    gap, mean = _sorted_key_gap_stats(sk, lo)
    if not _suspect(gap, mean):
        return False
    _remap_keys(sk, lo, mean, TOL)
    return True
