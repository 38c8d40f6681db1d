#!/usr/bin/env python
"""Survival benchmark: oncosurg vs statsmodels vs lifelines vs R survival, same arrays, one run.

    .venv/bin/python benchmarks/bench_survival.py                 # full size, median of 3 runs
    .venv/bin/python benchmarks/bench_survival.py --quick         # 10x smaller, for a smoke test
    .venv/bin/python benchmarks/bench_survival.py --skip-slow     # no lifelines/statsmodels Cox at 1e6
    .venv/bin/python benchmarks/bench_survival.py --only cox      # one row (km1e6, km1e7, km1e7int,
                                                                  # logrank, cox, coxw, coxw3e4)

Rows (issue #3): Kaplan-Meier + median CI at 1e6 distinct times; Kaplan-Meier at 1e7 distinct
times; Kaplan-Meier at 1e7 integer-day times; log-rank, 2 groups, 1e6; Cox, 5 covariates, 1e6,
Efron ties.  Issue #13: Cox with case weights and the robust (sandwich) variance at 1e6 and 3e4
against R's ``coxph(..., weights = w, robust = TRUE)`` (survival 3.5.3 needs minutes already at
1e5 rows for the robust variance, so R runs once, stopped at ``--slow-timeout``, at 1e6).
Data come from a fixed seed.  oncosurg is timed after a warm-up call (numba kernels
are compiled and cached on first use).  R runs through ``Rscript`` when present: the arrays are
written to a temporary binary file, read by R *before* timing, and timed inside R with
``system.time`` (elapsed).  Every tool's answer is compared with oncosurg's (max relative
difference).  The slow single-shot runs (lifelines and statsmodels Cox at 1e6) are run once, in a
child process with a time limit (``--slow-timeout``, default 150 s).

Printed: a table of median wall times and the ratio anchor / oncosurg (> 1 = oncosurg faster),
the agreement, and the peak memory of the 1e7-row Kaplan-Meier against its input size
(tracemalloc, plus the resident-set high-water mark of a child process where Linux supports it).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240601
TOOLS = ("oncosurg", "statsmodels", "lifelines", "R")
ROWS = {
    "km1e6": "Kaplan-Meier + median CI, 1e6 distinct times",
    "km1e7": "Kaplan-Meier, 1e7 distinct times",
    "km1e7int": "Kaplan-Meier, 1e7 integer-day times",
    "logrank": "log-rank, 2 groups, 1e6",
    "cox": "Cox, 5 covariates, 1e6 (Efron)",
    "coxw": "Cox, weights + robust SE, 1e6 (Efron)",
    "coxw3e4": "Cox, weights + robust SE, 3e4 (Efron)",
}
GRID_Q = (0.1, 0.25, 0.5, 0.75, 0.9)  # quantiles of the observed times where S(t) is compared


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def make_data(row: str, quick: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + list(ROWS).index(row))
    big = 10**6 if quick else 10**7
    small = 10**5 if quick else 10**6
    if row == "km1e6":
        n = small
        t = rng.exponential(24.0, n)
        return {"t": t, "e": (rng.random(n) < 0.7).astype(np.float64)}
    if row == "km1e7":
        n = big
        t = rng.exponential(24.0, n)
        return {"t": t, "e": (rng.random(n) < 0.7).astype(np.float64)}
    if row == "km1e7int":
        n = big
        t = np.ceil(rng.exponential(700.0, n)).astype(np.int64)  # days
        return {"t": t, "e": (rng.random(n) < 0.7).astype(np.float64)}
    if row == "logrank":
        n = small
        g = (rng.random(n) < 0.5).astype(np.float64)
        t = rng.exponential(np.where(g == 1, 26.0, 22.0))
        return {"t": t, "e": (rng.random(n) < 0.7).astype(np.float64), "g": g}
    if row == "coxw3e4":
        d = make_data("coxw", quick)
        return {k: v[: 3 * 10**4] for k, v in d.items()}
    if row == "coxw":
        d = make_data("cox", quick)
        d["w"] = np.random.default_rng(SEED + 7).uniform(0.2, 3.0, d["t"].shape[0])
        return d
    if row == "cox":
        n = small
        X = np.column_stack(
            [
                rng.normal(60, 10, n),  # age
                rng.integers(0, 2, n).astype(float),  # sex
                rng.integers(0, 3, n).astype(float),  # ECOG
                rng.normal(0, 1, n),  # a lab value
                rng.integers(0, 2, n).astype(float),  # operated
            ]
        )
        beta = np.array([0.02, -0.3, 0.4, 0.2, -0.5])
        lp = (X - X.mean(axis=0)) @ beta
        tt = rng.exponential(24.0 * np.exp(-lp))
        cc = rng.exponential(40.0, n)
        return {"t": np.minimum(tt, cc), "e": (tt <= cc).astype(np.float64), "X": X}
    raise ValueError(row)


def input_bytes(d: dict[str, np.ndarray]) -> int:
    return sum(v.nbytes for k, v in d.items() if not k.startswith("_"))


# ----------------------------------------------------------------------------------------------
# per-tool implementations; each returns a comparable summary
# ----------------------------------------------------------------------------------------------


def _grid(t: np.ndarray) -> np.ndarray:
    return np.quantile(t, GRID_Q)


def _grid_of(d: dict) -> np.ndarray:
    """The comparison grid, computed once per data set outside the timings (``d["_grid"]``): a
    quantile of 1e7 values costs more than an integer-day Kaplan-Meier, and R computes it untimed."""
    return d["_grid"] if "_grid" in d else _grid(d["t"])


def _step(times: np.ndarray, surv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    idx = np.searchsorted(times, grid, side="right") - 1
    return np.where(idx >= 0, surv[np.maximum(idx, 0)], 1.0)


def oncosurg_fn(row: str) -> Callable[[dict], dict] | None:
    try:
        import oncosurg.stats as st
    except ImportError:
        return None
    if row.startswith("km"):
        if not hasattr(st, "kaplan_meier"):
            return None

        def km(d: dict) -> dict:
            fit = st.kaplan_meier(d["t"], d["e"])
            out = {"surv": _step(np.asarray(fit.time, float), np.asarray(fit.surv), _grid_of(d))}
            if row == "km1e6":
                q = fit.median()
                out["median"] = np.array([q.estimate, q.lower, q.upper], dtype=float)
            return out

        return km
    if row == "logrank":
        if not hasattr(st, "logrank_test"):
            return None

        def lr(d: dict) -> dict:
            return {"chisq": np.array([st.logrank_test(d["t"], d["e"], d["g"]).chisq])}

        return lr
    if row == "cox":
        if not hasattr(st, "coxph"):
            return None

        def cox(d: dict) -> dict:
            res = st.coxph(d["t"], d["e"], d["X"], ties="efron")
            return {"coef": np.array([c.coef for c in res.coefficients]), "loglik": np.array([res.loglik])}

        return cox
    if row.startswith("coxw"):

        def coxw(d: dict) -> dict:
            res = st.coxph(d["t"], d["e"], d["X"], ties="efron", weights=d["w"], robust=True)
            return {"coef": np.array([c.coef for c in res.coefficients]), "loglik": np.array([res.loglik]),
                    "se": np.array([c.se for c in res.coefficients])}

        return coxw
    return None


def statsmodels_fn(row: str) -> Callable[[dict], dict] | None:
    if row.startswith("coxw"):  # PHReg has no robust (sandwich) variance
        return None
    try:
        from statsmodels.duration.hazard_regression import PHReg
        from statsmodels.duration.survfunc import SurvfuncRight, survdiff
    except ImportError:
        return None
    if row.startswith("km"):

        def km(d: dict) -> dict:
            sf = SurvfuncRight(d["t"], d["e"])
            out = {"surv": _step(np.asarray(sf.surv_times, float), np.asarray(sf.surv_prob), _grid_of(d))}
            if row == "km1e6":
                lo, hi = sf.quantile_ci(0.5)
                out["median"] = np.array([sf.quantile(0.5), lo, hi], dtype=float)
            return out

        return km
    if row == "logrank":

        def lr(d: dict) -> dict:
            chisq, _p = survdiff(d["t"], d["e"], d["g"])
            return {"chisq": np.array([chisq])}

        return lr
    if row == "cox":

        def cox(d: dict) -> dict:
            r = PHReg(d["t"], d["X"], status=d["e"], ties="efron").fit()
            return {"coef": np.asarray(r.params), "loglik": np.array([r.llf])}

        return cox
    return None


def lifelines_fn(row: str) -> Callable[[dict], dict] | None:
    if row.startswith("coxw"):  # CoxPHFitter(robust=True) takes minutes at 1e6 rows; the anchor here is R
        return None
    try:
        import lifelines
        from lifelines.statistics import logrank_test
        from lifelines.utils import median_survival_times
    except ImportError:
        return None
    if row.startswith("km"):

        def km(d: dict) -> dict:
            kmf = lifelines.KaplanMeierFitter().fit(d["t"], d["e"])
            grid = _grid_of(d)
            out = {"surv": np.asarray(kmf.survival_function_at_times(grid), dtype=float)}
            if row == "km1e6":
                ci = median_survival_times(kmf.confidence_interval_)
                out["median"] = np.array([kmf.median_survival_time_, *np.asarray(ci).ravel()[:2]], float)
            return out

        return km
    if row == "logrank":

        def lr(d: dict) -> dict:
            g = d["g"] == 1
            r = logrank_test(d["t"][~g], d["t"][g], d["e"][~g], d["e"][g])
            return {"chisq": np.array([r.test_statistic])}

        return lr
    if row == "cox":

        def cox(d: dict) -> dict:
            df = d["_lifelines_df"]
            cph = lifelines.CoxPHFitter().fit(df, "T", "E")
            return {"coef": np.asarray(cph.params_), "loglik": np.array([cph.log_likelihood_])}

        return cox
    return None


# ----------------------------------------------------------------------------------------------
# R
# ----------------------------------------------------------------------------------------------

R_SCRIPT = r"""
suppressPackageStartupMessages(library(survival))
a <- commandArgs(TRUE)
task <- a[1]; dir <- a[2]; n <- as.integer(a[3]); reps <- as.integer(a[4]); p <- as.integer(a[5])
rd <- function(name, k = n) {
  con <- file(file.path(dir, name), "rb"); on.exit(close(con)); readBin(con, "double", k)
}
num <- function(x) sprintf("%.15g", x)
t <- rd("t.bin"); e <- rd("e.bin")
grid <- quantile(t, c(0.1, 0.25, 0.5, 0.75, 0.9), names = FALSE, type = 7)
el <- numeric(reps)
if (task %in% c("km1e6", "km1e7", "km1e7int")) {
  for (i in seq_len(reps)) {
    el[i] <- system.time({
      fit <- survfit(Surv(t, e) ~ 1)
      if (task == "km1e6") tab <- summary(fit)$table
    }, gcFirst = TRUE)[["elapsed"]]
  }
  cat("surv", num(summary(fit, times = grid)$surv), "\n")
  if (task == "km1e6") cat("median", num(c(tab[["median"]], tab[["0.95LCL"]], tab[["0.95UCL"]])), "\n")
} else if (task == "logrank") {
  g <- rd("g.bin")
  for (i in seq_len(reps)) el[i] <- system.time(sd <- survdiff(Surv(t, e) ~ g), gcFirst = TRUE)[["elapsed"]]
  cat("chisq", num(sd$chisq), "\n")
} else if (task == "cox") {
  X <- matrix(rd("X.bin", n * p), nrow = n, ncol = p)
  for (i in seq_len(reps)) {
    el[i] <- system.time(fit <- coxph(Surv(t, e) ~ X, ties = "efron"), gcFirst = TRUE)[["elapsed"]]
  }
  cat("coef", num(coef(fit)), "\n")
  cat("loglik", num(fit$loglik[2]), "\n")
} else if (task %in% c("coxw", "coxw3e4")) {
  X <- matrix(rd("X.bin", n * p), nrow = n, ncol = p)
  w <- rd("w.bin")
  for (i in seq_len(reps)) {
    el[i] <- system.time(fit <- coxph(Surv(t, e) ~ X, ties = "efron", weights = w, robust = TRUE),
                         gcFirst = TRUE)[["elapsed"]]
  }
  cat("coef", num(coef(fit)), "\n")
  cat("loglik", num(fit$loglik[2]), "\n")
  cat("se", num(sqrt(diag(fit$var))), "\n")
}
cat("elapsed", el, "\n")
"""


def run_r(row: str, d: dict, reps: int, tmp: Path, limit: float | None = None) -> tuple[list[float], dict] | str:
    if shutil.which("Rscript") is None:
        return "Rscript not found"
    ddir = tmp / row
    ddir.mkdir(exist_ok=True)
    n = d["t"].shape[0]
    d["t"].astype(np.float64).tofile(ddir / "t.bin")
    d["e"].astype(np.float64).tofile(ddir / "e.bin")
    p = 0
    if "g" in d:
        d["g"].astype(np.float64).tofile(ddir / "g.bin")
    if "w" in d:
        d["w"].astype(np.float64).tofile(ddir / "w.bin")
    if "X" in d:
        p = d["X"].shape[1]
        np.asfortranarray(d["X"]).T.astype(np.float64).tofile(ddir / "X.bin")  # column-major for R
    script = tmp / "bench.R"
    script.write_text(R_SCRIPT)
    try:
        proc = subprocess.run(
            ["Rscript", str(script), row, str(ddir), str(n), str(reps), str(p)],
            capture_output=True,
            text=True,
            check=False,
            timeout=limit,
        )
    except subprocess.TimeoutExpired:
        return f"> {limit:.0f} s (stopped)"
    if proc.returncode != 0:
        return "R failed: " + proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "R failed"
    out: dict[str, np.ndarray] = {}
    times: list[float] = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if not parts:
            continue
        key, vals = parts[0], [float(v) if v != "NA" else np.nan for v in parts[1:]]
        if key == "elapsed":
            times = vals
        else:
            out[key] = np.array(vals)
    return times, out


# ----------------------------------------------------------------------------------------------
# timing helpers
# ----------------------------------------------------------------------------------------------


def time_repeat(fn: Callable[[dict], dict], d: dict, reps: int) -> tuple[list[float], dict]:
    times, res = [], {}
    for _ in range(reps):
        t0 = time.perf_counter()
        res = fn(d)
        times.append(time.perf_counter() - t0)
    return times, res


def _child(fn, d, conn) -> None:  # pragma: no cover - runs in a forked process
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            res = fn(d)
            conn.send(("ok", time.perf_counter() - t0, res))
    except Exception as exc:  # report any failure of the third-party tool
        conn.send(("error", 0.0, f"{type(exc).__name__}: {exc}"))


def time_once_with_limit(fn: Callable[[dict], dict], d: dict, limit: float) -> tuple[list[float], dict] | str:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, d, child))
    proc.start()
    if parent.poll(limit):
        status, elapsed, res = parent.recv()
        proc.join()
        if status != "ok":
            return str(res)
        return [elapsed], res
    proc.kill()
    proc.join()
    return f"> {limit:.0f} s (stopped)"


def max_rel_diff(a: dict, b: dict) -> float | None:
    diffs = []
    for k, va in a.items():
        if k not in b:
            continue
        va = np.asarray(va, float)
        vb = np.asarray(b[k], float)
        if va.shape != vb.shape:
            continue
        both_nan = np.isnan(va) & np.isnan(vb)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(va - vb) / np.maximum(np.abs(va), 1e-300)
        rel = np.where(both_nan, 0.0, rel)
        diffs.append(float(np.nanmax(np.where(np.isnan(rel), np.inf, rel))))
    return max(diffs) if diffs else None


def _vmhwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _mem_child(fn, d, conn) -> None:  # pragma: no cover - runs in a forked process
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark (Linux >= 4.0)
        base = _vmhwm_kb()
        fn(d)
        peak = _vmhwm_kb()
        conn.send(None if base is None or peak is None else (peak - base) * 1024)
    except Exception:
        conn.send(None)


def memory_km(fn: Callable[[dict], dict], d: dict) -> tuple[int, int | None]:
    fn({k: v[:1000] for k, v in d.items()})  # warm-up outside the measurement
    tracemalloc.start()
    fn(d)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = None
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_mem_child, args=(fn, d, child))
    proc.start()
    if parent.poll(300):
        rss = parent.recv()
    proc.join()
    return peak, rss


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def fmt_t(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    return f"{v:.3f} s" if v < 10 else f"{v:.1f} s"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool and row (median reported)")
    ap.add_argument("--quick", action="store_true", help="10x smaller data")
    ap.add_argument("--skip-slow", action="store_true", help="skip lifelines and statsmodels Cox at 1e6")
    ap.add_argument("--slow-timeout", type=float, default=150.0, help="limit for single-shot slow runs (s)")
    ap.add_argument("--only", nargs="*", choices=list(ROWS), help="run only these rows")
    ap.add_argument("--no-r", action="store_true", help="do not run R")
    args = ap.parse_args(argv)
    rows = args.only or list(ROWS)
    reps = max(1, args.repeat)
    results: dict[str, dict[str, Any]] = {}
    agreement: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    mem_line = None

    with tempfile.TemporaryDirectory(prefix="oncosurg-bench-") as tmpname:
        tmp = Path(tmpname)
        for row in rows:
            d = make_data(row, args.quick)
            n = d["t"].shape[0]
            if row.startswith("km"):
                d["_grid"] = _grid(d["t"])  # untimed, like R's
            print(f"[{row}] {ROWS[row]}: n = {n:,}", file=sys.stderr, flush=True)
            res_row: dict[str, Any] = {}
            outs: dict[str, dict] = {}
            # oncosurg
            fn = oncosurg_fn(row)
            if fn is None:
                res_row["oncosurg"] = "not available"
                notes.append(f"{row}: oncosurg function not available yet; row skipped for oncosurg")
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    fn({k: v[:2000] for k, v in d.items()})  # warm-up / numba compile or cache load
                    warm = time.perf_counter() - t0
                    ts, outs["oncosurg"] = time_repeat(fn, d, reps)
                res_row["oncosurg"] = statistics.median(ts)
                if warm > 1:
                    notes.append(f"{row}: oncosurg warm-up (numba compile / cache load) took {warm:.1f} s")
            # statsmodels and lifelines
            for tool, factory in (("statsmodels", statsmodels_fn), ("lifelines", lifelines_fn)):
                fn2 = factory(row)
                if fn2 is None:
                    res_row[tool] = "n/a" if row.startswith("coxw") else "not installed"
                    continue
                if row == "cox":
                    if args.skip_slow:
                        res_row[tool] = "skipped"
                        continue
                    if tool == "lifelines":
                        import pandas as pd

                        df = pd.DataFrame(d["X"], columns=[f"x{j}" for j in range(d["X"].shape[1])])
                        df["T"], df["E"] = d["t"], d["e"]
                        d["_lifelines_df"] = df
                    r = time_once_with_limit(fn2, d, args.slow_timeout)
                    d.pop("_lifelines_df", None)
                    if isinstance(r, str):
                        res_row[tool] = r
                        continue
                    ts, outs[tool] = r
                    res_row[tool] = ts[0]
                    notes.append(f"{row}: {tool} timed once (single slow run)")
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fn2({k: v[:2000] for k, v in d.items()})
                    ts, outs[tool] = time_repeat(fn2, d, reps)
                res_row[tool] = statistics.median(ts)
            # R
            if args.no_r:
                res_row["R"] = "skipped"
            else:
                # survival 3.5.3's robust variance (residuals.coxph) grows faster than n log n: one run,
                # stopped at --slow-timeout
                slow = row.startswith("coxw") and n >= 10**5
                r = run_r(row, d, 1 if slow else reps, tmp, args.slow_timeout if slow else None)
                if slow:
                    notes.append(f"{row}: R timed once with a limit of {args.slow_timeout:.0f} s")
                if isinstance(r, str):
                    res_row["R"] = r
                else:
                    ts, outs["R"] = r
                    res_row["R"] = statistics.median(ts) if ts else "no timing"
            results[row] = res_row
            if "oncosurg" in outs:
                ref = outs["oncosurg"]
                agreement[row] = {t: max_rel_diff(ref, o) for t, o in outs.items() if t != "oncosurg"}
            if row == "km1e7" and fn is not None:
                peak, rss = memory_km(fn, d)
                mem_line = (input_bytes(d), peak, rss)
            del d

    # ------------------------------------------------------------------ report
    print()
    head = f"{'task':48s} " + " ".join(f"{t:>16s}" for t in TOOLS)
    print(head + "   ratios (anchor / oncosurg)")
    print("-" * (len(head) + 40))
    for row, r in results.items():
        cells = " ".join(f"{fmt_t(r.get(t)):>16s}" for t in TOOLS)
        base = r.get("oncosurg")
        ratios = []
        if isinstance(base, float) and base > 0:
            for t in TOOLS[1:]:
                v = r.get(t)
                if isinstance(v, float):
                    ratios.append(f"{t} {v / base:.1f}x")
        print(f"{ROWS[row]:48s} {cells}   {', '.join(ratios)}")
    print()
    print("Agreement with oncosurg (max relative difference over the compared outputs):")
    for row, a in agreement.items():
        parts = [f"{t}: {v:.1e}" if v is not None else f"{t}: n/a" for t, v in a.items()]
        print(f"  {ROWS[row]:48s} {'; '.join(parts) if parts else '-'}")
    print(
        "  compared: KM S(t) at 5 quantiles of t (+ median and CI at 1e6; lifelines/statsmodels use "
        "other CI types than R's 'log'),\n  log-rank chi-square, Cox coefficients and log-likelihood "
        "(+ robust SEs for the weighted Cox)."
    )
    if mem_line is not None:
        inp, peak, rss = mem_line
        print()
        print(
            f"Memory, Kaplan-Meier 1e7: input arrays {inp / 2**20:.0f} MiB; tracemalloc peak "
            f"{peak / 2**20:.0f} MiB ({peak / inp:.2f}x input)"
            + (f"; RSS high-water increase {rss / 2**20:.0f} MiB ({rss / inp:.2f}x)" if rss else "")
        )
    for note in notes:
        print("note:", note)
    print(f"\n(seed {SEED}; {'quick' if args.quick else 'full'} size; median of {reps} run(s); "
          f"{os.cpu_count()} CPUs; R timed with system.time inside R, data loading excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
