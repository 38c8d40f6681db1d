# Reference values for oncosurg.stats.cox_zph (R's cox.zph, transforms "km" and "identity").
# Run by hand from the repository root after robust_reference.R (which writes the data sets):
#     Rscript tests/reference/zph_reference.R     -> tests/reference/zph_expected.json
suppressMessages(library(survival))
source(file.path("tests", "reference", "json_writer.R"))
dd <- function(name) read.csv(file.path("tests", "reference", "datasets", name))
out <- list(r_version = R.version.string, survival_version = as.character(packageVersion("survival")))
zph_out <- function(fit, transform) {
  z <- cox.zph(fit, transform = transform)
  list(terms = I(rownames(z$table)), chisq = unname(z$table[, "chisq"]), df = unname(z$table[, "df"]),
       p = unname(z$table[, "p"]), x = unname(z$x), time = unname(z$time),
       y = lapply(seq_len(ncol(z$y)), function(j) unname(z$y[, j])), var = as.vector(z$var))
}
cases <- list()
add <- function(name, args, fit) {
  for (tr in c("km", "identity")) cases[[paste0(name, "_", tr)]] <<- c(args, list(transform = tr,
    fit = zph_out(fit, tr)))
}
lung3 <- dd("lung_inst.csv")
add("lung", list(file = "lung_inst.csv", time = "time", event = "status", X = I(c("age", "sex", "ph.ecog"))),
    coxph(Surv(time, status) ~ age + sex + ph.ecog, lung3))
add("lung_breslow_weights", list(file = "lung_inst.csv", time = "time", event = "status",
    X = I(c("age", "ph.ecog")), weights = "w", ties = "breslow"),
    coxph(Surv(time, status) ~ age + ph.ecog, lung3, weights = w, ties = "breslow"))
col <- dd("colon.csv")
col$rx <- factor(col$rx, levels = c("Obs", "Lev", "Lev+5FU"))
col <- col[col$etype == 2, ]
add("colon_factor", list(file = "colon.csv", subset = "etype == 2", time = "time", event = "status",
    X = I(c("rx", "sex", "age", "nodes")), factor = I("rx"), levels = I(c("Obs", "Lev", "Lev+5FU"))),
    coxph(Surv(time, status) ~ rx + sex + age + nodes, col))
pb <- dd("pbc.csv")
pb$death <- as.integer(pb$status == 2)
add("pbc_strata", list(file = "pbc.csv", time = "time", event = "death", X = I(c("age", "bili", "albumin")),
    strata = "edema"), coxph(Surv(time, death) ~ age + bili + albumin + strata(edema), pb))
rot <- dd("rotterdam.csv")
add("rotterdam", list(file = "rotterdam.csv", time = "dtime", event = "death",
    X = I(c("age", "nodes", "hormon", "grade"))), coxph(Surv(dtime, death) ~ age + nodes + hormon + grade, rot))
heart2 <- dd("heart.csv")
add("heart_counting", list(file = "heart.csv", time = "stop", event = "event", entry = "start",
    X = I(c("age", "surgery", "transplant"))),
    coxph(Surv(start, stop, event) ~ age + surgery + transplant, heart2))
out$cases <- cases
writeLines(to_json(out), file.path("tests", "reference", "zph_expected.json"))
cat("wrote tests/reference/zph_expected.json\n")
