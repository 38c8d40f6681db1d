"""Thin route handlers, one module per area; each page has a ``.json`` twin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

#: Integer path and query parameters are bounded so that no value can overflow a database integer.
PK = Annotated[int, Path(ge=1, le=2_147_483_647)]
PageNo = Annotated[int, Query(ge=1, le=100_000)]
#: Free text in a query: bounded, and without control characters (PostgreSQL refuses NUL in text).
Text = Annotated[str, Query(max_length=120, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")]
