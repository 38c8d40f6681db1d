# Reference values for oncosurg.stats.cox and oncosurg.stats.timevarying, from R's survival.
#
# Run by hand from the repository root (R 4.2 + survival 3.5.3, Debian: apt-get install r-base-core
# r-cran-survival):
#     Rscript tests/reference/cox_reference.R
# It (re)writes tests/reference/datasets/cox_*.csv (R's public lung/veteran/ovarian data and
# synthetic data from fixed seeds) and tests/reference/cox_expected.json, which the Python tests
# read; the tests themselves never need R.  No packages beyond survival are used (the JSON writer
# is below).

suppressPackageStartupMessages(library(survival))
stopifnot(packageVersion("survival") >= "3.5")

outdir <- file.path("tests", "reference")
datadir <- file.path(outdir, "datasets")
dir.create(datadir, showWarnings = FALSE, recursive = TRUE)

# ---- a minimal JSON writer (numbers with 17 significant digits, NA -> null) ----
json_scalar <- function(x) {
  if (is.null(x) || length(x) == 0) return("null")
  if (is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(paste0('"', gsub('"', '\\\\"', x), '"'))
  if (is.infinite(x)) return("null")
  if (x == round(x) && abs(x) < 1e15) return(format(x, scientific = FALSE))
  sprintf("%.17g", x)
}
to_json <- function(x, indent = 0) {
  if (is.null(x)) return("null")
  pad <- strrep(" ", indent + 2)
  end <- strrep(" ", indent)
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(seq_along(x), function(i) to_json(x[[i]], indent + 2), "")
    if (!is.null(names(x))) {
      items <- paste0('"', names(x), '": ', items)
      return(paste0("{\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", end, "}"))
    }
    return(paste0("[\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", end, "]"))
  }
  if (length(x) == 1 && is.null(names(x)) && !inherits(x, "AsIs")) return(json_scalar(x))
  paste0("[", paste(vapply(x, json_scalar, ""), collapse = ", "), "]")
}

# ---- turn a coxph fit into the oncosurg CoxResult.to_dict() shape ----
cox_dict <- function(fit, conf_level = 0.95) {
  s <- summary(fit, conf.int = conf_level)
  b <- coef(fit)
  se <- sqrt(diag(fit$var))
  z <- qnorm((1 + conf_level) / 2)
  coefs <- list()
  for (i in seq_along(b)) {
    coefs[[names(b)[i]]] <- list(
      coef = unname(b[i]), se = se[i], hr = exp(unname(b[i])),
      hr_lower = exp(unname(b[i]) - z * se[i]), hr_upper = exp(unname(b[i]) + z * se[i]),
      z = unname(b[i]) / se[i], p = pchisq((unname(b[i]) / se[i])^2, 1, lower.tail = FALSE))
  }
  df <- sum(!is.na(b))
  lr <- 2 * (fit$loglik[2] - fit$loglik[1])
  list(
    coefficients = coefs,
    loglik_null = fit$loglik[1], loglik = fit$loglik[2],
    lr_chisq = lr, lr_df = df, lr_p = pchisq(lr, df, lower.tail = FALSE),
    concordance = unname(fit$concordance["concordance"]),
    extra = list(
      concordance_se = unname(fit$concordance["std"]),
      wald_chisq = unname(fit$wald.test), wald_df = df,
      wald_p = pchisq(unname(fit$wald.test), df, lower.tail = FALSE),
      score_chisq = unname(fit$score), score_df = df,
      score_p = pchisq(unname(fit$score), df, lower.tail = FALSE)),
    n = fit$n, events = fit$nevent, ties = fit$method, iterations = fit$iter)
}

cases <- list()
add_case <- function(name, file, data, time, event, covariates, ties = "efron", entry = NULL,
                     strata = NULL, expect_warning = FALSE) {
  lhs <- if (is.null(entry)) sprintf("Surv(%s, %s)", time, event) else
    sprintf("Surv(%s, %s, %s)", entry, time, event)
  rhs <- paste(sprintf("`%s`", covariates), collapse = " + ")
  if (!is.null(strata)) rhs <- paste0(rhs, sprintf(" + strata(%s)", strata))
  form <- as.formula(paste(lhs, "~", rhs))
  warns <- character(0)
  fit <- withCallingHandlers(coxph(form, data = data, ties = ties),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") })
  if (expect_warning != (length(warns) > 0)) stop("unexpected warning state in ", name, ": ", warns)
  cases[[name]] <<- list(
    file = file, time = time, event = event, entry = entry, strata = strata,
    covariates = I(covariates), ties = ties, r_warnings = I(warns), expected = cox_dict(fit))
}
save_csv <- function(d, name) {
  write.csv(d, file.path(datadir, name), row.names = FALSE, na = "")
  name
}

# ---- R's public datasets ----
lung2 <- na.omit(lung[, c("time", "status", "age", "sex", "ph.ecog")])
lung2$status <- lung2$status - 1L
f <- save_csv(lung2, "cox_lung.csv")
for (tt in c("efron", "breslow")) {
  add_case(paste0("lung_", tt), f, lung2, "time", "status", c("age", "sex", "ph.ecog"), ties = tt)
}
add_case("lung_age_only", f, lung2, "time", "status", "age")
add_case("lung_strata_sex", f, lung2, "time", "status", c("age", "ph.ecog"), strata = "sex")

vet <- veteran
vet$squamous <- as.integer(vet$celltype == "squamous")
vet$smallcell <- as.integer(vet$celltype == "smallcell")
vet$adeno <- as.integer(vet$celltype == "adeno")
vet$celltype <- as.character(vet$celltype)
f <- save_csv(vet, "cox_veteran.csv")
for (tt in c("efron", "breslow")) {
  add_case(paste0("veteran_", tt), f, vet, "time", "status",
           c("trt", "karno", "diagtime", "age", "prior", "squamous", "smallcell", "adeno"), ties = tt)
}
add_case("veteran_strata_celltype", f, vet, "time", "status", c("trt", "karno", "age"),
         strata = "celltype")

ov <- ovarian
f <- save_csv(ov, "cox_ovarian.csv")
add_case("ovarian_efron", f, ov, "futime", "fustat", c("age", "rx", "ecog.ps"))

# ---- synthetic: heavy ties (integer months, ties of events and censorings) ----
set.seed(20240601)
n <- 400
ties <- data.frame(
  x1 = round(rnorm(n), 3), x2 = rbinom(n, 1, 0.4), x3 = sample(0:4, n, replace = TRUE),
  grp = sample(c("A", "B", "C"), n, replace = TRUE))
rate <- 0.08 * exp(0.5 * ties$x1 - 0.7 * ties$x2 + 0.2 * ties$x3)
tt <- rexp(n, rate); cc <- runif(n, 2, 30)
ties$time <- pmax(1, ceiling(pmin(tt, cc) / 3))  # coarse: about 10 distinct times
ties$status <- as.integer(tt <= cc)
f <- save_csv(ties, "cox_ties.csv")
for (tt in c("efron", "breslow")) {
  add_case(paste0("ties_1cov_", tt), f, ties, "time", "status", "x1", ties = tt)
  add_case(paste0("ties_3cov_", tt), f, ties, "time", "status", c("x1", "x2", "x3"), ties = tt)
  add_case(paste0("ties_strata_", tt), f, ties, "time", "status", c("x1", "x2", "x3"), ties = tt,
           strata = "grp")
}

# ---- synthetic: left truncation (delayed entry), one row per subject ----
set.seed(7)
n <- 300
lt <- data.frame(age = round(rnorm(n, 60, 10), 1), trt = rbinom(n, 1, 0.5),
                 grp = sample(1:2, n, replace = TRUE))
tt <- rexp(n, 0.05 * exp(0.03 * (lt$age - 60) - 0.5 * lt$trt))
cc <- runif(n, 5, 40)
lt$entry <- round(runif(n, 0, 8), 2)
lt$time <- round(pmin(tt, cc), 2)
lt$status <- as.integer(tt <= cc)
lt <- lt[lt$time > lt$entry, ]
f <- save_csv(lt, "cox_lefttrunc.csv")
for (tt in c("efron", "breslow")) {
  add_case(paste0("lefttrunc_", tt), f, lt, "time", "status", c("age", "trt"), ties = tt, entry = "entry")
}
add_case("lefttrunc_strata", f, lt, "time", "status", c("age", "trt"), entry = "entry", strata = "grp")

# ---- synthetic: counting process with a time-varying covariate, several rows per subject ----
set.seed(11)
n <- 150
rows <- list()
for (i in seq_len(n)) {
  end <- round(runif(1, 2, 24))
  cuts <- sort(unique(c(0, sample(1:max(1, end - 1), min(3, max(1, end - 1))), end)))
  cuts <- cuts[cuts <= end]
  k <- length(cuts) - 1
  z <- rnorm(1)
  died <- rbinom(1, 1, plogis(-0.3 + 0.8 * z))
  rows[[i]] <- data.frame(id = i, start = cuts[-length(cuts)], stop = cuts[-1],
                          status = c(rep(0L, k - 1), died),
                          dose = round(z + cumsum(rnorm(k, 0, 0.5)), 2),
                          female = rbinom(1, 1, 0.5), centre = sample(c("P", "Q"), 1))
}
cp <- do.call(rbind, rows)
f <- save_csv(cp, "cox_counting.csv")
for (tt in c("efron", "breslow")) {
  add_case(paste0("counting_", tt), f, cp, "stop", "status", c("dose", "female"), ties = tt, entry = "start")
}
add_case("counting_strata", f, cp, "stop", "status", c("dose", "female"), entry = "start", strata = "centre")

# ---- many strata (> 10: concordancefit merges strata by offsetting the times) ----
set.seed(9)
n <- 600
ms <- data.frame(s = sample(1:12, n, TRUE), x = round(rnorm(n), 3), z = rbinom(n, 1, .5))
ms$time <- round(rexp(n, .1 * exp(.4 * ms$x)), 1) + 0.1
ms$status <- rbinom(n, 1, .7)
ms$start <- pmax(0, ms$time - round(runif(n, 0, 10), 1))
ms$start[ms$start >= ms$time] <- 0
f <- save_csv(ms, "cox_manystrata.csv")
add_case("manystrata_right", f, ms, "time", "status", c("x", "z"), strata = "s")
add_case("manystrata_counting", f, ms, "time", "status", c("x", "z"), entry = "start", strata = "s")

# ---- separation: every event is in the x = 1 group ----
set.seed(3)
n <- 60
sep <- data.frame(x = rep(0:1, each = n / 2), z = round(rnorm(n), 2))
sep$time <- round(runif(n, 1, 20), 1)
sep$status <- ifelse(sep$x == 1, rbinom(n, 1, 0.8), 0L)
f <- save_csv(sep, "cox_separation.csv")
add_case("separation", f, sep, "time", "status", c("x", "z"), expect_warning = TRUE)

# ---- collinear: x3 = x1 + 2 * x2; R reports NA for x3, oncosurg raises ----
set.seed(5)
n <- 80
col <- data.frame(x1 = round(rnorm(n), 2), x2 = rbinom(n, 1, 0.5))
col$x3 <- col$x1 + 2 * col$x2
col$time <- round(rexp(n, 0.1), 2)
col$status <- rbinom(n, 1, 0.7)
f <- save_csv(col, "cox_collinear.csv")
fit <- coxph(Surv(time, status) ~ x1 + x2 + x3, data = col)
collinear <- list(file = f, covariates = I(c("x1", "x2", "x3")),
                  r_na_coefficients = I(names(coef(fit))[is.na(coef(fit))]))

# ---- time-varying helpers: landmark and split at surgery (tmerge) ----
set.seed(2007)
n <- 250
tv <- data.frame(id = seq_len(n), age = round(rnorm(n, 62, 9)))
tv$time <- round(rexp(n, 1 / 20) + 0.5, 1)                  # months from cetuximab start
operate <- rbinom(n, 1, 0.35) == 1
tv$surgery <- ifelse(operate, round(runif(n, 0, 12), 1), NA)
tv$surgery[1:3] <- c(0, NA, 5)                               # surgery at the origin; never; later
tv$time[3] <- 5                                              # surgery on the last day of follow-up
tv$surgery[4] <- tv$time[4] + 3                              # "surgery" after the end of follow-up
h <- 0.04 * exp(0.02 * (tv$age - 62))
tv$status <- rbinom(n, 1, 0.7)
f <- save_csv(tv, "cox_timevarying.csv")

# split at exposure with tmerge: surgery as a time-dependent exposure
base <- tv[, c("id", "age")]
surg <- tv[!is.na(tv$surgery), c("id", "surgery")]
td <- tmerge(base, tv, id = id, death = event(time, status))
td <- tmerge(td, surg, id = id, exposed = tdc(surgery))
td$exposed[is.na(td$exposed)] <- 0L
td <- td[order(td$id, td$tstart), ]
fit_td <- coxph(Surv(tstart, tstop, death) ~ exposed + age, data = td)
split <- list(
  file = f, n_rows = nrow(td), id = I(td$id - 1L), start = I(td$tstart), stop = I(td$tstop),
  event = I(td$death), exposed = I(as.integer(td$exposed)),
  cox = cox_dict(fit_td), covariates = I(c("exposed", "age")))

landmarks <- list()
for (L in c(3, 6)) {
  d2 <- tv[tv$time > L, ]
  d2$time <- d2$time - L
  d2$exposed <- as.integer(!is.na(d2$surgery) & d2$surgery <= L)
  fit_lm <- coxph(Surv(time, status) ~ exposed + age, data = d2)
  landmarks[[as.character(L)]] <- list(
    landmark_time = L, index = I(d2$id - 1L), time = I(d2$time), event = I(d2$status),
    exposed = I(d2$exposed), cox = cox_dict(fit_lm), covariates = I(c("exposed", "age")))
}

out <- list(
  generated_by = "tests/reference/cox_reference.R",
  r_version = paste(R.version$major, R.version$minor, sep = "."),
  survival_version = as.character(packageVersion("survival")),
  cases = cases, collinear = collinear,
  timevarying = list(file = f, split = split, landmark = landmarks))
writeLines(to_json(out), file.path(outdir, "cox_expected.json"))
cat("wrote", file.path(outdir, "cox_expected.json"), "with", length(cases), "Cox cases\n")
