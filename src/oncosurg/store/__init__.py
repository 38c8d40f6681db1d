"""The registry store: engine, tables, migrations, and the import/update repository."""

from oncosurg.store.engine import DEFAULT_URL, open_store, resolve_url

__all__ = ["DEFAULT_URL", "open_store", "resolve_url"]
