"""The registry store: engine, tables, migrations, and the import/update repository.

``open_store`` and friends live in :mod:`oncosurg.store.engine`, imported on first use: the
protocol engine reads only :mod:`.tables`, so the federated node side (:mod:`oncosurg.federated`)
runs without Alembic beside vantage6's SQLAlchemy 1.4 pin.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_URL", "open_store", "resolve_url"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from oncosurg.store import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'oncosurg.store' has no attribute {name!r}")
