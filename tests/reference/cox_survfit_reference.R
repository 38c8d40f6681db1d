# Reference values for oncosurg.stats.cox_survfit: R's survfit(coxph_fit, newdata = ).
# Run by hand from the repository root after robust_reference.R (which writes the data sets):
#     Rscript tests/reference/cox_survfit_reference.R  -> tests/reference/cox_survfit_expected.json
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
dd <- function(name) read.csv(file.path("tests", "reference", "datasets", name))
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")))
sf_out <- function(sf) {
  s <- if (is.null(sf$strata)) rep("all", length(sf$time)) else rep(sub(".*=", "", names(sf$strata)), sf$strata)
  m <- function(x) if (is.matrix(x)) x else matrix(x, ncol = 1)
  lapply(split(seq_along(sf$time), factor(s, levels = unique(s))), function(i) list(
    time = sf$time[i], n_risk = sf$n.risk[i], n_event = sf$n.event[i],
    surv = lapply(seq_len(ncol(m(sf$surv))), function(k) m(sf$surv)[i, k]),
    std_err = lapply(seq_len(ncol(m(sf$std.err))), function(k) m(sf$std.err)[i, k]),
    lower = lapply(seq_len(ncol(m(sf$lower))), function(k) m(sf$lower)[i, k]),
    upper = lapply(seq_len(ncol(m(sf$upper))), function(k) m(sf$upper)[i, k])))
}
cases <- list()
lung3 <- dd("lung_inst.csv")
nd <- data.frame(age = c(50, 70), sex = c(1, 2), ph.ecog = c(0, 2))
for (tt in c("efron", "breslow")) {
  fit <- coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3, ties = tt)
  cases[[paste0("lung_", tt)]] <- list(file = "lung_inst.csv", time = "time", event = "status",
    X = I(c("age", "sex", "ph.ecog")), ties = tt, newdata = as.list(nd), curves = sf_out(survfit(fit, newdata = nd)))
}
fit <- coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3, weights = w)
cases$lung_weights_robust <- list(file = "lung_inst.csv", time = "time", event = "status",
  X = I(c("age", "sex", "ph.ecog")), weights = "w", newdata = as.list(nd),
  curves = sf_out(survfit(fit, newdata = nd, conf.type = "log-log")), conf_type = "log-log")
col <- dd("colon.csv"); col <- col[col$etype == 2, ]
col$rx <- factor(col$rx, levels = c("Obs", "Lev", "Lev+5FU"))
fit <- coxph(Surv(time, status) ~ rx + age + nodes, col)
ndc <- data.frame(rx = factor(c("Obs", "Lev+5FU"), levels = levels(col$rx)), age = c(60, 60), nodes = c(2, 2))
cases$colon_factor <- list(file = "colon.csv", subset = "etype == 2", time = "time", event = "status",
  X = I(c("rx", "age", "nodes")), factor = I("rx"), levels = I(levels(col$rx)),
  newdata = list(rx = I(c("Obs", "Lev+5FU")), age = c(60, 60), nodes = c(2, 2)),
  curves = sf_out(survfit(fit, newdata = ndc)))
pb <- dd("pbc.csv"); pb$death <- as.integer(pb$status == 2)
fit <- coxph(Surv(time, death) ~ age + bili + strata(edema), pb)
cases$pbc_strata <- list(file = "pbc.csv", time = "time", event = "death", X = I(c("age", "bili")),
  strata = "edema", newdata = list(age = c(45, 60), bili = c(1, 5)),
  curves = sf_out(survfit(fit, newdata = data.frame(age = c(45, 60), bili = c(1, 5)))))
rot <- dd("rotterdam.csv")
fit <- coxph(Surv(dtime, death) ~ age + nodes + hormon, rot)
cases$rotterdam_default <- list(file = "rotterdam.csv", time = "dtime", event = "death",
  X = I(c("age", "nodes", "hormon")), newdata = NULL, curves = sf_out(survfit(fit)))
hr <- dd("heart.csv")
fit <- coxph(Surv(start, stop, event) ~ age + surgery + transplant, hr)
cases$heart_counting <- list(file = "heart.csv", time = "stop", event = "event", entry = "start",
  X = I(c("age", "surgery", "transplant")), newdata = list(age = c(-10, 5), surgery = c(0, 1), transplant = c(0, 1)),
  curves = sf_out(survfit(fit, newdata = data.frame(age = c(-10, 5), surgery = c(0, 1), transplant = c(0, 1)))))
out$cases <- cases
writeLines(to_json(out), file.path("tests", "reference", "cox_survfit_expected.json"))
cat("wrote tests/reference/cox_survfit_expected.json\n")
