"""Keyword-only service functions: a connection (or the store) in, plain data out; no HTTP here."""
