"""The registry web app: pathway data entry, review worklist, live dashboard, accounts and the audit trail.

``create_app(Settings(db_url=...))`` builds the ASGI app; ``oncosurg serve`` runs it with uvicorn.
Layers: ``routes/`` (thin handlers) → ``services/`` (keyword-only functions on a connection) →
``oncosurg.store`` / ``oncosurg.rules`` / ``oncosurg.protocol``.  See ``docs/web.md``.
"""

from oncosurg.web.settings import SETTINGS, Settings

__all__ = ["SETTINGS", "Settings", "create_app"]


def create_app(settings: Settings | None = None, *, create: bool = True):  # type: ignore[no-untyped-def]
    """Build the FastAPI app (imported lazily so ``import oncosurg.web`` stays cheap).

    ``create=False`` (``oncosurg serve``) refuses a database that holds no registry.
    """
    from oncosurg.web.app import create_app as _create

    return _create(settings, create=create)
