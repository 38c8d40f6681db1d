# ---- a minimal JSON writer (numbers with 17 significant digits, NA -> null) ----
json_scalar <- function(x) {
  if (is.null(x) || length(x) == 0) return("null")
  if (is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(paste0('"', gsub('"', '\\\\"', x), '"'))
  if (is.infinite(x)) return("null")
  if (x == round(x) && abs(x) < 1e15) return(format(x, scientific = FALSE))
  sprintf("%.17g", x)
}
to_json <- function(x, indent = 0) {
  if (is.null(x)) return("null")
  pad <- strrep(" ", indent + 2)
  end <- strrep(" ", indent)
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(seq_along(x), function(i) to_json(x[[i]], indent + 2), "")
    if (!is.null(names(x))) {
      items <- paste0('"', names(x), '": ', items)
      return(paste0("{\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", end, "}"))
    }
    return(paste0("[\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n", end, "]"))
  }
  if (length(x) == 1 && is.null(names(x)) && !inherits(x, "AsIs")) return(json_scalar(x))
  paste0("[", paste(vapply(x, json_scalar, ""), collapse = ", "), "]")
}
