# R's answers at the edges where oncosurg used to disagree (issue 13, part 1); tests/test_stats_edges.py.
# Run by hand from the repository root: Rscript tests/reference/edges_reference.R
# It writes tests/reference/datasets/{huge_times,cause_codes,group_case,heart}.csv and
# tests/reference/edges_expected.json (R and survival versions recorded in it).
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
datadir <- file.path("tests", "reference", "datasets")
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")),
            collate = Sys.getlocale("LC_COLLATE"), icu = unname(capabilities("ICU")))

# 1. times near 1e308: their sum overflows, R's mean() (long double) does not
huge <- data.frame(time = c(1e308, 1.1e308, 1.2e308, 1.3e308, 1.5e308, 1.7e308),
                   status = c(1, 0, 1, 1, 0, 1), group = c(1, 2, 1, 2, 1, 2),
                   x = c(0.1, 0.5, -0.3, 0.8, 0.2, -0.6))
write.csv(huge, file.path(datadir, "huge_times.csv"), row.names = FALSE)
f <- survfit(Surv(time, status) ~ 1, huge)
sd <- survdiff(Surv(time, status) ~ group, huge)
cx <- coxph(Surv(time, status) ~ x, huge)
out$huge <- list(km_time = f$time, km_surv = f$surv, logrank_chisq = sd$chisq,
                 cox_coef = unname(coef(cx)), cox_loglik = cx$loglik)

# 2. cause codes with gaps, a huge code and strings: states are the observed codes (factor levels)
set.seed(13)
n <- 60
cc <- data.frame(time = round(rexp(n, 0.1), 1), code13 = sample(c(0, 1, 3), n, TRUE),
                 code19 = sample(c(0, 1, 9), n, TRUE), codebig = sample(c(0, 1, 1e9), n, TRUE),
                 codestr = sample(c("cens", "Relapse", "death"), n, TRUE))
write.csv(cc, file.path(datadir, "cause_codes.csv"), row.names = FALSE)
aj <- function(cause) {
  fit <- survfit(Surv(cc$time, factor(cause)) ~ 1)
  list(states = I(fit$states), time = fit$time,
       pstate = lapply(seq_len(ncol(fit$pstate)), function(j) fit$pstate[, j]),
       std_err = lapply(seq_len(ncol(fit$std.err)), function(j) fit$std.err[, j]))
}
out$causes <- list(code13 = aj(cc$code13), code19 = aj(cc$code19), codebig = aj(cc$codebig),
                   codestr = aj(cc$codestr))

# 3. mixed-case group labels: factor() level order
gc <- data.frame(time = c(5, 8, 12, 3, 9, 14, 6, 11, 2, 7, 10, 13, 4, 15, 1, 16),
                 status = c(1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0),
                 group = rep(c("b", "A", "a", "c"), 4))
write.csv(gc, file.path(datadir, "group_case.csv"), row.names = FALSE)
sd <- survdiff(Surv(time, status) ~ group, gc)
out$groups <- list(levels = I(levels(factor(gc$group))), chisq = sd$chisq, observed = sd$obs,
                   expected = sd$exp, n = as.vector(sd$n))

# 4. Cox stopped at the iteration limit (coxfit6: variance from chinv2 without cholesky2)
lung2 <- read.csv(file.path(datadir, "cox_lung.csv"))
cx <- suppressWarnings(coxph(Surv(time, status) ~ age + ph.ecog, lung2,
                             control = coxph.control(iter.max = 2)))
out$iter_limit <- list(coef = unname(coef(cx)), var = as.vector(cx$var), loglik = cx$loglik,
                       iter = cx$iter)

# 5. categorical covariate (numeric codes) as factor(): indicators, reference level first
cx <- coxph(Surv(time, status) ~ age + factor(ph.ecog), lung2)
out$factor <- list(names = I(names(coef(cx))), coef = unname(coef(cx)),
                   se = unname(sqrt(diag(cx$var))), loglik = cx$loglik)

# 6. median follow-up on (start, stop] rows: per patient (last interval), not per row
write.csv(heart[, c("id", "start", "stop", "event", "age", "surgery", "transplant")],
          file.path(datadir, "heart.csv"), row.names = FALSE)
last <- heart[!duplicated(heart$id, fromLast = TRUE), ]
med <- function(fit) unname(summary(fit)$table[c("median", "0.95LCL", "0.95UCL")])
out$followup <- list(
  per_patient = med(survfit(Surv(stop, 1 - event) ~ 1, last)),
  per_row_counting = med(survfit(Surv(start, stop, 1 - event) ~ 1, heart)),
  per_row_stop = med(survfit(Surv(stop, 1 - event) ~ 1, heart)),
  n_patients = length(unique(heart$id)))

writeLines(to_json(out), file.path("tests", "reference", "edges_expected.json"))
cat("wrote tests/reference/edges_expected.json\n")
