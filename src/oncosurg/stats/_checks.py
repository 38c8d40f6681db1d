"""Input validation shared by every estimator in :mod:`oncosurg.stats`.

Every check raises :class:`SurvivalInputError` (a ``ValueError``) with a message that names the
argument (or the CSV column, when the caller passes ``names``), states the rule that was broken,
shows the first offending row and says how to fix it.  The checks are written to cost a few
passes over the data at most (``min``/``max`` reductions propagate NaN, so one reduction finds
both NaN and negative values), because they run on registry-scale arrays.  Two checks are compiled
with numba (``cache=True``) because numpy needs several passes and temporaries for them: the 0/1
event check (one pass that also writes the bool result) and the encoding of integer-valued group
labels (counting instead of ``np.unique``'s sort).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np

__all__ = [
    "SurvivalData",
    "SurvivalInputError",
    "as_1d_array",
    "check_conf_level",
    "check_conf_type",
    "check_event",
    "check_group",
    "check_same_length",
    "check_survival_input",
    "check_time",
    "check_weights",
    "label",
    "r_collate_key",
    "r_level_order",
    "show",
]

CONF_TYPES = ("log", "log-log", "plain")


class SurvivalInputError(ValueError):
    """Invalid input to a survival estimator (the message names the column and the rule)."""


def label(arg: str, names: Mapping[str, str] | None = None) -> str:
    """How to refer to argument ``arg`` in a message: the CSV column name when known."""
    if names and not arg.startswith("_") and names.get(arg) is not None:
        return f"column '{names[arg]}' ({arg})"
    return f"argument '{arg}'"


def show(v: Any) -> str:
    """A value as the user wrote it, never numpy's repr (``-1.0``, not ``np.float64(-1.0)``)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return "missing (NaN)" if v != v else f"{v:g}" if abs(v) < 1e16 else repr(v)
    return repr(v)


# ICU root collation of printable ASCII (R's sort() / factor() order on builds with ICU, which
# includes the C.UTF-8 and en_US locales of Debian's R): space, punctuation, symbols, digits, then
# letters with case ignored at the first level.  Read from R 4.2.2: sort(intToUtf8(32:126, TRUE)).
_ICU_ASCII = (
    "32,95,45,44,59,58,33,63,46,39,34,40,41,91,93,123,125,64,42,47,92,38,35,37,96,94,43,60,61,62,124,126,"
    "36,48,49,50,51,52,53,54,55,56,57,97,65,98,66,99,67,100,68,101,69,102,70,103,71,104,72,105,73,106,"
    "74,107,75,108,76,109,77,110,78,111,79,112,80,113,81,114,82,115,83,116,84,117,85,118,86,119,87,120,"
    "88,121,89,122,90"
)
_PRIMARY: dict[str, int] = {}
for _rank, _code in enumerate(int(c) for c in _ICU_ASCII.split(",")):
    _PRIMARY.setdefault(chr(_code).lower(), _rank)


def r_collate_key(text: str) -> tuple:
    """Sort key giving R's ``sort()`` / ``factor()`` order of strings under ICU collation: letters
    compare without case first (``a, A, b, B``), then accents, then case (lower case first).  In a
    session with ``LC_COLLATE=C`` R sorts by code point instead (Python's plain ``sorted``)."""
    import unicodedata

    prim: list[int] = []
    sec: list[tuple[str, ...]] = []
    ter: list[int] = []
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch) and sec:
            sec[-1] = (*sec[-1], ch)
            continue
        low = ch.lower()
        prim.append(_PRIMARY.get(low, 1000 + ord(low)))
        sec.append(())
        ter.append(int(ch != low))
    return (tuple(prim), tuple(sec), tuple(ter))


def r_level_order(values: list[Any]) -> list[Any]:
    """Distinct values in R ``factor()`` level order: numbers (and booleans) ascending, strings in
    R's collation (:func:`r_collate_key`); a mix is compared as strings, as R coerces it."""
    if all(isinstance(v, int | float | bool | np.number | np.bool_) for v in values):
        return sorted(values)
    return sorted(values, key=lambda v: r_collate_key(str(v)))


def _first_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def where(i: int, names: Mapping[str, Any] | None = None) -> str:
    """'row i' (0-based index) or, when ``names["_rows"] == "csv"``, the CSV line number."""
    if names and names.get("_rows") == "csv":
        return f"line {i + 2}"
    return f"row {i}"


def as_1d_array(
    x: Any, arg: str, names: Mapping[str, str] | None = None, *, numeric: bool = True
) -> np.ndarray:
    """Convert a list / numpy array / pandas or polars Series to a 1-d numpy array.

    Missing values (None, pandas NA, polars null) become NaN for numeric input.  Non-numeric values
    raise :class:`SurvivalInputError` when ``numeric`` is true.
    """
    what = label(arg, names)
    if x is None:
        raise SurvivalInputError(f"{what} is missing: pass an array of values.")
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):
        try:  # pandas (nullable dtypes too) and polars
            arr = x.to_numpy()
        except TypeError:
            arr = np.asarray(x)
    else:
        arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise SurvivalInputError(f"{what} must be one-dimensional, got shape {arr.shape}.")
    if not numeric:
        return arr
    if arr.dtype.kind in "biuf":
        return arr
    # object / string arrays: convert element by element, None / NA -> NaN
    out = np.empty(arr.shape[0], dtype=np.float64)
    for i, v in enumerate(arr.tolist()):
        if v is None:
            out[i] = np.nan
            continue
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            if str(v).strip() in ("", "NA", "NaN", "nan", "<NA>", "null", "None"):
                out[i] = np.nan
                continue
            raise SurvivalInputError(
                f"{what} must be numeric; {where(i, names)} holds {v!r}. Convert the column to numbers "
                "(and code missing values as empty) before fitting."
            ) from None
    return out


def check_same_length(n: int, arr: np.ndarray, arg: str, names: Mapping[str, str] | None = None) -> None:
    if arr.shape[0] != n:
        raise SurvivalInputError(
            f"{label(arg, names)} has {arr.shape[0]} values but 'time' has {n}: "
            "every argument must have one value per row."
        )


def check_time(time: Any, arg: str = "time", names: Mapping[str, str] | None = None) -> np.ndarray:
    """Survival (stop) times: finite, non-missing and >= 0.  Returns an int or float64 array."""
    t = as_1d_array(time, arg, names)
    what = label(arg, names)
    if t.shape[0] == 0:
        raise SurvivalInputError(f"{what} is empty: there is no data to analyse (need at least one row).")
    if t.dtype.kind == "b":
        t = t.astype(np.int64)
    if t.dtype.kind in "iu":
        if t.dtype.kind == "i" and t.min() < 0:
            i = _first_row(t < 0)
            raise SurvivalInputError(
                f"{what} has negative times (first at {where(i, names)}: {t[i]}); "
                "survival times must be >= 0. "
                "Check the date arithmetic (end date before start date?)."
            )
        return t
    t = t.astype(np.float64, copy=False)
    lo, hi = t.min(), t.max()  # NaN propagates through min/max
    if np.isnan(lo) or np.isnan(hi):
        i = _first_row(np.isnan(t))
        raise SurvivalInputError(
            f"{what} has missing (NaN) times (first at {where(i, names)}); every row needs a time. "
            "Drop the rows or complete the follow-up."
        )
    if lo < 0:
        i = _first_row(t < 0)
        raise SurvivalInputError(
            f"{what} has negative times (first at {where(i, names)}: {t[i]:g}); survival times must be >= 0. "
            "Check the date arithmetic (end date before start date?)."
        )
    if not np.isfinite(hi):
        i = _first_row(~np.isfinite(t))
        raise SurvivalInputError(
            f"{what} has infinite times (first at {where(i, names)}); survival times must be finite. "
            "Use the last follow-up time with event = 0 for patients still alive."
        )
    return t


@nb.njit(cache=True, nogil=True)
def _zero_one(e, out):  # pragma: no cover - compiled
    """out = (e == 1) for e in {0, 1}; returns the first row holding anything else (NaN too), or -1.

    Branch-free (0/1 in random order would defeat the branch predictor)."""
    ok = True
    for i in range(e.shape[0]):
        v = e[i]
        out[i] = v == 1
        ok &= (v == 0) | (v == 1)
    if ok:
        return -1
    for i in range(e.shape[0]):
        if not (e[i] == 0 or e[i] == 1):
            return i
    return -1


def check_event(event: Any, n: int, arg: str = "event", names: Mapping[str, str] | None = None) -> np.ndarray:
    """Event indicator: 0/1 (or bool), no missing values.  Returns a bool array."""
    e = as_1d_array(event, arg, names)
    check_same_length(n, e, arg, names)
    what = label(arg, names)
    if e.dtype.kind == "b":
        return e
    if e.dtype.kind == "f" and e.dtype.itemsize < 4:
        e = e.astype(np.float64)  # float16: no compiled kernel
    out = np.empty(e.shape[0], dtype=bool)
    i = int(_zero_one(e, out))  # NaN != 0 and NaN != 1 -> flagged
    if i < 0:
        return out
    val = e[i]
    shown = "missing" if isinstance(val, float) and np.isnan(val) else repr(val.item())
    raise SurvivalInputError(
        f"{what} must be 0 (censored) or 1 (event); {where(i, names)} is {shown}. "
        "Recode the status column (e.g. dead = 1, alive/lost = 0) and fill missing values."
    )


def check_weights(
    weights: Any, n: int, arg: str = "weights", names: Mapping[str, str] | None = None
) -> np.ndarray:
    """Case weights / counts: finite and >= 0.  Returns a float64 array."""
    w = as_1d_array(weights, arg, names).astype(np.float64, copy=False)
    check_same_length(n, w, arg, names)
    what = label(arg, names)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = _first_row(bad)
        raise SurvivalInputError(
            f"{what} must be finite and >= 0 (case counts); {where(i, names)} is {show(w[i])}. "
            "Use the number of patients each row stands for."
        )
    if not (w > 0).any():
        raise SurvivalInputError(f"{what} are all zero: there is no data to analyse.")
    return w


def check_entry(
    entry: Any, time: np.ndarray, arg: str = "entry", names: Mapping[str, str] | None = None
) -> np.ndarray:
    """Left-truncation (entry / start) times for counting-process rows (entry, time]: entry < time."""
    s = check_time(entry, arg, names).astype(np.float64, copy=False)
    check_same_length(time.shape[0], s, arg, names)
    bad = s >= time
    if bad.any():
        i = _first_row(bad)
        raise SurvivalInputError(
            f"{label(arg, names)} must be < {label('time', names)} on every row (interval (start, stop]); "
            f"{where(i, names)} has start {s[i]:g} >= stop {time[i]:g}. Fix or drop the row."
        )
    return s


def check_conf_type(conf_type: str) -> str:
    if conf_type not in CONF_TYPES:
        raise SurvivalInputError(
            f"conf_type must be one of {', '.join(repr(c) for c in CONF_TYPES)}; got {show(conf_type)}."
        )
    return conf_type


def check_conf_level(conf_level: float) -> float:
    try:
        c = float(conf_level)
    except (TypeError, ValueError):
        c = float("nan")
    if not (0.0 < c < 1.0):
        raise SurvivalInputError(
            f"conf_level must be strictly between 0 and 1 (e.g. 0.95); got {show(conf_level)}."
        )
    return c


def check_group(
    group: Any, n: int, arg: str = "group", names: Mapping[str, str] | None = None, *, min_levels: int = 1
) -> tuple[list[Any], np.ndarray]:
    """Group labels -> (sorted distinct labels, integer codes).  Missing labels are an error."""
    g = as_1d_array(group, arg, names, numeric=False)
    check_same_length(n, g, arg, names)
    what = label(arg, names)
    if g.dtype.kind == "f" and np.isnan(g).any():
        i = _first_row(np.isnan(g))
        raise SurvivalInputError(
            f"{what} has a missing group label at {where(i, names)}; drop the row or label it."
        )
    small = _small_integer_codes(g)
    if small is not None:
        levels, codes = small
    elif g.dtype.kind == "O":
        miss = np.array([v is None or (isinstance(v, float) and v != v) for v in g.tolist()], dtype=bool)
        if miss.any():
            i = _first_row(miss)
            raise SurvivalInputError(
                f"{what} has a missing group label at {where(i, names)}; drop the row or label it."
            )
        try:
            levels, codes = np.unique(g, return_inverse=True)
        except TypeError:
            levels, codes = np.unique(g.astype(str), return_inverse=True)
    else:
        levels, codes = np.unique(g, return_inverse=True)
    labels = [v.item() if hasattr(v, "item") else v for v in levels]
    if levels.dtype.kind in "OUS":  # strings: R's factor() order (collation), not code points
        order = sorted(range(len(labels)), key=lambda i: r_collate_key(str(labels[i])))
        if order != list(range(len(labels))):
            rank = np.empty(len(order), np.intp)
            rank[order] = np.arange(len(order))
            labels = [labels[i] for i in order]
            codes = rank[codes.reshape(-1)]
    if len(labels) < min_levels:
        raise SurvivalInputError(
            f"{what} has only {len(labels)} level ({show(labels[0])}); comparing groups needs at least "
            f"{min_levels}. Check the grouping column or drop the comparison."
        )
    return labels, codes.reshape(-1).astype(np.intp, copy=False)


@nb.njit(cache=True, nogil=True)
def _int_label_range(g, limit):  # pragma: no cover - compiled
    """(min, max) of integer-valued labels if max - min <= limit, else (0, -1)."""
    lo = g[0]
    hi = g[0]
    for i in range(g.shape[0]):
        v = g[i]
        if v != np.floor(v):
            return 0, -1
        lo = min(lo, v)
        hi = max(hi, v)
    if hi - lo > limit:
        return 0, -1
    return np.int64(lo), np.int64(hi)


@nb.njit(cache=True, nogil=True)
def _encode_int_labels(g, lo, present, codes):  # pragma: no cover - compiled
    """codes[i] = rank of g[i] among the distinct labels (labels are integers in lo..lo+len(present)-1)."""
    n = g.shape[0]
    for i in range(n):
        present[np.int64(g[i]) - lo] = 1
    rank = np.empty(present.shape[0], np.intp)
    r = 0
    for k in range(present.shape[0]):
        rank[k] = r
        r += present[k]
    for i in range(n):
        codes[i] = rank[np.int64(g[i]) - lo]


def _small_integer_codes(g: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``np.unique(g, return_inverse=True)`` by counting, for integer-valued labels with a small range
    (the usual 0/1 or 1..k codes); None when it does not apply."""
    n = g.shape[0]
    kind = g.dtype.kind
    if n == 0 or not (kind in "fi" or (kind == "u" and g.dtype.itemsize < 8)):
        return None
    if kind == "f" and (g.dtype.itemsize < 4 or not np.isfinite(g[0])):
        return None
    limit = max(n, 1 << 16)
    lo, hi = _int_label_range(g, limit)
    lo, hi = int(lo), int(hi)
    if hi < lo or max(abs(lo), abs(hi)) >= 2**53:
        return None
    present = np.zeros(hi - lo + 1, np.intp)
    codes = np.empty(n, np.intp)
    _encode_int_labels(g, lo, present, codes)
    vals = np.flatnonzero(present) + lo
    levels = vals.astype(g.dtype) + g.dtype.type(0)  # floats: -0.0 -> 0.0, as a label
    return levels, codes


@dataclass(frozen=True)
class SurvivalData:
    """Validated right-censored (optionally left-truncated, weighted) survival data."""

    time: np.ndarray
    event: np.ndarray  # bool
    weights: np.ndarray | None  # float64 or None (= all ones)
    entry: np.ndarray | None  # float64 or None (= no left truncation)
    kept: np.ndarray | None = None  # rows of the input kept (None = all); zero-weight rows are dropped

    @property
    def n_rows(self) -> int:
        return int(self.time.shape[0])

    @property
    def n_input(self) -> int:
        """Number of rows given (before dropping zero-weight rows)."""
        return self.n_rows if self.kept is None else int(self.kept.shape[0])

    def subset_codes(self, codes: np.ndarray) -> np.ndarray:
        """Align per-input-row codes (e.g. groups) with the kept rows."""
        return codes if self.kept is None else codes[self.kept]


def check_survival_input(
    time: Any,
    event: Any,
    *,
    weights: Any = None,
    entry: Any = None,
    names: Mapping[str, str] | None = None,
) -> SurvivalData:
    """Validate (time, event[, weights][, entry]) and return numpy arrays.

    ``names`` maps argument names (``"time"``, ``"event"``, ``"weights"``, ``"entry"``) to the
    column names the user knows, so messages can say ``column 'os_months' (time)``.
    Rows with weight 0 are dropped (they stand for no patient).
    """
    t = check_time(time, "time", names)
    n = t.shape[0]
    e = check_event(event, n, "event", names)
    w = None if weights is None else check_weights(weights, n, "weights", names)
    s = None if entry is None else check_entry(entry, t, "entry", names)
    if w is not None:
        if (w == 1.0).all():
            w = None
        elif (w == 0).any():
            keep = w > 0
            t, e, w = t[keep], e[keep], w[keep]
            s = None if s is None else s[keep]
            return SurvivalData(t, e, w, s, keep)
    return SurvivalData(t, e, w, s)
