# Reference values for oncosurg.stats.finegray: R's finegray() + coxph(weights = fgwt), and the
# Aalen-Johansen cumulative incidence by group.
# Run by hand from the repository root after robust_reference.R (which writes the data sets):
#     Rscript tests/reference/finegray_reference.R  -> tests/reference/finegray_expected.json
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
dd <- function(name) read.csv(file.path("tests", "reference", "datasets", name))
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")))
fg_case <- function(d, time, cause, etype, covs, group) {
  d$fcause <- factor(d[[cause]])
  d$ftime <- d[[time]]
  fg <- finegray(as.formula(paste("Surv(ftime, fcause) ~", paste(c(covs, group), collapse = " + "))),
                 data = d, etype = etype)
  fit <- coxph(as.formula(paste("Surv(fgstart, fgstop, fgstatus) ~", paste(covs, collapse = " + "))),
               data = fg, weights = fgwt)
  aj <- survfit(as.formula(paste("Surv(ftime, fcause) ~", group)), data = d)
  k <- match(etype, aj$states)
  strata <- rep(sub(".*=", "", names(aj$strata)), aj$strata)
  cif <- lapply(split(seq_along(aj$time), factor(strata, levels = unique(strata))), function(i)
    list(time = aj$time[i], cif = aj$pstate[i, k], std_err = aj$std.err[i, k]))
  list(time = time, cause = cause, event = etype, X = I(covs), group = group,
       data = list(n = nrow(fg), fgstart = fg$fgstart, fgstop = fg$fgstop, fgstatus = fg$fgstatus, fgwt = fg$fgwt),
       fit = list(coef = unname(coef(fit)), var = as.vector(fit$var), naive_var = as.vector(fit$naive.var),
                  loglik = fit$loglik, concordance = unname(fit$concordance["concordance"])),
       cif_by_group = cif)
}
cases <- list()
mg <- dd("mgus2.csv")
cases$mgus2_pcm <- c(list(file = "mgus2.csv"), fg_case(mg, "etime", "event", "1", c("age", "sex", "hgb"), "sex"))
cases$mgus2_death <- c(list(file = "mgus2.csv"), fg_case(mg, "etime", "event", "2", c("age", "sex", "creat"), "sex"))
pb <- dd("pbc.csv"); pb <- pb[!is.na(pb$trt), ]
cases$pbc_death <- c(list(file = "pbc.csv"), fg_case(pb, "time", "status", "2", c("age", "bili", "albumin"), "trt"))
rot <- dd("rotterdam.csv")
cases$rotterdam_recurrence <- c(list(file = "rotterdam.csv"),
  fg_case(rot, "etime", "cause", "1", c("age", "nodes", "hormon"), "hormon"))
out$cases <- cases
writeLines(to_json(out), file.path("tests", "reference", "finegray_expected.json"))
cat("wrote tests/reference/finegray_expected.json\n")
