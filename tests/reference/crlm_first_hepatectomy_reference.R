# Independent computation of the endpoints of studies/crlm-first-hepatectomy.toml with R
# (survival 3.5.3), re-implemented from the protocol's text, not from oncosurg's code.
#
# Run by hand from the repository root:
#     Rscript tests/reference/crlm_first_hepatectomy_reference.R
# It reads the long-format registries of tests/reference/episodes/ (the reference cohort with all its
# episodes, and simulated registries) and writes tests/reference/crlm_first_hepatectomy_expected.json,
# which tests/test_crlm_first_hepatectomy.py compares with the engine on SQLite and PostgreSQL.
# Endpoints, the log-rank test by margin, and the adjuvant comparisons (landmark at 3 months on RFS with
# survdiff/coxph; OS with adjuvant chemotherapy as a tmerge time-dependent covariate, coxph).
# The reference cohort is analysed with the protocol's accrual window and data cut; the simulated
# registries (2010-2015) without a window and with a data cut on 2013-12-31.
suppressMessages(library(survival))

num <- function(x) {
  if (length(x) == 0 || is.null(x) || is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(paste0('"', x, '"'))
  if (!is.finite(x)) return("null")  # an infinite confidence limit
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
D <- function(x) as.numeric(as.Date(x))
RESECTIONS <- c("hepatectomy", "two_stage_second", "alpps_2")
MAJOR_GRADES <- c("IIIa", "IIIb", "IVa", "IVb", "V")
read <- function(dir, name) read.csv(file.path(dir, name), colClasses = "character", na.strings = "",
                                     check.names = FALSE)
key <- function(d) paste(d$centre, d$patient_id)

prop <- function(pred) {
  # pred: TRUE/FALSE/NA per patient (NA = every input missing -> leaves the denominator)
  missing <- sum(is.na(pred))
  x <- sum(pred, na.rm = TRUE)
  n <- sum(!is.na(pred))
  if (n == 0) return(list(numerator = 0, denominator = 0, missing = missing))
  ci <- binom.test(x, n)$conf.int  # Clopper-Pearson
  list(numerator = x, denominator = n, estimate = x / n, ci_low = ci[1], ci_high = ci[2], missing = missing)
}
km <- function(time, status, at = NULL) {
  fit <- survfit(Surv(time, status) ~ 1, conf.type = "log-log")
  q <- quantile(fit, probs = 0.5)
  out <- list(n = length(time), events = sum(status), median = unname(q$quantile[1]),
              ci_low = unname(q$lower[1]), ci_high = unname(q$upper[1]))
  for (t in at) {
    if (t > max(time)) next  # summary(..., extend = FALSE): nothing after the last time
    s <- summary(fit, times = t)
    out[[paste0("surv_", t)]] <- list(surv = s$surv, lower = s$lower, upper = s$upper, n_risk = s$n.risk)
  }
  out
}
cif <- function(time, status, at) {
  fit <- survfit(Surv(time, factor(status, levels = 0:2)) ~ 1)
  out <- list(n = length(time), events = sum(status == 1), competing = sum(status == 2))
  for (t in at) {
    if (t > max(time)) next
    s <- summary(fit, times = t)
    k1 <- which(fit$states == "1")
    k2 <- which(fit$states == "2")
    out[[paste0("cif_", t)]] <- list(cif = s$pstate[1, k1], lower = s$lower[1, k1], upper = s$upper[1, k1],
                                     competing_cif = s$pstate[1, k2])
  }
  out
}

study <- function(dir, window, cut) {
  pts <- read(dir, "patients.csv")
  lines <- read(dir, "therapy_lines.csv")
  procs <- read(dir, "liver_procedures.csv")
  comps <- read(dir, "complications.csv")
  events <- read(dir, "disease_events.csv")
  reviews <- read(dir, "mdt_reviews.csv")
  contacts <- read(dir, "contacts.csv")
  lines$start <- D(lines$start_date)
  procs$date <- D(procs$procedure_date)
  comps$date <- D(comps$complication_date)
  events$date <- D(events$event_date)
  reviews$date <- D(reviews$review_date)
  contacts$date <- D(contacts$contact_date)
  # the data cut: episodes after it do not exist; a contact after it says "alive on the cut date"
  lines <- lines[is.na(lines$start) | lines$start <= cut, ]
  procs <- procs[procs$date <= cut, ]
  kept <- paste(key(procs), procs$procedure_no)
  comps <- comps[paste(key(comps), comps$procedure_no) %in% kept & (is.na(comps$date) | comps$date <= cut), ]
  events <- events[events$date <= cut, ]
  reviews <- reviews[reviews$date <= cut, ]
  late <- contacts$date > cut
  contacts$vital_status[late] <- "alive"
  contacts$date[late] <- cut
  # the index: the first resection (date, then procedure number)
  res <- procs[procs$procedure_type %in% RESECTIONS, ]
  res <- res[order(key(res), res$date, as.numeric(res$procedure_no)), ]
  first <- res[!duplicated(key(res)), ]
  d <- merge(pts, data.frame(centre = first$centre, patient_id = first$patient_id, index = first$date,
                             index_no = first$procedure_no, segments = first$resected_segments,
                             margin = first$margin, assessed = first$complications_assessed,
                             stringsAsFactors = FALSE), by = c("centre", "patient_id"))
  d$key <- key(d)
  if (!is.null(window)) d <- d[d$index >= window[1] & d$index <= window[2], ]
  # eligibility: resectable at the last MDT review on or before the index; a line started before it
  reviews <- reviews[order(key(reviews), reviews$date, as.numeric(reviews$review_no)), ]
  last_review <- sapply(seq_len(nrow(d)), function(i) {
    r <- reviews[key(reviews) == d$key[i] & reviews$date <= d$index[i], ]
    if (nrow(r)) r$decision[nrow(r)] else NA
  })
  d <- d[!is.na(last_review) & last_review == "resectable", ]
  chemo <- sapply(seq_len(nrow(d)), function(i) any(key(lines) == d$key[i] & !is.na(lines$start) &
                                                    lines$start < d$index[i]))
  d <- d[chemo, ]
  # dates after the index
  last <- tapply(contacts$date, key(contacts), max)
  dead <- contacts[contacts$vital_status == "dead", ]
  d$last <- as.numeric(last[d$key])
  d$death <- as.numeric(setNames(dead$date, key(dead))[d$key])
  first_after <- function(dates, keys, exclude = NULL) {
    sapply(seq_len(nrow(d)), function(i) {
      ok <- keys == d$key[i] & dates >= d$index[i]
      if (!is.null(exclude)) ok <- ok & !exclude(i)
      if (any(ok)) min(dates[ok]) else NA
    })
  }
  d$event <- first_after(events$date, key(events))
  d$repeat_date <- first_after(res$date, key(res), function(i) key(res) == d$key[i] & res$procedure_no == d$index_no[i])
  dead_ok <- !is.na(d$death) & d$death >= d$index
  # endpoints
  e <- list()
  e$patients <- list(n = nrow(d))
  e$referred <- list(n = sum(d$referral == "referred"))
  size <- ifelse(is.na(d$segments), NA, lengths(strsplit(ifelse(is.na(d$segments), "", d$segments), ";")))
  e$major_hepatectomy <- prop(size >= 3)
  e$r0_resection <- prop(ifelse(is.na(d$margin), NA, d$margin == "R0"))
  major <- sapply(seq_len(nrow(d)), function(i) any(key(comps) == d$key[i] & comps$procedure_no == d$index_no[i] &
                                                      comps$grade %in% MAJOR_GRADES))
  assessed <- !is.na(d$assessed) & d$assessed == "yes"
  e$major_complications <- prop(major[assessed])
  e$postoperative_mortality <- prop(dead_ok & (d$death - d$index) <= 90)
  os_t <- (ifelse(dead_ok, d$death, d$last) - d$index) / month
  os_s <- as.numeric(dead_ok)
  e$os <- km(os_t, os_s, c(12, 24))
  rfs_end <- pmin(d$event, ifelse(dead_ok, d$death, NA), na.rm = TRUE)
  rfs_s <- as.numeric(!is.na(rfs_end))
  e$rfs <- km((ifelse(is.na(rfs_end), d$last, rfs_end) - d$index) / month, rfs_s, c(12))
  competing <- function(ev) {
    # the event first (ties: the event), else death, else censored at the last contact
    st <- ifelse(!is.na(ev) & (!dead_ok | ev <= d$death), 1, ifelse(dead_ok, 2, 0))
    end <- ifelse(st == 1, ev, ifelse(st == 2, d$death, d$last))
    list(time = (end - d$index) / month, status = st)
  }
  rec <- competing(d$event)
  e$recurrence <- cif(rec$time, rec$status, c(6, 12, 24))
  rep <- competing(d$repeat_date)
  e$repeat_hepatectomy_incidence <- cif(rep$time, rep$status, c(12, 24))
  later <- sapply(seq_len(nrow(d)), function(i) any(key(res) == d$key[i] & res$date > d$index[i]))
  e$repeat_hepatectomy_rate <- prop(later)
  fu <- km(os_t, 1 - os_s)
  e$followup <- fu[c("n", "events", "median", "ci_low", "ci_high")]
  # the margin is known at time zero: log-rank over the recorded margins
  m <- !is.na(d$margin)
  if (length(unique(d$margin[m])) > 1) {
    sd <- survdiff(Surv(os_t[m], os_s[m]) ~ d$margin[m])
    e$os_by_margin <- list(logrank_p = 1 - pchisq(sd$chisq, length(sd$n) - 1), n = sum(m))
  }
  # adjuvant chemotherapy, decided after the operation: its first line on or after the hepatectomy
  adj <- lines[lines$intent == "adjuvant" & !is.na(lines$start), ]
  a <- sapply(seq_len(nrow(d)), function(i) {
    x <- adj$start[key(adj) == d$key[i] & adj$start >= d$index[i]]
    if (length(x)) (min(x) - d$index[i]) / month else NA
  })
  # landmark at 3 months on RFS: event-free and followed at 3 months, grouped by adjuvant by then
  rfs_t <- (ifelse(is.na(rfs_end), d$last, rfs_end) - d$index) / month
  lm <- data.frame(t = rfs_t - 3, status = rfs_s, exposed = as.numeric(!is.na(a) & a <= 3))[rfs_t > 3, ]
  sd <- survdiff(Surv(t, status) ~ exposed, data = lm)
  e$rfs_adjuvant_landmark <- c(list(n = nrow(lm), logrank_p = 1 - pchisq(sd$chisq, 1)),
                               cox_hr(Surv(t, status) ~ exposed, lm))
  # OS with adjuvant chemotherapy as a time-dependent covariate (tmerge split at its start)
  td0 <- data.frame(id = seq_len(nrow(d)), time = os_t, status = os_s, a = a)[os_t > 0, ]
  td <- tmerge(td0, td0, id = id, status = event(time, status), tstart = 0, tstop = time)
  td <- tmerge(td, td0, id = id, exposed = tdc(a))
  e$os_adjuvant_time_dependent <- c(list(n = nrow(td0), n_rows = nrow(td)),
                                    cox_hr(Surv(tstart, tstop, status) ~ exposed, td))
  e
}
cox_hr <- function(formula, data) {
  # coxph with a Wald interval; not estimable when a group has no event: the coefficient runs off to
  # infinity (coxph warns "coefficient may be infinite"), as oncosurg reports it
  infinite <- FALSE
  fit <- withCallingHandlers(coxph(formula, data = data), warning = function(w) {
    if (grepl("infinite", conditionMessage(w))) {
      infinite <<- TRUE
      invokeRestart("muffleWarning")
    }
  })
  s <- summary(fit)
  ci <- unname(s$conf.int[1, ])
  list(estimable = !infinite && is.finite(ci[4]), hr = ci[1], lower = ci[3], upper = ci[4],
       p = unname(s$coefficients[1, 5]), score_p = unname(s$sctest["pvalue"]), n_fit = fit$n, events = fit$nevent)
}

dirs <- sort(list.dirs("tests/reference/episodes", recursive = FALSE))
out <- character(0)
for (dir in dirs) {
  if (basename(dir) == "reference-cohort") {
    e <- study(dir, c(D("2004-01-01"), D("2006-12-31")), D("2007-03-31"))
  } else {
    e <- study(dir, NULL, D("2013-12-31"))
  }
  out <- c(out, paste0('"', basename(dir), '": ', obj(e)))
}
writeLines(paste0("{\n", paste(out, collapse = ",\n"), "\n}"), "tests/reference/crlm_first_hepatectomy_expected.json")
cat("wrote tests/reference/crlm_first_hepatectomy_expected.json\n")
