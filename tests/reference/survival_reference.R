#!/usr/bin/env Rscript
# Reference values for oncosurg.stats, computed with R's survival package (3.5.3 on R 4.2.2).
#
# Run by hand from the repository root:   Rscript tests/reference/survival_reference.R
# (Debian: apt-get install r-base-core r-cran-survival).  It writes the small synthetic datasets
# and two public datasets shipped with R (survival::lung, survival::veteran) to
# tests/reference/datasets/*.csv, then the expected values to tests/reference/survival_expected.json.
# The Python tests read only the CSV and JSON files; they never need R.
suppressMessages(library(survival))
stopifnot(as.character(packageVersion("survival")) == "3.5.3")
outdir <- "tests/reference/datasets"
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)

# ---------------------------------------------------------------- minimal JSON writer (no jsonlite)
js <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (!is.null(names(x))) {
      parts <- mapply(function(k, v) paste0('"', k, '":', js(v)), names(x), x)
      return(paste0("{", paste(parts, collapse = ","), "}"))
    }
    return(paste0("[", paste(vapply(x, js, ""), collapse = ","), "]"))
  }
  if (is.factor(x)) x <- as.character(x)
  one <- function(v) {
    if (is.character(v)) return(if (is.na(v)) "null" else paste0('"', v, '"'))
    if (is.logical(v)) return(if (is.na(v)) "null" else if (v) "true" else "false")
    if (!is.finite(v)) return("null")
    sprintf("%.17g", v)
  }
  vals <- vapply(as.vector(x), one, "")
  if (length(x) == 1 && !inherits(x, "AsIs")) vals else paste0("[", paste(vals, collapse = ","), "]")
}
A <- function(x) I(as.vector(x))  # always an array

# ---------------------------------------------------------------- datasets
set.seed(20240611)
write <- function(df, name) {
  path <- file.path(outdir, paste0(name, ".csv"))
  write.csv(df, path, row.names = FALSE, quote = FALSE)
  read.csv(path, stringsAsFactors = FALSE)  # compute on exactly what the tests read
}
ds <- list()
# ties of events and censorings at the same time, two groups
ds$ties <- write(data.frame(
  time   = c(1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5, 6, 6, 6, 7, 8, 8, 9, 10),
  status = c(1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0),
  group  = c("a", "b", "a", "b", "a", "a", "b", "b", "a", "a", "b", "a", "b", "b", "a", "a", "b", "a", "b", "a")),
  "ties")
# S = 0.5 on an interval, dropping later: midpoint rule
ds$plateau <- write(data.frame(time = c(1, 2, 3, 4, 5, 6), status = c(1, 1, 1, 0, 1, 1)), "plateau")
# the curve ends flat at exactly 0.5 (print: first time; quantile: midpoint with last time)
ds$flat_end <- write(data.frame(time = c(1, 2, 3, 4), status = c(1, 1, 0, 0)), "flat_end")
# median reached but upper limit not; and a curve whose median is not reached
ds$not_reached <- write(data.frame(
  time = c(2, 3, 5, 7, 8, 11, 13, 17, 19, 23, 29, 31),
  status = c(1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0)), "not_reached")
ds$zero_events <- write(data.frame(time = c(3, 5, 5, 8, 12), status = c(0, 0, 0, 0, 0)), "zero_events")
ds$single <- write(data.frame(time = 4.5, status = 1), "single")
# all at risk die at the last time (S = 0: Greenwood Inf, bands NA)
ds$to_zero <- write(data.frame(time = c(1, 2, 2, 3, 3, 3), status = c(1, 1, 0, 1, 1, 1)), "to_zero")
# left-truncated (counting-process) data
n <- 60
entry <- round(runif(n, 0, 5), 1)
ds$left_trunc <- write(data.frame(entry = entry, time = entry + round(rexp(n, 0.15), 1) + 0.1,
                                  status = rbinom(n, 1, 0.7)), "left_trunc")
# aggregated rows with case counts; the expanded version is checked against it
ds$aggregated <- write(data.frame(time = c(1, 1, 2, 3, 3, 4, 6, 6, 8, 9),
                                  status = c(1, 0, 1, 1, 0, 0, 1, 0, 1, 0),
                                  count = c(3, 1, 2, 4, 2, 1, 2, 5, 1, 3)), "aggregated")
# tie-heavy integer-day data, three groups and two strata
n <- 300
ds$heavy_ties <- write(data.frame(time = sample(1:25, n, replace = TRUE), status = rbinom(n, 1, 0.6),
                                  group = sample(c("x", "y", "z"), n, replace = TRUE),
                                  stratum = sample(c("s1", "s2"), n, replace = TRUE)), "heavy_ties")
# competing risks: 0 = censored, 1 = recurrence, 2 = death without recurrence
n <- 120
ds$competing <- write(data.frame(time = round(rexp(n, 0.1), 0) + 1,
                                 cause = sample(0:2, n, replace = TRUE, prob = c(0.3, 0.45, 0.25)),
                                 group = sample(c("resected", "unresected"), n, replace = TRUE)), "competing")
# public datasets shipped with R
lung <- survival::lung
ds$lung <- write(data.frame(time = lung$time, status = lung$status - 1, sex = lung$sex,
                            ph_ecog = ifelse(is.na(lung$ph.ecog), 1, lung$ph.ecog), age = lung$age), "lung")
vet <- survival::veteran
ds$veteran <- write(data.frame(time = vet$time, status = vet$status, trt = vet$trt,
                               celltype = as.character(vet$celltype), karno = vet$karno, age = vet$age), "veteran")

# ---------------------------------------------------------------- expected values
conf_types <- c("log", "log-log", "plain")
fitinfo <- function(fit) {
  s <- summary(fit, censored = TRUE)
  list(time = A(fit$time), n_risk = A(fit$n.risk), n_event = A(fit$n.event), n_censor = A(fit$n.censor),
       surv = A(fit$surv), std_err_log = A(fit$std.err), std_err = A(s$std.err),
       lower = A(fit$lower), upper = A(fit$upper))
}
tab_median <- function(fit) {
  tb <- summary(fit)$table
  list(median = unname(tb["median"]), lower = unname(tb["0.95LCL"]), upper = unname(tb["0.95UCL"]))
}
quant <- function(fit, probs) {
  q <- quantile(fit, probs)
  list(p = A(probs), estimate = A(q$quantile), lower = A(q$lower), upper = A(q$upper))
}
at_times <- function(fit, times, extend) {
  s <- summary(fit, times = times, extend = extend)
  list(time = A(s$time), n_risk = A(s$n.risk), n_event = A(s$n.event), n_censor = A(s$n.censor),
       surv = A(s$surv), std_err = A(s$std.err), lower = A(s$lower), upper = A(s$upper))
}
km_case <- function(name, d, times = NULL, entry = FALSE, weights = NULL, probs = c(0.25, 0.5, 0.75)) {
  res <- list(dataset = name, entry = entry, weights = if (is.null(weights)) NULL else weights)
  w <- if (is.null(weights)) rep(1, nrow(d)) else d[[weights]]
  y <- if (entry) Surv(d$entry, d$time, d$status) else Surv(d$time, d$status)
  for (ct in conf_types) {
    fit <- survfit(y ~ 1, weights = w, conf.type = ct)
    r <- fitinfo(fit)
    r$median <- tab_median(fit)
    r$quantile <- quant(fit, probs)
    if (!is.null(times)) {
      r$at <- at_times(fit, times, FALSE)
      r$at_extend <- at_times(fit, times, TRUE)
      r$at_request <- A(times)
    }
    res[[ct]] <- r
  }
  res
}
cases <- list(
  km_case("ties", ds$ties, times = c(-1, 0, 0.5, 1, 2.5, 3, 7, 10, 12)),
  km_case("plateau", ds$plateau, times = c(3, 4, 5, 6)),
  km_case("flat_end", ds$flat_end, times = c(2, 4)),
  km_case("not_reached", ds$not_reached, times = c(5, 30)),
  km_case("zero_events", ds$zero_events, times = c(1, 5, 12)),
  km_case("single", ds$single, times = c(1, 4.5)),
  km_case("to_zero", ds$to_zero, times = c(1, 2, 3)),
  km_case("left_trunc", ds$left_trunc, times = c(1, 5, 10), entry = TRUE),
  km_case("aggregated", ds$aggregated, times = c(2, 5), weights = "count"),
  km_case("heavy_ties", ds$heavy_ties, times = c(5, 10, 20)),
  km_case("lung", ds$lung, times = c(0, 180, 365, 730, 1000)),
  km_case("veteran", ds$veteran, times = c(30, 90, 180, 365))
)
# KM per group (separate curves)
by_group <- list()
for (spec in list(c("ties", "group"), c("heavy_ties", "group"), c("lung", "sex"), c("veteran", "trt"))) {
  d <- ds[[spec[1]]]
  for (lev in sort(unique(d[[spec[2]]]))) {
    sub <- d[d[[spec[2]]] == lev, ]
    for (ct in c("log", "log-log")) {
      fit <- survfit(Surv(time, status) ~ 1, data = sub, conf.type = ct)
      by_group[[length(by_group) + 1]] <- list(dataset = spec[1], group = spec[2], level = as.character(lev),
                                               conf_type = ct, n = nrow(sub), events = sum(sub$status),
                                               median = tab_median(fit))
    }
  }
}
# reverse KM (median follow-up)
reverse <- list()
for (name in c("ties", "lung", "veteran", "not_reached")) {
  d <- ds[[name]]
  fit <- survfit(Surv(time, 1 - status) ~ 1, data = d, conf.type = "log-log")
  r <- fitinfo(fit)
  r$median <- tab_median(fit)
  r$dataset <- name
  reverse[[length(reverse) + 1]] <- r
}
# log-rank (survdiff, rho = 0)
logrank <- list()
lr <- function(name, group, strata = NULL) {
  d <- ds[[name]]
  f <- if (is.null(strata)) as.formula(paste("Surv(time, status) ~", group))
       else as.formula(paste("Surv(time, status) ~", group, "+ strata(", strata, ")"))
  sd <- survdiff(f, data = d)
  obs <- if (is.matrix(sd$obs)) rowSums(sd$obs) else sd$obs
  ex <- if (is.matrix(sd$exp)) rowSums(sd$exp) else sd$exp
  list(dataset = name, group = group, strata = strata, levels = A(as.character(sort(unique(d[[group]])))),
       chisq = sd$chisq, df = sum(ex > 0) - 1, p = sd$pvalue,
       n = A(sd$n), observed = A(obs), expected = A(ex), var = lapply(seq_len(nrow(sd$var)), function(i) A(sd$var[i, ])))
}
logrank <- list(lr("ties", "group"), lr("heavy_ties", "group"), lr("heavy_ties", "group", "stratum"),
                lr("lung", "sex"), lr("lung", "sex", "ph_ecog"), lr("veteran", "trt"),
                lr("veteran", "celltype"), lr("veteran", "trt", "celltype"))
# RMST (print(fit, rmean = tau) -> *rmean, *se(rmean))
rmst <- list()
rm1 <- function(name, tau, group = NULL) {
  d <- ds[[name]]
  fit <- survfit(Surv(time, status) ~ 1, data = d)
  tb <- summary(fit, rmean = tau)$table
  r <- list(dataset = name, tau = tau, group = group, rmst = unname(tb["rmean"]), se = unname(tb["se(rmean)"]))
  if (!is.null(group)) {
    fg <- survfit(as.formula(paste("Surv(time, status) ~", group)), data = d)
    tg <- summary(fg, rmean = tau)$table
    r$levels <- A(as.character(sort(unique(d[[group]]))))
    r$by_rmst <- A(tg[, "rmean"])
    r$by_se <- A(tg[, "se(rmean)"])
  }
  r
}
rmst <- list(rm1("ties", 5, "group"), rm1("ties", 10), rm1("ties", 20), rm1("plateau", 4.5),
             rm1("lung", 365, "sex"), rm1("lung", 1000), rm1("veteran", 180, "trt"), rm1("heavy_ties", 12, "group"),
             rm1("zero_events", 10), rm1("to_zero", 2.5), rm1("to_zero", 5))
# Aalen-Johansen (multi-state survfit with a factor status)
aj <- list()
for (name in c("competing", "ties")) {
  d <- ds[[name]]
  st <- if (name == "competing") d$cause else d$status
  fit <- survfit(Surv(d$time, factor(st)) ~ 1)
  aj[[length(aj) + 1]] <- list(dataset = name, states = A(fit$states), time = A(fit$time),
                               n_risk = A(fit$n.risk[, 1]),
                               pstate = lapply(seq_len(ncol(fit$pstate)), function(j) A(fit$pstate[, j])),
                               std_err = lapply(seq_len(ncol(fit$std.err)), function(j) A(fit$std.err[, j])),
                               lower = lapply(seq_len(ncol(fit$lower)), function(j) A(fit$lower[, j])),
                               upper = lapply(seq_len(ncol(fit$upper)), function(j) A(fit$upper[, j])))
}
# proportions: binom.test (Clopper-Pearson) and prop.test(correct = FALSE) (Wilson)
props <- list()
for (xn in list(c(0, 10), c(1, 10), c(5, 10), c(10, 10), c(7, 23), c(45, 112), c(0, 1), c(1, 1), c(300, 1000))) {
  for (cl in c(0.95, 0.9)) {
    cp <- binom.test(xn[1], xn[2], conf.level = cl)$conf.int
    wi <- suppressWarnings(prop.test(xn[1], xn[2], conf.level = cl, correct = FALSE)$conf.int)
    props[[length(props) + 1]] <- list(x = xn[1], n = xn[2], conf_level = cl, cp = A(cp), wilson = A(wi))
  }
}
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")),
            km = cases, km_by_group = by_group, reverse = reverse, logrank = logrank, rmst = rmst,
            aalen_johansen = aj, proportion = props)
writeLines(js(out), "tests/reference/survival_expected.json")
cat("wrote tests/reference/survival_expected.json\n")
