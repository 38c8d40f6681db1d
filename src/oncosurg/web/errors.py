"""One error shape for every JSON response: ``{"ok": false, "error", "errors", "status"}`` (datasette).

Services raise :class:`WebError` subclasses; the handlers in :mod:`oncosurg.web.app` render them
as JSON for ``.json`` twins and API clients, or as an HTML page (or the form again, with the
messages beside the fields) for browsers.
"""

from __future__ import annotations

from typing import Any


class WebError(Exception):
    """An expected refusal with an HTTP status and a message for the user."""

    status = 400

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        if status is not None:
            self.status = status


class NotFound(WebError):
    status = 404


class Forbidden(WebError):
    status = 403


class NotSignedIn(WebError):
    status = 401


class Invalid(WebError):
    """The submitted values break validation rules; ``errors`` name the fields."""

    status = 422


class Conflict(WebError):
    """Optimistic locking: the record changed since the form was loaded; ``errors`` list what changed."""

    status = 409


class Throttled(WebError):
    status = 429


class Busy(WebError):
    """The database stayed locked by another writer too long (nothing was saved; try again)."""

    status = 503


def error_body(message: str, errors: list[dict[str, Any]] | None, status: int) -> dict[str, Any]:
    return {"ok": False, "error": message, "errors": errors or [], "status": status}
