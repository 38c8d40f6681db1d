"""Renderers: results (the ``analyze`` JSON object) in, text/HTML out; never raw data."""
