"""oncosurg: registry, validation, study protocols and survival statistics for the
rescue-cetuximab → hepatectomy pathway (Adam et al., J Clin Oncol 2007;25:4593-602)."""

__version__ = "0.1.0"
