# Reference values for the weighted / robust / left-truncated estimators (issue 13, part 2):
#   coxph(weights =, robust =, cluster =), survfit with non-integer weights (robust IJ variance) and
#   delayed entry, Aalen-Johansen with left truncation, and stratified coxph fits that
#   tests/test_stats_federated.py reproduces from per-stratum log-likelihood pieces.
# Run by hand from the repository root: Rscript tests/reference/robust_reference.R
# Writes tests/reference/datasets/{lung_inst,colon,pbc,mgus2,rotterdam}.csv (R's data sets, small
# subsets, with fixed-seed weights) and tests/reference/robust_expected.json.
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
datadir <- file.path("tests", "reference", "datasets")
save_csv <- function(d, name) invisible(write.csv(d, file.path(datadir, name), row.names = FALSE, na = ""))
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")))

# ---- data sets --------------------------------------------------------------------------------
set.seed(20241)
lung3 <- na.omit(lung[, c("inst", "time", "status", "age", "sex", "ph.ecog")])
lung3$status <- lung3$status - 1L
lung3$w <- round(runif(nrow(lung3), 0.2, 3), 4)
save_csv(lung3, "lung_inst.csv")
col <- colon[colon$id <= 300, c("id", "rx", "sex", "age", "nodes", "time", "status", "etype")]
col <- na.omit(col)
col$rx <- as.character(col$rx)
col$w <- round(runif(nrow(col), 0.5, 2), 4)
save_csv(col, "colon.csv")
pb <- pbc[1:312, c("id", "time", "status", "trt", "age", "sex", "bili", "albumin", "edema")]
pb$sex <- as.integer(pb$sex == "f")
pb$w <- round(runif(nrow(pb), 0.3, 2.5), 4)
pb$entry <- round(pmin(pb$time * runif(nrow(pb), 0, 0.6), 1500))
save_csv(pb, "pbc.csv")
mg <- mgus2[1:700, c("id", "age", "sex", "hgb", "creat", "mspike", "ptime", "pstat", "futime", "death")]
mg <- na.omit(mg)
mg$sex <- as.integer(mg$sex == "M")
mg$etime <- with(mg, ifelse(pstat == 0, futime, ptime))
mg$event <- with(mg, ifelse(pstat == 0, 2 * death, 1))
mg$agestop <- mg$age + mg$etime / 12
mg$w <- round(runif(nrow(mg), 0.5, 2), 4)
save_csv(mg, "mgus2.csv")
rot <- rotterdam[sort(sample(nrow(rotterdam), 800)), c("pid", "age", "meno", "size", "grade", "nodes", "hormon", "chemo",
                          "rtime", "recur", "dtime", "death")]
rot$size <- as.character(rot$size)
rot$cause <- with(rot, ifelse(recur == 1, 1, ifelse(death == 1, 2, 0)))
rot$etime <- with(rot, ifelse(recur == 1, rtime, dtime))
rot$entry <- round(rot$etime * runif(nrow(rot), 0, 0.3))
rot$w <- round(runif(nrow(rot), 0.4, 2.2), 4)
save_csv(rot, "rotterdam.csv")

# ---- Cox: weights, robust, cluster --------------------------------------------------------------
cox_out <- function(fit) {
  s <- summary(fit)
  list(coef = unname(coef(fit)), names = I(names(coef(fit))), var = as.vector(fit$var),
       naive_var = if (is.null(fit$naive.var)) NULL else as.vector(fit$naive.var),
       loglik = fit$loglik, score = fit$score, wald = unname(fit$wald.test),
       rscore = if (is.null(fit$rscore)) NULL else fit$rscore,
       concordance = unname(fit$concordance["concordance"]), concordance_se = unname(fit$concordance["std"]),
       n = fit$n, nevent = fit$nevent, iter = fit$iter)
}
cox <- list()
cox$lung_weights_efron <- list(file = "lung_inst.csv", args = list(time = "time", event = "status",
  X = I(c("age", "sex", "ph.ecog")), weights = "w"),
  fit = cox_out(coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3, weights = w)))
cox$lung_weights_breslow <- list(file = "lung_inst.csv", args = list(time = "time", event = "status",
  X = I(c("age", "sex", "ph.ecog")), weights = "w", ties = "breslow"),
  fit = cox_out(coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3, weights = w, ties = "breslow")))
cox$lung_cluster_inst <- list(file = "lung_inst.csv", args = list(time = "time", event = "status",
  X = I(c("age", "sex", "ph.ecog")), cluster = "inst"),
  fit = cox_out(coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3, cluster = inst)))
col$rx <- factor(col$rx, levels = c("Obs", "Lev", "Lev+5FU"))
cox$colon_cluster_strata <- list(file = "colon.csv", args = list(time = "time", event = "status",
  X = I(c("rx", "sex", "age", "nodes")), factor = I("rx"), levels = I(c("Obs", "Lev", "Lev+5FU")),
  strata = "etype", cluster = "id"),
  fit = cox_out(coxph(Surv(time, status) ~ rx + sex + age + nodes + strata(etype), col, cluster = id)))
cox$colon_weights_cluster <- list(file = "colon.csv", args = list(time = "time", event = "status",
  X = I(c("rx", "age", "nodes")), factor = I("rx"), levels = I(c("Obs", "Lev", "Lev+5FU")),
  weights = "w", cluster = "id"),
  fit = cox_out(coxph(Surv(time, status) ~ rx + age + nodes, col, weights = w, cluster = id)))
pb$death <- as.integer(pb$status == 2)
cox$pbc_weights <- list(file = "pbc.csv", args = list(time = "time", event = "death",
  X = I(c("age", "bili", "albumin", "edema", "trt")), weights = "w"),
  fit = cox_out(coxph(Surv(time, death) ~ age + bili + albumin + edema + trt, pb, weights = w)))
cox$pbc_entry_weights <- list(file = "pbc.csv", args = list(time = "time", event = "death", entry = "entry",
  X = I(c("age", "bili", "albumin")), weights = "w", cluster = "id"),
  fit = cox_out(coxph(Surv(entry, time, death) ~ age + bili + albumin, pb, weights = w, cluster = id)))
cox$mgus2_counting_weights <- list(file = "mgus2.csv", args = list(time = "agestop", event = "death",
  entry = "age", X = I(c("sex", "hgb", "creat")), weights = "w", cluster = "id", ties = "breslow"),
  fit = cox_out(coxph(Surv(age, agestop, death) ~ sex + hgb + creat, mg, weights = w, cluster = id,
                      ties = "breslow")))
cox$rotterdam_weights_strata <- list(file = "rotterdam.csv", args = list(time = "dtime", event = "death",
  X = I(c("age", "nodes", "hormon", "grade")), weights = "w", strata = "meno"),
  fit = cox_out(coxph(Surv(dtime, death) ~ age + nodes + hormon + grade + strata(meno), rot, weights = w)))
hr <- heart
cox$heart_counting_cluster <- list(file = "heart.csv", args = list(time = "stop", event = "event",
  entry = "start", X = I(c("age", "surgery", "transplant")), factor = I("transplant"), levels = I(c(0, 1)),
  cluster = "id"),
  fit = cox_out(coxph(Surv(start, stop, event) ~ age + surgery + transplant, hr, cluster = id)))
out$cox <- cox

# ---- Kaplan-Meier: non-integer weights (robust IJ), delayed entry, clusters ------------------------
km_out <- function(fit) list(time = fit$time, n_risk = fit$n.risk, surv = fit$surv, std_err = fit$std.err,
                             lower = fit$lower, upper = fit$upper, logse = fit$logse)
km <- list()
km$lung_weights <- list(file = "lung_inst.csv", args = list(time = "time", event = "status", weights = "w"),
  fit = km_out(survfit(Surv(time, status) ~ 1, lung3, weights = w)))
km$lung_weights_greenwood <- list(file = "lung_inst.csv",
  args = list(time = "time", event = "status", weights = "w", robust = FALSE),
  fit = km_out(survfit(Surv(time, status) ~ 1, lung3, weights = w, robust = FALSE)))
km$colon_cluster <- list(file = "colon.csv", args = list(time = "time", event = "status", cluster = "id"),
  fit = km_out(survfit(Surv(time, status) ~ 1, col, cluster = id)))
km$pbc_entry_weights <- list(file = "pbc.csv",
  args = list(time = "time", event = "death", entry = "entry", weights = "w"),
  fit = km_out(survfit(Surv(entry, time, death) ~ 1, pb, weights = w, id = id)))
km$mgus2_delayed_entry <- list(file = "mgus2.csv", args = list(time = "agestop", event = "death", entry = "age"),
  fit = km_out(survfit(Surv(age, agestop, death) ~ 1, mg)))
km$rotterdam_entry <- list(file = "rotterdam.csv", args = list(time = "dtime", event = "death", entry = "entry"),
  fit = km_out(survfit(Surv(entry, dtime, death) ~ 1, rot)))
out$km <- km

# ---- Aalen-Johansen with left truncation -----------------------------------------------------------
aj_out <- function(fit) list(states = I(fit$states), time = fit$time, n_risk = fit$n.risk[, 1],
  pstate = lapply(seq_len(ncol(fit$pstate)), function(j) fit$pstate[, j]),
  std_err = lapply(seq_len(ncol(fit$std.err)), function(j) fit$std.err[, j]))
aj <- list()
aj$mgus2_age_scale <- list(file = "mgus2.csv", args = list(time = "agestop", cause = "event", entry = "age"),
  fit = aj_out(survfit(Surv(age, agestop, factor(event)) ~ 1, mg, id = id)))
aj$mgus2_age_scale_weights <- list(file = "mgus2.csv",
  args = list(time = "agestop", cause = "event", entry = "age", weights = "w"),
  fit = aj_out(survfit(Surv(age, agestop, factor(event)) ~ 1, mg, id = id, weights = w)))
aj$pbc_entry <- list(file = "pbc.csv", args = list(time = "time", cause = "status", entry = "entry"),
  fit = aj_out(survfit(Surv(entry, time, factor(status)) ~ 1, pb, id = id)))
aj$rotterdam_entry <- list(file = "rotterdam.csv", args = list(time = "etime", cause = "cause", entry = "entry"),
  fit = aj_out(survfit(Surv(entry, etime, factor(cause)) ~ 1, rot, id = pid)))
aj$rotterdam_weights <- list(file = "rotterdam.csv", args = list(time = "etime", cause = "cause", weights = "w"),
  fit = aj_out(survfit(Surv(etime, factor(cause)) ~ 1, rot, weights = w)))
# (survival 3.5.3's multi-state survfit ignores cluster = and groups the IJ variance by id only;
#  tests/test_stats_robust.py checks our clustered Aalen-Johansen against R's clustered Kaplan-Meier)
out$aj <- aj

# ---- stratified Cox fits for the federated (per-stratum pieces) test --------------------------------
fed <- list()
fit <- coxph(Surv(time, status) ~ age + sex + ph.ecog + strata(inst), lung3)
fed$lung_inst <- list(file = "lung_inst.csv", time = "time", event = "status", X = I(c("age", "sex", "ph.ecog")),
  strata = "inst", coef = unname(coef(fit)), var = as.vector(fit$var), loglik = fit$loglik)
fit <- coxph(Surv(dtime, death) ~ age + nodes + hormon + strata(grade), rot)
fed$rotterdam_grade <- list(file = "rotterdam.csv", time = "dtime", event = "death",
  X = I(c("age", "nodes", "hormon")), strata = "grade", coef = unname(coef(fit)), var = as.vector(fit$var),
  loglik = fit$loglik)
fit <- coxph(Surv(time, death) ~ age + bili + albumin + strata(trt), pb[!is.na(pb$trt), ], weights = w)
fed$pbc_trt_weights <- list(file = "pbc.csv", time = "time", event = "death", X = I(c("age", "bili", "albumin")),
  strata = "trt", weights = "w", coef = unname(coef(fit)), var = as.vector(fit$naive.var),
  loglik = fit$loglik)
out$federated <- fed

writeLines(to_json(out), file.path("tests", "reference", "robust_expected.json"))
cat("wrote tests/reference/robust_expected.json\n")
