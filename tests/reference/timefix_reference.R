# R's timefix (aeqSurv) on practically-equal times: expected values for tests/test_stats_timefix.py.
# Run by hand from the repository root: Rscript tests/reference/timefix_reference.R (R 4.2, survival 3.5.3).
suppressMessages(library(survival))
d <- data.frame(
  time = c(1, 1 + 1e-9, 2, 2, 3 - 2e-9, 3, 4, 5, 5 + 5e-8, 6, 7, 7 + 1e-12, 8, 9, 10),
  status = c(1, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0),
  group = c(1, 2, 1, 2, 1, 2, 1, 2, 2, 1, 2, 1, 1, 2, 2),
  cause = c(1, 2, 0, 1, 2, 0, 1, 1, 2, 0, 2, 1, 0, 1, 0),
  x = c(0.5, 1.2, -0.3, 0.8, 1.5, -1.1, 0.2, 0.9, -0.4, 0.1, 1.3, -0.8, 0.6, -0.2, 0.4)
)
write.csv(d, "tests/reference/datasets/timefix.csv", row.names = FALSE)
f <- survfit(Surv(time, status) ~ 1, data = d)
q <- quantile(f, 0.5)
sd <- survdiff(Surv(time, status) ~ group, data = d)
aj <- survfit(Surv(time, factor(cause)) ~ 1, data = d)
cx <- coxph(Surv(time, status) ~ x, data = d)
v <- function(x) paste0("[", paste(sprintf("%.17g", x), collapse = ", "), "]")
out <- c(
  sprintf('"km_time": %s', v(f$time)), sprintf('"km_n_risk": %s', v(f$n.risk)),
  sprintf('"km_surv": %s', v(f$surv)), sprintf('"km_std_err": %s', v(f$std.err)),
  sprintf('"km_median": %s', v(q$quantile)),
  sprintf('"logrank_chisq": %.17g', sd$chisq), sprintf('"logrank_obs": %s', v(sd$obs)),
  sprintf('"logrank_exp": %s', v(sd$exp)),
  sprintf('"aj_time": %s', v(aj$time)), sprintf('"aj_pstate_1": %s', v(aj$pstate[, 2])),
  sprintf('"aj_pstate_2": %s', v(aj$pstate[, 3])),
  sprintf('"cox_coef": %.17g', coef(cx)), sprintf('"cox_loglik": %s', v(cx$loglik))
)
writeLines(paste0("{\n", paste(out, collapse = ",\n"), "\n}"), "tests/reference/timefix_expected.json")
cat("wrote tests/reference/timefix_expected.json\n")
