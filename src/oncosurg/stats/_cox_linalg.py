"""survival's generalised Cholesky routines (cholesky2.c, chsolve2.c, chinv2.c) and coxph.wtest (private)."""

from __future__ import annotations

import numpy as np


def _cholesky2(m: np.ndarray, toler: float) -> tuple[np.ndarray, int]:
    a = np.array(m, dtype=np.float64, copy=True)
    n = a.shape[0]
    a = np.triu(a) + np.triu(a, 1).T  # R reads the upper triangle
    diag = np.diag(a)
    eps = float(np.max(diag[np.isfinite(diag)], initial=0.0))
    eps = max(eps, 0.0)
    if eps == 0:
        return np.zeros_like(a), 0
    eps *= toler
    rank = 0
    nonneg = 1
    for i in range(n):
        pivot = a[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            a[i, i] = 0.0
            if pivot < -8 * eps:
                nonneg = -1
        else:
            rank += 1
            for j in range(i + 1, n):
                temp = a[j, i] / pivot
                a[j, i] = temp
                a[j, j] -= temp * temp * pivot
                for k in range(j + 1, n):
                    a[k, j] -= temp * a[k, i]
    return a, rank * nonneg


def _chsolve2(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.array(y, dtype=np.float64, copy=True)
    n = y.shape[0]
    for i in range(n):
        y[i] -= float(np.dot(y[:i], chol[i, :i]))
    for i in range(n - 1, -1, -1):
        if chol[i, i] == 0:
            y[i] = 0.0
        else:
            y[i] = y[i] / chol[i, i] - float(np.dot(y[i + 1 :], chol[i + 1 :, i]))
    return y


def _chinv2(chol: np.ndarray) -> np.ndarray:
    m = np.array(chol, dtype=np.float64, copy=True)
    n = m.shape[0]
    for i in range(n):
        if m[i, i] > 0:
            m[i, i] = 1.0 / m[i, i]
            for j in range(i + 1, n):
                m[j, i] = -m[j, i]
                for k in range(i):
                    m[j, k] += m[j, i] * m[i, k]
    for i in range(n):
        if m[i, i] == 0:
            m[:i, i] = 0.0
            m[i, i:] = 0.0
        else:
            for j in range(i + 1, n):
                temp = m[j, i] * m[j, j]
                m[i, j] = temp
                for k in range(i, j):
                    m[i, k] += temp * m[j, k]
    upper = np.triu(m)
    return upper + np.triu(upper, 1).T


def _wald(var: np.ndarray, b: np.ndarray, toler: float) -> tuple[float, int]:
    """``coxph.wtest``: b' V^-1 b with the generalised Cholesky, df = rank."""
    if b.size == 1:
        return float(b[0] * b[0] / var[0, 0]), 1
    chol, _ = _cholesky2(var, toler)
    df = int(np.sum(np.diag(chol) > 0))
    sol = _chsolve2(chol, b)
    return float(np.dot(b, sol)), df
