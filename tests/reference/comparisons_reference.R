# Independent computation of the comparisons of tests/reference/comparisons-protocol.toml with R
# (survival 3.5.3): landmark analysis, time-dependent Cox model (tmerge), Simon-Makuch curves and
# Kaplan-Meier / Cox with delayed entry (Surv(entry, time, status)), with and without a data cut.
#
# Run by hand from the repository root:
#     Rscript tests/reference/comparisons_reference.R
# It reads every long-format registry folder in tests/reference/episodes/ (patients.csv,
# therapy_lines.csv, liver_procedures.csv, disease_events.csv, contacts.csv; written by
# tests/episode_registry.py) and writes tests/reference/comparisons_expected.json, which
# tests/test_comparisons_reference.py compares with the oncosurg engine. Definitions are
# re-implemented here from the protocol's text, not from oncosurg's code.
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
D <- function(x) as.numeric(as.Date(x))
RESECTIONS <- c("hepatectomy", "two_stage_second", "alpps_2")
LANDMARK <- 6

read <- function(dir, name) {
  path <- file.path(dir, name)
  read.csv(path, colClasses = "character", na.strings = "", check.names = FALSE)
}

# One row per patient in the cohort: index, OS time and status, first hepatectomy after the index,
# entry at the referral; cut = NA for no data cut.
cohort <- function(dir, cut) {
  pts <- read(dir, "patients.csv")
  lines <- read(dir, "therapy_lines.csv")
  procs <- read(dir, "liver_procedures.csv")
  contacts <- read(dir, "contacts.csv")
  key <- function(d) paste(d$centre, d$patient_id)
  lines$start <- D(lines$start_date)
  procs$date <- D(procs$procedure_date)
  contacts$date <- D(contacts$contact_date)
  if (!is.na(cut)) {
    lines <- lines[is.na(lines$start) | lines$start <= cut, ]
    procs <- procs[procs$date <= cut, ]
    late <- contacts$date > cut  # seen after the cut: alive at the cut
    contacts$vital_status[late] <- "alive"
    contacts$date[late] <- cut
  }
  # index: first conversion line with cetuximab, by start date then line number
  cand <- lines[lines$intent == "conversion" & grepl("(^|;)cetuximab(;|$)", lines$agents) & !is.na(lines$start), ]
  cand <- cand[order(key(cand), cand$start, as.numeric(cand$line_number)), ]
  cand <- cand[!duplicated(key(cand)), ]
  index <- setNames(cand$start, key(cand))
  k <- key(pts)
  d <- data.frame(id = seq_along(k), key = k, referral = pts$referral, referral_date = D(pts$referral_date),
                  index = unname(index[k]), stringsAsFactors = FALSE)
  d <- d[!is.na(d$index), ]
  last <- tapply(contacts$date, key(contacts), max)
  dead <- contacts[contacts$vital_status == "dead", ]
  death <- setNames(dead$date, key(dead))
  d$last <- as.numeric(last[d$key])
  d$death <- as.numeric(death[d$key])
  d$status <- as.numeric(!is.na(d$death) & d$death >= d$index)
  d$time <- (ifelse(d$status == 1, d$death, d$last) - d$index) / month
  res <- procs[procs$procedure_type %in% RESECTIONS, ]
  res <- res[order(key(res), res$date), ]
  d$s <- sapply(seq_len(nrow(d)), function(i) {
    x <- res$date[key(res) == d$key[i] & res$date >= d$index[i]]
    if (length(x)) (min(x) - d$index[i]) / month else NA
  })
  # delayed entry at the referral (referred without a date: unknown entry, left out)
  d$entry <- ifelse(d$referral == "referred",
                    ifelse(is.na(d$referral_date), NA, pmax(0, (d$referral_date - d$index) / month)), 0)
  d
}

med <- function(fit) {
  q <- quantile(fit, probs = 0.5)
  list(median = unname(q$quantile[1]), lower = unname(q$lower[1]), upper = unname(q$upper[1]))
}
medians <- function(fit, labels) {
  # one survfit per group (strata in the order of labels)
  q <- quantile(fit, probs = 0.5)
  out <- list()
  for (i in seq_along(labels)) {
    out[[labels[i]]] <- list(median = unname(q$quantile[i]), lower = unname(q$lower[i]),
                             upper = unname(q$upper[i]), n = unname(fit$n[i]))
  }
  out
}
hr <- function(fit) {
  s <- summary(fit)
  list(hr = unname(s$conf.int[1, 1]), lower = unname(s$conf.int[1, 3]), upper = unname(s$conf.int[1, 4]),
       p = unname(s$coefficients[1, 5]), score_p = unname(s$sctest["pvalue"]), n_fit = fit$n, events = fit$nevent)
}

analyse <- function(d, entry) {
  out <- list()
  if (entry) {
    d <- d[!is.na(d$entry) & d$time > d$entry, ]
  } else {
    d$entry <- 0
    d <- d[d$time > 0, ]
  }
  # landmark at 6 months: alive, followed and entered at the landmark; status then
  lm <- d[d$time > LANDMARK & d$entry <= LANDMARK, ]
  lm$exposed <- as.numeric(!is.na(lm$s) & pmax(lm$s, 0) <= LANDMARK)
  lm$t <- lm$time - LANDMARK
  fit_lm <- coxph(Surv(t, status) ~ exposed, data = lm)
  sd <- survdiff(Surv(t, status) ~ exposed, data = lm)
  km_lm <- survfit(Surv(t, status) ~ exposed, data = lm, conf.type = "log-log")
  out$landmark <- c(list(n = nrow(lm), logrank_p = 1 - pchisq(sd$chisq, 1)), hr(fit_lm),
                    list(groups = medians(km_lm, c("unexposed", "exposed"))))
  # time-dependent Cox: follow-up (entry, time] split at the first hepatectomy
  base <- tmerge(d, d, id = id, status = event(time, status), tstart = entry, tstop = time)
  td <- tmerge(base, d, id = id, exposed = tdc(pmax(s, 0)))
  fit_td <- coxph(Surv(tstart, tstop, status) ~ exposed, data = td)
  out$time_dependent <- c(list(n = nrow(d), n_rows = nrow(td)), hr(fit_td))
  km_sm <- survfit(Surv(tstart, tstop, status) ~ exposed, data = td, conf.type = "log-log")
  out$simon_makuch <- list(groups = medians(km_sm, c("unexposed", "exposed")))
  if (entry) {
    d$referred <- as.numeric(d$referral == "referred")
    fit_ref <- coxph(Surv(entry, time, status) ~ referred, data = d)
    km_ref <- survfit(Surv(entry, time, status) ~ referred, data = d, conf.type = "log-log")
    out$referral <- c(list(n = nrow(d)), hr(fit_ref), list(groups = medians(km_ref, c("in_house", "referred"))))
  }
  out
}

dirs <- sort(list.dirs("tests/reference/episodes", recursive = FALSE))
cuts <- list(none = NA, "2012-06-30" = D("2012-06-30"))
out <- character(0)
for (dir in dirs) {
  res <- list()
  for (cut_name in names(cuts)) {
    d <- cohort(dir, cuts[[cut_name]])
    res[[cut_name]] <- list(entry = analyse(d, TRUE), no_entry = analyse(d, FALSE))
  }
  out <- c(out, paste0('"', basename(dir), '": ', obj(res)))
}
writeLines(paste0("{\n", paste(out, collapse = ",\n"), "\n}"), "tests/reference/comparisons_expected.json")
cat("wrote tests/reference/comparisons_expected.json\n")
