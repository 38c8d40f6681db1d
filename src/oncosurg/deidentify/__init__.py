"""De-identified releases of the registry (``oncosurg export --deidentify``; docs/interop.md).

:mod:`~oncosurg.deidentify.release` turns flat registry records into a release in one of two modes —
``limited`` (keyed pseudonyms, dates shifted by a keyed per-patient offset) or ``safe-harbor`` (HIPAA
Safe Harbor: random codes, the year of time zero and day intervals) — and measures or enforces
k-anonymity (:mod:`~oncosurg.deidentify.kanon`).  Keys are made and checked by
:mod:`~oncosurg.deidentify.keys`.
"""
