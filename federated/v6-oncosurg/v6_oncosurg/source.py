"""Give a partial the centre's registry URI instead of a DataFrame.

vantage6 4.x's ``@data`` decorator loads a pandas DataFrame, and ``@database_connection`` knows only
OMOP.  ``registry_source`` reads what a node gives the container (``USER_REQUESTED_DATABASE_LABELS``
and ``<LABEL>_DATABASE_URI``, already base32-decoded by ``wrap_algorithm``), and plugs into
``MockAlgorithmClient``'s data hook: with the mock, each organisation's dataset is a one-row
DataFrame with a ``registry_url`` column.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any


def registry_source(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def wrapper(*args: Any, mock_data: Any = None, **kwargs: Any) -> Any:
        if mock_data is not None:  # MockAlgorithmClient
            uri = str(mock_data[0]["registry_url"].iloc[0])
        else:  # a node, inside the algorithm container
            label = os.environ.get("USER_REQUESTED_DATABASE_LABELS", "default").split(",")[0]
            uri = os.environ[f"{label.upper()}_DATABASE_URI"]
        return func(uri, *args, **kwargs)

    wrapper.wrapped_in_data_decorator = True  # type: ignore[attr-defined]  # the mock passes mock_data=
    return wrapper
