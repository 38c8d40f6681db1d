# Independent computation of the rescue-cetuximab-2007 endpoints with R (survival 3.5.3, R 4.2).
#
# Run by hand from the repository root (Debian: apt-get install r-base-core r-cran-survival):
#     Rscript tests/reference/protocol_reference.R
# It reads every registry CSV in tests/reference/registries/ (synthetic: the reference cohort and
# random registries made by tests/registry_factory.py) and writes
# tests/reference/protocol_expected.json, which tests/test_analyze_reference.py compares with
# `oncosurg analyze`. The endpoint definitions are re-implemented here from the protocol's text,
# not from oncosurg's code.
suppressMessages(library(survival))

num <- function(x) {
  if (length(x) == 0 || is.null(x) || is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(paste0('"', x, '"'))
  sprintf("%.17g", x)
}
obj <- function(lst) {
  keys <- names(lst)
  parts <- vapply(seq_along(lst), function(i) {
    v <- lst[[i]]
    paste0('"', keys[i], '": ', if (is.list(v)) obj(v) else num(v))
  }, character(1))
  paste0("{", paste(parts, collapse = ", "), "}")
}

month <- 30.4375
prop <- function(pred, pop) {
  # pred: TRUE/FALSE/NA per patient (NA = every input missing -> leaves the denominator)
  p <- pred[pop]
  missing <- sum(is.na(p))
  x <- sum(p, na.rm = TRUE)
  n <- sum(!is.na(p))
  if (n == 0) return(list(numerator = 0, denominator = 0, missing = missing))
  ci <- binom.test(x, n)$conf.int  # Clopper-Pearson
  list(numerator = x, denominator = n, estimate = x / n, ci_low = ci[1], ci_high = ci[2], missing = missing)
}
med <- function(x) {
  x <- x[!is.na(x)]
  q <- quantile(x, c(0.25, 0.5, 0.75), type = 7, names = FALSE)
  list(n = length(x), median = q[2], q1 = q[1], q3 = q[3], min = min(x), max = max(x))
}
kmmed <- function(time, status) {
  fit <- survfit(Surv(time, status) ~ 1, conf.type = "log-log")
  q <- quantile(fit, probs = 0.5)
  list(n = length(time), events = sum(status), median = unname(q$quantile[1]),
       ci_low = unname(q$lower[1]), ci_high = unname(q$upper[1]))
}

files <- sort(list.files("tests/reference/registries", pattern = "\\.csv$", full.names = TRUE))
out <- character(0)
for (f in files) {
  d <- read.csv(f, colClasses = "character", na.strings = "", check.names = FALSE)
  D <- function(x) as.numeric(as.Date(x))  # days since 1970-01-01
  start <- D(d$cetuximab_start)
  d <- d[start >= D("2004-02-01") & start <= D("2006-04-30"), ]
  start <- D(d$cetuximab_start)
  surg <- D(d$surgery_date); death <- D(d$death_date); prog <- D(d$progression_date)
  last <- D(d$last_contact_date)
  operated <- !is.na(surg)
  hep <- !is.na(d$surgery_type) & d$surgery_type == "hepatectomy"
  inh <- d$referral == "in_house"; refd <- d$referral == "referred"
  postop <- operated & !is.na(death) & (death - surg) <= 60
  yes <- function(x) ifelse(is.na(x), NA, x == "yes")
  n_ <- function(x) as.numeric(x)
  abn_parts <- cbind(n_(d$steatosis_pct) > 30, yes(d$steatohepatitis), n_(d$sinusoidal_dilatation_grade) >= 2,
                     n_(d$fibrosis_stage) >= 2, yes(d$nodular_regenerative_hyperplasia))
  abnormal <- apply(abn_parts, 1, function(r) if (all(is.na(r))) NA else any(r, na.rm = TRUE))
  trg <- n_(d$tumour_regression_grade)
  os_t <- (ifelse(is.na(death), last, death) - start) / month
  os_e <- as.numeric(!is.na(death))
  pfs_end <- ifelse(!is.na(prog), prog, ifelse(!is.na(death), death, last))
  pfs_t <- (pfs_end - start) / month
  pfs_e <- as.numeric(!is.na(prog) | !is.na(death))
  fu_t <- (last - surg) / month
  partner <- d$cetuximab_partner
  e <- list(
    evaluated = list(n = nrow(d)), in_house = list(n = sum(inh)), referred = list(n = sum(refd)),
    operated = list(n = sum(operated)), hepatectomy = list(n = sum(hep)),
    partner_irinotecan = prop(partner == "irinotecan", operated),
    partner_oxaliplatin = prop(partner == "oxaliplatin", operated),
    partner_both = prop(partner == "both", operated),
    cycles_before_surgery = med(n_(d$cetuximab_cycles)[operated]),
    two_or_more_prior_lines = prop(n_(d$prior_chemo_lines) >= 2, operated),
    resectability_in_house = prop(hep, inh),
    resectability_referred = prop(hep, refd),
    postoperative_mortality = prop(postop, operated),
    complications = prop(d$clavien_dindo_max != "none", operated & !postop),
    liver_abnormality = prop(abnormal, hep),
    pathologic_complete_response = prop(ifelse(is.na(trg), NA, trg == 1), hep),
    alive_at_last_contact = prop(is.na(death), hep),
    disease_free_at_last_contact = prop(is.na(death) & is.na(prog), hep),
    os_median = kmmed(os_t[hep], os_e[hep]),
    os_observed_median = med(os_t[hep]),
    pfs_median = kmmed(pfs_t[hep], pfs_e[hep]),
    followup_median = kmmed(fu_t[hep], 1 - os_e[hep])
  )
  out <- c(out, paste0('"', basename(f), '": ', obj(e)))
}
writeLines(paste0("{\n", paste(out, collapse = ",\n"), "\n}"), "tests/reference/protocol_expected.json")
cat("wrote tests/reference/protocol_expected.json\n")
