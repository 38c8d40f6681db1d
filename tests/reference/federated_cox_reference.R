# Reference values for the federated Cox model stratified by centre (oncosurg.federated.central).
#
# Run by hand from the repository root (R 4.2 + survival 3.5):
#     Rscript tests/reference/federated_cox_reference.R
# It reads tests/reference/datasets/federated_cox_rows.csv (the complete-case rows of the seed protocol's
# [[report.cox]] model at each of the three centres of the federated tests' split of the reference cohort,
# written by tests/federated_helpers.py::cox_model_rows; tests/test_federated.py checks that the split
# still gives these rows) and writes tests/reference/federated_cox_expected.json.  No package beyond survival.

suppressPackageStartupMessages(library(survival))
stopifnot(packageVersion("survival") >= "3.5")

d <- read.csv(file.path("tests", "reference", "datasets", "federated_cox_rows.csv"), stringsAsFactors = FALSE)
# reference levels as oncosurg's model: the first level of the column's choices present in the data
d$sex <- factor(d$sex, levels = c("F", "M"))
d$referral <- factor(d$referral, levels = c("in_house", "referred"))

fit <- coxph(Surv(entry, time, status) ~ age_at_cetuximab + sex + referral + liver_mets_count + bilobar +
               extrahepatic_disease + prior_chemo_lines + strata(centre), data = d, ties = "efron")
co <- summary(fit)$coefficients
num <- function(x) sprintf("%.17g", x)
names_oncosurg <- c("age_at_cetuximab", "sex=M", "referral=referred", "liver_mets_count", "bilobar",
                    "extrahepatic_disease", "prior_chemo_lines")
terms <- vapply(seq_len(nrow(co)), function(i) {
  sprintf('    {"name": "%s", "coef": %s, "se": %s, "p": %s}', names_oncosurg[i], num(co[i, "coef"]),
          num(co[i, "se(coef)"]), num(co[i, "Pr(>|z|)"]))
}, "")
json <- paste0(
  "{\n",
  '  "call": "coxph(Surv(entry, time, status) ~ age_at_cetuximab + sex + referral + liver_mets_count + bilobar + ',
  'extrahepatic_disease + prior_chemo_lines + strata(centre), ties = \\"efron\\")",\n',
  '  "survival": "', as.character(packageVersion("survival")), '",\n',
  '  "n": ', fit$n, ",\n",
  '  "events": ', fit$nevent, ",\n",
  '  "loglik": [', num(fit$loglik[1]), ", ", num(fit$loglik[2]), "],\n",
  '  "terms": [\n', paste(terms, collapse = ",\n"), "\n  ]\n}\n")
writeLines(json, file.path("tests", "reference", "federated_cox_expected.json"), sep = "")
print(fit)
