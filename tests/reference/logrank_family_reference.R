# Reference values for logrank_test(rho =, gamma =): R's survdiff(rho =) (Peto & Peto for rho = 1),
# stratified, and the Fleming-Harrington G(rho, gamma) test written out below (survdiff has gamma = 0
# only; the function is checked against survdiff for gamma = 0 before it is used).
# Run by hand from the repository root after robust_reference.R (which writes the data sets):
#     Rscript tests/reference/logrank_family_reference.R  -> tests/reference/logrank_family_expected.json
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
dd <- function(name) read.csv(file.path("tests", "reference", "datasets", name))
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")))

# G(rho, gamma): weights S(t-)^rho (1 - S(t-))^gamma, S the pooled left-continuous KM of each stratum
fh_test <- function(time, status, group, strata = NULL, rho = 0, gamma = 0) {
  group <- factor(group); lev <- levels(group); k <- length(lev)
  if (is.null(strata)) strata <- rep(1, length(time))
  O <- numeric(k); E <- numeric(k); V <- matrix(0, k, k)
  for (s in unique(strata)) {
    i <- strata == s
    fit <- survfit(Surv(time[i], status[i]) ~ 1)
    tt <- fit$time
    Sminus <- c(1, head(fit$surv, -1))
    w <- Sminus^rho * (1 - Sminus)^gamma
    for (j in seq_along(tt)) {
      atrisk <- time[i] >= tt[j]
      nrg <- as.vector(table(group[i][atrisk]))
      dg <- as.vector(table(group[i][time[i] == tt[j] & status[i] == 1]))
      n <- sum(nrg); d <- sum(dg)
      if (d == 0) next
      O <- O + w[j] * dg
      E <- E + w[j] * d * nrg / n
      if (n > 1) V <- V + w[j]^2 * d * (n - d) / (n^2 * (n - 1)) * (diag(nrg * n) - outer(nrg, nrg))
    }
  }
  keep <- E > 0
  dif <- (O - E)[keep][-1]
  chisq <- sum(solve(V[keep, keep][-1, -1, drop = FALSE], dif) * dif)
  list(groups = I(lev), observed = O, expected = E, chisq = chisq, df = sum(keep) - 1)
}
sd_out <- function(sd) {  # stratified: obs and exp are groups x strata matrices
  o <- if (is.matrix(sd$obs)) rowSums(sd$obs) else sd$obs
  e <- if (is.matrix(sd$exp)) rowSums(sd$exp) else sd$exp
  list(groups = I(sub(".*=", "", names(sd$n))), observed = as.vector(o), expected = as.vector(e),
       chisq = sd$chisq, df = sum(e > 0) - 1)
}

lung3 <- dd("lung_inst.csv")
col <- dd("colon.csv"); col <- col[col$etype == 2, ]
pb <- dd("pbc.csv"); pb$death <- as.integer(pb$status == 2); pb <- pb[!is.na(pb$trt), ]
rot <- dd("rotterdam.csv")
# the G(rho, gamma) function reproduces survdiff for gamma = 0
for (r in c(0, 1, 0.5)) {
  a <- fh_test(lung3$time, lung3$status, lung3$sex, rho = r)
  b <- survdiff(Surv(time, status) ~ sex, lung3, rho = r)
  stopifnot(abs(a$chisq - b$chisq) < 1e-10 * b$chisq)
  a <- fh_test(col$time, col$status, col$rx, strata = col$sex, rho = r)
  b <- survdiff(Surv(time, status) ~ rx + strata(sex), col, rho = r)
  stopifnot(abs(a$chisq - b$chisq) < 1e-10 * b$chisq)
}
cases <- list()
add <- function(name, file, time, event, group, strata = NULL, rho = 0, gamma = 0, res) {
  cases[[name]] <<- list(file = file, time = time, event = event, group = group, strata = strata,
                         rho = rho, gamma = gamma, expected = res)
}
add("lung_peto", "lung_inst.csv", "time", "status", "sex", rho = 1,
    res = sd_out(survdiff(Surv(time, status) ~ sex, lung3, rho = 1)))
add("colon_rx_peto_strata", "colon.csv", "time", "status", "rx", strata = "sex", rho = 1,
    res = sd_out(survdiff(Surv(time, status) ~ rx + strata(sex), col, rho = 1)))
add("pbc_trt_rho_half", "pbc.csv", "time", "death", "trt", rho = 0.5,
    res = sd_out(survdiff(Surv(time, death) ~ trt, pb, rho = 0.5)))
add("rotterdam_grade_peto_strata", "rotterdam.csv", "dtime", "death", "grade", strata = "meno", rho = 1,
    res = sd_out(survdiff(Surv(dtime, death) ~ grade + strata(meno), rot, rho = 1)))
add("lung_fh_0_1", "lung_inst.csv", "time", "status", "sex", rho = 0, gamma = 1,
    res = fh_test(lung3$time, lung3$status, lung3$sex, rho = 0, gamma = 1))
add("colon_fh_1_1_strata", "colon.csv", "time", "status", "rx", strata = "sex", rho = 1, gamma = 1,
    res = fh_test(col$time, col$status, col$rx, strata = col$sex, rho = 1, gamma = 1))
add("pbc_fh_0_1", "pbc.csv", "time", "death", "trt", rho = 0, gamma = 1,
    res = fh_test(pb$time, pb$death, pb$trt, rho = 0, gamma = 1))
add("rotterdam_fh_1_0.5", "rotterdam.csv", "dtime", "death", "grade", rho = 1, gamma = 0.5,
    res = fh_test(rot$dtime, rot$death, rot$grade, rho = 1, gamma = 0.5))
out$cases <- cases
writeLines(to_json(out), file.path("tests", "reference", "logrank_family_expected.json"))
cat("wrote tests/reference/logrank_family_expected.json\n")
