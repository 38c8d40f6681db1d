"""Covariates for :func:`oncosurg.stats.cox.coxph`: columns in, design matrix out (private).

Numeric columns pass through; categorical ones (pandas ``Categorical``, polars ``Categorical`` /
``Enum``) are expanded as R's ``factor()`` in a model formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from oncosurg.stats._checks import SurvivalInputError, r_level_order, show


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):
        try:
            return np.asarray(x.to_numpy())
        except TypeError:  # pragma: no cover - exotic series types
            pass
    return np.asarray(x)


def _rows(idx: np.ndarray, limit: int = 5) -> str:
    idx = np.asarray(idx).ravel()
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    return f"row{'s' if idx.size > 1 else ''} {shown}{more} (0-based)"


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return v is not None


def _covariate_columns(X: Any, names: Sequence[str] | None) -> tuple[list[str], list[Any]]:
    if isinstance(X, Mapping):
        cols = list(X.keys())
        return [str(c) for c in cols], [X[c] for c in cols]
    if hasattr(X, "columns") and hasattr(X, "__getitem__") and not isinstance(X, np.ndarray):
        cols = list(X.columns)  # pandas or polars DataFrame
        return [str(c) for c in cols], [X[c] for c in cols]
    arr = _to_numpy(X)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise SurvivalInputError(f"covariates must be a 2-D array (n, p), got shape {arr.shape}")
    p = arr.shape[1]
    if names is None:
        names = [f"x{j + 1}" for j in range(p)]
    return list(names), [arr[:, j] for j in range(p)]


def _categorical(col: Any) -> tuple[list[Any], list[Any]] | None:
    """(levels in order, values) of a pandas Categorical or polars Categorical/Enum column, else None."""
    dtype = getattr(col, "dtype", None)
    if dtype is None:
        return None
    if str(dtype) == "category" and hasattr(col, "cat"):  # pandas
        cats = [c.item() if hasattr(c, "item") else c for c in col.cat.categories]
        return cats, [None if v != v else v for v in col.tolist()]
    name = str(dtype)
    if name.startswith(("Categorical", "Enum")) and hasattr(col, "to_list"):  # polars
        vals = col.to_list()
        if name.startswith("Enum"):
            levels = list(dtype.categories.to_list())
        else:
            levels = r_level_order(sorted({v for v in vals if v is not None}, key=str))
        return levels, vals
    return None


def _expand_categorical(
    nm: str, levels: list[Any], vals: list[Any], n: int, *, keep_unused: bool = False
) -> tuple[np.ndarray, list[str], list[Any]]:
    """R's ``factor`` in a model formula: one 0/1 column per level except the first (the reference),
    named ``paste0(name, level)``.  Unused levels are dropped first (as ``droplevels``)."""
    if len(vals) != n:
        raise SurvivalInputError(f"covariate '{nm}' has {len(vals)} values but 'time' has {n}")
    miss = [i for i, v in enumerate(vals) if v is None or (isinstance(v, float) and v != v)]
    if miss:
        raise SurvivalInputError(
            f"covariate '{nm}' has missing values at {_rows(np.array(miss))}; "
            "remove those rows first (R's coxph drops them silently)"
        )
    used = set(vals)
    if not keep_unused:
        levels = [lv for lv in levels if lv in used]
    elif not used <= set(levels):
        bad = next(v for v in vals if v not in set(levels))
        raise SurvivalInputError(f"covariate '{nm}': level {show(bad)} was not in the fitted data.")
    if len(levels) < 2:
        shown = show(levels[0]) if levels else "none"
        raise SurvivalInputError(
            f"covariate '{nm}' is categorical with a single level in the data ({shown}); "
            "it carries no information: drop it."
        )
    index = {lv: k for k, lv in enumerate(levels)}
    code = np.fromiter((index[v] for v in vals), dtype=np.int64, count=n)
    cols = np.zeros((n, len(levels) - 1))
    for k in range(1, len(levels)):
        cols[:, k - 1] = code == k
    return cols, [f"{nm}{lv}" for lv in levels[1:]], levels


def _design(
    X: Any, names: Sequence[str] | None, n: int, levels_out: dict[str, list[Any]] | None = None
) -> tuple[np.ndarray, list[str], list[tuple[str, list[int]]]]:
    """Covariate matrix, its column names and the terms (input column -> design columns).

    Categorical columns (pandas ``Categorical``, polars ``Categorical`` / ``Enum``) are expanded as
    R's ``factor()``: reference level first, one indicator per other level."""
    colnames, cols = _covariate_columns(X, names)
    if names is not None:
        if len(names) != len(cols):
            raise SurvivalInputError(f"'names' has {len(names)} entries but there are {len(cols)} covariates")
        colnames = [str(s) for s in names]
    if len(cols) == 0:
        raise SurvivalInputError("no covariates given; coxph needs at least one column in X")
    if len(set(colnames)) != len(colnames):
        dup = sorted({c for c in colnames if colnames.count(c) > 1})
        raise SurvivalInputError(f"duplicate covariate names: {', '.join(dup)}")
    blocks: list[np.ndarray] = []
    out_names: list[str] = []
    terms: list[tuple[str, list[int]]] = []
    for nm, col in zip(colnames, cols, strict=True):
        cat = _categorical(col)
        if cat is not None:
            block, bnames, used = _expand_categorical(nm, cat[0], cat[1], n)
            if levels_out is not None:
                levels_out[nm] = used
            terms.append((nm, list(range(len(out_names), len(out_names) + len(bnames)))))
            blocks.append(block)
            out_names.extend(bnames)
            continue
        arr = _to_numpy(col)
        if arr.ndim != 1:
            raise SurvivalInputError(f"covariate '{nm}' must be one-dimensional, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            bad = next((v for v in arr if not (_is_number(v) and not isinstance(v, str))), None)
            raise SurvivalInputError(
                f"covariate '{nm}' is not numeric (dtype {arr.dtype}, e.g. value {show(bad)}); "
                "encode categories as 0/1 indicator columns, or pass a pandas Categorical "
                "(expanded as R's factor())"
            )
        if arr.shape[0] != n:
            raise SurvivalInputError(f"covariate '{nm}' has {arr.shape[0]} values but 'time' has {n}")
        colv = arr.astype(np.float64)
        bad = ~np.isfinite(colv)
        if bad.any():
            raise SurvivalInputError(
                f"covariate '{nm}' has missing or infinite values at {_rows(np.flatnonzero(bad))}; "
                "remove those rows first (R's coxph drops them silently)"
            )
        terms.append((nm, [len(out_names)]))
        blocks.append(colv.reshape(-1, 1))
        out_names.append(nm)
    if len(set(out_names)) != len(out_names):
        dup = sorted({c for c in out_names if out_names.count(c) > 1})
        raise SurvivalInputError(f"duplicate covariate names after expanding categories: {', '.join(dup)}")
    return np.hstack(blocks) if len(blocks) > 1 else blocks[0], out_names, terms


def newdata_matrix(newdata: Any, names: Sequence[str], terms: Sequence[tuple[str, Sequence[int]]],
                   levels: dict[str, list[Any]]) -> np.ndarray:
    """Rows of ``newdata`` as a design matrix of a fitted model: columns by the model's input names
    (categoricals expanded with the fitted levels; a plain value is taken as a level) or by its
    design-column names; a 2-D array is taken as the design matrix itself."""
    p = len(names)
    if not isinstance(newdata, Mapping) and not hasattr(newdata, "columns"):
        arr = np.atleast_2d(np.asarray(newdata, dtype=np.float64))
        if arr.shape[1] != p:
            raise SurvivalInputError(f"newdata has {arr.shape[1]} columns; the model has {p} ({', '.join(names)}).")
        return arr
    cols = {str(k): newdata[k] for k in (newdata.keys() if isinstance(newdata, Mapping) else newdata.columns)}
    first = next(iter(cols.values()), None)
    m = len(np.atleast_1d(_to_numpy(first))) if first is not None else 0
    out = np.zeros((m, p))
    for term, idx in terms:
        if term in levels:
            if term in cols:
                vals = _categorical(cols[term])
                raw = vals[1] if vals is not None else list(np.atleast_1d(_to_numpy(cols[term])).tolist())
                block, _, _ = _expand_categorical(term, levels[term], raw, m, keep_unused=True)
                out[:, list(idx)] = block
                continue
            missing = [names[j] for j in idx if names[j] not in cols]
            if missing:
                raise SurvivalInputError(f"newdata has no column '{term}' (or {', '.join(missing)}).")
            for j in idx:
                out[:, j] = np.asarray(_to_numpy(cols[names[j]]), dtype=np.float64)
            continue
        j = idx[0]
        if term not in cols:
            raise SurvivalInputError(f"newdata has no column '{term}'; it needs every covariate of the model.")
        out[:, j] = np.asarray(_to_numpy(cols[term]), dtype=np.float64)
    if not np.isfinite(out).all():
        raise SurvivalInputError("newdata has missing or infinite covariate values.")
    return out
