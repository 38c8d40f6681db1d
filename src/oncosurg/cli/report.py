"""``oncosurg report``: the study report (HTML, PDF, figures, Table 1) — being written."""
