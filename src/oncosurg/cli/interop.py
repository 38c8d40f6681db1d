"""Interoperability commands (REDCap, FHIR, Excel, de-identified export) — being written."""
